"""Tests of src_training.statistics: bootstrap intervals, paired differences, seed intervals, AP from matches."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pytest
from scipy import stats

from src_training.evaluation import detection_ap
from src_training.statistics import (
    ap_from_matches,
    bootstrap_ap,
    bootstrap_ci,
    match_detections,
    paired_ap_difference,
    paired_difference,
    seed_difference,
    seed_interval,
)


def test_bootstrap_ci_of_a_known_sample():
    """Mean of 400 N(3, 2^2) draws: the percentile interval is the normal-theory one (+-1.96 s / sqrt(n))
    within 10 %, contains the true mean, and the same seed gives the same interval."""
    x = np.random.default_rng(0).normal(3.0, 2.0, 400)
    est = bootstrap_ci(x, seed=1)
    half = 1.96 * x.std(ddof=1) / math.sqrt(len(x))
    assert est.value == pytest.approx(x.mean())
    assert (est.high - est.low) / 2 == pytest.approx(half, rel=0.10)
    assert est.low < 3.0 < est.high and est.n == 400
    assert bootstrap_ci(x, seed=1) == est
    assert "[" in est.fmt()
    # NaN units are ignored by the default statistic; one value has no interval
    with_nan = bootstrap_ci(np.r_[x, np.nan], seed=1)
    assert with_nan.value == pytest.approx(x.mean()) and with_nan.n == 400
    single = bootstrap_ci([5.0])
    assert single.value == 5.0 and math.isnan(single.low)


def test_paired_difference_verdicts():
    rng = np.random.default_rng(2)
    a = rng.normal(0, 1, 200)
    shifted = paired_difference(a, a + 0.5 + rng.normal(0, 0.1, 200))
    assert shifted.verdict == "higher" and shifted.diff.low > 0.4
    same = paired_difference(a, a + rng.normal(0, 0.1, 200))
    assert same.verdict == "no difference" and same.diff.low < 0 < same.diff.high
    assert paired_difference(a, a - 1.0).verdict == "lower"
    with pytest.raises(ValueError):
        paired_difference(a, a[:10])


def test_seed_interval_is_student_t():
    v = [0.30, 0.34, 0.28]
    est = seed_interval(v)
    half = stats.t.ppf(0.975, 2) * np.std(v, ddof=1) / math.sqrt(3)
    assert est.value == pytest.approx(np.mean(v)) and est.high - est.value == pytest.approx(half)
    assert est.method == "t" and est.n == 3
    d = seed_difference([1.0, 1.1, 0.9], [1.5, 1.6, 1.45])
    assert d.verdict == "higher"
    assert seed_difference([1.0, 1.1, 0.9], [1.05, 1.0, 0.95]).verdict == "no difference"


def _random_case(seed: int, n_images: int = 12):
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for i in range(n_images):
        k = int(rng.integers(0, 4))
        g = rng.uniform(0, 200, (k, 2))
        gt = np.hstack([g, g + rng.uniform(5, 25, (k, 2))]).astype(np.float32)
        near = gt + rng.normal(0, 2.5, gt.shape).astype(np.float32)
        near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 1)
        q = rng.uniform(0, 200, (int(rng.integers(0, 30)), 2))
        noise = np.hstack([q, q + rng.uniform(4, 20, q.shape)]).astype(np.float32)
        boxes = np.vstack([near, noise]).astype(np.float32)
        preds.append({"boxes": boxes, "scores": rng.uniform(0, 1, len(boxes)).astype(np.float32)})
        targets.append({"boxes": gt})
    return preds, targets


def _cocoeval_ap(preds, targets):
    """AP-50 / AP-75 of pycocotools' reference COCOeval (single class, xywh; ``ignore`` boxes as iscrowd)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = {"images": [{"id": i} for i in range(len(targets))], "categories": [{"id": 1}], "annotations": []}
    for i, t in enumerate(targets):
        for crowd, key in ((0, "boxes"), (1, "ignore")):
            for b in np.asarray(t.get(key, np.zeros((0, 4)))).astype(float).reshape(-1, 4):
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": 1,
                                          "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                                          "area": (b[2] - b[0]) * (b[3] - b[1]), "iscrowd": crowd})
    dts = [{"image_id": i, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)}
           for i, p in enumerate(preds) for b, s in zip(p["boxes"].astype(float), p["scores"])]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dts), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[1], ev.stats[2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_from_matches_equals_the_reference_cocoeval(seed):
    preds, targets = _random_case(seed)
    m = match_detections(preds, targets)
    ap50, ap75 = _cocoeval_ap(preds, targets)
    assert ap_from_matches(m, 0.5) == pytest.approx(ap50, abs=1e-9)
    assert ap_from_matches(m, 0.75) == pytest.approx(ap75, abs=1e-9)
    # the library path the reports use agrees to within the IoU rounding of its float32 boxes
    lib = detection_ap([{**p, "labels": np.ones(len(p["scores"]), np.int64)} for p in preds], targets)
    assert abs(lib["ap50"] - ap50) < 0.02 and abs(lib["ap75"] - ap75) < 0.02


@pytest.mark.parametrize("seed", [0, 5])
def test_ignore_regions_follow_cocoeval_iscrowd(seed):
    """Scoring only some lesions (the real tumour) with the others (synthetic nodules) as ignore regions:
    detections on an ignore region are neither hits nor false positives, as COCOeval's iscrowd."""
    preds, targets = _random_case(seed)
    split = [{"boxes": t["boxes"][:1], "ignore": t["boxes"][1:]} for t in targets]
    m = match_detections(preds, split)
    ap50, ap75 = _cocoeval_ap(preds, split)
    assert ap_from_matches(m, 0.5) == pytest.approx(ap50, abs=1e-9)
    assert ap_from_matches(m, 0.75) == pytest.approx(ap75, abs=1e-9)
    lib = detection_ap([{**p, "labels": np.ones(len(p["scores"]), np.int64)} for p in preds], split)
    assert abs(lib["ap50"] - ap50) < 0.02
    # ignoring them can only raise AP over treating their detections as false positives
    plain = match_detections(preds, [{"boxes": t["boxes"][:1]} for t in targets])
    assert ap_from_matches(m, 0.5) >= ap_from_matches(plain, 0.5)


def test_bootstrap_ap_and_paired_ap_difference():
    preds, targets = _random_case(4, n_images=30)
    m = match_detections(preds, targets)
    est = bootstrap_ap(m, 0.5, n_boot=300, seed=0)
    assert est.low <= est.value <= est.high and est.n == 30
    assert bootstrap_ap(m, 0.5, n_boot=300, seed=0) == est
    perfect = match_detections([{"boxes": t["boxes"], "scores": np.ones(len(t["boxes"]), np.float32)}
                                for t in targets], targets)
    assert ap_from_matches(perfect, 0.75) == pytest.approx(1.0)
    d = paired_ap_difference(m, perfect, 0.5, n_boot=300)
    assert d.verdict == "higher" and d.diff.low > 0
    assert paired_ap_difference(m, m, 0.5, n_boot=100).verdict == "no difference"
    # no ground truth at all: AP undefined
    empty = match_detections([{"boxes": np.zeros((0, 4)), "scores": np.zeros(0)}], [{"boxes": np.zeros((0, 4))}])
    assert math.isnan(ap_from_matches(empty))
