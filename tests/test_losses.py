"""Tests of src_training.losses (LIDnet Eq. 4 ROI perceptual loss, Eq. 8 total loss)."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torchvision.ops import roi_align

from src_training.errors import ConfigError
from src_training.losses import (
    detection_loss,
    lidnet_generator_loss,
    recon_loss,
    roi_perceptual_loss,
)

D = 8  # feature channels in the synthetic tests


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core runner, two OpenMP threads are much slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _feats(size: int = 64, seed: int = 0, d: int = D) -> "OrderedDict[str, torch.Tensor]":
    """Random FPN-like features for a batch of 1 image of size x size (strides 4, 8, 16, 32, 64)."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for name, stride in (("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64)):
        s = max(1, size // stride)
        out[name] = torch.randn(1, d, s, s, generator=g)
    return out


def _clone(feats):
    return OrderedDict((k, v.clone()) for k, v in feats.items())


def test_zero_for_identical_features():
    f = _feats()
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 36.0], [0.0, 0.0, 64.0, 64.0]])]
    loss = roi_perceptual_loss(f, _clone(f), boxes, [(64, 64)])
    assert loss.item() == 0.0


def test_positive_and_differentiable_wrt_denoised_features_only():
    fd = OrderedDict((k, v.requires_grad_(True)) for k, v in _feats(seed=1).items())
    fn = OrderedDict((k, v.requires_grad_(True)) for k, v in _feats(seed=2).items())
    loss = roi_perceptual_loss(fd, fn, [torch.tensor([[8.0, 8.0, 40.0, 36.0]])], [(64, 64)])
    assert loss.item() > 0
    loss.backward()
    assert fd["0"].grad is not None and fd["0"].grad.abs().sum() > 0
    assert fn["0"].grad is None  # T(y) is a constant


@pytest.mark.parametrize(
    "box, level, stride",
    [
        ((8.0, 8.0, 40.0, 36.0), "0", 4),  # sqrt(area) ~ 30 px -> FPN level 2 ('0', stride 4)
        ((16.0, 32.0, 176.0, 224.0), "1", 8),  # sqrt(area) ~ 175 px -> level 3 ('1', stride 8)
    ],
)
def test_matches_hand_computation_for_one_box(box, level, stride):
    size = 256
    fd, fn = _feats(size, seed=3), _feats(size, seed=4)
    b = torch.tensor([box])
    loss = roi_perceptual_loss(fd, fn, [b], [(size, size)])
    rois = torch.cat([torch.zeros(1, 1), b], dim=1)
    pa = roi_align(fd[level], rois, output_size=7, spatial_scale=1.0 / stride, sampling_ratio=2)
    pb = roi_align(fn[level], rois, output_size=7, spatial_scale=1.0 / stride, sampling_ratio=2)
    w = h = 7
    hand = ((pa - pb) ** 2).sum() / (w * h * D)  # ||.||_F^2 / (w h d), Eq. 4 with K = 1
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)


def test_constant_difference_gives_its_square_and_mean_over_boxes():
    fn = _feats(64, seed=5)
    fd = OrderedDict((k, v + 0.5) for k, v in fn.items())
    boxes = [torch.tensor([[8.0, 8.0, 40.0, 36.0], [2.0, 30.0, 20.0, 60.0]]), torch.tensor([[10.0, 10.0, 30.0, 30.0]])]
    fd2 = OrderedDict((k, torch.cat([v, v])) for k, v in fd.items())
    fn2 = OrderedDict((k, torch.cat([v, v])) for k, v in fn.items())
    loss = roi_perceptual_loss(fd2, fn2, boxes, [(64, 64), (64, 64)])
    assert loss.item() == pytest.approx(0.25, rel=1e-5)


