"""Concurrent widget work with REAL thread workers (no ``LIDNET_SYNC``), and what closing the viewer does.

* Two Denoise widgets (CPCE and RED-CNN checkpoints) and a Detect widget run at the same time on the same
  layer: each result is the right layer with the data a run alone gives.
* Closing the viewer cancels running work (its thread ends, no layer is added) and asks a running training
  process to stop: it finishes the step, saves and exits 0; the watcher thread and plot timer stop.

Run under Xvfb: ``xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m pytest ...``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import napari_lidnet  # noqa: E402,F401 - the plugin's start-up keeps triton out of this process (its docstring)


@pytest.fixture
def real_threads(monkeypatch):
    monkeypatch.delenv("LIDNET_SYNC", raising=False)
    yield


def _drain(gen):
    """Run a progress generator to its end in this thread; return its return value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _dock(viewer, widget, name):
    viewer.window.add_dock_widget(widget, name=name)
    return widget


def test_three_widgets_at_once_on_one_layer_keep_their_own_results(
    make_napari_viewer, tiny_ct, tiny_checkpoints, qtbot, real_threads, notifications
):
    from napari_lidnet._widgets.denoise import DenoiseWidget, denoise_work
    from napari_lidnet._widgets.detect import K_MAX, RAW_SCORE_THRESH, DetectWidget, detect_work

    vol, _ = tiny_ct
    viewer = make_napari_viewer()
    src = viewer.add_image(vol.hu.copy(), name="LDCT", scale=vol.spacing)
    d1 = _dock(viewer, DenoiseWidget(viewer), "Denoise 1")
    d2 = _dock(viewer, DenoiseWidget(viewer), "Denoise 2")
    det = _dock(viewer, DetectWidget(viewer), "Detect")
    for w, ck, model in ((d1, "denoiser", "cpce"), (d2, "redcnn", "redcnn")):
        w.image.value = src
        w.checkpoint.value = tiny_checkpoints[ck]
        w.model.value = model
        w.device.value = "cpu"
        w.scope.value = "whole volume"
        w.batch_size.value = 1  # several yields each: the threads interleave
    det.image.value = src
    det.checkpoint.value = tiny_checkpoints["detector"]
    det.device.value = "cpu"
    det.scope.value = "whole volume"

    workers = [d1.run(), d2.run(), det.run()]
    assert all(w is not None for w in workers)  # three thread workers, not synchronous runs
    assert d1.runner.running and d2.runner.running and det.runner.running
    qtbot.waitUntil(lambda: not (d1.runner.running or d2.runner.running or det.runner.running), timeout=180000)
    assert notifications.errors() == []
    assert not any(w.is_running for w in workers)

    # each Denoise run made its own layer from its own checkpoint, with the data of a run alone
    added = {ly.metadata.get("checkpoint"): ly for ly in viewer.layers if ly.metadata.get("denoised_from")}
    assert set(added) == {str(tiny_checkpoints["denoiser"]), str(tiny_checkpoints["redcnn"])}
    for ck, model in (("denoiser", "cpce"), ("redcnn", "redcnn")):
        layer = added[str(tiny_checkpoints[ck])]
        assert layer.metadata["model"] == model and layer.metadata["denoised_from"] == "LDCT"
        expected, _ = _drain(denoise_work(tiny_checkpoints[ck], model, vol.hu, "cpu", 1))
        np.testing.assert_allclose(np.asarray(layer.data), expected, atol=1e-3)
    np.testing.assert_array_equal(np.asarray(src.data), vol.hu)  # the shared source was not touched

    # the Detect run kept its own results for its own layer
    assert det.source_layer is src and len(det.raw_results) == vol.hu.shape[0]
    expected, _ = _drain(detect_work(tiny_checkpoints["detector"], vol.hu, None, "cpu", k=K_MAX,
                                     score_thresh=RAW_SCORE_THRESH))
    for got, exp in zip(sorted(det.raw_results, key=lambda r: r["slice"]), expected):
        assert got["slice"] == exp["slice"]
        np.testing.assert_allclose(np.asarray(got["proposals"]), np.asarray(exp["proposals"]), atol=1e-3)


def test_closing_the_viewer_cancels_running_work(make_napari_viewer, tiny_checkpoints, qtbot, real_threads):
    from napari_lidnet._widgets.denoise import DenoiseWidget

    viewer = make_napari_viewer()
    hu = np.random.default_rng(0).normal(0, 100, (200, 96, 96)).astype(np.float32)  # long enough to catch
    src = viewer.add_image(hu, name="LDCT")
    w = _dock(viewer, DenoiseWidget(viewer), "Denoise")
    w.image.value = src
    w.checkpoint.value = tiny_checkpoints["denoiser"]
    w.model.value = "cpce"
    w.device.value = "cpu"
    w.scope.value = "whole volume"
    w.batch_size.value = 1
    runner = w.runner
    worker = w.run()
    qtbot.waitUntil(lambda: runner.progress_bar.value >= 2, timeout=60000)
    assert worker.is_running, "the work ended before the viewer could be closed"
    viewer.close()
    # closing the window called TaskRunner.shutdown: the thread is finished, the result dropped
    assert runner.closed and runner.cancel_event.is_set()
    assert not worker.is_running
    qtbot.wait(50)
    assert runner.last_result is None
    started = []
    assert runner.start(lambda: iter(started.append(1) or ()), lambda r: None) is None
    assert started == []  # a closed runner starts nothing


def test_closing_the_viewer_stops_training_after_saving(make_napari_viewer, tmp_path, qtbot, real_threads):
    import torch
    from test_train_widget import FAKE_TRAINER, _fake_factory

    from napari_lidnet import _registry
    from napari_lidnet._widgets.train import TrainWidget

    _registry.clear()
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w, name="Train")
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    w.command_factory = _fake_factory(script, "ok")
    run_dir = tmp_path / "run"
    w.set_values(sample="lung1", run_dir=run_dir, t1=4, t2=4, t3=2, denoiser="cpce", backbone="resnet18")
    proc = w.start()
    watcher = w.worker
    try:
        qtbot.waitUntil(lambda: sum(e.get("event") == "step" for e in w.events) >= 3, timeout=30000)
        assert proc.poll() is None and watcher.is_running
        viewer.close()
        assert (run_dir / "STOP").exists()  # the clean stop request, not a kill
        assert w.worker is None and not watcher.is_running
        assert not w._redraw_timer.isActive()
        assert proc.wait(30) == 0  # the trainer finished its step, saved and exited by itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _registry.clear()
    lines = [json.loads(x) for x in (run_dir / "progress.jsonl").read_text().splitlines()]
    assert lines[-1]["event"] == "stopped"
    assert torch.load(run_dir / "denoiser.pt", weights_only=True)["step"] == lines[-1]["global_step"]
