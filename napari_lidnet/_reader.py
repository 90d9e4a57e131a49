"""napari reader: DICOM series folders, single DICOM files, NIfTI / NRRD / MetaImage CT volumes.

Each volume becomes an image layer in HU with ``scale`` = voxel spacing (mm), ``translate`` from the
origin, contrast limits from the CT window (lung for chest CT, soft tissue otherwise) and the DICOM metadata
in ``layer.metadata`` (see :func:`napari_lidnet._layers.image_layer_kwargs`). A folder with several series
gives one layer per series, named by its SeriesDescription.

A path that is clearly not a CT (another extension, a folder without DICOM files) is refused
(``napari_get_reader`` returns None) so other readers can try. A path that is ours but cannot be read
(corrupt file, missing slices, not CT...) gives an error notification and no layer: the reader returns
napari's "nothing to add" value ``[(None,)]``. (In napari 0.9 / npe2 0.10 an empty list ``[]`` would be
treated as a failed read and napari would raise "returned no data" on top of our notification.)

Large DICOM series (more than :data:`LAZY_THRESHOLD_BYTES` of float32 voxels) are returned as a lazy
dask array: every header is checked and the middle slice decoded before the layer is added, the other
slices are decoded when napari shows them (a slice that then fails to decode is shown as -1024 HU and an
error notification names the file). What the loader corrected or assumed (``metadata["warnings"]``:
gantry tilt, absent rescale tags...) is shown as an information notification. In a folder with several
series, series that are not CT images (SR dose reports, RT structures, MR...) are skipped with a notice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom

from src_training.errors import CTLoadError
from src_training.io import list_series, load_ct

from . import _layers
from ._layers import image_layer_kwargs
from ._messages import notify_error

#: File name endings of volume files we read (lower case).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File name endings of DICOM files (lower case).
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
#: How many entries of a folder are looked at to decide whether it holds DICOM files.
_SNIFF_LIMIT = 64

#: Volumes larger than this (float32 bytes = 4 * z * y * x) are returned as lazy dask arrays (512 MiB:
#: e.g. a 512 x 512 x 600 series, 600 MiB, is lazy; 512 x 512 x 400, 400 MiB, is loaded in memory).
LAZY_THRESHOLD_BYTES = 512 * 2**20

#: The value a reader returns to say "read, but nothing to add" (napari/npe2 null-layer sentinel).
NO_LAYERS: list = [(None,)]

LayerData = tuple  # (data, meta, layer_type)


def _has_dicm_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) >= 132 and head[128:132] == b"DICM"


def _is_volume_file(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(VOLUME_SUFFIXES)


def _is_dicom_file(path: Path) -> bool:
    name = path.name.lower()
    if name.endswith(DICOM_SUFFIXES):
        return True
    # extension-less DICOM files (PACS exports: IM0001, 1.2.840...): check the preamble magic
    if "." not in name or name.rsplit(".", 1)[-1].isdigit():
        return _has_dicm_magic(path)
    return False


def _folder_has_dicom(folder: Path) -> bool:
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
    ``.ima``, or no extension with the ``DICM`` preamble), or a folder holding DICOM files.
    """
    p = Path(path)
    if p.is_dir():
        return _folder_has_dicom(p)
    if _is_volume_file(p) or p.name.lower().endswith(DICOM_SUFFIXES):
        return True  # ours even if it turns out corrupt (then: notification, no layer)
    return p.is_file() and _is_dicom_file(p)


