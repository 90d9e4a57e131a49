"""Evaluation metrics of napari-lidnet: image quality, ROI radiomics and lesion-detection AP.

These are the three kinds of numbers the LIDnet paper reports (Chen et al., "LIDnet: Lesion-aware
image denoising...", ACM MM 2021, arXiv:2104.08845, Sec. 4 "Experiments"):

* **Image quality** (Table 3, right part): PSNR, SSIM and RMSE of the denoised slice against the
  normal-dose (NDCT) slice, on the whole slice and, here in addition, inside the lesion boxes
  (:func:`image_metrics`). Images are compared on the networks' [0, 1] scale: HU clipped to the model
  range ``hu_range`` (default ``(-1024, 1024)`` HU, see :mod:`src_training.windowing`) and scaled with
  :func:`src_training.windowing.hu_to_unit`. RMSE is therefore a fraction of that range; ``rmse_hu`` gives
  it in HU (of the clipped image).
* **ROI radiomics** (Table 3, left part): GLCM texture features inside each lesion box, computed with
  pyradiomics (the paper's tool; van Griethuysen et al., "Computational Radiomics System to Decode the
  Radiographic Phenotype", Cancer Research 77(21):e104-e107, 2017; feature definitions follow the IBSI,
  Zwanenburg et al., Radiology 295(2):328-338, 2020), reported as the mean absolute difference to the
  NDCT value (:func:`glcm_features`, :func:`radiomics_difference`). Lower is better.
* **Lesion detection** (Table 2): COCO-style average precision at IoU 0.5 and 0.75 of a detector run on
  the denoised images (:func:`detection_ap`, torchmetrics ``MeanAveragePrecision``).

Boxes everywhere are ``xyxy`` in pixels with edges at pixel borders (see ``docs/architecture.md``): a box
covers the pixels ``rows floor(y0) .. ceil(y1)-1`` and ``columns floor(x0) .. ceil(x1)-1``, clipped to the
image (a fractional box edge includes the partly covered pixel).

Heavy libraries (pyradiomics, SimpleITK, torchmetrics, scikit-image) are imported on first use, so
importing this module stays cheap for the napari plugin.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import LidnetError
from .windowing import DEFAULT_HU_RANGE

__all__ = [
    "EvaluationError",
    "GLCM_FEATURES",
    "GLCM_SETTINGS_NOTE",
    "box_pixel_slices",
    "image_metrics",
    "glcm_features",
    "radiomics_difference",
    "detection_ap",
]


class EvaluationError(LidnetError, ValueError):
    """Evaluation got input it cannot score (shape mismatch, NaN, HU where [0, 1] was expected, a box that
    is too small or outside the image, detections and targets of different lengths...)."""


#: The three GLCM features of the paper's Table 3 -> pyradiomics feature keys.
#: Homogeneity is the inverse difference moment ``Idm`` ("homogeneity 2"; ``Id`` would be "homogeneity 1"),
#: energy is ``JointEnergy`` (sum of squared GLCM probabilities). See ``shared/reference/ct-conventions.md``.
GLCM_FEATURES: dict[str, str] = {
    "correlation": "original_glcm_Correlation",
    "homogeneity": "original_glcm_Idm",
    "energy": "original_glcm_JointEnergy",
}

#: Human-readable statement of the radiomics settings (for reports).
GLCM_SETTINGS_NOTE = (
    "pyradiomics {version}, original image, 2D GLCM in the slice plane (force2D, 4 in-plane angles averaged), "
    "distance 1 pixel, symmetrical GLCM, fixed bin width {bin_width:g} HU (pyradiomics' default), no resampling, "
    "no normalisation, ROI = the lesion box"
)

_OTHER_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "ngtdm", "gldm")

# SSIM window: scikit-image's default uniform 7x7 window, K1 = 0.01, K2 = 0.03 (Wang et al. 2004).
_SSIM_WIN = 7


# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _as_2d(name: str, arr: Any) -> np.ndarray:
    """(H, W) float64 copy of a numpy array / torch tensor; leading singleton axes are dropped."""
    if hasattr(arr, "detach"):  # torch tensor
        arr = arr.detach().cpu().numpy()
    a = np.asarray(arr)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise EvaluationError(f"{name} must be one 2D slice (H, W); got an array of shape {np.shape(arr)}.")
    if a.size == 0:
        raise EvaluationError(f"{name} is empty (shape {a.shape}).")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise EvaluationError(f"{name} must hold real numbers, got dtype {a.dtype}.")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        n_bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise EvaluationError(
            f"{name} contains {n_bad} NaN/infinite pixel(s); metrics would be meaningless. "
            "Check the model output / the loaded image."
        )
    return a


def _as_boxes(name: str, boxes: Any, require_positive: bool = True) -> np.ndarray:
    """(n, 4) float64 xyxy boxes from a list / numpy array / torch tensor (n may be 0).

    Raises :class:`EvaluationError` for a wrong shape or NaN/Inf coordinates and, when
    ``require_positive``, for a box with x1 <= x0 or y1 <= y0. Also used by :mod:`src_training.report`."""
    if boxes is None:
        return np.zeros((0, 4))
    if hasattr(boxes, "detach"):
        boxes = boxes.detach().cpu().numpy()
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None, :]
    if b.ndim != 2 or b.shape[1] != 4:
        raise EvaluationError(f"{name} must be an (n, 4) array of xyxy pixel boxes, got shape {b.shape}.")
    if not np.all(np.isfinite(b)):
        raise EvaluationError(f"{name} contains NaN/infinite coordinates.")
    if require_positive and (np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1])):
        raise EvaluationError(f"{name}: every box needs x1 > x0 and y1 > y0 (xyxy pixels); got {b.tolist()}.")
    return b


def box_pixel_slices(box: Sequence[float], shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Row/column slices of the pixels covered by one xyxy box, clipped to an image of ``shape``.

    Parameters
    ----------
    box : (4,) float
        ``x0, y0, x1, y1`` in pixels, edges at pixel borders (column c spans [c, c+1)).
    shape : (H, W)
        Image shape.

    Returns
    -------
    (slice rows, slice cols) or None
        ``None`` when the box lies entirely outside the image.
    """
    h, w = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    c0 = max(int(math.floor(x0)), 0)
    r0 = max(int(math.floor(y0)), 0)
    c1 = min(int(math.ceil(x1)), w)
    r1 = min(int(math.ceil(y1)), h)
    if c1 <= c0 or r1 <= r0:
        return None
    return slice(r0, r1), slice(c0, c1)


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse <= 0.0:
        return float("inf")
    return float(10.0 * math.log10(data_range**2 / mse))


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float, win_size: int) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(b, a, data_range=data_range, win_size=win_size))


