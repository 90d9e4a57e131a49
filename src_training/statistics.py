"""Confidence intervals for every number napari-lidnet reports.

* :func:`bootstrap_ci` -- percentile bootstrap over evaluation units (slices or lesions) of a statistic;
  :func:`paired_difference` -- the same for the difference of two methods measured on the same units (the
  same resampled units for both), with a verdict: an interval that contains 0 is "no difference".
* :func:`seed_interval` -- mean over training seeds with a Student-t 95 % interval (what varies between
  training runs; n = 3 seeds gives t = 4.30, wide on purpose).
* AP with intervals: :func:`match_detections` matches each slice's detections to its ground truth once
  (the COCO rule: detections by descending score, each to the unmatched ground-truth box of highest IoU at or
  above the threshold; at most 100 detections per slice), and :func:`ap_from_matches` accumulates any
  multiset of slices into the COCO 101-point interpolated AP. Resampling slices therefore needs no new
  matching; ``tests/test_statistics.py`` checks that the full set gives the same AP as the library
  (torchmetrics + faster-coco-eval, :func:`src_training.evaluation.detection_ap`), which stays the source of
  the reported point values.

Percentile bootstrap: Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13. COCO AP: Lin et
al., "Microsoft COCO: Common Objects in Context", ECCV 2014, and the pycocotools ``COCOeval`` reference code.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

__all__ = [
    "Estimate",
    "Comparison",
    "bootstrap_ci",
    "paired_difference",
    "seed_interval",
    "seed_difference",
    "SliceMatches",
    "match_detections",
    "ap_from_matches",
    "bootstrap_ap",
    "paired_ap_difference",
    "N_BOOT",
]

#: Bootstrap resamples used by the reports.
N_BOOT = 2000
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)
_MAX_DETS = 100


@dataclass(frozen=True)
class Estimate:
    """A point value with a 95 % interval.

    Attributes
    ----------
    value : float
        The statistic on the full sample (or the mean over seeds).
    low, high : float
        Interval bounds (NaN when undefined, e.g. fewer than 2 units).
    n : int
        Units behind it (slices, lesions or seeds).
    method : str
        ``"bootstrap"`` (percentile, over units) or ``"t"`` (Student-t over seeds).
    """

    value: float
    low: float
    high: float
    n: int
    method: str = "bootstrap"

    def fmt(self, scale: float = 1.0, digits: int = 2) -> str:
        """``"v [lo, hi]"`` with values times ``scale`` (e.g. 100 for AP in %)."""
        def f(x: float) -> str:
            return "n/a" if x is None or not math.isfinite(x) else f"{x * scale:.{digits}f}"
        if not math.isfinite(self.low) or not math.isfinite(self.high):
            return f(self.value)
        return f"{f(self.value)} [{f(self.low)}, {f(self.high)}]"

    def to_dict(self) -> dict:
        """Plain dict (JSON-able; non-finite values become None in :func:`src_training.demo.jsonable`)."""
        return asdict(self)


@dataclass(frozen=True)
class Comparison:
    """Difference ``b - a`` of two methods on the same units, with its interval and verdict.

    Attributes
    ----------
    diff : Estimate
        ``stat(b) - stat(a)`` and its paired interval.
    verdict : str
        ``"higher"`` (interval above 0), ``"lower"`` (below 0) or ``"no difference"`` (contains 0, or undefined).
    """

    diff: Estimate
    verdict: str

    def to_dict(self) -> dict:
        """Plain dict."""
        return {"diff": self.diff.to_dict(), "verdict": self.verdict}


def _verdict(low: float, high: float) -> str:
    if not (math.isfinite(low) and math.isfinite(high)):
        return "no difference"
    if low > 0:
        return "higher"
    if high < 0:
        return "lower"
    return "no difference"


def _percentile(samples: np.ndarray, level: float) -> tuple[float, float]:
    s = samples[np.isfinite(samples)]
    if s.size < 2:
        return float("nan"), float("nan")
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(s, [a, 1.0 - a])
    return float(lo), float(hi)


def _clean(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    return v


def bootstrap_ci(values: Sequence[float], stat: Callable[[np.ndarray], float] = np.nanmean, *,
                 n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> Estimate:
    """Percentile bootstrap interval of ``stat`` over the units in ``values``.

    Parameters
    ----------
    values : sequence of float, shape (n,)
        One value per unit (slice or lesion); NaN values are kept in the resampling and ignored by the
        default ``np.nanmean``.
    stat : callable(ndarray) -> float
        The statistic (default the mean ignoring NaN).
    n_boot : int
        Resamples (default :data:`N_BOOT`).
    seed : int
        Seed of the resampling (same seed, same interval).
    level : float
        Coverage (0.95).

    Returns
    -------
    Estimate
        ``value = stat(values)``; ``low``/``high`` NaN when fewer than 2 finite values.
    """
    v = _clean(values)
    finite = v[np.isfinite(v)]
    if finite.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    value = float(stat(v))
    if finite.size < 2:
        return Estimate(value, float("nan"), float("nan"), int(finite.size))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(int(n_boot), v.size))
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            boots = np.array([stat(v[i]) for i in idx], dtype=np.float64)
    lo, hi = _percentile(boots, level)
    return Estimate(value, lo, hi, int(finite.size))


def paired_difference(a: Sequence[float], b: Sequence[float], stat: Callable[[np.ndarray], float] = np.nanmean,
                      *, n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> Comparison:
    """Paired bootstrap of ``stat(b) - stat(a)``: both methods measured on the same units, resampled together.

    Parameters
    ----------
    a, b : sequence of float, same length (one value per unit, same unit order)
    stat, n_boot, seed, level
        As :func:`bootstrap_ci`.

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        Different lengths.
    """
    va, vb = _clean(a), _clean(b)
    if va.shape != vb.shape:
        raise ValueError(f"paired_difference: {va.size} and {vb.size} units; the methods must share the units.")
    n = int(np.sum(np.isfinite(va) & np.isfinite(vb)))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(stat(vb) - stat(va))
        if n < 2:
            return Comparison(Estimate(value, float("nan"), float("nan"), n), "no difference")
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, va.size, size=(int(n_boot), va.size))
        boots = np.array([stat(vb[i]) - stat(va[i]) for i in idx], dtype=np.float64)
    lo, hi = _percentile(boots, level)
    return Comparison(Estimate(value, lo, hi, n), _verdict(lo, hi))


def seed_interval(values: Sequence[float], level: float = 0.95) -> Estimate:
    """Mean over training seeds with a Student-t interval ``mean +- t_{n-1} * sd / sqrt(n)``.

    Parameters
    ----------
    values : sequence of float
        One value per seed (NaN ignored).
    level : float

    Returns
    -------
    Estimate
        ``method="t"``; interval NaN with fewer than 2 finite values.
    """
    from scipy import stats

    v = _clean(values)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, "t")
    m = float(v.mean())
    if v.size < 2:
        return Estimate(m, float("nan"), float("nan"), int(v.size), "t")
    half = float(stats.t.ppf(0.5 + level / 2.0, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Estimate(m, m - half, m + half, int(v.size), "t")


def seed_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Comparison:
    """Paired difference ``b - a`` over seeds (seed i of both methods shares data and initialisation seed),
    Student-t interval, with the verdict of :class:`Comparison`."""
    va, vb = _clean(a), _clean(b)
    if va.shape != vb.shape:
        raise ValueError(f"seed_difference: {va.size} and {vb.size} seeds.")
    est = seed_interval(vb - va, level)
    return Comparison(est, _verdict(est.low, est.high))


# --------------------------------------------------------------------------------------------- AP
@dataclass
class SliceMatches:
    """COCO matching of one slice's detections, at each IoU threshold.

    Attributes
    ----------
    scores : ndarray float64 (m,)
        Scores of the (at most 100) highest-scoring detections, descending.
    tp : dict float -> ndarray bool (m,)
        Per IoU threshold, whether each detection matched a ground-truth box.
    n_gt : int
        Ground-truth boxes of the slice (ignore regions not counted).
    keep : dict float -> ndarray bool (m,), optional
        Per IoU threshold, False for detections dropped on an ignore region.
    """

    scores: np.ndarray
    tp: dict[float, np.ndarray]
    n_gt: int
    keep: Optional[dict[float, np.ndarray]] = None


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _crowd_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """COCO's overlap with an ignore ("crowd") region: intersection over the DETECTION's area."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    return np.where(area_a[:, None] > 0, inter / np.maximum(area_a[:, None], 1e-12), 0.0)


