"""Tests of the fast inference path, the fused detection pass and the out-of-memory fallback
(src_training.inference, LesionDetector.detect_and_rpn). No timings here: speed is measured by
benchmarks/bench.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from src_training import inference
from src_training.inference import (
    InferenceMemoryError,
    InferenceMemoryWarning,
    denoise_slices,
    denoise_volume,
    detect_slices,
    prepare_denoiser,
)
from src_training.models.denoisers import DENOISERS, build_denoiser

from test_inference import _one_thread, _volume  # noqa: F401 - shared helpers (_one_thread: autouse fixture)

HU_RANGE = (-1024.0, 1024.0)


def _randomised(model: nn.Module, seed=0) -> nn.Module:
    """Non-identity weights (the last layers are zero-initialised, which would hide differences)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model.eval()


SMALL = {"redcnn": {"filters": 8}, "cpce": {"filters": 8}}


@pytest.mark.parametrize("name", sorted(DENOISERS))
def test_fast_path_matches_plain_path(name):
    torch.manual_seed(0)
    model = _randomised(build_denoiser(name, **SMALL.get(name, {})))
    vol = _volume(z=2, size=28)
    fast = denoise_volume(model, vol, HU_RANGE, batch_size=2)
    plain = denoise_volume(model, vol, HU_RANGE, batch_size=2, fast=False)
    assert fast.shape == plain.shape == vol.shape and fast.dtype == plain.dtype == np.float32
    assert np.abs(plain - np.clip(vol, *HU_RANGE)).max() > 1.0  # the network really changes the image
    np.testing.assert_allclose(fast, plain, atol=0.05)  # HU; 2.4e-5 in [0, 1] units
    one = denoise_volume(model, vol[0], HU_RANGE)
    assert one.shape == vol[0].shape and one.dtype == np.float32
    np.testing.assert_allclose(one, plain[0], atol=0.05)


def test_prepare_denoiser_swaps_deconvs_caches_and_follows_weight_updates():
    model = _randomised(build_denoiser("cpce", filters=8))
    fast = prepare_denoiser(model, "cpu")
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in fast.modules())
    assert any(isinstance(m, nn.ConvTranspose2d) for m in model.modules())  # the user's model is untouched
    assert prepare_denoiser(model, "cpu") is fast
    x = torch.rand(2, 1, 20, 24)
    with torch.no_grad():
        model.deconv4.weight.mul_(3.0)  # in-place update, as an optimizer step does
    again = prepare_denoiser(model, "cpu")
    assert again is not fast
    with torch.inference_mode():
        torch.testing.assert_close(again(x), model(x), atol=1e-5, rtol=0)


def test_prepare_denoiser_falls_back_to_plain_model_when_an_optimisation_fails(monkeypatch, caplog):
    model = _randomised(build_denoiser("cpce", filters=8))

    def broken(_module):
        raise RuntimeError("oneDNN missing")

    monkeypatch.setattr(inference, "_swap_deconvs", broken)
    with caplog.at_level(logging.WARNING, logger="src_training.inference"):
        out = prepare_denoiser(model, "cpu")
    assert out is model
    assert "oneDNN missing" in caplog.text
    vol = _volume(z=2, size=24)
    np.testing.assert_allclose(
        denoise_volume(model, vol, HU_RANGE), denoise_volume(model, vol, HU_RANGE, fast=False), atol=1e-4
    )


def test_bad_precision_raises():
    model = build_denoiser("cpce", filters=4)
    with pytest.raises(ValueError, match="precision"):
        denoise_volume(model, _volume(z=1, size=16), HU_RANGE, precision="int8")


@pytest.fixture(scope="module")
def detector():
    from src_training.models.detector import build_detector

    torch.manual_seed(0)
    # fewer RPN proposals than the default 1000 keep the ROI box head cheap in tests
    return build_detector("resnet18", rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100).eval()


