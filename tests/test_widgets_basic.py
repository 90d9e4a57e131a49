"""CT window, Simulate, Denoise and Detect widgets on a 4 x 64 x 64 crop of the sample CT with tiny untrained
checkpoints. Results are compared with direct calls into the core. Run under Xvfb (see
tests/test_reader_writer.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_lidnet._boxes import shapes_layer_data  # noqa: E402
from napari_lidnet._layers import image_layer_kwargs  # noqa: E402


@pytest.fixture
def viewer_ct(make_napari_viewer, tiny_ct):
    """Viewer with the tiny CT (image layer as the reader makes it) and its boxes; current slice 2."""
    vol, boxes = tiny_ct
    viewer = make_napari_viewer()
    kw = image_layer_kwargs(vol, name="NDCT")
    layer = viewer.add_image(vol.hu, **kw)
    data, skw = shapes_layer_data(boxes, name="boxes", like=layer)
    viewer.add_shapes(data, **skw)
    viewer.dims.set_point(0, layer.translate[0] + 2 * layer.scale[0])
    return viewer, layer


def _image_names(viewer):
    return [lyr.name for lyr in viewer.layers]


# ------------------------------------------------------------------------------------------- window
def test_window_presets_apply_to_chosen_layers(viewer_ct):
    from napari_lidnet._widgets.window import WindowWidget, preset_names

    viewer, layer = viewer_ct
    other = viewer.add_image(layer.data + 10, name="other", contrast_limits=(0, 1))
    w = WindowWidget(viewer)
    assert {"lung", "mediastinum", "abdomen", "liver", "bone", "brain", "custom"} <= set(preset_names())
    w.layers.value = [layer, other]
    w.preset.value = "bone"  # applies at once
    assert tuple(layer.contrast_limits) == (-500.0, 1300.0)
    assert tuple(other.contrast_limits) == (-500.0, 1300.0)
    w.win_width.value = 80
    w.win_level.value = 40
    assert w.preset.value == "custom"
    w.apply()
    assert tuple(layer.contrast_limits) == tuple(other.contrast_limits) == (0.0, 80.0)
    assert layer.metadata["window"] == (80.0, 40.0)


# ------------------------------------------------------------------------------------------- simulate
def test_simulate_current_slice_matches_core(viewer_ct, sync_mode):
    from src_training.simulation import simulate_ldct

    from napari_lidnet._widgets.simulate import SimulateWidget

    viewer, layer = viewer_ct
    w = SimulateWidget(viewer)
    w.image.value = layer
    w.n0.value = 1000
    w.seed.value = 3
    w.scope.value = "current slice"
    w.run()
    new = viewer.layers[-1]
    assert new.name == "LDCT N0=1000 slice 2"
    assert new.data.shape == (1, 64, 64)
    assert np.allclose(new.scale, layer.scale)
    assert np.isclose(new.translate[0], layer.translate[0] + 2 * layer.scale[0])
    assert tuple(new.contrast_limits) == tuple(layer.contrast_limits)
    assert new.metadata["n0"] == 1000 and new.metadata["seed"] == 3
    assert new.metadata["dicom"]["StudyInstanceUID"] == layer.metadata["dicom"]["StudyInstanceUID"]
    ref = simulate_ldct(np.asarray(layer.data)[2], layer.metadata["spacing"][1], 1000.0, seed=3, first_index=2)
    assert np.array_equal(new.data[0], ref)
    # the measured soft-tissue noise is shown and stored (HU)
    from src_training.simulation import soft_tissue_noise_sigma

    sigma = soft_tissue_noise_sigma(np.asarray(layer.data)[2], ref)
    assert new.metadata["noise_sigma_hu"] == pytest.approx(sigma, nan_ok=True)
    assert ("noise σ" in w.status.value) or ("no uniform soft tissue" in w.status.value)
    assert "photons per ray" in w.info.value and "1000 views" in w.info.value


def test_simulate_runs_in_a_worker_without_blocking(viewer_ct, qtbot, monkeypatch):
    from napari_lidnet._widgets.simulate import SimulateWidget

    monkeypatch.delenv("LIDNET_SYNC", raising=False)
    viewer, layer = viewer_ct
    w = SimulateWidget(viewer)
    w.image.value = layer
    w.scope.value = "whole volume"
    w.use_cache.value = False
    n = len(viewer.layers)
    worker = w.run()
    # run() returned while the work goes on in another thread: the GUI thread is free
    assert worker is not None and w.runner.running
    assert not w.run_btn.enabled and w.cancel_btn.enabled
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert len(viewer.layers) == n + 1
    assert viewer.layers[-1].data.shape == layer.data.shape
    assert w.run_btn.enabled and not w.cancel_btn.enabled


def test_simulate_cancel_adds_nothing(viewer_ct, qtbot, monkeypatch):
    from napari_lidnet._widgets.simulate import SimulateWidget

    monkeypatch.delenv("LIDNET_SYNC", raising=False)
    viewer, layer = viewer_ct
    w = SimulateWidget(viewer)
    w.image.value = layer
    w.scope.value = "whole volume"
    w.use_cache.value = False
    n = len(viewer.layers)
    w.run()
    w.cancel_btn.clicked.emit()
    qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    assert w.runner.cancelled
    assert len(viewer.layers) == n


# ------------------------------------------------------------------------------------------- denoise
def test_denoise_widget_matches_core_and_names_model(viewer_ct, tiny_checkpoints, sync_mode):
    from src_training.inference import denoise_volume, load_denoiser

    from napari_lidnet._widgets.denoise import DenoiseWidget

    viewer, layer = viewer_ct
    w = DenoiseWidget(viewer)
    from src_training.models.denoisers import DENOISERS

    assert set(w.model.choices) == set(DENOISERS)
    w.image.value = layer
    w.checkpoint.set_path(tiny_checkpoints["denoiser"])
    assert w.model.value == "cpce"  # follows the checkpoint
    w.device.value = "cpu"
    w.scope.value = "current slice"
    w.run()
    new = viewer.layers[-1]
    # named after the source and the checkpoint (the tiny file is a user checkpoint, not a shipped one)
    assert new.name == f"NDCT · CPCE (LIDnet) · {tiny_checkpoints['denoiser'].parent.name}/denoiser.pt, step 0 · slice 2"
    assert new.data.shape == (1, 64, 64)
    assert np.isclose(new.translate[0], layer.translate[0] + 2 * layer.scale[0])
    assert new.metadata["model"] == "cpce" and new.metadata["method"] == "lidnet"
    assert new.metadata["checkpoint"] == str(tiny_checkpoints["denoiser"])
    model, cfg = load_denoiser(tiny_checkpoints["denoiser"], device="cpu")
    ref = denoise_volume(model, np.asarray(layer.data)[2:3], tuple(cfg["hu_range"]))
    assert np.allclose(new.data, ref, atol=1e-3)

    w.scope.value = "whole volume"
    w.run()
    assert viewer.layers[-1].name == new.name.removesuffix(" · slice 2")
    assert viewer.layers[-1].data.shape == layer.data.shape


def test_denoise_model_mismatch_and_missing_checkpoint_notify(viewer_ct, tiny_checkpoints, sync_mode,
                                                             notifications, tmp_path):
    from napari_lidnet._widgets.denoise import DenoiseWidget

    viewer, layer = viewer_ct
    n = len(viewer.layers)
    w = DenoiseWidget(viewer)
    w.image.value = layer
    w.checkpoint.value = None
    w.run()
    assert len(viewer.layers) == n and "checkpoint" in str(notifications.errors()[-1].message).lower()

    w.checkpoint.set_path(tiny_checkpoints["redcnn"])
    w.model.value = "cpce"  # the user insists on another architecture
    w.run()
    assert len(viewer.layers) == n
    msg = str(notifications.errors()[-1].message)
    assert "RED-CNN" in msg and "CPCE" in msg

    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    w.checkpoint.set_path(bad)
    w.run()
    assert len(viewer.layers) == n
    assert "broken.pt" in str(notifications.errors()[-1].message)


# ------------------------------------------------------------------------------------------- detect
def test_detect_layers_and_refilter_without_rerun(viewer_ct, tiny_checkpoints, sync_mode):
    from napari_lidnet._widgets.detect import DetectWidget

    viewer, layer = viewer_ct
    w = DetectWidget(viewer)
    w.image.value = layer
    w.checkpoint.set_path(tiny_checkpoints["detector"])
    w.device.value = "cpu"
    w.scope.value = "whole volume"
    w.top_k.value = 3
    w.score_thresh.value = 0.0
    w.run()
    assert w.n_network_runs == 1
    raw = w.raw_results
    assert [r["slice"] for r in raw] == [0, 1, 2, 3]
    det, prop = w.detections_layer, w.proposals_layer
    assert det in viewer.layers and prop in viewer.layers

    def expected_dets(thr):
        return {r["slice"]: int((r["scores"] >= thr).sum()) for r in raw}

    def counts(lyr):
        z = [int(round(s[0, 0])) for s in lyr.data]
        assert list(lyr.features["slice"]) == z  # every rectangle on its own slice
        return {s: z.count(s) for s in range(4)}

    # proposals: top-K per slice, 4 corners (z, y, x) each
    assert all(np.asarray(s).shape == (4, 3) for s in prop.data)
    assert counts(prop) == {r["slice"]: min(3, len(r["objectness"])) for r in raw}
    assert np.all(np.diff(prop.features["objectness"][prop.features["slice"] == 0]) <= 0)
    all_scores = np.concatenate([r["scores"] for r in raw])
    assert counts(det) == expected_dets(0.0)
    assert len(det.data) == all_scores.size
    assert set(det.features.columns) >= {"score", "label", "slice"}
    assert det.text.values.size == len(det.data)

    # re-filter: threshold and K change the counts, the network does not run again
    if all_scores.size:
        thr = float(np.median(all_scores)) + 1e-6
        w.score_thresh.value = round(thr, 2)
        assert counts(det) == expected_dets(round(thr, 2))
        assert np.all(det.features["score"] >= round(thr, 2))
    w.score_thresh.value = 1.0
    assert counts(det) == expected_dets(1.0)
    w.top_k.value = 1
    assert counts(prop) == {r["slice"]: min(1, len(r["objectness"])) for r in raw}
    assert w.n_network_runs == 1
    assert w.detections_layer is det and w.proposals_layer is prop  # updated in place

    # current slice only: rectangles on that slice
    w.scope.value = "current slice"
    viewer.layers.remove(det)
    viewer.layers.remove(prop)
    w.run()
    assert w.n_network_runs == 2
    assert {int(round(s[0, 0])) for s in w.proposals_layer.data} == {2}


def test_widgets_dock_through_npe2(make_napari_viewer, lidnet_manifest):
    viewer = make_napari_viewer()
    for name in ("CT window", "Simulate low dose", "Denoise", "Detect lesions"):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-lidnet", name)
        assert widget is not None
