"""Tests of src_training.evaluation: image metrics, pyradiomics GLCM features, detection AP."""

from __future__ import annotations

import math

import numpy as np
import pytest

from src_training.errors import LidnetError
from src_training.evaluation import (
    GLCM_FEATURES,
    EvaluationError,
    box_pixel_slices,
    detection_ap,
    glcm_features,
    image_metrics,
    radiomics_difference,
)


def _textured(shape=(48, 56), seed=0, mean=-500.0, std=150.0):
    rng = np.random.default_rng(seed)
    img = rng.normal(mean, std, shape)
    # add some structure so the GLCM is not pure noise
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img += 200.0 * np.sin(xx / 3.0) * np.cos(yy / 5.0)
    return img.astype(np.float32)


# ---------------------------------------------------------------------------------------------- image metrics
def test_constant_offset_rmse_psnr():
    rng = np.random.default_rng(0)
    ref = rng.uniform(0.1, 0.8, (32, 40))
    m = image_metrics(ref + 0.1, ref, boxes=[[4, 4, 12, 20]])
    assert m["rmse"] == pytest.approx(0.1)
    assert m["psnr"] == pytest.approx(20.0)
    assert m["rmse_hu"] == pytest.approx(0.1 * 2048.0)
    assert m["rmse_roi"] == pytest.approx(0.1)
    assert m["psnr_roi"] == pytest.approx(20.0)
    assert m["n_boxes"] == 1
    for key in ("psnr", "ssim", "rmse", "psnr_roi", "ssim_roi", "rmse_roi"):
        assert key in m


def test_identical_images():
    ref = np.random.default_rng(1).uniform(0, 1, (30, 30)).astype(np.float32)
    m = image_metrics(ref.copy(), ref, boxes=np.array([[0, 0, 10, 10]], np.float32))
    assert m["ssim"] == pytest.approx(1.0)
    assert m["ssim_roi"] == pytest.approx(1.0)
    assert m["rmse"] == 0.0 and m["rmse_roi"] == 0.0
    assert math.isinf(m["psnr"]) and math.isinf(m["psnr_roi"])


def test_roi_metrics_depend_only_on_box_pixels():
    rng = np.random.default_rng(2)
    ref = rng.uniform(0, 1, (40, 40))
    pred = ref + rng.normal(0, 0.05, ref.shape)
    boxes = [[5, 5, 15, 17], [20.5, 22.0, 30.2, 33.0]]  # fractional edges include the partly covered pixel
    m1 = image_metrics(np.clip(pred, 0, 1), ref, boxes)
    mask = np.zeros(ref.shape, bool)
    mask[5:17, 5:15] = True
    mask[22:33, 20:31] = True
    pred2 = np.clip(pred, 0, 1).copy()
    pred2[~mask] = rng.uniform(0, 1, (~mask).sum())  # change everything outside the boxes
    ref2 = ref.copy()
    ref2[~mask] = 0.5
    m2 = image_metrics(pred2, ref2, boxes)
    for key in ("psnr_roi", "ssim_roi", "rmse_roi"):
        assert m1[key] == pytest.approx(m2[key])
    assert m1["rmse"] != pytest.approx(m2["rmse"])
    # hand-computed pooled RMSE
    expected = np.sqrt(np.mean((np.clip(pred, 0, 1) - ref)[mask] ** 2))
    assert m1["rmse_roi"] == pytest.approx(expected)


def test_overlapping_boxes_pool_pixels_once():
    ref = np.zeros((20, 20))
    pred = np.zeros((20, 20))
    pred[0:4, 0:4] = 0.2  # error only in the 4x4 overlap
    m = image_metrics(pred, ref, [[0, 0, 4, 8], [0, 0, 8, 4]])
    n_union = 4 * 8 + 4 * 8 - 16
    assert m["rmse_roi"] == pytest.approx(np.sqrt(16 * 0.04 / n_union))


def test_roi_nan_without_boxes_and_small_boxes():
    ref = np.random.default_rng(3).uniform(0, 1, (16, 16))
    for boxes in (None, np.zeros((0, 4)), []):
        m = image_metrics(ref, ref, boxes)
        assert all(math.isnan(m[k]) for k in ("psnr_roi", "ssim_roi", "rmse_roi"))
        assert m["n_boxes"] == 0
    m = image_metrics(ref + 0.1, ref, [[3, 3, 5, 5]])  # 2x2: no SSIM window fits, RMSE does
    assert math.isnan(m["ssim_roi"])
    assert m["rmse_roi"] == pytest.approx(0.1)
    m = image_metrics(ref, ref, [[3, 3, 6, 10]])  # 3 px wide -> 3x3 window
    assert m["ssim_roi"] == pytest.approx(1.0)


