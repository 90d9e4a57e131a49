"""Tests of the LIDnet baseline denoisers (src_training.models: one module per network, the registry
src_training.models.registry) and their published losses (src_training.losses.published, also importable as
src_training.baseline_losses). Tiny inputs, CPU."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from src_training.baseline_losses import (
    PublishedLoss,
    load_vgg19_features,
    published_loss,
    random_vgg19_features,
    sobel_edge_loss,
    ssim_loss,
)
from src_training.errors import CheckpointError, ConfigError
from src_training.losses import perceptual as perceptual_module
from src_training.losses import published as published_module
from src_training.losses.published import PUBLISHED_LOSSES
from src_training.models import CPCE, DCSCN, DENOISERS, MAPNN, build_denoiser, count_parameters
from src_training.models.dcscn import dcscn_filters
from src_training.models.denoisers import DISPLAY_NAMES, display_name
from src_training.models.registry import DENOISER_SPECS, DenoiserKey, denoiser_spec

ODD_SIZES = [(33, 37), (40, 29)]
ADVERSARIAL = {"wganvgg", "cpce", "mapnn", "dcswgan"}  # published training uses a WGAN(-GP) critic
VGG_MODELS = {"wganvgg", "cpce"}


def _batch(h=40, w=29, seed=0):
    g = torch.Generator().manual_seed(seed)
    clean = torch.rand(2, 1, h, w, generator=g) * 0.5 + 0.25
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return noisy, clean


# ---------------------------------------------------------------------------------------------- networks
def test_registry_has_every_lidnet_baseline():
    assert {"redcnn", "cpce", "wganvgg", "mapnn", "ssms", "reshlf", "dcscn", "dcswgan"} <= set(DENOISERS)
    assert all(k == k.lower() for k in DENOISERS)
    assert DENOISERS["dcswgan"] is DENOISERS["dcscn"] is DCSCN  # same generator, other published loss


@pytest.mark.parametrize("name", sorted(DENOISERS))
@pytest.mark.parametrize("size", ODD_SIZES)
def test_output_shape_equals_input_shape_on_odd_sizes(name, size):
    torch.manual_seed(0)
    model = build_denoiser(name, zero_init_last=False)  # not the identity: the real forward path
    x = torch.rand(1, 1, *size)
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all() and (y >= 0).all()
    assert not torch.equal(y, x)
    torch.testing.assert_close(y, torch.relu(x + model.residual(x)))
    # identity at initialisation (zero-initialised last layer)
    assert torch.equal(build_denoiser(name)(x), x)


def test_parameter_counts():
    counts = {name: count_parameters(build_denoiser(name)) for name in sorted(DENOISERS)}
    print("parameters:", counts)
    assert counts["redcnn"] == 1_848_865
    assert abs(counts["redcnn"] - 1.85e6) / 1.85e6 < 0.05  # Chen et al., IEEE TMI 2017: ~1.85 M
    # The papers below state no parameter count that could be checked here; exact counts of our builds:
    assert counts["cpce"] == 62_016  # 8 x (32 x 3x3, no bias) + three 1x1 conveying convs
    assert counts["wganvgg"] == 56_097  # Yang et al. 2018: 8 conv layers, 3x3, 32 filters (+ biases)
    assert counts["ssms"] == 56_097  # You et al. 2018, 2-D form of the same 8-layer generator
    assert counts["mapnn"] == 62_016  # Shan et al. 2019: CPCE modules with shared weights
    assert counts["dcscn"] == counts["dcswgan"] == 1_422_782  # Yamanaka et al. 2017 at scale 1 (no upsampler)
    assert counts["reshlf"] == 592_065  # our reconstruction (source paper not retrieved)


def test_registry_table_is_the_one_source():
    # one row per method; DENOISERS / DISPLAY_NAMES / the published losses are derived from it, in its order
    assert list(DENOISER_SPECS) == list(DENOISERS) == list(DISPLAY_NAMES) == [k.value for k in DenoiserKey]
    for key, spec in DENOISER_SPECS.items():
        assert spec.key == key and DENOISERS[key] is spec.network and DISPLAY_NAMES[key] == spec.display_name
        assert spec.published_loss in PUBLISHED_LOSSES and spec.source
        assert display_name(key) == display_name(key.upper()) == spec.display_name
    assert [display_name(k) for k in ("redcnn", "RED-CNN", "red_cnn", "cpce2d", DenoiserKey.MAPNN)] == [
        "RED-CNN", "RED-CNN", "RED-CNN", "CPCE", "MAP-NN"]
    assert display_name("unet") == "unet"  # unknown keys are shown as given
    assert isinstance(build_denoiser(DenoiserKey.CPCE, filters=4), CPCE)
    assert denoiser_spec(" DCSWGAN ").network is DCSCN
    with pytest.raises(ConfigError, match="Unknown denoiser"):
        denoiser_spec("unet")


def test_old_import_paths_are_the_same_objects():
    import src_training.baseline_losses as old
    import src_training.models.denoisers as den

    for name in old.__all__:
        home = published_module if name in published_module.__all__ else perceptual_module
        assert getattr(old, name) is getattr(home, name), name
    for name in den.__all__:
        assert hasattr(den, name), name


def test_mapnn_shares_one_cpce_module_and_follows_the_authors_cascade():
    torch.manual_seed(0)
    m3 = MAPNN(modules=3, zero_init_last=False)
    assert count_parameters(m3) == count_parameters(MAPNN(modules=7)) == count_parameters(CPCE())
    x = torch.rand(1, 1, 21, 19)
    ref = x
    for _ in range(3):  # x_t = clip(relu(x_{t-1} + CPCE(x_{t-1})), 0, 1), same weights every time
        ref = torch.clamp(torch.relu(ref + m3.module.residual(ref)), 0, 1)
    torch.testing.assert_close(m3(x), ref)
    m1 = MAPNN(modules=1, zero_init_last=False)
    m1.load_state_dict(m3.state_dict())  # same keys whatever the depth
    assert not torch.allclose(m1(x), m3(x))
    with pytest.raises(ConfigError):
        MAPNN(modules=0)


def test_dcscn_filter_schedule_is_the_papers():
    assert dcscn_filters() == [196, 166, 148, 133, 120, 108, 97, 86, 76, 66, 57, 48]  # Yamanaka et al. 2017
    assert sum(dcscn_filters()) == 1301
    with pytest.raises(ConfigError):
        dcscn_filters(layers=1)


@pytest.mark.parametrize("name", ["wganvgg", "ssms", "reshlf", "dcscn", "mapnn"])
def test_bad_options_raise_config_error(name):
    with pytest.raises(ConfigError):
        build_denoiser(name, not_an_option=3)


# ---------------------------------------------------------------------------------------------- losses
@pytest.mark.parametrize("name", sorted(DENOISERS))
def test_published_loss_for_every_denoiser(name):
    loss = published_loss(name, device="cpu")
    assert isinstance(loss, PublishedLoss) and loss.model == name
    assert loss.adversarial == (name in ADVERSARIAL)
    assert (loss.lambda_adv > 0) == loss.adversarial
    assert loss.description
    if name in VGG_MODELS:
        assert "SUBSTITUTE" in loss.description and loss.perceptual is not None
    else:
        assert loss.perceptual is None


def test_published_loss_unknown_model():
    with pytest.raises(ConfigError, match="Unknown denoiser"):
        published_loss("unet")


@pytest.mark.parametrize("name", sorted(DENOISERS))
def test_one_step_lowers_the_published_content_loss(name):
    torch.manual_seed(0)
    model = build_denoiser(name)
    loss = published_loss(name, device="cpu")
    noisy, clean = _batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    before, parts = loss.content_loss(model(noisy), clean)
    assert before.dim() == 0 and set(parts) == {n for n, _ in loss.weights} | {"content"}
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after, _ = loss.content_loss(model(noisy), clean)
    print(f"{name}: {before.item():.6g} -> {after.item():.6g}")
    assert after.item() < before.item()


def test_content_terms_are_zero_for_identical_images_and_positive_otherwise():
    noisy, clean = _batch(33, 37)
    assert ssim_loss(clean, clean).abs().item() < 1e-5
    assert sobel_edge_loss(clean, clean).item() == 0.0
    assert ssim_loss(noisy, clean).item() > 0.01 and sobel_edge_loss(noisy, clean).item() > 0
    d = noisy.clone().requires_grad_(True)
    ssim_loss(d, clean).backward()
    assert d.grad is not None and d.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        published_loss("dcscn").content_loss(noisy, clean[..., :-1])


def test_vgg_substitute_is_deterministic_frozen_and_logged(caplog):
    a, b = random_vgg19_features(), random_vgg19_features()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    assert not any(p.requires_grad for p in a.parameters())
    with caplog.at_level(logging.WARNING, logger="src_training.losses.published"):
        loss = published_loss("cpce", device="cpu")
    assert "substitute" in caplog.text
    noisy, clean = _batch()
    d = noisy.clone().requires_grad_(True)
    value, _ = loss.content_loss(d, clean)
    value.backward()
    assert d.grad.abs().sum() > 0  # gradient reaches the image
    assert all(p.grad is None for p in loss.perceptual.parameters())  # VGG itself stays frozen


def test_vgg_local_weights_file_loads(tmp_path):
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(1)
    # torchvision's vgg19().features, built by torchvision's own layer factory (the 120 M-parameter classifier
    # is skipped to keep the test light; one classifier key is kept to check that such entries are ignored)
    features = make_layers(cfgs["E"], batch_norm=False)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path / "vgg19.pth"
    torch.save(state, path)

    feats = load_vgg19_features(path)
    torch.testing.assert_close(feats[34].weight, features[34].weight)  # conv5_4
    loss = published_loss("wganvgg", vgg_weights=path, device="cpu")
    assert "SUBSTITUTE" not in loss.description and str(path) in loss.description
    torch.testing.assert_close(loss.perceptual.features[0].weight, features[0].weight)
    noisy, clean = _batch()
    with torch.no_grad():
        ref = F.mse_loss(features[:35](loss.perceptual.to_vgg_input(noisy)),
                         features[:35](loss.perceptual.to_vgg_input(clean)))
        value, parts = loss.content_loss(noisy, clean)
    torch.testing.assert_close(torch.tensor(parts["vgg"]), ref)
    torch.testing.assert_close(value, 0.1 * ref)
    # grayscale -> VGG input: 3 identical channels, ImageNet-normalised
    v = loss.perceptual.to_vgg_input(torch.full((1, 1, 20, 20), 0.5))
    torch.testing.assert_close(v[0, :, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]))


def test_bad_vgg_files_raise_checkpoint_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="Cannot read"):
        published_loss("wganvgg", vgg_weights=text)
    wrong = tmp_path / "wrong.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.2.weight": torch.zeros(3)}, wrong)
    with pytest.raises(CheckpointError, match="not a torchvision VGG19"):
        published_loss("cpce", vgg_weights=wrong)
    not_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], not_dict)
    with pytest.raises(CheckpointError, match="not a state_dict"):
        load_vgg19_features(not_dict)
    with pytest.raises(CheckpointError, match="not found"):
        load_vgg19_features(tmp_path / "missing.pth")
