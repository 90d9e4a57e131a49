"""Train widget: background training process watched from napari (fake trainer and the real CLI).

Run under Xvfb (see scripts/test.sh). The real-CLI test uses a tiny configuration (CPCE, ResNet-18, 64 px,
T1 = T2 = T3 = 2 steps, sample:lung1) and stops the run after its first step.
"""

from __future__ import annotations

import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import napari_lidnet._widgets.compare  # noqa: E402,F401 - keeps triton out of this process (see block_triton)

FAKE_TRAINER = textwrap.dedent(
    """
    import json, os, sys, time
    run = sys.argv[1]
    mode = sys.argv[2]
    prog = os.path.join(run, "progress.jsonl")
    def emit(**ev):
        with open(prog, "a") as fh:
            fh.write(json.dumps(ev) + "\\n")
    if mode == "fail":
        print("loading data ...")
        print("Traceback (most recent call last):\\nValueError: simulated failure for the test", file=sys.stderr)
        sys.exit(3)
    total = 400
    emit(event="phase_start", phase="T1", round=0, step=0, phase_steps=200, global_step=0, total_steps=total,
         losses={}, elapsed_s=0.0, checkpoint=None, message="phase T1")
    for g in range(1, total + 1):
        phase, rnd, st = ("T1", 0, g) if g <= 200 else ("T2", 1, g - 200)
        if g == 201:
            emit(event="phase_start", phase="T2", round=1, step=0, phase_steps=200, global_step=200,
                 total_steps=total, losses={}, elapsed_s=0.0, checkpoint=None, message="phase T2")
        while os.path.exists(os.path.join(run, "PAUSE")) and not os.path.exists(os.path.join(run, "STOP")):
            time.sleep(0.05)
        emit(event="step", phase=phase, round=rnd, step=st, phase_steps=200, global_step=g, total_steps=total,
             losses={"rec": 1.0 / g, "det": 2.0 / g}, elapsed_s=g * 0.03, checkpoint=None, message="")
        if os.path.exists(os.path.join(run, "STOP")):
            import torch
            torch.save({"kind": "denoiser", "state_dict": {"w": torch.ones(2)}, "step": g},
                       os.path.join(run, "denoiser.pt"))
            emit(event="stopped", phase=phase, round=rnd, step=st, phase_steps=200, global_step=g,
                 total_steps=total, losses={}, elapsed_s=g * 0.03, checkpoint=None, message="stopped")
            sys.exit(0)
        time.sleep(0.03)
    sys.exit(0)
    """
)


def _fake_factory(script: Path, mode: str):
    def factory(config_path, run_dir, resume=None, method="lidnet"):
        return [sys.executable, str(script), str(run_dir), mode]

    return factory


