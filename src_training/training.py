"""Training loops of napari-lidnet: LIDnet's collaborative training, the MAE baseline, and the detector
on normal-dose CT.

Source: Chen et al., "Low-dose CT denoising with lesion-aware ...", ACM MM 2021, arXiv:2104.08845,
Algorithm 1 (collaborative training strategy) and Eq. 8:

1. **T1** detector steps on normal-dose images y (detection loss only).
2. ``rounds`` times:

   * **T2** denoiser steps with the detector frozen (weights and normalisation statistics), loss Eq. 8
     ``L = L_rec + lambda_1 L_roi + lambda_2 L_det`` on F(x): one backbone pass of the detector on F(x)
     gives both the detection loss (training behaviour) and the top-K proposals of the ROI perceptual
     loss (Eq. 4); ``T(y)`` is computed without gradient.
   * **T3** detector steps on denoised images F(x) with the denoiser frozen (no gradient through F).

Every trainer is a generator of :class:`ProgressEvent` (``run()``), writes one JSON line per event to
``RUN_DIR/progress.jsonl``, honours ``RUN_DIR/STOP`` / ``RUN_DIR/PAUSE`` and :meth:`request_stop`, and
saves atomically: ``trainer_state.pt`` (exact resumption), ``denoiser.pt`` and/or ``detector.pt``
(formats in ``docs/architecture.md``).

Progress-event numbering: ``round`` is 0 for T1, the baseline and detector-only training and 1..rounds
for T2/T3; ``step`` counts the completed steps of the current phase (1..``phase_steps``; 0 in
``phase_start``), ``global_step`` the completed steps of the whole schedule (``total_steps``).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .checkpoint import load_checkpoint, save_checkpoint
from .config import TrainConfig
from .data import collate_slices
from .device import auto_device
from . import distributed as _dist
from .errors import CheckpointError, ConfigError, LidnetError
from .gradients import term_gradients
from .losses import (
    detection_loss,
    dice_loss,
    global_perceptual_loss,
    lidnet_generator_loss,
    recon_loss,
    roi_perceptual_loss,
    todnet_loss,
    wgan_critic_loss,
    wgan_generator_loss,
)

EVENT_TYPES = ("step", "phase_start", "checkpoint", "paused", "stopped", "done", "error")
PHASES = ("T1", "T2", "T3", "baseline", "joint")

STATE_FILE = "trainer_state.pt"
DENOISER_FILE = "denoiser.pt"
DETECTOR_FILE = "detector.pt"
PROGRESS_FILE = "progress.jsonl"
CONFIG_FILE = "config.json"
STOP_FILE = "STOP"
PAUSE_FILE = "PAUSE"

#: Config keys that may differ between a saved trainer state and the resuming configuration.
_RESUME_FREE_KEYS = ("device", "num_workers", "log_every", "checkpoint_every", "cache_dir", "amp", "streaming")


# ============================================================================================ events


@dataclass
class ProgressEvent:
    """One line of ``progress.jsonl`` (keys exactly as in the architecture contract).

    Attributes
    ----------
    event : str
        ``step``, ``phase_start``, ``checkpoint``, ``paused``, ``stopped``, ``done`` or ``error``.
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
        Losses of the step (``step`` events): T2 ``total, rec, roi, det`` (Eq. 8 parts) plus the four
        detector losses; T1/T3 ``det`` plus the four; baseline ``rec``. The GAN form adds ``adv`` (generator)
        and ``critic``, ``gp``, ``wdist`` (Eq. 7); TOD-Net adds ``task``; a published baseline loss adds its
        named parts.
    elapsed_s : float
        Seconds of training so far (including time before a resume).
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
        """Plain dict (JSON-able)."""
        d = asdict(self)
        d["losses"] = {str(k): float(v) for k, v in self.losses.items()}
        d["grad_shares"] = {str(k): round(float(v), 6) for k, v in self.grad_shares.items()}
        d["elapsed_s"] = round(float(self.elapsed_s), 3)
        return d

    def to_json(self) -> str:
        """One JSON line (no newline). Non-finite losses are written as null (valid JSON)."""
        d = self.to_dict()
        d["losses"] = {k: (v if np.isfinite(v) else None) for k, v in d["losses"].items()}
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
        reading restarts at 0.
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


