"""CT input/output: DICOM series, single DICOM files, NIfTI / NRRD / MetaImage volumes.

Everything returns a :class:`CTVolume`: ``hu`` float32 ``(z, y, x)`` in Hounsfield units, ``spacing``
``(z, y, x)`` in mm, and the patient geometry in SimpleITK's convention (``origin`` ``(x, y, z)`` mm in
DICOM/LPS patient coordinates, ``direction`` a row-major 3x3 matrix as a 9-tuple whose columns are the
directions of the x (column), y (row) and z (slice) axes).

DICOM series are listed with SimpleITK/GDCM (``GetGDCMSeriesIDs``) and each file is parsed once by pydicom
(``defer_size``: the pixel data stays in the file until its slice is decoded), which orders the slices
(increasing position along the slice normal ``row x column``), checks that they are
evenly spaced (a missing slice is reported with its position), corrects a gantry tilt, and decodes the pixels
one slice at a time into one preallocated float32 array (RescaleSlope/RescaleIntercept per slice; compressed
transfer syntaxes through the pylibjpeg decoders); the middle slice is decoded a second time by SimpleITK as
a cross-check. Every failure of the underlying libraries is reported as
:class:`~src_training.errors.CTLoadError` with a message naming the file and what to do; docs/reliability.md
lists each bad input and what the user sees.

Writers (:func:`write_dicom_series`, :func:`write_volume`) are atomic: they write into a temporary folder /
file beside the destination and rename it into place.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from .errors import CTLoadError, CTWriteError, LidnetError, MultipleSeriesError, OutputExistsError

#: File name endings read as volumes (not DICOM) by :func:`load_ct`, lower case.
VOLUME_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: DICOM tags copied into :attr:`CTVolume.metadata` (keyword names; missing tags are left out).
METADATA_TAGS: tuple[str, ...] = (
    "Modality",
    "SOPClassUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "FrameOfReferenceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesDate",
    "SeriesTime",
    "ImageType",
    "BodyPartExamined",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "PixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "ImageOrientationPatient",
    "Rows",
    "Columns",
    "BitsStored",
    "PixelRepresentation",
    "Manufacturer",
    "ManufacturerModelName",
    "InstitutionName",
    "KVP",
    "XRayTubeCurrent",
    "Exposure",
    "ExposureTime",
    "CTDIvol",
    "ConvolutionKernel",
    "ReconstructionDiameter",
    "PatientPosition",
    "WindowCenter",
    "WindowWidth",
)

# Tags of the patient/study modules that a derived series copies from its reference.
_STUDY_TAGS: tuple[str, ...] = (
    "StudyInstanceUID",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID (0020,000E).
    description : str
        SeriesDescription (0008,103E), ``""`` when absent.
    modality : str
        Modality (0008,0060), ``""`` when absent.
    n_files : int
        Number of files of the series in the folder.
    files : list of str
        Their paths (in the order GDCM lists them; :func:`load_ct` sorts them by position).
    """

    series_uid: str
    description: str
    modality: str
    n_files: int
    files: list[str] = field(default_factory=list)

    def __str__(self) -> str:  # used in error messages
        desc = self.description or "(no description)"
        return f"{self.series_uid}  '{desc}'  {self.modality or '?'}  {self.n_files} files"


@dataclass
class CTVolume:
    """A CT volume in HU with its geometry.

    Attributes
    ----------
    hu : ndarray float32, shape (z, y, x)
        Intensities in Hounsfield units. For DICOM, z runs in increasing position along the slice normal
        (``row direction x column direction``; for axial scans with the usual orientation that is feet to
        head).
    spacing : (float, float, float)
        Voxel size ``(z, y, x)`` in mm (z: distance between slice centres, not SliceThickness).
    origin : (float, float, float)
        Centre of the first voxel, ``(x, y, z)`` in mm in DICOM patient coordinates (LPS), SimpleITK order.
    direction : tuple of 9 floats
        SimpleITK direction cosines, row-major 3x3; column k is the direction of array axis k in
        ``(x, y, z)`` order (column 0: along a row / increasing x index, column 2: slice normal).
    metadata : dict
        JSON-serialisable: the DICOM tags of :data:`METADATA_TAGS` found in the first slice (PatientName as
        str, multi-values as lists), plus ``source_path``, ``format`` (``"dicom-series"``, ``"dicom-file"``,
        ``"nifti"``, ``"nrrd"``, ``"metaimage"``), ``n_slices`` and for DICOM ``hu_check``.
    source : str
        The path the volume was loaded from (``""`` for volumes built in memory).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` shape of :attr:`hu`."""
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------- helpers


def _short(exc: BaseException, limit: int = 300) -> str:
    """One-line summary of a library exception (SimpleITK messages are many lines long)."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # SimpleITK / ITK put the useful part on the last lines ("Description: ...").
    desc = [ln for ln in lines if ln.lower().startswith(("description", "itk::error"))]
    msg = desc[-1] if desc else (lines[-1] if lines else type(exc).__name__)
    msg = f"{type(exc).__name__}: {msg}"
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


class _QuietSitk:
    """Context manager silencing SimpleITK/GDCM warnings (restores the previous setting)."""

    def __enter__(self):
        self._prev = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        return self

    def __exit__(self, *exc):
        sitk.ProcessObject.SetGlobalWarningDisplay(self._prev)
        return False


def _json_value(value: Any) -> Any:
    """Convert a pydicom element value to a JSON-serialisable Python value."""
    if value is None:
        return None
    if isinstance(value, (pydicom.multival.MultiValue, list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, pydicom.valuerep.PersonName):
        return str(value)
    if isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.DSdecimal, float)):
        return float(value)
    if isinstance(value, (pydicom.valuerep.IS, int, np.integer)):
        return int(value)
    if isinstance(value, bytes):
        return value.decode("latin-1", errors="replace")
    return str(value)


def _metadata_from_dataset(ds: pydicom.Dataset) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for kw in METADATA_TAGS:
        if kw in ds:
            try:
                meta[kw] = _json_value(ds.data_element(kw).value)
            except Exception:  # noqa: BLE001 - a malformed optional tag is left out
                continue
    return meta


def _is_volume_path(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in VOLUME_SUFFIXES)


def _volume_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    return "metaimage"


def _check_finite(hu: np.ndarray, source: str) -> None:
    """Raise CTLoadError when ``hu`` holds NaN/Inf (checked slice by slice: no volume-sized temporary)."""
    flat = hu.reshape(-1, hu.shape[-1]) if hu.ndim > 1 else hu.reshape(1, -1)
    step = max(1, (1 << 20) // max(1, flat.shape[1]))
    n_bad = 0
    for i in range(0, flat.shape[0], step):
        block = flat[i : i + step]
        n_bad += int(block.size - np.count_nonzero(np.isfinite(block)))
    if n_bad:
        raise CTLoadError(
            f"{source}: the volume contains {n_bad} NaN or infinite voxel(s). A CT volume must hold finite HU "
            "values; re-export it from the scanner/PACS or fix the file."
        )


def _direction_from_iop(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = np.asarray([float(v) for v in iop[:3]], dtype=np.float64)
    c = np.asarray([float(v) for v in iop[3:6]], dtype=np.float64)
    n = np.cross(r, c)
    return r, c, n


# --------------------------------------------------------------------------------------------- listing


def list_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """List the DICOM series in a folder (not recursive).

    Parameters
    ----------
    folder : path-like
        A folder with DICOM files (any file names; non-DICOM files are ignored).

    Returns
    -------
    list of SeriesInfo
        One entry per SeriesInstanceUID found by SimpleITK/GDCM (``GetGDCMSeriesIDs``), with description and
        modality read by pydicom (``dcmread(stop_before_pixels=True)``) from the first file; empty when no
        DICOM series is found.

    Raises
    ------
    CTLoadError
        If ``folder`` does not exist or is not a folder.
    """
    return _list_series(folder, None)


def _list_series(folder: str | os.PathLike, parsed: dict[str, pydicom.Dataset] | None) -> list[SeriesInfo]:
    """:func:`list_series`; when ``parsed`` is a dict, the first file of each series is parsed whole
    (:func:`_parse_dicom`) and kept there (path -> dataset) so that loading does not parse it again."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CTLoadError(f"{folder} is not a folder. Choose the folder that holds the DICOM files of the series.")
    with _QuietSitk():
        try:
            uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        except Exception as exc:  # noqa: BLE001
            raise CTLoadError(f"Cannot scan {folder} for DICOM series ({_short(exc)}).") from exc
        out: list[SeriesInfo] = []
        for uid in uids:
            try:
                files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            except Exception as exc:  # noqa: BLE001
                raise CTLoadError(f"Cannot list the files of series {uid} in {folder} ({_short(exc)}).") from exc
            description, modality = "", ""
            for f in files[:1]:
                try:
                    if parsed is None:
                        ds = pydicom.dcmread(f, stop_before_pixels=True)
                    else:
                        ds = parsed[str(f)] = _parse_dicom(f)
                    description = str(ds.get("SeriesDescription", "") or "")
                    modality = str(ds.get("Modality", "") or "")
                except Exception:  # noqa: BLE001 - reported when the series is loaded
                    pass
            out.append(SeriesInfo(uid, description, modality, len(files), files))
    return out