class LatencyProbe:
    """QTimer ping on the event loop: records how late each tick is (ms) beyond its interval."""

    def __init__(self, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.interval = interval_ms / 1000.0
        self.lat: list[float] = []
        self._last = None
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self._last is not None:
            self.lat.append((now - self._last - self.interval) * 1000.0)
        self._last = now

    def start(self):
        self._last = None
        self.timer.start()

    def stop(self):
        self.timer.stop()

    @property
    def max_ms(self) -> float:
        return max(self.lat) if self.lat else float("nan")


@pytest.fixture
def train_widget(make_napari_viewer, qtbot):
    from napari_lidnet import _registry
    from napari_lidnet._widgets.train import TrainWidget

    _registry.clear()
    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    qtbot.addWidget(w)
    yield w
    if w.running:  # never leave a trainer behind
        w.stop(force=True)
        w.wait(30)
    _registry.clear()


def test_watcher_fake_trainer_progress_pause_stop(train_widget, tmp_path, qtbot):
    from napari_lidnet import _registry

    w = train_widget
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    w.command_factory = _fake_factory(script, "ok")
    run_dir = tmp_path / "run_fake"
    w.set_values(sample="lung1", run_dir=run_dir, t1=4, t2=4, t3=2, denoiser="cpce", backbone="resnet18")
    probe = LatencyProbe()
    probe.start()
    w.start()
    assert (run_dir / "widget_config.json").is_file() and (run_dir / "train.log").is_file()
    qtbot.waitUntil(lambda: sum(e.get("event") == "step" for e in w.events) >= 5, timeout=15000)
    assert w.plot.series["rec"][0][:2] == [1.0, 2.0] and w.plot.phases[0][0] == "T1"
    assert "phase T1" in w.status.text() and "total" in w.status.text()
    # pause: the fake trainer waits while RUN_DIR/PAUSE exists
    w.pause_btn.setChecked(True)
    assert (run_dir / "PAUSE").exists() and w.state == "paused"
    qtbot.wait(400)
    n = len(w.events)
    qtbot.wait(400)
    assert len(w.events) <= n + 1
    w.pause_btn.setChecked(False)
    assert not (run_dir / "PAUSE").exists()
    qtbot.waitUntil(lambda: len(w.events) > n + 3, timeout=10000)
    w.stop_btn.click()
    assert (run_dir / "STOP").exists() and w.state == "stopping"
    assert w.wait(30) == 0
    probe.stop()
    assert w.state == "stopped" and w.events[-1]["event"] == "stopped"
    assert [e.path.name for e in _registry.list_checkpoints("denoiser")] == ["denoiser.pt"]
    assert "registered" in w.status.text()
    assert probe.max_ms < 100, f"GUI event loop blocked for {probe.max_ms:.0f} ms"
    w.plot.redraw(force=True)
    assert w.plot.draw_count > 0


def test_watcher_reports_failure_with_log_tail(train_widget, tmp_path):
    w = train_widget
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    w.command_factory = _fake_factory(script, "fail")
    w.set_values(sample="lung1", run_dir=tmp_path / "run_fail")
    w.start()
    assert w.wait(30) == 3
    assert w.state == "failed"
    assert "exit code 3" in w.status.text() and "simulated failure for the test" in w.status.text()
    # the same folder is refused for a new start only when it holds a run; resume needs a trainer state
    from src_training.errors import LidnetError

    with pytest.raises(LidnetError, match="trainer_state.pt"):
        w.resume()


def test_layers_saved_as_training_npz(make_napari_viewer, tmp_path):
    from napari_lidnet._layers import shapes_layer_data
    from napari_lidnet._widgets.train import save_layers_npz

    viewer = make_napari_viewer()
    hu = np.random.default_rng(0).normal(0, 50, (3, 32, 32)).astype(np.float32)
    img = viewer.add_image(hu, name="NDCT", scale=(2.0, 0.5, 0.5))
    data, kw = shapes_layer_data({2: np.array([[4, 5, 10, 12]], np.float32)}, like=img)
    boxes = viewer.add_shapes(data, **kw)
    path = save_layers_npz(img, boxes, tmp_path / "d.npz")
    with np.load(path) as d:
        np.testing.assert_array_equal(d["hu"], hu)
        np.testing.assert_allclose(d["spacing"], (2.0, 0.5, 0.5))
        np.testing.assert_allclose(d["boxes"], [[2, 4, 5, 10, 12]])


def test_real_cli_training_stop_checkpoint_and_latency(train_widget, tmp_path, qtbot):
    """The real ``python -m src_training train`` from the widget: progress arrives, Stop ends it cleanly
    (exit 0), the checkpoints load with weights_only=True and are registered; the GUI stays responsive."""
    import torch

    from napari_lidnet import _registry

    w = train_widget
    run_dir = tmp_path / "run_real"
    w.set_values(sample="lung1", run_dir=run_dir, denoiser="cpce", backbone="resnet18", image_size=64,
                 t1=2, t2=2, t3=2, rounds=1, batch_size=2, device="cpu")
    probe = LatencyProbe()
    probe.start()
    w.start()
    qtbot.waitUntil(lambda: any(e.get("event") == "step" for e in w.events) or not w.running, timeout=90000)
    assert w.running, f"trainer ended early: {w.status.text()}"
    w.stop()
    rc = w.wait(90)
    probe.stop()
    assert rc == 0, w.status.text()
    kinds = [e.get("event") for e in w.events]
    assert "step" in kinds and ("stopped" in kinds or "done" in kinds)
    for name in ("denoiser.pt", "detector.pt"):
        ck = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        assert ck["kind"] == name[:-3] and ck["state_dict"]
    assert {e.kind for e in _registry.list_checkpoints()} == {"denoiser", "detector"}
    assert w.state in ("stopped", "finished")
    assert len(probe.lat) > 100
    assert probe.max_ms < 100, f"GUI event loop blocked for {probe.max_ms:.0f} ms"
