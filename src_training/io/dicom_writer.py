"""The DICOM writer of :mod:`src_training.io`: :func:`write_dicom_series` writes a volume as a CT series
(one int16 file per slice, RescaleIntercept -1024), derived from a reference series (same study and frame of
reference in PACS, each slice pointing at its source slice) or as a new study, atomically (a temporary folder
beside the destination renamed into place; an existing folder is replaced only when it holds nothing but
DICOM files). :func:`check_dicom_series_output` runs every check of the writer and builds the first and
last slice in memory without writing anything, so that a command can refuse a destination or a reference
before hours of inference. :func:`series_window` is the display-window rule of a derived series.

DICOM sources (PS3.3): Image Type value 1 DERIVED (General Image module, C.7.6.1.1.2); Source Image
Sequence, Derivation Description and Derivation Code Sequence (General Reference module, C.12.4, Table
C.12-10; older editions list them in the General Image module C.7.6.1); Referenced Series Sequence with its
Referenced Instance Sequence (Common Instance Reference module, C.12.2, required when an instance references
instances of its own study); Slice Thickness and Pixel Spacing (Image Plane module, C.7.6.2); Window Center /
Width / Explanation (VOI LUT module, C.11.2); Purpose of Reference code 121322 "Source image for image
processing operation" (PS3.16 CID 7202).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ..errors import CTWriteError, OutputExistsError
from ..windowing import WINDOWS, window_limits
from ._library import _short
from ._writing import _check_direction, _check_hu_array, _check_origin, _check_spacing, _fix_mode, check_destination
from .dicom_header import STUDY_TAGS
from .volume import CTVolume

#: BodyPartExamined (upper case) -> window preset of :data:`src_training.windowing.WINDOWS`, used for a
#: derived series when neither the caller nor the source series gives a window.
BODY_PART_WINDOWS: dict[str, str] = {
    "CHEST": "lung",
    "LUNG": "lung",
    "THORAX": "lung",
    "HEAD": "brain",
    "BRAIN": "brain",
    "SKULL": "brain",
    "HEADNECK": "soft_tissue",
    "NECK": "soft_tissue",
    "ABDOMEN": "abdomen",
    "PELVIS": "abdomen",
    "LIVER": "liver",
}

#: Window of a series without any hint (no window given, none in the source, unknown body part): soft
#: tissue W 400 / L 40 HU, a neutral window that shows every body part (unlike lung or brain).
NEUTRAL_WINDOW: str = "soft_tissue"

#: PS3.16 CID 7202 code of a Source Image Sequence item: the slice the derived slice was computed from.
_PURPOSE_SOURCE_FOR_PROCESSING = ("121322", "DCM", "Source image for image processing operation")


def _ds_str(v: float) -> str:
    """Format a float as a DICOM DS (<= 16 characters)."""
    for digits in (10, 9, 8, 7, 6):
        s = f"{float(v):.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{float(v):.5e}"


def _first_number(value: Any) -> float | None:
    """First value of a (multi-valued) numeric tag as a finite float, else None."""
    if isinstance(value, (list, tuple)):
        value = value[0] if len(value) else None
    if isinstance(value, str) and "\\" in value:
        value = value.split("\\")[0]
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def series_window(
    window: str | Sequence[float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    explanation: str | None = None,
) -> tuple[float, float, str]:
    """The display window written into a series: ``(width, level, explanation)``, HU.

    Rule, first that applies:

    1. ``window``: the user's choice, a preset name of :data:`src_training.windowing.WINDOWS` or
       ``(W, L)`` in HU; explanation ``explanation`` or the preset name (``"USER"`` for a pair).
    2. The source series' WindowWidth / WindowCenter (``metadata``; the first value when multi-valued, as
       the VOI LUT module C.11.2 orders them by preference), explanation ``"AS SOURCE"``.
    3. The source's BodyPartExamined through :data:`BODY_PART_WINDOWS` (chest: lung 1500/-600, head:
       brain 80/40, ...), explanation the preset name.
    4. :data:`NEUTRAL_WINDOW` (soft tissue 400/40), never a lung window by default.

    Parameters
    ----------
    window : str or (float, float), optional
    metadata : mapping, optional
        :attr:`CTVolume.metadata` of the source (``WindowWidth``, ``WindowCenter``, ``BodyPartExamined``).
    explanation : str, optional
        WindowCenterWidthExplanation for a ``window`` given by the caller.

    Returns
    -------
    (float, float, str)
        Width > 0 and level in HU; explanation (upper case, at most 64 characters: VR LO).

    Raises
    ------
    src_training.errors.ConfigError
        ``window`` is an unknown preset or has a width <= 0.
    """
    meta = dict(metadata or {})
    if window is not None:
        lo, hi = window_limits(window if isinstance(window, str) else tuple(float(v) for v in window))
        name = explanation or (window.strip().replace("_", " ") if isinstance(window, str) else "USER")
        return float(hi - lo), float((hi + lo) / 2.0), str(name).upper()[:64]
    width, level = _first_number(meta.get("WindowWidth")), _first_number(meta.get("WindowCenter"))
    if width is not None and level is not None and width > 0:
        return float(width), float(level), "AS SOURCE"
    part = str(meta.get("BodyPartExamined") or "").strip().upper().replace(" ", "").replace("_", "")
    name = BODY_PART_WINDOWS.get(part, NEUTRAL_WINDOW)
    w, l_ = WINDOWS[name]
    return float(w), float(l_), name.replace("_", " ").upper()


def _source_slice_thickness(meta: Mapping[str, Any]) -> float | None:
    """SliceThickness of the source in mm: ``slice_thickness_mm`` (the loader's), else the ``SliceThickness``
    tag; None when absent or not a positive number."""
    for key in ("slice_thickness_mm", "SliceThickness"):
        v = _first_number(meta.get(key))
        if v is not None and v > 0:
            return v
    return None


def _source_references(
    meta: Mapping[str, Any], nz: int, z_offset: int | None
) -> list[tuple[str, str, int | None]] | None:
    """Per written slice ``(ReferencedSOPClassUID, ReferencedSOPInstanceUID, ReferencedFrameNumber or None)``
    of the source slice, from ``metadata["sop_instance_uids"]`` / ``["frame_numbers"]`` (z order), or None
    when they are unknown or do not map one to one (``z_offset`` None: the slice counts must match)."""
    uids = meta.get("sop_instance_uids")
    if not isinstance(uids, (list, tuple)) or not uids:
        return None
    if z_offset is None:
        if len(uids) != nz:
            return None
        off = 0
    else:
        off = int(z_offset)
        if off < 0 or off + nz > len(uids):
            return None
    frames = meta.get("frame_numbers")
    if not isinstance(frames, (list, tuple)) or len(frames) != len(uids):
        frames = None
    sop_class = str(meta.get("SOPClassUID") or "") or str(CTImageStorage)
    out: list[tuple[str, str, int | None]] = []
    for k in range(off, off + nz):
        uid = str(uids[k] or "").strip()
        if not uid:
            return None
        frame = frames[k] if frames is not None else None
        out.append((sop_class, uid, int(frame) if frame is not None else None))
    return out


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


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse a destination folder that may not be written or replaced (nothing is written)."""
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
    check_destination(out_dir, "DICOM series")


@dataclass
class _SeriesPlan:
    """Everything :func:`_slice_dataset` needs to build slice k (tags only; pixels are added by the caller)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: np.ndarray
    direction: np.ndarray
    ref_meta: dict[str, Any]
    study_uid: str
    frame_uid: str
    series_uid: str
    series_description: str
    series_number: int
    image_type: list[str]
    derived: bool
    derivation: str
    thickness: float
    window: tuple[float, float, str]
    references: list[tuple[str, str, int | None]] | None
    ref_series_uid: str
    uid_entropy: str | None
    extra_tags: dict[str, Any]
    date: str
    time: str
    _sop: dict[int, str] = field(default_factory=dict)

    def sop_uid(self, k: int) -> str:
        if k not in self._sop:
            self._sop[k] = (
                generate_uid() if self.uid_entropy is None
                else generate_uid(entropy_srcs=[self.uid_entropy, "sop", str(k)])
            )
        return self._sop[k]


def _plan_series(
    arr: np.ndarray,
    out_dir: Path,
    *,
    spacing: Sequence[float],
    reference: CTVolume | None,
    series_description: str,
    origin: Sequence[float] | None,
    direction: Sequence[float] | None,
    image_type: Sequence[str],
    series_number: int | None,
    uid_entropy: str | None,
    extra_tags: dict[str, Any] | None,
    window: str | Sequence[float] | None,
    window_explanation: str | None,
    derivation_description: str | None,
    reference_z_offset: int | None,
) -> _SeriesPlan:
    what = f"DICOM series {out_dir}"
    sp = _check_spacing(spacing, what)
    ref_meta = dict(reference.metadata) if reference is not None else {}
    ref_geom_ok = reference is not None and tuple(reference.hu.shape) == tuple(arr.shape)
    if origin is None:
        origin = reference.origin if ref_geom_ok else None
    if direction is None and ref_geom_ok:
        direction = reference.direction
    d = _check_direction(direction)
    o = _check_origin(origin, what)

    def uid(kind: str) -> str:
        return generate_uid() if uid_entropy is None else generate_uid(entropy_srcs=[uid_entropy, kind, "0"])

    ref_study = str(ref_meta.get("StudyInstanceUID") or "")
    frame_uid = (str(ref_meta.get("FrameOfReferenceUID") or "") if ref_geom_ok else "") or uid("frame")
    derived = str(image_type[0]).upper() == "DERIVED" if len(image_type) else False
    nz = int(arr.shape[0])
    references = None
    if reference is not None and derived and ref_study:  # same study: C.12.2 lists them in this study
        references = _source_references(ref_meta, nz, reference_z_offset)
    thickness = (_source_slice_thickness(ref_meta) if reference is not None else None) or sp[0]
    text = derivation_description if derivation_description is not None else series_description
    now = _dt.datetime.now()
    return _SeriesPlan(
        shape=(nz, int(arr.shape[1]), int(arr.shape[2])),
        spacing=sp,
        origin=o,
        direction=d,
        ref_meta=ref_meta,
        study_uid=ref_study or uid("study"),
        frame_uid=frame_uid,
        series_uid=uid("series"),
        series_description=str(series_description)[:64],  # VR LO: 64 characters at most
        series_number=int(series_number if series_number is not None else (1001 if derived else 1)),
        image_type=[str(v) for v in image_type],
        derived=derived,
        derivation=f"napari-lidnet: {text}"[:1024],  # VR ST: 1024 characters at most
        thickness=float(thickness),
        window=series_window(window, ref_meta if reference is not None else None, window_explanation),
        references=references,
        ref_series_uid=str(ref_meta.get("SeriesInstanceUID") or ""),
        uid_entropy=uid_entropy,
        extra_tags=dict(extra_tags or {}),
        date=now.strftime("%Y%m%d"),
        time=now.strftime("%H%M%S"),
    )


def _code_item(value: str, scheme: str, meaning: str) -> pydicom.Dataset:
    item = pydicom.Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _slice_dataset(plan: _SeriesPlan, k: int) -> pydicom.Dataset:
    """The dataset of slice ``k`` without its PixelData (Explicit VR Little Endian, CT Image Storage)."""
    nz, ny, nx = plan.shape
    d = plan.direction
    row_dir, col_dir, slice_dir = d[:, 0], d[:, 1], d[:, 2]
    sop_uid = plan.sop_uid(k)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = list(plan.image_type)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = plan.date
    ds.StudyTime = plan.time
    ds.SeriesDate = plan.date
    ds.SeriesTime = plan.time
    ds.ContentDate = plan.date
    ds.ContentTime = plan.time
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
        if kw in plan.ref_meta and plan.ref_meta[kw] is not None:
            setattr(ds, kw, plan.ref_meta[kw])
    ds.StudyInstanceUID = plan.study_uid
    ds.SeriesInstanceUID = plan.series_uid
    ds.FrameOfReferenceUID = plan.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SeriesDescription = plan.series_description
    ds.SeriesNumber = plan.series_number
    ds.InstanceNumber = k + 1
    if plan.derived:
        ds.DerivationDescription = plan.derivation
    if plan.references is not None:
        sop_class, ref_uid, frame = plan.references[k]
        src = pydicom.Dataset()
        src.ReferencedSOPClassUID = sop_class
        src.ReferencedSOPInstanceUID = ref_uid
        if frame is not None:
            src.ReferencedFrameNumber = int(frame)
        src.PurposeOfReferenceCodeSequence = [_code_item(*_PURPOSE_SOURCE_FOR_PROCESSING)]
        ds.SourceImageSequence = [src]
        if plan.ref_series_uid:
            inst = pydicom.Dataset()
            inst.ReferencedSOPClassUID = sop_class
            inst.ReferencedSOPInstanceUID = ref_uid
            series_item = pydicom.Dataset()
            series_item.SeriesInstanceUID = plan.ref_series_uid
            series_item.ReferencedInstanceSequence = [inst]
            ds.ReferencedSeriesSequence = [series_item]
    pos = plan.origin + k * plan.spacing[0] * slice_dir
    ds.ImagePositionPatient = [_ds_str(v) for v in pos]
    ds.ImageOrientationPatient = [_ds_str(v) for v in (*row_dir, *col_dir)]
    ds.SliceLocation = _ds_str(float(np.dot(pos, np.cross(row_dir, col_dir))))
    ds.SliceThickness = _ds_str(plan.thickness)
    ds.SpacingBetweenSlices = _ds_str(plan.spacing[0])
    ds.PixelSpacing = [_ds_str(plan.spacing[1]), _ds_str(plan.spacing[2])]
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
    kvp = _first_number(plan.ref_meta.get("KVP"))  # an unreadable KVP of the source is left empty
    ds.KVP = _ds_str(kvp) if kvp is not None else ""
    width, level, explanation = plan.window
    ds.WindowCenter = _ds_str(level)
    ds.WindowWidth = _ds_str(width)
    ds.WindowCenterWidthExplanation = explanation
    for kw, val in plan.extra_tags.items():
        setattr(ds, kw, val)
    return ds


def check_dicom_series_output(hu: np.ndarray, out_dir: str | os.PathLike, **kwargs: Any) -> None:
    """Check, without writing anything, that :func:`write_dicom_series` with the same arguments would work.

    Runs every check of the writer (array, spacing, origin, direction, destination folder, ``overwrite``
    rule, a writable folder) and builds and encodes the first and the last slice in memory, so that tags
    copied from ``reference`` that DICOM cannot hold are found now. Call it before a long computation with
    an array of the result's shape (e.g. the input volume: its values are only checked to be finite).

    Parameters
    ----------
    hu, out_dir, spacing, reference, ...
        As :func:`write_dicom_series`.

    Raises
    ------
    OutputExistsError
        As :func:`write_dicom_series`.
    CTWriteError
        As :func:`write_dicom_series`; a reference whose tags cannot be written: ``Cannot write a DICOM series
        derived from <source>: ...``.
    """
    bound = inspect.signature(write_dicom_series).bind(hu, out_dir, **kwargs)  # TypeError for unknown ones
    bound.apply_defaults()
    args = dict(bound.arguments)
    _checked_plan(args.pop("hu"), Path(args.pop("out_dir")), **args)


def _checked_plan(
    hu: np.ndarray, out_dir: Path, *, overwrite: bool = False, **kwargs: Any
) -> tuple[np.ndarray, "_SeriesPlan"]:
    """The checked HU array and the series plan of :func:`write_dicom_series` (``kwargs``: its keyword
    arguments); every check runs and the first and last slice are encoded in memory (:func:`_dry_run`)."""
    arr = _check_hu_array(hu, f"DICOM series {out_dir}")
    _check_out_dir(out_dir, overwrite)
    plan = _plan_series(arr, out_dir, **kwargs)
    _dry_run(plan, kwargs.get("reference"), out_dir)  # a tag that cannot be written fails here, before any file
    return arr, plan


def _dry_run(plan: _SeriesPlan, reference: CTVolume | None, out_dir: Path) -> None:
    """Build and encode the first and last slice in memory; CTWriteError naming the tag that fails."""
    nz, ny, nx = plan.shape
    for k in sorted({0, nz - 1}):
        try:
            ds = _slice_dataset(plan, k)
            ds.PixelData = bytes(2 * ny * nx)
            pydicom.dcmwrite(io.BytesIO(), ds, enforce_file_format=True)
        except Exception as exc:  # noqa: BLE001
            src = (reference.source or "the source series") if reference is not None else "the volume"
            bad = _uncopyable_tag(plan.ref_meta)
            why = (f"the source's tag {bad[0]} ({repr(bad[1])[:80]}) cannot be copied into a DICOM file" if bad
                   else _short(exc))
            raise CTWriteError(
                f"Cannot write a DICOM series derived from {src} to {out_dir}: {why}. Nothing was written; save "
                "the result as NIfTI (.nii.gz) instead."
            ) from exc


def _uncopyable_tag(ref_meta: Mapping[str, Any]) -> tuple[str, Any] | None:
    """The first patient/study tag of ``ref_meta`` (:data:`STUDY_TAGS`) that pydicom cannot encode, or None."""
    for kw in STUDY_TAGS:
        if kw not in ref_meta or ref_meta[kw] is None:
            continue
        ds = pydicom.Dataset()
        try:
            setattr(ds, kw, ref_meta[kw])
            pydicom.dcmwrite(io.BytesIO(), ds, implicit_vr=False, little_endian=True)
        except Exception:  # noqa: BLE001
            return kw, ref_meta[kw]
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
    window: str | Sequence[float] | None = None,
    window_explanation: str | None = None,
    derivation_description: str | None = None,
    reference_z_offset: int | None = None,
) -> list[Path]:
    """Write a volume as a CT DICOM series (one file per slice), atomically.

    Stored values are int16 (PixelRepresentation 1) with RescaleSlope 1 and RescaleIntercept -1024:
    ``stored = round(HU) + 1024``, so a round trip through :func:`load_ct` is exact to 0.5 HU. HU are
    clipped to [-31744, 33791] (the int16 range after the intercept).

    A derived series (``image_type`` starting with DERIVED) with a ``reference`` (PS3.3 sections in the
    module docstring) gets:

    - SliceThickness (0018,0050) of the source: ``reference.metadata["slice_thickness_mm"]``, else its
      ``SliceThickness`` tag, else the slice spacing; SpacingBetweenSlices (0018,0088) = the spacing
      between slice centres (``spacing[0]``; a standard extended attribute for CT);
    - the window of :func:`series_window` (the caller's ``window``, else the source's
      WindowCenter/WindowWidth, else one chosen from BodyPartExamined, else soft tissue 400/40);
    - per slice a SourceImageSequence (0008,2112) item: ReferencedSOPClassUID, ReferencedSOPInstanceUID
      (``reference.metadata["sop_instance_uids"]``, z order), ReferencedFrameNumber
      (``metadata["frame_numbers"]`` when the source is a multi-frame file) and PurposeOfReferenceCodeSequence
      (DCM 121322), and a ReferencedSeriesSequence (0008,1115) item with the source's SeriesInstanceUID and the
      same instance; written only when the slices map one to one onto the source's (same count, or
      ``reference_z_offset``) and the source has a StudyInstanceUID (the series then joins its study);
    - DerivationDescription (0008,2111): ``"napari-lidnet: " + derivation_description`` (name the model and
      the checkpoint there; default: the series description). DerivationCodeSequence is not written: CID
      7203 "Image Derivation" has no code for a learned noise reduction or a simulated dose.

    Parameters
    ----------
    hu : ndarray (z, y, x) or (y, x), any real dtype
        Intensities in HU. Slice k of the array becomes the file with InstanceNumber k + 1.
    out_dir : path-like
        Destination folder (created). Files are ``IM_00001.dcm``...
    spacing : (dz, dy, dx) mm
        dz is the distance between slice centres (SpacingBetweenSlices; also the SliceThickness when the
        reference gives none), (dy, dx) the PixelSpacing (row spacing, column spacing).
    reference : CTVolume, optional
        The series this one is derived from: StudyInstanceUID, patient and study tags and
        FrameOfReferenceUID are copied from ``reference.metadata`` (same study in PACS); origin and direction
        default to the reference's when its shape matches. Without it a new study is created.
    series_description : str
        SeriesDescription (0008,103E), e.g. ``"LIDnet denoised (REDCNN)"``; cut to 64 characters.
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
    window : str or (W, L) HU, optional
        The display window (the user's preset, e.g. the viewer layer's): a preset name of
        :data:`src_training.windowing.WINDOWS` or (width, level). Default: :func:`series_window`'s rule.
    window_explanation : str, optional
        WindowCenterWidthExplanation for ``window`` (default: the preset name, or ``USER``).
    derivation_description : str, optional
        How the series was derived (model, checkpoint, settings); see above.
    reference_z_offset : int, optional
        Slice k of ``hu`` is slice ``reference_z_offset + k`` of the reference (a result covering part of
        the source). Default None: the slice counts must match for the source references to be written.

    Returns
    -------
    list of pathlib.Path
        The written files, in slice order.

    Raises
    ------
    OutputExistsError
        ``out_dir`` exists and is not empty and ``overwrite`` is False, or it is not a folder of DICOM files.
    CTWriteError
        Bad array (NaN/Inf, wrong dimensions), bad spacing, origin or direction, a folder that cannot be
        written (a file in the way, no permission, disk full).
    src_training.errors.ConfigError
        ``window`` is an unknown preset or has a width <= 0.
    """
    out_dir = Path(out_dir)
    arr, plan = _checked_plan(
        hu, out_dir, overwrite=overwrite, spacing=spacing, reference=reference, series_description=series_description,
        origin=origin, direction=direction, image_type=image_type, series_number=series_number,
        uid_entropy=uid_entropy, extra_tags=extra_tags, window=window, window_explanation=window_explanation,
        derivation_description=derivation_description, reference_z_offset=reference_z_offset,
    )
    stored = np.clip(np.rint(arr.astype(np.float64)) + 1024.0, -32768, 32767).astype("<i2")
    nz = plan.shape[0]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    _fix_mode(tmp, is_dir=True)
    names: list[str] = []
    try:
        for k in range(nz):
            ds = _slice_dataset(plan, k)
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