def _roi_win_size(h: int, w: int) -> int | None:
    """Largest odd window <= min(h, w), capped at the whole-slice window (7); None if < 3."""
    side = min(h, w, _SSIM_WIN)
    if side % 2 == 0:
        side -= 1
    return side if side >= 3 else None


# --------------------------------------------------------------------------------------------------------
# image quality
# --------------------------------------------------------------------------------------------------------
def image_metrics(
    pred: Any,
    ref: Any,
    boxes: Any = None,
    data_range: float = 1.0,
    hu_range: tuple[float, float] = DEFAULT_HU_RANGE,
) -> dict[str, float]:
    """PSNR, SSIM and RMSE of a denoised slice against the normal-dose slice, whole slice and in lesion boxes.

    Source: LIDnet (Chen et al., ACM MM 2021) Sec. 4, Table 3 ("PSNR / SSIM / RMSE" of the whole image); the
    ROI variants are this project's addition, same formulas restricted to the lesion boxes.

    Parameters
    ----------
    pred, ref : ndarray or tensor, (H, W) (leading singleton axes allowed), float
        Denoised (or low-dose) and reference (NDCT) slice on the networks' [0, 1] scale: HU clipped to
        ``hu_range`` and scaled with :func:`src_training.windowing.hu_to_unit`. Not HU.
    boxes : (n, 4) array-like of xyxy pixel boxes, optional
        Lesion boxes (n may be 0). Pixels are those covered by a box (fractional edges include the partly
        covered pixel), clipped to the image.
    data_range : float
        Dynamic range of the images (1.0 for the [0, 1] scale); the PSNR peak and SSIM's ``data_range``.
    hu_range : (lo, hi) HU
        The clipping range behind the [0, 1] scale; only used to convert RMSE to HU
        (``rmse_hu = rmse / data_range * (hi - lo)``).

    Returns
    -------
    dict[str, float]
        ``psnr`` (dB, ``10 log10(data_range^2 / MSE)``, ``inf`` for identical images), ``ssim`` (scikit-image
        ``structural_similarity``: uniform 7x7 window, K1 = 0.01, K2 = 0.03, mean over the windows that fit
        inside the slice), ``rmse`` (same scale as the images), ``rmse_hu`` (HU),
        ``psnr_roi`` / ``rmse_roi`` / ``rmse_roi_hu`` (the pixels of all boxes pooled; a pixel covered by two
        boxes counts once), ``ssim_roi`` (SSIM computed on each box crop separately with window
        ``min(7, largest odd number <= shorter box side)``, then averaged over boxes; boxes thinner than 3
        pixels are skipped), and ``n_boxes`` (boxes that overlap the image). ROI values are NaN when there is
        no box (or, for ``ssim_roi``, no box of at least 3x3 pixels). The ROI values depend only on the
        pixels inside the boxes.

    Raises
    ------
    EvaluationError (a LidnetError and ValueError)
        Shapes differ, an input is not 2D, contains NaN/inf, looks like HU instead of the [0, 1] scale
        (values below ``-data_range`` or above ``2 * data_range``), ``data_range <= 0``, or malformed boxes.
    """
    p = _as_2d("pred", pred)
    r = _as_2d("ref", ref)
    if p.shape != r.shape:
        raise EvaluationError(f"pred and ref must have the same shape, got {p.shape} and {r.shape}.")
    data_range = float(data_range)
    if not (math.isfinite(data_range) and data_range > 0):
        raise EvaluationError(f"data_range must be a positive number, got {data_range}.")
    for name, a in (("pred", p), ("ref", r)):
        lo, hi = float(a.min()), float(a.max())
        if lo < -data_range or hi > 2.0 * data_range:
            raise EvaluationError(
                f"{name} has values in [{lo:.4g}, {hi:.4g}], far outside [0, {data_range:g}]: it looks like HU. "
                "Scale it first with src_training.windowing.hu_to_unit(hu, hu_range)."
            )
    hu_lo, hu_hi = float(hu_range[0]), float(hu_range[1])
    hu_per_unit = (hu_hi - hu_lo) / data_range

    diff = p - r
    mse = float(np.mean(diff**2))
    rmse = math.sqrt(mse)
    out: dict[str, float] = {
        "psnr": _psnr_from_mse(mse, data_range),
        "ssim": _ssim(p, r, data_range, _SSIM_WIN) if min(p.shape) >= _SSIM_WIN else float("nan"),
        "rmse": rmse,
        "rmse_hu": rmse * hu_per_unit,
    }
    if min(p.shape) < _SSIM_WIN:
        win = _roi_win_size(*p.shape)
        if win is not None:
            out["ssim"] = _ssim(p, r, data_range, win)

    b = _as_boxes("boxes", boxes)
    mask = np.zeros(p.shape, dtype=bool)
    ssims: list[float] = []
    n_boxes = 0
    for box in b:
        sl = box_pixel_slices(box, p.shape)
        if sl is None:
            continue
        n_boxes += 1
        mask[sl] = True
        crop_p, crop_r = p[sl], r[sl]
        win = _roi_win_size(*crop_p.shape)
        if win is not None:
            ssims.append(_ssim(crop_p, crop_r, data_range, win))
    nan = float("nan")
    if n_boxes:
        mse_roi = float(np.mean(diff[mask] ** 2))
        out["psnr_roi"] = _psnr_from_mse(mse_roi, data_range)
        out["rmse_roi"] = math.sqrt(mse_roi)
        out["rmse_roi_hu"] = out["rmse_roi"] * hu_per_unit
    else:
        out["psnr_roi"] = out["rmse_roi"] = out["rmse_roi_hu"] = nan
    out["ssim_roi"] = float(np.mean(ssims)) if ssims else nan
    out["n_boxes"] = n_boxes
    return out


