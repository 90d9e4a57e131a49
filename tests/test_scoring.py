"""The evaluation protocol (:mod:`src_training.evaluation.scoring`) on a hand-made case whose AP, PSNR and
radiomics differences are known in closed form.

The case: 4 slices of 64 x 64 pixels, air (-1000 HU) with one 12 x 12 lesion per slice whose texture is a
checkerboard of 0 and 30 HU (two adjacent 25 HU grey-level bins). A rule-based detector finds the lesion by
thresholding and also reports a false positive with a higher score on every slice.

Known values:
- AP: N false positives scored 0.9 rank above the N true positives scored 0.8; precision at the k-th true
  positive is k / (N + k), so COCO's interpolated precision is N / 2N = 0.5 at every recall: AP-50 = AP-75 = 0.5.
- PSNR: a uniform shift of 20.48 HU on the [0, 1] scale of the (-1024, 1024) HU range is an error of 0.01:
  PSNR = 40 dB, RMSE = 0.01, RMSE in HU = 20.48, on every slice.
- Radiomics: the image itself differs from the NDCT by 0 in every GLCM feature. A lesion made uniform: the
  checkerboard's symmetric GLCM averaged over the 4 in-plane angles has energy 0.5, Idm 0.75 and correlation
  0 (-1 horizontally / vertically, +1 diagonally); a one-grey-level ROI has energy 1, Idm 1 and correlation 1
  (pyradiomics' value for a flat region), so the differences are 0.5, 0.25 and 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from src_training.data.cases import CaseArrays
from src_training.evaluation import METRICS, compare, score_volume, summarize
from src_training.protocol import Detectors
from src_training.windowing import unit_to_hu

HU_RANGE = (-1024.0, 1024.0)
N, S = 4, 64
LESION = (20, 24, 32, 36)  # x0, y0, x1, y1: 12 x 12 pixels
FALSE_POSITIVE = (2.0, 2.0, 10.0, 10.0)


def _case() -> CaseArrays:
    ndct = np.full((N, S, S), -1000.0, np.float32)
    x0, y0, x1, y1 = LESION
    yy, xx = np.mgrid[y0:y1, x0:x1]
    ndct[:, y0:y1, x0:x1] = np.where((yy + xx) % 2 == 0, 0.0, 30.0)
    boxes = {z: np.array([LESION], np.float32) for z in range(N)}
    return CaseArrays("hand-made", ndct, ndct.copy(), boxes=boxes, spacing=(1.0, 1.0, 1.0),
                      real_boxes={z: b.copy() for z, b in boxes.items()})


class RuleDetector(nn.Module):
    """Finds the pixels above -500 HU and boxes them (score 0.8), plus a fixed false positive (score 0.9).

    ``detect(images (B, 1, H, W) in [0, 1], score_thresh) -> list of {boxes, scores, labels}`` as
    :func:`src_training.inference.detect_slices` calls it."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def detect(self, images: torch.Tensor, score_thresh: float = 0.05):
        out = []
        for img in images:
            hu = unit_to_hu(img[0].numpy(), HU_RANGE)
            ys, xs = np.nonzero(hu > -500)
            boxes = [FALSE_POSITIVE]
            if len(ys):
                boxes.append((xs.min(), ys.min(), xs.max() + 1.0, ys.max() + 1.0))
            scores = [0.9, 0.8][: len(boxes)]
            keep = [i for i, s in enumerate(scores) if s >= score_thresh]
            out.append({"boxes": torch.tensor([boxes[i] for i in keep], dtype=torch.float32).reshape(-1, 4),
                        "scores": torch.tensor([scores[i] for i in keep], dtype=torch.float32),
                        "labels": torch.ones(len(keep), dtype=torch.int64)})
        return out


@pytest.fixture(scope="module")
def scored():
    case = _case()
    det = RuleDetector()
    detectors = Detectors(own=det, judge=det, own_path=Path("rule"), judge_path=Path("rule"))
    shifted = case.ndct_hu + np.float32(20.48)
    flat = case.ndct_hu.copy()
    x0, y0, x1, y1 = LESION
    flat[:, y0:y1, x0:x1] = 0.0
    return case, {name: score_volume(vol, case, detectors, HU_RANGE)
                  for name, vol in (("ndct", case.ndct_hu), ("shifted", shifted), ("flat", flat))}


def test_ap_is_one_half_with_a_higher_scored_false_positive_per_slice(scored):
    _, s = scored
    for name in ("ndct", "shifted", "flat"):
        assert s[name].ap["ap50"] == pytest.approx(0.5, abs=1e-6), name
        assert s[name].ap["ap75"] == pytest.approx(0.5, abs=1e-6), name
        assert s[name].ap["own_ap50"] == pytest.approx(0.5, abs=1e-6), name
    summary = summarize(s["ndct"], n_boot=200, seed=0)
    assert summary["ap50"] == pytest.approx(0.5, abs=1e-6)
    ci = summary["ap50_ci"]
    assert ci["low"] <= 0.5 <= ci["high"]  # every slice has the same matches: the interval is the point
    assert ci["high"] - ci["low"] < 1e-6


def test_psnr_of_a_uniform_shift_is_known(scored):
    _, s = scored
    ps = s["shifted"].per_slice
    np.testing.assert_allclose(ps["psnr"], 40.0, atol=1e-3)
    np.testing.assert_allclose(ps["rmse"], 0.01, rtol=1e-4)
    np.testing.assert_allclose(ps["rmse_hu"], 20.48, rtol=1e-4)
    np.testing.assert_allclose(ps["psnr_roi"], 40.0, atol=1e-3)
    assert np.all(np.isinf(s["ndct"].per_slice["psnr"]))  # identical images
    summary = summarize(s["shifted"], n_boot=200, seed=0)
    assert summary["psnr"] == pytest.approx(40.0, abs=1e-3)
    assert summary["n_slices"] == N and summary["n_lesions"] == N


def test_radiomics_differences_are_known(scored):
    _, s = scored
    for k in ("glcm_correlation_diff", "glcm_homogeneity_diff", "glcm_energy_diff"):
        np.testing.assert_allclose(s["ndct"].per_lesion[k], 0.0, atol=1e-9, err_msg=k)
    flat = s["flat"].per_lesion
    # pyradiomics' numerical guards (an epsilon in the normalisation) leave ~2e-5 of the closed form
    np.testing.assert_allclose(flat["glcm_energy_diff"], 0.5, atol=1e-4)
    np.testing.assert_allclose(flat["glcm_homogeneity_diff"], 0.25, atol=1e-4)
    np.testing.assert_allclose(flat["glcm_correlation_diff"], 1.0, atol=1e-4)
    np.testing.assert_allclose(s["flat"].per_real_lesion["glcm_energy_diff"], 0.5, atol=1e-4)


def test_paired_comparison_reads_the_known_differences(scored):
    _, s = scored
    comp = compare(s["ndct"], s["flat"], n_boot=200, seed=0)
    assert set(comp) == {m.key for m in METRICS}
    # radiomics: flat - ndct = +0.5 energy difference on every lesion -> "higher" (worse: lower is better)
    assert comp["glcm_energy_diff"].diff.value == pytest.approx(0.5, abs=1e-4)
    assert comp["glcm_energy_diff"].verdict == "higher"
    # detection is the same for both: no difference
    assert comp["ap50"].diff.value == pytest.approx(0.0, abs=1e-9)
    assert comp["ap50"].verdict == "no difference"
