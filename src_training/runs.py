"""Client of a ``lidnet train`` run folder: launch the training process, watch its progress, pause / stop
it, read its log. No Qt: the napari Train widget drives a run with these functions, and so can a script.

The run-folder contract is the CLI's (docs/architecture.md, and the file names owned by
:mod:`src_training.training`): the trainer appends one JSON event a line to ``RUN_DIR/progress.jsonl``
(read incrementally with :func:`src_training.training.read_progress`), waits (computing nothing) while
``RUN_DIR/PAUSE`` exists, and finishes the current step, saves ``trainer_state.pt`` plus the model files and
exits 0 when ``RUN_DIR/STOP`` appears or on SIGTERM. This client adds two files of its own:
``RUN_DIR/train.log`` (stdout + stderr of the process, appended per launch) and
``RUN_DIR/widget_config.json`` (the configuration it launched with; the trainer writes its own
``config.json``).

Typical use::

    cmd = training_command(config_path, run_dir)
    proc = launch_training(cmd, run_dir)
    for events, offset in watch_training(proc, run_dir / PROGRESS_FILE):   # returns the exit code
        ...
    request_stop(run_dir)
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from src_training.errors import LidnetError
from src_training.training import (
    CONFIG_FILE,
    DENOISER_FILE,
    DETECTOR_FILE,
    PAUSE_FILE,
    PROGRESS_FILE,
    STATE_FILE,
    STOP_FILE,
    read_progress,
)

#: stdout + stderr of the training process (appended; each launch starts with a ``=== <time> <argv>`` line).
LOG_FILE = "train.log"
#: The configuration the client launched the run with (``TrainConfig`` JSON).
CLIENT_CONFIG_FILE = "widget_config.json"
#: Attribute of the ``Popen`` returned by :func:`launch_training` holding the open ``train.log`` handle.
_LOG_ATTR = "_lidnet_log"


def default_runs_root() -> Path:
    """Where new run folders go by default: ``~/lidnet-runs`` (also searched by the checkpoint choosers)."""
    return Path.home() / "lidnet-runs"


def event_dict(ev: Any) -> dict[str, Any]:
    """A progress event as a plain dict (accepts dicts, dataclasses such as ``ProgressEvent``, or objects
    with ``to_dict``)."""
    if isinstance(ev, dict):
        return ev
    if dataclasses.is_dataclass(ev):
        return dataclasses.asdict(ev)
    if hasattr(ev, "to_dict"):
        return dict(ev.to_dict())
    return dict(vars(ev))


def training_command(config_path: Path, run_dir: Path, resume: Path | None = None, method: str = "lidnet") -> list[str]:
    """The argv of the background training process (no shell):
    ``[python, -m, src_training, train, --config, CONFIG, --out, RUN_DIR, (--method M), (--resume STATE)]``
    (``--method`` only for another method than ``lidnet``)."""
    cmd = [sys.executable, "-m", "src_training", "train", "--config", str(config_path), "--out", str(run_dir)]
    if method and method != "lidnet":
        cmd += ["--method", method]
    if resume is not None:
        cmd += ["--resume", str(resume)]
    return cmd


def child_env() -> dict[str, str]:
    """Environment of the training process: ours, with this checkout on ``PYTHONPATH`` (works uninstalled)
    and unbuffered output (``train.log`` follows the run)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


# ------------------------------------------------------------------------------------------- run folder
def holds_run(run_dir: Path) -> bool:
    """True when ``run_dir`` already holds a training run (a trainer state or a progress file)."""
    run_dir = Path(run_dir)
    return (run_dir / STATE_FILE).exists() or (run_dir / PROGRESS_FILE).exists()


def check_new_run_dir(run_dir: Path) -> Path:
    """Refuse a folder that already holds a run (a new start would mix two runs' progress); returns it.

    Raises
    ------
    LidnetError
        ``run_dir`` holds a run (the message says to resume it or choose a new folder).
    """
    if holds_run(run_dir):
        raise LidnetError(
            f"{run_dir} already holds a training run. Press 'Resume from checkpoint' to continue it, or "
            "choose a new run folder."
        )
    return Path(run_dir)


