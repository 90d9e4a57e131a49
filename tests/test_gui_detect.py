"""Detect widget (issue #11, item 8): the threshold starts at the checkpoint's calibration, the layers are named
after the image and the checkpoint and are re-used by a re-run, only kept detections carry text, and the
detector sees the slices at its working size. Tiny CT crop and tiny untrained checkpoints; run under Xvfb
(see tests/test_widgets_basic.py)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_lidnet._layers import image_layer_kwargs  # noqa: E402


@pytest.fixture
def viewer_ct(make_napari_viewer, tiny_ct):
    vol, _ = tiny_ct
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol.hu, **image_layer_kwargs(vol, name="lung2 NDCT"))
    viewer.dims.set_point(0, layer.translate[0] + 2 * layer.scale[0])
    return viewer, layer


@pytest.fixture
def calibrated(tmp_path, tiny_checkpoints):
    """A copy of the tiny detector with a calibration record beside it (threshold 0.37 on lung1), and a copy
    without one."""
    cal = tmp_path / "calibrated" / "detector.pt"
    plain = tmp_path / "plain" / "detector.pt"
    for p in (cal, plain):
        p.parent.mkdir()
        shutil.copy(tiny_checkpoints["detector"], p)
    rec = {"file": "detector.pt", "score_threshold": {"value": 0.37, "case": "lung1", "f1": 0.9, "precision": 0.95,
                                                      "recall": 0.86, "method": "max F1 at IoU 0.5 on lung1 NDCT"}}
    cal.with_suffix(".json").write_text(json.dumps(rec))
    return cal, plain


def test_threshold_defaults_to_the_checkpoints_calibration(make_napari_viewer, calibrated):
    from napari_lidnet._widgets.detect import DetectWidget

    cal, plain = calibrated
    w = DetectWidget(make_napari_viewer())
    w.checkpoint.set_path(cal)
    assert w.score_thresh.value == pytest.approx(0.37)
    assert w.threshold_source.value == "threshold 0.37 (calibrated on lung1)"
    w.checkpoint.set_path(plain)  # no calibration: 0.5, and the line says so
    assert w.score_thresh.value == pytest.approx(0.5)
    assert "default" in w.threshold_source.value and "no calibration" in w.threshold_source.value
    w.checkpoint.set_path(cal)  # follows the checkpoint while the user has not touched it
    assert w.score_thresh.value == pytest.approx(0.37)
    w.score_thresh.value = 0.8  # the user's value stays when the checkpoint changes
    w.checkpoint.set_path(plain)
    assert w.score_thresh.value == pytest.approx(0.8) and w.threshold_edited
    assert w.threshold_source.value.startswith("threshold 0.80 (set by you")
    w.score_thresh.value = 0.5  # back at this checkpoint's default: following again
    assert not w.threshold_edited
    w.checkpoint.set_path(cal)
    assert w.score_thresh.value == pytest.approx(0.37)


def test_layers_named_after_the_checkpoint_and_reused_by_a_rerun(viewer_ct, calibrated, sync_mode):
    from napari_lidnet._widgets.detect import DetectWidget

    viewer, layer = viewer_ct
    cal, plain = calibrated
    w = DetectWidget(viewer)
    w.image.value = layer
    w.checkpoint.set_path(cal)
    w.device.value = "cpu"
    w.score_thresh.value = 0.0
    w.run()
    det, prop = w.detections_layer, w.proposals_layer
    name = w.result_name
    assert name and name in det.name and name in prop.name
    assert det.name == f"lung2 NDCT · detections · {name}" and prop.name == f"lung2 NDCT · RPN top-K · {name}"
    assert det.metadata["checkpoint"] == str(cal)
    n_layers = len(viewer.layers)

    viewer.dims.set_point(0, layer.translate[0] + 1 * layer.scale[0])  # another slice, same image + checkpoint
    w.run()
    assert w.n_network_runs == 2
    assert w.detections_layer is det and w.proposals_layer is prop and len(viewer.layers) == n_layers
    assert not any("[1]" in ly.name for ly in viewer.layers)
    assert {int(round(s[0, 0])) for s in prop.data} == {1}  # its content is the new run's

    w2 = DetectWidget(viewer)  # another widget finds the same layers too
    w2.image.value = layer
    w2.checkpoint.set_path(cal)
    w2.device.value = "cpu"
    w2.run()
    assert w2.detections_layer is det and len(viewer.layers) == n_layers

    w.checkpoint.set_path(plain)  # another checkpoint: its own layers
    w.run()
    assert w.detections_layer is not det and len(viewer.layers) == n_layers + 2
    assert w.detections_layer.name != det.name


def test_only_kept_detections_carry_text(viewer_ct, tiny_checkpoints, sync_mode):
    from napari_lidnet._boxes import DETECTION_TEXT_SIZE
    from napari_lidnet._widgets.detect import DetectWidget

    viewer, layer = viewer_ct
    w = DetectWidget(viewer)
    w.image.value = layer
    w.checkpoint.set_path(tiny_checkpoints["detector"])
    w.device.value = "cpu"
    w.top_k.value = 10
    w.run()
    det, prop = w.detections_layer, w.proposals_layer
    assert len(prop.data) > 0
    assert all(s == "" for s in np.asarray(prop.text.values).tolist())  # proposals: no text
    assert det.text.size == DETECTION_TEXT_SIZE and det.text.anchor == "upper_left" and not det.text.scaling
    scores = np.concatenate([r["scores"] for r in w.raw_results])
    assert scores.size > 2  # the untrained detector scores every anchor near 0.5: boxes to label
    for thr in (0.0, float(np.median(scores))):
        w.score_thresh.value = round(thr, 2)
        kept = np.sort(scores[scores >= round(thr, 2)])[::-1]
        assert np.asarray(det.text.values).tolist() == [f"{s:.2f}" for s in kept]


def test_detector_runs_at_its_working_size(tmp_path, tiny_ct, tiny_checkpoints):
    import torch

    from src_training import inference
    from src_training.data.cases import resample_slices

    from napari_lidnet._widgets.detect import detect_work

    vol, _ = tiny_ct
    ck = torch.load(tiny_checkpoints["detector"], weights_only=True)
    ck["config"]["image_size"] = 32  # trained on 32 px slices: the 64 px crop is shown to it at 32 px
    path = tmp_path / "small.pt"
    torch.save(ck, path)

    def drain(gen):
        try:
            while True:
                next(gen)
        except StopIteration as stop:
            return stop.value

    results, config = drain(detect_work(path, vol.hu, [1, 3], "cpu", k=5, score_thresh=0.0))
    assert config["detected_at"] == 32 and [r["slice"] for r in results] == [1, 3]
    detector, cfg = inference.load_detector(path, device="cpu")
    small = resample_slices(vol.hu[[1, 3]], {}, (1.0, 1.0, 1.0), 32)[0]
    direct = list(inference.detect_slices(detector, small, cfg["hu_range"], k=5, score_thresh=0.0))
    for got, exp in zip(results, direct):
        np.testing.assert_allclose(got["proposals"], exp["proposals"] * 2.0, atol=1e-3)  # back in 64 px pixels
        np.testing.assert_allclose(got["boxes"], exp["boxes"] * 2.0, atol=1e-3)
    native, cfg_native = drain(detect_work(path, vol.hu, [1], "cpu", k=5, at_working_size=False))
    assert cfg_native["detected_at"] is None
    assert not np.allclose(native[0]["proposals"][:3], results[0]["proposals"][:3], atol=1e-2)