# ============================================================================================ helpers


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG and torch (CPU and all CUDA devices)."""
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    torch.manual_seed(int(seed))


def _rng_state() -> dict[str, Any]:
    """RNG states of torch (CPU, CUDA, MPS), numpy and python as tensors/ints (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": None if py_state[2] is None else float(py_state[2]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        try:
            state["mps"] = torch.mps.get_rng_state()
        except Exception:  # noqa: BLE001 - MPS RNG not initialised
            pass
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`_rng_state` saved."""
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
    )
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in state["cuda"]])
        except Exception:  # noqa: BLE001 - different GPU count: keep the current states
            pass
    if "mps" in state and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        try:
            torch.mps.set_rng_state(state["mps"].cpu().to(torch.uint8))
        except Exception:  # noqa: BLE001
            pass


def _cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _norm_layers(module: nn.Module) -> list[nn.Module]:
    """Normalisation layers that keep running statistics (BatchNorm / InstanceNorm with tracking)."""
    return [
        m
        for m in module.modules()
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm))
        and getattr(m, "track_running_stats", False)
    ]


def _contract_set_frozen(module: nn.Module, frozen: bool) -> None:
    """Call the detector module's ``set_frozen`` when it exists (it may keep its own bookkeeping)."""
    try:
        from .models.detector import set_frozen
    except ImportError:
        return
    set_frozen(module, frozen)


def _amp_dtype(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    """Autocast dtype of mixed-precision training (``config.amp``): bfloat16 on a CUDA GPU that supports
    it (no loss scaling needed), else float16 (with a GradScaler); None (fp32) when disabled or not CUDA."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class _BatchStream:
    """Endless, resumable stream of batches.

    Epoch ``e`` visits the dataset in the order ``randperm(n)`` drawn from a private generator seeded
    with ``(seed, e)``; items are requested as ``(index, epoch)`` so the dataset's random crops are
    deterministic too. The state is ``(epoch, batches consumed in the epoch)``; loader prefetching does
    not matter because resumption recomputes the order. With ``n >= batch_size`` the last incomplete
    batch of an epoch is dropped.

    Multi-process (``world_size > 1``, torchrun), as ``torch.utils.data.DistributedSampler``: every rank
    draws the same epoch permutation and takes the interleaved shard ``perm[rank::world_size]`` after the
    permutation is cut to a multiple of ``world_size`` (at most ``world_size - 1`` slices, different ones
    each epoch, are left out; with ``n < world_size`` it is repeated cyclically instead), so the shards are
    disjoint and every rank has the same number of batches of ``batch_size`` (effective batch
    ``batch_size x world_size``). ``world_size == 1`` is exactly the single-process stream.
    ``pin_memory`` pins the batches for fast host-to-GPU copies (use with a CUDA device).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_workers: int = 0, *,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        self.dataset = dataset
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n == 0:
            raise ConfigError("The training dataset is empty.")
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.rank, self.world_size = int(rank), int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"Rank {rank} is outside 0..{world_size - 1}.")
        self.pin_memory = bool(pin_memory)
        #: Slices of one rank per epoch (n when single-process).
        self.n_local = self.n // self.world_size if self.n >= self.world_size else 1
        self.epoch = 0
        self.pos = 0
        self._it = None

    @property
    def batches_per_epoch(self) -> int:
        """Batches per epoch (per rank): ``n_local // batch_size`` (incomplete batch dropped), or 1 when
        ``n_local < batch_size``; ``n_local = n`` single-process."""
        return max(1, self.n_local // self.batch_size)

    def _batches(self, epoch: int) -> list[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 7919 + epoch * 104729 + 17)
        perm = torch.randperm(self.n, generator=g).tolist()
        ws = self.world_size
        if ws > 1:  # this rank's shard (DistributedSampler semantics, see the class docstring)
            perm = perm[: self.n_local * ws] if self.n >= ws else (perm * ws)[:ws]
            perm = perm[self.rank::ws]
        n, bs = len(perm), self.batch_size
        if n >= bs:
            chunks = [perm[i:i + bs] for i in range(0, n - bs + 1, bs)]
        else:
            chunks = [perm]
        return [[(i, epoch) for i in c] for c in chunks]

    def _sampler(self, epoch: int, pos: int):
        while True:
            batches = self._batches(epoch)
            yield from batches[pos:]
            epoch, pos = epoch + 1, 0

    def _make_iter(self):
        gen = torch.Generator().manual_seed(self.seed * 31 + self.epoch * 1009 + self.pos + self.rank * 1000003)
        loader = DataLoader(
            self.dataset,
            batch_sampler=self._sampler(self.epoch, self.pos),
            collate_fn=collate_slices,
            num_workers=self.num_workers,
            generator=gen,
            pin_memory=self.pin_memory,
        )
        return iter(loader)

    def next(self):
        """The next batch ``(ldct (B,1,H,W), ndct (B,1,H,W), targets)``."""
        if self._it is None:
            self._it = self._make_iter()
        batch = next(self._it)
        self.pos += 1
        if self.pos >= self.batches_per_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
        return batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.epoch), "pos": int(self.pos), "n": int(self.n), "batch_size": self.batch_size,
                "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if int(state["n"]) != self.n or int(state["batch_size"]) != self.batch_size:
            raise CheckpointError(
                f"The trainer state was saved for {state['n']} training slices in batches of {state['batch_size']}, "
                f"but the data now have {self.n} slices in batches of {self.batch_size}: resume with the same "
                f"training data and configuration."
            )
        saved_ws = int(state.get("world_size", 1))
        if saved_ws != self.world_size:
            raise CheckpointError(
                f"The trainer state was saved by a training with {saved_ws} process(es) but this one has "
                f"{self.world_size}: resume with the same number of processes (torchrun --nnodes x "
                f"--nproc_per_node = {saved_ws}), since the data shards and the effective batch depend on it."
            )
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self.close()

    def close(self) -> None:
        """Stop loader workers (a new iterator is made on the next batch)."""
        self._it = None


@dataclass
class _Phase:
    name: str
    round: int
    steps: int


# ============================================================================================ trainers


class _TrainerBase:
    """Shared machinery: schedule, event stream, progress file, STOP/PAUSE, checkpoints, resume.

    Subclasses set :attr:`method`, :attr:`uses_denoiser`, :attr:`uses_detector` and implement
    :meth:`_schedule` and :meth:`_train_step`.
    """

    method = "base"
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
        self._amp_dtype = _amp_dtype(self.device, config.amp)
        self._scalers: dict[int, Any] = {}
        self.run_dir = Path(run_dir) if run_dir is not None else None
        seed_everything(config.seed)
        self.denoiser: Optional[nn.Module] = None
        self.detector: Optional[nn.Module] = None
        self.opt_denoiser: Optional[torch.optim.Optimizer] = None
        self.opt_detector: Optional[torch.optim.Optimizer] = None
        if self.uses_denoiser:
            if denoiser is None:
                from .models.denoisers import build_denoiser

                denoiser = build_denoiser(config.denoiser)
            self.denoiser = denoiser.to(self.device)
            self._denoiser_mask = [p.requires_grad for p in self.denoiser.parameters()]
            self.opt_denoiser = torch.optim.Adam(
                [p for p in self.denoiser.parameters() if p.requires_grad], lr=config.lr_denoiser
            )
        if self.uses_detector:
            if detector is None:
                from .models.detector import build_detector

                detector = build_detector(config.detector_backbone, weights_path=config.detector_weights)
            self.detector = detector.to(self.device)
            self._detector_mask = [p.requires_grad for p in self.detector.parameters()]
            params = [p for p in self.detector.parameters() if p.requires_grad]
            if config.detector_optimizer == "sgd":
                self.opt_detector = torch.optim.SGD(params, lr=config.lr_detector, momentum=config.detector_momentum)
            else:
                self.opt_detector = torch.optim.Adam(params, lr=config.lr_detector)
        self.schedule: list[_Phase] = [p for p in self._schedule() if p.steps > 0]
        self.total_steps = int(sum(p.steps for p in self.schedule))
        self.phase_index = 0
        self.phase_step = 0
        self.global_step = 0
        self._elapsed_before = 0.0
        self._resumed = False
        self._stop = threading.Event()
        self._stream = _BatchStream(
            dataset, config.batch_size, config.seed, config.num_workers, rank=self._dist.rank,
            world_size=self._dist.world_size, pin_memory=self.device.type == "cuda",
        )
        # A trainer with both networks gives the detector-only phases (T1, T3) their own batch stream, so the
        # denoiser sees exactly the batches a baseline with the same seed sees (the same crops, in the same
        # order); trainers with one network use the one stream.
        self._detector_stream: Optional[_BatchStream] = None
        if self.uses_denoiser and self.uses_detector:
            self._detector_stream = _BatchStream(
                dataset, config.batch_size, config.seed + 7_000_003, config.num_workers, rank=self._dist.rank,
                world_size=self._dist.world_size, pin_memory=self.device.type == "cuda",
            )
        self._t0 = time.monotonic()
        self._progress_fh = None
        self._log_count = 0
        self.grad_shares: dict[str, float] = {}

    # ------------------------------------------------------------------ subclass hooks
    def _schedule(self) -> list[_Phase]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _train_step(self, phase: _Phase, batch) -> dict[str, float]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ------------------------------------------------------------------ public control
    def request_stop(self) -> None:
        """Ask the run to stop (thread-safe, also from a signal handler): the current step finishes,
        ``trainer_state.pt`` and the model files are saved, and a ``stopped`` event is yielded."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """True once :meth:`request_stop` was called or the STOP file was seen."""
        return self._stop.is_set() or self._stop_file_exists()

    def _stop_file_exists(self) -> bool:
        return self.run_dir is not None and (self.run_dir / STOP_FILE).exists()

    def _pause_file_exists(self) -> bool:
        return self.run_dir is not None and (self.run_dir / PAUSE_FILE).exists()

    @property
    def finished(self) -> bool:
        """True when every step of the schedule is done."""
        return self.phase_index >= len(self.schedule)

    # ------------------------------------------------------------------ freezing helpers
    def _freeze(self, module: Optional[nn.Module], frozen: bool, mask: Sequence[bool]) -> None:
        """Freeze (no grad, norm layers keep their statistics) or unfreeze ``module``.

        Unfreezing restores the ``requires_grad`` flags the module had when the trainer was built;
        call after ``module.train()``/``eval()`` (norm layers are put in eval mode when frozen).
        """
        if module is None:
            return
        _contract_set_frozen(module, frozen)
        if frozen:
            for p in module.parameters():
                p.requires_grad_(False)
            for m in _norm_layers(module):
                m.eval()
        else:
            for p, req in zip(module.parameters(), mask):
                p.requires_grad_(req)

    def _modes(self, train_denoiser: bool, train_detector: bool) -> None:
        """Train/eval behaviour and freezing for a phase.

        The detector always runs in training behaviour when present (it must return losses) but is
        frozen when ``train_detector`` is False. The denoiser is in eval behaviour and frozen when
        ``train_denoiser`` is False.
        """
        if self.denoiser is not None:
            self.denoiser.train(train_denoiser)
            self._freeze(self.denoiser, not train_denoiser, self._denoiser_mask)
        if self.detector is not None:
            self.detector.train(True)
            self._freeze(self.detector, not train_detector, self._detector_mask)

    def _optimizer_step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, module: nn.Module,
                        terms: Optional[dict[str, torch.Tensor]] = None) -> None:
        """Back-propagate ``loss`` and update ``module`` with ``opt`` (any network: denoiser, detector, critic...).

        Order: divergence check, ``zero_grad``, backward (loss scaled by a per-optimizer GradScaler with
        fp16 AMP), gradient averaging over the ranks under torchrun, unscale, ``grad_clip_norm``, step.

        ``terms`` (denoiser steps): the weighted loss terms whose sum is ``loss``. Every
        ``config.grad_shares_every``-th denoiser step they are back-propagated one by one
        (:func:`src_training.gradients.term_gradients`); the parameter gradients are then their sum (the same
        as ``loss.backward()``) and :attr:`grad_shares` gets each term's share of the gradient norm.

        Multi-process: the gradients of ``module``'s trainable parameters (and the running statistics of
        its BatchNorm layers in training mode) are averaged here with one explicit, flattened all-reduce
        (:func:`src_training.distributed.average_gradients_`) rather than by wrapping the networks in
        DistributedDataParallel, because DDP cannot express LIDnet's paths: the frozen detector is called
        through ``losses_and_rpn``/``rpn_topk`` (not ``forward``), networks are frozen and unfrozen per
        phase (DDP fixes its synchronised parameters at wrap time), the WGAN-GP critic needs
        ``autograd.grad`` (double backward, unsupported by DDP) and is called several times per step, and
        checkpoints keep the bare modules. Every rank calls this for the same module at the same step
        (lockstep schedule), so the collectives match. The divergence check is agreed too: a non-finite
        loss on any rank stops every rank.

        Raises
        ------
        LidnetError
            The loss is NaN/inf (on any rank): training diverged.
        """
        local_bad = not bool(torch.isfinite(loss.detach()))
        if local_bad and not self._dist.enabled:
            raise self._diverged(loss)
        opt.zero_grad(set_to_none=True)
        scaler = self._grad_scaler(opt)
        every = int(self.config.grad_shares_every)
        due = terms is not None and len(terms) > 1 and every > 0 and self._network_progress(0)[0] % every == 0
        if due:
            params = [p for p in module.parameters() if p.requires_grad]
            scaled = {k: (scaler.scale(v) if scaler is not None else v) for k, v in terms.items()}
            tg = term_gradients(scaled, params)
            for p, g in zip(params, tg.total):
                p.grad = None if g is None else g.detach()
            self.grad_shares = tg.shares
        else:
            if terms is not None and len(terms) == 1:
                self.grad_shares = {next(iter(terms)): 1.0}
            (scaler.scale(loss) if scaler is not None else loss).backward()
        if self._dist.enabled and _dist.average_gradients_(module, local_nonfinite=local_bad):
            raise self._diverged(loss)
        if scaler is not None:
            scaler.unscale_(opt)
        if self.config.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], self.config.grad_clip_norm)
        if scaler is not None:
            scaler.step(opt)  # skipped (and the scale lowered) when the fp16 gradients overflowed
            scaler.update()
        else:
            opt.step()

    # ------------------------------------------------------------------ learning-rate schedule
    def _network_progress(self, which: int) -> tuple[int, int]:
        """(steps already made, steps in all) of the network ``which`` (0 = denoiser, 1 = detector) over the
        schedule, counting the phases that train it (:meth:`_phase_modes`)."""
        done = total = 0
        for i, ph in enumerate(self.schedule):
            if not self._phase_modes(ph)[which] and not (ph.name == "joint" and which == 1):
                continue
            total += ph.steps
            if i < self.phase_index:
                done += ph.steps
            elif i == self.phase_index:
                done += self.phase_step
        return done, total

    def _lr_factor(self, done: int, total: int) -> float:
        """Multiplier of the base learning rate after ``done`` of ``total`` steps: linear warm-up over
        ``config.warmup_steps``, then constant or a half cosine to 0 (``config.lr_schedule``)."""
        c = self.config
        warm = int(c.warmup_steps)
        f = min(1.0, (done + 1) / warm) if warm > 0 else 1.0
        if c.lr_schedule == "cosine" and total > warm:
            prog = min(1.0, max(0.0, (done - warm) / max(1, total - warm)))
            f *= 0.5 * (1.0 + np.cos(np.pi * prog)) if done >= warm else 1.0
        return float(f)

    def _apply_lr_schedule(self) -> None:
        """Set the learning rate of the denoiser's and the detector's optimisers for the next step."""
        c = self.config
        if c.lr_schedule == "constant" and int(c.warmup_steps) == 0:
            return
        for which, opt, base in ((0, self.opt_denoiser, c.lr_denoiser), (1, self.opt_detector, c.lr_detector)):
            if opt is None:
                continue
            f = self._lr_factor(*self._network_progress(which))
            for g in opt.param_groups:
                g["lr"] = base * f

    def _diverged(self, loss: torch.Tensor) -> LidnetError:
        rank = f" on rank {self._dist.rank}" if self._dist.enabled else ""
        return LidnetError(
            f"Training diverged at step {self.global_step + 1} (loss = {float(loss.detach())}{rank}). Lower the learning rate "
            f"(lr_detector {self.config.lr_detector:g}, lr_denoiser {self.config.lr_denoiser:g}), try "
            f"detector_optimizer 'sgd' or set grad_clip_norm, then resume from the last checkpoint."
        )

    def _grad_scaler(self, opt: torch.optim.Optimizer):
        """The GradScaler of ``opt`` with fp16 autocast (one per optimizer, so several optimizers may step
        in one training step); None otherwise (fp32, or bf16 which needs no loss scaling)."""
        if self._amp_dtype != torch.float16:
            return None
        key = id(opt)
        if key not in self._scalers:
            self._scalers[key] = torch.amp.GradScaler("cuda")
        return self._scalers[key]

    def _autocast(self):
        """``torch.autocast`` context of a training step with ``config.amp`` on CUDA; a null context otherwise."""
        if self._amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self._amp_dtype)

    def _to_device(self, batch):
        ldct, ndct, targets = batch
        dev = self.device
        return (
            ldct.to(dev, non_blocking=True),
            ndct.to(dev, non_blocking=True),
            [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets],
        )

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
        return _dist.any_flags(self.stop_requested, self._pause_file_exists())

    def _restore_rank_rng(self, state: dict[str, Any]) -> None:
        """Under torchrun, restore this rank's RNG state (``rng_ranks`` written by :meth:`save`)."""
        ranks = state.get("rng_ranks")
        if self._dist.enabled and isinstance(ranks, (list, tuple)) and len(ranks) == self._dist.world_size:
            _set_rng_state(ranks[self._dist.rank])

    # ------------------------------------------------------------------ files
    def _elapsed(self) -> float:
        return self._elapsed_before + (time.monotonic() - self._t0)

    def _event(self, event: str, phase: Optional[_Phase], **kw) -> ProgressEvent:
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
        if write and self.run_dir is not None and (self._dist.is_main or ev.event == "error"):
            if not self._dist.is_main:
                ev = ProgressEvent(**{**asdict(ev), "message": f"[rank {self._dist.rank}] {ev.message}"})
            if self._progress_fh is None:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._progress_fh = open(self.run_dir / PROGRESS_FILE, "a", encoding="utf-8")
            self._progress_fh.write(ev.to_json() + "\n")
            self._progress_fh.flush()
        return ev

    def _close_progress(self) -> None:
        if self._progress_fh is not None:
            try:
                self._progress_fh.close()
            finally:
                self._progress_fh = None

    def denoiser_checkpoint(self) -> dict[str, Any]:
        """The ``denoiser.pt`` dict of the contract (kind, model, state_dict, config, method, step)."""
        if self.denoiser is None:
            raise LidnetError(f"The {self.method} trainer has no denoiser.")
        return {
            "kind": "denoiser",
            "model": self.config.denoiser,
            "state_dict": _cpu_state_dict(self.denoiser),
            "config": self.config.to_dict(),
            "method": "baseline" if self.method == "baseline" else "lidnet",
            "step": int(self.global_step),
        }

    def detector_checkpoint(self) -> dict[str, Any]:
        """The ``detector.pt`` dict of the contract (kind, backbone, state_dict, config, step; plus
        ``method``: ``lidnet`` or ``ndct`` for a detector trained on normal-dose images only, and the
        detector's ``hparams`` (norm, anchors) so :func:`build_detector` rebuilds the same architecture)."""
        if self.detector is None:
            raise LidnetError(f"The {self.method} trainer has no detector.")
        ckpt = {
            "kind": "detector",
            "arch": str(getattr(self.detector, "arch", "faster_rcnn")),
            "backbone": str(getattr(self.detector, "backbone_name", self.config.detector_backbone)),
            "state_dict": _cpu_state_dict(self.detector),
            "config": self.config.to_dict(),
            "method": "ndct" if self.method == "detector" else self.method,
            "step": int(self.global_step),
        }
        hparams = getattr(self.detector, "hparams", None)
        if isinstance(hparams, dict):
            ckpt["hparams"] = hparams
        return ckpt

    def save_models(self, run_dir: Optional[str | os.PathLike] = None) -> list[Path]:
        """Write ``denoiser.pt`` and/or ``detector.pt`` (those this trainer has) atomically."""
        out = Path(run_dir) if run_dir is not None else self.run_dir
        if out is None:
            raise LidnetError("No run folder to save the models in.")
        paths = []
        if self.denoiser is not None:
            paths.append(save_checkpoint(out / DENOISER_FILE, self.denoiser_checkpoint()))
        if self.detector is not None:
            paths.append(save_checkpoint(out / DETECTOR_FILE, self.detector_checkpoint()))
        return paths

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: models, optimizers, position, data order, RNG states."""
        models, opts = {}, {}
        if self.denoiser is not None:
            models["denoiser"] = _cpu_state_dict(self.denoiser)
            opts["denoiser"] = self.opt_denoiser.state_dict()
        if self.detector is not None:
            models["detector"] = _cpu_state_dict(self.detector)
            opts["detector"] = self.opt_detector.state_dict()
        for name, (module, opt) in getattr(self, "_aux_modules", {}).items():  # critic, segmenter
            models[name] = _cpu_state_dict(module)
            opts[name] = opt.state_dict()
        return {
            "kind": "trainer_state",
            "method": self.method,
            "config": self.config.to_dict(),
            "schedule": [[p.name, p.round, p.steps] for p in self.schedule],
            "phase_index": int(self.phase_index),
            "phase_step": int(self.phase_step),
            "global_step": int(self.global_step),
            "elapsed_s": float(self._elapsed()),
            "models": models,
            "optimizers": opts,
            "data": self._stream.state_dict(),
            "data_detector": None if self._detector_stream is None else self._detector_stream.state_dict(),
            "rng": _rng_state(),
        }

    def save(self, path: Optional[str | os.PathLike] = None) -> Path:
        """Save :meth:`state_dict` atomically (default ``RUN_DIR/trainer_state.pt``)."""
        if path is None:
            if self.run_dir is None:
                raise LidnetError("No run folder: give a path to save the trainer state.")
            path = self.run_dir / STATE_FILE
        if not self._dist.enabled:
            return save_checkpoint(path, self.state_dict())
        # torchrun: every rank must call save() at the same step (collective); rank 0 writes the file with
        # every rank's RNG state ("rng_ranks") so that each rank resumes its own random stream.
        rng_ranks = _dist.all_gather_object(_rng_state())
        if self._dist.is_main:
            state = self.state_dict()
            state["rng_ranks"] = rng_ranks
            save_checkpoint(path, state)
        return Path(path)

    def _save_models_main(self) -> list[Path]:
        """:meth:`save_models` on rank 0 (the networks are identical on every rank); [] on other ranks."""
        return self.save_models() if self._dist.is_main else []

    def resume(self, path: str | os.PathLike) -> None:
        """Load a ``trainer_state.pt`` so that :meth:`run` continues exactly where it stopped.

        Raises
        ------
        CheckpointError
            Missing/corrupt file, not a trainer state, saved by another method (lidnet/baseline/detector),
            or saved with a different data set size.
        ConfigError
            The configuration differs from the saved one in a key that changes the training (all keys
            but device, num_workers, log_every, checkpoint_every, cache_dir).
        """
        state = load_checkpoint(path)
        if state.get("kind") != "trainer_state":
            raise CheckpointError(
                f"{path} is not a trainer state (kind={state.get('kind')!r}); resume from RUN_DIR/{STATE_FILE}."
            )
        if state.get("method") != self.method:
            raise CheckpointError(
                f"{path} was saved by a '{state.get('method')}' training, not '{self.method}'; resume with the same "
                f"method."
            )
        # Keys added to TrainConfig after the state was saved compare with their defaults.
        saved = {**TrainConfig().to_dict(), **dict(state.get("config", {}))}
        now = self.config.to_dict()
        diff = sorted(k for k in set(saved) | set(now) if k not in _RESUME_FREE_KEYS and saved.get(k) != now.get(k))
        if diff:
            raise ConfigError(
                f"Cannot resume from {path}: the configuration differs in {', '.join(diff)} "
                f"(saved: {', '.join(f'{k}={saved.get(k)!r}' for k in diff)}). Use the run's config.json."
            )
        sched = [[p.name, p.round, p.steps] for p in self.schedule]
        if [list(x) for x in state["schedule"]] != sched:
            raise CheckpointError(f"{path}: the saved step schedule {state['schedule']} differs from {sched}.")
        try:
            if self.denoiser is not None:
                self.denoiser.load_state_dict(state["models"]["denoiser"])
                self.opt_denoiser.load_state_dict(state["optimizers"]["denoiser"])
            if self.detector is not None:
                self.detector.load_state_dict(state["models"]["detector"])
                self.opt_detector.load_state_dict(state["optimizers"]["detector"])
            for name, (module, opt) in getattr(self, "_aux_modules", {}).items():
                module.load_state_dict(state["models"][name])
                opt.load_state_dict(state["optimizers"][name])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{path}: the saved networks do not match this configuration ({exc}).") from exc
        self._stream.load_state_dict(state["data"])
        if self._detector_stream is not None:
            if state.get("data_detector") is None:
                raise CheckpointError(f"{path} was saved by an older napari-lidnet without the detector's batch "
                                      "stream; start the run again (its batches would differ from a fresh run's).")
            self._detector_stream.load_state_dict(state["data_detector"])
        self.phase_index = int(state["phase_index"])
        self.phase_step = int(state["phase_step"])
        self.global_step = int(state["global_step"])
        self._elapsed_before = float(state.get("elapsed_s", 0.0))
        self._t0 = time.monotonic()
        _set_rng_state(state["rng"])
        self._restore_rank_rng(state)
        self._resumed = True

    # ------------------------------------------------------------------ the loop
    def _wait_while_paused(self, phase: _Phase) -> Iterator[ProgressEvent]:
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

    def _stop_now(self, phase: Optional[_Phase]) -> Iterator[ProgressEvent]:
        ckpt = None
        if self.run_dir is not None:
            ckpt = self.save()
            self._save_models_main()
            if self._dist.is_main:
                try:
                    (self.run_dir / STOP_FILE).unlink()
                except FileNotFoundError:
                    pass
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

    def run(self) -> Iterator[ProgressEvent]:
        """Train the whole schedule, yielding a :class:`ProgressEvent` after every step and at phase
        starts, checkpoints, pause, stop and the end.

        ``step`` events are written to ``progress.jsonl`` every ``config.log_every`` steps (and at each
        phase's last step); every other event is always written.

        Closing the generator early (``gen.close()``, breaking out of a loop) saves nothing: to keep the
        work, call :meth:`request_stop` (or create ``RUN_DIR/STOP``) and iterate until the ``stopped``
        event. After a stop, calling ``run()`` again continues in the same process.

        Raises
        ------
        LidnetError
            Any failure (an ``error`` event is written first). Non-Lidnet exceptions are wrapped.
        """
        self._t0 = time.monotonic()
        phase: Optional[_Phase] = self.schedule[self.phase_index] if not self.finished else None
        try:
            self._start_distributed()
            while not self.finished:
                phase = self.schedule[self.phase_index]
                msg = f"phase {phase.name}" + (f" round {phase.round}" if phase.round else "")
                if self._resumed:
                    msg += f" (resumed at step {self.phase_step}/{phase.steps})"
                    self._resumed = False
                yield self._log(self._event("phase_start", phase, message=msg))
                index = self.phase_index
                while self.phase_index == index:
                    stop, pause = self._agreed_flags()
                    if pause and not stop:
                        stop = yield from self._wait_while_paused(phase)
                    if stop:
                        yield from self._stop_now(phase)
                        return
                    self._modes(*self._phase_modes(phase))
                    self._apply_lr_schedule()
                    batch = self._to_device(self._stream_for(phase).next())
                    with self._autocast():
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
            self._close_progress()
            self._stream.close()
            if self._detector_stream is not None:
                self._detector_stream.close()

    def _stream_for(self, phase: _Phase) -> "_BatchStream":
        """The batch stream of a phase: the detector's own for T1/T3 of a two-network trainer, else the main one."""
        if self._detector_stream is not None and self._phase_modes(phase) == (False, True):
            return self._detector_stream
        return self._stream

    def _phase_modes(self, phase: _Phase) -> tuple[bool, bool]:
        """(train_denoiser, train_detector) of a phase."""
        return {"T1": (False, True), "T2": (True, False), "T3": (False, True), "baseline": (True, False)}[phase.name]

    def train_all(self) -> list[ProgressEvent]:
        """Run to the end (or a stop) and return the events (convenience for scripts and tests)."""
        return list(self.run())


class _CriticMixin:
    """WGAN-GP critic machinery shared by LIDnet's GAN form (Eq. 5 and Eq. 7) and the adversarial
    published baseline losses.

    Each denoiser step first makes ``config.critic_steps`` critic updates on the step's batch (the
    denoised images recomputed without gradient, a fresh interpolation weight per image for the
    gradient penalty each time), loss :func:`~src_training.losses.wgan_critic_loss`; then the denoiser
    loss gets ``lambda_adv * (-mean C(F(x)))`` with the critic frozen. The critic is
    :class:`src_training.models.critic.Critic` with Adam(``lr_critic``, betas (0.5, 0.9) as WGAN-VGG);
    both are saved in ``trainer_state.pt`` (``models["critic"]``, ``optimizers["critic"]``).
    """

    critic: Optional[nn.Module] = None
    opt_critic: Optional[torch.optim.Optimizer] = None

    def _register_aux(self, name: str, module: nn.Module, opt: torch.optim.Optimizer) -> None:
        """Save ``module`` and ``opt`` in the trainer state under ``name`` (see :meth:`state_dict`)."""
        if not hasattr(self, "_aux_modules"):
            self._aux_modules: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}
        self._aux_modules[name] = (module, opt)

    def _init_critic(self, critic: Optional[nn.Module] = None) -> None:
        from .models.critic import build_critic

        self.critic = (critic if critic is not None else build_critic()).to(self.device)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=self.config.lr_critic, betas=(0.5, 0.9))
        self._register_aux("critic", self.critic, self.opt_critic)

    def _critic_updates(self, ldct: torch.Tensor, ndct: torch.Tensor) -> dict[str, float]:
        """``config.critic_steps`` critic updates (Eq. 7); returns the last update's ``critic, gp, wdist``."""
        self.critic.train(True)
        for p in self.critic.parameters():
            p.requires_grad_(True)
        with torch.no_grad():
            fake = self.denoiser(ldct)
        parts: dict[str, float] = {}
        for _ in range(self.config.critic_steps):
            loss, parts = wgan_critic_loss(self.critic, ndct, fake, lambda_gp=self.config.lambda_gp)
            self._optimizer_step(self.opt_critic, loss, self.critic)
        return parts

    def _with_adversarial(
        self, total: torch.Tensor, parts: dict[str, float], denoised: torch.Tensor, weight: float
    ) -> torch.Tensor:
        """``total + weight * (-mean C(F(x)))`` with the critic frozen; adds ``adv`` to ``parts`` and
        updates ``parts["total"]``."""
        for p in self.critic.parameters():
            p.requires_grad_(False)
        adv = wgan_generator_loss(self.critic(denoised))
        total = total + float(weight) * adv
        parts["adv"] = float(adv.detach())
        parts["total"] = float(total.detach())
        return total