def test_fused_detect_equals_two_passes(detector):
    det = detector
    x = torch.rand(2, 1, 48, 40, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        dets_ref = det.detect(x, score_thresh=0.0)
        rpn_ref = det.rpn_topk(x, 5)
        dets, rpn = det.detect_and_rpn(x, 5, score_thresh=0.0)
    assert not det.training
    for i in range(2):
        assert dets[i]["boxes"].shape[0] > 0
        for key in ("boxes", "scores", "labels"):
            torch.testing.assert_close(dets[i][key], dets_ref[i][key], atol=0, rtol=0)
        torch.testing.assert_close(rpn.proposals[i], rpn_ref.proposals[i], atol=0, rtol=0)
        torch.testing.assert_close(rpn.objectness[i], rpn_ref.objectness[i], atol=0, rtol=0)
    assert rpn.image_sizes == rpn_ref.image_sizes == [(48, 40), (48, 40)]
    torch.testing.assert_close(rpn.features["0"], rpn_ref.features["0"], atol=0, rtol=0)

    # detect_slices uses the fused pass; it must give what the two separate passes give
    vol = np.stack([np.asarray(x[i, 0]) * 2048.0 - 1024.0 for i in range(2)]).astype(np.float32)
    res = list(detect_slices(det, vol, HU_RANGE, k=5, score_thresh=0.0, batch_size=2))
    for i, r in enumerate(res):
        np.testing.assert_allclose(r["boxes"], dets_ref[i]["boxes"].numpy(), atol=1e-3)
        np.testing.assert_allclose(r["proposals"], rpn_ref.proposals[i].numpy(), atol=1e-3)


class _OOMForBatches(nn.Module):
    """Wraps a denoiser; raises torch.OutOfMemoryError for batches of more than ``max_batch`` slices."""

    def __init__(self, inner: nn.Module, max_batch: int = 1):
        super().__init__()
        self.inner = inner
        self.max_batch = max_batch
        self.batches: list[int] = []

    def forward(self, x):
        self.batches.append(int(x.shape[0]))
        if x.shape[0] > self.max_batch:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.inner(x)


@pytest.mark.parametrize("fast", [True, False])
def test_denoise_oom_halves_batch_down_to_one(fast):
    inner = _randomised(build_denoiser("cpce", filters=8))
    model = _OOMForBatches(inner, max_batch=1).eval()
    vol = _volume(z=5, size=24)
    messages: list[str] = []
    with pytest.warns(InferenceMemoryWarning, match="slice"):
        steps = list(denoise_slices(model, vol, HU_RANGE, batch_size=4, fast=fast, on_message=messages.append))
    assert [d for d, _, _ in steps] == [1, 2, 3, 4, 5] and all(t == 5 for _, t, _ in steps)
    out = np.concatenate([b for _, _, b in steps])
    np.testing.assert_allclose(out, denoise_volume(inner, vol, HU_RANGE, fast=False), atol=0.05)
    assert len(messages) == 2 and "4 slices" in messages[0] and "2 slices" in messages[1]
    assert "1 slice(s) at a time" in messages[1]


def test_denoise_oom_at_one_slice_on_cpu_raises_readable_error():
    model = _OOMForBatches(build_denoiser("cpce", filters=4), max_batch=0).eval()
    with pytest.warns(InferenceMemoryWarning), pytest.raises(InferenceMemoryError, match="Close other"):
        denoise_volume(model, _volume(z=2, size=16), HU_RANGE, batch_size=2, fast=False)


def test_device_oom_falls_back_to_cpu():
    """The batching helper used by denoise_slices/detect_slices: on a (pretend) GPU every call runs out
    of memory; the batch is halved to 1, then the work moves to the CPU."""
    calls: list[tuple[int, int, str]] = []
    moved: list[bool] = []

    def run(start, stop, dev):
        calls.append((start, stop, dev.type))
        if dev.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return list(range(start, stop))

    messages: list[str] = []
    with pytest.warns(InferenceMemoryWarning, match="CPU"):
        out = list(inference._oom_batches(5, 2, torch.device("cuda"), run, messages.append, "denoising",
                                          lambda: moved.append(True)))
    assert [r for _, _, r in out] == [[0, 1], [2, 3], [4]]
    assert calls == [(0, 2, "cuda"), (0, 1, "cuda"), (0, 2, "cpu"), (2, 4, "cpu"), (4, 5, "cpu")]
    assert moved == [True]
    assert any("on the CPU" in m for m in messages)

    def other_error(start, stop, dev):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        list(inference._oom_batches(3, 2, torch.device("cpu"), other_error, None, "denoising"))


def test_detect_oom_halves_batch(monkeypatch, detector):
    det = detector
    vol = _volume(z=3, size=40)
    ref = list(detect_slices(det, vol, HU_RANGE, k=3, score_thresh=0.0, batch_size=1))
    original = det.detect_and_rpn
    sizes: list[int] = []

    def oom_for_batches(images, k=5, score_thresh=0.05):
        sizes.append(int(images.shape[0]))
        if images.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return original(images, k, score_thresh)

    monkeypatch.setattr(det, "detect_and_rpn", oom_for_batches)
    messages: list[str] = []
    with pytest.warns(InferenceMemoryWarning):
        res = list(detect_slices(det, vol, HU_RANGE, k=3, score_thresh=0.0, batch_size=3, on_message=messages.append))
    assert [r["slice"] for r in res] == [0, 1, 2] and [r["done"] for r in res] == [1, 2, 3]
    assert sizes[0] == 3 and 1 in sizes and messages
    for a, b in zip(res, ref):
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-4)
        np.testing.assert_allclose(a["objectness"], b["objectness"], atol=1e-5)
