"""Tests of the paper-parity training variants: LIDnet's GAN form (Eq. 5, WGAN-GP critic Eq. 7), baselines
with their published losses, the simultaneous-training and perceptual-loss ablations, and TOD-Net's
task-oriented loss (src_training.training, src_training.losses, models.critic, models.segmenter)."""

from __future__ import annotations

import types
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src_training.config import TrainConfig
from src_training.data import SliceDataset
from src_training.errors import ConfigError
from src_training.losses import dice_loss, global_perceptual_loss, gradient_penalty, wgan_critic_loss
from src_training.models.critic import Critic, build_critic
from src_training.models.segmenter import UNet2D, boxes_to_masks, build_segmenter
from src_training.training import BaselineTrainer, CollaborativeTrainer, TODNetTrainer, TRAINERS
from src_training.training import baseline as training_baseline
from test_training import _one_thread  # noqa: F401 - autouse fixture: one intra-op thread
from test_training import make_case, same, small_denoiser, small_detector, snapshot, tiny_config
from test_training import stop_from_another_thread


def small_critic():
    return build_critic(width=4, fc_units=8)


def small_segmenter():
    return build_segmenter(width=4, depth=2)


@pytest.fixture(scope="module")
def ds48():
    """4 synthetic slices, random 32 x 32 training crops (name kept from the 48-px version)."""
    return SliceDataset([make_case()], crop_size=32, seed=0)


def run_with_snapshots(trainer, nets):
    """Run to the end; snapshots of ``nets`` (name -> module getter) at each phase start and at the end."""
    snaps, events = {}, []
    for ev in trainer.run():
        events.append(ev)
        if ev.event in ("phase_start", "done"):
            key = ev.phase if ev.event == "phase_start" else "end"
            snaps[key] = {n: snapshot(get()) for n, get in nets.items()}
    return events, snaps


# ----------------------------------------------------------------------------------------- losses


class LinearCritic(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.w = nn.Parameter(torch.randn(shape))
        self.inputs = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return (x * self.w).flatten(1).sum(1)


def test_gradient_penalty_of_a_linear_critic_is_exact():
    torch.manual_seed(0)
    critic = LinearCritic((1, 1, 8, 8))
    real, fake = torch.rand(3, 1, 8, 8), torch.rand(3, 1, 8, 8)
    gp = gradient_penalty(critic, real, fake, lambda_gp=10.0)
    expected = 10.0 * (critic.w.detach().norm() - 1.0) ** 2
    assert torch.allclose(gp, expected, rtol=1e-5)
    gp.backward()  # the penalty has a graph to the critic's weights
    assert critic.w.grad is not None and float(critic.w.grad.abs().sum()) > 0
    with torch.no_grad():
        critic.w.mul_(1.0 / critic.w.norm())  # unit-norm weights -> no penalty
    assert float(gradient_penalty(critic, real, fake)) == pytest.approx(0.0, abs=1e-8)


def test_gradient_penalty_is_computed_on_interpolates():
    critic = LinearCritic((1, 1, 6, 6))
    real, fake = torch.rand(4, 1, 6, 6), torch.rand(4, 1, 6, 6)
    gradient_penalty(critic, real, fake, torch.Generator().manual_seed(3))
    (x_hat,) = critic.inputs
    eps = ((x_hat - fake) / (real - fake)).flatten(1)  # one eps per image
    assert torch.allclose(eps, eps[:, :1].expand_as(eps), atol=1e-4)
    assert bool(((eps >= 0) & (eps <= 1)).all())
    assert not torch.allclose(x_hat, real) and not torch.allclose(x_hat, fake)
    assert eps[:, 0].unique().numel() == 4
    critic.inputs.clear()
    gradient_penalty(critic, real, fake, torch.Generator().manual_seed(3))
    assert torch.equal(critic.inputs[0], x_hat)  # the generator decides eps
    with pytest.raises(ValueError):
        gradient_penalty(critic, real, fake[:2])


def test_critic_loss_parts_and_any_slice_size():
    torch.manual_seed(0)
    c = Critic(width=4, fc_units=8)
    for size in (32, 45):
        assert c(torch.rand(2, 1, size, size)).shape == (2,)
    real, fake = torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32)
    loss, parts = wgan_critic_loss(c, real, fake, lambda_gp=10.0)
    assert set(parts) == {"critic", "gp", "wdist"}
    assert float(loss) == pytest.approx(-parts["wdist"] + parts["gp"], rel=1e-4, abs=1e-6)
    with pytest.raises(ConfigError):
        Critic(width=0)