# --------------------------------------------------------------------------------------------- loading

#: Transfer syntaxes whose decoding is lossy (the SimpleITK cross-check then allows a few HU difference).
_LOSSY_SYNTAXES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.1.2.4.50",  # JPEG baseline
        "1.2.840.10008.1.2.4.51",  # JPEG extended
        "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
        "1.2.840.10008.1.2.4.91",  # JPEG 2000
        "1.2.840.10008.1.2.4.93",  # JPEG 2000 part 2
    }
)

#: What to install so that pydicom decodes compressed DICOM (JPEG, JPEG-LS, JPEG 2000).
PIXEL_HANDLERS_HINT = (
    "install the DICOM pixel decoders: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
    "(or: pip install python-gdcm)"
)


def load_ct(
    path: str | os.PathLike,
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
    path : path-like
        A folder with one DICOM series (or several, then ``series_uid`` chooses), a single DICOM file, or a
        volume file ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``. Volume files are taken
        to hold HU already (NIfTI scl_slope/scl_inter are applied by SimpleITK). A 2-D image (one DICOM
        slice, a 2-D NIfTI) gives a one-slice volume ``(1, y, x)``.
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
        The folder holds several series and ``series_uid`` is None; ``.series`` lists them.
    CTLoadError
        Missing path, empty folder, unknown ``series_uid``, corrupt / truncated / non-image file, a modality
        other than CT, missing or duplicated slices or uneven spacing (the gap is reported), inconsistent
        slice sizes or orientations, colour images, 4-D images, a compressed transfer syntax without an
        installed decoder (the message names the packages), unusable RescaleSlope, NaN/Inf voxels.
    """
    path = Path(path)
    if not path.exists():
        raise CTLoadError(f"{path} does not exist. Check the path of the CT folder or file.")
    try:
        if path.is_dir():
            return _load_dicom_folder(path, series_uid, lazy=lazy, on_slice_error=on_slice_error)
        if _is_volume_path(path):
            return _load_volume_file(path)
        return _load_dicom_file(path, lazy=lazy, on_slice_error=on_slice_error)
    except LidnetError:
        raise
    except MemoryError as exc:
        raise CTLoadError(
            f"Not enough memory to load {path}. Close other layers/programs, or open it in napari (large series "
            "are then read slice by slice)."
        ) from exc
    except Exception as exc:  # noqa: BLE001 - last resort: a message for the user, never a traceback
        raise CTLoadError(
            f"Cannot read {path}: {UNEXPECTED_MARK} ({_short(exc)}). The file may be corrupt; re-export it, and "
            "report this message to the napari-lidnet developers."
        ) from exc


#: Words of the last-resort error of :func:`load_ct` (a library failed in a way not foreseen); the fuzz
#: tests check that no input they generate reaches it.
UNEXPECTED_MARK = "unexpected problem"


def _nifti_nonfinite_count(path: Path, chunk_bytes: int = 1 << 20) -> int:
    """Count NaN/Inf in the raw data of a float NIfTI-1/2 file, streaming it in chunks of ``chunk_bytes``.

    ITK's NIfTI reader silently turns NaN into 0, so the raw voxels are checked here (0 for integer data
    or a header this minimal parser does not understand; SimpleITK then reports real corruption). Memory
    use is one chunk, whatever the size of the file.
    """
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read(540)
            if len(raw) < 348:
                return 0
            for endian in ("<", ">"):
                size = int(np.frombuffer(raw[:4], dtype=f"{endian}i4")[0])
                if size == 348:
                    dim = np.frombuffer(raw[40:56], dtype=f"{endian}i2").astype(np.int64)
                    datatype = int(np.frombuffer(raw[70:72], dtype=f"{endian}i2")[0])
                    offset = int(np.frombuffer(raw[108:112], dtype=f"{endian}f4")[0])
                    break
                if size == 540 and len(raw) >= 540:
                    datatype = int(np.frombuffer(raw[12:14], dtype=f"{endian}i2")[0])
                    dim = np.frombuffer(raw[16:80], dtype=f"{endian}i8").astype(np.int64)
                    offset = int(np.frombuffer(raw[168:176], dtype=f"{endian}i8")[0])
                    break
            else:
                return 0
            kinds = {16: "f4", 64: "f8"}
            if datatype not in kinds or not 1 <= dim[0] <= 7 or offset < len(raw) and offset < 348:
                return 0
            count = int(np.prod(dim[1 : dim[0] + 1]))
            dt = np.dtype(f"{endian}{kinds[datatype]}")
            if count <= 0 or offset < 0:
                return 0
            # position the stream at the voxel data
            if offset >= len(raw):
                fh.read(offset - len(raw))
                pending = b""
            else:
                pending = raw[offset:]
            n_bad, left = 0, count * dt.itemsize
            step = max(dt.itemsize, chunk_bytes - chunk_bytes % dt.itemsize)
            while left > 0:
                buf = pending + fh.read(min(step, left) - len(pending))
                pending = b""
                if not buf:
                    break  # truncated: SimpleITK reports it
                buf = buf[: len(buf) - len(buf) % dt.itemsize]
                data = np.frombuffer(buf, dtype=dt)
                n_bad += int(data.size - np.count_nonzero(np.isfinite(data)))
                left -= len(buf)
            return n_bad
    except (OSError, EOFError, ValueError):
        return 0


class _SitkBuffer:
    """Exposes a SimpleITK image's pixel buffer through ``__array_interface__`` and keeps the image alive,
    so ``np.asarray(_SitkBuffer(img))`` is a writable array sharing the image's memory (no copy)."""

    def __init__(self, img: sitk.Image):
        self._img = img
        view = sitk.GetArrayViewFromImage(img)  # read-only view, valid while img lives
        iface = dict(view.__array_interface__)
        iface["data"] = (iface["data"][0], False)
        self.__array_interface__ = iface


