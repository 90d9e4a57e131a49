"""DICOM headers for :mod:`src_training.io`: parsing a file once (pixel data deferred), reading numeric
tags with a message naming file and tag, the modality / transfer syntax / frame count of a slice, and the
tags copied into :attr:`CTVolume.metadata <src_training.io.CTVolume.metadata>` (:data:`METADATA_TAGS`).

Every failure is a :class:`~src_training.errors.CTLoadError` naming the file and what to do.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.errors

from ..errors import CTLoadError
from ._library import _short
from .dicom_files import _dicom_kind


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


def _dcmread(f: str | Path, **kwargs: Any) -> pydicom.Dataset:
    """``pydicom.dcmread`` that also reads legacy files without the 128-byte preamble.

    A file pydicom refuses for lacking the preamble / ``DICM`` is read again with ``force=True`` only when
    :func:`~src_training.io.dicom_files.is_dicom_file` accepts it as legacy DICOM (its first bytes are a
    DICOM data element); such a file without a TransferSyntaxUID gets the one pydicom detected from its
    first element (implicit / explicit VR, little / big endian), so its pixels decode. Any other file gets
    pydicom's error (the callers word it for the user).
    """
    try:
        return pydicom.dcmread(str(f), **kwargs)
    except pydicom.errors.InvalidDicomError:
        if _dicom_kind(f) != "legacy":
            raise
    ds = pydicom.dcmread(str(f), force=True, **kwargs)
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = pydicom.dataset.FileMetaDataset()
    if not meta.get("TransferSyntaxUID", None):
        implicit, little = getattr(ds, "original_encoding", (True, True))
        meta.TransferSyntaxUID = (
            pydicom.uid.ImplicitVRLittleEndian if implicit
            else pydicom.uid.ExplicitVRLittleEndian if little else pydicom.uid.ExplicitVRBigEndian
        )
    return ds


def _unreadable_message(f: str | Path, exc: BaseException | None = None) -> str:
    """Why ``f`` cannot be parsed as DICOM, in the user's words (the file is named)."""
    if _dicom_kind(f) is None:
        return (
            f"{f} is not a readable DICOM file (corrupt, truncated or another format): it does not start like a "
            "DICOM file. Remove it from the folder or re-export the series."
        )
    if exc is None or isinstance(exc, (EOFError, struct.error)) or "end of file" in str(exc).lower():
        what = "cut inside its header"
    else:
        what = f"its header is corrupt: {_short(exc, 160)}"
    return f"{f} is damaged ({what}) and is not a readable DICOM file. Re-export it (or the whole series)."


def _read_header(f: str | Path) -> pydicom.Dataset:
    try:
        return _dcmread(f, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(_unreadable_message(f, exc)) from exc


def _parse_dicom(f: str | Path) -> pydicom.Dataset:
    """Parse a DICOM file once for both its header and (later) its pixels.

    Every element is parsed; elements longer than :data:`_DEFER_BYTES` (the pixel data) stay in the file
    (pydicom ``defer_size``) and are read by :func:`_decode_slice` when the slice is decoded, so holding
    the datasets of a whole series costs headers only. A file pydicom cannot parse to its end (e.g. a
    damaged element after the pixel data) is read as before by :func:`_read_header` (header only; its
    pixels are then decoded from the file, which names the problem). Legacy files without the preamble are
    read too (:func:`_dcmread`).

    Raises
    ------
    CTLoadError
        The file is not readable DICOM (message of :func:`_read_header`: not DICOM, or damaged).
    """
    try:
        return _dcmread(f, defer_size=_DEFER_BYTES)
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
        ds = _dcmread(f, defer_size=256)
        return "PixelData" in ds or "FloatPixelData" in ds
    except Exception:  # noqa: BLE001
        return False


def _sop_classes(ds: pydicom.Dataset) -> list[str]:
    """SOPClassUID of the dataset and MediaStorageSOPClassUID of its file meta (those present)."""
    meta = getattr(ds, "file_meta", None)
    uids = [ds.get("SOPClassUID", None), meta.get("MediaStorageSOPClassUID", None) if meta is not None else None]
    return [str(u) for u in uids if u]


def _incomplete_image(ds: pydicom.Dataset) -> bool:
    """True when ``ds`` has no pixel data although it is (or may be) an image: nothing after the file meta,
    image attributes (Rows) present, an image SOP class (``... Image Storage``), an unknown or no SOP class
    (e.g. a UID cut short) - in a series folder such a file was cut inside its header. Only a complete
    non-image object of a known SOP class (structured report, RT structure set, presentation state) is
    False."""
    if any(t in ds for t in _PIXEL_TAGS):
        return False
    if len(ds) == 0 or "Rows" in ds:
        return True
    uids = _sop_classes(ds)
    names = [pydicom.uid.UID(u).name for u in uids]
    return not uids or any(n == u or "Image Storage" in n for u, n in zip(uids, names))


def _image_type(ds: pydicom.Dataset) -> tuple[str, ...]:
    """ImageType (0008,0008) values, upper case and stripped (``()`` when absent or unreadable)."""
    try:
        value = ds.get("ImageType", None)
    except Exception:  # noqa: BLE001 - malformed: treated as absent
        return ()
    if value is None or value == "":
        return ()
    values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else str(value).split("\\")
    return tuple(str(v).strip().upper() for v in values)


def _is_localizer(ds: pydicom.Dataset) -> bool:
    """True for a localizer (scout, topogram, surview) image: ``LOCALIZER`` in ImageType (PS3.3 C.8.2.1.1.1,
    value 3 of the CT Image module's ImageType)."""
    return "LOCALIZER" in _image_type(ds)


def _slice_metadata(datasets: list[pydicom.Dataset]) -> dict[str, Any]:
    """Per-slice identifiers of a series in z order, for :attr:`CTVolume.metadata`.

    Returns
    -------
    dict
        ``sop_instance_uids`` (list of str, ``""`` when absent), ``instance_numbers`` (list of int or None),
        ``frame_numbers`` None (single-frame files), ``slice_thickness_mm`` (SliceThickness (0018,0050) of
        the first slice in mm, None when absent or not a positive number; the nominal reconstructed
        thickness, not the spacing between slices).
    """
    uids: list[str] = []
    numbers: list[int | None] = []
    for ds in datasets:
        uids.append(str(ds.get("SOPInstanceUID", "") or ""))
        try:
            value = ds.get("InstanceNumber", None)
            numbers.append(int(value) if value not in (None, "") else None)
        except Exception:  # noqa: BLE001 - malformed: unknown
            numbers.append(None)
    thickness = None
    if datasets:
        try:
            value = datasets[0].get("SliceThickness", None)
            thickness = float(value) if value not in (None, "") else None
            if thickness is not None and not (np.isfinite(thickness) and thickness > 0):
                thickness = None
        except Exception:  # noqa: BLE001 - malformed: unknown
            thickness = None
    return {"sop_instance_uids": uids, "instance_numbers": numbers, "frame_numbers": None,
            "slice_thickness_mm": thickness}
