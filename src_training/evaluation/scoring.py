"""The evaluation protocol: one method's images scored against NDCT, one value per unit, with intervals.

Scoring (:func:`score_volume`) keeps one value per evaluation unit, so that :func:`summarize` can give 95 %
bootstrap intervals and :func:`compare` paired differences (:mod:`src_training.statistics`):

* per slice: PSNR / SSIM / RMSE on the [0, 1] scale of the model HU range, whole slice and inside the lesion
  boxes (:func:`src_training.evaluation.image.image_metrics`);
* per lesion box: |GLCM feature - NDCT's| for correlation, homogeneity (Idm), energy (pyradiomics,
  :func:`src_training.evaluation.radiomics.glcm_features`), all boxes and the real tumour's boxes;
* per slice matched detections of the independent judge (FCOS, ``judge``) and of LIDnet's own NDCT detector
  (the pretrained Faster R-CNN LIDnet trains against, ``own``), for AP-50 / AP-75 over all lesions and over
  the real tumour only. Point values of AP come from the library (torchmetrics + faster-coco-eval); the
  intervals resample the per-slice matches.

Source of the three kinds of numbers: LIDnet (Chen et al., ACM MM 2021, arXiv:2104.08845), Tables 2 and 3.
The judge of a method is never a network that method trained against (LIDnet trains against ``own``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from ..data.cases import CaseArrays
from ..inference import detect_slices
from ..statistics import (N_BOOT, Comparison, Estimate, SliceMatches, bootstrap_ap, bootstrap_ci, match_detections,
                          paired_ap_difference, paired_difference)
from ..windowing import hu_to_unit
from .detection import detection_ap
from .image import image_metrics
from .inputs import EvaluationError
from .metrics import AP_SOURCES, METRIC_BY_KEY, METRICS
from .radiomics import glcm_features

__all__ = ["MethodScores", "NDCTFeatures", "score_volume", "run_detections", "synthetic_boxes", "summarize",
           "compare", "comparison_dict", "verdict_text", "pct"]


# --------------------------------------------------------------------------------------------- scoring
@dataclass
class MethodScores:
    """One method's images scored on the evaluation case, one value per unit.

    Attributes
    ----------
    per_slice : dict str -> ndarray (z,)
        ``psnr``, ``ssim``, ``rmse``, ``rmse_hu``, ``psnr_roi``, ``ssim_roi``, ``rmse_roi`` (NaN where undefined).
    per_lesion : dict str -> ndarray (n_lesions,)
        ``glcm_{correlation,homogeneity,energy}_diff`` over every lesion box.
    per_real_lesion : dict str -> ndarray (n_real,)
        The same over the real tumour's boxes.
    matches : dict str -> list of SliceMatches
        ``judge``, ``own`` (all lesions) and ``judge_real`` (the real tumour only; the synthetic nodules are
        ignore regions there, so finding them is neither a hit nor a false positive), one entry per slice.
    ap : dict str -> float
        Library AP values (:func:`src_training.evaluation.detection_ap`): ``ap50``, ``ap75``, ``own_ap50``,
        ``own_ap75``, ``real_ap50``, ``real_ap75``.
    """

    per_slice: dict[str, np.ndarray]
    per_lesion: dict[str, np.ndarray]
    per_real_lesion: dict[str, np.ndarray]
    matches: dict[str, list[SliceMatches]]
    ap: dict[str, float]


class NDCTFeatures:
    """GLCM features (:func:`glcm_features`) of the NDCT inside each lesion box, computed once per evaluation
    case and box (``get(z, box) -> {feature: value}``)."""

    def __init__(self, case: CaseArrays):
        self.case = case
        self.cache: dict[tuple[int, tuple[float, ...]], dict[str, float]] = {}

    def get(self, z: int, box) -> dict[str, float]:
        key = (int(z), tuple(float(v) for v in box))
        if key not in self.cache:
            sp = (float(self.case.spacing[1]), float(self.case.spacing[2]))
            self.cache[key] = glcm_features(self.case.ndct_hu[z], box, spacing_mm=sp)
        return self.cache[key]


_ROI_KEYS = ("correlation", "homogeneity", "energy")


def _lesion_diffs(images_hu: np.ndarray, case: CaseArrays, boxes_by_slice, ndct: NDCTFeatures) -> dict[str, np.ndarray]:
    sp = (float(case.spacing[1]), float(case.spacing[2]))
    out: dict[str, list[float]] = {k: [] for k in _ROI_KEYS}
    for z in sorted(boxes_by_slice):
        for box in np.asarray(boxes_by_slice[z]).reshape(-1, 4):
            try:
                fi = glcm_features(images_hu[z], box, spacing_mm=sp)
                fr = ndct.get(z, box)
                for k in _ROI_KEYS:
                    out[k].append(abs(fi[k] - fr[k]))
            except EvaluationError:  # a box thinner than 2 px after clipping
                for k in _ROI_KEYS:
                    out[k].append(float("nan"))
    return {f"glcm_{k}_diff": np.asarray(v, dtype=np.float64) for k, v in out.items()}


def synthetic_boxes(case: CaseArrays, z: int) -> np.ndarray:
    """The boxes of slice ``z`` that are synthetic nodules (``case.boxes`` minus ``case.real_boxes``), (n, 4)."""
    allb = np.asarray(case.boxes.get(z, np.zeros((0, 4))), np.float32).reshape(-1, 4)
    real = np.asarray(case.real_boxes.get(z, np.zeros((0, 4))), np.float32).reshape(-1, 4)
    if not len(real):
        return allb
    keep = [not np.any(np.all(np.isclose(b, real), axis=1)) for b in allb]
    return allb[np.asarray(keep, dtype=bool)] if len(allb) else allb


def run_detections(detector, images_hu, hu_range) -> list[dict]:
    """Detections of ``detector`` on every slice of ``images_hu`` ((z, y, x) float32 HU), all scores kept
    (``score_thresh = 0``), as the per-slice prediction dicts :func:`detection_ap` and
    :func:`src_training.statistics.match_detections` take (``boxes`` (n, 4) xyxy pixels, ``scores``, ``labels``)."""
    return [{"boxes": r["boxes"], "scores": r["scores"], "labels": r["labels"]}
            for r in detect_slices(detector, images_hu, hu_range, k=1, score_thresh=0.0)]


def score_volume(images_hu: np.ndarray, case: CaseArrays, detectors: Detectors, hu_range,
                 ndct_features: Optional[NDCTFeatures] = None) -> MethodScores:
    """Score one method's images (``(z, y, x)`` float32 HU, same shape as ``case.ndct_hu``) against NDCT.

    Raises
    ------
    EvaluationError
        Shape mismatch or non-finite images.
    """
    vol = np.asarray(images_hu, dtype=np.float32)
    if vol.shape != case.ndct_hu.shape:
        raise EvaluationError(f"images {vol.shape} and the evaluation NDCT {case.ndct_hu.shape} differ in shape.")
    keys = ("psnr", "ssim", "rmse", "rmse_hu", "psnr_roi", "ssim_roi", "rmse_roi")
    per_slice = {k: np.full(case.n_slices, np.nan) for k in keys}
    for z in range(case.n_slices):
        b = case.boxes.get(z)
        m = image_metrics(hu_to_unit(vol[z], hu_range), hu_to_unit(case.ndct_hu[z], hu_range),
                          boxes=b if b is not None and len(b) else None, hu_range=hu_range)
        for k in keys:
            per_slice[k][z] = m[k]
    ndct_features = ndct_features or NDCTFeatures(case)
    per_lesion = _lesion_diffs(vol, case, case.boxes, ndct_features)
    per_real = _lesion_diffs(vol, case, case.real_boxes, ndct_features)

    def targets(boxes):
        return [{"boxes": np.asarray(boxes.get(z, np.zeros((0, 4))), np.float32).reshape(-1, 4)}
                for z in range(case.n_slices)]

    t_all, t_real = targets(case.boxes), targets(case.real_boxes)
    for z, t in enumerate(t_real):  # the synthetic nodules are ignore regions when the real tumour is scored
        t["ignore"] = synthetic_boxes(case, z)
    dj = run_detections(detectors.judge, vol, hu_range)
    do = run_detections(detectors.own, vol, hu_range)
    lib_j, lib_o, lib_r = detection_ap(dj, t_all), detection_ap(do, t_all), detection_ap(dj, t_real)
    matches = {"judge": match_detections(dj, t_all), "own": match_detections(do, t_all),
               "judge_real": match_detections(dj, t_real)}
    ap = {"ap50": lib_j["ap50"], "ap75": lib_j["ap75"], "own_ap50": lib_o["ap50"], "own_ap75": lib_o["ap75"],
          "real_ap50": lib_r["ap50"], "real_ap75": lib_r["ap75"]}
    return MethodScores(per_slice, per_lesion, per_real, matches, ap)


def _units(scores: MethodScores, key: str):
    m = METRIC_BY_KEY[key]
    if m.unit == "slice":
        return scores.per_slice[key]
    if m.unit == "lesion":
        return scores.per_lesion[key]
    return scores.matches[AP_SOURCES[key][0]]


def summarize(scores: MethodScores, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Point values and 95 % bootstrap intervals of every :data:`METRICS` entry (plus the real-tumour radiomics).

    Returns
    -------
    dict
        ``{key: value, key + "_ci": Estimate dict}`` for every metric; AP point values are the library's,
        their intervals resample slices; radiomics resample lesion boxes; image metrics resample slices.
        Also ``real_glcm_*_diff`` (+ ``_ci``) and ``n_slices``, ``n_lesions``.
    """
    out: dict[str, Any] = {}
    for m in METRICS:
        if m.unit == "ap":
            src, thr = AP_SOURCES[m.key]
            est = bootstrap_ap(scores.matches[src], thr, n_boot=n_boot, seed=seed)
            value = scores.ap[m.key]
            est = Estimate(value, est.low, est.high, est.n)
        else:
            est = bootstrap_ci(_units(scores, m.key), n_boot=n_boot, seed=seed)
        out[m.key] = est.value
        out[m.key + "_ci"] = est.to_dict()
    for k, v in scores.per_real_lesion.items():
        est = bootstrap_ci(v, n_boot=n_boot, seed=seed)
        out[f"real_{k}"] = est.value
        out[f"real_{k}_ci"] = est.to_dict()
    out["real_ap75"] = scores.ap["real_ap75"]
    out["n_slices"] = len(scores.per_slice["psnr"])
    out["n_lesions"] = len(scores.per_lesion["glcm_correlation_diff"])
    return out