def napari_get_reader(path: str | Sequence[str]) -> Callable[[Any], list] | None:
    """npe2 reader contribution: return :func:`read_ct` when ``path`` is a CT we can read, else None.

    Parameters
    ----------
    path : str or list of str
        A file or folder; a list is accepted when every element is ours (each is read separately).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(is_ct_path(p) for p in paths):
        return None
    return read_ct


def _series_nbytes(info: Any) -> int:
    """float32 size of a DICOM series from its first header (0 when unknown)."""
    try:
        ds = pydicom.dcmread(info.files[0], stop_before_pixels=True)
        return 4 * int(info.n_files) * int(ds.Rows) * int(ds.Columns)
    except Exception:  # noqa: BLE001 - load_ct reports the real problem
        return 0


def _is_ct_image_series(info: Any) -> bool:
    """False for series that are clearly not CT images (another Modality, or no Modality and no pixels)."""
    return (info.modality or "CT").strip().upper() == "CT"


def read_layers(path: str | os.PathLike) -> list[LayerData]:
    """Read one file or folder into layer-data tuples ``(hu, kwargs, "image")``; raises on failure.

    Parameters
    ----------
    path : path-like
        Folder (every CT series in it becomes a layer; non-CT series are skipped with a notice), DICOM file
        or volume file.

    Returns
    -------
    list of (array float32 (z, y, x) HU, dict, "image")
        The array is a numpy array, or a dask array for series above :data:`LAZY_THRESHOLD_BYTES`.

    Raises
    ------
    src_training.errors.CTLoadError
        Unreadable input (message says which file and what to do).
    """
    # notices go through ``_layers.notify_info`` looked up at call time: tests/test_io_bad_input.py records
    # them by patching that name (the function itself is napari_lidnet._messages.notify_info)
    notify_info = _layers.notify_info

    def on_slice_error(exc: Exception) -> None:
        notify_error(exc, "Open CT (slice shown as -1024 HU)")

    p = Path(path)
    volumes = []
    if p.is_dir():
        series = list_series(p)
        if not series:
            raise CTLoadError(f"{p} holds no readable DICOM series. Choose the folder with the CT's DICOM files.")
        ct_series = [s for s in series if _is_ct_image_series(s)]
        skipped = [s for s in series if not _is_ct_image_series(s)]
        if skipped and ct_series:
            notify_info(
                f"Open CT: {p.name}: skipped {len(skipped)} series that are not CT images: "
                + "; ".join(f"{s.modality} '{s.description or s.series_uid}'" for s in skipped)
            )
        elif skipped:
            listing = "; ".join(f"{s.modality} '{s.description or s.series_uid}'" for s in skipped)
            raise CTLoadError(f"{p} holds no CT series (found: {listing}). napari-lidnet works on CT images only.")
        for i, info in enumerate(ct_series):
            lazy = _series_nbytes(info) > LAZY_THRESHOLD_BYTES
            uid = info.series_uid if len(series) > 1 else None
            vol = load_ct(p, series_uid=uid, lazy=lazy, on_slice_error=on_slice_error if lazy else None)
            name = None
            if len(series) > 1:
                name = (info.description or "").strip() or f"series {i + 1} ({info.n_files} slices)"
            volumes.append((vol, name))
    else:
        volumes.append((load_ct(p), None))
    out: list[LayerData] = []
    used: set[str] = set()
    for vol, name in volumes:
        kwargs = image_layer_kwargs(vol, name=name)
        base, k = kwargs["name"], 2
        while kwargs["name"] in used:
            kwargs["name"] = f"{base} [{k}]"
            k += 1
        used.add(kwargs["name"])
        for w in vol.metadata.get("warnings") or []:
            notify_info(f"Open CT: {kwargs['name']}: {w}")
        out.append((vol.hu, kwargs, "image"))
    return out


def read_ct(path: str | Sequence[str]) -> list:
    """Reader function: every path is read before anything is returned (all or nothing).

    On failure an error notification says what is wrong and :data:`NO_LAYERS` is returned, so napari adds
    no layer and shows no traceback.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[LayerData] = []
    try:
        for p in paths:
            layers.extend(read_layers(p))
    except Exception as exc:  # noqa: BLE001 - reported as a notification
        notify_error(exc, "Open CT")
        return NO_LAYERS
    return layers if layers else NO_LAYERS