def _load_volume_file(path: Path) -> CTVolume:
    fmt = _volume_format(path)
    if fmt == "nifti":
        n_bad = _nifti_nonfinite_count(path)
        if n_bad:
            raise CTLoadError(
                f"{path}: the volume contains {n_bad} NaN or infinite voxel(s). A CT volume must hold finite HU "
                "values; re-export it or fix the file."
            )
    def corrupt(exc: Exception) -> CTLoadError:
        return CTLoadError(
            f"Cannot read {path} as a {fmt} volume: the file is corrupt, truncated or not an image ({_short(exc)})."
        )

    with _QuietSitk():
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            n_comp, ndim = reader.GetNumberOfComponents(), reader.GetDimension()
        except Exception as exc:  # noqa: BLE001
            raise corrupt(exc) from exc
        if n_comp != 1:
            raise CTLoadError(
                f"{path} has {n_comp} values per voxel (colour/vector image); a CT volume has one HU value per voxel."
            )
        if ndim not in (2, 3):
            raise CTLoadError(f"{path} is a {ndim}-D image; only 2-D slices and 3-D volumes are supported.")
        try:
            reader.SetOutputPixelType(sitk.sitkFloat32)  # cast while reading: one float32 buffer
            img = reader.Execute()
        except Exception as exc:  # noqa: BLE001
            raise corrupt(exc) from exc
    hu = np.asarray(_SitkBuffer(img))
    meta: dict[str, Any] = {"source_path": str(path), "format": fmt}
    if img.GetDimension() == 2:
        hu = hu[None]
        sp = img.GetSpacing()
        spacing = (1.0, float(sp[1]), float(sp[0]))
        o = img.GetOrigin()
        origin = (float(o[0]), float(o[1]), 0.0)
        d = img.GetDirection()
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
        meta["warnings"] = [f"{path.name} is a 2-D image: loaded as a one-slice volume (z spacing 1 mm assumed)."]
    else:
        sp = img.GetSpacing()
        spacing = (float(sp[2]), float(sp[1]), float(sp[0]))
        origin = tuple(float(v) for v in img.GetOrigin())
        direction = tuple(float(v) for v in img.GetDirection())
    if hu.size == 0:
        raise CTLoadError(f"{path} holds an empty image.")
    _check_finite(hu, str(path))
    meta["n_slices"] = int(hu.shape[0])
    for key in img.GetMetaDataKeys():
        if key in ("ITK_original_direction", "ITK_original_spacing"):
            continue
        try:
            val = img.GetMetaData(key)
        except Exception:  # noqa: BLE001
            continue
        if len(val) < 200:
            meta.setdefault("header", {})[key] = val
    return CTVolume(
        hu=hu,
        spacing=spacing,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),
        metadata=meta,
        source=str(path),
    )


