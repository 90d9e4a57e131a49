"""Tests of src_training.inference (checkpoint loading, batched denoising, detection)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src_training.checkpoint import save_checkpoint
from src_training.config import TrainConfig
from src_training.errors import CheckpointError, CTLoadError
from src_training.inference import denoise_slices, denoise_volume, detect_slices, load_denoiser, load_detector

HU_RANGE = (-1024.0, 1024.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core runner, two OpenMP threads are much slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """denoiser.pt (identity-initialised CPCE) and detector.pt (untrained resnet18) in the contract format."""
    from src_training.models.denoisers import build_denoiser
    from src_training.models.detector import build_detector

    d = tmp_path_factory.mktemp("ckpt")
    cfg = TrainConfig(denoiser="cpce", detector_backbone="resnet18").to_dict()
    torch.manual_seed(0)
    den = build_denoiser("cpce")
    save_checkpoint(d / "denoiser.pt", {"kind": "denoiser", "model": "cpce", "state_dict": den.state_dict(),
                                        "config": cfg, "method": "lidnet", "step": 3})
    det = build_detector("resnet18")
    save_checkpoint(d / "detector.pt", {"kind": "detector", "backbone": "resnet18", "state_dict": det.state_dict(),
                                        "config": cfg, "step": 3, "hparams": det.hparams})
    return d


def _volume(z=3, size=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1100, 1200, size=(z, size, size)).astype(np.float32)


def test_load_denoiser_and_denoise_shapes(checkpoints):
    model, cfg = load_denoiser(checkpoints / "denoiser.pt", device="cpu")
    assert not model.training
    assert cfg["hu_range"] == list(HU_RANGE) and cfg["denoiser"] == "cpce" and cfg["method"] == "lidnet"
    vol = _volume()
    out = denoise_volume(model, vol, cfg["hu_range"], batch_size=2)
    assert out.shape == vol.shape and out.dtype == np.float32
    # the zero-initialised residual denoiser is the identity on [0, 1]: output = input clipped to hu_range
    np.testing.assert_allclose(out, np.clip(vol, *HU_RANGE), atol=0.05)
    one = denoise_volume(model, vol[1], cfg["hu_range"])
    assert one.shape == vol[1].shape and one.dtype == np.float32
    np.testing.assert_allclose(one, out[1], atol=1e-3)


def test_denoise_slices_yields_progress_in_batches(checkpoints):
    model, cfg = load_denoiser(checkpoints / "denoiser.pt", device="cpu")
    steps = list(denoise_slices(model, _volume(z=5), cfg["hu_range"], batch_size=2))
    assert [(d, t) for d, t, _ in steps] == [(2, 5), (4, 5), (5, 5)]
    assert [b.shape for _, _, b in steps] == [(2, 40, 40), (2, 40, 40), (1, 40, 40)]
    assert all(b.dtype == np.float32 for _, _, b in steps)


def test_bad_input_raises(checkpoints):
    model, _ = load_denoiser(checkpoints / "denoiser.pt", device="cpu")
    bad = _volume()
    bad[0, 0, 0] = np.nan
    with pytest.raises(CTLoadError):
        denoise_volume(model, bad, HU_RANGE)
    with pytest.raises(CTLoadError):
        denoise_volume(model, np.zeros(5, np.float32), HU_RANGE)


def test_wrong_kind_and_corrupt_files_raise_checkpoint_error(checkpoints, tmp_path):
    with pytest.raises(CheckpointError, match="detector"):
        load_denoiser(checkpoints / "detector.pt", device="cpu")
    with pytest.raises(CheckpointError, match="denoiser"):
        load_detector(checkpoints / "denoiser.pt", device="cpu")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_denoiser(junk, device="cpu")
    with pytest.raises(CheckpointError):
        load_denoiser(tmp_path / "missing.pt", device="cpu")
    bad = tmp_path / "bad_weights.pt"
    save_checkpoint(bad, {"kind": "denoiser", "model": "redcnn",
                          "state_dict": torch.load(checkpoints / "denoiser.pt", weights_only=True)["state_dict"]})
    with pytest.raises(CheckpointError):
        load_denoiser(bad, device="cpu")


def test_load_detector_and_detect_slices(checkpoints):
    det, cfg = load_detector(checkpoints / "detector.pt", device="cpu")
    assert not det.training and cfg["detector_backbone"] == "resnet18"
    vol = _volume(z=3, size=64)
    results = list(detect_slices(det, vol, cfg["hu_range"], k=4, score_thresh=0.0, slices=[2, 0], batch_size=2))
    assert [r["slice"] for r in results] == [2, 0]
    assert [(r["done"], r["total"]) for r in results] == [(1, 2), (2, 2)]
    for r in results:
        n = r["boxes"].shape[0]
        assert r["boxes"].shape == (n, 4) and r["boxes"].dtype == np.float32
        assert r["scores"].shape == (n,) and r["labels"].shape == (n,) and r["labels"].dtype == np.int64
        assert r["proposals"].shape[1] == 4 and r["proposals"].shape[0] <= 4
        assert r["objectness"].shape == (r["proposals"].shape[0],)
        assert np.all(np.diff(r["objectness"]) <= 1e-6)
    with pytest.raises(IndexError):
        list(detect_slices(det, vol, cfg["hu_range"], slices=[5]))
