"""Tests of src_training.models (denoisers and the Faster R-CNN lesion detector). Tiny inputs, CPU."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from src_training.checkpoint import save_checkpoint
from src_training.errors import CheckpointError, ConfigError
from src_training.models import (
    CPCE,
    DENOISERS,
    REDCNN,
    LesionDetector,
    RPNOutput,
    TopKRegionProposalNetwork,
    build_denoiser,
    build_detector,
    count_parameters,
    set_frozen,
)

LOSS_KEYS = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
# Fewer proposals / sampled RoIs than torchvision's defaults: the 12544->1024 box head dominates the cost of
# tiny test images. The code paths are the same.
FAST = dict(
    rpn_pre_nms_top_n_train=300,
    rpn_post_nms_top_n_train=300,
    rpn_pre_nms_top_n_test=300,
    rpn_post_nms_top_n_test=150,
    rpn_batch_size_per_image=64,
    box_batch_size_per_image=64,
)


# ---------------------------------------------------------------------------------------------- denoisers
@pytest.mark.parametrize("name", sorted(DENOISERS))
@pytest.mark.parametrize("size", [(33, 47), (64, 64), (5, 7), (21, 9)])
def test_denoiser_keeps_shape_and_is_identity_at_init(name, size):
    torch.manual_seed(0)
    model = build_denoiser(name)
    x = torch.rand(2, 1, *size)
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    # zero-initialised last layer: relu(x + 0) == x for x in [0, 1]
    assert torch.equal(y, x)


@pytest.mark.parametrize("name", sorted(DENOISERS))
def test_denoiser_is_residual(name):
    torch.manual_seed(0)
    model = build_denoiser(name, zero_init_last=False)
    x = torch.rand(1, 1, 33, 47)
    y = model(x)
    assert y.shape == x.shape
    assert not torch.equal(y, x)
    torch.testing.assert_close(y, torch.relu(x + model.residual(x)))


def test_parameter_counts_match_papers():
    n_red = count_parameters(REDCNN())
    n_cpce = count_parameters(CPCE())
    print(f"REDCNN parameters: {n_red:,}; CPCE-2D parameters: {n_cpce:,}")
    assert n_red == 1_848_865
    assert abs(n_red - 1.85e6) / 1.85e6 < 0.01  # Chen et al. 2017: ~1.85 M
    assert n_cpce == 62_016  # 4 conv + 4 deconv (32 x 3x3, no bias) + three 1x1 conveying convs


@pytest.mark.parametrize("name", sorted(DENOISERS))
def test_one_adam_step_lowers_mae(name):
    torch.manual_seed(0)
    model = build_denoiser(name)
    clean = torch.rand(2, 1, 40, 40) * 0.2 + 0.4
    noisy = (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    before = (model(noisy) - clean).abs().mean()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = (model(noisy) - clean).abs().mean()
    assert after.item() < before.item()


def test_build_denoiser_names_and_errors():
    assert isinstance(build_denoiser("REDCNN"), REDCNN)
    assert isinstance(build_denoiser(" Cpce "), CPCE)
    with pytest.raises(ConfigError, match="cpce.*redcnn"):
        build_denoiser("unet")
    with pytest.raises(ValueError):
        build_denoiser("cpce")(torch.rand(1, 3, 16, 16))


# ---------------------------------------------------------------------------------------------- detector
def _targets(empty_second: bool = True):
    return [
        {"boxes": torch.tensor([[10.0, 12.0, 30.0, 28.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}
        if empty_second
        else {"boxes": torch.tensor([[40.0, 40.0, 52.0, 50.0]]), "labels": torch.tensor([1])},
    ]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def det() -> LesionDetector:
    torch.manual_seed(0)
    return build_detector("resnet18", **FAST)


def test_detector_train_forward_returns_four_finite_losses(det):
    det.train()
    x = torch.rand(2, 1, 64, 64)
    losses = det(x, _targets())
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    with pytest.raises(ValueError):
        det(x)  # training mode needs targets


def test_detector_eval_returns_lists(det):
    det.eval()
    out = det(torch.rand(2, 1, 64, 96))
    assert isinstance(out, list) and len(out) == 2
    for o in out:
        assert set(o) >= {"boxes", "scores", "labels"}
        assert o["boxes"].shape[1] == 4 and o["boxes"].shape[0] == o["scores"].shape[0] == o["labels"].shape[0]
        if len(o["boxes"]):
            assert o["boxes"][:, 2].max() <= 96 and o["boxes"][:, 3].max() <= 64
    det.train()


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_rpn_topk_counts_bounds_and_order(det, mode):
    det.train(mode == "train")
    torch.manual_seed(1)
    x = torch.rand(2, 1, 33, 70)
    every = det.rpn_topk(x, k=100_000)
    assert isinstance(every, RPNOutput)
    available = [len(p) for p in every.proposals]
    assert all(0 < n <= det.model.rpn._post_nms_top_n["testing"] for n in available)
    for k in (1, 5, max(available) + 3):
        out = det.rpn_topk(x, k=k)
        assert out.image_sizes == [(33, 70), (33, 70)]
        assert set(out.features) == {"0", "1", "2", "3", "pool"}
        for props, obj, n in zip(out.proposals, out.objectness, available):
            assert props.shape == (min(k, n), 4) and obj.shape == (min(k, n),)
            assert props.dtype == obj.dtype == torch.float32
            assert not props.requires_grad and not obj.requires_grad
            assert (props[:, 0] >= 0).all() and (props[:, 1] >= 0).all()
            assert (props[:, 2] <= 70).all() and (props[:, 3] <= 33).all()
            assert (props[:, 2] > props[:, 0]).all() and (props[:, 3] > props[:, 1]).all()
            assert ((obj >= 0) & (obj <= 1)).all()
            assert (obj[:-1] >= obj[1:]).all()
    det.train()


def test_rpn_features_carry_grad_to_input(det):
    det.train()
    x = torch.rand(1, 1, 64, 64, requires_grad=True)
    out = det.rpn_topk(x, k=5)
    sum(f.sum() for f in out.features.values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_losses_and_rpn_with_empty_targets(det, mode):
    det.train(mode == "train")
    x = torch.rand(2, 1, 64, 64, requires_grad=True)
    empty = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)}] * 2
    losses, out = det.losses_and_rpn(x, empty, k=5)
    assert set(losses) == LOSS_KEYS
    assert all(torch.isfinite(v) for v in losses.values())
    assert [len(p) for p in out.proposals] == [5, 5]
    sum(losses.values()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert det.training == (mode == "train")  # mode restored
    losses, out = det.losses_and_rpn(x, _targets(empty_second=False), k=3)
    assert all(torch.isfinite(v) for v in losses.values())
    det.train()


def test_losses_and_rpn_topk_matches_rpn_topk(det):
    det.eval()  # BatchNorm running stats -> deterministic backbone
    x = torch.rand(2, 1, 64, 64)
    _, a = det.losses_and_rpn(x, _targets(), k=5)
    b = det.rpn_topk(x, k=5)
    for pa, pb, oa, ob in zip(a.proposals, b.proposals, a.objectness, b.objectness):
        torch.testing.assert_close(pa, pb)
        torch.testing.assert_close(oa, ob)
    det.train()


def test_topk_rpn_is_torchvisions_rpn_plus_its_scores(det, monkeypatch):
    """The RPN subclass keeps torchvision's forward, parameters and state-dict keys; its scores are the ones
    torchvision's own ``filter_proposals`` computes for the same boxes."""
    from torchvision.models.detection.rpn import RegionProposalNetwork

    rpn = det.model.rpn
    assert isinstance(rpn, TopKRegionProposalNetwork) and type(rpn).forward is RegionProposalNetwork.forward
    assert {k for k in det.state_dict() if ".rpn." in k} == {f"model.rpn.head.{k}" for k in rpn.head.state_dict()}
    seen = []
    base_filter = RegionProposalNetwork.filter_proposals

    def spy(self, *args):
        out = base_filter(self, *args)
        seen.append(out)
        return out

    monkeypatch.setattr(RegionProposalNetwork, "filter_proposals", spy)
    det.eval()
    x = torch.rand(2, 1, 64, 64)
    out = det.rpn_topk(x, k=7)
    (boxes, scores), = seen
    with torch.no_grad():
        image_list, _ = det.model.transform(list(x.expand(-1, 3, -1, -1).unbind(0)))
        plain, losses = RegionProposalNetwork.forward(rpn, image_list, det.model.backbone(image_list.tensors))
    assert losses == {}
    for i in range(2):
        assert out.proposals[i].dtype == out.objectness[i].dtype == torch.float32
        assert torch.equal(out.proposals[i], boxes[i][:7]) and torch.equal(out.objectness[i], scores[i][:7])
        assert torch.equal(out.proposals[i], plain[i][:7])
        assert bool((out.objectness[i][:-1] >= out.objectness[i][1:]).all())  # sorted by objectness
    assert rpn._scores is None and not rpn._keep_scores  # nothing kept after the call
    det.train()