class CollaborativeTrainer(_CriticMixin, _TrainerBase):
    """LIDnet's collaborative training, Algorithm 1 of Chen et al. (ACM MM 2021, arXiv:2104.08845).

    Schedule: T1 detector steps on NDCT, then ``config.rounds`` x (T2 denoiser steps with the frozen
    detector, loss Eq. 8; T3 detector steps on the frozen denoiser's output). ``rounds = 0`` trains only
    the detector on NDCT (see also :class:`DetectorTrainer`).

    Variants selected in the configuration:

    * ``form="gan"``: LIDnet's GAN form (Eq. 5): in T2, ``critic_steps`` WGAN-GP critic updates (Eq. 7)
      precede every denoiser step, whose loss is Eq. 8 plus ``lambda_adv * (-mean C(F(x)))`` (see
      :class:`_CriticMixin`). Step losses add ``adv``, ``critic``, ``gp``, ``wdist``.
    * ``strategy="simultaneous"`` (ablation, Fig. 3): after T1, ``rounds`` phases ``joint`` of ``t2 + t3``
      steps (same total as Algorithm 1). Each joint step makes one denoiser update (Eq. 8, detector
      frozen) and then one detector update with the detection loss on the same batch's F(x) as computed
      before the denoiser update (detached); loss ``det_update``.
    * ``perceptual="global"`` / ``"none"``: the ``roi`` term is the global feature loss
      (:func:`~src_training.losses.global_perceptual_loss`) or dropped (reported as 0).

    Parameters
    ----------
    config : TrainConfig
    dataset : Dataset
        Items ``(ldct (1,H,W), ndct (1,H,W), target)`` as :class:`src_training.data.SliceDataset`; it is
        indexed with ``(index, epoch)`` tuples.
    denoiser, detector : nn.Module, optional
        Prebuilt networks (default: ``build_denoiser(config.denoiser)``,
        ``build_detector(config.detector_backbone, weights_path=config.detector_weights)``). The detector
        must follow the contract's ``LesionDetector`` API (``forward``, ``losses_and_rpn``, ``rpn_topk``).
    device : str or torch.device, optional
        Default: ``auto_device(config.device)``.
    run_dir : path-like, optional
        Where ``progress.jsonl``, checkpoints and STOP/PAUSE files live; None = nothing written.
    critic : nn.Module, optional
        Prebuilt critic for ``form="gan"`` (default :func:`src_training.models.critic.build_critic`).

    Optimizers: Adam(lr_denoiser) for the denoiser; Adam or SGD (``config.detector_optimizer``) with
    lr_detector for the detector; both keep their state across phases.

    Construction seeds python ``random``, numpy's global RNG and torch with ``config.seed`` (before
    building the networks). Data order and crops come from private generators (see ``_BatchStream``),
    so a run resumed from ``trainer_state.pt`` continues bit-exactly on the CPU (on CUDA, kernels such
    as RoIAlign's backward use atomics and are not bit-reproducible).

    Raises
    ------
    ConfigError
        Invalid configuration, or a dataset whose ``hu_range`` differs from ``config.hu_range``.
    """

    method = "lidnet"
    uses_denoiser = True
    uses_detector = True

    def __init__(self, config, dataset, *, denoiser=None, detector=None, device=None, run_dir=None, critic=None):
        super().__init__(config, dataset, denoiser=denoiser, detector=detector, device=device, run_dir=run_dir)
        if self.config.form == "gan" and self.denoiser is not None:
            self._init_critic(critic)

    def _schedule(self) -> list[_Phase]:
        c = self.config
        phases = [_Phase("T1", 0, c.t1)]
        for r in range(1, c.rounds + 1):
            if c.strategy == "simultaneous":
                phases.append(_Phase("joint", r, c.t2 + c.t3))
            else:
                phases += [_Phase("T2", r, c.t2), _Phase("T3", r, c.t3)]
        return phases

    def _phase_modes(self, phase: _Phase) -> tuple[bool, bool]:
        # A joint step starts with the denoiser update (detector frozen); _train_step switches.
        return (True, False) if phase.name == "joint" else super()._phase_modes(phase)

    def _ndct_features(self, ndct: torch.Tensor):
        """Backbone/FPN features T(y) of the normal-dose batch, without gradient, in eval behaviour
        (identical to the frozen detector's training behaviour: its norm layers are in eval mode)."""
        det = self.detector
        with torch.no_grad():
            det.eval()
            try:
                feats_fn = getattr(det, "features", None)
                if callable(feats_fn):
                    feats = feats_fn(ndct)
                else:
                    feats = det.rpn_topk(ndct, self.config.k_proposals).features
            finally:
                self._modes(True, False)
        return {k: v.detach() for k, v in feats.items()}

    def _detector_losses(self, images: torch.Tensor, targets) -> dict[str, float]:
        loss_dict = self.detector(images, targets)
        loss = detection_loss(loss_dict)
        self._optimizer_step(self.opt_detector, loss, self.detector)
        out = {"det": float(loss.detach())}
        out.update({k: float(v.detach()) for k, v in loss_dict.items()})
        return out

    def _denoiser_step(self, ldct, ndct, targets) -> tuple[dict[str, float], torch.Tensor]:
        """One denoiser update with the frozen detector: Eq. 8 (CNN form) or Eq. 5 (GAN form), terms reduced
        as ``config.loss_reduction`` says. Returns the losses and F(x) as computed before the update."""
        c = self.config
        extra = self._critic_updates(ldct, ndct) if self.critic is not None else {}
        denoised = self.denoiser(ldct)
        loss_dict, rpn = self.detector.losses_and_rpn(denoised, targets, c.k_proposals)
        red = c.loss_reduction
        if c.perceptual == "none":
            perc, lam = denoised.new_zeros(()), 0.0
        else:
            feat_nd = self._ndct_features(ndct)
            if c.perceptual == "global":
                perc = global_perceptual_loss(rpn.features, feat_nd, reduction=red)
            else:
                perc = roi_perceptual_loss(rpn.features, feat_nd, rpn.proposals, rpn.image_sizes, reduction=red)
            lam = c.lambda_roi
        rec = recon_loss(denoised, ndct, reduction=red)
        det = detection_loss(loss_dict)
        total, parts = lidnet_generator_loss(rec, perc, det, lam, c.lambda_det)
        terms = {"rec": rec, "roi": float(lam) * perc, "det": float(c.lambda_det) * det}
        if self.critic is not None:
            total = self._with_adversarial(total, parts, denoised, c.lambda_adv)
            terms["adv"] = total - rec - terms["roi"] - terms["det"]
        self._optimizer_step(self.opt_denoiser, total, self.denoiser, terms=terms)
        parts.update({k: float(v.detach()) for k, v in loss_dict.items()})
        parts.update(extra)
        return parts, denoised.detach()

    def _train_step(self, phase: _Phase, batch) -> dict[str, float]:
        ldct, ndct, targets = batch
        if phase.name == "T1":
            return self._detector_losses(ndct, targets)
        if phase.name == "T3":
            with torch.no_grad():
                denoised = self.denoiser(ldct)
            return self._detector_losses(denoised.detach(), targets)
        if phase.name == "T2":
            return self._denoiser_step(ldct, ndct, targets)[0]
        if phase.name == "joint":
            parts, denoised = self._denoiser_step(ldct, ndct, targets)
            self._modes(False, True)
            parts["det_update"] = self._detector_losses(denoised, targets)["det"]
            return parts
        raise LidnetError(f"Unknown phase {phase.name}")  # pragma: no cover