def _read_header(f: str | Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(str(f), stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(
            f"{f} is not a readable DICOM file (corrupt, truncated or another format): {_short(exc)}. Remove it "
            "from the folder or re-export the series."
        ) from exc


#: Elements longer than this (bytes) are not read by :func:`_parse_dicom`; pydicom reads them from the file
#: when they are used (in practice only the pixel data, read when its slice is decoded).
_DEFER_BYTES = 1024

#: Tags of the pixel data elements (PixelData, FloatPixelData, DoubleFloatPixelData).
_PIXEL_TAGS: tuple[int, ...] = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _parse_dicom(f: str | Path) -> pydicom.Dataset:
    """Parse a DICOM file once for both its header and (later) its pixels.

    Every element is parsed; elements longer than :data:`_DEFER_BYTES` (the pixel data) stay in the file
    (pydicom ``defer_size``) and are read by :func:`_decode_slice` when the slice is decoded, so holding
    the datasets of a whole series costs headers only. A file pydicom cannot parse to its end (e.g. a
    damaged element after the pixel data) is read as before by :func:`_read_header` (header only; its
    pixels are then decoded from the file, which names the problem).

    Raises
    ------
    CTLoadError
        The file is not readable DICOM (message of :func:`_read_header`).
    """
    try:
        return pydicom.dcmread(str(f), defer_size=_DEFER_BYTES)
    except Exception:  # noqa: BLE001 - the header-only read reports the problem, as before
        return _read_header(f)


def _check_modality(ds: pydicom.Dataset, where: str) -> None:
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality != "CT":
        raise CTLoadError(
            f"{where} is a {modality} image (DICOM Modality {modality}), not CT. napari-lidnet works on CT in "
            "Hounsfield units only; choose a CT series."
        )


def _transfer_syntax(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID", None) if meta is not None else None
    return str(ts) if ts else str(pydicom.uid.ImplicitVRLittleEndian)


def _check_decoder(ts: str, f: str | Path) -> None:
    """Refuse, naming what to install, when pydicom has no working decoder for the transfer syntax ``ts``."""
    from pydicom.pixels import get_decoder

    uid = pydicom.uid.UID(ts)
    if not uid.is_transfer_syntax:
        raise CTLoadError(
            f"{f}: unknown transfer syntax {ts!r} (TransferSyntaxUID); the file is corrupt or uses an encoding "
            "napari-lidnet cannot read. Export the series uncompressed (Explicit VR Little Endian)."
        )
    if not uid.is_compressed:
        return
    try:
        decoder = get_decoder(uid)
    except NotImplementedError as exc:
        raise CTLoadError(
            f"{f}: the pixels are compressed with {uid.name} ({ts}), which napari-lidnet cannot decode. "
            "Export the series uncompressed (Explicit VR Little Endian) from the PACS."
        ) from exc
    if not decoder.is_available:
        raise CTLoadError(
            f"{f}: the pixels are compressed with {uid.name} ({ts}) and no decoder for it is installed; "
            f"{PIXEL_HANDLERS_HINT}. Or export the series uncompressed from the PACS."
        )


def _rescale(ds: pydicom.Dataset, f: str | Path, warnings_out: list[str]) -> tuple[float, float]:
    """``(slope, intercept)`` of a slice; absent tags mean identity (a warning is added)."""
    has_slope, has_inter = "RescaleSlope" in ds, "RescaleIntercept" in ds
    try:
        slope = float(ds.RescaleSlope) if has_slope and ds.RescaleSlope not in (None, "") else 1.0
        inter = float(ds.RescaleIntercept) if has_inter and ds.RescaleIntercept not in (None, "") else 0.0
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(f"{f}: RescaleSlope/RescaleIntercept are not numbers ({_short(exc)}); re-export the series.") from exc
    if not (np.isfinite(slope) and np.isfinite(inter)) or slope <= 0:
        raise CTLoadError(
            f"{f}: RescaleSlope {slope:g} / RescaleIntercept {inter:g} cannot convert the stored values to HU "
            "(the slope must be a positive finite number); re-export the series."
        )
    if not (has_slope and has_inter):
        msg = (
            "RescaleSlope/RescaleIntercept absent: stored values taken as HU (slope 1, intercept 0). Check that "
            "air reads about -1000 HU."
        )
        if msg not in warnings_out:
            warnings_out.append(msg)
    return slope, inter


def _decode_slice(
    f: str,
    shape: tuple[int, int],
    slope: float,
    intercept: float,
    shift: tuple[float, float] | None,
    out: np.ndarray | None = None,
    ds: pydicom.Dataset | None = None,
) -> np.ndarray:
    """Decode one single-frame DICOM slice into ``out`` (float32 ``shape``) as HU.

    pydicom masks the bits above BitsStored and sign-extends when PixelRepresentation is 1. ``shift``
    (rows, columns), when given, moves the slice in-plane by linear interpolation (gantry-tilt correction;
    voxels coming from outside the slice are -1024 HU). ``ds``, the dataset of ``f`` from
    :func:`_parse_dicom`, saves parsing the file again: its deferred pixel data is read from the file and
    released after decoding (``ds`` keeps headers only). Without ``ds``, or when ``ds`` holds no pixel data
    element, ``f`` is read whole.
    """
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    try:
        parsed = ds is not None and any(t in ds for t in _PIXEL_TAGS)
        ds = ds if parsed else pydicom.dcmread(f)
        _check_decoder(_transfer_syntax(ds), f)
        px = _dataset_pixels(ds) if parsed else ds.pixel_array
    except CTLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(
            f"Cannot decode the pixels of {f}: the file is corrupt or truncated ({_short(exc)}). Re-export the "
            "series."
        ) from exc
    if px.shape != tuple(shape):
        raise CTLoadError(
            f"{f}: decoded pixels have shape {px.shape}, expected {tuple(shape)} (rows, columns); the file is "
            "corrupt or not a single-frame grey-level slice."
        )
    if shift is None:
        np.multiply(px, np.float32(slope), out=out, casting="unsafe")
        out += np.float32(intercept)
    else:
        from scipy import ndimage

        tmp = px.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        ndimage.shift(tmp, shift, output=out, order=1, mode="constant", cval=-1024.0)
    if px.dtype.kind == "f":  # float pixel data may hold NaN/Inf (integer data times a finite slope cannot)
        _check_finite(out, f)
    return out


def _dataset_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """``pydicom.pixels.pixel_array(ds)``, then the pixel data element is put back as it was (deferred:
    still in the file), so the decoded bytes are not kept in ``ds``."""
    from pydicom.pixels import pixel_array

    saved = [ds.get_item(t, keep_deferred=True) for t in _PIXEL_TAGS if t in ds]
    try:
        return pixel_array(ds)
    finally:
        for elem in saved:
            ds[elem.tag] = elem


def _sitk_slice_check(f: str, hu_slice: np.ndarray, slope: float, intercept: float, ts: str, where: str) -> str:
    """Cross-check one slice decoded by pydicom (``hu_slice``) against SimpleITK/GDCM.

    Returns a status string for ``metadata["hu_check"]``; raises CTLoadError when the two decoders disagree.
    """
    with _QuietSitk():
        try:
            ref = sitk.GetArrayFromImage(sitk.ReadImage(str(f), sitk.sitkFloat32))
        except Exception as exc:  # noqa: BLE001 - e.g. a syntax GDCM lacks: pydicom's decoding stands
            return f"skipped (SimpleITK cannot decode {Path(f).name}: {_short(exc, 120)})"
    ref = ref.reshape(ref.shape[-2:]) if ref.size == hu_slice.size else None
    if ref is None:
        return "skipped (SimpleITK gave another shape)"
    tol = 0.5 * slope + 1e-3
    if ts in _LOSSY_SYNTAXES:
        tol = max(tol, 8.0 * slope)  # two lossy decoders may round differently
    err = float(np.max(np.abs(ref - hu_slice))) if ref.size else 0.0
    if err <= tol:
        return f"ok (max |pydicom - SimpleITK| = {err:.3g} HU on {Path(f).name})"
    stored_err = float(np.max(np.abs(ref * slope + intercept - hu_slice)))
    if stored_err <= tol:
        return f"ok (SimpleITK returned stored values; rescale applied on {Path(f).name})"
    raise CTLoadError(
        f"{where}: the HU of {f} decoded by pydicom and by SimpleITK differ by up to {err:.1f} HU "
        "(pixel data or RescaleSlope/Intercept inconsistent). The file cannot be trusted as HU; re-export the series."
    )


def _load_dicom_folder(
    folder: Path, series_uid: str | None, *, lazy: bool = False, on_slice_error: Callable | None = None
) -> CTVolume:
    parsed: dict[str, pydicom.Dataset] = {}  # files already parsed (path -> dataset), parsed once
    series = _list_series(folder, parsed)
    if not series:
        n_entries = sum(1 for _ in folder.iterdir())
        sub = [p.name for p in folder.iterdir() if p.is_dir()]
        hint = f" It has sub-folders ({', '.join(sorted(sub)[:5])}); choose the one with the images." if sub else ""
        if n_entries == 0:
            raise CTLoadError(f"The folder {folder} is empty. Choose the folder that holds the DICOM files.")
        # A lone corrupt .dcm file: give pydicom's reason.
        dcm = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".dcm")
        for p in dcm[:1]:
            _read_header(p)
        raise CTLoadError(
            f"No readable DICOM series in {folder} ({n_entries} entries inspected): the files are not DICOM "
            f"images or are corrupt.{hint}"
        )
    if series_uid is None:
        if len(series) > 1:
            listing = "\n".join(f"  - {s}" for s in series)
            raise MultipleSeriesError(
                f"{folder} holds {len(series)} DICOM series; choose one (series_uid=...):\n{listing}", series
            )
        chosen = series[0]
    else:
        matches = [s for s in series if s.series_uid == series_uid]
        if not matches:
            listing = "\n".join(f"  - {s}" for s in series)
            raise CTLoadError(f"Series {series_uid} is not in {folder}. Series found:\n{listing}")
        chosen = matches[0]
    # Files GDCM left out of every series (truncated or corrupt DICOM files): those of this series are
    # loaded with it (pydicom then decodes them or names them); unreadable ones are reported in the warnings / the error.
    listed = {os.path.abspath(f) for s in series for f in s.files}
    unreadable: list[str] = []
    extra: list[str] = []
    for p in sorted(folder.iterdir()):
        if not p.is_file() or os.path.abspath(p) in listed:
            continue
        if not (p.suffix.lower() in (".dcm", ".ima", ".dicom") or pydicom.misc.is_dicom(p)):
            continue
        try:
            ds = _parse_dicom(p)
        except Exception:  # noqa: BLE001
            unreadable.append(p.name)
            continue
        if not ds.get("SeriesInstanceUID", None):  # cut before its identifiers
            unreadable.append(p.name)
        elif str(ds.SeriesInstanceUID) == chosen.series_uid and "Rows" in ds:
            extra.append(str(p))
            parsed[str(p)] = ds
    where = f"series {chosen.series_uid} in {folder}"
    try:
        vol = _load_series_files(
            list(chosen.files) + extra, where, str(folder), lazy=lazy, on_slice_error=on_slice_error, parsed=parsed
        )
    except CTLoadError as exc:
        if unreadable:
            raise CTLoadError(
                f"{exc} ({len(unreadable)} file(s) of the folder are not readable DICOM and may be the missing "
                f"slices: {', '.join(unreadable[:5])})"
            ) from exc
        raise
    if unreadable:
        vol.metadata["warnings"].append(
            f"ignored {len(unreadable)} unreadable DICOM file(s): {', '.join(unreadable[:5])}"
        )
    return vol


def _n_frames(ds: pydicom.Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except Exception:  # noqa: BLE001 - malformed: treated as one frame, pixel decoding then checks the size
        return 1


def _numbers(ds: pydicom.Dataset, keyword: str, default: Any, f: str | Path, n: int | None = None,
             positive: bool = False) -> Any:
    """Value(s) of a numeric tag as float (``n`` values, or one when None); ``default`` when absent.

    Raises CTLoadError naming the file and the tag when the value is not usable.
    """
    try:
        value = ds.get(keyword, None)
        if value is None or value == "":
            return default
        vals = [float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value])]
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(f"{f}: the DICOM tag {keyword} is not a number ({_short(exc, 120)}); re-export the series.") from exc
    if (n or 1) != len(vals) or not all(np.isfinite(vals)) or (positive and min(vals) <= 0):
        raise CTLoadError(
            f"{f}: the DICOM tag {keyword} = {vals} is not {n or 1} finite{' positive' if positive else ''} "
            "number(s); re-export the series."
        )
    return vals if n else vals[0]


def _load_series_files(
    files: Sequence[str],
    where: str,
    source: str,
    *,
    fmt: str = "dicom-series",
    lazy: bool = False,
    on_slice_error: Callable | None = None,
    parsed: dict[str, pydicom.Dataset] | None = None,
) -> CTVolume:
    # Each file is parsed once (pixel data deferred); ``parsed`` holds those already parsed while listing.
    parsed = parsed or {}
    headers = [(str(f), parsed[str(f)] if str(f) in parsed else _parse_dicom(f)) for f in files]
    warnings_out: list[str] = []
    _check_modality(headers[0][1], where)
    for k, (f, ds) in enumerate(headers):
        _check_modality(ds, f)
        # (a file with Rows but without PixelData further on is named when its pixels are decoded)
        if "Rows" not in ds or (k == 0 and not _has_pixel_tag(f, ds)):
            raise CTLoadError(f"{f} has no pixel data (not an image). Remove it from the folder.")
        spp = int(_numbers(ds, "SamplesPerPixel", 1, f))
        if spp != 1:
            raise CTLoadError(
                f"{f} is a colour image ({spp} samples per pixel, {ds.get('PhotometricInterpretation', '?')}), "
                "e.g. a screenshot or secondary capture; a CT slice has one grey value (HU) per pixel."
            )
        if _n_frames(ds) > 1 and len(headers) > 1:
            raise CTLoadError(
                f"{where}: {f} holds {_n_frames(ds)} frames; multi-frame files in a series are not supported "
                "(load that single file instead)."
            )
        _check_decoder(_transfer_syntax(ds), f)
    # Exact copies of a file (same SOPInstanceUID) are kept once.
    seen: dict[str, str] = {}
    unique = []
    for f, ds in headers:
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if sop and sop in seen:
            warnings_out.append(f"{Path(f).name} is a copy of {Path(seen[sop]).name} (same SOPInstanceUID): ignored.")
            continue
        if sop:
            seen[sop] = f
        unique.append((f, ds))
    headers = unique
    # Consistent slice size and orientation.
    sizes = {(int(_numbers(ds, "Rows", 0, f)), int(_numbers(ds, "Columns", 0, f))) for f, ds in headers}
    if len(sizes) > 1:
        raise CTLoadError(f"{where}: the slices have different sizes {sorted(sizes)}; this is not one CT volume.")
    ny, nx = next(iter(sizes))
    if ny < 1 or nx < 1:
        raise CTLoadError(f"{where}: Rows/Columns missing or zero in {headers[0][0]}; not an image.")
    have_geom = all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in headers)
    shifts: list[tuple[float, float] | None] = [None] * len(headers)
    f0, ds0 = headers[0]
    if "PixelSpacing" not in ds0:
        warnings_out.append("PixelSpacing absent: 1 mm pixels assumed (distances and areas are then not in mm).")
    ps = _numbers(ds0, "PixelSpacing", [1.0, 1.0], f0, n=2, positive=True)
    tilt_tag = _numbers(ds0, "GantryDetectorTilt", 0.0, f0)
    if have_geom:
        iop0 = np.asarray(_numbers(ds0, "ImageOrientationPatient", None, f0, n=6))
        ipp = np.asarray([_numbers(ds, "ImagePositionPatient", None, f, n=3) for f, ds in headers], dtype=np.float64)
        iops = [np.asarray(_numbers(ds, "ImageOrientationPatient", None, f, n=6)) for f, ds in headers]
        if iop0.size != 6 or ipp.shape[1:] != (3,) or not (np.all(np.isfinite(iop0)) and np.all(np.isfinite(ipp))):
            raise CTLoadError(f"{where}: ImagePositionPatient/ImageOrientationPatient are malformed in {headers[0][0]}.")
        for (f, _), iop in zip(headers[1:], iops[1:]):
            if iop.size != 6 or np.max(np.abs(iop - iop0)) > 1e-3:
                raise CTLoadError(f"{where}: {f} has a different ImageOrientationPatient; this is not one volume.")
        r, c, n = _direction_from_iop(iop0)
        if np.linalg.norm(n) < 0.5:
            raise CTLoadError(f"{where}: ImageOrientationPatient {list(iop0)} is degenerate (rows parallel to columns).")
        n = n / np.linalg.norm(n)
        pos = ipp @ n
        order = np.argsort(pos, kind="stable")
        headers = [headers[i] for i in order]
        pos = pos[order]
        ipp = ipp[order]
    else:
        inst = [_numbers(ds, "InstanceNumber", None, f) for f, ds in headers]
        if len(headers) > 1 and (any(v is None for v in inst) or len(set(inst)) != len(inst)):
            raise CTLoadError(
                f"{where}: the files have no ImagePositionPatient and their InstanceNumbers are missing or repeated, "
                "so the slice order is unknown. Re-export the series with its geometry tags."
            )
        headers = [headers[i] for i in np.argsort([v or 0 for v in inst], kind="stable")]
        r, c, n = np.array([1.0, 0, 0]), np.array([0.0, 1, 0]), np.array([0.0, 0, 1])
        pos = None
        if len(headers) > 1:
            warnings_out.append("no ImagePositionPatient: slices ordered by InstanceNumber, spacing from SliceThickness.")
    first = headers[0][1]
    dz = _numbers(first, "SpacingBetweenSlices", 0.0, headers[0][0]) if len(headers) == 1 else 0.0
    dz = dz if dz > 0 else _numbers(first, "SliceThickness", 1.0, headers[0][0])
    if not dz > 0:
        warnings_out.append(f"SliceThickness {dz:g} mm is not positive: 1 mm assumed.")
        dz = 1.0
    tilt_deg = 0.0
    if pos is not None and len(pos) > 1:
        diffs = np.diff(pos)
        dup = np.nonzero(diffs < 1e-3)[0]
        if dup.size:
            i = int(dup[0])
            raise CTLoadError(
                f"{where}: {headers[i][0]} and {headers[i + 1][0]} are at the same position {pos[i]:.2f} mm along "
                "the slice normal (duplicated slice, or two series sharing a SeriesInstanceUID). Remove the "
                "duplicate or load the series from a clean export."
            )
        dz = float(np.median(diffs))
        bad = np.nonzero(np.abs(diffs - dz) > max(0.1 * dz, 0.01))[0]
        if bad.size:
            i = int(bad[0])
            n_missing = int(round(diffs[i] / dz)) - 1
            if n_missing >= 1 and abs(diffs[i] - dz * (n_missing + 1)) <= max(0.1 * dz, 0.01):
                expected = ", ".join(f"{pos[i] + dz * (j + 1):.2f}" for j in range(min(n_missing, 5)))
                what = f"about {n_missing} missing slice(s) (expected at {expected} mm)"
                todo = "Load the complete series (all files) and try again."
            else:
                what = "uneven slice spacing"
                todo = ("Slices are not resampled to an even grid; load a series reconstructed with constant "
                        "spacing (or one of its parts).")
            raise CTLoadError(
                f"{where}: gap of {diffs[i]:.2f} mm between slice positions {pos[i]:.2f} mm "
                f"({Path(headers[i][0]).name}) and {pos[i + 1]:.2f} mm ({Path(headers[i + 1][0]).name}) where the "
                f"spacing is {dz:.2f} mm elsewhere: {what}. {todo}"
            )
        # Gantry tilt: slice origins drift in-plane along the stack (the normal of the slices is not the
        # direction in which they are stacked). Corrected by shifting each slice back onto slice 0's column.
        off = ipp - ipp[0]
        inplane = off - np.outer(off @ n, n)
        drift = np.column_stack([inplane @ c / ps[0], inplane @ r / ps[1]])  # (rows, columns) pixels
        if np.max(np.abs(inplane)) > max(0.01, 0.01 * min(ps)):
            along = pos - pos[0]
            per_mm = np.linalg.lstsq(along[:, None], inplane, rcond=None)[0][0]
            if np.max(np.abs(inplane - np.outer(along, per_mm))) > max(0.05, 0.1 * min(ps)):
                raise CTLoadError(
                    f"{where}: the slice positions (ImagePositionPatient) do not lie on a straight line; the slices "
                    "cannot be stacked into one volume. Re-export the series."
                )
            tilt_deg = float(np.degrees(np.arctan(np.linalg.norm(per_mm))))
            # slice k's pixel (i, j) lies where slice 0's grid has (i + drift_r, j + drift_c): shift by +drift
            shifts = [(float(d[0]), float(d[1])) for d in drift]
            warnings_out.append(
                f"gantry tilt of {tilt_deg:.1f} deg (GantryDetectorTilt {tilt_tag:g}): slices shifted in-plane onto an "
                "orthogonal grid (linear interpolation; voxels from outside the scan set to -1024 HU)."
            )
    elif abs(tilt_tag) > 1e-3 and pos is None:
        raise CTLoadError(
            f"{where}: GantryDetectorTilt is {tilt_tag:g} deg and ImagePositionPatient is missing, so the tilt cannot "
            "be corrected. Re-export the series with its geometry tags."
        )
    sorted_files = [f for f, _ in headers]
    rescales = [_rescale(ds, f, warnings_out) for f, ds in headers]
    nz = len(sorted_files)
    mid = nz // 2
    ts_mid = _transfer_syntax(headers[mid][1])
    datasets = [ds for _, ds in headers]
    mid_slice = _decode_slice(sorted_files[mid], (ny, nx), *rescales[mid], shifts[mid], ds=datasets[mid])
    status = _sitk_slice_check(
        sorted_files[mid],
        mid_slice if shifts[mid] is None
        else _decode_slice(sorted_files[mid], (ny, nx), *rescales[mid], None, ds=datasets[mid]),
        *rescales[mid], ts_mid, where,
    )
    if lazy:
        hu = _lazy_stack(sorted_files, (ny, nx), rescales, shifts, mid, mid_slice, on_slice_error)
    else:
        hu = np.empty((nz, ny, nx), dtype=np.float32)
        for k, f in enumerate(sorted_files):
            if k == mid:
                hu[k] = mid_slice
            else:
                _decode_slice(f, (ny, nx), *rescales[k], shifts[k], out=hu[k], ds=datasets[k])
    del mid_slice
    origin = tuple(float(v) for v in ipp[0]) if have_geom else (0.0, 0.0, 0.0)
    direction = (r[0], c[0], n[0], r[1], c[1], n[1], r[2], c[2], n[2])
    meta = _metadata_from_dataset(first)
    meta.update(
        source_path=source,
        format=fmt,
        n_slices=nz,
        hu_check=status,
        files=list(sorted_files),
        warnings=warnings_out,
    )
    if tilt_deg:
        meta["gantry_tilt_corrected_deg"] = tilt_deg
    if ny * nx * nz and len(headers) == 1:
        meta["warnings"].append("single slice: loaded as a one-slice volume.")
    return CTVolume(
        hu=hu,
        spacing=(float(dz), float(ps[0]), float(ps[1])),
        origin=origin,  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),
        metadata=meta,
        source=source,
    )