# --------------------------------------------------------------------------------------------------------
# radiomics
# --------------------------------------------------------------------------------------------------------
_RADIOMICS_LOCK = threading.Lock()


def _quiet_radiomics():
    import radiomics

    # pyradiomics logs INFO/DEBUG for every extraction and prints some messages through its own handler.
    radiomics.logger.setLevel(logging.WARNING)
    return radiomics


@lru_cache(maxsize=16)
def _extractor(bin_width: float, feature_classes: tuple[str, ...], glcm_names: tuple[str, ...]):
    """A RadiomicsFeatureExtractor for the given settings (built once per settings, cached).

    Only the GLCM features in ``glcm_names`` are enabled (all of them would also compute ``SumAverage``,
    which makes pyradiomics log a warning for every ROI); the other classes are enabled whole.
    """
    _quiet_radiomics()
    from radiomics import featureextractor

    extractor = featureextractor.RadiomicsFeatureExtractor(
        binWidth=float(bin_width),
        force2D=True,
        force2Ddimension=0,  # the single z slice: GLCM angles in the (y, x) plane only
        label=1,
        additionalInfo=False,  # no diagnostics_* keys
    )
    extractor.disableAllImageTypes()
    extractor.enableImageTypeByName("Original")
    extractor.disableAllFeatures()
    enabled: dict[str, list[str]] = {cls: [] for cls in feature_classes if cls != "glcm"}  # [] = whole class
    enabled["glcm"] = list(glcm_names)
    extractor.enableFeaturesByName(**enabled)
    return extractor