def match_detections(predictions: Sequence[Mapping], targets: Sequence[Mapping],
                     iou_thresholds: Sequence[float] = (0.5, 0.75)) -> list[SliceMatches]:
    """Match detections to ground truth per slice, as COCOeval does (single class, all areas).

    A target may carry ``ignore`` boxes (COCO's ``iscrowd`` regions): a detection that matches no regular
    ground-truth box but overlaps an ignore box (intersection over the detection's area >= the threshold) is
    dropped, neither a hit nor a false positive, and ignore boxes do not count as lesions. This is how the
    real-tumour AP treats the synthetic nodules.

    Parameters
    ----------
    predictions : list of dict, one per slice
        ``boxes`` (m, 4) xyxy pixels, ``scores`` (m,).
    targets : list of dict, one per slice
        ``boxes`` (n, 4) xyxy pixels; optional ``ignore`` (k, 4).
    iou_thresholds : sequence of float

    Returns
    -------
    list of SliceMatches
        Dropped detections are removed from ``scores`` / ``tp``.

    Raises
    ------
    ValueError
        Different numbers of prediction and target dicts.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"match_detections: {len(predictions)} predictions and {len(targets)} targets.")
    out = []
    for p, t in zip(predictions, targets):
        pb = np.asarray(p["boxes"], dtype=np.float64).reshape(-1, 4)
        ps = np.asarray(p["scores"], dtype=np.float64).reshape(-1)
        gb = np.asarray(t["boxes"], dtype=np.float64).reshape(-1, 4)
        ig = np.asarray(t.get("ignore", np.zeros((0, 4))), dtype=np.float64).reshape(-1, 4)
        order = np.argsort(-ps, kind="mergesort")[:_MAX_DETS]
        pb, ps = pb[order], ps[order]
        ious = _iou(pb, gb)
        crowd = _crowd_iou(pb, ig)
        tps, keeps = {}, {}
        for thr in iou_thresholds:
            matched = np.zeros(len(gb), dtype=bool)
            tp = np.zeros(len(pb), dtype=bool)
            keep = np.ones(len(pb), dtype=bool)
            for d in range(len(pb)):
                best, best_iou = -1, min(float(thr), 1 - 1e-10)
                for g in range(len(gb)):
                    if matched[g] or ious[d, g] < best_iou:
                        continue
                    best, best_iou = g, ious[d, g]
                if best >= 0:
                    matched[best] = True
                    tp[d] = True
                elif len(ig) and float(crowd[d].max()) >= min(float(thr), 1 - 1e-10):
                    keep[d] = False  # on an ignore region: dropped
            tps[float(thr)], keeps[float(thr)] = tp, keep
        out.append(SliceMatches(ps, tps, int(len(gb)), keeps))
    return out


def ap_from_matches(matches: Sequence[SliceMatches], iou_threshold: float = 0.5,
                    index: Optional[Sequence[int]] = None) -> float:
    """COCO 101-point interpolated AP of a multiset of slices (``index``: slice positions, repeats allowed).

    Returns NaN when the selected slices hold no ground-truth box.
    """
    sel = range(len(matches)) if index is None else index
    scores, tps, n_gt = [], [], 0
    thr = float(iou_threshold)
    for i in sel:
        m = matches[i]
        keep = m.keep[thr] if m.keep is not None else slice(None)
        scores.append(m.scores[keep])
        tps.append(m.tp[thr][keep])
        n_gt += m.n_gt
    if n_gt == 0:
        return float("nan")
    if not scores or sum(len(s) for s in scores) == 0:
        return 0.0
    s = np.concatenate(scores)
    tp = np.concatenate(tps)
    order = np.argsort(-s, kind="mergesort")
    tp = tp[order]
    ctp = np.cumsum(tp)
    cfp = np.cumsum(~tp)
    rc = ctp / n_gt
    pr = ctp / np.maximum(ctp + cfp, np.spacing(1))
    pr = np.maximum.accumulate(pr[::-1])[::-1]
    inds = np.searchsorted(rc, _RECALL_POINTS, side="left")
    q = np.zeros(len(_RECALL_POINTS))
    ok = inds < len(pr)
    q[ok] = pr[inds[ok]]
    return float(q.mean())


def bootstrap_ap(matches: Sequence[SliceMatches], iou_threshold: float = 0.5, *, n_boot: int = N_BOOT,
                 seed: int = 0, level: float = 0.95) -> Estimate:
    """AP with a percentile bootstrap interval over slices (each resample re-accumulates the matched slices)."""
    n = len(matches)
    value = ap_from_matches(matches, iou_threshold)
    if n < 2 or not math.isfinite(value):
        return Estimate(value, float("nan"), float("nan"), n)
    rng = np.random.default_rng(seed)
    boots = np.array([ap_from_matches(matches, iou_threshold, rng.integers(0, n, n)) for _ in range(int(n_boot))])
    lo, hi = _percentile(boots, level)
    return Estimate(value, lo, hi, n)


def paired_ap_difference(a: Sequence[SliceMatches], b: Sequence[SliceMatches], iou_threshold: float = 0.5, *,
                         n_boot: int = N_BOOT, seed: int = 0, level: float = 0.95) -> Comparison:
    """``AP(b) - AP(a)`` of two methods' detections on the same slices, same resampled slices for both."""
    if len(a) != len(b):
        raise ValueError(f"paired_ap_difference: {len(a)} and {len(b)} slices.")
    n = len(a)
    value = ap_from_matches(b, iou_threshold) - ap_from_matches(a, iou_threshold)
    if n < 2 or not math.isfinite(value):
        return Comparison(Estimate(value, float("nan"), float("nan"), n), "no difference")
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(int(n_boot)):
        idx = rng.integers(0, n, n)
        boots.append(ap_from_matches(b, iou_threshold, idx) - ap_from_matches(a, iou_threshold, idx))
    lo, hi = _percentile(np.asarray(boots), level)
    return Comparison(Estimate(value, lo, hi, n), _verdict(lo, hi))