class BaselineTrainer(_CriticMixin, _TrainerBase):
    """The baseline denoiser: the same network trained without the detector for
    ``config.effective_baseline_steps`` steps (default ``t2 * rounds``, the denoiser budget of LIDnet).

    ``config.baseline_loss``: ``"mae"`` (default) = the reconstruction loss only (first term of Eq. 8, reduced
    as ``config.loss_reduction``; this project's control, not the paper's protocol, which trained each baseline
    with its published loss); ``"published"`` = the network's own published loss from
    :func:`src_training.baseline_losses.published_loss` (``content_loss`` plus, when the published method
    is adversarial, ``lambda_adv`` of that method times the WGAN-GP term of :class:`_CriticMixin`).
    Step losses: ``rec`` (MAE) always; with ``published`` also ``total``, ``content``, the content
    loss's parts and, if adversarial, ``adv, critic, gp, wdist``.

    Same events, STOP/PAUSE, checkpoints and resume as :class:`CollaborativeTrainer`; writes
    ``denoiser.pt`` with ``method = "baseline"``. Parameters as :class:`CollaborativeTrainer`
    (``detector`` is ignored).

    Raises
    ------
    ConfigError
        ``baseline_loss="published"`` while :mod:`src_training.baseline_losses` is not installed.
    """

    method = "baseline"
    uses_denoiser = True
    uses_detector = False

    def __init__(self, config, dataset, *, denoiser=None, detector=None, device=None, run_dir=None, critic=None):
        super().__init__(config, dataset, denoiser=denoiser, detector=None, device=device, run_dir=run_dir)
        self.published = None
        if self.config.baseline_loss == "published":
            try:
                from .baseline_losses import published_loss
            except ImportError as exc:
                raise ConfigError(
                    "baseline_loss 'published' needs src_training/baseline_losses.py, which is missing from this "
                    f"installation ({exc}); use baseline_loss 'mae' or update napari-lidnet."
                ) from exc
            self.published = published_loss(self.config.denoiser, vgg_weights=self.config.vgg_weights,
                                             device=self.device)
            if self.published.adversarial:
                self._init_critic(critic)

    def _schedule(self) -> list[_Phase]:
        return [_Phase("baseline", 0, self.config.effective_baseline_steps)]

    def _train_step(self, phase: _Phase, batch) -> dict[str, float]:
        ldct, ndct, _ = batch
        if self.published is None:
            denoised = self.denoiser(ldct)
            loss = recon_loss(denoised, ndct, reduction=self.config.loss_reduction)
            self._optimizer_step(self.opt_denoiser, loss, self.denoiser, terms={"rec": loss})
            return {"rec": float(loss.detach())}
        extra = self._critic_updates(ldct, ndct) if self.critic is not None else {}
        denoised = self.denoiser(ldct)
        content, cparts = self.published.content_loss(denoised, ndct)
        parts = {"total": float(content.detach()), "content": float(content.detach())}
        parts.update({str(k): float(v) for k, v in cparts.items()})
        total = content
        terms = {"content": content}
        if self.critic is not None:
            total = self._with_adversarial(total, parts, denoised, self.published.lambda_adv)
            terms["adv"] = total - content
        self._optimizer_step(self.opt_denoiser, total, self.denoiser, terms=terms)
        parts["rec"] = float(recon_loss(denoised.detach(), ndct))  # per-pixel MAE, for monitoring only
        parts.update(extra)
        return parts