def _norm_classes(feature_classes: Iterable[str], extra_features: Iterable[str] | None) -> tuple[str, ...]:
    classes = {str(c).strip().lower() for c in feature_classes}
    classes.add("glcm")
    for key in extra_features or ():
        parts = str(key).split("_")
        if len(parts) < 3 or parts[0] != "original":
            raise EvaluationError(
                f"extra feature '{key}' is not a pyradiomics key like 'original_glcm_Id' or "
                "'original_firstorder_Mean'."
            )
        classes.add(parts[1].lower())
    unknown = sorted(classes - set(_OTHER_CLASSES))
    if unknown:
        raise EvaluationError(
            f"Unknown radiomics feature class(es) {unknown}; choose from {', '.join(_OTHER_CLASSES)}."
        )
    return tuple(sorted(classes))


def glcm_features(
    image_hu: Any,
    box: Sequence[float],
    *,
    spacing_mm: tuple[float, float] = (1.0, 1.0),
    bin_width: float = 25.0,
    feature_classes: Sequence[str] = ("glcm",),
    extra_features: Iterable[str] | None = None,
) -> dict[str, float]:
    """GLCM texture features (pyradiomics) of one lesion box of a CT slice.

    Settings (the same for every image so differences are comparable): pyradiomics ``Original`` image, a
    fixed bin width of ``bin_width`` HU (25 HU is pyradiomics' default), no resampling, no normalisation,
    GLCM at distance 1 pixel, symmetrical, computed in the slice plane (the slice is passed as a one-slice
    3D image with ``force2D=True, force2Ddimension=0``, so the 4 in-plane angles are averaged; passing a
    *2D* SimpleITK image with ``force2D=True`` would silently keep only one angle). ROI = the pixels covered
    by the box. Sources: LIDnet Sec. 4 / Table 3 (ROI radiomics); van Griethuysen et al., Cancer Research
    77(21):e104, 2017 (pyradiomics); Zwanenburg et al., Radiology 2020 (IBSI definitions).

    Parameters
    ----------
    image_hu : ndarray or tensor, (H, W), float
        The slice in HU (not the [0, 1] scale: the bin width is in HU).
    box : (4,) float
        ``x0, y0, x1, y1`` in pixels (edges at pixel borders), clipped to the image.
    spacing_mm : (float, float)
        Pixel spacing ``(row/y, column/x)`` in mm (architecture convention). Stored on the image; the GLCM
        itself counts neighbours in pixels, so it does not change these features.
    bin_width : float
        Grey-level bin width in HU.
    feature_classes : sequence of str
        pyradiomics classes to compute; ``glcm`` is always included. Others: ``firstorder``, ``glrlm``,
        ``glszm``, ``ngtdm``, ``gldm``.
    extra_features : iterable of str, optional
        Further pyradiomics keys to return, e.g. ``"original_glcm_Id"``; their classes are enabled.

    Returns
    -------
    dict[str, float]
        ``correlation`` (``original_glcm_Correlation``; pyradiomics returns 1 for a flat ROI, where the
        correlation is undefined), ``homogeneity`` (``original_glcm_Idm``), ``energy``
        (``original_glcm_JointEnergy``), plus every ``original_<class>_*`` feature of the requested classes
        other than glcm, plus the ``extra_features`` keys.

    Raises
    ------
    EvaluationError (a LidnetError and ValueError)
        Image not 2D / NaN, box malformed, outside the image or smaller than 2x2 pixels after clipping
        (pyradiomics' minimum ROI), unknown feature class, or pyradiomics refusing the ROI.
    """
    img = _as_2d("image_hu", image_hu)
    b = _as_boxes("box", box)
    if b.shape[0] != 1:
        raise EvaluationError(f"glcm_features takes one box, got {b.shape[0]}.")
    sl = box_pixel_slices(b[0], img.shape)
    if sl is None:
        raise EvaluationError(f"The box {b[0].tolist()} lies outside the {img.shape[1]}x{img.shape[0]} image.")
    h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    if h < 2 or w < 2:
        raise EvaluationError(
            f"The box {b[0].tolist()} covers {w}x{h} pixel(s) inside the image; GLCM features need a region of "
            "at least 2x2 pixels."
        )
    bw = float(bin_width)
    if not (math.isfinite(bw) and bw > 0):
        raise EvaluationError(f"bin_width must be a positive number of HU, got {bin_width}.")
    classes = _norm_classes(feature_classes, extra_features)
    sy, sx = (float(v) for v in spacing_mm)
    if not (sy > 0 and sx > 0):
        raise EvaluationError(f"spacing_mm must be positive (row, column) spacings in mm, got {spacing_mm}.")

    radiomics = _quiet_radiomics()
    import SimpleITK as sitk

    mask = np.zeros((1,) + img.shape, dtype=np.uint8)
    mask[(0,) + sl] = 1
    s_img = sitk.GetImageFromArray(img[None].astype(np.float32))  # (z=1, y, x) -> SimpleITK (x, y, z)
    s_msk = sitk.GetImageFromArray(mask)
    for s in (s_img, s_msk):
        s.SetSpacing((sx, sy, 1.0))
    glcm_names = {key.split("_", 2)[2] for key in GLCM_FEATURES.values()}
    glcm_names |= {str(k).split("_", 2)[2] for k in extra_features or () if str(k).split("_")[1].lower() == "glcm"}
    extractor = _extractor(bw, classes, tuple(sorted(glcm_names)))
    try:
        with _RADIOMICS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # flat ROIs: 0/0 handled by pyradiomics
            result = extractor.execute(s_img, s_msk, label=1)
    except ValueError as exc:
        raise EvaluationError(f"pyradiomics refused the box {b[0].tolist()}: {exc}") from exc

    out: dict[str, float] = {name: float(result[key]) for name, key in GLCM_FEATURES.items()}
    for key, val in result.items():
        if not key.startswith("original_"):
            continue
        cls = key.split("_")[1]
        if cls != "glcm":
            out[key] = float(val)
    for key in extra_features or ():
        if key not in result:
            raise EvaluationError(
                f"pyradiomics {radiomics.__version__} has no feature '{key}'. Names look like "
                "'original_glcm_Id'."
            )
        out[key] = float(result[key])
    return out


