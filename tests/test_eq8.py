"""Eq. 8 as the paper writes it and its normalised variant, the gradient shares of its terms, and LIDnet's T2
update against the baseline's on a fixed batch."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from src_training.gradients import term_gradients
from src_training.losses import global_perceptual_loss, recon_loss, roi_perceptual_loss
from test_training import _one_thread  # noqa: F401 - autouse fixture: one intra-op thread
from test_training import make_case, same, small_denoiser, small_detector, snapshot, tiny_config


def test_recon_reductions_on_a_hand_computed_batch():
    """Batch of N = 2 images of 2 x 2 pixels: |errors| (0.1, 0.2, 0.3, 0.4) and (0, 0, 0, 0.8).
    Paper (Eq. 8, (1/N) sum_i ||F(x_i) - y_i||_1): (1.0 + 0.8) / 2 = 0.9. Normalised (per-pixel mean): 1.8 / 8."""
    y = torch.zeros(2, 1, 2, 2)
    f = torch.tensor([[0.1, -0.2], [0.3, 0.4]]).reshape(1, 1, 2, 2)
    f = torch.cat([f, torch.tensor([[0.0, 0.0], [0.0, -0.8]]).reshape(1, 1, 2, 2)])
    assert recon_loss(f, y, reduction="paper").item() == pytest.approx(0.9)
    assert recon_loss(f, y, reduction="normalised").item() == pytest.approx(1.8 / 8)
    assert recon_loss(f, y).item() == pytest.approx(1.8 / 8)  # the per-pixel mean is the function's default
    with pytest.raises(ValueError):
        recon_loss(f, y, reduction="sum")


def test_normalised_feature_losses_are_relative_errors():
    g = torch.Generator().manual_seed(0)
    fy = OrderedDict((k, torch.randn(1, 4, s, s, generator=g)) for k, s in (("0", 16), ("1", 8), ("2", 4), ("3", 2)))
    fd = OrderedDict((k, v * 1.1) for k, v in fy.items())  # 10 % too large everywhere
    boxes = [torch.tensor([[4.0, 4.0, 40.0, 40.0]])]
    paper = roi_perceptual_loss(fd, fy, boxes, [(64, 64)], reduction="paper")
    norm = roi_perceptual_loss(fd, fy, boxes, [(64, 64)], reduction="normalised")
    assert norm.item() == pytest.approx(0.01, rel=1e-4)  # |0.1 T|^2 / |T|^2
    scaled = OrderedDict((k, 3 * v) for k, v in fy.items())
    scaled_d = OrderedDict((k, 3 * v) for k, v in fd.items())
    assert roi_perceptual_loss(scaled_d, scaled, boxes, [(64, 64)], reduction="normalised").item() == pytest.approx(
        norm.item(), rel=1e-4)  # independent of the detector's feature scale
    assert roi_perceptual_loss(scaled_d, scaled, boxes, [(64, 64)]).item() == pytest.approx(9 * paper.item(), rel=1e-4)
    assert global_perceptual_loss(fd, fy, reduction="normalised").item() == pytest.approx(0.01, rel=1e-4)


def test_gradient_shares_sum_to_one_and_match_autograd():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x = torch.randn(5, 3)
    out = net(x)
    terms = {"a": out[:, 0].pow(2).mean(), "b": 3.0 * out[:, 1].abs().mean(), "c": out.sum() * 0.0}
    params = list(net.parameters())
    tg = term_gradients(terms, params)
    assert sum(tg.shares.values()) == pytest.approx(1.0) and tg.shares["c"] == 0.0
    for name in ("a", "b"):
        out2 = net(x)
        t = {"a": out2[:, 0].pow(2).mean(), "b": 3.0 * out2[:, 1].abs().mean()}[name]
        g = torch.autograd.grad(t, params)
        assert tg.norms[name] == pytest.approx(float(torch.sqrt(sum((gi ** 2).sum() for gi in g))), rel=1e-6)
    assert tg.shares["a"] == pytest.approx(tg.norms["a"] / (tg.norms["a"] + tg.norms["b"]))
    # the summed gradient is the gradient of the sum
    net.zero_grad()
    out3 = net(x)
    (out3[:, 0].pow(2).mean() + 3.0 * out3[:, 1].abs().mean()).backward()
    for p, g in zip(params, tg.total):
        torch.testing.assert_close(g, p.grad, rtol=1e-6, atol=1e-7)


def _one_t2_step(lambda_roi: float, lambda_det: float, reduction: str = "paper"):
    from src_training.data import SliceDataset
    from src_training.training import CollaborativeTrainer

    torch.manual_seed(0)
    den, det = small_denoiser(), small_detector()
    cfg = tiny_config(t1=0, t2=1, t3=0, rounds=1, lambda_roi=lambda_roi, lambda_det=lambda_det,
                      loss_reduction=reduction)
    tr = CollaborativeTrainer(cfg, SliceDataset([make_case()], cfg.hu_range), denoiser=den, detector=det,
                              device="cpu")
    events = [e for e in tr.run() if e.event == "step"]
    return snapshot(tr.denoiser), events[-1]


def _one_baseline_step(reduction: str = "paper"):
    from src_training.data import SliceDataset
    from src_training.training import BaselineTrainer

    torch.manual_seed(0)
    den = small_denoiser()
    small_detector()  # the same torch RNG consumption as the LIDnet run, so both denoisers start equal
    cfg = tiny_config(t1=0, t2=1, t3=0, rounds=1, loss_reduction=reduction)
    tr = BaselineTrainer(cfg, SliceDataset([make_case()], cfg.hu_range), denoiser=den, device="cpu")
    events = [e for e in tr.run() if e.event == "step"]
    return snapshot(tr.denoiser), events[-1]


def test_lidnet_update_differs_from_the_baseline_only_through_its_extra_terms():
    """On one fixed batch from the same initial denoiser: with lambda_1 = lambda_2 = 0 LIDnet's T2 update IS the
    baseline's; with the paper's weights it is a different update, and the progress event carries the shares."""
    base, base_ev = _one_baseline_step()
    off, off_ev = _one_t2_step(0.0, 0.0)
    on, on_ev = _one_t2_step(5.0, 5.0)
    assert base_ev.grad_shares == {"rec": 1.0}
    for k in base:
        torch.testing.assert_close(off[k], base[k], rtol=1e-6, atol=1e-8)
    assert not same(on, base)
    diff = max(float((on[k] - base[k]).abs().max()) for k in base)
    assert diff > 1e-6
    shares = on_ev.grad_shares
    assert set(shares) == {"rec", "roi", "det"} and sum(shares.values()) == pytest.approx(1.0)
    assert shares["roi"] > 0 and shares["det"] > 0
    assert off_ev.grad_shares["roi"] == 0.0 and off_ev.grad_shares["det"] == 0.0
    # the event's losses: rec under the paper's reduction is the per-image SUM of |F(x) - y|
    assert on_ev.losses["rec"] > 10 * _one_t2_step(5.0, 5.0, "normalised")[1].losses["rec"]


def test_lesion_centred_crops_contain_the_lesion():
    from src_training.data import SliceDataset

    case = make_case(n_slices=2, size=64)
    ds = SliceDataset([case], crop_size=24, seed=0, lesion_crop_fraction=1.0)
    uniform = SliceDataset([case], crop_size=24, seed=0)
    hits = sum(len(ds[(0, e)][2]["boxes"]) > 0 for e in range(20))
    hits_uniform = sum(len(uniform[(0, e)][2]["boxes"]) > 0 for e in range(20))
    assert hits == 20 and hits_uniform < 20
    np.testing.assert_array_equal(ds[(0, 3)][0].numpy(), ds[(0, 3)][0].numpy())
    with pytest.raises(Exception):
        SliceDataset([case], crop_size=24, lesion_crop_fraction=1.5)


def test_lidnet_denoiser_sees_exactly_the_baselines_batches():
    """T3 draws from the detector's own stream, so LIDnet's denoiser steps (over 2 rounds, with T3 between) get
    the same crops in the same order as the baseline's steps with the same seed."""
    from src_training.data import SliceDataset
    from src_training.training import BaselineTrainer, CollaborativeTrainer

    seen: dict[str, list[torch.Tensor]] = {"lidnet": [], "baseline": []}

    def recorder(trainer, key, phases):
        original = trainer._train_step

        def step(phase, batch):
            if phase.name in phases:
                seen[key].append(batch[1].clone())
            return original(phase, batch)

        trainer._train_step = step

    cfg = tiny_config(t1=1, t2=2, t3=2, rounds=2, crop_size=32, lesion_crop_fraction=0.5)
    ds = lambda: SliceDataset([make_case(n_slices=6)], cfg.hu_range, crop_size=32, seed=cfg.seed,  # noqa: E731
                              lesion_crop_fraction=0.5)
    lid = CollaborativeTrainer(cfg, ds(), denoiser=small_denoiser(), detector=small_detector(), device="cpu")
    recorder(lid, "lidnet", ("T2",))
    lid.train_all()
    base = BaselineTrainer(cfg, ds(), denoiser=small_denoiser(), device="cpu")
    recorder(base, "baseline", ("baseline",))
    base.train_all()
    assert len(seen["lidnet"]) == len(seen["baseline"]) == 4
    for a, b in zip(seen["lidnet"], seen["baseline"]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