class DetectorTrainer(CollaborativeTrainer):
    """A detector trained on normal-dose images only (phase T1 of Algorithm 1 on its own, ``config.t1``
    steps): the evaluation's "detector trained on NDCT". Writes ``detector.pt`` (``method = "ndct"``)
    and no denoiser. Parameters as :class:`CollaborativeTrainer` (``denoiser`` is ignored)."""

    method = "detector"
    uses_denoiser = False
    uses_detector = True

    def __init__(self, config, dataset, *, denoiser=None, detector=None, device=None, run_dir=None):
        _TrainerBase.__init__(self, config, dataset, denoiser=None, detector=detector, device=device, run_dir=run_dir)

    def _schedule(self) -> list[_Phase]:
        return [_Phase("T1", 0, self.config.t1)]


SEGMENTER_FILE = "segmenter.pt"


class TODNetTrainer(CollaborativeTrainer):
    """TOD-Net's task-oriented training (Zhang et al., "Task-Oriented Low-Dose CT Image Denoising", MICCAI
    2021): a FROZEN downstream network guides the denoiser, ``L = L_rec + lambda_task * L_task``
    (:func:`~src_training.losses.todnet_loss`; with ``form="gan"`` plus the WGAN-GP term as TOD-Net).

    ``config.task_network``:

    * ``"detector"``: the Faster R-CNN; ``L_task`` = its detection loss on F(x) (frozen, norm layers in
      eval mode, as LIDnet's T2).
    * ``"segmentation"``: a small 2-D U-Net (:mod:`src_training.models.segmenter`); ``L_task`` = Dice
      loss (:func:`~src_training.losses.dice_loss`) of its logits on F(x) against lesion masks made in
      the trainer from the target boxes: the ellipse inscribed in each box
      (:func:`~src_training.models.segmenter.boxes_to_masks`). Frozen in eval mode.

    Schedule: with ``config.task_weights`` (a ``detector.pt`` or ``segmenter.pt``) the downstream network
    is loaded and the run is one phase T2 (round 1) of ``effective_baseline_steps`` denoiser steps (the
    baseline's budget); without, a phase T1 first trains it on NDCT for ``t1`` steps (detector: Adam/SGD
    as LIDnet's T1; U-Net: Adam(lr_detector), Dice loss). Writes ``denoiser.pt`` (``method =
    "todnet"``) and the downstream network (``detector.pt`` or ``segmenter.pt``). Parameters as
    :class:`CollaborativeTrainer`, plus ``segmenter`` (a prebuilt U-Net).

    Raises
    ------
    CheckpointError
        ``task_weights`` missing, corrupt or of the wrong kind/architecture.
    """

    method = "todnet"
    uses_denoiser = True

    def __init__(self, config, dataset, *, denoiser=None, detector=None, segmenter=None, device=None,
                 run_dir=None, critic=None):
        task = str(getattr(config, "task_network", "detector")).strip().lower()
        weights = getattr(config, "task_weights", None)
        self.uses_detector = task == "detector"
        if self.uses_detector and detector is None and weights is not None:
            from .models.detector import build_detector

            detector = build_detector(getattr(config, "detector_backbone", "resnet50"), weights_path=weights)
            weights = None  # loaded
        super().__init__(config, dataset, denoiser=denoiser, detector=detector, device=device, run_dir=run_dir,
                         critic=critic)
        self.segmenter: Optional[nn.Module] = None
        if not self.uses_detector:
            from .models.segmenter import build_segmenter

            self.segmenter = (segmenter if segmenter is not None else build_segmenter()).to(self.device)
            self.opt_segmenter = torch.optim.Adam(self.segmenter.parameters(), lr=self.config.lr_detector)
            self._register_aux("segmenter", self.segmenter, self.opt_segmenter)
        if weights is not None:
            self._load_task_weights(weights)

    def _load_task_weights(self, path: str) -> None:
        ckpt = load_checkpoint(path)
        kind = "detector" if self.uses_detector else "segmenter"
        net = self.detector if self.uses_detector else self.segmenter
        sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
        if ckpt.get("kind") != kind or not isinstance(sd, dict):
            raise CheckpointError(
                f"task_weights {path} is not a {kind} checkpoint (kind={ckpt.get('kind')!r}); give the {kind}.pt of "
                f"a training run or leave task_weights empty to train the {kind} on NDCT first."
            )
        try:
            net.load_state_dict(sd)
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"task_weights {path} does not fit this {kind} ({exc}).") from exc

    def _schedule(self) -> list[_Phase]:
        c = self.config
        phases = [] if c.task_weights is not None else [_Phase("T1", 0, c.t1)]
        return phases + [_Phase("T2", 1, c.effective_baseline_steps)]

    def _modes(self, train_denoiser: bool, train_detector: bool) -> None:
        super()._modes(train_denoiser, train_detector)
        if self.segmenter is not None:
            self.segmenter.train(train_detector)
            for p in self.segmenter.parameters():
                p.requires_grad_(train_detector)

    def _task_loss(self, images: torch.Tensor, targets) -> tuple[torch.Tensor, dict[str, float]]:
        if self.segmenter is None:
            loss_dict = self.detector(images, targets)
            return detection_loss(loss_dict), {k: float(v.detach()) for k, v in loss_dict.items()}
        from .models.segmenter import boxes_to_masks

        masks = boxes_to_masks([t["boxes"] for t in targets], images.shape[-2], images.shape[-1], images.device)
        return dice_loss(self.segmenter(images), masks), {}

    def _train_step(self, phase: _Phase, batch) -> dict[str, float]:
        ldct, ndct, targets = batch
        if phase.name == "T1":
            loss, parts = self._task_loss(ndct, targets)
            opt, net = (self.opt_detector, self.detector) if self.segmenter is None else (self.opt_segmenter,
                                                                                         self.segmenter)
            self._optimizer_step(opt, loss, net)
            return {"task": float(loss.detach()), **parts}
        extra = self._critic_updates(ldct, ndct) if self.critic is not None else {}
        denoised = self.denoiser(ldct)
        task, task_parts = self._task_loss(denoised, targets)
        rec = recon_loss(denoised, ndct, reduction=self.config.loss_reduction)
        total, parts = todnet_loss(rec, task, self.config.lambda_task)
        terms = {"rec": rec, "task": float(self.config.lambda_task) * task}
        if self.critic is not None:
            total = self._with_adversarial(total, parts, denoised, self.config.lambda_adv)
            terms["adv"] = total - rec - terms["task"]
        self._optimizer_step(self.opt_denoiser, total, self.denoiser, terms=terms)
        parts.update(task_parts)
        parts.update(extra)
        return parts

    def denoiser_checkpoint(self) -> dict[str, Any]:
        """As :meth:`_TrainerBase.denoiser_checkpoint` with ``method = "todnet"``."""
        ckpt = super().denoiser_checkpoint()
        ckpt["method"] = "todnet"
        return ckpt

    def segmenter_checkpoint(self) -> dict[str, Any]:
        """``segmenter.pt``: ``{"kind": "segmenter", "model": "unet2d", "hparams", "state_dict", "config",
        "method": "todnet", "step"}`` (loadable as ``task_weights``)."""
        if self.segmenter is None:
            raise LidnetError("This TOD-Net run uses the detector, not a segmenter.")
        return {
            "kind": "segmenter",
            "model": "unet2d",
            "hparams": dict(getattr(self.segmenter, "hparams", {})),
            "state_dict": _cpu_state_dict(self.segmenter),
            "config": self.config.to_dict(),
            "method": "todnet",
            "step": int(self.global_step),
        }

    def save_models(self, run_dir: Optional[str | os.PathLike] = None) -> list[Path]:
        """``denoiser.pt`` and the downstream network (``detector.pt`` or ``segmenter.pt``), atomically."""
        paths = super().save_models(run_dir)
        if self.segmenter is not None:
            out = Path(run_dir) if run_dir is not None else self.run_dir
            paths.append(save_checkpoint(out / SEGMENTER_FILE, self.segmenter_checkpoint()))
        return paths


