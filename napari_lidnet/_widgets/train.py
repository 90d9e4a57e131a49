"""Train widget: collaborative LIDnet training in a background process, watched live from napari.

The training runs as ``python -m src_training train --config CONFIG --out RUN_DIR`` in a separate process
(GPU memory is freed when it exits; the viewer stays responsive), driven through the Qt-free run client
:mod:`src_training.runs`. A napari thread worker tails ``RUN_DIR/progress.jsonl``
(:func:`src_training.runs.watch_training`) and hands the events to the GUI thread, which updates a live loss
plot (:mod:`.loss_plot`, rendered in a worker thread too), a status line and the buttons. Control goes
through files, as the CLI contract says: ``RUN_DIR/PAUSE`` (the trainer waits while it exists),
``RUN_DIR/STOP`` (finish the step, save, exit 0). When the process ends, ``denoiser.pt`` and ``detector.pt``
are registered in :mod:`napari_lidnet._registry` so the Denoise and Detect widgets list them.

Module map: the form (data, model, schedule, run folder) is :class:`.train_form.TrainForm`; this module adds
the controller (:class:`TrainWidget`). The names tests and scripts import from here
(``training_command``, ``save_layers_npz``, the run-folder file names...) are re-exported.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QApplication, QHBoxLayout, QLabel, QPushButton, QWidget

from src_training.errors import LidnetError
from src_training.runs import (
    CLIENT_CONFIG_FILE,
    LOG_FILE,
    PAUSE_FILE,
    PROGRESS_FILE,
    STATE_FILE,
    STOP_FILE,
    RunPace,
    check_new_run_dir,
    close_log,
    default_runs_root,
    event_dict,
    launch_training,
    log_tail,
    model_files,
    request_pause,
    request_stop,
    resume_files,
    run_pace,
    training_command,
    watch_training,
)
from src_training.training import read_progress

from .. import _registry
from .._messages import notify_error, notify_info
from ._checkpoints import register_run_dir
from ._lifecycle import on_window_close
from ._tasks import start_worker, wait_worker
from .loss_plot import PHASE_COLORS, LossPlot, render_loss_plot
from .train_form import (
    CUSTOM,
    DATA_LAYERS,
    DATA_PATH,
    DATA_SAMPLE,
    LAYER_DATA_FILE,
    PRESETS,
    TrainForm,
    default_preset_name,
    save_layers_npz,
)

if TYPE_CHECKING:
    import napari

#: The configuration file the widget writes into the run folder (``src_training.runs.CLIENT_CONFIG_FILE``).
CONFIG_FILE = CLIENT_CONFIG_FILE

#: Events that carry the run's current position (shown in the status line).
_STATUS_EVENTS = ("step", "phase_start", "checkpoint", "paused", "stopped", "done", "error")


class TrainWidget(TrainForm):
    """Dock widget: configure and run LIDnet collaborative training in the background.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    proc : subprocess.Popen or None
        The running training process.
    worker : napari worker or None
        The progress watcher (a thread worker running :func:`src_training.runs.watch_training`).
    run_dir : Path or None
        The current run folder.
    events : list[dict]
        Every progress event received from the current run folder (in order).
    last_exit_code : int or None
        Exit code of the last finished process.
    state : str
        ``idle``, ``running``, ``paused``, ``stopping``, ``finished``, ``stopped`` or ``failed``.
    """

    #: argv factory ``(config_path, run_dir, resume, method) -> list[str]``; tests may replace it.
    command_factory: Callable[..., list[str]] = staticmethod(training_command)

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None):
        super().__init__(napari_viewer, parent)
        self.proc: subprocess.Popen | None = None
        self.worker = None
        self.run_dir: Path | None = None
        self.events: list[dict] = []
        self.last_exit_code: int | None = None
        self.last_error: str | None = None
        self.state = "idle"
        self._offset = 0
        self._t_start = 0.0
        self._last: dict = {}

        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.stop_btn = QPushButton("Stop")
        self.resume_btn = QPushButton("Resume from checkpoint")
        self.resume_btn.setToolTip("Relaunch in the run folder with --resume RUN_DIR/trainer_state.pt")
        ctl = QHBoxLayout()
        for b in (self.start_btn, self.pause_btn, self.stop_btn, self.resume_btn):
            ctl.addWidget(b)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(
            self.status.textInteractionFlags() | Qt.TextInteractionFlag.TextSelectableByMouse
        )
        self.plot = LossPlot(self)
        layout = self.layout()  # the form's groups are already in it
        layout.addLayout(ctl)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, stretch=1)

        self.start_btn.clicked.connect(self._on_start)
        self.pause_btn.toggled.connect(self._on_pause_toggled)
        self.stop_btn.clicked.connect(self._on_stop)
        self.resume_btn.clicked.connect(self._on_resume)
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(500)
        self._redraw_timer.timeout.connect(self.plot.redraw)
        self._redraw_timer.start()  # renders (in a thread) only when new data arrived
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._update_buttons()

    # ------------------------------------------------------------------ run control
    @property
    def running(self) -> bool:
        """True while the training process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> subprocess.Popen:
        """Write the config into the run folder and launch a new training process there.

        Returns
        -------
        subprocess.Popen

        Raises
        ------
        LidnetError
            Already running, the run folder already holds a run (use Resume), or a bad configuration.
        """
        if self.running:
            raise LidnetError("A training run is already going; stop it first.")
        run_dir = Path(self.run_edit.text().strip() or default_runs_root() / "run").expanduser().resolve()
        check_new_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.build_config(run_dir)
        cfg_path = cfg.save_json(run_dir / CLIENT_CONFIG_FILE)
        self.plot.clear()
        self.events = []
        self._offset = 0
        return self._launch(run_dir, cfg_path, resume=None)

    def resume(self) -> subprocess.Popen:
        """Relaunch the training of the run folder from ``RUN_DIR/trainer_state.pt`` (same config).

        Raises
        ------
        LidnetError
            Already running, or no trainer state / config in the run folder.
        """
        if self.running:
            raise LidnetError("Training is running; stop it before resuming.")
        run_dir = Path(self.run_edit.text().strip()).expanduser().resolve()
        state, cfg_path = resume_files(run_dir)
        if self.run_dir != run_dir:  # another folder: show its whole history
            self.plot.clear()
            self.events = []
            self._offset = 0
        prog = run_dir / PROGRESS_FILE
        if self._offset == 0 and prog.exists():
            self._load_history(prog)
        return self._launch(run_dir, cfg_path, resume=state)

    def _load_history(self, prog: Path) -> None:
        events, self._offset = read_progress(prog, 0)
        self._on_events(([event_dict(e) for e in events], self._offset))

    def _launch(self, run_dir: Path, cfg_path: Path, resume: Path | None) -> subprocess.Popen:
        cmd = self.command_factory(cfg_path, run_dir, resume, self.method_combo.currentText())
        self.run_dir = run_dir
        self.last_exit_code = None
        self.last_error = None
        self.proc = launch_training(cmd, run_dir)
        self._t_start = time.monotonic()
        self.state = "running"
        self.pause_btn.blockSignals(True)
        self.pause_btn.setChecked(False)
        self.pause_btn.setText("Pause")
        self.pause_btn.blockSignals(False)
        self.status.setText(f"started (pid {self.proc.pid}) in {run_dir}; preparing data…")
        self.worker = start_worker(
            watch_training, self.proc, run_dir / PROGRESS_FILE, self._offset,
            yielded=self._on_events, returned=self._on_finished, errored=self._on_watch_error,
        )
        on_window_close(self.window(), self.shutdown)  # viewer closed: stop the run cleanly
        register_run_dir(run_dir.parent)
        self._update_buttons()
        return self.proc

    def pause(self, paused: bool = True) -> None:
        """Create (``paused=True``) or remove ``RUN_DIR/PAUSE``; the trainer waits, computing nothing, while it
        exists."""
        if self.run_dir is None:
            return
        request_pause(self.run_dir, paused)
        if self.running:
            self.state = "paused" if paused else "running"
        self._update_status()
        self._update_buttons()

    def stop(self, force: bool = False) -> None:
        """Ask the trainer to stop: ``RUN_DIR/STOP`` (it finishes the step, saves the checkpoints and exits 0).

        A pause is lifted so that the trainer can see the request. ``force=True`` (or a second press of Stop)
        sends SIGTERM, which the CLI also handles by saving and exiting.
        """
        if self.run_dir is None or not self.running:
            return
        request_stop(self.run_dir, self.proc, force=force or self.state == "stopping")
        self.state = "stopping"
        self.status.setText("stopping: finishing the current step and saving the checkpoints…")
        self._update_buttons()

    def wait(self, timeout: float = 120.0) -> int | None:
        """Process Qt events until the training process has ended and its events are handled (tests/scripts).
        Returns the exit code (None on timeout)."""
        t0 = time.monotonic()
        while self.worker is not None or self.running:
            QApplication.processEvents()
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(0.01)
        QApplication.processEvents()
        return self.last_exit_code

    def shutdown(self) -> None:
        """On quit or when the viewer window closes: ask a running trainer to stop cleanly (``RUN_DIR/STOP``:
        it finishes the current step, saves ``trainer_state.pt`` and the model files, and exits 0 by itself,
        also after napari has gone), stop the progress-watcher thread and the plot timer. Idempotent."""
        try:
            if self.running:
                self.stop()
        except Exception:  # noqa: BLE001 - closing must go on
            pass
        try:
            self._redraw_timer.stop()
        except RuntimeError:  # Qt object already deleted
            pass
        worker, self.worker = self.worker, None
        if worker is not None:
            try:
                worker.quit()  # the watcher yields every 0.2 s
            except RuntimeError:
                pass
            wait_worker(worker, 5.0)
            close_log(self.proc)  # the child keeps its own handle to train.log

    # ------------------------------------------------------------------ worker callbacks (GUI thread)
    def _on_events(self, item: tuple[list[dict], int]) -> None:
        events, self._offset = item
        if not events:
            if self.running:
                self._update_status()
            return
        self.events.extend(events)
        self.plot.add_events(events)
        for ev in events:
            if ev.get("event") in _STATUS_EVENTS:
                self._last = ev
            if ev.get("event") == "error":
                self.last_error = str(ev.get("message") or "")
        self._update_status()

    def _on_finished(self, rc: int) -> None:
        self.worker = None
        self.last_exit_code = rc
        run_dir = self.run_dir
        registered = self._register_checkpoints() if rc == 0 else []
        kinds = {ev.get("event") for ev in self.events}
        if rc == 0:
            stopped = (self.state == "stopping" or "stopped" in kinds) and "done" not in kinds
            self.state = "stopped" if stopped else "finished"
            what = ", ".join(p.name for p in registered) or "no checkpoint found"
            self.status.setText(
                f"{self.state} (exit 0) after {self._elapsed()}; {what} registered for Denoise / Detect. "
                f"Folder: {run_dir}"
            )
            notify_info(f"Training {self.state}: {what} in {run_dir}")
        else:
            self.state = "failed"
            tail = log_tail(run_dir) if run_dir else ""
            event_msg = self.last_error  # message of an 'error' progress event, if the trainer wrote one
            lines = [ln for ln in tail.splitlines() if ln.strip()]
            key = [ln for ln in lines if "error" in ln.lower()][-2:] or lines[-3:]
            self.last_error = tail or event_msg
            self.status.setText(
                f"FAILED (exit code {rc}): " + (event_msg or "") + "\n" + "\n".join(key)
                + f"\n(full output: {run_dir / LOG_FILE if run_dir else LOG_FILE})"
            )
            self.status.setToolTip(tail)
            notify_error(LidnetError(f"Training failed (exit code {rc}); see {run_dir / LOG_FILE}.\n{tail}"))
        self.proc = None
        self._update_buttons()

    def _on_watch_error(self, exc: BaseException) -> None:
        self.worker = None
        notify_error(exc, "Training monitor")
        self._update_buttons()

    def _register_checkpoints(self) -> list[Path]:
        if self.run_dir is None:
            return []
        step = next((ev.get("global_step") for ev in reversed(self.events) if ev.get("global_step") is not None), None)
        out = []
        for kind, p in model_files(self.run_dir).items():
            label = f"{self.run_dir.name} / {kind} ({self.method_combo.currentText()}, step {step})"
            _registry.register_checkpoint(p, kind, label=label, run_dir=str(self.run_dir), step=step)
            out.append(p)
        return out

    # ------------------------------------------------------------------ display
    def _elapsed(self) -> str:
        secs = float(self._last.get("elapsed_s") or (time.monotonic() - self._t_start))
        m, s = divmod(int(secs), 60)
        h, m = divmod(m, 60)
        return f"{h:d}:{m:02d}:{s:02d}"

    def pace(self) -> RunPace | None:
        """Position, seconds per step and time left of the watched run (:func:`src_training.runs.run_pace`
        over the events received so far)."""
        return run_pace(self.events)

    def _update_status(self) -> None:
        ev = self._last
        parts = [self.state]
        pace = self.pace() if ev else None
        if pace is not None:
            parts.append(pace.text())
            if pace.total_steps:
                parts.append(f"total {pace.global_step}/{pace.total_steps}")
        if ev:
            losses = ev.get("losses") or {}
            if losses:
                parts.append(", ".join(f"{k} {float(v):.4g}" for k, v in list(losses.items())[:4]))
        else:
            parts.append("preparing data (loading, simulating the low-dose scan)…")
        parts.append(f"elapsed {self._elapsed()}")
        self.status.setText(" · ".join(parts))

    def _update_buttons(self) -> None:
        running = self.running
        self.start_btn.setEnabled(not running)
        self.resume_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running and self.state != "stopping")
        self.stop_btn.setEnabled(running)
        self.stop_btn.setText("Force stop" if self.state == "stopping" else "Stop")

    # ------------------------------------------------------------------ button slots
    def _on_start(self) -> None:
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            notify_error(exc, "Train")

    def _on_resume(self) -> None:
        try:
            self.resume()
        except Exception as exc:  # noqa: BLE001
            notify_error(exc, "Resume")

    def _on_pause_toggled(self, checked: bool) -> None:
        self.pause(checked)
        self.pause_btn.setText("Resume" if checked else "Pause")

    def _on_stop(self) -> None:
        self.stop(force=self.state == "stopping")


__all__ = [
    "CONFIG_FILE",
    "CUSTOM",
    "DATA_LAYERS",
    "DATA_PATH",
    "DATA_SAMPLE",
    "LAYER_DATA_FILE",
    "LOG_FILE",
    "PAUSE_FILE",
    "PHASE_COLORS",
    "PRESETS",
    "PROGRESS_FILE",
    "STATE_FILE",
    "STOP_FILE",
    "LossPlot",
    "TrainWidget",
    "default_preset_name",
    "default_runs_root",
    "event_dict",
    "launch_training",
    "log_tail",
    "render_loss_plot",
    "save_layers_npz",
    "training_command",
    "watch_training",
]
