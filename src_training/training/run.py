"""The ``lidnet train`` runner: configuration + run folder in, a finished (or cleanly stopped) run out.

Owns the map from method name to trainer (:data:`TRAINERS`), building the training data of a configuration
(in memory or streamed, prepared once per node under torchrun), ``RUN_DIR/config.json``, the start of
``progress.jsonl`` (fresh or appended on resume), an ``error`` event when the run cannot start, the console
lines, and the SIGTERM / SIGINT handling that turns a signal into a clean stop (:func:`run_training`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Optional

from torch.utils.data import Dataset

from src_training import distributed as _dist
from src_training.checkpoint import atomic_write_text
from src_training.config import TrainConfig
from src_training.data import SliceDataset, prepare_cases
from src_training.data.streaming import StreamingSliceDataset
from src_training.errors import ConfigError, LidnetError
from src_training.training.baseline import BaselineTrainer
from src_training.training.detector import DetectorTrainer
from src_training.training.events import CONFIG_FILE, PROGRESS_FILE, STATE_FILE, ProgressEvent, append_event
from src_training.training.lidnet import CollaborativeTrainer
from src_training.training.todnet import TODNetTrainer

#: ``lidnet train --method`` -> trainer class.
TRAINERS = {
    "lidnet": CollaborativeTrainer,
    "baseline": BaselineTrainer,
    "detector": DetectorTrainer,
    "todnet": TODNetTrainer,
}


def prepare_dataset(config: TrainConfig, run_dir: Path, ctx: "_dist.DistContext") -> Dataset:
    """The dataset of ``config.train_data`` (LDCT simulated and cached in ``config.cache_dir`` or
    ``RUN_DIR/ldct_cache``): an in-memory :class:`~src_training.data.SliceDataset`, or with
    ``config.streaming`` a :class:`~src_training.data.streaming.StreamingSliceDataset` reading memory-mapped slice
    caches. Under torchrun local rank 0 of each node prepares first (fills the cache), the other ranks then
    read the cache; a failure on any rank raises on all.

    Items: ``(ldct (1,H,W), ndct (1,H,W), target)`` float32 in [0, 1] (``config.hu_range`` scaled).

    Raises
    ------
    LidnetError
        (or a subclass: CTLoadError, ConfigError, SimulationError ...) A source cannot be loaded, simulated or
        cached, here or on another rank.
    """
    cache = config.cache_dir if config.cache_dir is not None else str(run_dir / "ldct_cache")

    def build():
        if config.streaming:
            return StreamingSliceDataset.from_config(config, cache_dir=cache)
        return SliceDataset(prepare_cases(config, cache_dir=cache), config.hu_range, crop_size=config.crop_size,
                            seed=config.seed, lesion_crop_fraction=config.lesion_crop_fraction)

    dataset, err = None, None
    if ctx.local_rank == 0:
        try:
            dataset = build()
        except Exception as exc:  # noqa: BLE001 - shared with the other ranks below
            err = exc
    if ctx.enabled:
        failures = [m for m in _dist.all_gather_object(None if err is None else str(err)) if m]
        if err is None and failures:
            raise LidnetError(f"Preparing the training data failed on another process: {failures[0]}")
    if err is not None:
        raise err
    return dataset if dataset is not None else build()


def print_event(ev: ProgressEvent) -> None:
    """One console line for ``ev`` on stderr: ``[T2 r1] step 3/10 (5/30) total=... rec=...`` for steps,
    ``[T2] stopped: message (checkpoint)`` for the other events."""
    if ev.event == "step":
        losses = " ".join(f"{k}={v:.4g}" for k, v in ev.losses.items())
        line = f"[{ev.phase} r{ev.round}] step {ev.step}/{ev.phase_steps} ({ev.global_step}/{ev.total_steps}) {losses}"
    else:
        line = f"[{ev.phase or '-'}] {ev.event}: {ev.message}" + (f" ({ev.checkpoint})" if ev.checkpoint else "")
    print(line, file=sys.stderr, flush=True)


def run_training(
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: Optional[str | os.PathLike] = None,
    method: str = "lidnet",
    dataset: Optional[Dataset] = None,
    overwrite: bool = True,
    verbose: bool = True,
) -> int:
    """Train from a configuration into ``run_dir`` (the ``lidnet train`` command).

    Builds the data (:func:`src_training.data.prepare_cases`, LDCT cache ``config.cache_dir`` or
    ``RUN_DIR/ldct_cache``; streamed from disk with ``config.streaming``) and the trainer (``method``:
    ``"lidnet"`` = :class:`CollaborativeTrainer`, ``"baseline"`` = :class:`BaselineTrainer`, ``"detector"`` =
    :class:`DetectorTrainer`, ``"todnet"`` = :class:`TODNetTrainer`), writes
    ``RUN_DIR/config.json``, installs SIGTERM/SIGINT handlers that request a stop (main thread only;
    a second SIGINT interrupts at once), and runs to the end. A fresh run (no ``resume``) starts a new
    ``progress.jsonl``; a resumed run appends to it.

    Parameters
    ----------
    config : TrainConfig
    run_dir : path-like
    resume : path-like, optional
        A ``trainer_state.pt`` to continue from.
    method : str
        A key of :data:`TRAINERS`.
    dataset : Dataset, optional
        Use this dataset instead of building it from ``config.train_data``.
    overwrite : bool
        If False, refuse to start a fresh run in a folder that already holds a ``trainer_state.pt``.
    verbose : bool
        Print events to stderr (step events every ``log_every`` steps).

    Returns
    -------
    int
        0 when the run finished or was stopped (resume later with ``--resume``).

    Raises
    ------
    LidnetError
        Any failure; an ``error`` event is appended to ``progress.jsonl`` first.

    Under ``torchrun`` (see ``docs/distributed.md``) every process calls this with the same arguments:
    it joins the process group (:func:`src_training.distributed.init_distributed`), rank 0 alone writes
    ``config.json``, ``progress.jsonl``, the checkpoints and prints; local rank 0 of each node prepares
    (simulates and caches) the data before the other ranks read the cache; every rank loads the same
    ``resume`` file; a STOP file, PAUSE file or SIGTERM seen by any rank applies to all at the same step.
    ``RUN_DIR`` must be the same folder for every process (a shared file system across nodes).
    """
    run_dir = Path(run_dir)
    if method not in TRAINERS:
        raise ConfigError(f"Unknown training method '{method}': choose {', '.join(TRAINERS)}.")
    main = not _dist.launched_by_torchrun() or os.environ.get("RANK") == "0"  # the process that writes files
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        if not overwrite and (run_dir / STATE_FILE).exists():
            raise ConfigError(
                f"{run_dir} already holds a training run; resume it with --resume {run_dir / STATE_FILE} or choose "
                f"another folder."
            )
        if main:
            atomic_write_text(run_dir / PROGRESS_FILE, "")
    try:
        config.validate()
        ctx = _dist.init_distributed(config.device)
        if ctx.is_main:
            config.save_json(run_dir / CONFIG_FILE)
        if dataset is None:
            dataset = prepare_dataset(config, run_dir, ctx)
        trainer = TRAINERS[method](config, dataset, run_dir=run_dir)
        if resume is not None:
            trainer.resume(resume)
            if ctx.is_main:  # a run killed while writing a checkpoint may leave its hidden temporary file
                for tmp in run_dir.glob("." + "[!.]*.pt.*.tmp"):
                    tmp.unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001
        err = exc if isinstance(exc, LidnetError) else LidnetError(f"Training could not start: {type(exc).__name__}: {exc}")
        rank = "" if main else f"[rank {os.environ.get('RANK')}] "  # any rank reports its failure
        append_event(run_dir, ProgressEvent(event="error", phase=None, message=rank + str(err)))
        if err is exc:
            raise
        raise err from exc
    verbose = verbose and ctx.is_main
    if verbose and config.amp and trainer.device.type != "cuda":
        print(f"note: amp (mixed precision) applies on CUDA only; training in fp32 on {trainer.device}.",
              file=sys.stderr, flush=True)

    previous: dict[int, Any] = {}
    in_main = threading.current_thread() is threading.main_thread()

    def _handler(signum, frame):  # noqa: ARG001
        if signum == signal.SIGINT and trainer._stop.is_set():
            raise KeyboardInterrupt
        trainer.request_stop()

    if in_main:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[sig] = signal.signal(sig, _handler)
            except (ValueError, OSError):  # pragma: no cover - platform without the signal
                pass
    try:
        n = 0
        for ev in trainer.run():
            if verbose and (ev.event != "step" or n % config.log_every == 0):
                print_event(ev)
            if ev.event == "step":
                n += 1
    finally:
        for sig, h in previous.items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError):  # pragma: no cover
                pass
    return 0