def test_only_features_inside_the_proposals_matter():
    size = 64
    fd, fn = _feats(size, seed=6), _feats(size, seed=7)
    box = (8.0, 8.0, 40.0, 36.0)  # level '0', stride 4: feature cells x 2..10, y 2..9
    base = roi_perceptual_loss(fd, fn, [torch.tensor([box])], [(size, size)]).item()

    # Perturb everything outside the box's footprint on level '0' (one cell of margin for the bilinear
    # interpolation) and all other levels, in both inputs.
    x0, y0, x1, y1 = (int(math.floor(v / 4)) for v in box)
    mask = torch.ones(size // 4, size // 4, dtype=torch.bool)
    mask[y0:y1 + 2, x0:x1 + 2] = False
    g = torch.Generator().manual_seed(8)
    fd_p, fn_p = _clone(fd), _clone(fn)
    for f in (fd_p, fn_p):
        f["0"][..., mask] += 100.0 * torch.randn(f["0"][..., mask].shape, generator=g)
        for k in ("1", "2", "3", "pool"):
            f[k] += 100.0 * torch.randn(f[k].shape, generator=g)
    pert = roi_perceptual_loss(fd_p, fn_p, [torch.tensor([box])], [(size, size)]).item()
    assert pert == pytest.approx(base, rel=1e-6, abs=1e-9)

    # ... while a change inside the box changes the loss.
    fd_in = _clone(fd)
    fd_in["0"][..., 5, 5] += 10.0
    inside = roi_perceptual_loss(fd_in, fn, [torch.tensor([box])], [(size, size)]).item()
    assert inside != pytest.approx(base, rel=1e-3)


def test_zero_proposals_give_zero_with_grad():
    fd = OrderedDict((k, v.requires_grad_(True)) for k, v in _feats(seed=9).items())
    loss = roi_perceptual_loss(fd, _feats(seed=10), [torch.zeros(0, 4)], [(64, 64)])
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert fd["0"].grad is not None


def test_bad_inputs_raise():
    f = _feats()
    with pytest.raises(ValueError):
        roi_perceptual_loss(f, f, [torch.zeros(0, 4), torch.zeros(0, 4)], [(64, 64)] * 2)
    g = _clone(f)
    del g["3"]
    with pytest.raises(ValueError):
        roi_perceptual_loss(g, g, [torch.zeros(0, 4)], [(64, 64)])


def test_recon_and_detection_loss():
    a = torch.zeros(2, 1, 4, 4)
    b = torch.full((2, 1, 4, 4), 0.25)
    assert recon_loss(a, b).item() == pytest.approx(0.25)
    with pytest.raises(ValueError):
        recon_loss(a, b[:1])
    d = {"loss_classifier": torch.tensor(1.0), "loss_box_reg": torch.tensor(2.0),
         "loss_objectness": torch.tensor(3.0), "loss_rpn_box_reg": torch.tensor(4.0)}
    assert detection_loss(d).item() == pytest.approx(10.0)
    with pytest.raises(ValueError):
        detection_loss({})


def test_eq8_weights():
    rec, roi, det = torch.tensor(1.0, requires_grad=True), torch.tensor(2.0), torch.tensor(3.0)
    total, parts = lidnet_generator_loss(rec, roi, det)  # paper: lambda_1 = lambda_2 = 5
    assert total.item() == pytest.approx(1 + 5 * 2 + 5 * 3)
    assert parts == pytest.approx({"total": 26.0, "rec": 1.0, "roi": 2.0, "det": 3.0})
    total, _ = lidnet_generator_loss(rec, roi, det, lambda_roi=0.5, lambda_det=0.0)
    assert total.item() == pytest.approx(2.0)
    total.backward()
    assert rec.grad.item() == 1.0
    with pytest.raises(ConfigError):
        lidnet_generator_loss(rec, roi, det, lambda_roi=-1.0)


def test_roi_loss_gradient_reaches_the_denoiser_through_the_detector():
    from src_training.models.denoisers import build_denoiser
    from src_training.models.detector import build_detector, set_frozen

    torch.manual_seed(0)
    den = build_denoiser("cpce", filters=8)
    det = build_detector("resnet18", rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
                         box_batch_size_per_image=16)
    det.train()
    set_frozen(det, True)
    x = torch.rand(1, 1, 64, 64)
    y = torch.rand(1, 1, 64, 64)
    targets = [{"boxes": torch.tensor([[20.0, 20.0, 36.0, 34.0]]), "labels": torch.tensor([1])}]
    out = den(x)
    _, rpn = det.losses_and_rpn(out, targets, 5)
    assert 0 < rpn.proposals[0].shape[0] <= 5
    with torch.no_grad():
        feat_y = det.rpn_topk(y, 5).features
    loss = roi_perceptual_loss(rpn.features, feat_y, rpn.proposals, rpn.image_sizes)
    assert loss.item() > 0
    loss.backward()
    grads = [p.grad for p in den.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in det.parameters())


def test_losses_package_keeps_the_old_module_names():
    import src_training.losses as losses
    from src_training.losses import gan, lidnet, todnet

    old_names = {"REDUCTIONS", "ROI_FEATURE_LEVELS", "recon_loss", "roi_perceptual_loss", "detection_loss",
                 "lidnet_generator_loss", "gradient_penalty", "wgan_critic_loss", "wgan_generator_loss",
                 "global_perceptual_loss", "dice_loss", "todnet_loss"}
    assert old_names == set(losses.__all__)
    for name in old_names:
        home = next(m for m in (lidnet, gan, todnet) if name in m.__all__)
        assert getattr(losses, name) is getattr(home, name)

