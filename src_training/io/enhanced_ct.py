"""Multi-frame CT files for :mod:`src_training.io`: Enhanced CT Image Storage (1.2.840.10008.5.1.4.1.1.2.1),
Legacy Converted Enhanced CT (1.2.840.10008.5.1.4.1.1.2.2) and classic CT files with NumberOfFrames, each
loaded as one volume by :func:`load_multiframe`.

A file with functional groups (DICOM PS3.3 C.7.6.16 Multi-frame Functional Groups Module) is read frame by
frame: position and orientation from the Plane Position / Plane Orientation (Patient) macros, pixel size
and slice thickness from Pixel Measures, rescale from the (CT) Pixel Value Transformation macro (PS3.3
C.7.6.16.2.9, C.8.15.3.10), each looked up in that frame's Per-frame Functional Groups item, then in the
Shared Functional Groups item, then at the top level of the file. The frames are ordered by their position
along the slice normal and checked like the slices of a series
(:func:`~src_training.io.slice_geometry.check_slice_positions`); what cannot be one 3-D volume (several
temporal positions or stacks, a gantry tilt, frames with different orientations, non-HU values, a
localizer) is refused with a message naming the file. A multi-frame file without functional groups takes
its geometry from SimpleITK/GDCM, with a positive slice spacing. What is refused and why, checked against
the standard, 3D Slicer and dcm2niix: docs/reliability.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sequence import Sequence as DicomSequence

from ..errors import CTLoadError
from ._library import _QuietSitk, _short
from .dicom_header import (
    _check_modality,
    _has_pixel_tag,
    _json_value,
    _metadata_from_dataset,
    _n_frames,
    _numbers,
    _transfer_syntax,
)
from .dicom_pixels import _LOSSY_SYNTAXES, _check_decoder, _rescale
from .slice_geometry import check_slice_positions, stack_drift
from .volume import CTVolume, _check_finite

#: SOP Class UIDs of the multi-frame CT objects (DICOM PS3.4 B.5).
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_CONVERTED_ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"

#: What each Rescale Type (0028,1054) means (DICOM PS3.3 C.11.1.1.2 defined terms); only HU is a CT volume.
RESCALE_TYPE_MEANINGS: dict[str, str] = {
    "HU": "Hounsfield units",
    "US": "unspecified units, e.g. a perfusion or derived map",
    "OD": "optical density",
    "MGML": "a concentration in mg/ml, e.g. an iodine or material map",
    "Z_EFF": "effective atomic number, a dual-energy map",
    "ED": "electron density",
    "EDW": "electron density relative to water",
    "HU_MOD": "modified Hounsfield units, not plain HU",
    "PCT": "a percentage",
}

#: Above this many voxels the SimpleITK cross-check is skipped (SimpleITK reads the whole file again).
_SITK_CHECK_MAX_VOXELS = 32 * 1024 * 1024

_IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def load_multiframe(path: str | Path, ds: pydicom.Dataset, *, where: str | None = None) -> CTVolume:
    """Load a multi-frame CT DICOM file (Enhanced CT, Legacy Converted Enhanced CT, or a CT file with
    NumberOfFrames > 1) as one volume.

    Parameters
    ----------
    path : path-like
        The DICOM file. Its pixels are decoded frame by frame (``pydicom.pixels.iter_pixels``) straight into
        one preallocated float32 array.
    ds : pydicom.Dataset
        The parsed header of ``path`` (e.g. ``dcmread(path, defer_size=...)``; the pixel data may be
        deferred or absent: it is read from ``path``).
    where : str, optional
        Start of every message (default: the path). When it does not contain the file name, the file name
        is added, so every message names the file.

    Returns
    -------
    CTVolume
        ``hu`` float32 ``(z, y, x)`` in HU, ``HU = stored * RescaleSlope + RescaleIntercept`` per frame (from
        that frame's Pixel Value Transformation Sequence, else the shared one, else the top-level tags), z in
        increasing position along the slice normal ``row x column`` (PS3.3 C.7.6.2.1.1); ``spacing``
        ``(dz, dy, dx)`` mm, all positive; ``origin`` the ImagePositionPatient (x, y, z mm, LPS) of the first
        frame in z order; ``direction`` the row, column and normal directions as columns. ``metadata``: the
        tags of :data:`~src_training.io.METADATA_TAGS` (those stored in functional groups taken from the
        first frame), ``format="dicom-file"``, ``n_slices``, ``hu_check`` (SimpleITK cross-check of one
        frame, or why it was skipped), ``files`` / ``sop_instance_uids`` / ``instance_numbers`` (the file's,
        repeated per slice), ``frame_numbers`` (1-based frame of each slice, in z order),
        ``slice_thickness_mm`` (SliceThickness of the source, None when absent), ``warnings``.

    Raises
    ------
    CTLoadError
        Naming the file: not CT, no pixel data, colour, no decoder for the transfer syntax; a localizer
        (scout) image; part of a concatenation; RescaleType other than HU (the message says what the values
        are); several temporal positions or stacks (a 4-D file) or frames repeated at the same positions;
        a frame without a position, frames with different orientations or pixel sizes; missing, duplicated
        or unevenly spaced frames (:func:`~src_training.io.slice_geometry.check_slice_positions`, labels
        ``"frame k"``); a gantry tilt (not resampled for multi-frame files); frames that disagree on
        whether a RescaleIntercept is given; malformed numbers; corrupt or truncated pixel data;
        NaN/Inf values; pydicom and SimpleITK decoding one frame differently.
    """
    path = Path(path)
    label = str(where or path)
    if path.name not in label:
        label = f"{label}, file {path.name}"
    _check_modality(ds, label)
    if not _has_pixel_tag(str(path), ds):
        raise CTLoadError(f"{label} is a DICOM file without pixel data (not an image). Choose an image file or folder.")
    spp = int(_numbers(ds, "SamplesPerPixel", 1, label))
    if spp != 1:
        raise CTLoadError(f"{label} is a colour image ({spp} samples per pixel); a CT has one HU value per pixel.")
    _check_decoder(_transfer_syntax(ds), label)
    ny, nx = int(_numbers(ds, "Rows", 0, label)), int(_numbers(ds, "Columns", 0, label))
    if ny < 1 or nx < 1:
        raise CTLoadError(f"{label}: Rows/Columns missing or zero; not an image.")
    image_type = _upper_values(ds.get("ImageType", None))
    if "LOCALIZER" in image_type:
        raise CTLoadError(_localizer_message(label, "ImageType", image_type))
    _check_concatenation(ds, label)
    nz = _n_frames(ds)
    per_frame = _sequence(ds, "PerFrameFunctionalGroupsSequence")
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    if per_frame is None and shared is None:
        return _load_without_groups(path, ds, label, nz, ny, nx)
    if per_frame is not None and len(per_frame) != nz:
        raise CTLoadError(
            f"{label}: NumberOfFrames is {nz} but the file describes {len(per_frame)} frame(s) (Per-frame "
            "Functional Groups); the file is incomplete or corrupt. Re-export it."
        )
    items = [per_frame[k] if per_frame is not None and isinstance(per_frame[k], pydicom.Dataset) else None
             for k in range(nz)]
    return _load_with_groups(path, ds, label, items, shared, ny, nx)


# ------------------------------------------------------------------------------------ functional groups
def _sequence(parent: pydicom.Dataset, keyword: str) -> DicomSequence | None:
    try:
        seq = parent.get(keyword, None)
    except Exception:  # noqa: BLE001 - a malformed element reads as absent
        return None
    return seq if isinstance(seq, DicomSequence) and len(seq) > 0 else None


def _first_item(parent: pydicom.Dataset | None, keyword: str) -> pydicom.Dataset | None:
    seq = _sequence(parent, keyword) if parent is not None else None
    return seq[0] if seq is not None and isinstance(seq[0], pydicom.Dataset) else None


def _macro(frame_item: pydicom.Dataset | None, shared: pydicom.Dataset | None, keyword: str) -> pydicom.Dataset | None:
    """The item of functional-group macro sequence ``keyword`` for one frame: per-frame first, then shared
    (PS3.3 C.7.6.16: a macro is in one of the two)."""
    item = _first_item(frame_item, keyword)
    return item if item is not None else _first_item(shared, keyword)


def _upper_values(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    vals = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    return tuple(str(v).strip().upper() for v in vals)


def _has(src: pydicom.Dataset | None, keyword: str) -> bool:
    try:
        return src is not None and keyword in src and src.get(keyword, None) not in (None, "")
    except Exception:  # noqa: BLE001
        return False


def _localizer_message(label: str, tag: str, values: tuple[str, ...]) -> str:
    shown = "\\".join(values)
    return (
        f"{label} is a localizer (scout) image ({tag} {shown}): the flat overview used to plan the "
        "scan, not a CT volume. Choose the axial (or reconstructed) CT series of the study."
    )


def _check_concatenation(ds: pydicom.Dataset, label: str) -> None:
    """Refuse one part of a concatenation (one multi-frame image split over several files, PS3.3 C.7.6.16)."""
    if not _has(ds, "ConcatenationUID"):
        return
    total = _numbers(ds, "InConcatenationTotalNumber", None, label)
    part = _numbers(ds, "InConcatenationNumber", None, label)
    if total is not None and total <= 1:
        return
    of = f" {int(part)} of {int(total)}" if part is not None and total is not None else ""
    raise CTLoadError(
        f"{label} is part{of} of a concatenation (one multi-frame image split over several files, "
        "ConcatenationUID); loading such parts is not supported and one part alone is an incomplete volume. "
        "Export the series as one file or as single-frame slices."
    )


def _frame_type(item: pydicom.Dataset | None, shared: pydicom.Dataset | None) -> tuple[str, ...]:
    ft = _macro(item, shared, "CTImageFrameTypeSequence")
    return _upper_values(ft.get("FrameType", None)) if ft is not None else ()


def _frame_index(item: pydicom.Dataset | None, keyword: str, label: str) -> Any:
    fc = _first_item(item, "FrameContentSequence")
    if fc is None or not _has(fc, keyword):
        return None
    value = fc.get(keyword)
    return str(value).strip() if keyword == "StackID" else _numbers(fc, keyword, None, label)


def _check_one_volume(items, shared, kept: list[int], label: str) -> None:
    """Refuse a 4-D file: several temporal positions or several stacks (Frame Content macro, C.7.6.16.2.2)."""
    temporal = {_frame_index(items[k], "TemporalPositionIndex", f"{label} (frame {k + 1})") for k in kept}
    temporal.discard(None)
    if len(temporal) > 1:
        raise CTLoadError(
            f"{label} holds {len(temporal)} temporal positions (TemporalPositionIndex): a 4-D, time-resolved "
            "acquisition (e.g. perfusion or cardiac phases), not one 3-D volume. napari-lidnet cannot choose a "
            "phase; export one phase as its own series."
        )
    stacks = {_frame_index(items[k], "StackID", label) for k in kept}
    stacks.discard(None)
    if len(stacks) > 1:
        raise CTLoadError(
            f"{label} holds {len(stacks)} stacks of frames (StackID {', '.join(sorted(stacks)[:5])}), e.g. "
            "several reconstructions or orientations in one file, not one 3-D volume. Export one stack as its "
            "own series."
        )


def _load_with_groups(path: Path, ds, label: str, items: list, shared, ny: int, nx: int) -> CTVolume:
    nz = len(items)
    warnings_out: list[str] = []
    # Localizer frames (CT Image Frame Type, C.8.15.3.1: Frame Type value 3 LOCALIZER)
    types = [_frame_type(it, shared) for it in items]
    loc = [k for k, t in enumerate(types) if "LOCALIZER" in t]
    if loc and len(loc) == nz:
        raise CTLoadError(_localizer_message(label, "FrameType", types[0]))
    kept = [k for k in range(nz) if k not in set(loc)]
    if loc:
        names = ", ".join(str(k + 1) for k in loc[:10]) + (" ..." if len(loc) > 10 else "")
        warnings_out.append(f"skipped {len(loc)} localizer (scout) frame(s) of {path.name}: frame {names}.")
    _check_one_volume(items, shared, kept, label)

    # Geometry: Plane Orientation / Plane Position (Patient), C.7.6.16.2.4 / C.7.6.16.2.3
    iops, ipps = [], []
    for k in kept:
        flabel = f"{label} (frame {k + 1})"
        po = _macro(items[k], shared, "PlaneOrientationSequence")
        src = po if _has(po, "ImageOrientationPatient") else ds
        if not _has(src, "ImageOrientationPatient"):
            raise CTLoadError(
                f"{label}: frame {k + 1} has no orientation (PlaneOrientationSequence > ImageOrientationPatient), "
                "so the volume cannot be built. Re-export the series."
            )
        iops.append(np.asarray(_numbers(src, "ImageOrientationPatient", None, flabel, n=6), dtype=np.float64))
        # (a position in the shared item puts every frame there: reported below as frames at one position;
        # a top-level ImagePositionPatient is the first frame's only, used for a single frame)
        pp = _macro(items[k], shared, "PlanePositionSequence")
        src = pp if _has(pp, "ImagePositionPatient") else (ds if len(kept) == 1 else None)
        if not _has(src, "ImagePositionPatient"):
            raise CTLoadError(
                f"{label}: frame {k + 1} has no position (PlanePositionSequence > ImagePositionPatient), so the "
                "frames cannot be ordered into a volume. Re-export the series."
            )
        ipps.append(_numbers(src, "ImagePositionPatient", None, flabel, n=3))
    iop0 = iops[0]
    for k, iop in zip(kept[1:], iops[1:]):
        if np.max(np.abs(iop - iop0)) > 1e-3:
            raise CTLoadError(
                f"{label}: frame {k + 1} has a different orientation (ImageOrientationPatient) than frame "
                f"{kept[0] + 1}; the frames are not one volume (e.g. several reformats in one file)."
            )
    r, c = iop0[:3], iop0[3:]
    n = np.cross(r, c)
    if np.linalg.norm(n) < 0.5:
        raise CTLoadError(f"{label}: ImageOrientationPatient {list(iop0)} is degenerate (rows parallel to columns).")
    n = n / np.linalg.norm(n)
    ipp = np.asarray(ipps, dtype=np.float64)
    pos = ipp @ n
    order = np.argsort(pos, kind="stable")
    pos, ipp = pos[order], ipp[order]
    zframes = [kept[i] for i in order]  # file frame index (0-based) of each slice, in z order

    # Pixel Measures, C.7.6.16.2.1
    spacings = []
    thickness = None
    for k in zframes:
        pm = _macro(items[k], shared, "PixelMeasuresSequence")
        src = pm if _has(pm, "PixelSpacing") else ds
        flabel = f"{label} (frame {k + 1})"
        spacings.append(tuple(_numbers(src, "PixelSpacing", [1.0, 1.0], flabel, n=2, positive=True))
                        if _has(src, "PixelSpacing") else None)
        if thickness is None:
            src = pm if _has(pm, "SliceThickness") else ds
            thickness = _numbers(src, "SliceThickness", None, flabel) if _has(src, "SliceThickness") else None
    if len(set(spacings)) > 1:
        i = next(i for i, s in enumerate(spacings) if s != spacings[0])
        raise CTLoadError(
            f"{label}: frame {zframes[i] + 1} has another pixel size (PixelSpacing {spacings[i]}) than frame "
            f"{zframes[0] + 1} ({spacings[0]}); the frames are not one volume."
        )
    if spacings[0] is None:
        warnings_out.append("PixelSpacing absent: 1 mm pixels assumed (distances and areas are then not in mm).")
    ps = spacings[0] or (1.0, 1.0)

    # Slice spacing: positions checked like the slices of a series; gantry tilt is not resampled here.
    if len(zframes) > 1:
        _check_not_repeated(pos, label)
        dz = check_slice_positions(pos, [f"frame {k + 1}" for k in zframes], label)
        _check_no_tilt(ipp, pos, n, ps, label)
    else:
        dz = thickness if thickness is not None and thickness > 0 else 1.0

    # Rescale per frame: (CT) Pixel Value Transformation, C.7.6.16.2.9 / C.8.15.3.10
    rescales = _frame_rescales(ds, items, shared, zframes, label, warnings_out)

    hu = np.empty((len(zframes), ny, nx), dtype=np.float32)
    z_of = {k: z for z, k in enumerate(zframes)}
    _decode_frames(path, hu, z_of, rescales, nz, ny, nx, label)
    _check_finite(hu, label)
    zmid = len(zframes) // 2
    status = _sitk_frame_check(path, hu[zmid], zframes[zmid], nz, *rescales[zframes[zmid]], _transfer_syntax(ds),
                               label)
    first = items[zframes[0]]
    meta = _multiframe_metadata(ds, path, zframes, thickness, status, warnings_out)
    for key, macro, kw in (
        ("PixelSpacing", "PixelMeasuresSequence", "PixelSpacing"),
        ("SliceThickness", "PixelMeasuresSequence", "SliceThickness"),
        ("ImageOrientationPatient", "PlaneOrientationSequence", "ImageOrientationPatient"),
        ("RescaleSlope", "PixelValueTransformationSequence", "RescaleSlope"),
        ("RescaleIntercept", "PixelValueTransformationSequence", "RescaleIntercept"),
        ("RescaleType", "PixelValueTransformationSequence", "RescaleType"),
        ("WindowCenter", "FrameVOILUTSequence", "WindowCenter"),
        ("WindowWidth", "FrameVOILUTSequence", "WindowWidth"),
    ):
        item = _macro(first, shared, macro)
        if key not in meta and _has(item, kw):
            try:
                meta[key] = _json_value(item.data_element(kw).value)
            except Exception:  # noqa: BLE001 - a malformed optional tag is left out
                pass
    meta["multiframe_geometry"] = "functional groups"
    return CTVolume(
        hu=hu,
        spacing=(float(dz), float(ps[0]), float(ps[1])),
        origin=tuple(float(v) for v in ipp[0]),  # type: ignore[arg-type]
        direction=tuple(float(v) + 0.0 for v in (r[0], c[0], n[0], r[1], c[1], n[1], r[2], c[2], n[2])),
        metadata=meta,
        source=str(path),
    )


def _check_not_repeated(pos: np.ndarray, label: str) -> None:
    """Refuse frames that repeat a set of positions (several volumes in one file: phases, energies, echoes
    without a TemporalPositionIndex) instead of calling them duplicated slices."""
    n = pos.size
    u = np.unique(np.round(pos / 1e-3)).size
    if 1 < u < n and n % u == 0:
        raise CTLoadError(
            f"{label}: the {n} frames repeat {n // u} times at the same {u} positions along the slice normal: "
            "several volumes in one file (e.g. phases, energies or reconstructions), which napari-lidnet cannot "
            "tell apart. Export one volume as its own series."
        )


def _check_no_tilt(ipp: np.ndarray, pos: np.ndarray, n: np.ndarray, ps, label: str) -> None:
    """Refuse frames whose positions drift in-plane along the stack (gantry tilt) or leave a straight line."""
    tilted = stack_drift(ipp, pos, n, ps, label, what="frame")
    if tilted is None:
        return
    tilt = tilted[1]
    raise CTLoadError(
        f"{label}: the frames are stacked with a gantry tilt of {tilt:.1f} deg (their positions drift in-plane "
        "along the stack); tilted multi-frame files are not resampled. Export the series as single-frame "
        "slices (classic CT images), which are corrected for the tilt, and load that folder."
    )


def _frame_rescales(ds, items, shared, zframes, label: str, warnings_out: list[str]) -> dict[int, tuple[float, float]]:
    """``{frame index: (slope, intercept)}``; RescaleType checked; frames that disagree on whether an
    intercept is given are refused (one of them would be off by the intercept, e.g. 1024 HU)."""
    out: dict[int, tuple[float, float]] = {}
    given: dict[int, bool] = {}
    types: dict[int, str] = {}
    absent = False
    for k in zframes:
        pvt = _macro(items[k], shared, "PixelValueTransformationSequence")
        flabel = f"{label} (frame {k + 1})"
        src = pvt if pvt is not None and (_has(pvt, "RescaleSlope") or _has(pvt, "RescaleIntercept")) else ds
        local: list[str] = []
        out[k] = _rescale(src, flabel, local)
        absent = absent or bool(local)
        given[k] = _has(src, "RescaleIntercept")
        rtype_src = pvt if _has(pvt, "RescaleType") else ds
        if _has(rtype_src, "RescaleType"):
            types[k] = str(rtype_src.get("RescaleType")).strip().upper()
    bad = [k for k in zframes if k in types and types[k] != "HU"]
    if bad:
        k = bad[0]
        rt = types[k]
        meaning = RESCALE_TYPE_MEANINGS.get(rt, "units that DICOM does not define")
        which = "the pixel values" if len(bad) == len(zframes) else f"frame {k + 1} holds values that"
        raise CTLoadError(
            f"{label}: {which} are {meaning} (RescaleType {rt}), not Hounsfield units (HU). napari-lidnet works "
            "on CT in HU only; choose the original CT series of the study."
        )
    if len(set(given.values())) > 1:
        k = next(k for k in zframes if not given[k])
        j = next(k for k in zframes if given[k])
        raise CTLoadError(
            f"{label}: frame {k + 1} has no RescaleIntercept while frame {j + 1} has one, so its HU values would "
            "be wrong (e.g. off by 1024 HU). Re-export the series."
        )
    if absent:
        warnings_out.append(
            "RescaleSlope/RescaleIntercept absent: stored values taken as HU (slope 1, intercept 0). Check that "
            "air reads about -1000 HU."
        )
    return out


def _decode_frames(path: Path, hu: np.ndarray, z_of: dict[int, int], rescales, nz: int, ny: int, nx: int,
                   label: str) -> None:
    """Decode the frames ``z_of`` (file index -> z) one by one into ``hu`` as HU."""
    from pydicom.pixels import iter_pixels

    wanted = sorted(z_of)
    try:
        count = 0
        for k, frame in zip(wanted, iter_pixels(str(path), indices=wanted)):
            if frame.shape != (ny, nx):
                raise ValueError(f"frame {k + 1} has shape {frame.shape}, expected {(ny, nx)}")
            slope, inter = rescales[k]
            out = hu[z_of[k]]
            np.multiply(frame, np.float32(slope), out=out, casting="unsafe")
            out += np.float32(inter)
            count += 1
        if count != len(wanted):
            raise ValueError(f"{count} of {len(wanted)} frames decoded, NumberOfFrames is {nz}")
    except CTLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CTLoadError(
            f"Cannot decode the pixels of {label}: the file is corrupt or truncated ({_short(exc)}). Re-export it."
        ) from exc


def _sitk_frame_check(path: Path, hu_frame: np.ndarray, k: int, nz: int, slope: float, inter: float, ts: str,
                      label: str) -> str:
    """Cross-check frame ``k`` (0-based, file order) decoded by pydicom against SimpleITK/GDCM.

    GDCM may apply another rescale to a multi-frame file (e.g. the first frame's); when the pixels agree up
    to a linear rescale the check passes and says so. Returns the ``metadata["hu_check"]`` status; raises
    CTLoadError when the decoded pixels differ."""
    ny, nx = hu_frame.shape
    if nz * ny * nx > _SITK_CHECK_MAX_VOXELS:
        return f"skipped (file too large for the SimpleITK cross-check: {nz} frames of {ny} x {nx})"
    with _QuietSitk():
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.SetOutputPixelType(sitk.sitkFloat32)
            arr = sitk.GetArrayFromImage(reader.Execute())
        except Exception as exc:  # noqa: BLE001 - a syntax or object GDCM lacks: pydicom's decoding stands
            return f"skipped (SimpleITK cannot read {path.name}: {_short(exc, 120)})"
    if arr.shape != (nz, ny, nx):
        return f"skipped (SimpleITK read {path.name} with another shape {arr.shape})"
    ref = arr[k].astype(np.float64)
    ours = hu_frame.astype(np.float64)
    tol = 0.5 * slope + 1e-3
    if ts in _LOSSY_SYNTAXES:
        tol = max(tol, 8.0 * slope)
    err = float(np.max(np.abs(ref - ours))) if ref.size else 0.0
    if err <= tol:
        return f"ok (max |pydicom - SimpleITK| = {err:.3g} HU on frame {k + 1} of {path.name})"
    stored = (ours - inter) / slope
    a_mat = np.column_stack([stored.ravel(), np.ones(stored.size)])
    (a, b), *_ = np.linalg.lstsq(a_mat, ref.ravel(), rcond=None)
    resid = float(np.max(np.abs(a_mat @ np.array([a, b]) - ref.ravel())))
    if resid <= tol * max(1.0, abs(a) / slope):
        return (
            f"ok (frame {k + 1} of {path.name}: pixels agree with SimpleITK, which applies another rescale "
            f"(slope {a:.4g}, intercept {b:.4g}) than this frame's (slope {slope:g}, intercept {inter:g}))"
        )
    raise CTLoadError(
        f"{label}: the HU of frame {k + 1} decoded by pydicom and by SimpleITK differ by up to {err:.1f} HU "
        "(pixel data or rescale inconsistent). The file cannot be trusted as HU; re-export the series."
    )


def _multiframe_metadata(ds, path: Path, zframes: list[int], thickness, status: str, warnings_out) -> dict:
    nz = len(zframes)
    meta = _metadata_from_dataset(ds)
    try:
        inst = ds.get("InstanceNumber", None)
        inst = int(inst) if inst not in (None, "") else None
    except Exception:  # noqa: BLE001
        inst = None
    meta.update(
        source_path=str(path),
        format="dicom-file",
        n_slices=nz,
        hu_check=status,
        files=[str(path)] * nz,
        sop_instance_uids=[str(ds.get("SOPInstanceUID", "") or "")] * nz,
        instance_numbers=[inst] * nz,
        frame_numbers=[k + 1 for k in zframes],
        slice_thickness_mm=float(thickness) if thickness is not None else None,
        warnings=warnings_out,
    )
    return meta


# ------------------------------------------------------------------------------------ no functional groups
def _load_without_groups(path: Path, ds, label: str, nz: int, ny: int, nx: int) -> CTVolume:
    """A multi-frame file without functional groups (e.g. a classic CT file with NumberOfFrames): one
    rescale for all frames from the top-level tags, frames in file order, geometry from SimpleITK/GDCM with
    the slice spacing made positive (a negative spacing flips the slice axis of the direction instead)."""
    warnings_out: list[str] = []
    if _has(ds, "RescaleType"):
        rt = str(ds.get("RescaleType")).strip().upper()
        if rt != "HU":
            meaning = RESCALE_TYPE_MEANINGS.get(rt, "units that DICOM does not define")
            raise CTLoadError(
                f"{label}: the pixel values are {meaning} (RescaleType {rt}), not Hounsfield units (HU). "
                "napari-lidnet works on CT in HU only; choose the original CT series of the study."
            )
    slope, inter = _rescale(ds, label, warnings_out)
    hu = np.empty((nz, ny, nx), dtype=np.float32)
    _decode_frames(path, hu, {k: k for k in range(nz)}, {k: (slope, inter) for k in range(nz)}, nz, ny, nx, label)
    _check_finite(hu, label)
    status = _sitk_frame_check(path, hu[nz // 2], nz // 2, nz, slope, inter, _transfer_syntax(ds), label)
    sp, o, d = _sitk_geometry(path, warnings_out)
    r, c, nrm = np.asarray(d[0::3]), np.asarray(d[1::3]), np.asarray(d[2::3])
    dz = float(sp[2])
    if dz < 0:  # frame k still lies at origin + k * dz * normal: flip both signs
        dz, nrm = -dz, -nrm
    if not dz > 0:
        warnings_out.append("slice spacing of the multi-frame file unknown (0 mm): 1 mm assumed.")
        dz = 1.0
    thickness = _numbers(ds, "SliceThickness", None, label) if _has(ds, "SliceThickness") else None
    meta = _multiframe_metadata(ds, path, list(range(nz)), thickness, status, warnings_out)
    meta["multiframe_geometry"] = "SimpleITK (no functional groups)"
    direction = (r[0], c[0], nrm[0], r[1], c[1], nrm[1], r[2], c[2], nrm[2])
    return CTVolume(
        hu=hu,
        spacing=(dz, abs(float(sp[1])), abs(float(sp[0]))),
        origin=tuple(float(v) for v in o),  # type: ignore[arg-type]
        direction=tuple(float(v) + 0.0 for v in direction),  # + 0.0: no -0.0
        metadata=meta,
        source=str(path),
    )


def _sitk_geometry(path: Path, warnings_out: list[str]):
    """``(spacing, origin, direction)`` of ``path`` as SimpleITK reads them (3-D; identity when unknown)."""
    with _QuietSitk():
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            sp, o, d = reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection()
        except Exception:  # noqa: BLE001 - geometry unknown: identity, reported
            sp, o, d = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), _IDENTITY
            warnings_out.append("geometry of the multi-frame file unknown: 1 mm voxels assumed.")
    if len(sp) < 3:
        sp, o, d = (*sp, 1.0), (*o, 0.0), (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
    if not (np.all(np.isfinite(sp)) and np.all(np.isfinite(o)) and np.all(np.isfinite(d))):
        warnings_out.append("geometry of the multi-frame file unknown: 1 mm voxels assumed.")
        sp, o, d = (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), _IDENTITY
    return sp, o, d
