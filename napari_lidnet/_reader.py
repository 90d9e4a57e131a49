"""napari reader: DICOM series folders, selected DICOM slice files, single DICOM files, NIfTI / NRRD /
MetaImage CT volumes.

Each volume becomes an image layer in HU (:func:`napari_lidnet._layers.image_layer_kwargs`: ``scale`` =
spacing mm, ``translate`` from the origin, contrast limits from the CT window, the DICOM metadata).

- A folder: one layer per CT image series, named by its SeriesDescription when there are several. Series
  that are not CT images (SR dose reports, RT structures, MR...) and localizer (scout) series (ImageType
  LOCALIZER) are skipped with an information notice naming them. A series the core refuses (missing
  slices, corrupt file...) is named in the error notification and the other series still open.
- Several paths (napari passes a list with *File > Open Files as Stack...*, shift + drag and drop or
  ``viewer.open(paths, stack=True)``): the DICOM slice files among them are read together, one
  ``load_ct(files)`` per series, so the slice files of a series give ONE layer; each volume file and folder
  of the list gives its layers; paths that cannot be read are reported, the others open. (napari's plain
  *Open File(s)...* and a plain drag and drop hand the files over one at a time: each slice becomes a
  one-slice layer, and the first slice of a folder says how to open the series as one volume.)
- A DICOM or volume file: one layer.

DICOM files are recognised by their name (``.dcm``, ``.ima``, ``.dicom``) or, without an extension, by their
content (:func:`src_training.io.is_dicom_file`: with the ``DICM`` preamble or a legacy file without it).
DICOM directory files (DICOMDIR, DIRFILE: the index of a disc) are ignored: they do not make a folder a
DICOM folder, and a list may hold them. Another extension is not ours (``napari_get_reader`` returns None).
Every folder is ours, so that an empty folder, or one without CT files, gets the plugin's own message
saying what it holds (and the sub-folders that hold the images) instead of napari's "refused the file"
notice. What could not be read is shown in ONE error notification in plain words (each series or file
named, with its reason); when nothing could be read the reader returns napari's "nothing to add" value
``[(None,)]`` (an empty list makes napari 0.9 / npe2 0.10 raise "returned no data"; a raised
:class:`~src_training.errors.LidnetError` gets napari's notice with a "View Traceback" button).

Large DICOM series (more than :data:`LAZY_THRESHOLD_BYTES` of float32 voxels) are lazy dask arrays: every
header is checked and the middle slice decoded first, the other slices when napari shows them (a slice
that then fails is shown as -1024 HU and an error notification names the file). What the loader corrected
or assumed (``metadata["warnings"]``) is shown as an information notification.

:func:`prefer_plugin_reader` makes napari open CT files and folders with this reader without the "Choose
reader" dialog for the session (``lidnet gui``); :func:`restore_reader_preference` undoes it at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from src_training.errors import CTLoadError, LidnetError, MultipleSeriesError
from src_training.io import is_dicom_directory_file, is_dicom_file, list_series, load_ct

from . import _layers
from ._layers import image_layer_kwargs
from ._messages import (
    failures_message,
    listing,
    not_dicom_message,
    notify_error,
    only_scouts_message,
    series_text,
    subfolder_hint,
)

logger = logging.getLogger("napari_lidnet")

#: File name endings of volume files we read (lower case).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File name endings of DICOM files (lower case).
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
#: Names of DICOM directory files (lower case, any suffix; PS3.10 section 8.6 DICOMDIR; DIRFILE of some
#: vendors' exports), as :func:`src_training.io.is_dicom_directory_file` names them.
DIRECTORY_FILE_NAMES = ("dicomdir", "dirfile")
#: How many entries of a folder are looked at to decide whether it holds DICOM files.
_SNIFF_LIMIT = 64

#: Volumes larger than this (float32 bytes = 4 * z * y * x) are returned as lazy dask arrays (512 MiB:
#: e.g. a 512 x 512 x 600 series, 600 MiB, is lazy; 512 x 512 x 400, 400 MiB, is loaded in memory).
LAZY_THRESHOLD_BYTES = 512 * 2**20

#: The value a reader returns to say "read, but nothing to add" (napari/npe2 null-layer sentinel).
NO_LAYERS: list = [(None,)]

LayerData = tuple  # (data, meta, layer_type)


# --------------------------------------------------------------------------------------------------
# what a path is
# --------------------------------------------------------------------------------------------------
def _is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(VOLUME_SUFFIXES)


def _is_directory_file(path: Path) -> bool:
    """True for a DICOM directory file (DICOMDIR, DIRFILE): an index of images, never an image itself."""
    if path.name.split(".")[0].lower() in DIRECTORY_FILE_NAMES:
        return True
    return "." not in path.name and path.is_file() and is_dicom_directory_file(path)


def _is_dicom_file(path: Path) -> bool:
    """True for a DICOM image file by name (``.dcm``, ``.ima``, ``.dicom``: not opened) or, for a name
    without an extension (PACS exports: ``IM0001``, ``1.2.840...``), by content (with or without the
    128-byte preamble); False for DICOM directory files."""
    name = path.name.lower()
    if name.split(".")[0] in DIRECTORY_FILE_NAMES:
        return False
    if name.endswith(DICOM_SUFFIXES):
        return True
    if "." not in name or name.rsplit(".", 1)[-1].isdigit():
        return is_dicom_file(path) and not is_dicom_directory_file(path)
    return False


def _folder_has_dicom(folder: Path) -> bool:
    """True when one of the first :data:`_SNIFF_LIMIT` entries of ``folder`` is a DICOM image file (a
    DICOMDIR alone does not count)."""
    try:
        with os.scandir(folder) as it:
            for i, entry in enumerate(it):
                if i >= _SNIFF_LIMIT:
                    break
                if entry.is_file() and _is_dicom_file(Path(entry.path)):
                    return True
    except OSError:
        return False
    return False


def is_ct_path(path: str | os.PathLike) -> bool:
    """True when ``path`` looks like something this reader handles (it is not opened fully).

    A volume file (``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``), a DICOM file (``.dcm``,
    ``.ima``, ``.dicom``, or no extension and DICOM content, with or without the 128-byte preamble), or
    any folder but a ``.zarr`` store (a folder without CT files is accepted too, so that the user gets this
    plugin's message about it, see :func:`read_ct`). A DICOM directory file (DICOMDIR, DIRFILE) is not.
    """
    p = Path(path)
    if p.is_dir():
        return not p.name.lower().endswith(".zarr")  # zarr stores are other readers' (napari, ome-zarr)
    if _is_volume_file(p) or p.name.lower().endswith(DICOM_SUFFIXES):
        return True  # ours even if it turns out corrupt (then: notification, no layer)
    return p.is_file() and _is_dicom_file(p)


# --------------------------------------------------------------------------------------------------
# messages about what a path holds
# --------------------------------------------------------------------------------------------------
#: What a few common non-DICOM files start with (for the message about a ``.dcm`` file that is not DICOM).
_FILE_KINDS: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG picture"),
    (b"\xff\xd8\xff", "a JPEG picture"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (unpack it and open the folder inside)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"II*\x00", "a TIFF picture"),
    (b"MM\x00*", "a TIFF picture"),
)


def _file_kind(path: Path) -> str:
    """In plain words, what a file that is not DICOM seems to be ("" when unknown)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return ""
    if not head:
        return "an empty file (0 bytes)"
    for magic, kind in _FILE_KINDS:
        if head.startswith(magic):
            return kind
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "a NIfTI volume with a DICOM name (rename it to .nii)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if all(c.isprintable() or c in "\r\n\t" for c in text):
        return "a text file"
    return ""


#: How many entries of a folder :func:`_no_ct_message` looks at.
_SCAN_LIMIT = 2000
#: How deep and how many folders :func:`_dicom_subfolders` looks below a folder (a PACS disc keeps its
#: images four levels down: DICOM/PA000000/ST000000/SE000000).
_SUBFOLDER_DEPTH = 4
_SUBFOLDER_VISITS = 200


def _dicom_subfolders(folder: Path) -> list[str]:
    """The sub-folders below ``folder`` (up to :data:`_SUBFOLDER_DEPTH` levels, relative POSIX paths, sorted)
    that hold DICOM image files; a folder holding images is not searched further."""
    found: list[str] = []
    level = [folder]
    visits = 0
    for _ in range(_SUBFOLDER_DEPTH):
        below: list[Path] = []
        for parent in level:
            try:
                with os.scandir(parent) as it:
                    dirs = sorted(Path(e.path) for e in it if e.is_dir() and not e.name.startswith("."))
            except OSError:
                continue
            for d in dirs:
                visits += 1
                if visits > _SUBFOLDER_VISITS:
                    return sorted(found)
                if _folder_has_dicom(d):
                    found.append(d.relative_to(folder).as_posix())
                else:
                    below.append(d)
        level = below
    return sorted(found)


def _listed_image(dicomdir: Path) -> str:
    """The first image file a DICOMDIR lists (ReferencedFileID, PS3.3 F.3.2.2), as a relative path; ""."""
    try:
        ds = pydicom.dcmread(str(dicomdir), stop_before_pixels=True)  # a DICOMDIR has the preamble (PS3.10 7.1)
        for record in ds.get("DirectoryRecordSequence", [])[:2000]:
            ref = record.get("ReferencedFileID", None)
            if ref:
                return "/".join([ref] if isinstance(ref, str) else [str(v) for v in ref])
    except Exception:  # noqa: BLE001 - a hint only
        return ""
    return ""


def _no_ct_message(folder: Path) -> str:
    """What an opened folder without a readable DICOM series holds, and what to open instead."""
    files: list[str] = []
    volumes: list[str] = []
    directory_files: list[str] = []
    subfolders: list[str] = []
    try:
        with os.scandir(folder) as it:
            for i, entry in enumerate(it):
                if i >= _SCAN_LIMIT:
                    break
                if entry.name.startswith("."):
                    continue  # .DS_Store, ._x, hidden folders
                if entry.is_dir():
                    subfolders.append(entry.name)
                elif entry.is_file():
                    files.append(entry.name)
                    if _is_volume_file(Path(entry.name)):
                        volumes.append(entry.name)
                    elif _is_directory_file(Path(entry.path)):
                        directory_files.append(entry.name)
    except OSError as exc:
        return (f"The folder '{folder.name}' cannot be read ({exc.strerror or 'access refused'}). Check that "
                f"it exists and that you may open it (folder: {folder}).")
    where = f"(folder: {folder})"
    todo = "Choose the folder that holds the CT's DICOM files (one file per slice), or a NIfTI / NRRD / MetaImage file."
    if volumes:
        return (f"The folder '{folder.name}' holds no DICOM series but {len(volumes)} CT volume file(s): "
                f"{listing(volumes)}. Open one of these files instead of the folder {where}.")
    found = _dicom_subfolders(folder) if subfolders else []
    if found:
        return f"The folder '{folder.name}' holds no DICOM images itself. {subfolder_hint(found)} {where}"
    if directory_files and len(directory_files) == len(files):
        listed = _listed_image(folder / directory_files[0])
        missing = f" (such as {listed})" if listed else ""
        sub = f" Its sub-folders ({listing(subfolders)}) hold no DICOM images either." if subfolders else ""
        return (f"The folder '{folder.name}' holds only {listing(directory_files)}, the index of a DICOM disc "
                f"or export, and no images: the images it lists{missing} are not in this folder.{sub} Open the "
                f"folder that holds the image files {where}.")
    if not files and not subfolders:
        return f"The folder '{folder.name}' is empty. {todo} {where}"
    contents = []
    if files:
        contents.append(f"{len(files)} file(s) ({listing(files)})")
    if subfolders:
        contents.append(f"{len(subfolders)} sub-folder(s) ({listing(subfolders)}) without DICOM images")
    return (f"The folder '{folder.name}' holds no CT images: it holds {' and '.join(contents)}, none of them "
            f"DICOM, NIfTI, NRRD or MetaImage. {todo} {where}")


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------
def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list] | None:
    """npe2 reader contribution: return :func:`read_ct` when ``path`` is a CT we can read, else None.

    Parameters
    ----------
    path : str or list of str
        A file or folder, or a list of them (accepted when every element is ours; DICOM directory files in
        a list are ignored). The DICOM slice files of a list are read together (one volume per series).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if len(paths) > 1:
        paths = [p for p in paths if not _is_directory_file(Path(p))]
    if not paths or not all(is_ct_path(p) for p in paths):
        return None
    return read_ct


def _series_nbytes(info: Any) -> int:
    """float32 size of a DICOM series from its first header (0 when unknown)."""
    return _files_nbytes(info.files, int(info.n_files))


def _files_nbytes(files: Sequence[str | os.PathLike], n: int) -> int:
    """float32 size of ``n`` slices like the first of ``files`` (0 when unknown). ``files`` are known to be
    DICOM (listed by GDCM, or checked by :func:`~src_training.io.is_dicom_file`), so a legacy file without
    the preamble is read with ``force=True``."""
    try:
        ds = pydicom.dcmread(str(files[0]), stop_before_pixels=True, force=True)
        return 4 * int(n) * int(ds.Rows) * int(ds.Columns)
    except Exception:  # noqa: BLE001 - load_ct reports the real problem
        return 0


def _is_ct_image_series(info: Any) -> bool:
    """False for series that are clearly not CT images (another Modality, or no Modality and no pixels)."""
    return (info.modality or "CT").strip().upper() == "CT"


def _image_type_is_localizer(path: str | os.PathLike) -> bool:
    """True when the file's ImageType (0008,0008) holds ``LOCALIZER`` (PS3.3 C.8.2.1.1.1, CT Image Type: a scout
    view). The file is one of a series listed by GDCM (DICOM, maybe without the preamble: ``force=True``)."""
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["ImageType"], force=True)
    except Exception:  # noqa: BLE001 - load_ct reports an unreadable file
        return False
    values = ds.get("ImageType", None) or ()
    values = [values] if isinstance(values, str) else list(values)
    return "LOCALIZER" in (str(v).strip().upper() for v in values)


def _is_localizer_series(info: Any) -> bool:
    """True for a series made only of localizer (scout) images.

    :attr:`SeriesInfo.is_localizer <src_training.io.SeriesInfo.is_localizer>` says it of the series' first
    file; the other files are checked here (reading stops at the first one that is not a localizer), so
    that a series holding both an axial stack and its scouts is loaded (the core drops the scout files with
    a notice) instead of being skipped whole.
    """
    if getattr(info, "is_localizer", None) is False or not info.files:
        return False
    return all(_image_type_is_localizer(f) for f in info.files)


@dataclass
class _Failure:
    """What could not be opened: ``label`` names it when the error's own text does not suffice (one series
    of a folder or a selection: ``"the series 'x' (5 images) of the folder 'f'"``), ``""`` otherwise."""

    label: str
    error: BaseException


@dataclass
class _Batch:
    """What one call of :func:`read_ct` produced: volumes (with their layer names), notices, failures."""

    volumes: list[tuple[Any, str | None]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    failures: list[_Failure] = field(default_factory=list)


def _on_slice_error(exc: Exception) -> None:
    notify_error(exc, "Open CT (slice shown as -1024 HU)")


def _load_series(
    series: Sequence[Any],
    where: str,
    name: str,
    load: Callable[[Any, bool], Any],
    batch: _Batch,
) -> None:
    """Load every CT image series of ``series`` with ``load(info, lazy)``; skip (notice) the others.

    ``where`` starts the error when no series is a CT image series (the folder's path, "The 5 selected DICOM
    files"); ``name`` says where the series are in notices and failures (``"the folder 'x'"``). With one
    series, its failure is the core's message as is; with several, each failure is recorded with the
    series named and the other series still load.
    """
    ct_series = [s for s in series if _is_ct_image_series(s)]
    others = [s for s in series if not _is_ct_image_series(s)]
    scouts = [s for s in ct_series if _is_localizer_series(s)]
    images = [s for s in ct_series if s not in scouts]
    if not images:
        if scouts:
            raise CTLoadError(only_scouts_message(where, scouts, others))
        listing = "; ".join(f"{s.modality} '{s.description or s.series_uid}'" for s in others)
        raise CTLoadError(f"{where} holds no CT series (found: {listing}). napari-lidnet works on CT images only.")
    if others:
        batch.notices.append(
            f"Open CT: {name}: skipped {len(others)} series that are not CT images: "
            + "; ".join(f"{s.modality} '{s.description or s.series_uid}'" for s in others)
        )
    if scouts:
        batch.notices.append(
            f"Open CT: {name}: skipped {len(scouts)} localizer (scout) series (planning "
            "views, not CT volumes): " + "; ".join(series_text(s) for s in scouts)
        )
    for i, info in enumerate(images):
        lazy = _series_nbytes(info) > LAZY_THRESHOLD_BYTES
        try:
            vol = load(info, lazy)
        except Exception as exc:  # noqa: BLE001 - reported by name with the others (read_ct)
            if len(series) == 1:
                raise
            batch.failures.append(_Failure(f"the series {series_text(info)} of {name}", exc))
            continue
        layer_name = None
        if len(series) > 1:
            layer_name = (info.description or "").strip() or f"series {i + 1} ({info.n_files} slices)"
        batch.volumes.append((vol, layer_name))


def _read_folder(p: Path, batch: _Batch) -> None:
    """A folder: each CT image series becomes a volume (see :func:`_load_series`)."""
    series = list_series(p)
    if not series:
        if not _folder_has_dicom(p):
            raise CTLoadError(_no_ct_message(p))
        try:  # DICOM-like files, none in a series: the core names the file and the problem
            batch.volumes.append((load_ct(p), None))
            return
        except CTLoadError as exc:
            found = _dicom_subfolders(p)
            if not found or "sub-folders (" in str(exc):
                raise
            raise CTLoadError(f"{exc} {subfolder_hint(found)}") from exc

    def load(info: Any, lazy: bool) -> Any:
        uid = info.series_uid if len(series) > 1 else None
        return load_ct(p, series_uid=uid, lazy=lazy, on_slice_error=_on_slice_error if lazy else None)

    _load_series(series, str(p), f"the folder '{p.name}'", load, batch)


def _read_slice_files(files: list[Path], batch: _Batch) -> None:
    """Several DICOM files selected together: one ``load_ct(files)`` (one volume when they are one series);
    several series among them: each series is loaded from its own files (see :func:`_load_series`)."""
    lazy = _files_nbytes(files, len(files)) > LAZY_THRESHOLD_BYTES
    try:
        vol = load_ct(files, lazy=lazy, on_slice_error=_on_slice_error if lazy else None)
    except MultipleSeriesError as exc:
        series = list(exc.series)

        def load(info: Any, lazy: bool) -> Any:
            own = [Path(f) for f in info.files] if info.files else files
            uid = None if info.files else info.series_uid
            return load_ct(own if len(own) > 1 else own[0], series_uid=uid, lazy=lazy,
                           on_slice_error=_on_slice_error if lazy else None)

        where = f"The {len(files)} selected DICOM files"
        _load_series(series, where, "the selected files", load, batch)
        return
    batch.volumes.append((vol, None))


#: Folders for which :func:`_slice_of_series_hint` has been shown in this session (shown once per folder).
_HINTED_FOLDERS: set[str] = set()


def _slice_of_series_hint(p: Path, vol: Any) -> str:
    """For a one-slice DICOM file whose folder holds other DICOM files (napari's *Open File(s)...* and a
    plain drag and drop hand the files over one at a time): how to open the series as one volume. Shown
    once per folder in a session."""
    folder = p.parent
    if vol.hu.shape[0] != 1 or str(folder) in _HINTED_FOLDERS:
        return ""
    others = 0
    try:
        with os.scandir(folder) as it:
            for i, entry in enumerate(it):
                if i >= _SCAN_LIMIT:
                    break
                if entry.name != p.name and entry.is_file() and _is_dicom_file(Path(entry.path)):
                    others += 1
    except OSError:
        return ""
    if not others:
        return ""
    _HINTED_FOLDERS.add(str(folder))
    return (f"Open CT: {p.name} is one slice; its folder '{folder.name}' holds {others} other DICOM file(s). "
            "To open the series as one volume, open the folder (menu File > Open Folder) or select its files "
            "with File > Open Files as Stack.")


def _read_file(p: Path, batch: _Batch, *, alone: bool) -> None:
    """One DICOM or volume file (``alone``: the only path of the call, so the slice hint may be shown)."""
    try:
        vol = load_ct(p)
    except CTLoadError as exc:
        if p.is_file() and p.name.lower().endswith(DICOM_SUFFIXES) and not is_dicom_file(p):
            raise CTLoadError(not_dicom_message(p, _file_kind(p))) from exc
        raise
    batch.volumes.append((vol, None))
    if alone and not _is_volume_file(p):
        hint = _slice_of_series_hint(p, vol)
        if hint:
            batch.notices.append(hint)


def _plan(paths: Sequence[str | os.PathLike]) -> list[tuple[str, Any]]:
    """The reads one call makes, in order: ``("folder", Path)``, ``("file", Path)`` and, for two or more
    DICOM files that look like DICOM, one ``("slices", [Path, ...])`` (read together, see
    :func:`_read_slice_files`); DICOM directory files of a list are dropped."""
    items: list[tuple[str, Any]] = []
    slices: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            items.append(("folder", p))
        elif _is_volume_file(p):
            items.append(("file", p))
        elif len(paths) > 1 and _is_directory_file(p):
            continue
        elif len(paths) > 1 and p.is_file() and is_dicom_file(p):
            if not slices:
                items.append(("slices", slices))
            slices.append(p)
        else:
            items.append(("file", p))  # missing, not DICOM...: load_ct / not_dicom_message name it
    if len(slices) == 1:
        items = [("file", slices[0]) if kind == "slices" else (kind, x) for kind, x in items]
    return items


def _failure_text(exc: BaseException) -> str:
    """The user's text of one failure (an unforeseen error is logged with its traceback)."""
    if isinstance(exc, LidnetError):
        return str(exc)
    logger.error("napari-lidnet: Open CT: unexpected error", exc_info=(type(exc), exc, exc.__traceback__))
    return f"unexpected error {type(exc).__name__}: {exc} (details in the log)"


def _report_failures(failures: Sequence[_Failure], n_opened: int) -> None:
    """ONE error notification for everything that could not be opened (each named, with its reason)."""
    if len(failures) == 1 and not failures[0].label:
        notify_error(failures[0].error, "Open CT")  # the core's message as is
    elif failures:
        texts = [(f.label, _failure_text(f.error)) for f in failures]
        notify_error(CTLoadError(failures_message(texts, n_opened)), "Open CT")


def read_ct(path: str | Sequence[str]) -> list:
    """Reader function: read every path, return a layer for each volume that could be read.

    Parameters
    ----------
    path : str or list of str
        A folder, a file, or several of them (the DICOM slice files of a list are read together: one
        volume per series).

    Returns
    -------
    list of (array float32 (z, y, x) HU, dict, "image"), or :data:`NO_LAYERS`
        The array is a numpy array, or a dask array for series above :data:`LAZY_THRESHOLD_BYTES`.
        What could not be read is shown in one error notification (each series or file named, with its
        reason) and the rest is returned; when nothing could be read :data:`NO_LAYERS` is returned, so
        napari adds no layer and shows no traceback. Skipped series and the loader's warnings are shown as
        information notifications.
    """
    # notices go through ``_layers.notify_info`` looked up at call time: tests/test_io_bad_input.py records
    # them by patching that name (the function itself is napari_lidnet._messages.notify_info)
    notify_info = _layers.notify_info
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    batch = _Batch()
    plan = _plan(paths)
    if paths and not plan:  # only DICOMDIR / DIRFILE files
        batch.failures.append(_Failure("", CTLoadError(
            f"{listing([Path(p).name for p in paths])}: the index of a DICOM disc or export, not images. Open the "
            f"folder that holds the image files (folder: {Path(paths[0]).parent}).")))
    for kind, target in plan:
        try:
            if kind == "folder":
                _read_folder(target, batch)
            elif kind == "slices":
                _read_slice_files(target, batch)
            else:
                _read_file(target, batch, alone=len(paths) == 1)
        except Exception as exc:  # noqa: BLE001 - reported in the one error notification
            batch.failures.append(_Failure("", exc))
    for notice in batch.notices:
        notify_info(notice)
    out: list[LayerData] = []
    used: set[str] = set()
    for vol, name in batch.volumes:
        kwargs = image_layer_kwargs(vol, name=name)
        base, k = kwargs["name"], 2
        while kwargs["name"] in used:
            kwargs["name"] = f"{base} [{k}]"
            k += 1
        used.add(kwargs["name"])
        for w in vol.metadata.get("warnings") or []:
            notify_info(f"Open CT: {kwargs['name']}: {w}")
        out.append((vol.hu, kwargs, "image"))
    _report_failures(batch.failures, len(out))
    return out if out else NO_LAYERS


# --------------------------------------------------------------------------------------------------
# napari's reader preference
# --------------------------------------------------------------------------------------------------
#: npe2 name of this plugin (napari.yaml).
PLUGIN_NAME = "napari-lidnet"
#: File patterns :func:`prefer_plugin_reader` assigns to this reader (napari matches them case-sensitively).
PREFERRED_PATTERNS: tuple[str, ...] = (
    "*.dcm", "*.DCM", "*.ima", "*.IMA", "*.nii", "*.nii.gz", "*.nrrd", "*.nhdr", "*.mha", "*.mhd",
)
#: napari's key for "every folder": napari matches a folder as its real path followed by the path
#: separator (napari.plugins.utils._get_preferred_readers), with fnmatch, so ``*/`` matches every folder.
FOLDER_PATTERN = "*" + os.sep


def prefer_plugin_reader() -> tuple[str, ...]:
    """Make napari open CT files and folders with this plugin's reader, without the "Choose reader" dialog,
    for this session (``lidnet gui``).

    Sets napari's reader preference (``napari.settings.get_settings().plugins.extension2reader``, the table
    of Preferences > Plugins > File extension readers) for :data:`PREFERRED_PATTERNS` and every folder
    (:data:`FOLDER_PATTERN`) to ``napari-lidnet``. A pattern the user already assigned (to this or any
    other plugin) is left as it is; more specific patterns the user set (a folder path, ``/data/*.dcm``)
    keep winning, as napari prefers the most specific match. The change is not saved to napari's settings
    file: :func:`restore_reader_preference` (registered with :mod:`atexit`, and called by ``lidnet gui`` when
    its window closes) takes the added patterns out again, so plain ``napari`` later still asks (the README
    says how to make the choice permanent there). Never raises: when the settings cannot be changed the
    dialog simply appears (the reason is logged).

    Returns
    -------
    tuple of str
        The patterns added (empty when every one was already assigned or the settings could not be changed).
    """
    try:
        from napari.settings import get_settings

        settings = get_settings()
        plugins = settings.plugins
        current = dict(plugins.extension2reader)
        wanted = {pattern: PLUGIN_NAME for pattern in (*PREFERRED_PATTERNS, FOLDER_PATTERN)
                  if pattern not in current}
        if not wanted:
            return ()
        saving = getattr(settings, "_save_on_change", None)
        if saving is not None:
            settings._save_on_change = False  # noqa: SLF001 - napari has no public "change without saving"
        try:
            plugins.extension2reader = {**current, **wanted}
        finally:
            if saving is not None:
                settings._save_on_change = saving  # noqa: SLF001
        _SESSION_PATTERNS.update(wanted)
        if not _RESTORE_REGISTERED:
            atexit.register(restore_reader_preference)
            _RESTORE_REGISTERED.append(True)
        return tuple(wanted)
    except Exception:  # noqa: BLE001 - a comfort, never a failure
        logger.warning("napari-lidnet: could not set napari's reader preference", exc_info=True)
        return ()


#: Patterns added by :func:`prefer_plugin_reader` in this process (pattern -> plugin), taken out at exit.
_SESSION_PATTERNS: dict[str, str] = {}
_RESTORE_REGISTERED: list[bool] = []


def restore_reader_preference() -> None:
    """Take out the reader patterns :func:`prefer_plugin_reader` added in this session (those still pointing
    at this plugin), so napari's saved settings are as the user left them. Never raises."""
    if not _SESSION_PATTERNS:
        return
    try:
        from napari.settings import get_settings

        plugins = get_settings().plugins
        table = {k: v for k, v in plugins.extension2reader.items()
                 if not (k in _SESSION_PATTERNS and v == _SESSION_PATTERNS[k])}
        _SESSION_PATTERNS.clear()
        plugins.extension2reader = table
    except Exception:  # noqa: BLE001 - at exit: never a failure
        logger.warning("napari-lidnet: could not restore napari's reader preference", exc_info=True)
