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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._layers import image_layer_kwargs, notify_error

#: File name endings of volume files we read (lower case).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: File name endings of DICOM files (lower case).
DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
#: How many entries of a folder are looked at to decide whether it holds DICOM files.
_SNIFF_LIMIT = 64

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


def read_layers(path: str | os.PathLike) -> list[LayerData]:
    """Read one file or folder into layer-data tuples ``(hu, kwargs, "image")``; raises on failure.

    Parameters
    ----------
    path : path-like
        Folder (every DICOM series in it becomes a layer), DICOM file or volume file.

    Returns
    -------
    list of (ndarray float32 (z, y, x) HU, dict, "image")

    Raises
    ------
    src_training.errors.CTLoadError
        Unreadable input (message says which file and what to do).
    """
    from src_training.errors import CTLoadError
    from src_training.io import list_series, load_ct

    p = Path(path)
    volumes = []
    if p.is_dir():
        series = list_series(p)
        if not series:
            raise CTLoadError(f"{p} holds no readable DICOM series. Choose the folder with the CT's DICOM files.")
        if len(series) == 1:
            volumes.append((load_ct(p), None))
        else:
            for i, info in enumerate(series):
                name = (info.description or "").strip() or f"series {i + 1} ({info.n_files} slices)"
                volumes.append((load_ct(p, series_uid=info.series_uid), name))
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
