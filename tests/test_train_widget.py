"""Train widget: background training process watched from napari (fake trainer and the real CLI), and the
Qt-free run client it drives (src_training.runs).

Run under Xvfb (see scripts/test.sh). The real-CLI test uses a tiny configuration (CPCE, ResNet-18, 64 px,
T1 = T2 = T3 = 2 steps, sample:lung1) and stops the run after its first step.

That the viewer stays responsive is checked without timing anything: the work that could block the GUI
thread (tailing progress.jsonl, rendering the loss plot) is seen running in other threads, and nothing of the
project, matplotlib or torch is imported while a run is watched (an import in a worker thread holds the
import lock, which froze the viewer before the widget imported them at dock time).
"""

from __future__ import annotations

import os
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import napari_lidnet  # noqa: E402,F401 - the plugin's start-up keeps triton out of this process (its docstring)

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
        polls = 0
        while os.path.exists(os.path.join(run, "PAUSE")) and not os.path.exists(os.path.join(run, "STOP")):
            if polls == 0:  # as the real trainer: acknowledge the pause, then wait computing nothing
                emit(event="paused", phase=phase, round=rnd, step=st - 1, phase_steps=200, global_step=g - 1,
                     total_steps=total, losses={}, elapsed_s=g * 0.03, checkpoint=None, message="paused")
            polls += 1
            with open(os.path.join(run, "pause_polls.tmp"), "w") as fh:
                fh.write(str(polls))
            os.replace(os.path.join(run, "pause_polls.tmp"), os.path.join(run, "pause_polls"))
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


def _pause_polls(run_dir: Path) -> int:
    """How often the fake trainer has looked at RUN_DIR/PAUSE while paused (0 before the pause)."""
    try:
        return int((run_dir / "pause_polls").read_text())
    except (OSError, ValueError):
        return 0


@pytest.fixture
def work_threads(monkeypatch):
    """Threads that tail progress.jsonl (``read``) and render the loss plot (``render``), and the GUI
    thread (``main``): the real functions, wrapped to record the calling thread."""
    import src_training.runs as runs

    from napari_lidnet._widgets import loss_plot

    seen = {"main": threading.get_ident(), "read": set(), "render": set()}
    real_read, real_render = runs.read_progress, loss_plot.render_loss_plot

    def read(*args, **kwargs):
        seen["read"].add(threading.get_ident())
        return real_read(*args, **kwargs)

    def render(*args, **kwargs):
        seen["render"].add(threading.get_ident())
        return real_render(*args, **kwargs)

    monkeypatch.setattr(runs, "read_progress", read)
    monkeypatch.setattr(loss_plot, "render_loss_plot", render)
    return seen


def _late_imports(modules_before: set) -> list[str]:
    """Modules of the project, matplotlib or torch imported since ``modules_before`` was taken."""
    return sorted(m for m in set(sys.modules) - modules_before
                  if m.split(".")[0] in ("src_training", "napari_lidnet", "matplotlib", "torch", "torchvision"))


def _assert_gui_thread_not_blocked(seen: dict, late_imports: list[str]) -> None:
    """The watching and the plotting ran in worker threads; no heavy import happened while watching."""
    assert seen["read"] and seen["main"] not in seen["read"], "progress.jsonl was read in the GUI thread"
    assert seen["render"] and seen["main"] not in seen["render"], "the loss plot was rendered in the GUI thread"
    assert not late_imports, f"imported while the run was watched (import lock held in a thread): {late_imports}"


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


def test_watcher_fake_trainer_progress_pause_stop(train_widget, tmp_path, qtbot, work_threads):
    from napari_lidnet import _registry
    from src_training.training import read_progress

    w = train_widget
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    w.command_factory = _fake_factory(script, "ok")
    run_dir = tmp_path / "run_fake"
    w.set_values(sample="lung1", run_dir=run_dir, t1=4, t2=4, t3=2, denoiser="cpce", backbone="resnet18")
    modules_before = set(sys.modules)
    w.start()
    assert (run_dir / "widget_config.json").is_file() and (run_dir / "train.log").is_file()
    qtbot.waitUntil(lambda: sum(e.get("event") == "step" for e in w.events) >= 5, timeout=15000)
    assert w.plot.series["rec"][0][:2] == [1.0, 2.0] and w.plot.phases[0][0] == "T1"
    assert "T1: step" in w.status.text() and " left" in w.status.text() and "total" in w.status.text()
    # pause: the fake trainer acknowledges it ("paused" event) and waits while RUN_DIR/PAUSE exists; after it
    # has looked at the flag three times, still no step follows the "paused" event in the progress file
    w.pause_btn.setChecked(True)
    assert (run_dir / "PAUSE").exists() and w.state == "paused"
    qtbot.waitUntil(lambda: _pause_polls(run_dir) >= 3, timeout=15000)
    assert read_progress(run_dir / "progress.jsonl")[0][-1]["event"] == "paused"
    qtbot.waitUntil(lambda: any(e.get("event") == "paused" for e in w.events), timeout=10000)
    n = len(w.events)
    w.pause_btn.setChecked(False)
    assert not (run_dir / "PAUSE").exists() and w.state == "running"
    qtbot.waitUntil(lambda: len(w.events) > n + 3, timeout=10000)
    w.stop_btn.click()
    assert (run_dir / "STOP").exists() and w.state == "stopping"
    assert w.wait(30) == 0
    late = _late_imports(modules_before)
    assert w.state == "stopped" and w.events[-1]["event"] == "stopped"
    assert [e.path.name for e in _registry.list_checkpoints("denoiser")] == ["denoiser.pt"]
    assert "registered" in w.status.text()
    drawn = w.plot.draw_count
    w.plot.redraw(force=True)
    qtbot.waitUntil(lambda: w.plot.draw_count > drawn, timeout=10000)
    _assert_gui_thread_not_blocked(work_threads, late)


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
    from napari_lidnet._boxes import shapes_layer_data
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


