"""The one table of reported numbers: key, label, format, scale, direction, unit of resampling.

Used by ``lidnet demo``, ``lidnet reproduce``, ``lidnet study``, the report tables
(:mod:`src_training.report`) and the Compare widget, so a number has the same name, format and direction
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Metric", "METRICS", "METRIC_BY_KEY", "AP_SOURCES", "metric"]


@dataclass(frozen=True)
class Metric:
    """One reported number: key in the results, table label, format, scale, direction and unit of resampling.

    ``unit`` is ``"slice"`` (per-slice values), ``"lesion"`` (per lesion box) or ``"ap"`` (matched
    detections per slice)."""

    key: str
    label: str
    fmt: str
    scale: float
    higher_is_better: bool
    unit: str


#: Every number of Tables 2 and 3, in display order (the one table demo, reproduce, study and report use).
METRICS: tuple[Metric, ...] = (
    Metric("ap50", "AP-50 (%)", ".1f", 100.0, True, "ap"),
    Metric("ap75", "AP-75 (%)", ".1f", 100.0, True, "ap"),
    Metric("own_ap50", "own det. AP-50 (%)", ".1f", 100.0, True, "ap"),
    Metric("own_ap75", "own det. AP-75 (%)", ".1f", 100.0, True, "ap"),
    Metric("real_ap50", "real tumour AP-50 (%)", ".1f", 100.0, True, "ap"),
    Metric("glcm_correlation_diff", "Correlation", ".3f", 1.0, False, "lesion"),
    Metric("glcm_homogeneity_diff", "Homogeneity", ".3f", 1.0, False, "lesion"),
    Metric("glcm_energy_diff", "Energy", ".4f", 1.0, False, "lesion"),
    Metric("psnr", "PSNR (dB)", ".2f", 1.0, True, "slice"),
    Metric("ssim", "SSIM", ".3f", 1.0, True, "slice"),
    Metric("rmse", "RMSE [0,1]", ".4f", 1.0, False, "slice"),
    Metric("rmse_hu", "RMSE (HU)", ".1f", 1.0, False, "slice"),
    Metric("psnr_roi", "ROI PSNR (dB)", ".2f", 1.0, True, "slice"),
    Metric("ssim_roi", "ROI SSIM", ".3f", 1.0, True, "slice"),
    Metric("rmse_roi", "ROI RMSE [0,1]", ".4f", 1.0, False, "slice"),
)
METRIC_BY_KEY: dict[str, Metric] = {m.key: m for m in METRICS}
#: AP metric key -> (detections it scores: ``judge``, ``own`` or ``judge_real``, IoU threshold).
AP_SOURCES: dict[str, tuple[str, float]] = {"ap50": ("judge", 0.5), "ap75": ("judge", 0.75), "own_ap50": ("own", 0.5),
               "own_ap75": ("own", 0.75), "real_ap50": ("judge_real", 0.5)}



def metric(key: str) -> Metric:
    """The :class:`Metric` of ``key``; ``KeyError`` names the known keys."""
    try:
        return METRIC_BY_KEY[key]
    except KeyError:
        raise KeyError(f"Unknown metric '{key}'; known: {', '.join(METRIC_BY_KEY)}.") from None