def _lazy_stack(files, shape, rescales, shifts, mid, mid_slice, on_slice_error):
    """A dask array (z, y, x) float32 with one chunk per slice, decoded by :func:`_decode_slice` on use."""
    try:
        import dask
        import dask.array as da
    except ImportError as exc:  # pragma: no cover - dask comes with napari
        raise CTLoadError("Lazy loading needs dask (pip install dask); load the volume without lazy=True.") from exc

    def read(k: int) -> np.ndarray:
        try:
            return _decode_slice(files[k], shape, *rescales[k], shifts[k])
        except CTLoadError as exc:
            if on_slice_error is None:
                raise
            on_slice_error(exc)
            return np.full(shape, -1024.0, dtype=np.float32)

    slices = [
        da.from_array(mid_slice, chunks=shape) if k == mid
        else da.from_delayed(dask.delayed(read, pure=True)(k), shape=shape, dtype=np.float32)
        for k in range(len(files))
    ]
    return da.stack(slices)


def _has_pixel_tag(f: str, ds: pydicom.Dataset | None = None) -> bool:
    # A dataset from _parse_dicom answers directly; one read with stop_before_pixels has no PixelData, then
    # the file is parsed whole with deferred reading.
    if ds is not None and ("PixelData" in ds or "FloatPixelData" in ds):
        return True
    try:
        ds = pydicom.dcmread(f, defer_size=256)
        return "PixelData" in ds or "FloatPixelData" in ds
    except Exception:  # noqa: BLE001
        return False


