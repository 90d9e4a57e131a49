"""DICOM headers for :mod:`src_training.io`: parsing a file once (pixel data deferred), reading numeric
tags with a message naming file and tag, the modality / transfer syntax / frame count of a slice, and the
tags copied into :attr:`CTVolume.metadata <src_training.io.CTVolume.metadata>` (:data:`METADATA_TAGS`).

Every failure is a :class:`~src_training.errors.CTLoadError` naming the file and what to do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from ..errors import CTLoadError
from ._library import _short


#: Tags of the patient and study modules (keyword names): read into :attr:`CTVolume.metadata` and copied by a
#: derived series from its reference (:func:`src_training.io.dicom_writer.write_dicom_series`).
STUDY_TAGS: tuple[str, ...] = (
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

#: DICOM tags copied into :attr:`CTVolume.metadata` (keyword names; missing tags are left out).
METADATA_TAGS: tuple[str, ...] = (
    "Modality",
    "SOPClassUID",
    "SeriesInstanceUID",
    "FrameOfReferenceUID",
    *STUDY_TAGS,
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


#: Elements longer than this (bytes) are not read by :func:`_parse_dicom`; pydicom reads them from the file
#: when they are used (in practice only the pixel data, read when its slice is decoded).
_DEFER_BYTES = 1024


#: Tags of the pixel data elements (PixelData, FloatPixelData, DoubleFloatPixelData).
_PIXEL_TAGS: tuple[int, ...] = (0x7FE00010, 0x7FE00008, 0x7FE00009)


def _read_header(f: str | Path) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(str(f), stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(
            f"{f} is not a readable DICOM file (corrupt, truncated or another format): {_short(exc)}. Remove it "
            "from the folder or re-export the series."
        ) from exc


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