TRAINERS = {
    "lidnet": CollaborativeTrainer,
    "baseline": BaselineTrainer,
    "detector": DetectorTrainer,
    "todnet": TODNetTrainer,
}


def train_detector(
    config: TrainConfig, dataset: Dataset, *, detector=None, device=None, run_dir=None
) -> nn.Module:
    """Train a detector on NDCT for ``config.t1`` steps (Algorithm 1, T1) and return it.

    With ``run_dir`` the usual ``progress.jsonl``/``detector.pt``/``trainer_state.pt`` are written.
    Raises what :meth:`DetectorTrainer.run` raises.
    """
    trainer = DetectorTrainer(config, dataset, detector=detector, device=device, run_dir=run_dir)
    for _ in trainer.run():
        pass
    return trainer.detector


# ============================================================================================ CLI entry


def _prepare_dataset(config: TrainConfig, run_dir: Path, ctx: "_dist.DistContext") -> Dataset:
    """The dataset of ``config.train_data`` (LDCT simulated and cached in ``config.cache_dir`` or
    ``RUN_DIR/ldct_cache``): an in-memory :class:`~src_training.data.SliceDataset`, or with
    ``config.streaming`` a :class:`~src_training.datasets.StreamingSliceDataset` reading memory-mapped slice
    caches. Under torchrun local rank 0 of each node prepares first (fills the cache), the other ranks then
    read the cache; a failure on any rank raises on all."""
    from .data import SliceDataset, prepare_cases

    cache = config.cache_dir if config.cache_dir is not None else str(run_dir / "ldct_cache")

    def build():
        if config.streaming:
            from .datasets import StreamingSliceDataset

            return StreamingSliceDataset.from_config(config, cache_dir=cache)
        return SliceDataset(prepare_cases(config, cache_dir=cache), config.hu_range, crop_size=config.crop_size,
                            seed=config.seed)

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