def test_detect_uses_eval_behaviour_and_restores_mode(det):
    det.train()
    x = torch.rand(1, 1, 64, 64)
    before = _state(det)
    out = det.detect(x, score_thresh=0.0)
    assert isinstance(out, list) and len(out) == 1 and not out[0]["boxes"].requires_grad
    assert det.training and all(m.training for m in det.modules())
    after = det.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BN running-stat update
    assert det.model.roi_heads.score_thresh == 0.05


def test_set_frozen_keeps_parameters_and_buffers():
    torch.manual_seed(0)
    detector = build_detector("resnet18", **FAST)
    denoiser = build_denoiser("cpce", zero_init_last=False)
    set_frozen(detector, True)
    detector.train()  # called after freezing: norm layers must stay in eval
    assert detector.training
    assert all(not m.training for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(not p.requires_grad for p in detector.parameters())
    before = _state(detector)
    den_before = _state(denoiser)
    opt = torch.optim.Adam(denoiser.parameters(), lr=1e-3)
    x = torch.rand(2, 1, 64, 64)
    losses, out = detector.losses_and_rpn(denoiser(x), _targets(), k=5)
    loss = sum(losses.values()) + sum(f.mean() for f in out.features.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    detector(x, _targets())  # plain forward in training mode
    after = detector.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "frozen detector changed"
    assert all(p.grad is None for p in detector.parameters())
    assert any(not torch.equal(den_before[k], v) for k, v in denoiser.state_dict().items())
    # unfreezing restores trainability and training-mode norm layers
    set_frozen(detector, False)
    assert all(p.requires_grad for p in detector.parameters())
    detector.train()
    assert all(m.training for m in detector.modules() if isinstance(m, torch.nn.BatchNorm2d))
    detector(x, _targets())
    assert any(not torch.equal(before[k], v) for k, v in detector.state_dict().items() if "running_mean" in k)
    # freezing a submodule: a later detector.train() keeps that submodule's norm layers in eval
    set_frozen(detector.model.backbone, True)
    detector.train()
    assert all(not m.training for m in detector.model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(p.requires_grad for p in detector.model.rpn.parameters())
    assert not any(p.requires_grad for p in detector.model.backbone.parameters())


def test_weights_path_reproduces_outputs(tmp_path, det):
    det.train()
    det(torch.rand(2, 1, 64, 64), _targets())  # move BN running stats away from their initial values
    det.eval()
    x = torch.rand(1, 1, 64, 64)
    ref = det.rpn_topk(x, k=5)
    ref_det = det.detect(x, score_thresh=0.0)
    path = tmp_path / "detector.pt"
    save_checkpoint(path, {"kind": "detector", "backbone": "resnet18", "state_dict": det.state_dict(),
                           "hparams": det.hparams, "step": 1})
    plain = tmp_path / "torchvision_style.pt"
    torch.save(det.model.state_dict(), plain)
    for p in (path, plain):
        other = build_detector("resnet18", weights_path=p, **FAST)
        assert other.norm == "batch"
        other.eval()
        out = other.rpn_topk(x, k=5)
        for a, b in zip(ref.features.values(), out.features.values()):
            torch.testing.assert_close(a, b)
        for a, b in zip(ref.proposals, out.proposals):
            torch.testing.assert_close(a, b)
        for a, b in zip(ref_det, other.detect(x, score_thresh=0.0)):
            torch.testing.assert_close(a["boxes"], b["boxes"])
            torch.testing.assert_close(a["scores"], b["scores"])
    det.train()


def test_imagenet_backbone_file(tmp_path):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(resnet.state_dict(), path)
    detector = build_detector("resnet18", weights_path=path)
    assert detector.norm == "frozen"
    torch.testing.assert_close(detector.model.backbone.body.conv1.weight, resnet.conv1.weight)
    torch.testing.assert_close(detector.model.backbone.body.layer4[1].bn2.running_var, resnet.layer4[1].bn2.running_var)
    with pytest.raises(CheckpointError, match="resnet18"):
        build_detector("resnet34", weights_path=path)


def test_wrong_weights_raise_checkpoint_error(tmp_path, det):
    wrong_backbone = tmp_path / "r18.pt"
    torch.save(det.state_dict(), wrong_backbone)
    with pytest.raises(CheckpointError, match="does not fit"):
        build_detector("resnet34", weights_path=wrong_backbone)
    sd = det.state_dict()
    sd["model.rpn.head.conv.0.0.weight"] = torch.zeros(3, 3, 3, 3)
    wrong_shape = tmp_path / "wrong_shape.pt"
    torch.save(sd, wrong_shape)
    with pytest.raises(CheckpointError, match="shape"):
        build_detector("resnet18", weights_path=wrong_shape)
    garbage = tmp_path / "garbage.pt"
    torch.save({"foo.weight": torch.zeros(2)}, garbage)
    with pytest.raises(CheckpointError):
        build_detector("resnet18", weights_path=garbage)
    denoiser_ckpt = tmp_path / "denoiser.pt"
    save_checkpoint(denoiser_ckpt, {"kind": "denoiser", "model": "cpce", "state_dict": CPCE().state_dict()})
    with pytest.raises(CheckpointError, match="denoiser"):
        build_detector("resnet18", weights_path=denoiser_ckpt)
    with pytest.raises(CheckpointError, match="not found"):
        build_detector("resnet18", weights_path=tmp_path / "missing.pt")


def test_detector_config_errors():
    with pytest.raises(ConfigError, match="resnet50"):
        build_detector("vgg16")
    with pytest.raises(ConfigError):
        LesionDetector("resnet18", norm="instance")
    with pytest.raises(ConfigError):
        LesionDetector("resnet18", anchor_sizes=((8,), (16,)))


def test_group_norm_detector_runs():
    torch.manual_seed(0)
    detector = build_detector("resnet18", norm="group", anchor_sizes=((6,), (12,), (24,), (48,), (96,)), **FAST)
    losses = detector(torch.rand(1, 1, 64, 64), _targets()[:1])
    assert set(losses) == LOSS_KEYS and all(math.isfinite(v.item()) for v in losses.values())
    assert detector.hparams["anchor_sizes"][0] == [6]
