"""The entry point of :mod:`src_training.io`: :func:`load_ct` decides what a path is (DICOM folder, volume
file, single DICOM file) and hands it to its reader; any failure a reader did not foresee becomes the
last-resort :class:`~src_training.errors.CTLoadError` carrying :data:`UNEXPECTED_MARK` (never a traceback).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..errors import CTLoadError, LidnetError
from ._library import _short
from .dicom_series import _load_dicom_file, _load_dicom_files, _load_dicom_folder
from .volume import CTVolume
from .volume_files import _is_volume_path, _load_volume_file


def load_ct(
    path: str | os.PathLike | Sequence[str | os.PathLike],
    series_uid: str | None = None,
    *,
    lazy: bool = False,
    on_slice_error: Callable[[Exception], None] | None = None,
) -> CTVolume:
    """Load a CT volume in HU.

    DICOM pixels are decoded by pydicom one slice at a time straight into a preallocated float32 array
    (``HU = stored * RescaleSlope + RescaleIntercept`` per slice, unused high bits masked as BitsStored /
    PixelRepresentation say), so loading holds one float32 copy of the volume plus one slice. The middle
    slice is decoded a second time by SimpleITK/GDCM and both must agree (``metadata["hu_check"]``).
    Volume files are read by SimpleITK as float32 and the array shares SimpleITK's buffer (no second copy).
    What is refused, corrected or only reported is listed in docs/reliability.md.

    Parameters
    ----------
    path : path-like, or list / tuple of path-like
        A folder with one DICOM series (or several, then ``series_uid`` chooses; localizer (scout) series
        are skipped with a warning), a single DICOM file (Part 10, or legacy without the 128-byte preamble;
        a multi-frame / Enhanced CT file gives its volume), or a volume file ``.nii``, ``.nii.gz``,
        ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``. Volume files are taken to hold HU already (NIfTI
        scl_slope/scl_inter are applied by SimpleITK). A 2-D image (one DICOM slice, a 2-D NIfTI) gives a
        one-slice volume ``(1, y, x)``. A list of DICOM files (slices a user selected) gives ONE volume of
        their series, ordered by position as for a folder (a one-element list is that path).
    series_uid : str, optional
        SeriesInstanceUID to load from a folder that holds several series (see :func:`list_series`).
    lazy : bool
        For a DICOM series or single-frame file: every header is read and checked now, the middle slice is
        decoded now (HU cross-check), and ``hu`` is a ``dask.array.Array`` (float32, ``(z, y, x)``, one
        chunk per slice) whose slices are decoded when used. Other inputs ignore it. Needs dask.
    on_slice_error : callable, optional
        Only with ``lazy``: called with the :class:`CTLoadError` of a slice that cannot be decoded later;
        that slice is then filled with -1024 HU (air) instead of raising inside the consumer (a viewer).

    Returns
    -------
    CTVolume
        ``hu`` float32 ``(z, y, x)`` in HU; for DICOM, z in increasing position along the slice normal.
        ``metadata["warnings"]`` lists what was corrected or assumed (gantry tilt resampled, rescale tags
        absent, duplicated files dropped).

    Raises
    ------
    MultipleSeriesError
        The folder (or the list of files) holds several image series and ``series_uid`` is None;
        ``.series`` lists them (localizers included, ``SeriesInfo.is_localizer``).
    CTLoadError
        Missing path, empty folder, unknown ``series_uid``, corrupt / truncated / non-image file, a modality
        other than CT, missing or duplicated slices or uneven spacing (the gap is reported), inconsistent
        slice sizes or orientations, colour images, 4-D images, a compressed transfer syntax without an
        installed decoder (the message names the packages), unusable RescaleSlope, slices of one series of
        which some lack RescaleSlope/RescaleIntercept (those files named), a RescaleType other than HU, a
        damaged file (cut inside its header, or not DICOM) named as the likely missing slice, only localizer
        (scout) images, a list mixing folders and files or naming volume files.
    """
    if isinstance(path, (list, tuple)):
        return _load_list(list(path), series_uid, lazy=lazy, on_slice_error=on_slice_error)
    path = Path(path)
    if not path.exists():
        raise CTLoadError(f"{path} does not exist. Check the path of the CT folder or file.")
    with _user_errors(f"{path}", "Close other layers/programs, or open it in napari (large series are then "
                      "read slice by slice).", "The file may be corrupt; re-export it"):
        if path.is_dir():
            return _load_dicom_folder(path, series_uid, lazy=lazy, on_slice_error=on_slice_error)
        if _is_volume_path(path):
            return _load_volume_file(path)
        return _load_dicom_file(path, lazy=lazy, on_slice_error=on_slice_error)


@contextlib.contextmanager
def _user_errors(what: str, memory_hint: str, corrupt_hint: str) -> Iterator[None]:
    """Let the project's own errors through; turn MemoryError and any unforeseen library failure into a
    CTLoadError naming ``what`` (the last-resort message carries :data:`UNEXPECTED_MARK`)."""
    try:
        yield
    except LidnetError:
        raise
    except MemoryError as exc:
        raise CTLoadError(f"Not enough memory to load {what}. {memory_hint}") from exc
    except Exception as exc:  # noqa: BLE001 - last resort: a message for the user, never a traceback
        raise CTLoadError(
            f"Cannot read {what}: {UNEXPECTED_MARK} ({_short(exc)}). {corrupt_hint}, and report this message to "
            "the napari-lidnet developers."
        ) from exc


def _load_list(paths: list, series_uid: str | None, *, lazy: bool, on_slice_error: Callable | None) -> CTVolume:
    """:func:`load_ct` of a list of paths: one path is loaded as itself, several must be DICOM files."""
    if not paths:
        raise CTLoadError("No file selected. Choose the DICOM files of one series, its folder, or a volume file.")
    if len(paths) == 1:
        return load_ct(paths[0], series_uid, lazy=lazy, on_slice_error=on_slice_error)
    files = [Path(p) for p in paths]
    for p in files:
        if not p.exists():
            raise CTLoadError(f"{p} does not exist. Check the paths of the selected files.")
        if p.is_dir() or _is_volume_path(p):
            raise CTLoadError(
                f"{p} is a {'folder' if p.is_dir() else 'volume file'}; several selected paths must all be DICOM "
                "files of one series. Open a folder or a volume file on its own."
            )
    with _user_errors(f"the {len(files)} selected files in {files[0].parent}", "Close other layers/programs.",
                      "A file may be corrupt; re-export the series"):
        return _load_dicom_files(files, series_uid, lazy=lazy, on_slice_error=on_slice_error)


#: Words of the last-resort error of :func:`load_ct` (a library failed in a way not foreseen); the fuzz
#: tests check that no input they generate reaches it.
UNEXPECTED_MARK = "unexpected problem"