def compare(a: MethodScores, b: MethodScores, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Comparison]:
    """Paired differences ``b - a`` (same slices / lesions resampled for both) of every :data:`METRICS`
    entry, with verdicts (``higher`` / ``lower`` / ``no difference``; whether higher is better is in
    :data:`METRICS`)."""
    out: dict[str, Comparison] = {}
    for m in METRICS:
        if m.unit == "ap":
            src, thr = AP_SOURCES[m.key]
            out[m.key] = paired_ap_difference(a.matches[src], b.matches[src], thr, n_boot=n_boot, seed=seed)
        else:
            out[m.key] = paired_difference(_units(a, m.key), _units(b, m.key), n_boot=n_boot, seed=seed)
    return out


def pct(v) -> str:
    """A fraction in [0, 1] as a percentage with one decimal, or 'n/a' (None / NaN)."""
    return "n/a" if v is None or v != v else f"{100 * float(v):.1f}"


def comparison_dict(comparisons: Mapping[str, Comparison]) -> dict[str, dict[str, Any]]:
    """:func:`compare` output as plain dicts with the metric-aware reading (:func:`verdict_text`)."""
    return {k: {**c.to_dict(), "reading": verdict_text(k, c)} for k, c in comparisons.items()}


def verdict_text(key: str, comparison: Comparison) -> str:
    """``"better"`` / ``"worse"`` / ``"no difference"`` for metric ``key`` (direction from :data:`METRICS`)."""
    if comparison.verdict == "no difference":
        return "no difference"
    better = (comparison.verdict == "higher") == METRIC_BY_KEY[key].higher_is_better
    return "better" if better else "worse"