def _append_event(run_dir: Path, ev: ProgressEvent) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / PROGRESS_FILE, "a", encoding="utf-8") as fh:
        fh.write(ev.to_json() + "\n")
        fh.flush()


def _print_event(ev: ProgressEvent) -> None:
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
            from .checkpoint import atomic_write_text

            atomic_write_text(run_dir / PROGRESS_FILE, "")
    try:
        config.validate()
        ctx = _dist.init_distributed(config.device)
        if ctx.is_main:
            config.save_json(run_dir / CONFIG_FILE)
        if dataset is None:
            dataset = _prepare_dataset(config, run_dir, ctx)
        trainer = TRAINERS[method](config, dataset, run_dir=run_dir)
        if resume is not None:
            trainer.resume(resume)
            if ctx.is_main:  # a run killed while writing a checkpoint may leave its hidden temporary file
                for tmp in run_dir.glob("." + "[!.]*.pt.*.tmp"):
                    tmp.unlink(missing_ok=True)
    except Exception as exc:  # noqa: BLE001
        err = exc if isinstance(exc, LidnetError) else LidnetError(f"Training could not start: {type(exc).__name__}: {exc}")
        rank = "" if main else f"[rank {os.environ.get('RANK')}] "  # any rank reports its failure
        _append_event(run_dir, ProgressEvent(event="error", phase=None, message=rank + str(err)))
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
                _print_event(ev)
            if ev.event == "step":
                n += 1
    finally:
        for sig, h in previous.items():
            try:
                signal.signal(sig, h)
            except (ValueError, OSError):  # pragma: no cover
                pass
    return 0