def test_image_metrics_errors():
    a = np.zeros((8, 8))
    with pytest.raises(EvaluationError):
        image_metrics(a, np.zeros((8, 9)))
    bad = a.copy()
    bad[0, 0] = np.nan
    with pytest.raises(LidnetError):
        image_metrics(bad, a)
    with pytest.raises(ValueError, match="hu_to_unit"):
        image_metrics(np.full((8, 8), -1000.0), a)  # HU passed by mistake
    with pytest.raises(EvaluationError):
        image_metrics(a, a, boxes=[[5, 5, 2, 2]])
    with pytest.raises(EvaluationError):
        image_metrics(np.zeros(8), np.zeros(8))


def test_box_pixel_slices():
    assert box_pixel_slices([2, 3, 5, 7], (10, 10)) == (slice(3, 7), slice(2, 5))
    assert box_pixel_slices([-3, -1, 2.2, 20], (10, 10)) == (slice(0, 10), slice(0, 3))
    assert box_pixel_slices([12, 0, 15, 3], (10, 10)) is None


# ---------------------------------------------------------------------------------------------- radiomics
def _pyradiomics_direct(img, mask, bin_width=25.0, classes=("glcm",)):
    import SimpleITK as sitk
    from radiomics import featureextractor

    ex = featureextractor.RadiomicsFeatureExtractor(binWidth=bin_width, force2D=True, force2Ddimension=0)
    ex.disableAllFeatures()
    for c in classes:
        ex.enableFeatureClassByName(c)
    res = ex.execute(
        sitk.GetImageFromArray(img[None].astype(np.float32)), sitk.GetImageFromArray(mask[None].astype(np.uint8))
    )
    return {k: float(v) for k, v in res.items() if k.startswith("original_")}


def _glcm_2d_no_force(img, mask, bin_width=25.0):
    """Independent path: a true 2D SimpleITK image (4 in-plane angles without force2D)."""
    import SimpleITK as sitk
    from radiomics import glcm

    f = glcm.RadiomicsGLCM(
        sitk.GetImageFromArray(img.astype(np.float32)), sitk.GetImageFromArray(mask.astype(np.uint8)),
        binWidth=bin_width,
    )
    f.enableAllFeatures()
    f.execute()
    return {
        "correlation": float(np.ravel(f.getCorrelationFeatureValue())[0]),
        "homogeneity": float(np.ravel(f.getIdmFeatureValue())[0]),
        "energy": float(np.ravel(f.getJointEnergyFeatureValue())[0]),
    }


def test_glcm_matches_pyradiomics_direct():
    img = _textured()
    box = [6, 8, 40, 36]
    mask = np.zeros(img.shape, np.uint8)
    mask[8:36, 6:40] = 1
    ours = glcm_features(img, box)
    assert set(ours) == set(GLCM_FEATURES)
    direct = _pyradiomics_direct(img, mask)
    for name, key in GLCM_FEATURES.items():
        assert ours[name] == pytest.approx(direct[key], rel=1e-9, abs=1e-12)
    other = _glcm_2d_no_force(img, mask)
    for name in GLCM_FEATURES:
        assert ours[name] == pytest.approx(other[name], rel=1e-9, abs=1e-12)
    # the extractor is cached: same call, same numbers
    assert glcm_features(img, box) == ours


def test_glcm_extra_classes_and_features():
    img = _textured(seed=4)
    out = glcm_features(img, [0, 0, 20, 20], feature_classes=("glcm", "firstorder"), extra_features=["original_glcm_Id"])
    assert "original_glcm_Id" in out
    assert "original_firstorder_Mean" in out
    mask = np.zeros(img.shape, np.uint8)
    mask[0:20, 0:20] = 1
    assert out["original_firstorder_Mean"] == pytest.approx(float(img[0:20, 0:20].astype(np.float32).mean()), rel=1e-5)
    assert not any(k.startswith("original_glcm_") and k != "original_glcm_Id" for k in out)
    with pytest.raises(EvaluationError):
        glcm_features(img, [0, 0, 20, 20], feature_classes=("wavelet",))