def resume_files(run_dir: Path) -> tuple[Path, Path]:
    """``(trainer state, configuration)`` to resume the run in ``run_dir`` with.

    The configuration is the client's ``widget_config.json``, else the trainer's ``config.json``.

    Raises
    ------
    LidnetError
        No ``trainer_state.pt`` (nothing to resume) or no configuration in the folder.
    """
    run_dir = Path(run_dir)
    state = run_dir / STATE_FILE
    if not state.is_file():
        raise LidnetError(f"No {STATE_FILE} in {run_dir}: nothing to resume (start a new run instead).")
    cfg = next((p for p in (run_dir / CLIENT_CONFIG_FILE, run_dir / CONFIG_FILE) if p.is_file()), None)
    if cfg is None:
        raise LidnetError(f"No configuration ({CLIENT_CONFIG_FILE} or {CONFIG_FILE}) in {run_dir}.")
    return state, cfg


def model_files(run_dir: Path) -> dict[str, Path]:
    """The model checkpoints a run left in its folder: ``{"denoiser": path, "detector": path}`` (existing
    files only)."""
    run_dir = Path(run_dir)
    found = {"denoiser": run_dir / DENOISER_FILE, "detector": run_dir / DETECTOR_FILE}
    return {kind: p for kind, p in found.items() if p.is_file()}


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


# ------------------------------------------------------------------------------------------- process
def launch_training(cmd: Sequence[str], run_dir: Path) -> subprocess.Popen:
    """Start the training process in ``run_dir`` (created if needed); stdout and stderr go to
    ``RUN_DIR/train.log`` (appended, after a ``=== <time> <argv>`` line).

    Stale ``STOP`` / ``PAUSE`` files of an earlier run in the folder are removed first. The log handle stays
    open in this process until :func:`close_log` (called by :func:`watch_training` when the process ends).

    Raises
    ------
    OSError
        The folder or the log cannot be written, or the program cannot be started.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (STOP_FILE, PAUSE_FILE):
        _unlink(run_dir / name)
    log = open(run_dir / LOG_FILE, "ab")  # noqa: SIM115 - closed by close_log when the process ends
    log.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {' '.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=child_env(), cwd=str(run_dir)
    )
    setattr(proc, _LOG_ATTR, log)
    return proc


def close_log(proc: subprocess.Popen | None) -> None:
    """Close this process's handle of ``train.log`` (the child keeps its own). Idempotent."""
    log = getattr(proc, _LOG_ATTR, None)
    if log is not None:
        log.close()


def watch_training(
    proc: subprocess.Popen,
    progress_path: Path,
    offset: int = 0,
    poll_s: float = 0.2,
    read: Callable[[Path, int], tuple[list, int]] | None = None,
) -> Iterator[tuple[list[dict], int]]:
    """Generator (run it in a worker thread): tail ``progress.jsonl`` until the process exits.

    Yields ``(events, new_offset)`` every ``poll_s`` seconds (``events`` may be empty: yielding often lets
    a napari ``worker.quit()`` act quickly) and returns the process's exit code. The lines written just
    before the exit are read once more; ``train.log`` is then closed (:func:`close_log`).

    Parameters
    ----------
    proc : subprocess.Popen
        The training process.
    progress_path : Path
        ``RUN_DIR/progress.jsonl`` (may not exist yet).
    offset : int
        Byte offset to start reading from (the end of earlier runs' lines when resuming).
    poll_s : float
        Seconds between polls.
    read : callable, optional
        ``read(path, offset) -> (events, new_offset)``; default :func:`src_training.training.read_progress`.
    """
    if read is None:
        read = read_progress
    while True:
        rc = proc.poll()
        events: list = []
        if progress_path.exists():
            events, offset = read(progress_path, offset)
        yield [event_dict(e) for e in events], offset
        if rc is not None:
            if progress_path.exists():  # lines written just before the exit
                events, offset = read(progress_path, offset)
                if events:
                    yield [event_dict(e) for e in events], offset
            close_log(proc)
            return rc
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------------- pace / ETA
def format_duration(seconds: float) -> str:
    """A duration in words a reader takes in at a glance: ``"under a minute"``, ``"about 3 min"``,
    ``"about 1 h 20 min"``, ``"about 2 days"`` (rounded; NaN or negative -> ``"unknown"``)."""
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return "unknown"
    if not s == s or s < 0 or s == float("inf"):
        return "unknown"
    if s < 45:
        return "under a minute"
    minutes = int(round(s / 60.0))
    if minutes < 60:
        return f"about {max(minutes, 1)} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"about {hours} h" + (f" {rest} min" if rest and hours < 10 else "")
    return f"about {int(round(hours / 24))} days"


