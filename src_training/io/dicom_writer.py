"""The DICOM writer of :mod:`src_training.io`: :func:`write_dicom_series` writes a volume as a CT series
(one int16 file per slice, RescaleIntercept -1024), derived from a reference series (same study and frame of
reference in PACS) or as a new study, atomically (a temporary folder beside the destination renamed into
place; an existing folder is replaced only when it holds nothing but DICOM files).
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ..errors import CTWriteError, OutputExistsError
from ._library import _short
from ._writing import _check_direction, _check_hu_array, _check_spacing, _fix_mode
from .dicom_header import STUDY_TAGS
from .volume import CTVolume




def _ds_str(v: float) -> str:
    """Format a float as a DICOM DS (<= 16 characters)."""
    for digits in (10, 9, 8, 7, 6):
        s = f"{float(v):.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{float(v):.5e}"


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
            for kw in STUDY_TAGS:
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