def test_global_perceptual_loss_is_mean_of_level_mses():
    torch.manual_seed(0)
    a = {k: torch.randn(2, 4, s, s) for k, s in (("0", 8), ("1", 4), ("2", 2), ("3", 1), ("pool", 1))}
    b = {k: torch.randn_like(v) for k, v in a.items()}
    want = sum(F.mse_loss(a[k], b[k]) for k in "0123") / 4
    assert torch.allclose(global_perceptual_loss(a, b), want)
    assert float(global_perceptual_loss(a, a)) == 0.0
    with pytest.raises(ValueError):
        global_perceptual_loss({"0": a["0"]}, b)


def test_boxes_to_masks_ellipse_and_dice():
    masks = boxes_to_masks([torch.tensor([[2.0, 2.0, 10.0, 6.0]]), torch.zeros((0, 4))], 12, 12)
    assert masks.shape == (2, 1, 12, 12) and masks.dtype == torch.float32
    m = masks[0, 0]
    assert m[4, 6] == 1 and m[2, 2] == 0 and m[5, 9] == 0 and m[0, 0] == 0  # centre in, box corners out
    assert abs(float(m.sum()) - torch.pi * 4 * 2) <= 4  # ellipse area pi * rx * ry
    assert float(masks[1].sum()) == 0
    assert float(boxes_to_masks([torch.tensor([[3.2, 3.2, 3.4, 3.4]])], 8, 8).sum()) == 1  # tiny box: 1 pixel
    good = (masks * 2 - 1) * 50
    assert float(dice_loss(good, masks)) < 1e-3
    assert float(dice_loss(-good[:1], masks[:1])) > 0.9
    assert UNet2D(width=4, depth=2)(torch.rand(1, 1, 30, 22)).shape == (1, 1, 30, 22)


# ----------------------------------------------------------------------------------------- config / CLI


@pytest.mark.parametrize("data", [{"form": "wgan"}, {"strategy": "joint"}, {"perceptual": "vgg"},
                                  {"baseline_loss": "l2"}, {"task_network": "classifier"}, {"lambda_gp": -1},
                                  {"lr_critic": 0}, {"critic_steps": 0}, {"lambda_adv": float("inf")},
                                  {"task_weights": 3}, {"lambda_task": -0.5}])
def test_config_rejects_bad_variant_values(data):
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(data)


def test_config_variant_defaults_and_cli():
    c = TrainConfig()
    assert (c.form, c.strategy, c.perceptual, c.baseline_loss, c.task_network) == (
        "cnn", "collaborative", "roi", "mae", "detector")
    assert (c.lambda_gp, c.lr_critic, c.task_weights, c.vgg_weights) == (10.0, 4e-4, None, None)
    assert "todnet" in TRAINERS
    from src_training.cli import build_parser

    args = build_parser().parse_args(["train", "--config", "c.json", "--out", "o", "--method", "todnet",
                                      "--form", "gan", "--task-network", "segmentation"])
    assert (args.method, args.form, args.task_network, args.strategy) == ("todnet", "gan", "segmentation", None)


# ----------------------------------------------------------------------------------------- GAN form


def test_gan_form_step_updates_critic_and_generator(ds48):
    cfg = tiny_config(form="gan", t1=0, t2=1, t3=0, critic_steps=2, lambda_adv=0.1)
    t = CollaborativeTrainer(cfg, ds48, denoiser=small_denoiser(), detector=small_detector(), critic=small_critic())
    events, snaps = run_with_snapshots(t, {"den": lambda: t.denoiser, "critic": lambda: t.critic,
                                           "det": lambda: t.detector})
    assert not same(snaps["T2"]["critic"], snaps["end"]["critic"]), "critic did not train"
    assert not same(snaps["T2"]["den"], snaps["end"]["den"]), "denoiser did not train"
    assert same(snaps["T2"]["det"], snaps["end"]["det"]), "detector changed in T2"
    losses = [e for e in events if e.event == "step"][0].losses
    assert {"total", "rec", "roi", "det", "adv", "critic", "gp", "wdist"} <= set(losses)
    want = losses["rec"] + 5 * losses["roi"] + 5 * losses["det"] + 0.1 * losses["adv"]
    assert losses["total"] == pytest.approx(want, rel=1e-4)
    state = t.state_dict()
    assert "critic" in state["models"] and "critic" in state["optimizers"]


