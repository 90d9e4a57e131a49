"""The shipped NDCT detectors (``src_training/weights/``) and the pretraining data: safe loading, size, the
recipe beside each file, and an AP floor on 4 NDCT slices of the evaluation case (a regression test)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from src_training.protocol import DETECTOR_FILE, JUDGE_FILE, WEIGHTS_DIR, eval_case


@pytest.fixture(scope="module")
def four_slices():
    return eval_case(n0=None, simulate=False, max_slices=4)


@pytest.mark.parametrize("name, arch", [(DETECTOR_FILE, "faster_rcnn"), (JUDGE_FILE, "fcos")])
def test_shipped_detector_loads_safely_and_detects(name, arch, four_slices):
    from src_training.inference import load_detector
    from src_training.pretrain import detector_ap

    path = WEIGHTS_DIR / name
    assert path.is_file(), f"{path} is missing: lidnet pretrain-detector --arch {arch} --out {path}"
    assert path.stat().st_size < 40e6
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["kind"] == "detector" and ckpt["arch"] == arch and ckpt["storage"] == "float16"
    assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["recipe"]["arch"] == arch and record["sha256"] and "lidnet pretrain-detector" in record["command"]
    assert record["measured"]["eval_all_lesions"]["ap50"] >= 0.75  # the target the issue set, as measured
    det, cfg = load_detector(path, device="cpu")
    assert cfg["arch"] == arch
    ap = detector_ap(det, four_slices)
    # Regression floor on 4 NDCT slices of lung2 (synthetic nodules + the real tumour): well below what the
    # shipped files score there, far above what an untrained detector scores (0).
    assert ap["ap50"] >= 0.5, ap["ap50"]
    assert ap["n_lesions"] >= 10


def test_fresh_nodule_crops_are_deterministic_and_well_formed():
    from src_training.pretrain import FreshNoduleCrops
    from src_training.sample import load_sample_case

    c = load_sample_case("lung1")
    ds = FreshNoduleCrops([(c.ndct.hu[:6], c.ndct.spacing, {})], image_size=256, crop_size=64, seed=3,
                          items_per_epoch=16)
    a = ds[(2, 5)]
    b = ds[(2, 5)]
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[2]["boxes"], b[2]["boxes"])
    assert not torch.equal(ds[(2, 6)][0], a[0])  # fresh crop and nodules every epoch
    n_boxes = 0
    for i in range(16):
        img, img2, t = ds[(i, 0)]
        assert img.shape == (1, 64, 64) and img is img2 and 0 <= float(img.min()) and float(img.max()) <= 1
        bx = t["boxes"].numpy()
        assert np.all(bx[:, 2] > bx[:, 0]) and np.all(bx[:, 3] > bx[:, 1])
        assert np.all(bx >= 0) and np.all(bx <= 64)
        n_boxes += len(bx)
    assert n_boxes > 0