def test_real_cli_training_stop_checkpoint_and_gui_not_blocked(train_widget, tmp_path, qtbot, work_threads):
    """The real ``python -m src_training train`` from the widget: progress arrives, Stop ends it cleanly
    (exit 0), the checkpoints load with weights_only=True and are registered; the GUI thread only shows
    what worker threads read and rendered."""
    import torch

    from napari_lidnet import _registry

    w = train_widget
    run_dir = tmp_path / "run_real"
    w.set_values(sample="lung1", run_dir=run_dir, denoiser="cpce", backbone="resnet18", image_size=64,
                 t1=2, t2=2, t3=2, rounds=1, batch_size=2, device="cpu")
    modules_before = set(sys.modules)
    w.start()
    qtbot.waitUntil(lambda: any(e.get("event") == "step" for e in w.events) or not w.running, timeout=90000)
    assert w.running, f"trainer ended early: {w.status.text()}"
    w.stop()
    rc = w.wait(90)
    late = _late_imports(modules_before)  # before this test loads the checkpoints with torch
    assert rc == 0, w.status.text()
    kinds = [e.get("event") for e in w.events]
    assert "step" in kinds and ("stopped" in kinds or "done" in kinds)
    for name in ("denoiser.pt", "detector.pt"):
        ck = torch.load(run_dir / name, map_location="cpu", weights_only=True)
        assert ck["kind"] == name[:-3] and ck["state_dict"]
    assert {e.kind for e in _registry.list_checkpoints()} == {"denoiser", "detector"}
    assert w.state in ("stopped", "finished")
    drawn = w.plot.draw_count
    w.plot.redraw(force=True)
    qtbot.waitUntil(lambda: w.plot.draw_count > drawn, timeout=10000)
    _assert_gui_thread_not_blocked(work_threads, late)


# ------------------------------------------------------------------------------------------- run client
def test_run_client_folder_rules_and_control_files(tmp_path):
    """src_training.runs (no Qt): argv, refusal of a used folder, resume files, PAUSE / STOP, log tail."""
    from src_training import runs
    from src_training.errors import LidnetError

    run = tmp_path / "run"
    cmd = runs.training_command(run / "c.json", run, resume=run / "trainer_state.pt", method="baseline")
    assert cmd[1:4] == ["-m", "src_training", "train"] and cmd[-4:] == [
        "--method", "baseline", "--resume", str(run / "trainer_state.pt")]
    assert "--method" not in runs.training_command(run / "c.json", run)
    assert runs.check_new_run_dir(run) == run  # a folder that does not exist yet is fine
    with pytest.raises(LidnetError, match="trainer_state.pt"):
        runs.resume_files(run)
    run.mkdir()
    (run / "progress.jsonl").write_text("")
    with pytest.raises(LidnetError, match="already holds a training run"):
        runs.check_new_run_dir(run)
    (run / "trainer_state.pt").write_bytes(b"x")
    with pytest.raises(LidnetError, match="No configuration"):
        runs.resume_files(run)
    (run / "config.json").write_text("{}")
    assert runs.resume_files(run) == (run / "trainer_state.pt", run / "config.json")
    (run / "widget_config.json").write_text("{}")
    assert runs.resume_files(run)[1] == run / "widget_config.json"  # the client's own config first
    runs.request_pause(run)
    assert (run / "PAUSE").exists()
    runs.request_stop(run)  # lifts the pause so that the trainer sees the request
    assert (run / "STOP").exists() and not (run / "PAUSE").exists()
    assert runs.model_files(run) == {}
    (run / "detector.pt").write_bytes(b"x")
    assert runs.model_files(run) == {"detector": run / "detector.pt"}
    assert runs.log_tail(run) == ""
    (run / "train.log").write_text("".join(f"line {i}\n" for i in range(30)))
    assert runs.log_tail(run, 2) == "line 28\nline 29"
    assert runs.event_dict({"event": "step"}) == {"event": "step"}
    env = runs.child_env()
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(Path(runs.__file__).resolve().parents[1])