def test_gan_form_resume_is_bit_exact(tmp_path, ds48):
    cfg = tiny_config(form="gan", t1=0, t2=2, t3=1, critic_steps=2)

    def trainer(run_dir):
        torch.manual_seed(99)
        return CollaborativeTrainer(cfg, ds48, denoiser=small_denoiser(), detector=small_detector(),
                                    critic=small_critic(), run_dir=run_dir)

    full = trainer(None)  # nothing written: faster
    full.train_all()
    part = trainer(tmp_path / "part")
    events = []
    for ev in part.run():
        events.append(ev)
        if ev.event == "step" and ev.global_step == 1:  # after the first T2 (GAN) step
            stop_from_another_thread(part)
    assert events[-1].event == "stopped" and events[-1].global_step == 1
    resumed = trainer(tmp_path / "part")
    resumed.resume(tmp_path / "part" / "trainer_state.pt")
    resumed.train_all()
    for name in ("denoiser", "detector", "critic"):
        assert same(snapshot(getattr(full, name)), snapshot(getattr(resumed, name))), name
    a, b = full.opt_critic.state_dict()["state"], resumed.opt_critic.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg"], b[k]["exp_avg"]) for k in a)


# ----------------------------------------------------------------------------------------- ablations


def test_simultaneous_strategy_updates_both_networks_each_step(ds48):
    sched = CollaborativeTrainer(tiny_config(strategy="simultaneous", t1=1, t2=2, t3=1, rounds=2), ds48,
                                 denoiser=small_denoiser(), detector=small_detector())
    assert [(p.name, p.round, p.steps) for p in sched.schedule] == [("T1", 0, 1), ("joint", 1, 3), ("joint", 2, 3)]
    collab = CollaborativeTrainer(tiny_config(t1=1, t2=2, t3=1, rounds=2), ds48, denoiser=small_denoiser(),
                                  detector=small_detector())
    assert sched.total_steps == collab.total_steps == 7

    t = CollaborativeTrainer(tiny_config(strategy="simultaneous", t1=0, t2=1, t3=0), ds48,
                             denoiser=small_denoiser(), detector=small_detector())
    events, snaps = run_with_snapshots(t, {"den": lambda: t.denoiser, "det": lambda: t.detector})
    steps = [e for e in events if e.event == "step"]
    assert len(steps) == 1 and steps[0].phase == "joint"
    assert {"total", "rec", "roi", "det", "det_update"} <= set(steps[0].losses)
    assert not same(snaps["joint"]["den"], snaps["end"]["den"]), "denoiser not updated in the joint step"
    assert not same(snaps["joint"]["det"], snaps["end"]["det"]), "detector not updated in the joint step"


@pytest.fixture(scope="module")
def one_t2_step(ds48):
    """Losses of one T2 step from identical initial weights for each perceptual mode."""
    out = {}
    for mode in ("roi", "global", "none"):
        torch.manual_seed(0)
        den, det = small_denoiser(), small_detector()
        t = CollaborativeTrainer(tiny_config(perceptual=mode, t1=0, t2=1, t3=0), ds48, denoiser=den, detector=det)
        out[mode] = [e for e in t.train_all() if e.event == "step"][0].losses
    return out


def test_global_perceptual_differs_from_roi_and_none_drops_it(one_t2_step):
    roi, glob, none = one_t2_step["roi"], one_t2_step["global"], one_t2_step["none"]
    assert roi["rec"] == glob["rec"] == none["rec"]  # same weights, same batch
    assert glob["roi"] > 0 and roi["roi"] > 0 and glob["roi"] != pytest.approx(roi["roi"], rel=1e-3)
    assert none["roi"] == 0.0
    assert none["total"] == pytest.approx(none["rec"] + 5 * none["det"], rel=1e-5)
    assert glob["total"] == pytest.approx(glob["rec"] + 5 * glob["roi"] + 5 * glob["det"], rel=1e-4)


