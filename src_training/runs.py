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
from datetime import datetime
from pathlib import Path
from typing import Any

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
    "STATE_FILE",
    "STOP_FILE",
    "check_new_run_dir",
    "child_env",
    "close_log",
    "default_runs_root",
    "event_dict",
    "holds_run",
    "launch_training",
    "log_tail",
    "model_files",
    "request_pause",
    "request_stop",
    "resume_files",
    "training_command",
    "watch_training",
]
