"""Image quality of a denoised slice against the normal-dose slice: PSNR, SSIM, RMSE (LIDnet Table 3).

One function per metric (:func:`psnr`, :func:`ssim`, :func:`rmse`, keyword-only ``data_range``, as
scikit-image's ``metrics``), and :func:`image_metrics`, their composition over the whole slice and the lesion
boxes. Images are compared on the networks' [0, 1] scale: HU clipped to the model range ``hu_range``
(default ``(-1024, 1024)`` HU, :mod:`src_training.windowing`) and scaled with
:func:`src_training.windowing.hu_to_unit`. RMSE is therefore a fraction of that range; ``rmse_hu`` gives it
in HU (of the clipped image).

References
----------
Chen et al., "LIDnet: Lesion-aware image denoising", ACM MM 2021, arXiv:2104.08845, Sec. 4, Table 3.
Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to structural similarity",
IEEE TIP 13(4):600-612, 2004 (SSIM).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from ..windowing import DEFAULT_HU_RANGE
from .inputs import EvaluationError, _as_2d, _as_boxes, box_pixel_slices

__all__ = ["psnr", "ssim", "rmse", "image_metrics"]

# SSIM window: scikit-image's default uniform 7x7 window, K1 = 0.01, K2 = 0.03 (Wang et al. 2004).
_SSIM_WIN = 7


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse <= 0.0:
        return float("inf")
    return float(10.0 * math.log10(data_range**2 / mse))


def _ssim(a: np.ndarray, b: np.ndarray, data_range: float, win_size: int) -> float:
    return float(structural_similarity(b, a, data_range=data_range, win_size=win_size))



def _pair(pred: Any, ref: Any, data_range: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Checked ``(pred, ref, data_range)``: 2-D float64 slices of one shape, finite, on the [0, data_range]
    scale (not HU), ``data_range > 0``."""
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
    return p, r, data_range


def psnr(pred: Any, ref: Any, *, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB (``inf`` for identical images).

    Parameters
    ----------
    pred, ref : ndarray or tensor (H, W), float
        Denoised and reference slice on the [0, ``data_range``] scale (not HU).
    data_range : float
        The peak (1.0 on the networks' [0, 1] scale).

    Raises
    ------
    EvaluationError
        As :func:`image_metrics`.

    Examples
    --------
    >>> import numpy as np
    >>> round(psnr(np.full((8, 8), 0.5), np.full((8, 8), 0.6)), 3)
    20.0
    """
    p, r, data_range = _pair(pred, ref, data_range)
    return _psnr_from_mse(float(np.mean((p - r) ** 2)), data_range)


def rmse(pred: Any, ref: Any, *, data_range: float = 1.0) -> float:
    """Root mean squared error on the images' scale (a fraction of ``data_range``).

    Raises
    ------
    EvaluationError
        As :func:`image_metrics` (``data_range`` is only checked, it does not scale the result).

    Examples
    --------
    >>> import numpy as np
    >>> round(rmse(np.full((8, 8), 0.5), np.full((8, 8), 0.6)), 6)
    0.1
    """
    p, r, _ = _pair(pred, ref, data_range)
    return math.sqrt(float(np.mean((p - r) ** 2)))


def ssim(pred: Any, ref: Any, *, data_range: float = 1.0) -> float:
    """Structural similarity (scikit-image ``structural_similarity``: uniform 7x7 window, K1 = 0.01, K2 = 0.03,
    mean over the windows inside the slice; the largest odd window that fits for slices under 7 pixels; NaN
    under 3 pixels).

    Raises
    ------
    EvaluationError
        As :func:`image_metrics`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.linspace(0, 1, 64).reshape(8, 8)
    >>> ssim(x, x)
    1.0
    """
    p, r, data_range = _pair(pred, ref, data_range)
    win = _SSIM_WIN if min(p.shape) >= _SSIM_WIN else _roi_win_size(*p.shape)
    return _ssim(p, r, data_range, win) if win is not None else float("nan")


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
    p, r, data_range = _pair(pred, ref, data_range)
    hu_lo, hu_hi = float(hu_range[0]), float(hu_range[1])
    hu_per_unit = (hu_hi - hu_lo) / data_range

    diff = p - r
    mse = float(np.mean(diff**2))
    rmse_value = math.sqrt(mse)
    out: dict[str, float] = {
        "psnr": _psnr_from_mse(mse, data_range),
        "ssim": _ssim(p, r, data_range, _SSIM_WIN) if min(p.shape) >= _SSIM_WIN else float("nan"),
        "rmse": rmse_value,
        "rmse_hu": rmse_value * hu_per_unit,
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