# ----------------------------------------------------------------------------------------- TOD-Net


@pytest.mark.parametrize("task", ["detector", "segmentation"])
def test_todnet_trains_task_network_then_keeps_it_frozen(tmp_path, ds48, task):
    cfg = tiny_config(task_network=task, t1=1, baseline_steps=1)
    t = TODNetTrainer(cfg, ds48, denoiser=small_denoiser(), detector=small_detector(),
                      segmenter=small_segmenter(), run_dir=tmp_path)
    task_net = (lambda: t.detector) if task == "detector" else (lambda: t.segmenter)
    assert (t.detector is None) == (task == "segmentation") and (t.segmenter is None) == (task == "detector")
    events, snaps = run_with_snapshots(t, {"den": lambda: t.denoiser, "task": task_net})
    assert [(e.event, e.phase) for e in events if e.event == "phase_start"] == [("phase_start", "T1"),
                                                                                ("phase_start", "T2")]
    assert not same(snaps["T1"]["task"], snaps["T2"]["task"]), "downstream network not trained on NDCT"
    assert same(snaps["T2"]["task"], snaps["end"]["task"]), "downstream network changed while frozen"
    assert same(snaps["T1"]["den"], snaps["T2"]["den"]) and not same(snaps["T2"]["den"], snaps["end"]["den"])
    t2 = [e for e in events if e.event == "step" and e.phase == "T2"][0].losses
    assert {"total", "rec", "task"} <= set(t2) and t2["task"] > 0
    assert t2["total"] == pytest.approx(t2["rec"] + 5 * t2["task"], rel=1e-5)
    den = torch.load(tmp_path / "denoiser.pt", weights_only=True)
    assert den["method"] == "todnet" and den["config"]["task_network"] == task
    task_file = tmp_path / ("detector.pt" if task == "detector" else "segmenter.pt")
    assert torch.load(task_file, weights_only=True)["kind"] == ("detector" if task == "detector" else "segmenter")


def test_todnet_loads_task_weights_and_skips_t1(tmp_path, ds48):
    t = TODNetTrainer(tiny_config(task_network="segmentation", t1=1, baseline_steps=1), ds48,
                      denoiser=small_denoiser(), segmenter=small_segmenter(), run_dir=tmp_path / "a")
    t.train_all()
    path = tmp_path / "a" / "segmenter.pt"
    cfg = tiny_config(task_network="segmentation", task_weights=str(path), t1=5, baseline_steps=1)
    t2 = TODNetTrainer(cfg, ds48, denoiser=small_denoiser(), segmenter=small_segmenter())
    assert [p.name for p in t2.schedule] == ["T2"]
    assert same(snapshot(t2.segmenter), snapshot(t.segmenter))
    before = snapshot(t2.segmenter)
    t2.train_all()
    assert same(before, snapshot(t2.segmenter))
    bad = tiny_config(task_network="segmentation", task_weights=str(tmp_path / "a" / "denoiser.pt"))
    from src_training.errors import CheckpointError

    with pytest.raises(CheckpointError):
        TODNetTrainer(bad, ds48, denoiser=small_denoiser(), segmenter=small_segmenter())


# ----------------------------------------------------------------------------------------- published baselines


class FakePublishedLoss(NamedTuple):
    model: str
    description: str
    adversarial: bool
    lambda_adv: float
    content_loss: object


def _fake_module(adversarial: bool, calls: list):
    def content(denoised, ndct):
        l1, l2 = F.l1_loss(denoised, ndct), F.mse_loss(denoised, ndct)
        return l1 + 0.5 * l2, {"l1": float(l1.detach()), "mse": float(l2.detach())}

    def published_loss(model, *, vgg_weights=None, device=None):
        calls.append((model, vgg_weights))
        return FakePublishedLoss(model, "L1 + 0.5 MSE (fake)", adversarial, 0.01, content)

    mod = types.ModuleType("src_training.baseline_losses")
    mod.published_loss = published_loss
    return mod