def radiomics_difference(
    image_hu: Any,
    reference_hu: Any,
    boxes: Any,
    **glcm_kwargs: Any,
) -> dict[str, Any]:
    """Mean absolute difference of the GLCM features between an image and its NDCT reference over lesion boxes.

    This is the ROI radiomics metric of LIDnet's Table 3 (|feature(denoised) - feature(NDCT)|, lower is
    better), averaged over boxes.

    Parameters
    ----------
    image_hu, reference_hu : (H, W) float, HU
        Denoised (or low-dose) slice and normal-dose reference slice, same shape.
    boxes : (n, 4) xyxy pixel boxes
        Lesion boxes of the slice. Boxes covering fewer than 2x2 pixels inside the image are skipped (listed in
        ``skipped``), so one tiny lesion does not abort an evaluation.
    **glcm_kwargs
        Passed to :func:`glcm_features` (``spacing_mm``, ``bin_width``).

    Returns
    -------
    dict
        ``glcm_correlation_diff``, ``glcm_homogeneity_diff``, ``glcm_energy_diff`` (float, mean over scored
        boxes; NaN if no box could be scored), ``n_boxes`` (int, boxes scored), ``skipped`` (list of boxes
        too small), ``per_box`` (list of dicts with ``box``, ``image``, ``reference`` and ``diff`` feature
        dicts keyed correlation/homogeneity/energy).

    Raises
    ------
    EvaluationError
        Shapes differ, NaN, malformed boxes.
    """
    img = _as_2d("image_hu", image_hu)
    ref = _as_2d("reference_hu", reference_hu)
    if img.shape != ref.shape:
        raise EvaluationError(f"image and reference must have the same shape, got {img.shape} and {ref.shape}.")
    b = _as_boxes("boxes", boxes)
    per_box: list[dict[str, Any]] = []
    skipped: list[list[float]] = []
    for box in b:
        sl = box_pixel_slices(box, img.shape)
        if sl is None or sl[0].stop - sl[0].start < 2 or sl[1].stop - sl[1].start < 2:
            skipped.append([float(v) for v in box])
            continue
        fi = glcm_features(img, box, **glcm_kwargs)
        fr = glcm_features(ref, box, **glcm_kwargs)
        per_box.append(
            {
                "box": [float(v) for v in box],
                "image": {k: fi[k] for k in GLCM_FEATURES},
                "reference": {k: fr[k] for k in GLCM_FEATURES},
                "diff": {k: abs(fi[k] - fr[k]) for k in GLCM_FEATURES},
            }
        )
    out: dict[str, Any] = {}
    for k in GLCM_FEATURES:
        vals = [pb["diff"][k] for pb in per_box if math.isfinite(pb["diff"][k])]
        out[f"glcm_{k}_diff"] = float(np.mean(vals)) if vals else float("nan")
    out["n_boxes"] = len(per_box)
    out["skipped"] = skipped
    out["per_box"] = per_box
    return out


