"""Score-threshold calibration of a lesion detector: the threshold that maximises F1 at IoU 0.5, and where a
detector file keeps it.

A detector returns every box it finds with a score in [0, 1]; a reader sees only those above a threshold.
The threshold shown by default should be the detector's own operating point, measured on a CALIBRATION case
(for the shipped detectors the training case ``lung1``, never the evaluation case ``lung2``): the score
above which the kept detections best balance missed lesions and false alarms (maximum F1).

Matching follows COCO (:func:`src_training.statistics.match_detections`: per slice, detections in
descending score order, each takes the unmatched ground-truth box of highest IoU >= the IoU threshold).
Because that matching is greedy in score order, the detections kept at a threshold ``t`` are matched
exactly as in the full list, so one matching gives precision, recall and F1 at every threshold.

The threshold of a checkpoint is read by :func:`stored_score_threshold` from the JSON record beside the
file (``score_threshold``, written by :func:`src_training.pretrain.record_score_threshold`) or from the
checkpoint's own ``config`` (``score_threshold``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..statistics import match_detections
from .inputs import EvaluationError

__all__ = ["DEFAULT_SCORE_THRESHOLD", "ScoreThreshold", "StoredThreshold", "threshold_stats",
           "f1_score_threshold", "stored_score_threshold"]

#: The threshold used when a checkpoint carries no calibration.
DEFAULT_SCORE_THRESHOLD = 0.5


@dataclass(frozen=True)
class ScoreThreshold:
    """A score threshold and what it gives on the calibration images.

    Attributes
    ----------
    value : float
        Detections with ``score >= value`` are kept (in [0, 1]).
    f1, precision, recall : float
        At ``value``, in [0, 1] (``precision`` is 0 when nothing is kept).
    n_kept : int
        Detections kept at ``value``.
    n_true : int
        Kept detections that match a lesion (true positives).
    n_lesions : int
        Ground-truth lesion boxes.
    n_images : int
        Slices.
    iou_threshold : float
        IoU a detection needs with a lesion box to count as a hit.
    """

    value: float
    f1: float
    precision: float
    recall: float
    n_kept: int
    n_true: int
    n_lesions: int
    n_images: int
    iou_threshold: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-ready)."""
        return asdict(self)


def _matched(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
             iou_threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    if len(predictions) != len(targets):
        raise EvaluationError(f"Score calibration needs one prediction per image; got {len(predictions)} "
                              f"predictions and {len(targets)} targets.")
    for i, p in enumerate(predictions):
        nb = np.asarray(p.get("boxes", np.zeros((0, 4)))).reshape(-1, 4).shape[0]
        ns = np.asarray(p.get("scores", np.zeros(0))).reshape(-1).shape[0]
        if nb != ns:
            raise EvaluationError(f"predictions[{i}]: {nb} boxes but {ns} scores; they must match.")
    thr = float(iou_threshold)
    matches = match_detections(predictions, targets, iou_thresholds=(thr,))
    scores, tps = [], []
    for m in matches:
        keep = m.keep[thr] if m.keep is not None else np.ones(len(m.scores), dtype=bool)
        scores.append(np.asarray(m.scores, dtype=np.float64)[keep])
        tps.append(np.asarray(m.tp[thr], dtype=bool)[keep])
    s = np.concatenate(scores) if scores else np.zeros(0)
    tp = np.concatenate(tps) if tps else np.zeros(0, dtype=bool)
    return s, tp, int(sum(m.n_gt for m in matches))


def _stats(value: float, scores: np.ndarray, tp: np.ndarray, n_lesions: int, n_images: int,
           iou_threshold: float) -> ScoreThreshold:
    kept = scores >= value
    n_kept, n_true = int(kept.sum()), int(tp[kept].sum())
    precision = n_true / n_kept if n_kept else 0.0
    recall = n_true / n_lesions if n_lesions else float("nan")
    f1 = 2.0 * n_true / (n_kept + n_lesions) if (n_kept + n_lesions) else float("nan")
    return ScoreThreshold(float(value), float(f1), float(precision), float(recall), n_kept, n_true, int(n_lesions),
                          int(n_images), float(iou_threshold))


def threshold_stats(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]],
                    threshold: float, *, iou_threshold: float = 0.5) -> ScoreThreshold:
    """Precision, recall and F1 of the detections with ``score >= threshold``.

    Parameters
    ----------
    predictions : list of dict, one per image (slice)
        ``boxes`` (n, 4) float xyxy pixels, ``scores`` (n,) float in [0, 1]; numpy or torch; n may be 0.
    targets : list of dict, one per image (same order)
        ``boxes`` (m, 4) float xyxy pixels of the lesions; optional ``ignore`` (k, 4) regions (detections on
        them are neither hits nor false alarms, COCO ``iscrowd``).
    threshold : float
        Score threshold in [0, 1].
    iou_threshold : float
        IoU for a hit (default 0.5).

    Returns
    -------
    ScoreThreshold

    Raises
    ------
    EvaluationError
        Different numbers of prediction and target dicts, or boxes and scores of different lengths.
    """
    scores, tp, n_lesions = _matched(predictions, targets, iou_threshold)
    return _stats(float(threshold), scores, tp, n_lesions, len(targets), iou_threshold)


