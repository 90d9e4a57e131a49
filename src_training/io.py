"""CT input/output: DICOM series, single DICOM files, NIfTI / NRRD / MetaImage volumes.

Everything returns a :class:`CTVolume`: ``hu`` float32 ``(z, y, x)`` in Hounsfield units, ``spacing``
``(z, y, x)`` in mm, and the patient geometry in SimpleITK's convention (``origin`` ``(x, y, z)`` mm in
DICOM/LPS patient coordinates, ``direction`` a row-major 3x3 matrix as a 9-tuple whose columns are the
directions of the x (column), y (row) and z (slice) axes).

DICOM series are read with SimpleITK's ``ImageSeriesReader`` (GDCM), which applies
RescaleSlope/RescaleIntercept; the tags that matter (Modality, rescale, PixelSpacing, SliceThickness,
ImagePositionPatient/ImageOrientationPatient, UIDs) are read with pydicom, which also orders the slices
(increasing position along the slice normal ``row x column``), checks that they are evenly spaced (a missing
slice is reported with its position) and cross-checks the HU of one slice. Every failure of the
underlying libraries is reported as :class:`~src_training.errors.CTLoadError` with a message naming the file
and what to do.

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
from typing import Any, Iterable, Sequence

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from .errors import CTLoadError, CTWriteError, MultipleSeriesError, OutputExistsError

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
    if not np.all(np.isfinite(hu)):
        n_bad = int(np.size(hu) - np.count_nonzero(np.isfinite(hu)))
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
                    ds = pydicom.dcmread(f, stop_before_pixels=True)
                    description = str(ds.get("SeriesDescription", "") or "")
                    modality = str(ds.get("Modality", "") or "")
                except Exception:  # noqa: BLE001 - reported when the series is loaded
                    pass
            out.append(SeriesInfo(uid, description, modality, len(files), files))
    return out


# --------------------------------------------------------------------------------------------- loading


def load_ct(path: str | os.PathLike, series_uid: str | None = None) -> CTVolume:
    """Load a CT volume in HU.

    Parameters
    ----------
    path : path-like
        A folder with one DICOM series (or several, then ``series_uid`` chooses), a single DICOM file, or a
        volume file ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``. Volume files are taken
        to hold HU already (NIfTI scl_slope/scl_inter are applied by SimpleITK).
    series_uid : str, optional
        SeriesInstanceUID to load from a folder that holds several series (see :func:`list_series`).

    Returns
    -------
    CTVolume
        ``hu`` float32 ``(z, y, x)`` in HU; for DICOM, z in increasing position along the slice normal.

    Raises
    ------
    MultipleSeriesError
        The folder holds several series and ``series_uid`` is None; ``.series`` lists them.
    CTLoadError
        Missing path, empty folder, unknown ``series_uid``, corrupt / truncated / non-image file, a modality
        other than CT, missing or duplicated slices (the gap is reported), inconsistent slice sizes or
        orientations, NaN/Inf voxels.
    """
    path = Path(path)
    if not path.exists():
        raise CTLoadError(f"{path} does not exist. Check the path of the CT folder or file.")
    if path.is_dir():
        return _load_dicom_folder(path, series_uid)
    if _is_volume_path(path):
        return _load_volume_file(path)
    return _load_dicom_file(path)


def _nifti_nonfinite_count(path: Path) -> int:
    """Count NaN/Inf in the raw data of a float NIfTI-1/2 file.

    ITK's NIfTI reader silently turns NaN into 0, so the raw voxels are checked here (0 for integer data
    or a header this minimal parser does not understand; SimpleITK then reports real corruption).
    """
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError):
        return 0
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
    if datatype not in kinds or not 1 <= dim[0] <= 7:
        return 0
    count = int(np.prod(dim[1 : dim[0] + 1]))
    dt = np.dtype(f"{endian}{kinds[datatype]}")
    if count <= 0 or offset < 0 or offset + count * dt.itemsize > len(raw):
        return 0
    data = np.frombuffer(raw, dtype=dt, count=count, offset=offset)
    return int(data.size - np.count_nonzero(np.isfinite(data)))


def _load_volume_file(path: Path) -> CTVolume:
    fmt = _volume_format(path)
    if fmt == "nifti":
        n_bad = _nifti_nonfinite_count(path)
        if n_bad:
            raise CTLoadError(
                f"{path}: the volume contains {n_bad} NaN or infinite voxel(s). A CT volume must hold finite HU "
                "values; re-export it or fix the file."
            )
    with _QuietSitk():
        try:
            img = sitk.ReadImage(str(path))
        except Exception as exc:  # noqa: BLE001
            raise CTLoadError(
                f"Cannot read {path} as a {fmt} volume: the file is corrupt, truncated or not an image "
                f"({_short(exc)})."
            ) from exc
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise CTLoadError(
            f"{path} has {img.GetNumberOfComponentsPerPixel()} values per voxel (colour/vector image); a CT "
            "volume has one HU value per voxel."
        )
    if img.GetDimension() not in (2, 3):
        raise CTLoadError(f"{path} is a {img.GetDimension()}-D image; only 2-D slices and 3-D volumes are supported.")
    hu = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    if img.GetDimension() == 2:
        hu = hu[None]
        sp = img.GetSpacing()
        spacing = (1.0, float(sp[1]), float(sp[0]))
        o = img.GetOrigin()
        origin = (float(o[0]), float(o[1]), 0.0)
        d = img.GetDirection()
        direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    else:
        sp = img.GetSpacing()
        spacing = (float(sp[2]), float(sp[1]), float(sp[0]))
        origin = tuple(float(v) for v in img.GetOrigin())
        direction = tuple(float(v) for v in img.GetDirection())
    if hu.size == 0:
        raise CTLoadError(f"{path} holds an empty image.")
    _check_finite(hu, str(path))
    meta: dict[str, Any] = {"source_path": str(path), "format": fmt, "n_slices": int(hu.shape[0])}
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
        hu=np.ascontiguousarray(hu, dtype=np.float32),
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


def _check_modality(ds: pydicom.Dataset, where: str) -> None:
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality and modality != "CT":
        raise CTLoadError(
            f"{where} is a {modality} image (DICOM Modality {modality}), not CT. napari-lidnet works on CT in "
            "Hounsfield units only; choose a CT series."
        )


def _hu_check(ds_full_path: str, hu_slice: np.ndarray, where: str) -> tuple[str, np.ndarray]:
    """Compare one slice decoded by SimpleITK with pydicom's ``pixel_array * slope + intercept``.

    Returns ``(status, hu_slice_corrected)``; raises CTLoadError when they disagree in a way that is not
    a missing rescale.
    """
    try:
        ds = pydicom.dcmread(ds_full_path)
        raw = np.asarray(ds.pixel_array, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - e.g. a compressed transfer syntax pydicom cannot decode
        return f"skipped (pydicom cannot decode the pixels: {_short(exc, 120)})", hu_slice
    if raw.shape != hu_slice.shape:
        return f"skipped (pydicom shape {raw.shape} != {hu_slice.shape})", hu_slice
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    expected = raw * slope + intercept
    err = float(np.max(np.abs(expected - hu_slice))) if raw.size else 0.0
    if err <= 0.5 * max(abs(slope), 1e-6) + 1e-3:
        return f"ok (max |SimpleITK - pydicom| = {err:.3g} HU on {Path(ds_full_path).name})", hu_slice
    if np.max(np.abs(raw - hu_slice)) <= 1e-3:
        return "rescale applied by napari-lidnet (SimpleITK returned stored values)", expected.astype(np.float32)
    raise CTLoadError(
        f"{where}: the HU of {ds_full_path} decoded by SimpleITK and by pydicom differ by up to {err:.1f} HU "
        "(RescaleSlope/Intercept inconsistent?). The file cannot be trusted as HU; re-export the series."
    )


def _load_dicom_folder(folder: Path, series_uid: str | None) -> CTVolume:
    series = list_series(folder)
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
    return _load_series_files(chosen.files, f"series {chosen.series_uid} in {folder}", str(folder))


def _load_series_files(files: Sequence[str], where: str, source: str) -> CTVolume:
    headers = [(f, _read_header(f)) for f in files]
    _check_modality(headers[0][1], where)
    for f, ds in headers:
        if "PixelData" not in ds and not _has_pixel_tag(f):
            raise CTLoadError(f"{f} has no pixel data (not an image). Remove it from the folder.")
    # Consistent slice size and orientation.
    sizes = {(int(ds.get("Rows", 0)), int(ds.get("Columns", 0))) for _, ds in headers}
    if len(sizes) > 1:
        raise CTLoadError(f"{where}: the slices have different sizes {sorted(sizes)}; this is not one CT volume.")
    have_geom = all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in headers)
    if have_geom:
        iop0 = np.asarray([float(v) for v in headers[0][1].ImageOrientationPatient])
        for f, ds in headers[1:]:
            if np.max(np.abs(np.asarray([float(v) for v in ds.ImageOrientationPatient]) - iop0)) > 1e-3:
                raise CTLoadError(f"{where}: {f} has a different ImageOrientationPatient; this is not one volume.")
        r, c, n = _direction_from_iop(iop0)
        pos = np.array([np.dot(n, [float(v) for v in ds.ImagePositionPatient]) for _, ds in headers])
        order = np.argsort(pos, kind="stable")
        headers = [headers[i] for i in order]
        pos = pos[order]
    else:
        headers.sort(key=lambda fd: int(fd[1].get("InstanceNumber", 0) or 0))
        r, c, n = np.array([1.0, 0, 0]), np.array([0.0, 1, 0]), np.array([0.0, 0, 1])
        pos = None
    first = headers[0][1]
    ps = [float(v) for v in first.get("PixelSpacing", [1.0, 1.0])]
    dz = float(first.get("SliceThickness", 1.0) or 1.0)
    if pos is not None and len(pos) > 1:
        diffs = np.diff(pos)
        dup = np.nonzero(diffs < 1e-3)[0]
        if dup.size:
            i = int(dup[0])
            raise CTLoadError(
                f"{where}: {headers[i][0]} and {headers[i + 1][0]} are at the same position {pos[i]:.2f} mm along "
                "the slice normal (duplicated slice, or two series sharing a SeriesInstanceUID)."
            )
        dz = float(np.median(diffs))
        bad = np.nonzero(np.abs(diffs - dz) > max(0.1 * dz, 0.01))[0]
        if bad.size:
            i = int(bad[0])
            n_missing = int(round(diffs[i] / dz)) - 1
            if n_missing >= 1:
                expected = ", ".join(f"{pos[i] + dz * (j + 1):.2f}" for j in range(min(n_missing, 5)))
                what = f"about {n_missing} missing slice(s) (expected at {expected} mm)"
            else:
                what = "uneven slice spacing"
            raise CTLoadError(
                f"{where}: gap of {diffs[i]:.2f} mm between slice positions {pos[i]:.2f} mm "
                f"({Path(headers[i][0]).name}) and {pos[i + 1]:.2f} mm ({Path(headers[i + 1][0]).name}) where the "
                f"spacing is {dz:.2f} mm elsewhere: {what}. Load the complete series (all files) and try again."
            )
    sorted_files = [f for f, _ in headers]
    with _QuietSitk():
        try:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(sorted_files)
            reader.SetOutputPixelType(sitk.sitkFloat32)
            img = reader.Execute()
        except Exception as exc:  # noqa: BLE001
            raise CTLoadError(
                f"Cannot read the pixels of {where}: a file is corrupt or truncated ({_short(exc)}). Re-export "
                "the series."
            ) from exc
    hu = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.shape[0] != len(sorted_files):
        raise CTLoadError(
            f"{where}: {len(sorted_files)} files gave {hu.shape[0]} slices (multi-frame files in a series are not "
            "supported); load a single file instead."
        )
    mid = len(sorted_files) // 2
    status, _ = _hu_check(sorted_files[mid], hu[mid], where)
    if status.startswith("rescale applied"):
        for k, (f, ds) in enumerate(headers):
            slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
            inter = float(ds.get("RescaleIntercept", 0.0) or 0.0)
            hu[k] = hu[k] * slope + inter
    _check_finite(hu, where)
    origin = (
        tuple(float(v) for v in first.ImagePositionPatient) if have_geom else tuple(float(v) for v in img.GetOrigin())
    )
    direction = (r[0], c[0], n[0], r[1], c[1], n[1], r[2], c[2], n[2])
    meta = _metadata_from_dataset(first)
    meta.update(
        source_path=source,
        format="dicom-series",
        n_slices=int(hu.shape[0]),
        hu_check=status,
        files=[str(f) for f in sorted_files],
    )
    return CTVolume(
        hu=np.ascontiguousarray(hu, dtype=np.float32),
        spacing=(float(dz), float(ps[0]), float(ps[1])),
        origin=origin,  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),
        metadata=meta,
        source=source,
    )


def _has_pixel_tag(f: str) -> bool:
    # stop_before_pixels drops PixelData; check the tag exists by a cheap full parse with deferred reading.
    try:
        ds = pydicom.dcmread(f, defer_size=256)
        return "PixelData" in ds or "FloatPixelData" in ds
    except Exception:  # noqa: BLE001
        return False


def _load_dicom_file(path: Path) -> CTVolume:
    ds = _read_header(path)
    _check_modality(ds, str(path))
    if not _has_pixel_tag(str(path)):
        raise CTLoadError(f"{path} is a DICOM file without pixel data (not an image). Choose an image file or folder.")
    with _QuietSitk():
        try:
            img = sitk.ReadImage(str(path), sitk.sitkFloat32)
        except Exception as exc:  # noqa: BLE001
            raise CTLoadError(
                f"Cannot read the pixels of {path}: the file is corrupt or truncated ({_short(exc)})."
            ) from exc
    hu = sitk.GetArrayFromImage(img).astype(np.float32, copy=False)
    if hu.ndim == 2:
        hu = hu[None]
    status = "skipped (multi-frame file)"
    if hu.shape[0] == 1:
        status, fixed = _hu_check(str(path), hu[0], str(path))
        hu[0] = fixed
    _check_finite(hu, str(path))
    ps = [float(v) for v in ds.get("PixelSpacing", [1.0, 1.0])]
    if hu.shape[0] > 1:
        dz = float(img.GetSpacing()[2])
    else:
        dz = float(ds.get("SpacingBetweenSlices", 0) or 0) or float(ds.get("SliceThickness", 1.0) or 1.0)
    if "ImageOrientationPatient" in ds:
        r, c, n = _direction_from_iop(ds.ImageOrientationPatient)
        direction = (r[0], c[0], n[0], r[1], c[1], n[1], r[2], c[2], n[2])
    else:
        direction = tuple(float(v) for v in img.GetDirection())
    if "ImagePositionPatient" in ds:
        origin = tuple(float(v) for v in ds.ImagePositionPatient)
    else:
        origin = tuple(float(v) for v in img.GetOrigin())
    meta = _metadata_from_dataset(ds)
    meta.update(source_path=str(path), format="dicom-file", n_slices=int(hu.shape[0]), hu_check=status)
    return CTVolume(
        hu=np.ascontiguousarray(hu, dtype=np.float32),
        spacing=(dz, ps[0], ps[1]),
        origin=origin,  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),
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

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    CTWriteError
        Unknown extension, NaN/Inf, bad shape/spacing/direction, or the file cannot be written (the
        destination is then untouched).
    """
    path = Path(path)
    name = path.name.lower()
    ext = next((s for s in (".nii.gz", ".nii", ".nrrd", ".mha") if name.endswith(s)), None)
    if ext is None:
        raise CTWriteError(f"{path}: unsupported extension; use .nii, .nii.gz, .nrrd or .mha.")
    arr = _check_hu_array(hu, str(path))
    sp = _check_spacing(spacing, str(path))
    d = _check_direction(direction)
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
