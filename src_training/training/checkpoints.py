"""What a trainer writes into its run folder and reads back: model checkpoints and the trainer state.

Builds the records of ``denoiser.pt`` and ``detector.pt`` (:mod:`src_training.checkpoint_files`:
:func:`denoiser_checkpoint`, :func:`detector_checkpoint`, :func:`save_models`) and ``trainer_state.pt``, the
exact-resumption state (networks, optimizers, schedule position, batch-stream positions, RNG states:
:func:`trainer_state`, :func:`save_trainer_state`), and the checks that a state may continue under the
current trainer and configuration (:func:`restore_trainer_state`, :data:`RESUME_FREE_KEYS`). Every file is
written atomically (:func:`src_training.checkpoint.save_checkpoint`) and read with ``weights_only=True``
(:func:`src_training.checkpoint.load_checkpoint`).

The functions take the trainer (:class:`src_training.training.engine.TrainerEngine`, which exposes them as
its methods ``denoiser_checkpoint``, ``detector_checkpoint``, ``save_models``, ``state_dict``, ``save`` and
``resume``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from src_training import distributed as _dist
from src_training.checkpoint import load_checkpoint, save_checkpoint
from src_training.checkpoint_files import DenoiserCheckpoint, DetectorCheckpoint, write_checkpoint
from src_training.config import TrainConfig
from src_training.errors import CheckpointError, ConfigError, LidnetError
from src_training.training.events import DENOISER_FILE, DETECTOR_FILE, STATE_FILE
from src_training.training.networks import cpu_state_dict
from src_training.training.rng import rng_state, set_rng_state

if TYPE_CHECKING:
    from src_training.training.engine import TrainerEngine

#: Config keys that may differ between a saved trainer state and the resuming configuration.
RESUME_FREE_KEYS = ("device", "num_workers", "log_every", "checkpoint_every", "cache_dir", "amp", "streaming")


def denoiser_checkpoint(trainer: "TrainerEngine") -> DenoiserCheckpoint:
    """The ``denoiser.pt`` record: ``model`` (``config.denoiser``), ``state_dict`` (CPU tensors), ``config``
    (dict), ``method`` (the trainer's: ``lidnet``, ``baseline`` or ``todnet``), ``step``.

    Raises
    ------
    LidnetError
        The trainer has no denoiser.
    """
    if trainer.denoiser is None:
        raise LidnetError(f"The {trainer.method} trainer has no denoiser.")
    return DenoiserCheckpoint(model=trainer.config.denoiser, state_dict=cpu_state_dict(trainer.denoiser),
                              config=trainer.config.to_dict(), method=trainer.method, step=int(trainer.global_step))


def detector_checkpoint(trainer: "TrainerEngine") -> DetectorCheckpoint:
    """The ``detector.pt`` record: ``arch``, ``backbone``, ``state_dict`` (CPU tensors), ``config``, ``method``
    (``trainer.detector_method`` or ``trainer.method``: ``lidnet``, ``todnet``, or ``ndct`` for a detector trained
    on normal-dose images only), ``step``, and the detector's ``hparams`` (norm, anchors) so that
    :func:`~src_training.models.detector.build_detector` rebuilds the same architecture.

    Raises
    ------
    LidnetError
        The trainer has no detector.
    """
    if trainer.detector is None:
        raise LidnetError(f"The {trainer.method} trainer has no detector.")
    hparams = getattr(trainer.detector, "hparams", None)
    return DetectorCheckpoint(
        arch=str(getattr(trainer.detector, "arch", "faster_rcnn")),
        backbone=str(getattr(trainer.detector, "backbone_name", trainer.config.detector_backbone)),
        state_dict=cpu_state_dict(trainer.detector),
        hparams=dict(hparams) if isinstance(hparams, dict) else {},
        config=trainer.config.to_dict(),
        step=int(trainer.global_step),
        method=trainer.detector_method or trainer.method,
    )


def save_models(trainer: "TrainerEngine", run_dir: Optional[str | os.PathLike] = None) -> list[Path]:
    """Write ``denoiser.pt`` and/or ``detector.pt`` (those the trainer has, via its ``denoiser_checkpoint`` /
    ``detector_checkpoint`` methods) atomically into ``run_dir`` (default the trainer's run folder) with
    :func:`src_training.checkpoint_files.write_checkpoint`.

    Returns
    -------
    list of Path
        The files written, denoiser first.

    Raises
    ------
    LidnetError
        No folder given and the trainer has no run folder.
    """
    out = Path(run_dir) if run_dir is not None else trainer.run_dir
    if out is None:
        raise LidnetError("No run folder to save the models in.")
    paths = []
    if trainer.denoiser is not None:
        paths.append(write_checkpoint(out / DENOISER_FILE, trainer.denoiser_checkpoint()))
    if trainer.detector is not None:
        paths.append(write_checkpoint(out / DETECTOR_FILE, trainer.detector_checkpoint()))
    return paths


def trainer_state(trainer: "TrainerEngine") -> dict[str, Any]:
    """Everything needed to continue exactly: ``kind = "trainer_state"``, ``method``, ``config``, ``schedule``
    (``[name, round, steps]`` per phase), ``phase_index``, ``phase_step``, ``global_step``, ``elapsed_s``,
    ``models`` / ``optimizers`` (denoiser, detector and the registered extra networks: critic, segmenter),
    ``data`` / ``data_detector`` (batch-stream positions) and ``rng`` (:func:`~.rng.rng_state`)."""
    models, opts = {}, {}
    if trainer.denoiser is not None:
        models["denoiser"] = cpu_state_dict(trainer.denoiser)
        opts["denoiser"] = trainer.opt_denoiser.state_dict()
    if trainer.detector is not None:
        models["detector"] = cpu_state_dict(trainer.detector)
        opts["detector"] = trainer.opt_detector.state_dict()
    for name, (module, opt) in trainer._aux_modules.items():  # critic, segmenter
        models[name] = cpu_state_dict(module)
        opts[name] = opt.state_dict()
    return {
        "kind": "trainer_state",
        "method": trainer.method,
        "config": trainer.config.to_dict(),
        "schedule": [p.key() for p in trainer.schedule],
        "phase_index": int(trainer.phase_index),
        "phase_step": int(trainer.phase_step),
        "global_step": int(trainer.global_step),
        "elapsed_s": float(trainer._elapsed()),
        "models": models,
        "optimizers": opts,
        "data": trainer._stream.state_dict(),
        "data_detector": None if trainer._detector_stream is None else trainer._detector_stream.state_dict(),
        "rng": rng_state(),
    }


def save_trainer_state(trainer: "TrainerEngine", path: Optional[str | os.PathLike] = None) -> Path:
    """Save the trainer's ``state_dict()`` atomically (default ``RUN_DIR/trainer_state.pt``) and return the path.

    Under torchrun every rank must call this at the same step (a collective): rank 0 writes the file with
    every rank's RNG state (``rng_ranks``) so that each rank resumes its own random stream.

    Raises
    ------
    LidnetError
        No path given and the trainer has no run folder.
    """
    if path is None:
        if trainer.run_dir is None:
            raise LidnetError("No run folder: give a path to save the trainer state.")
        path = trainer.run_dir / STATE_FILE
    if not trainer._dist.enabled:
        return save_checkpoint(path, trainer.state_dict())
    rng_ranks = _dist.all_gather_object(rng_state())
    if trainer._dist.is_main:
        state = trainer.state_dict()
        state["rng_ranks"] = rng_ranks
        save_checkpoint(path, state)
    return Path(path)


def restore_trainer_state(trainer: "TrainerEngine", path: str | os.PathLike) -> None:
    """Load a ``trainer_state.pt`` into ``trainer`` so that its ``run()`` continues exactly where it stopped.

    The file is loaded (and refused or accepted) before anything of the trainer is touched.

    Raises
    ------
    CheckpointError
        Missing/corrupt/refused file, not a trainer state, saved by another method (lidnet, baseline,
        detector, todnet), with another step schedule, networks that do not fit, or a different data set size.
    ConfigError
        The configuration differs from the saved one in a key that changes the training (all keys but
        :data:`RESUME_FREE_KEYS`; keys added to TrainConfig after the state was saved compare with their
        defaults).
    """
    state = load_checkpoint(path)
    if state.get("kind") != "trainer_state":
        raise CheckpointError(
            f"{path} is not a trainer state (kind={state.get('kind')!r}); resume from RUN_DIR/{STATE_FILE}."
        )
    if state.get("method") != trainer.method:
        raise CheckpointError(
            f"{path} was saved by a '{state.get('method')}' training, not '{trainer.method}'; resume with the same "
            f"method."
        )
    saved = {**TrainConfig().to_dict(), **dict(state.get("config", {}))}
    now = trainer.config.to_dict()
    diff = sorted(k for k in set(saved) | set(now) if k not in RESUME_FREE_KEYS and saved.get(k) != now.get(k))
    if diff:
        raise ConfigError(
            f"Cannot resume from {path}: the configuration differs in {', '.join(diff)} "
            f"(saved: {', '.join(f'{k}={saved.get(k)!r}' for k in diff)}). Use the run's config.json."
        )
    sched = [p.key() for p in trainer.schedule]
    if [list(x) for x in state["schedule"]] != sched:
        raise CheckpointError(f"{path}: the saved step schedule {state['schedule']} differs from {sched}.")
    try:
        if trainer.denoiser is not None:
            trainer.denoiser.load_state_dict(state["models"]["denoiser"])
            trainer.opt_denoiser.load_state_dict(state["optimizers"]["denoiser"])
        if trainer.detector is not None:
            trainer.detector.load_state_dict(state["models"]["detector"])
            trainer.opt_detector.load_state_dict(state["optimizers"]["detector"])
        for name, (module, opt) in trainer._aux_modules.items():
            module.load_state_dict(state["models"][name])
            opt.load_state_dict(state["optimizers"][name])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the saved networks do not match this configuration ({exc}).") from exc
    trainer._stream.load_state_dict(state["data"])
    if trainer._detector_stream is not None:
        if state.get("data_detector") is None:
            raise CheckpointError(f"{path} was saved by an older napari-lidnet without the detector's batch "
                                  "stream; start the run again (its batches would differ from a fresh run's).")
        trainer._detector_stream.load_state_dict(state["data_detector"])
    trainer.phase_index = int(state["phase_index"])
    trainer.phase_step = int(state["phase_step"])
    trainer.global_step = int(state["global_step"])
    trainer._elapsed_before = float(state.get("elapsed_s", 0.0))
    trainer._t0 = time.monotonic()
    set_rng_state(state["rng"])
    ranks = state.get("rng_ranks")  # torchrun: this rank's own RNG state, written by save_trainer_state
    if trainer._dist.enabled and isinstance(ranks, (list, tuple)) and len(ranks) == trainer._dist.world_size:
        set_rng_state(ranks[trainer._dist.rank])
    trainer._resumed = True
