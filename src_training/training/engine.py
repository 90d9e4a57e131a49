"""The step engine every trainer runs on: :class:`TrainerEngine`.

Owns the networks' construction and optimizers, the loop over a schedule of declared phases
(:class:`~src_training.training.schedule.Phase`), train/eval behaviour and freezing per phase, the
learning-rate schedule, mixed precision (:mod:`~src_training.training.optim`), data parallelism under
torchrun (:mod:`src_training.distributed`), the progress events and STOP / PAUSE handling
(:mod:`~src_training.training.events`), and saving / resuming (:mod:`~src_training.training.checkpoints`).

The engine knows no trainer: a subclass sets :attr:`TrainerEngine.method` and the networks it uses
(:attr:`~TrainerEngine.uses_denoiser`, :attr:`~TrainerEngine.uses_detector`), lists its phases in
:meth:`~TrainerEngine._schedule` (each phase declares which networks it trains and which are trainable at
the start of a step) and computes one step in :meth:`~TrainerEngine._train_step`. Extra networks (the
WGAN-GP critic, TOD-Net's U-Net) join the trainer state with :meth:`~TrainerEngine._register_aux`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from src_training import distributed as _dist
from src_training.checkpoint_files import DenoiserCheckpoint, DetectorCheckpoint
from src_training.config import TrainConfig
from src_training.device import auto_device
from src_training.errors import ConfigError, LidnetError
from src_training.training.batches import BatchStream, batch_to_device
from src_training.training.checkpoints import denoiser_checkpoint as _denoiser_checkpoint
from src_training.training.checkpoints import detector_checkpoint as _detector_checkpoint
from src_training.training.checkpoints import restore_trainer_state, save_trainer_state, trainer_state
from src_training.training.checkpoints import save_models as _save_models
from src_training.training.events import PAUSE_FILE, ProgressEvent, ProgressWriter, pause_file_exists
from src_training.training.events import remove_stop_file, stop_file_exists
from src_training.training.networks import default_denoiser, default_detector, denoiser_optimizer
from src_training.training.networks import detector_optimizer, freeze, trainable_mask
from src_training.training.optim import MixedPrecision, diverged_error, optimizer_step
from src_training.training.rng import seed_everything
from src_training.training.schedule import DENOISER, DETECTOR, Phase, lr_factor, network_progress

#: Seed offset of the detector's own batch stream (trainers with both networks).
DETECTOR_STREAM_SEED_OFFSET = 7_000_003


class TrainerEngine:
    """Shared machinery of the trainers: networks, schedule, event stream, progress file, STOP/PAUSE,
    optimizer updates, checkpoints, resume, torchrun.

    Parameters
    ----------
    config : TrainConfig
        Validated here (:meth:`TrainConfig.validate`).
    dataset : Dataset
        Items ``(ldct (1,H,W), ndct (1,H,W), target)`` float32 in [0, 1] as
        :class:`src_training.data.SliceDataset` (indexed with ``(index, epoch)`` tuples); a ``hu_range``
        attribute, when present, must equal ``config.hu_range``.
    denoiser, detector : nn.Module, optional
        Prebuilt networks, used when :attr:`uses_denoiser` / :attr:`uses_detector` (default:
        ``build_denoiser(config.denoiser)``, ``build_detector(config.detector_backbone,
        weights_path=config.detector_weights)``).
    device : str or torch.device, optional
        Default ``auto_device(config.device)``; under torchrun CUDA becomes ``cuda:LOCAL_RANK``.
    run_dir : path-like, optional
        Where ``progress.jsonl``, checkpoints and STOP/PAUSE files live; None = nothing written.

    Construction seeds python ``random``, numpy and torch with ``config.seed`` (before building the
    networks). Optimizers: Adam(``lr_denoiser``) for the denoiser; Adam or SGD with momentum
    (``config.detector_optimizer``) and ``lr_detector`` for the detector; both keep their state across
    phases. Data: one :class:`~src_training.training.batches.BatchStream`; a trainer with both networks gives
    the detector-only phases (T1, T3) their own stream (seed ``config.seed + 7000003``), so the denoiser sees
    exactly the batches a baseline with the same seed sees.

    Raises
    ------
    ConfigError
        ``config`` is not a (valid) TrainConfig, the dataset is empty or scales another HU range.
    """

    #: Name saved in ``trainer_state.pt`` (a state resumes only with the same method) and ``denoiser.pt``.
    method = "base"
    #: ``method`` of ``detector.pt`` (None = :attr:`method`).
    detector_method: Optional[str] = None
    uses_denoiser = False
    uses_detector = False

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset,
        *,
        denoiser: Optional[nn.Module] = None,
        detector: Optional[nn.Module] = None,
        device: Optional[str | torch.device] = None,
        run_dir: Optional[str | os.PathLike] = None,
    ):
        if not isinstance(config, TrainConfig):
            raise ConfigError(f"config must be a TrainConfig, got {type(config).__name__}.")
        self.config = config.validate()
        ds_range = getattr(dataset, "hu_range", None)
        if ds_range is not None and tuple(float(v) for v in ds_range) != tuple(config.hu_range):
            raise ConfigError(
                f"The dataset scales HU range {tuple(ds_range)} to [0, 1] but the configuration says "
                f"{tuple(config.hu_range)}; build the SliceDataset with config.hu_range."
            )
        self.dataset = dataset
        # Under torchrun: joins the process group; CUDA becomes cuda:LOCAL_RANK (see distributed.py).
        self._dist = _dist.init_distributed(torch.device(device) if device is not None else auto_device(config.device))
        self.device = self._dist.device
        self._dist_started = False
        self._precision = MixedPrecision(self.device, config.amp)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._aux_modules: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
        seed_everything(config.seed)
        self.denoiser: Optional[nn.Module] = None
        self.detector: Optional[nn.Module] = None
        self.opt_denoiser: Optional[torch.optim.Optimizer] = None
        self.opt_detector: Optional[torch.optim.Optimizer] = None
        if self.uses_denoiser:
            self.denoiser = (denoiser if denoiser is not None else default_denoiser(config)).to(self.device)
            self._denoiser_mask = trainable_mask(self.denoiser)
            self.opt_denoiser = denoiser_optimizer(self.denoiser, config)
        if self.uses_detector:
            self.detector = (detector if detector is not None else default_detector(config)).to(self.device)
            self._detector_mask = trainable_mask(self.detector)
            self.opt_detector = detector_optimizer(self.detector, config)
        self.schedule: list[Phase] = [p for p in self._schedule() if p.steps > 0]
        self.total_steps = int(sum(p.steps for p in self.schedule))
        self.phase_index = 0
        self.phase_step = 0
        self.global_step = 0
        self._elapsed_before = 0.0
        self._resumed = False
        self._stop = threading.Event()
        self._stream = self._batch_stream(config.seed)
        self._detector_stream: Optional[BatchStream] = None
        if self.uses_denoiser and self.uses_detector:
            self._detector_stream = self._batch_stream(config.seed + DETECTOR_STREAM_SEED_OFFSET)
        self._t0 = time.monotonic()
        self._progress = ProgressWriter(self.run_dir) if self.run_dir is not None else None
        self._log_count = 0
        #: Each loss term's share of the denoiser's gradient norm, as last measured (sum 1).
        self.grad_shares: dict[str, float] = {}

    def _batch_stream(self, seed: int) -> BatchStream:
        c = self.config
        return BatchStream(self.dataset, c.batch_size, seed, c.num_workers, rank=self._dist.rank,
                           world_size=self._dist.world_size, pin_memory=self.device.type == "cuda")

    # ------------------------------------------------------------------ what a trainer declares
    def _schedule(self) -> list[Phase]:  # pragma: no cover - abstract
        """The phases of the run, in order (phases of 0 steps are dropped)."""
        raise NotImplementedError

    def _train_step(self, phase: Phase, batch) -> dict[str, float]:  # pragma: no cover - abstract
        """One step of ``phase`` on ``batch = (ldct (B,1,H,W), ndct (B,1,H,W), targets)`` on the device, inside
        the autocast context; returns the step's losses (name -> float)."""
        raise NotImplementedError

    def _register_aux(self, name: str, module: nn.Module, opt: torch.optim.Optimizer) -> None:
        """Save ``module`` and ``opt`` in the trainer state under ``name`` (``models[name]``,
        ``optimizers[name]``; restored by :meth:`resume`)."""
        self._aux_modules[name] = (module, opt)

    # ------------------------------------------------------------------ public control
    def request_stop(self) -> None:
        """Ask the run to stop (thread-safe, also from a signal handler): the current step finishes,
        ``trainer_state.pt`` and the model files are saved, and a ``stopped`` event is yielded."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called or the STOP file was seen."""
        return self._stop.is_set() or stop_file_exists(self.run_dir)

    @property
    def finished(self) -> bool:
        """True when every step of the schedule is done."""
        return self.phase_index >= len(self.schedule)

    # ------------------------------------------------------------------ modes
    def _modes(self, train_denoiser: bool, train_detector: bool) -> None:
        """Train/eval behaviour and freezing for a step.

        The detector always runs in training behaviour when present (it must return losses) but is
        frozen when ``train_detector`` is False. The denoiser is in eval behaviour and frozen when
        ``train_denoiser`` is False (:func:`~src_training.training.networks.freeze`).
        """
        if self.denoiser is not None:
            self.denoiser.train(train_denoiser)
            freeze(self.denoiser, not train_denoiser, self._denoiser_mask)
        if self.detector is not None:
            self.detector.train(True)
            freeze(self.detector, not train_detector, self._detector_mask)

    def _phase_modes(self, phase: Phase) -> tuple[bool, bool]:
        """``(train_denoiser, train_detector)`` at the start of a step of ``phase`` (:attr:`Phase.modes`)."""
        return phase.modes

    def _stream_for(self, phase: Phase) -> BatchStream:
        """The batch stream of a phase: the detector's own for detector-only phases of a two-network
        trainer, else the main one."""
        if self._detector_stream is not None and phase.detector_only:
            return self._detector_stream
        return self._stream

    # ------------------------------------------------------------------ updates
    def _optimizer_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module,
                        terms: Optional[dict[str, torch.Tensor]] = None) -> None:
        """Back-propagate ``loss`` and update ``module`` with ``opt`` (any network: denoiser, detector, critic...).

        Order (:func:`src_training.training.optim.optimizer_step`): divergence check, ``zero_grad``, backward
        (loss scaled by a per-optimizer GradScaler with fp16 AMP), gradient averaging over the ranks under
        torchrun, unscale, ``grad_clip_norm``, step.

        ``terms`` (denoiser steps): the weighted loss terms whose sum is ``loss``. Every
        ``config.grad_shares_every``-th denoiser step they are back-propagated one by one
        (:func:`src_training.gradients.term_gradients`); the parameter gradients are then their sum (the same
        as ``loss.backward()``) and :attr:`grad_shares` gets each term's share of the gradient norm.
        Multi-process: every rank calls this for the same module at the same step (lockstep schedule); why
        gradients are all-reduced here rather than by DistributedDataParallel: :mod:`~src_training.training.optim`.

        Raises
        ------
        LidnetError
            The loss is NaN/inf (on any rank): training diverged.
        """
        every = int(self.config.grad_shares_every)
        measure = terms is not None and len(terms) > 1 and every > 0 and self._network_progress(0)[0] % every == 0
        optimizer_step(opt, loss, module, precision=self._precision, distributed=self._dist.enabled,
                       grad_clip_norm=self.config.grad_clip_norm, diverged=self._diverged, terms=terms,
                       measure_shares=measure, on_shares=self._set_grad_shares)

    def _set_grad_shares(self, shares: dict[str, float]) -> None:
        self.grad_shares = shares

    def _diverged(self, loss: torch.Tensor) -> LidnetError:
        return diverged_error(loss, self.global_step + 1, self.config, self._dist.rank if self._dist.enabled else None)

    def _network_progress(self, which: int) -> tuple[int, int]:
        """(steps already made, steps in all) of the network ``which`` (0 = denoiser, 1 = detector) over the
        schedule, counting the phases that declare they train it (:func:`~.schedule.network_progress`)."""
        return network_progress(self.schedule, self.phase_index, self.phase_step, (DENOISER, DETECTOR)[which])

    def _apply_lr_schedule(self) -> None:
        """Set the learning rate of the denoiser's and the detector's optimisers for the next step: base rate
        times :func:`~src_training.training.schedule.lr_factor` (warm-up, constant or cosine)."""
        c = self.config
        if c.lr_schedule == "constant" and int(c.warmup_steps) == 0:
            return
        for which, opt, base in ((0, self.opt_denoiser, c.lr_denoiser), (1, self.opt_detector, c.lr_detector)):
            if opt is None:
                continue
            f = lr_factor(*self._network_progress(which), c.warmup_steps, c.lr_schedule)
            for g in opt.param_groups:
                g["lr"] = base * f

    # ------------------------------------------------------------------ multi-process
    def _modules_to_sync(self) -> list[nn.Module]:
        """Every network attribute of the trainer (denoiser, detector, critic, segmenter, ...)."""
        seen, out = set(), []
        for v in vars(self).values():
            if isinstance(v, nn.Module) and id(v) not in seen:
                seen.add(id(v))
                out.append(v)
        return out

    def _start_distributed(self) -> None:
        """Once, before the first step under torchrun: copy rank 0's networks to every rank (as DDP does at
        wrap time; covers networks a subclass built after this base class) and, on a fresh run, give ranks
        > 0 their own global RNG stream (RPN/ROI sampling). A resumed run restores each rank's RNG instead."""
        if not self._dist.enabled or self._dist_started:
            return
        for module in self._modules_to_sync():
            _dist.broadcast_module_(module)
        if not self._resumed and self._dist.rank > 0:
            seed_everything(self.config.seed + 1000003 * self._dist.rank)
        self._dist_started = True

    def _agreed_flags(self) -> tuple[bool, bool]:
        """(stop, pause): this process's STOP request/file and PAUSE file, OR-ed over all ranks under
        torchrun (one small all-reduce), so every rank stops or pauses at the same step."""
        return _dist.any_flags(self.stop_requested, pause_file_exists(self.run_dir))

    # ------------------------------------------------------------------ events
    def _elapsed(self) -> float:
        return self._elapsed_before + (time.monotonic() - self._t0)

    def _event(self, event: str, phase: Optional[Phase], **kw) -> ProgressEvent:
        ph = phase
        return ProgressEvent(
            event=event,
            phase=ph.name if ph is not None else None,
            round=ph.round if ph is not None else 0,
            step=kw.pop("step", self.phase_step),
            phase_steps=ph.steps if ph is not None else 0,
            global_step=self.global_step,
            total_steps=self.total_steps,
            elapsed_s=self._elapsed(),
            grad_shares=dict(self.grad_shares),
            **kw,
        )

    def _log(self, ev: ProgressEvent, write: bool = True) -> ProgressEvent:
        """Append ``ev`` to ``progress.jsonl`` when ``write``; returns ``ev``. Under torchrun only rank 0
        writes, except ``error`` events, which any rank writes (message prefixed ``[rank r]``) so that a
        failure on another rank reaches the progress file."""
        if write and self._progress is not None and (self._dist.is_main or ev.event == "error"):
            if not self._dist.is_main:
                ev = ProgressEvent(**{**asdict(ev), "message": f"[rank {self._dist.rank}] {ev.message}"})
            self._progress.write(ev)
        return ev

    # ------------------------------------------------------------------ files (formats, errors: checkpoints.py)
    def denoiser_checkpoint(self) -> DenoiserCheckpoint:
        """The ``denoiser.pt`` record (:func:`~src_training.training.checkpoints.denoiser_checkpoint`)."""
        return _denoiser_checkpoint(self)

    def detector_checkpoint(self) -> DetectorCheckpoint:
        """The ``detector.pt`` record (:func:`~src_training.training.checkpoints.detector_checkpoint`)."""
        return _detector_checkpoint(self)

    def save_models(self, run_dir: Optional[str | os.PathLike] = None) -> list[Path]:
        """Write this trainer's model files atomically (:func:`~src_training.training.checkpoints.save_models`;
        LidnetError without a folder)."""
        return _save_models(self, run_dir)

    def _save_models_main(self) -> list[Path]:
        """:meth:`save_models` on rank 0 (the networks are identical on every rank); [] on other ranks."""
        return self.save_models() if self._dist.is_main else []

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (:func:`~src_training.training.checkpoints.trainer_state`)."""
        return trainer_state(self)

    def save(self, path: Optional[str | os.PathLike] = None) -> Path:
        """Save :meth:`state_dict` atomically, default ``RUN_DIR/trainer_state.pt`` (a collective under torchrun;
        :func:`~src_training.training.checkpoints.save_trainer_state`; LidnetError without a path)."""
        return save_trainer_state(self, path)

    def resume(self, path: str | os.PathLike) -> None:
        """Load a ``trainer_state.pt`` so that :meth:`run` continues exactly where it stopped
        (:func:`~src_training.training.checkpoints.restore_trainer_state`).

        Raises
        ------
        CheckpointError
            Missing/corrupt/refused file, not a trainer state, another method, schedule or data set size.
        ConfigError
            The configuration differs from the saved one in a key that changes the training.
        """
        restore_trainer_state(self, path)

    # ------------------------------------------------------------------ the loop
    def _wait_while_paused(self, phase: Phase) -> Iterator[ProgressEvent]:
        """Yield a ``paused`` event and wait (no compute) until the PAUSE file is gone or a stop is asked
        for (both agreed over the ranks); returns (``yield from`` value) whether to stop."""
        yield self._log(self._event("paused", phase, message=f"paused: remove {self.run_dir / PAUSE_FILE} to continue"))
        t_pause = time.monotonic()
        while True:
            stop, pause = self._agreed_flags()
            if stop or not pause:
                break
            time.sleep(0.1)
        # Paused time does not count as training time.
        self._t0 += time.monotonic() - t_pause
        return stop

    def _stop_now(self, phase: Optional[Phase]) -> Iterator[ProgressEvent]:
        ckpt = None
        if self.run_dir is not None:
            ckpt = self.save()
            self._save_models_main()
            if self._dist.is_main:
                remove_stop_file(self.run_dir)
            _dist.barrier()  # no rank sees the old STOP file after this
        self._stop.clear()
        yield self._log(
            self._event(
                "stopped",
                phase,
                checkpoint=str(ckpt) if ckpt else None,
                message=f"stopped at step {self.global_step}/{self.total_steps}; resume with {ckpt}" if ckpt else
                f"stopped at step {self.global_step}/{self.total_steps}",
            )
        )

    def _steps(self, phase: Phase) -> Iterator[ProgressEvent]:
        """The steps of the current phase; returns (``yield from`` value) True when the run stopped."""
        index = self.phase_index
        while self.phase_index == index:
            stop, pause = self._agreed_flags()
            if pause and not stop:
                stop = yield from self._wait_while_paused(phase)
            if stop:
                yield from self._stop_now(phase)
                return True
            self._modes(*self._phase_modes(phase))
            self._apply_lr_schedule()
            batch = batch_to_device(self._stream_for(phase).next(), self.device)
            with self._precision.autocast():
                losses = self._train_step(phase, batch)
            if self._dist.enabled:  # the logged losses are the mean over the ranks
                losses = _dist.mean_values(losses)
            self.phase_step += 1
            self.global_step += 1
            done_in_phase = self.phase_step
            ev = self._event("step", phase, losses=losses)
            if self.phase_step >= phase.steps:
                # Advance before any save so that a checkpoint points at the next step to run.
                self.phase_index += 1
                self.phase_step = 0
            self._log_count += 1
            write = self._log_count % self.config.log_every == 0 or done_in_phase == phase.steps
            yield self._log(ev, write=write)
            every = self.config.checkpoint_every
            if every and self.global_step % every == 0 and self.run_dir is not None:
                path = self.save()
                yield self._log(
                    self._event("checkpoint", phase, step=done_in_phase, checkpoint=str(path),
                                message=f"checkpoint saved at step {self.global_step}")
                )
        return False

    def run(self) -> Iterator[ProgressEvent]:
        """Train the whole schedule, yielding a :class:`~src_training.training.events.ProgressEvent` after every
        step and at phase starts, checkpoints, pause, stop and the end.

        ``step`` events are written to ``progress.jsonl`` every ``config.log_every`` steps (and at each
        phase's last step); every other event is always written. Before each step: STOP/PAUSE (agreed over
        the ranks), the phase's modes (:attr:`Phase.modes`), the learning rates, the next batch of the
        phase's stream.

        Closing the generator early (``gen.close()``, breaking out of a loop) saves nothing: to keep the
        work, call :meth:`request_stop` (or create ``RUN_DIR/STOP``) and iterate until the ``stopped``
        event. After a stop, calling ``run()`` again continues in the same process.

        Raises
        ------
        LidnetError
            Any failure (an ``error`` event is written first). Non-Lidnet exceptions are wrapped.
        """
        self._t0 = time.monotonic()
        phase: Optional[Phase] = self.schedule[self.phase_index] if not self.finished else None
        try:
            self._start_distributed()
            while not self.finished:
                phase = self.schedule[self.phase_index]
                msg = f"phase {phase.name}" + (f" round {phase.round}" if phase.round else "")
                if self._resumed:
                    msg += f" (resumed at step {self.phase_step}/{phase.steps})"
                    self._resumed = False
                yield self._log(self._event("phase_start", phase, message=msg))
                if (yield from self._steps(phase)):
                    return
            ckpt = None
            if self.run_dir is not None:
                self.save()
                paths = self._save_models_main()
                ckpt = str(paths[0]) if paths else None
            last = self.schedule[-1] if self.schedule else None
            yield self._log(
                self._event(
                    "done",
                    last,
                    step=last.steps if last else 0,
                    checkpoint=ckpt,
                    message=f"training finished ({self.total_steps} steps)",
                )
            )
        except GeneratorExit:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as an error event, then raised
            err = exc if isinstance(exc, LidnetError) else LidnetError(f"Training failed: {type(exc).__name__}: {exc}")
            try:
                self._log(self._event("error", phase, message=str(err)))
            except Exception:  # noqa: BLE001 - the progress file itself may be the problem
                pass
            if err is exc:
                raise
            raise err from exc
        finally:
            if self._progress is not None:
                self._progress.close()
            self._stream.close()
            if self._detector_stream is not None:
                self._detector_stream.close()

    def train_all(self) -> list[ProgressEvent]:
        """Run to the end (or a stop) and return the events (convenience for scripts and tests)."""
        return list(self.run())
