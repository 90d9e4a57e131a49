"""The numbers of the Compare widget's table (Qt-free; the work runs in a worker thread).

Every number comes from :func:`src_training.evaluation.image_metrics` (PSNR / SSIM / RMSE on the networks'
[0, 1] scale: HU clipped to the model range ``DEFAULT_HU_RANGE``, default (-1024, 1024) HU, and scaled with
:func:`src_training.windowing.hu_to_unit`) and :func:`src_training.evaluation.detection_ap` (AP-50).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from src_training.evaluation import detection_ap, image_metrics
from src_training.windowing import DEFAULT_HU_RANGE, hu_to_unit

from .._layers import layer_slice

#: Table rows: (metric key in image_metrics / extra key, row label, format, higher_is_better or None).
METRIC_ROWS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("psnr", "PSNR slice (dB)", "{:.2f}", True),
    ("ssim", "SSIM slice", "{:.4f}", True),
    ("rmse", "RMSE slice", "{:.4f}", False),
    ("rmse_hu", "RMSE slice (HU)", "{:.1f}", False),
    ("psnr_roi", "PSNR lesion boxes (dB)", "{:.2f}", True),
    ("ssim_roi", "SSIM lesion boxes", "{:.4f}", True),
    ("rmse_roi", "RMSE lesion boxes", "{:.4f}", False),
    ("rmse_roi_hu", "RMSE lesion boxes (HU)", "{:.1f}", False),
    ("n_boxes", "lesion boxes", "{:.0f}", None),
    ("n_detections", "detections", "{:.0f}", None),
    ("ap50", "detection AP-50", "{:.3f}", True),
)


def format_value(value: float, fmt: str) -> str:
    """A table cell: ``fmt`` applied to ``value``; NaN/None -> "–", infinity -> "∞"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return fmt.format(value)


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("inf") if any(v is not None and math.isinf(v) for v in values) else float("nan")
    return float(np.mean(vals))


def metric_rows_work(payload: dict[str, Any]):
    """Progress generator computing the numbers of the compare table (runs in a worker thread: reads
    arrays only; no layer is modified).

    For every compared layer and slice: :func:`src_training.evaluation.image_metrics` of ``hu_to_unit(slice)``
    against ``hu_to_unit(NDCT slice)`` (model HU range ``DEFAULT_HU_RANGE``) with that slice's lesion boxes;
    detections (if any) are counted and scored with :func:`src_training.evaluation.detection_ap` (AP-50).
    Several slices: means (ROI values over the slices with boxes, NaN-free), counts summed, AP over all.

    Parameters
    ----------
    payload : dict
        From ``CompareWidget._gather``: ``ref`` (NDCT layer), ``zs`` (slice indices or [None]), ``boxes``
        (per slice (n, 4) xyxy pixels), ``has_boxes``, ``items`` (``name``, ``layer``, ``dets`` per slice
        (boxes, scores) or None).

    Yields
    ------
    (done, total, message)
        One step per (layer, slice).

    Returns
    -------
    dict layer name -> metrics dict

    Raises
    ------
    LidnetError
        Shape mismatch (from image_metrics).
    """
    ref, zs = payload["ref"], payload["zs"]
    total = max(len(payload["items"]) * len(zs), 1)
    done = 0
    results: dict[str, dict[str, float]] = {}
    for it in payload["items"]:
        ly, dets = it["layer"], it["dets"]
        per: list[dict[str, float]] = []
        preds, targets = [], []
        for i, z in enumerate(zs):
            boxes = payload["boxes"][i]
            pred = hu_to_unit(layer_slice(ly, z), DEFAULT_HU_RANGE)
            refs = hu_to_unit(layer_slice(ref, z), DEFAULT_HU_RANGE)
            m = dict(image_metrics(pred, refs, boxes, hu_range=DEFAULT_HU_RANGE))
            if dets is not None:
                db, ds = dets[i]
                m["n_detections"] = float(len(db))
                preds.append({"boxes": db, "scores": ds if ds is not None else np.ones(len(db), np.float32)})
                targets.append({"boxes": boxes})
            per.append(m)
            done += 1
            yield (done, total, f"metrics of {it['name']}: slice {i + 1}/{len(zs)}")
        if len(per) == 1:
            agg = dict(per[0])
        else:
            agg = {}
            for key in per[0]:
                vals = [float(p[key]) for p in per if key in p]
                agg[key] = float(np.sum(vals)) if key in ("n_boxes", "n_detections") else _mean(vals)
        if dets is not None and payload["has_boxes"]:
            agg["ap50"] = float(detection_ap(preds, targets)["ap50"])
        results[it["name"]] = agg
    return results


def compute_metric_rows(payload: dict[str, Any]) -> dict[str, dict[str, float]]:
    """:func:`metric_rows_work` run to its end in the calling thread; returns its result."""
    gen = metric_rows_work(payload)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


__all__ = ["METRIC_ROWS", "compute_metric_rows", "format_value", "metric_rows_work"]
