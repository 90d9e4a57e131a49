"""DICOM pixels for :mod:`src_training.io`: decoding one slice with pydicom into float32 HU
(``HU = stored * RescaleSlope + RescaleIntercept``), refusing a transfer syntax without a decoder (with what to
install, :data:`PIXEL_HANDLERS_HINT`), and the SimpleITK/GDCM cross-check of the decoded HU.

Compressed transfer syntaxes (JPEG, JPEG-LS, JPEG 2000) are decoded by the pylibjpeg plugins through
``pydicom.pixels``. Every failure is a :class:`~src_training.errors.CTLoadError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ..errors import CTLoadError
from ._library import _QuietSitk, _short
from .dicom_header import _PIXEL_TAGS, _dcmread, _transfer_syntax
from .volume import _check_finite


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


#: Meaning of RescaleType (0028,1054) values other than HU (PS3.3 C.11.1.1.2 and CID 7180-ish terms).
_RESCALE_TYPES: dict[str, str] = {
    "US": "unspecified units",
    "OD": "optical density",
    "MGML": "mg/ml, a material concentration map",
    "Z_EFF": "effective atomic number",
    "ED": "electron density",
    "EDW": "electron density relative to water",
    "HU_MOD": "modified Hounsfield units",
    "PCT": "percent",
}


#: Root of GDCM's ImplementationClassUID: GDCM (hence ITK, SimpleITK, 3D Slicer's exports) writes
#: RescaleType "US" into every CT file it is not told the units of.
_GDCM_UID_ROOT = "1.2.826.0.1.3680043.2.1143"


def _check_rescale_type(ds: pydicom.Dataset, f: str | Path, warnings_out: list[str] | None = None) -> None:
    """Refuse a RescaleType (0028,1054) other than HU. Absent means HU for CT (PS3.3 C.8.2.1: RescaleType
    is required only when the units are not HU). One exception: "US" in a CT file written by GDCM/ITK (its
    ImplementationClassUID), which is GDCM's placeholder, not a statement about the values: taken as HU
    with a warning."""
    try:
        value = str(ds.get("RescaleType", "") or "").strip()
    except Exception:  # noqa: BLE001 - malformed value: treated as not HU below
        value = "?"
    if not value or value.upper() == "HU":
        return
    meta = getattr(ds, "file_meta", None)
    impl = str(meta.get("ImplementationClassUID", "") or "") if meta is not None else ""
    if value.upper() == "US" and impl.startswith(_GDCM_UID_ROOT) and warnings_out is not None:
        msg = ("RescaleType 'US' (unspecified units) written by GDCM/ITK, which writes US when it is not told the "
               "units: the values are taken as HU. Check that air reads about -1000 HU.")
        if msg not in warnings_out:
            warnings_out.append(msg)
        return
    meaning = _RESCALE_TYPES.get(value.upper(), "not Hounsfield units")
    raise CTLoadError(
        f"{f}: RescaleType is '{value}' ({meaning}), not HU, so the rescaled values are not Hounsfield units "
        "(e.g. a perfusion, iodine or material map). napari-lidnet works on CT in HU only; choose the CT "
        "images themselves."
    )


def _rescale(ds: pydicom.Dataset, f: str | Path, warnings_out: list[str]) -> tuple[float, float]:
    """``(slope, intercept)`` of one slice from its own RescaleSlope / RescaleIntercept (CT Image module,
    PS3.3 C.8.2.1); absent tags mean identity (a warning is added). RescaleType is checked by the caller
    (:func:`_check_rescale_type` for classic slices; functional groups by ``enhanced_ct``).

    Raises
    ------
    CTLoadError
        Slope / intercept not numbers, slope not positive and finite (``f`` is named).
    """
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
        ds = ds if parsed else _dcmread(f)
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
            reader = sitk.ImageFileReader()
            reader.SetImageIO("GDCMImageIO")  # also reads legacy files without the preamble
            reader.SetFileName(str(f))
            reader.SetOutputPixelType(sitk.sitkFloat32)
            ref = sitk.GetArrayFromImage(reader.Execute())
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