@pytest.mark.parametrize("adversarial", [False, True])
def test_baseline_with_fake_published_loss(monkeypatch, ds48, adversarial):
    calls = []
    # the trainer's own reference to the published losses (src_training.training.baseline.baseline_losses)
    monkeypatch.setattr(training_baseline, "baseline_losses", _fake_module(adversarial, calls))
    cfg = tiny_config(baseline_loss="published", baseline_steps=2, critic_steps=1, vgg_weights="vgg.pth")
    t = BaselineTrainer(cfg, ds48, denoiser=small_denoiser(), critic=small_critic())
    assert calls == [("cpce", "vgg.pth")]
    assert (t.critic is not None) == adversarial
    nets = {"den": lambda: t.denoiser} | ({"critic": lambda: t.critic} if adversarial else {})
    events, snaps = run_with_snapshots(t, nets)
    for name in nets:
        assert not same(snaps["baseline"][name], snaps["end"][name]), name
    losses = [e for e in events if e.event == "step"][0].losses
    assert losses["content"] == pytest.approx(losses["l1"] + 0.5 * losses["mse"], rel=1e-5)
    assert losses["rec"] == pytest.approx(losses["l1"], rel=1e-5)
    if adversarial:
        assert {"adv", "critic", "gp"} <= set(losses)
        assert losses["total"] == pytest.approx(losses["content"] + 0.01 * losses["adv"], rel=1e-5)
    else:
        assert "adv" not in losses and losses["total"] == losses["content"]


def test_baseline_with_the_real_published_loss(ds48):
    pytest.importorskip("src_training.baseline_losses")
    from src_training.models.denoisers import build_denoiser

    # cpce: WGAN-GP + 0.1 VGG19 (seeded random-VGG substitute offline); redcnn: MSE only.
    for name, keys, adversarial in (("cpce", {"vgg", "content", "adv", "critic", "gp"}, True),
                                    ("redcnn", {"mse", "content"}, False)):
        cfg = tiny_config(denoiser=name, baseline_loss="published", baseline_steps=1, critic_steps=1)
        den = build_denoiser(name, filters=8, zero_init_last=False)
        t = BaselineTrainer(cfg, ds48, denoiser=den, critic=small_critic())
        assert t.published.model == name and (t.critic is not None) == adversarial
        before = snapshot(t.denoiser)
        steps = [e for e in t.train_all() if e.event == "step"]
        assert len(steps) == 1 and keys <= set(steps[0].losses) and steps[0].losses["content"] > 0
        assert not same(before, snapshot(t.denoiser))
        if not adversarial:
            assert steps[0].losses["total"] == steps[0].losses["content"] == pytest.approx(steps[0].losses["mse"])


# ----------------------------------------------------------------------------------------- Train widget


def test_train_widget_variant_combos(tmp_path, request):
    import os

    pytest.importorskip("napari")
    pytest.importorskip("pytestqt")
    if not (os.environ.get("DISPLAY") or os.environ.get("QT_QPA_PLATFORM") == "offscreen"):
        pytest.skip("needs a display: run under xvfb-run")
    qtbot = request.getfixturevalue("qtbot")
    viewer = request.getfixturevalue("make_napari_viewer")()
    from napari_lidnet._widgets.train import TrainWidget, training_command

    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    assert [w.method_combo.itemText(i) for i in range(w.method_combo.count())] == ["lidnet", "baseline", "todnet"]
    cfg = w.build_config(tmp_path)
    assert (cfg.form, cfg.strategy, cfg.perceptual, cfg.baseline_loss, cfg.task_network) == (
        "cnn", "collaborative", "roi", "mae", "detector")
    w.set_values(sample=w.sample_combo.itemText(0), method="todnet", form="gan", strategy="simultaneous",
                 perceptual="global", baseline_loss="published", task_network="segmentation")
    cfg = w.build_config(tmp_path)
    assert (cfg.form, cfg.strategy, cfg.perceptual, cfg.baseline_loss, cfg.task_network) == (
        "gan", "simultaneous", "global", "published", "segmentation")
    cmd = training_command(tmp_path / "c.json", tmp_path, None, w.method_combo.currentText())
    assert cmd[cmd.index("--method") + 1] == "todnet"