@dataclass(frozen=True)
class RunPace:
    """Where a training run stands and how fast it goes, from its progress events (:func:`run_pace`).

    Attributes
    ----------
    phase : str or None
        Current phase (``T1``, ``T2``, ``T3``, ``baseline``, ``joint``).
    round : int
    step, phase_steps : int
        Completed steps of the current phase and its length.
    global_step, total_steps : int
        Completed steps of the whole run and its length.
    seconds_per_step : float or None
        Training seconds per step of the current phase over its last steps (paused time excluded); None
        before the first timed step.
    remaining_s : float or None
        Estimated seconds left: the current phase's remaining steps at its own pace, then the later phases,
        taken to repeat the phases of a round (T2, T3) in order, each at the pace it had (T2 and T3 cost
        differently); a phase not timed yet counts at the current pace.
    """

    phase: Optional[str]
    round: int
    step: int
    phase_steps: int
    global_step: int
    total_steps: int
    seconds_per_step: Optional[float]
    remaining_s: Optional[float]

    def text(self) -> str:
        """``"T2 round 2: step 140/240 · 1.9 s/step · about 3 min left"`` (parts dropped while unknown)."""
        where = str(self.phase or "")
        if self.round and self.phase not in ("T1", "baseline"):
            where += f" round {self.round}"
        parts = [f"{where}: step {self.step}/{self.phase_steps}" if where else f"step {self.global_step}"]
        if self.seconds_per_step is not None:
            sps = self.seconds_per_step
            parts.append(f"{sps:.1f} s/step" if sps >= 0.95 else f"{1.0 / max(sps, 1e-9):.1f} steps/s")
        if self.remaining_s is not None:
            left = format_duration(self.remaining_s)
            parts.append("almost done" if self.global_step >= self.total_steps > 0 else f"{left} left")
        return " · ".join(parts)


def _num(ev: dict, key: str) -> Optional[float]:
    v = ev.get(key)
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def run_pace(events: Sequence[dict], window: int = 20) -> Optional[RunPace]:
    """Pace and time left of a run from its progress events (as in ``progress.jsonl``), no clock needed.

    Each event carries ``elapsed_s`` (training seconds, paused time excluded) and the step counters, so the
    seconds per step of a phase are the differences of ``elapsed_s`` over its last ``window`` steps (its
    ``phase_start`` event included, so one step is enough). The steps after the current phase are taken to
    repeat the phases of a round in order (the previous round's, else the current round's so far), each
    at its own measured pace (T2 and T3 cost differently).

    Parameters
    ----------
    events : sequence of dict
        Progress events in file order (``event``, ``phase``, ``round``, ``step``, ``phase_steps``,
        ``global_step``, ``total_steps``, ``elapsed_s``). A resumed run's events may follow the first run's.
    window : int
        Steps of the current phase the pace is measured over.

    Returns
    -------
    RunPace or None
        None before the first ``phase_start`` / ``step`` event.
    """
    marks: list[tuple[str, int, float, float]] = []  # (phase, round, phase step, elapsed) of the current phase
    pace_by_phase: dict[str, float] = {}  # phase -> s/step, as last measured
    seen: list[tuple[str, int, int]] = []  # (phase, round, steps) of the phases met, in order
    last: Optional[dict] = None
    for ev in events:
        if ev.get("event") not in ("step", "phase_start"):
            continue
        el, st = _num(ev, "elapsed_s"), _num(ev, "step")
        if el is None or st is None:
            continue
        key = (str(ev.get("phase")), int(ev.get("round") or 0))
        if not seen or seen[-1][:2] != key:
            seen.append((key[0], key[1], int(ev.get("phase_steps") or 0)))
        if marks and ((marks[-1][0], marks[-1][1]) != key or st < marks[-1][2] or el < marks[-1][3]):
            # a new phase (or a resumed launch): keep the finished phase's pace
            pace = _pace(marks)
            if pace is not None:
                pace_by_phase[marks[-1][0]] = pace
            marks = []
        marks.append((key[0], key[1], st, el))
        if len(marks) > window + 1:
            marks = marks[-(window + 1):]
        last = ev
    if last is None:
        return None
    step, phase_steps = int(last.get("step") or 0), int(last.get("phase_steps") or 0)
    g, total = int(last.get("global_step") or 0), int(last.get("total_steps") or 0)
    current = _pace(marks)
    phase = str(last.get("phase")) if last.get("phase") else None
    rnd = int(last.get("round") or 0)
    if current is not None and phase:
        pace_by_phase[phase] = current
    remaining = None
    if current is not None and total:
        in_phase = max(phase_steps - step, 0)
        later = max(total - g - in_phase, 0)
        remaining = in_phase * current + _later_seconds(later, seen, phase, rnd, pace_by_phase, current)
    return RunPace(phase=phase, round=rnd, step=step, phase_steps=phase_steps, global_step=g, total_steps=total,
                   seconds_per_step=current, remaining_s=remaining)