def _load_dicom_file(path: Path, *, lazy: bool = False, on_slice_error: Callable | None = None) -> CTVolume:
    ds = _parse_dicom(path)
    _check_modality(ds, str(path))
    if not _has_pixel_tag(str(path), ds):
        raise CTLoadError(f"{path} is a DICOM file without pixel data (not an image). Choose an image file or folder.")
    if _n_frames(ds) <= 1:
        return _load_series_files([str(path)], str(path), str(path), fmt="dicom-file", lazy=lazy,
                                  on_slice_error=on_slice_error, parsed={str(path): ds})
    return _load_multiframe_file(path, ds)


def _load_multiframe_file(path: Path, ds: pydicom.Dataset) -> CTVolume:
    """A multi-frame DICOM file: pixels decoded by pydicom frame by frame, geometry from SimpleITK."""
    from pydicom.pixels import iter_pixels

    spp = int(_numbers(ds, "SamplesPerPixel", 1, path))
    if spp != 1:
        raise CTLoadError(f"{path} is a colour image ({spp} samples per pixel); a CT has one HU value per pixel.")
    _check_decoder(_transfer_syntax(ds), path)
    warnings_out: list[str] = []
    slope, inter = _rescale(ds, path, warnings_out)
    nz, ny, nx = _n_frames(ds), int(_numbers(ds, "Rows", 0, path)), int(_numbers(ds, "Columns", 0, path))
    if ny < 1 or nx < 1:
        raise CTLoadError(f"{path}: Rows/Columns missing or zero; not an image.")
    hu = np.empty((nz, ny, nx), dtype=np.float32)
    try:
        k = -1
        for k, frame in enumerate(iter_pixels(str(path))):
            if k >= nz or frame.shape != (ny, nx):
                raise ValueError(f"frame {k} has shape {frame.shape}, expected {(ny, nx)}")
            np.multiply(frame, np.float32(slope), out=hu[k], casting="unsafe")
            hu[k] += np.float32(inter)
        if k != nz - 1:
            raise ValueError(f"{k + 1} frames decoded, NumberOfFrames is {nz}")
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(f"Cannot decode the pixels of {path}: the file is corrupt or truncated ({_short(exc)}).") from exc
    _check_finite(hu, str(path))
    with _QuietSitk():
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            sp, o, d = reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()
        except Exception:  # noqa: BLE001 - geometry unknown: identity, reported
            sp, o, d = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
            warnings_out.append("geometry of the multi-frame file unknown: 1 mm voxels assumed.")
    if len(sp) < 3:
        sp, o, d = (*sp, 1.0), (*o, 0.0), (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    meta = _metadata_from_dataset(ds)
    meta.update(source_path=str(path), format="dicom-file", n_slices=nz, hu_check="skipped (multi-frame file)",
                warnings=warnings_out)
    return CTVolume(
        hu=hu,
        spacing=(float(sp[2]), float(sp[1]), float(sp[0])),
        origin=tuple(float(v) for v in o),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in d),
        metadata=meta,
        source=str(path),
    )