def f1_score_threshold(predictions: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]], *,
                       iou_threshold: float = 0.5, decimals: int = 2) -> ScoreThreshold:
    """The score threshold that maximises F1 (IoU ``iou_threshold``) over the given images.

    Every distinct detection score is a candidate (keeping the detections at or above it). Among equal
    maxima the highest threshold wins (fewest boxes for the same F1). The returned value is placed in the
    gap between the last kept score and the next lower score, rounded down to ``decimals`` decimals when
    that rounding stays in the gap (so a control with a 0.01 step shows exactly the same boxes), and the
    statistics are those at the returned value.

    Parameters
    ----------
    predictions, targets
        As :func:`threshold_stats` (all detections, e.g. run with a score threshold of 0).
    iou_threshold : float
        IoU for a hit (default 0.5).
    decimals : int
        Rounding of the returned threshold (default 2).

    Returns
    -------
    ScoreThreshold

    Raises
    ------
    EvaluationError
        No lesion box in ``targets`` (F1 is undefined), no detection matches any lesion (every threshold
        gives F1 = 0, none can be chosen), or malformed inputs (see :func:`threshold_stats`).
    """
    scores, tp, n_lesions = _matched(predictions, targets, iou_threshold)
    if n_lesions == 0:
        raise EvaluationError("The calibration images hold no lesion box: the score threshold cannot be calibrated.")
    if not tp.any():
        raise EvaluationError("No detection matches a lesion on the calibration images: the score threshold "
                              "cannot be calibrated (is this a trained detector?).")
    order = np.argsort(-scores, kind="mergesort")
    s, hit = scores[order], tp[order]
    cum_tp = np.cumsum(hit)
    n_kept = np.arange(1, len(s) + 1)
    last = np.r_[s[1:] != s[:-1], True]  # the last index of each group of equal scores
    f1 = np.where(last, 2.0 * cum_tp / (n_kept + n_lesions), -1.0)
    best = float(f1.max())
    i = int(np.flatnonzero(f1 >= best - 1e-12)[0])  # highest threshold among the maxima
    hi = float(s[i])
    lo = float(s[i + 1]) if i + 1 < len(s) else 0.0
    scale = 10 ** int(decimals)
    value = math.floor(hi * scale) / scale
    if not lo < value <= hi:
        value = hi if lo >= hi else 0.5 * (lo + hi)
        if not lo < value <= hi:
            value = hi
    return _stats(value, scores, tp, n_lesions, len(targets), iou_threshold)


@dataclass(frozen=True)
class StoredThreshold:
    """The score threshold a checkpoint carries.

    Attributes
    ----------
    value : float
        In [0, 1].
    source : str
        Where it comes from, for the user: ``"calibrated on lung1"``, ``"from the checkpoint"``.
    record : dict
        The stored entry (method, F1, precision, recall, date ... when present).
    """

    value: float
    source: str
    record: dict


def _threshold_entry(entry: Any) -> Optional[tuple[float, dict]]:
    if isinstance(entry, Mapping):
        value = entry.get("value")
        rec = dict(entry)
    else:
        value, rec = entry, {}
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        return None
    return value, rec


def _source(rec: dict, default: str) -> str:
    case = rec.get("case")
    return f"calibrated on {case}" if case else default


def stored_score_threshold(path: str | os.PathLike) -> Optional[StoredThreshold]:
    """The score threshold stored with a detector checkpoint, or None when it has none.

    Looked for, in order: the JSON record beside the file (``<file>.json``, as the shipped detectors have;
    key ``score_threshold`` = ``{"value": 0.xx, "case": "lung1", ...}`` or a number; a record naming another
    ``file`` is ignored), then ``config["score_threshold"]`` inside the checkpoint (read memory-mapped with
    ``torch.load(weights_only=True, mmap=True)``: the weights are not read). Values outside [0, 1] or not
    numbers are ignored. Cheap enough for a GUI thread (a small JSON file and the checkpoint's header).

    Parameters
    ----------
    path : path-like
        A detector ``.pt`` file.

    Returns
    -------
    StoredThreshold or None
        Never raises for unreadable or damaged files (None: the caller falls back to
        :data:`DEFAULT_SCORE_THRESHOLD`).
    """
    p = Path(path)
    meta = p.with_suffix(".json")
    if meta.is_file():
        try:
            record = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = None
        if isinstance(record, Mapping) and record.get("file") in (None, p.name):
            got = _threshold_entry(record.get("score_threshold"))
            if got is not None:
                return StoredThreshold(got[0], _source(got[1], "calibrated"), got[1])
    if not p.is_file():
        return None
    try:
        import torch

        ckpt = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - not readable here: no stored threshold (the run reports the file)
        return None
    config = ckpt.get("config") if isinstance(ckpt, Mapping) else None
    if isinstance(config, Mapping):
        got = _threshold_entry(config.get("score_threshold"))
        if got is not None:
            return StoredThreshold(got[0], _source(got[1], "from the checkpoint"), got[1])
    return None