# --------------------------------------------------------------------------------------------------------
# detection
# --------------------------------------------------------------------------------------------------------
def _to_tensor(name: str, value: Any, dtype, shape_tail: tuple[int, ...]):
    import torch

    if value is None:
        raise EvaluationError(f"{name} is missing.")
    t = value.detach().cpu() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    t = t.to(dtype)
    if shape_tail:
        t = t.reshape(-1, *shape_tail)
    else:
        t = t.reshape(-1)
    return t


def _mean_ap_metric():
    from torchmetrics.detection import MeanAveragePrecision

    try:
        import faster_coco_eval  # noqa: F401

        backend = "faster_coco_eval"
    except ImportError:
        backend = "pycocotools"
    return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=backend), backend


def detection_ap(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """COCO-style average precision of lesion detections (LIDnet Table 2: AP-50 and AP-75).

    Uses ``torchmetrics.detection.MeanAveragePrecision(box_format="xyxy", iou_type="bbox")`` with the
    ``faster_coco_eval`` backend (``pycocotools`` if that is not installed): 101-point interpolated AP, at most
    100 detections per image (the highest scores), all box sizes.

    Parameters
    ----------
    predictions : list of dict, one per image
        ``boxes`` (n, 4) float xyxy pixels, ``scores`` (n,) float, ``labels`` (n,) int (optional; default 1 =
        lesion). torch tensors or numpy arrays; n may be 0.
    targets : list of dict, one per image (same order and length)
        ``boxes`` (m, 4) float xyxy pixels, ``labels`` (m,) int (optional; default 1). m may be 0. Optional
        ``ignore`` (k, 4): regions passed to the library as COCO ``iscrowd`` boxes (detections on them are
        neither hits nor false positives; they are not counted as lesions), e.g. the synthetic nodules when
        the real tumour alone is scored.

    Returns
    -------
    dict
        ``ap50`` (AP at IoU 0.5), ``ap75`` (IoU 0.75), ``map`` (mean over IoU 0.50:0.05:0.95), all floats in
        [0, 1]; ``n_targets`` (ground-truth boxes), ``n_images``, ``backend``. With no ground-truth box at all
        AP is undefined: the three values are NaN (never torchmetrics' -1) and ``note`` says why. Images without
        targets are fine (their detections count as false positives).

    Raises
    ------
    EvaluationError
        Different numbers of prediction and target dicts, malformed boxes, scores missing or of the wrong
        length.
    """
    import torch

    if len(predictions) != len(targets):
        raise EvaluationError(
            f"detection_ap needs one prediction dict per target dict; got {len(predictions)} predictions and "
            f"{len(targets)} targets."
        )
    preds_t, tgts_t = [], []
    n_targets = 0
    for i, (p, t) in enumerate(zip(predictions, targets)):
        pb = _to_tensor(f"predictions[{i}]['boxes']", p.get("boxes"), torch.float32, (4,))
        ps = _to_tensor(f"predictions[{i}]['scores']", p.get("scores"), torch.float32, ())
        pl = p.get("labels")
        pl = torch.ones(pb.shape[0], dtype=torch.int64) if pl is None else _to_tensor("labels", pl, torch.int64, ())
        tb = _to_tensor(f"targets[{i}]['boxes']", t.get("boxes"), torch.float32, (4,))
        tl = t.get("labels")
        tl = torch.ones(tb.shape[0], dtype=torch.int64) if tl is None else _to_tensor("labels", tl, torch.int64, ())
        if not (ps.shape[0] == pl.shape[0] == pb.shape[0]):
            raise EvaluationError(
                f"predictions[{i}]: {pb.shape[0]} boxes, {ps.shape[0]} scores and {pl.shape[0]} labels; "
                "they must match."
            )
        if tl.shape[0] != tb.shape[0]:
            raise EvaluationError(f"targets[{i}]: {tb.shape[0]} boxes but {tl.shape[0]} labels.")
        for name, bx in ((f"predictions[{i}]", pb), (f"targets[{i}]", tb)):
            if bx.numel() and (not torch.isfinite(bx).all() or (bx[:, 2:] < bx[:, :2]).any()):
                raise EvaluationError(f"{name}['boxes'] must be finite xyxy boxes with x1 >= x0 and y1 >= y0.")
        n_targets += int(tb.shape[0])
        preds_t.append({"boxes": pb, "scores": ps, "labels": pl})
        ign = t.get("ignore")
        if ign is not None and len(np.asarray(ign).reshape(-1, 4)):
            ib = _to_tensor(f"targets[{i}]['ignore']", ign, torch.float32, (4,))
            tgts_t.append({"boxes": torch.cat([tb, ib]), "labels": torch.cat([tl, torch.ones(len(ib), dtype=torch.int64)]),
                           "iscrowd": torch.cat([torch.zeros(len(tb), dtype=torch.int64),
                                                 torch.ones(len(ib), dtype=torch.int64)])})
        else:
            tgts_t.append({"boxes": tb, "labels": tl})

    out: dict[str, Any] = {"n_targets": n_targets, "n_images": len(targets)}
    if n_targets == 0:
        nan = float("nan")
        out.update(
            ap50=nan,
            ap75=nan,
            map=nan,
            backend=None,
            note="AP is undefined: there is no ground-truth lesion box in these images.",
        )
        return out
    metric, backend = _mean_ap_metric()
    metric.update(preds_t, tgts_t)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = metric.compute()
    out.update(
        ap50=float(res["map_50"]),
        ap75=float(res["map_75"]),
        map=float(res["map"]),
        backend=backend,
    )
    # torchmetrics reports -1 for "undefined"; with targets present that cannot happen, but never leak -1.
    for k in ("ap50", "ap75", "map"):
        if out[k] < 0:
            out[k] = float("nan")
    return out