# --------------------------------------------------------------------------------------------- writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fix_mode(path: Path | str, is_dir: bool = False) -> None:
    """Give a temp file/folder (created 0600/0700 by tempfile) the usual permissions under the umask."""
    try:
        os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())
    except OSError:
        pass


def _ds_str(v: float) -> str:
    """Format a float as a DICOM DS (<= 16 characters)."""
    for digits in (10, 9, 8, 7, 6):
        s = f"{float(v):.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{float(v):.5e}"


def _check_hu_array(hu: Any, what: str) -> np.ndarray:
    arr = np.asarray(hu)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise CTWriteError(f"{what}: expected a (z, y, x) or (y, x) array, got shape {np.shape(hu)}.")
    if arr.dtype.kind not in "biuf":
        raise CTWriteError(f"{what}: expected numbers, got dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise CTWriteError(f"{what}: the array holds NaN or infinite values; nothing was written.")
    return arr


def _check_spacing(spacing: Sequence[float], what: str) -> tuple[float, float, float]:
    try:
        sp = tuple(float(v) for v in spacing)
    except Exception as exc:  # noqa: BLE001
        raise CTWriteError(f"{what}: spacing must be three numbers (z, y, x) in mm, got {spacing!r}.") from exc
    if len(sp) != 3 or not all(np.isfinite(v) and v > 0 for v in sp):
        raise CTWriteError(f"{what}: spacing must be three positive numbers (z, y, x) in mm, got {spacing!r}.")
    return sp  # type: ignore[return-value]


def _check_direction(direction: Sequence[float] | None) -> np.ndarray:
    if direction is None:
        return np.eye(3)
    d = np.asarray([float(v) for v in direction], dtype=np.float64)
    if d.size != 9:
        raise CTWriteError(f"direction must have 9 values (SimpleITK row-major 3x3), got {d.size}.")
    d = d.reshape(3, 3)
    if np.max(np.abs(d.T @ d - np.eye(3))) > 1e-3:
        raise CTWriteError("direction must be an orthonormal 3x3 matrix (SimpleITK direction cosines).")
    return d


def _folder_replaceable(out_dir: Path) -> str | None:
    """Reason why ``overwrite=True`` may not delete this folder's content, or None when it may."""
    for p in out_dir.iterdir():
        if p.is_dir() and not p.is_symlink():
            return f"it contains a sub-folder ({p.name})"
        if not p.is_file():
            return f"it contains {p.name}, which is not a regular file"
        if p.suffix.lower() == ".dcm":
            continue
        try:
            with open(p, "rb") as fh:
                head = fh.read(132)
        except OSError:
            return f"{p.name} cannot be read"
        if head[128:132] != b"DICM":
            return f"it contains {p.name}, which is not a DICOM file"
    return None


def write_dicom_series(
    hu: np.ndarray,
    out_dir: str | os.PathLike,
    *,
    spacing: Sequence[float],
    reference: CTVolume | None = None,
    series_description: str,
    overwrite: bool = False,
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    image_type: Sequence[str] = ("DERIVED", "SECONDARY"),
    series_number: int | None = None,
    uid_entropy: str | None = None,
    extra_tags: dict[str, Any] | None = None,
) -> list[Path]:
    """Write a volume as a CT DICOM series (one file per slice), atomically.

    Stored values are int16 (PixelRepresentation 1) with RescaleSlope 1 and RescaleIntercept -1024:
    ``stored = round(HU) + 1024``, so a round trip through :func:`load_ct` is exact to 0.5 HU. HU are
    clipped to [-31744, 33791] (the int16 range after the intercept).

    Parameters
    ----------
    hu : ndarray (z, y, x) or (y, x), any real dtype
        Intensities in HU. Slice k of the array becomes the file with InstanceNumber k + 1.
    out_dir : path-like
        Destination folder (created). Files are ``IM_00001.dcm``...
    spacing : (dz, dy, dx) mm
        dz is the distance between slice centres (also written as SliceThickness), (dy, dx) the
        PixelSpacing (row spacing, column spacing).
    reference : CTVolume, optional
        The series this one is derived from: StudyInstanceUID, patient and study tags and
        FrameOfReferenceUID are copied from ``reference.metadata`` (same study in PACS); origin and direction
        default to the reference's when its shape matches. Without it a new study is created.
    series_description : str
        SeriesDescription (0008,103E), e.g. ``"LIDnet denoised (REDCNN)"``.
    overwrite : bool
        Replace an existing non-empty ``out_dir``. Only a folder holding nothing but DICOM files is
        replaced (never a folder with sub-folders or other files).
    origin : (x, y, z) mm, optional
        ImagePositionPatient of the first slice (LPS). Default: the reference's, else (0, 0, 0).
    direction : 9 floats, optional
        SimpleITK direction cosines (row-major 3x3, columns = x, y, slice axes). Columns 0 and 1 become
        ImageOrientationPatient; slice k is at ``origin + k * dz * column 2``. Default: reference's, else
        identity. For :func:`load_ct` to give back the same z order, column 2 must be
        ``column0 x column1`` (the usual right-handed case).
    image_type : sequence of str
        ImageType values; ``("DERIVED", "SECONDARY")`` for processed images (default), ``("ORIGINAL",
        "PRIMARY")`` for acquired ones (used for the sample data).
    series_number : int, optional
        SeriesNumber; default 1001 for derived series, 1 otherwise.
    uid_entropy : str, optional
        If given, the new Series/SOP (and, without reference, Study/FrameOfReference) UIDs are derived
        deterministically from this string (reproducible files); otherwise they are random.
    extra_tags : dict, optional
        DICOM keyword -> value set last (e.g. ``{"SeriesDate": "20000101", "Manufacturer": "..."}``).

    Returns
    -------
    list of pathlib.Path
        The written files, in slice order.

    Raises
    ------
    OutputExistsError
        ``out_dir`` exists and is not empty and ``overwrite`` is False, or it is not a folder of DICOM files.
    CTWriteError
        Bad array (NaN/Inf, wrong dimensions), bad spacing or direction, a folder that cannot be written.
    """
    arr = _check_hu_array(hu, f"DICOM series {out_dir}")
    sp = _check_spacing(spacing, f"DICOM series {out_dir}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputExistsError(f"{out_dir} exists and is a file; choose a folder name for the DICOM series.")
        if any(out_dir.iterdir()):
            if not overwrite:
                raise OutputExistsError(
                    f"The folder {out_dir} is not empty; nothing was written. Choose a new folder, or allow "
                    "overwriting to replace the series in it."
                )
            reason = _folder_replaceable(out_dir)
            if reason is not None:
                raise OutputExistsError(
                    f"Will not overwrite {out_dir}: {reason}. Choose an empty or new folder for the DICOM series."
                )
    ref_meta = dict(reference.metadata) if reference is not None else {}
    ref_geom_ok = reference is not None and tuple(reference.hu.shape) == tuple(arr.shape)
    if origin is None:
        origin = reference.origin if ref_geom_ok else (0.0, 0.0, 0.0)
    if direction is None and ref_geom_ok:
        direction = reference.direction
    d = _check_direction(direction)
    o = np.asarray([float(v) for v in origin], dtype=np.float64)
    if o.size != 3 or not np.all(np.isfinite(o)):
        raise CTWriteError(f"origin must be three finite numbers (x, y, z) mm, got {origin!r}.")

    def uid(kind: str, idx: int = 0) -> str:
        if uid_entropy is None:
            return generate_uid()
        return generate_uid(entropy_srcs=[uid_entropy, kind, str(idx)])

    study_uid = str(ref_meta.get("StudyInstanceUID") or "") or uid("study")
    frame_uid = str(ref_meta.get("FrameOfReferenceUID") or "") if ref_geom_ok else ""
    frame_uid = frame_uid or uid("frame")
    series_uid = uid("series")
    derived = str(image_type[0]).upper() == "DERIVED" if len(image_type) else False
    if series_number is None:
        series_number = 1001 if derived else 1
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    stored = np.clip(np.rint(arr.astype(np.float64)) + 1024.0, -32768, 32767).astype("<i2")
    nz, ny, nx = stored.shape
    row_dir, col_dir, slice_dir = d[:, 0], d[:, 1], d[:, 2]
    iop = [_ds_str(v) for v in (*row_dir, *col_dir)]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    _fix_mode(tmp, is_dir=True)
    names: list[str] = []
    try:
        for k in range(nz):
            sop_uid = uid("sop", k)
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SpecificCharacterSet = "ISO_IR 192"
            ds.ImageType = [str(v) for v in image_type]
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = sop_uid
            ds.StudyDate = date
            ds.StudyTime = time
            ds.SeriesDate = date
            ds.SeriesTime = time
            ds.ContentDate = date
            ds.ContentTime = time
            ds.Modality = "CT"
            ds.Manufacturer = ""
            ds.ReferringPhysicianName = ""
            ds.AccessionNumber = ""
            ds.StudyID = ""
            ds.PatientName = ""
            ds.PatientID = ""
            ds.PatientBirthDate = ""
            ds.PatientSex = ""
            for kw in _STUDY_TAGS:
                if kw in ref_meta and ref_meta[kw] is not None:
                    setattr(ds, kw, ref_meta[kw])
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.PositionReferenceIndicator = ""
            ds.SeriesDescription = str(series_description)[:64]  # VR LO: 64 characters at most
            ds.SeriesNumber = int(series_number)
            ds.InstanceNumber = k + 1
            if derived:
                ds.DerivationDescription = f"napari-lidnet: {series_description}"[:1024]
            pos = o + k * sp[0] * slice_dir
            ds.ImagePositionPatient = [_ds_str(v) for v in pos]
            ds.ImageOrientationPatient = iop
            ds.SliceLocation = _ds_str(float(np.dot(pos, np.cross(row_dir, col_dir))))
            ds.SliceThickness = _ds_str(sp[0])
            ds.PixelSpacing = [_ds_str(sp[1]), _ds_str(sp[2])]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows = ny
            ds.Columns = nx
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            ds.RescaleIntercept = "-1024"
            ds.RescaleSlope = "1"
            ds.RescaleType = "HU"
            ds.KVP = ref_meta.get("KVP", "") if ref_meta.get("KVP") is not None else ""
            ds.WindowCenter = "-600"
            ds.WindowWidth = "1500"
            ds.WindowCenterWidthExplanation = "LUNG"
            for kw, val in (extra_tags or {}).items():
                setattr(ds, kw, val)
            ds.PixelData = stored[k].tobytes()
            name = f"IM_{k + 1:05d}.dcm"
            ds.save_as(tmp / name, enforce_file_format=True)
            names.append(name)
        # Move into place: the old folder (if any) is renamed aside first and deleted only after success.
        backup: Path | None = None
        if out_dir.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rmdir(backup)
            os.replace(out_dir, backup)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if backup is not None:
                os.replace(backup, out_dir)
            raise
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    except (CTWriteError, OutputExistsError):
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except Exception as exc:  # noqa: BLE001
        shutil.rmtree(tmp, ignore_errors=True)
        raise CTWriteError(f"Cannot write the DICOM series to {out_dir}: {_short(exc)}. Nothing was changed.") from exc
    return [out_dir / n for n in names]


def write_volume(
    hu: np.ndarray,
    path: str | os.PathLike,
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a volume as NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``) or MetaImage (``.mha``), atomically.

    Parameters
    ----------
    hu : ndarray (z, y, x) or (y, x)
        Float arrays are written as float32 (HU); integer arrays keep their dtype and bool becomes uint8
        (e.g. label maps).
    path : path-like
        Destination; the format follows the extension. ``.mhd`` is refused (two files cannot be replaced
        atomically; use ``.mha``). NRRD and MHA are compressed.
    spacing : (dz, dy, dx) mm
    origin : (x, y, z) mm, optional
        LPS position of the first voxel (SimpleITK order); default (0, 0, 0).
    direction : 9 floats, optional
        SimpleITK direction cosines; default identity.
    overwrite : bool
        Replace an existing file (atomically). Default False: an existing file is never replaced.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    CTWriteError
        Unknown extension, NaN/Inf, bad shape/spacing/direction, or the file cannot be written (the
        destination is then untouched).
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing written).
    """
    path = Path(path)
    name = path.name.lower()
    ext = next((s for s in (".nii.gz", ".nii", ".nrrd", ".mha") if name.endswith(s)), None)
    if ext is None:
        raise CTWriteError(f"{path}: unsupported extension; use .nii, .nii.gz, .nrrd or .mha.")
    arr = _check_hu_array(hu, str(path))
    sp = _check_spacing(spacing, str(path))
    d = _check_direction(direction)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; nothing was written. Choose another file name, or ask to replace it "
            "(overwrite=True; CLI: --overwrite)."
        )
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    elif arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing((sp[2], sp[1], sp[0]))
    img.SetOrigin(tuple(float(v) for v in (origin if origin is not None else (0.0, 0.0, 0.0))))
    img.SetDirection(tuple(float(v) for v in d.ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[: -len(ext)]}.tmp-", suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        with _QuietSitk():
            sitk.WriteImage(img, tmp, useCompression=ext in (".nrrd", ".mha", ".nii.gz"))
        _fix_mode(tmp)
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise CTWriteError(f"Cannot write {path}: {_short(exc)}. The destination was not changed.") from exc
    return path


def volume_from_array(
    hu: np.ndarray,
    spacing: Iterable[float],
    origin: Iterable[float] = (0.0, 0.0, 0.0),
    direction: Iterable[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    metadata: dict[str, Any] | None = None,
) -> CTVolume:
    """Wrap an in-memory (z, y, x) HU array as a :class:`CTVolume` (float32, ``source=""``)."""
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    return CTVolume(
        hu=arr,
        spacing=tuple(float(v) for v in spacing),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),
        metadata=dict(metadata or {"format": "memory"}),
        source="",
    )
