"""Models that come with the plugin, in the viewer (issue #11, item 3): the checkpoint choosers of Denoise /
Detect list the shipped models by name first, the kind read from the file; the choices are remembered
between launches; the Denoise widget starts on the shipped LIDnet CPCE, takes the architecture from the
checkpoint, resamples to the model's training size and names its layers after the checkpoint.

Run under Xvfb: ``xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m pytest tests/test_gui_models.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("napari")

from src_training.checkpoint_files import DenoiserCheckpoint, write_checkpoint  # noqa: E402
from src_training.models.denoisers import build_denoiser  # noqa: E402

from napari_lidnet import _registry  # noqa: E402
from napari_lidnet._widgets._checkpoints import CheckpointChooser  # noqa: E402


def _tiny_denoiser(path, model="cpce", method="lidnet", image_size=None, display_name=None):
    """An untrained (identity at start) denoiser file; ``display_name`` writes the JSON beside it."""
    torch.manual_seed(0)
    config = {"hu_range": [-1024.0, 1024.0]}
    if image_size:
        config["image_size"] = int(image_size)
    p = write_checkpoint(path, DenoiserCheckpoint(model, build_denoiser(model).state_dict(), config, method, 3))
    if display_name:
        p.with_suffix(".json").write_text(json.dumps({"display_name": display_name}))
    return p


@pytest.fixture
def weights(tmp_path, monkeypatch):
    """A private weights folder ($LIDNET_WEIGHTS) with a tiny shipped-like LIDnet CPCE trained at 32 px and
    a baseline one; no run folders are searched."""
    w = tmp_path / "weights"
    lid = _tiny_denoiser(w / "denoiser_lidnet.pt", image_size=32, display_name="CPCE LIDnet (shipped, demo recipe)")
    base = _tiny_denoiser(w / "denoiser_base.pt", method="baseline", image_size=32,
                          display_name="CPCE baseline (shipped, demo recipe)")
    monkeypatch.setenv("LIDNET_WEIGHTS", str(w))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return {"lidnet": lid.resolve(), "baseline": base.resolve(), "dir": w}


def test_choosers_list_the_shipped_models_first_by_name(make_napari_viewer, monkeypatch):
    from napari_lidnet._widgets.denoise import DenoiseWidget
    from napari_lidnet._widgets.detect import DetectWidget

    monkeypatch.delenv("LIDNET_WEIGHTS", raising=False)  # the real weights folder of a fresh clone
    viewer = make_napari_viewer()
    den, det = DenoiseWidget(viewer), DetectWidget(viewer)

    shipped = [e for e in den.checkpoint.entries if e.source == "shipped"]
    assert [e.label for e in shipped] == ["CPCE baseline (shipped, demo recipe)", "CPCE LIDnet (shipped, demo recipe)"]
    assert den.checkpoint.entries[: len(shipped)] == shipped  # shipped first
    assert den.checkpoint.value.name == "denoiser_cpce_lidnet.pt"  # the default: LIDnet
    assert den.checkpoint.model_name == "CPCE LIDnet (shipped)"
    assert den.model.value == "cpce" and "trained at 256 px" in den.ckpt_info.value

    labels = [e.label for e in det.checkpoint.entries if e.source == "shipped"]
    assert labels == ["Faster R-CNN NDCT detector (shipped)", "FCOS judge (shipped, evaluation only)"]
    assert det.checkpoint.value.name == "detector_ndct_frcnn_r18.pt"  # the judge is offered, not the default
    tip = det.checkpoint.combo.native.itemData(det.checkpoint.combo.native.findText(labels[1]), 3)  # ToolTipRole
    assert "judge" in tip and "not to read" in tip


def test_the_kind_comes_from_the_file_not_its_name(tmp_path, monkeypatch, weights):
    odd = _tiny_denoiser(weights["dir"] / "detector.pt", method="baseline")  # a denoiser named detector.pt
    den, det = CheckpointChooser("denoiser"), CheckpointChooser("detector")
    assert odd.resolve() in [e.path for e in den.entries]
    assert [e.label for e in den.entries] == ["CPCE baseline (shipped)", "CPCE baseline (shipped, demo recipe)",
                                              "CPCE LIDnet (shipped, demo recipe)"]
    assert det.entries == []


def test_choices_are_remembered_between_launches_and_a_damaged_file_is_ignored(tmp_path, monkeypatch, weights):
    run = tmp_path / "my-runs"
    user = _tiny_denoiser(run / "exp1" / "checkpoints" / "denoiser.pt", model="redcnn", method="baseline")
    browsed = _tiny_denoiser(tmp_path / "elsewhere" / "mine.pt")

    first = CheckpointChooser("denoiser")
    assert first.value == weights["lidnet"]  # nothing remembered yet: the shipped LIDnet
    from napari_lidnet._widgets._checkpoints import register_run_dir

    register_run_dir(run)  # as the Train widget does with its runs folder
    first.set_path(browsed)  # the user browses to a file
    first.refresh()
    first.combo.value = user.resolve()  # ... and then picks the run's checkpoint in the list

    relaunch = CheckpointChooser("denoiser")  # a new session would build a new chooser from the JSON
    monkeypatch.setattr("napari_lidnet._widgets._checkpoints._EXTRA_RUN_DIRS", [])  # nothing kept in memory
    relaunch.refresh()
    sources = {e.path: e.source for e in relaunch.entries}
    assert sources[user.resolve()] == "found" and sources[browsed.resolve()] == "browsed"
    assert relaunch.value == user.resolve()  # the last choice
    assert "RED-CNN (baseline)" in relaunch.combo.current_choice

    _registry.remembered_path().write_text("{ not json")
    with pytest.warns(UserWarning, match="damaged"):
        fresh = CheckpointChooser("denoiser")
    assert fresh.value == weights["lidnet"]
    assert user.resolve() not in [e.path for e in fresh.entries]


def test_denoise_resamples_to_the_training_size_and_back(tmp_path, monkeypatch):
    from src_training import inference
    from src_training.inference import denoise_volume, load_denoiser

    from napari_lidnet._widgets.denoise import denoise_work

    ck = _tiny_denoiser(tmp_path / "d.pt", image_size=32)
    sizes: list[tuple[int, int]] = []
    real_load = inference.load_denoiser

    def load(path, device="auto"):
        model, config = real_load(path, device)
        model.register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape[-2:])))
        return model, config

    monkeypatch.setattr(inference, "load_denoiser", load)
    hu = np.random.default_rng(0).normal(-500, 200, (3, 80, 80)).astype(np.float32)
    gen = denoise_work(ck, None, hu, "cpu", 2)
    while True:
        try:
            msg = next(gen)[2]
        except StopIteration as stop:
            out, config = stop.value
            break
    assert out.shape == hu.shape and out.dtype == np.float32
    assert config["resampled"] == {"from": [80, 80], "to": [32, 32]}
    assert msg.endswith("at 32 × 32 px")
    assert set(sizes) - {(64, 64)} == {(32, 32)}  # every batch ran at the training size (64: the fast-path probe)
    model, _ = load_denoiser(ck, "cpu")
    np.testing.assert_allclose(out, denoise_volume(model, hu, image_size=32), atol=1e-3)
    assert not np.allclose(out, hu, atol=1.0)  # down- and up-sampling smooths: not the identity of the input grid

    sizes.clear()
    out2, config2 = _drain(denoise_work(ck, None, hu[:, :32, :32], "cpu", 2))
    assert config2["resampled"] is None and set(sizes) == {(32, 32)} and out2.shape == (3, 32, 32)


def _drain(gen):
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def test_denoised_layers_are_named_after_the_checkpoint(make_napari_viewer, weights, tmp_path, sync_mode):
    from napari_lidnet._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    hu = np.random.default_rng(1).normal(-600, 150, (3, 64, 64)).astype(np.float32)
    src = viewer.add_image(hu, name="lung2 LDCT N0=1000")
    viewer.dims.set_point(0, 1)
    w = DenoiseWidget(viewer)
    w.image.value = src
    w.device.value = "cpu"
    w.scope.value = "current slice"
    assert w.checkpoint.value == weights["lidnet"]
    w.run()
    first = viewer.layers[-1]
    assert first.name == "lung2 LDCT N0=1000 · CPCE LIDnet (shipped) · slice 1"
    assert first.metadata["resampled"] == {"from": [64, 64], "to": [32, 32]}
    assert "denoised at 32 × 32 px" in first.metadata["resampling"]
    assert "resampled back to 64 × 64 px" in str(w.status.value)

    # another checkpoint of another architecture: its own layer, no mismatch error (the user chose no model)
    red = _tiny_denoiser(tmp_path / "runs" / "exp" / "denoiser.pt", model="redcnn", method="baseline")
    w.model.value = "cpce"  # a choice made before picking the checkpoint does not stick to the next one
    w.checkpoint.set_path(red)
    assert w.model.value == "redcnn" and not w.model_chosen
    w.run()
    second = viewer.layers[-1]
    assert second.name == "lung2 LDCT N0=1000 · RED-CNN (baseline) · exp/denoiser.pt, step 3 · slice 1"
    assert second.metadata["model"] == "redcnn" and second.metadata["resampled"] is None

    # the same checkpoint on the same image again: the layer is updated, not copied as "... [1]"
    n = len(viewer.layers)
    w.checkpoint.value = weights["lidnet"]
    w.run()
    assert len(viewer.layers) == n and not any(ly.name.endswith("]") for ly in viewer.layers)
    assert str(w.status.value).startswith("updated 'lung2 LDCT N0=1000 · CPCE LIDnet (shipped) · slice 1'")
