"""The run-folder protocol shared by the trainers, ``lidnet train`` and the napari Train widget.

This module owns what a training process and its watchers agree on, and nothing else:

* the file names of a run folder ``RUN_DIR`` (:data:`PROGRESS_FILE`, :data:`STATE_FILE`, :data:`DENOISER_FILE`,
  :data:`DETECTOR_FILE`, :data:`SEGMENTER_FILE`, :data:`CONFIG_FILE`, and the control files :data:`STOP_FILE`
  and :data:`PAUSE_FILE`);
* the progress events (:class:`ProgressEvent`, :data:`EVENT_TYPES`, :data:`PHASES`): one JSON object a line in
  ``RUN_DIR/progress.jsonl``, appended by :class:`ProgressWriter` / :func:`append_event` and read back while
  the file grows by :func:`read_progress`;
* the control files: a trainer finishes its current step, saves and stops when ``RUN_DIR/STOP`` appears
  (:func:`stop_file_exists`, removed again by :func:`remove_stop_file`), and waits without computing while
  ``RUN_DIR/PAUSE`` exists (:func:`pause_file_exists`).

Formats: ``docs/architecture.md`` (CLI contract). Nothing here imports torch.

Progress-event numbering: ``round`` is 0 for T1, the baseline and detector-only training and 1..rounds for
T2/T3/joint; ``step`` counts the completed steps of the current phase (1..``phase_steps``; 0 in
``phase_start``), ``global_step`` the completed steps of the whole schedule (``total_steps``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Optional

#: Values of :attr:`ProgressEvent.event`.
EVENT_TYPES = ("step", "phase_start", "checkpoint", "paused", "stopped", "done", "error")
#: Values of :attr:`ProgressEvent.phase` (Algorithm 1 of Chen et al. 2021: T1, T2, T3; ``joint`` = the
#: simultaneous-strategy ablation; ``baseline`` = a denoiser trained alone).
PHASES = ("T1", "T2", "T3", "baseline", "joint")

#: Exact-resumption state of a run (networks, optimizers, position, data order, RNG states).
STATE_FILE = "trainer_state.pt"
#: The trained denoiser (``kind = "denoiser"``).
DENOISER_FILE = "denoiser.pt"
#: The trained detector (``kind = "detector"``).
DETECTOR_FILE = "detector.pt"
#: TOD-Net's trained U-Net (``kind = "segmenter"``).
SEGMENTER_FILE = "segmenter.pt"
#: One :class:`ProgressEvent` JSON object a line.
PROGRESS_FILE = "progress.jsonl"
#: The run's :class:`~src_training.config.TrainConfig` as JSON (written by ``lidnet train``).
CONFIG_FILE = "config.json"
#: Created by a watcher: the trainer finishes the current step, saves and stops.
STOP_FILE = "STOP"
#: Present while the trainer must wait (no compute); removing it continues the run.
PAUSE_FILE = "PAUSE"


@dataclass
class ProgressEvent:
    """One line of ``progress.jsonl`` (keys exactly as in the architecture contract).

    Attributes
    ----------
    event : str
        ``step``, ``phase_start``, ``checkpoint``, ``paused``, ``stopped``, ``done`` or ``error``
        (:data:`EVENT_TYPES`).
    phase : str or None
        ``T1``, ``T2``, ``T3``, ``joint`` (simultaneous-strategy ablation) or ``baseline`` (None for an
        error before training started). TOD-Net runs use ``T1`` (downstream network on NDCT) and ``T2``.
    round : int
        0 for T1 / baseline / detector-only, 1..rounds for T2 and T3.
    step : int
        Completed steps of the current phase.
    phase_steps : int
        Steps of the current phase.
    global_step : int
        Completed steps of the whole run.
    total_steps : int
        Steps of the whole run.
    losses : dict str -> float
        Losses of the step (``step`` events), unitless floats as the loss functions return them: T2
        ``total, rec, roi, det`` (Eq. 8 parts) plus the four detector losses; T1/T3 ``det`` plus the four;
        baseline ``rec``. The GAN form adds ``adv`` (generator) and ``critic``, ``gp``, ``wdist`` (Eq. 7);
        TOD-Net adds ``task``; a published baseline loss adds its named parts.
    elapsed_s : float
        Seconds of training so far (including time before a resume, excluding paused time).
    checkpoint : str or None
        Path of the file written (``checkpoint``, ``stopped``, ``done`` events).
    message : str
        Human-readable text.
    grad_shares : dict str -> float
        Each weighted loss term's share of the denoiser's gradient norm (:mod:`src_training.gradients`; keys
        ``rec``, ``roi``, ``det``, ``adv``, ``task``, ``content`` as the method has them; sum 1), as last
        measured (every ``config.grad_shares_every`` denoiser steps); empty before the first denoiser step.
    """

    event: str
    phase: Optional[str]
    round: int = 0
    step: int = 0
    phase_steps: int = 0
    global_step: int = 0
    total_steps: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    checkpoint: Optional[str] = None
    message: str = ""
    grad_shares: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able): losses as floats, shares rounded to 6 decimals, ``elapsed_s`` to ms."""
        d = asdict(self)
        d["losses"] = {str(k): float(v) for k, v in self.losses.items()}
        d["grad_shares"] = {str(k): round(float(v), 6) for k, v in self.grad_shares.items()}
        d["elapsed_s"] = round(float(self.elapsed_s), 3)
        return d

    def to_json(self) -> str:
        """One JSON line (no newline). Non-finite losses are written as null (valid JSON)."""
        d = self.to_dict()
        d["losses"] = {k: (v if math.isfinite(v) else None) for k, v in d["losses"].items()}
        return json.dumps(d, allow_nan=False)


