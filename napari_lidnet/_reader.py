"""napari reader: DICOM series folders, single DICOM files, NIfTI / NRRD / MetaImage CT volumes.

Each volume becomes an image layer in HU with ``scale`` = voxel spacing (mm), ``translate`` from the
origin, contrast limits from the CT window (lung for chest CT, soft tissue otherwise) and the DICOM metadata
in ``layer.metadata`` (see :func:`napari_lidnet._layers.image_layer_kwargs`). A folder with several series
gives one layer per series, named by its SeriesDescription.

A file that is clearly not a CT (another extension) is refused (``napari_get_reader`` returns None) so other
readers can try. Every folder is accepted, so that an empty folder, or one without CT files, gets the
plugin's own message naming the folder and saying what it holds (instead of napari's generic "refused the
file" notice with a traceback button). A path that is ours but cannot be read (empty folder, a ``.dcm``
file that is not DICOM, corrupt file, missing slices, not CT...) gives an error notification in plain words
and no layer: the reader returns napari's "nothing to add" value ``[(None,)]``. (In napari 0.9 / npe2 0.10
an empty list ``[]`` is treated as a failed read and napari raises "returned no data" on top of our
notification; raising a :class:`~src_training.errors.LidnetError` makes napari show its own notice with a
"View Traceback" button.)

:func:`prefer_plugin_reader` makes napari open the CT files and folders with this reader without asking
("Choose reader" dialog) for the session; ``lidnet gui`` calls it, and :func:`restore_reader_preference`
undoes it at exit.

Large DICOM series (more than :data:`LAZY_THRESHOLD_BYTES` of float32 voxels) are returned as a lazy
dask array: every header is checked and the middle slice decoded before the layer is added, the other
slices are decoded when napari shows them (a slice that then fails to decode is shown as -1024 HU and an
error notification names the file). What the loader corrected or assumed (``metadata["warnings"]``:
gantry tilt, absent rescale tags...) is shown as an information notification. In a folder with several
series, series that are not CT images (SR dose reports, RT structures, MR...) are skipped with a notice.
"""

from __future__ import annotations

import atexit
import logging
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

logger = logging.getLogger("napari_lidnet")

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
    ``.ima``, or no extension with the ``DICM`` preamble), or any folder but a ``.zarr`` store (a folder
    without CT files is accepted too, so that the user gets this plugin's message about it, see
    :func:`read_layers`).
    """
    p = Path(path)
    if p.is_dir():
        return not p.name.lower().endswith(".zarr")  # zarr stores are other readers' (napari, ome-zarr)
    if _is_volume_file(p) or p.name.lower().endswith(DICOM_SUFFIXES):
        return True  # ours even if it turns out corrupt (then: notification, no layer)
    return p.is_file() and _is_dicom_file(p)


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


def _is_not_dicom(path: Path) -> bool:
    """True when ``path`` has no DICOM preamble and pydicom cannot read a header from it."""
    if _has_dicm_magic(path):
        return False
    try:
        pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception:  # noqa: BLE001 - any failure: not a DICOM file
        return True
    return False


def _not_dicom_message(path: Path) -> str:
    kind = _file_kind(path)
    what = f"it seems to be {kind}" if kind else "it holds another kind of data, or is damaged"
    return (
        f"{path.name} is not a DICOM image: the file has a DICOM name ({path.suffix}) but {what}. "
        f"Open the DICOM files exported by the scanner or PACS (file: {path})."
    )


#: How many entries of a folder :func:`_no_ct_message` looks at.
_SCAN_LIMIT = 2000


def _no_ct_message(folder: Path) -> str:
    """What an opened folder without a readable DICOM series holds, and what to open instead."""
    files: list[str] = []
    volumes: list[str] = []
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
    except OSError as exc:
        return (f"The folder '{folder.name}' cannot be read ({exc.strerror or 'access refused'}). Check that "
                f"it exists and that you may open it (folder: {folder}).")
    where = f"(folder: {folder})"
    todo = "Choose the folder that holds the CT's DICOM files (one file per slice), or a NIfTI / NRRD / MetaImage file."

    def listing(names: list[str]) -> str:
        names = sorted(names)
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    if volumes:
        return (f"The folder '{folder.name}' holds no DICOM series but {len(volumes)} CT volume file(s): "
                f"{listing(volumes)}. Open one of these files instead of the folder {where}.")
    series_dirs = [d for d in subfolders if _folder_has_dicom(folder / d)]
    if series_dirs:
        return (f"The folder '{folder.name}' holds no DICOM files itself; its subfolder(s) "
                f"{listing(series_dirs)} hold DICOM files. Open the subfolder of the series you want {where}.")
    if not files and not subfolders:
        return f"The folder '{folder.name}' is empty. {todo} {where}"
    contents = []
    if files:
        contents.append(f"{len(files)} file(s) ({listing(files)})")
    if subfolders:
        contents.append(f"{len(subfolders)} subfolder(s) without DICOM files")
    return (f"The folder '{folder.name}' holds no CT images: it holds {' and '.join(contents)}, none of them "
            f"DICOM, NIfTI, NRRD or MetaImage. {todo} {where}")


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
            if _folder_has_dicom(p):
                load_ct(p)  # DICOM-like files, none readable: the core names the file and the problem
            raise CTLoadError(_no_ct_message(p))
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
        try:
            volumes.append((load_ct(p), None))
        except CTLoadError as exc:
            if p.is_file() and p.name.lower().endswith(DICOM_SUFFIXES) and _is_not_dicom(p):
                raise CTLoadError(_not_dicom_message(p)) from exc
            raise
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
