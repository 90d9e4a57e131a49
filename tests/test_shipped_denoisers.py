"""The shipped denoisers (``src_training/weights/denoiser_cpce_{baseline,lidnet}.pt``, trained by the demo
recipe): the record beside each file matches it, they load safely, and they denoise a low-dose slice of the
evaluation case at their working size (a regression floor, not the demo's measurement)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from src_training.checkpoint_files import peek_checkpoint
from src_training.protocol import WEIGHTS_DIR, eval_case

FILES = {"baseline": "denoiser_cpce_baseline.pt", "lidnet": "denoiser_cpce_lidnet.pt"}


@pytest.fixture(scope="module")
def one_slice():
    """lung2 NDCT, one slice resampled to 256 px (1.25 mm), and its LDCT simulated at that grid (N0 = 1000)."""
    from src_training.simulation import simulate_ldct

    case = eval_case(n0=None, simulate=False, max_slices=1)
    ndct = case.ndct_hu[:1].astype(np.float32)
    ldct = simulate_ldct(ndct, case.spacing[1], 1000.0, seed=0)
    return ndct, ldct.astype(np.float32)


def _psnr(x, ref, hu_range=(-1024.0, 1024.0)):
    lo, hi = hu_range
    a = (np.clip(x, lo, hi) - lo) / (hi - lo)
    b = (np.clip(ref, lo, hi) - lo) / (hi - lo)
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


@pytest.mark.parametrize("method", ["baseline", "lidnet"])
def test_shipped_denoiser_record_and_effect(method, one_slice):
    from src_training.inference import denoise_slices, load_denoiser

    path = WEIGHTS_DIR / FILES[method]
    assert path.is_file(), f"{path} is missing (see src_training/weights/README.md to rebuild it)"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["method"] == method and record["network"] == "cpce" and "lidnet demo" in record["command"]
    torch.load(path, map_location="cpu", weights_only=True)
    info = peek_checkpoint(path)
    assert (info.kind, info.network, info.method, info.image_size) == ("denoiser", "cpce", method, 256)

    model, config = load_denoiser(path, device="cpu")
    ndct, ldct = one_slice
    out = None
    for _done, _total, batch in denoise_slices(model, ldct, tuple(config["hu_range"]), batch_size=1):
        out = batch
    assert out is not None and out.shape == ldct.shape and np.isfinite(out).all()
    gain = _psnr(out, ndct) - _psnr(ldct, ndct)
    # The demo measured +4.8 to +5.1 dB over 20 slices; an untrained or broken network loses PSNR.
    print(f"{method}: PSNR {_psnr(ldct, ndct):.2f} -> {_psnr(out, ndct):.2f} dB")
    assert gain > 2.0, gain