def _later_seconds(steps: int, seen: Sequence[tuple[str, int, int]], phase: Optional[str], rnd: int,
                   pace: dict[str, float], default: float) -> float:
    """Seconds of the ``steps`` after the current phase: the phases of a round (the previous one when seen,
    else the current one so far) repeat in order from the current phase on, each at its own measured pace
    (the current pace for a phase not timed yet)."""
    template = [(n, k) for n, r, k in seen if r == rnd - 1 and r >= 1] or [(n, k) for n, r, k in seen if r == rnd]
    names = [n for n, _k in template]
    if not steps or not template or phase not in names:
        return steps * pace.get(str(phase), default)
    i = names.index(phase)
    secs = 0.0
    while steps > 0:
        i = (i + 1) % len(template)
        name, n = template[i]
        take = min(steps, max(n, 1))
        secs += take * pace.get(name, default)
        steps -= take
    return secs


def _pace(marks: Sequence[tuple[str, int, float, float]]) -> Optional[float]:
    if len(marks) < 2:
        return None
    d_steps = marks[-1][2] - marks[0][2]
    d_time = marks[-1][3] - marks[0][3]
    if d_steps <= 0 or d_time < 0:
        return None
    return d_time / d_steps


def request_pause(run_dir: Path, paused: bool = True) -> None:
    """Create (``paused=True``) or remove ``RUN_DIR/PAUSE``; the trainer waits, computing nothing, while it
    exists (it writes a ``paused`` event when it starts waiting)."""
    flag = Path(run_dir) / PAUSE_FILE
    if paused:
        flag.touch()
    else:
        _unlink(flag)


def request_stop(run_dir: Path, proc: subprocess.Popen | None = None, force: bool = False) -> None:
    """Ask the trainer to stop: ``RUN_DIR/STOP`` (it finishes the step, saves the checkpoints and exits 0).

    A pause is lifted so that the trainer can see the request. ``force=True`` also sends SIGTERM to ``proc``,
    which the CLI handles the same way (save, exit 0).
    """
    run_dir = Path(run_dir)
    (run_dir / STOP_FILE).touch()
    _unlink(run_dir / PAUSE_FILE)
    if force and proc is not None:
        proc.terminate()


def log_tail(run_dir: Path, n_lines: int = 15) -> str:
    """The last ``n_lines`` lines of ``RUN_DIR/train.log`` (stdout + stderr of the process; at most the last
    16000 bytes are read); ``""`` when there is no log."""
    path = Path(run_dir) / LOG_FILE
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-n_lines:])


__all__ = [
    "CLIENT_CONFIG_FILE",
    "LOG_FILE",
    "PAUSE_FILE",
    "PROGRESS_FILE",
    "RunPace",
    "STATE_FILE",
    "STOP_FILE",
    "check_new_run_dir",
    "child_env",
    "close_log",
    "default_runs_root",
    "event_dict",
    "format_duration",
    "holds_run",
    "launch_training",
    "log_tail",
    "model_files",
    "request_pause",
    "request_stop",
    "resume_files",
    "run_pace",
    "training_command",
    "watch_training",
]