def read_progress(path: str | os.PathLike, start_offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Read new events of a ``progress.jsonl`` written by a running trainer (for the GUI watcher).

    Parameters
    ----------
    path : path-like
        The progress file. A missing file gives no events.
    start_offset : int
        Byte offset returned by the previous call (0 the first time).

    Returns
    -------
    (list of dict, int)
        The complete lines after ``start_offset`` parsed as dicts (a malformed complete line is
        skipped), and the offset to pass next time. A partially written last line (no newline yet) is
        left for the next call. If the file became shorter than ``start_offset`` (a new run replaced it),
        reading restarts at 0. Never raises for an unreadable file (no events instead).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        return [], int(start_offset)
    offset = int(start_offset)
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size - offset)
    except OSError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for line in data[: end + 1].splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return events, offset + end + 1


class ProgressWriter:
    """Appends events to ``RUN_DIR/progress.jsonl`` through one handle, opened at the first write (the folder
    is created then) and flushed after every line, so a watcher sees each event at once.

    Raises
    ------
    OSError
        The folder or the file cannot be written (from :meth:`write`).
    """

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / PROGRESS_FILE
        self._fh: Optional[IO[str]] = None

    def write(self, ev: ProgressEvent) -> None:
        """Append ``ev`` as one JSON line."""
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(ev.to_json() + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Close the handle (a later :meth:`write` opens it again)."""
        if self._fh is not None:
            try:
                self._fh.close()
            finally:
                self._fh = None


def append_event(run_dir: str | os.PathLike, ev: ProgressEvent) -> None:
    """Append one event to ``RUN_DIR/progress.jsonl`` (folder created when missing; open, write, close).

    Raises
    ------
    OSError
        The folder or the file cannot be written.
    """
    writer = ProgressWriter(run_dir)
    try:
        writer.write(ev)
    finally:
        writer.close()


def stop_file_exists(run_dir: Optional[str | os.PathLike]) -> bool:
    """True when ``RUN_DIR/STOP`` exists (False without a run folder)."""
    return run_dir is not None and (Path(run_dir) / STOP_FILE).exists()


def pause_file_exists(run_dir: Optional[str | os.PathLike]) -> bool:
    """True when ``RUN_DIR/PAUSE`` exists (False without a run folder)."""
    return run_dir is not None and (Path(run_dir) / PAUSE_FILE).exists()


def remove_stop_file(run_dir: str | os.PathLike) -> None:
    """Delete ``RUN_DIR/STOP`` after a stop was honoured (no error when it is already gone)."""
    try:
        (Path(run_dir) / STOP_FILE).unlink()
    except FileNotFoundError:
        pass
