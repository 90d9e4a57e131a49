"""Lesion detection: COCO-style average precision at IoU 0.5 and 0.75 (LIDnet Table 2).

Point values come from torchmetrics ``MeanAveragePrecision`` (faster-coco-eval backend, pycocotools if
absent); the confidence intervals of :mod:`src_training.statistics` resample per-slice matches.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from .inputs import EvaluationError

__all__ = ["detection_ap"]


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