def test_glcm_flat_roi_like_pyradiomics():
    img = _textured(seed=5)
    img[10:30, 10:30] = 40.0
    mask = np.zeros(img.shape, np.uint8)
    mask[10:30, 10:30] = 1
    ours = glcm_features(img, [10, 10, 30, 30])
    direct = _pyradiomics_direct(img, mask)
    assert ours["correlation"] == pytest.approx(direct["original_glcm_Correlation"])
    assert ours["correlation"] == pytest.approx(1.0)  # pyradiomics' convention for a flat ROI
    assert ours["homogeneity"] == pytest.approx(1.0)
    assert ours["energy"] == pytest.approx(1.0)


def test_glcm_box_errors():
    img = _textured()
    with pytest.raises(EvaluationError, match="2x2"):
        glcm_features(img, [5, 5, 6, 9])
    with pytest.raises(EvaluationError, match="2x2"):
        glcm_features(img, [55, 5, 70, 9])  # clipped to one column
    with pytest.raises(EvaluationError, match="outside"):
        glcm_features(img, [100, 100, 120, 120])
    # partly outside: clipped, works
    out = glcm_features(img, [50, 40, 70, 60])
    assert np.isfinite(out["correlation"])


def test_radiomics_difference():
    ref = _textured(seed=6)
    boxes = [[2, 2, 20, 20], [25, 20, 50, 44], [30, 1, 31, 2]]  # last one too small -> skipped
    same = radiomics_difference(ref.copy(), ref, boxes)
    for k in GLCM_FEATURES:
        assert same[f"glcm_{k}_diff"] == 0.0
    assert same["n_boxes"] == 2 and len(same["skipped"]) == 1
    noisy = ref + np.random.default_rng(7).normal(0, 60, ref.shape).astype(np.float32)
    d = radiomics_difference(noisy, ref, boxes)
    for k in GLCM_FEATURES:
        per = [pb["diff"][k] for pb in d["per_box"]]
        assert d[f"glcm_{k}_diff"] == pytest.approx(np.mean(per))
        assert per[0] == pytest.approx(abs(d["per_box"][0]["image"][k] - d["per_box"][0]["reference"][k]))
    assert d["glcm_homogeneity_diff"] > 0
    empty = radiomics_difference(noisy, ref, np.zeros((0, 4)))
    assert math.isnan(empty["glcm_energy_diff"]) and empty["n_boxes"] == 0
    with pytest.raises(EvaluationError):
        radiomics_difference(noisy[:-1], ref, boxes)


# ---------------------------------------------------------------------------------------------- detection
def _pred(boxes, scores=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.full(len(boxes), 0.9, np.float32) if scores is None else np.asarray(scores, np.float32)
    return {"boxes": boxes, "scores": scores, "labels": np.ones(len(boxes), np.int64)}


def _tgt(boxes):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": np.ones(len(boxes), np.int64)}


def test_detection_ap_perfect_and_empty_images():
    import torch

    gt = [[10, 10, 30, 30], [50, 40, 70, 66]]
    preds = [_pred(gt), _pred([])]
    tgts = [_tgt(gt), _tgt([])]
    r = detection_ap(preds, tgts)
    assert r["ap50"] == pytest.approx(1.0) and r["ap75"] == pytest.approx(1.0)
    assert r["n_targets"] == 2 and r["n_images"] == 2
    # torch tensors, labels omitted
    r = detection_ap(
        [{"boxes": torch.tensor(gt, dtype=torch.float32), "scores": torch.tensor([0.8, 0.7])}],
        [{"boxes": torch.tensor(gt, dtype=torch.float32)}],
    )
    assert r["ap50"] == pytest.approx(1.0)


def test_detection_ap_iou_06():
    # gt 20x20 at x 0..20, prediction shifted by 5 px: IoU = 300 / 500 = 0.6
    r = detection_ap([_pred([[105, 100, 125, 120]])], [_tgt([[100, 100, 120, 120]])])
    assert r["ap50"] == pytest.approx(1.0)
    assert r["ap75"] == pytest.approx(0.0)


def test_detection_ap_no_predictions_and_no_targets():
    r = detection_ap([_pred([])], [_tgt([[1, 1, 9, 9]])])
    assert r["ap50"] == 0.0 and r["ap75"] == 0.0
    r = detection_ap([_pred([[1, 1, 5, 5]])], [_tgt([])])
    assert math.isnan(r["ap50"]) and math.isnan(r["ap75"]) and math.isnan(r["map"])
    assert r["n_targets"] == 0 and "no ground-truth" in r["note"]


def test_detection_ap_errors():
    with pytest.raises(EvaluationError):
        detection_ap([_pred([])], [])
    with pytest.raises(EvaluationError):
        detection_ap([{"boxes": np.zeros((2, 4)), "scores": np.zeros(1)}], [_tgt([[0, 0, 2, 2]])])
