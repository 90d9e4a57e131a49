"""The building blocks of every experiment: budgets, the protocol's data, and one LIDnet/baseline training run.

Used by ``lidnet demo`` (:mod:`src_training.demo`), ``lidnet reproduce`` (:mod:`src_training.reproduce`) and
``lidnet study`` (:mod:`src_training.study`), so the three train and measure the same way. The evaluation
protocol itself (data choices, the two shipped detectors) is :mod:`src_training.protocol`; scoring with
confidence intervals is :mod:`src_training.evaluation.scoring`.
"""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import torch

from .config import TrainConfig
from .data.cases import CaseArrays, case_options, prepare_case
from .data.slices import SliceDataset
from .models.detector import FRCNN_SAMPLING, build_detector
from .protocol import DATA_SEED, EVAL_CASE, IMAGE_SIZE, TRAIN_CASE, TRAIN_NODULES, Detectors, eval_case
from .simulation import DEFAULT_GEOMETRY
from .statistics import N_BOOT
from .training import BaselineTrainer, CollaborativeTrainer

__all__ = ["Budget", "DEMO_BUDGET", "FAST_BUDGET", "STUDY_BUDGET", "ExperimentData", "load_data", "TrainRun",
           "train_lidnet", "train_baseline", "environment", "noise_line"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- budgets
@dataclass(frozen=True)
class Budget:
    """Training sizes and steps of an experiment (the :class:`TrainConfig` fields it sets) and the data subset.

    Attributes
    ----------
    name : str
    t2, t3, rounds : int
        Algorithm 1 after the pretrained detector (T1 = 0: the shipped NDCT detector replaces it).
    batch_size, crop_size : int
    lr_denoiser, lr_detector : float
        Adam learning rates.
    lesion_crop_fraction : float
        Training crops centred on a lesion.
    slices : int or None
        Slices per case (the first ones with lesions; None = all 20). Only the fast budget uses a subset.
    n_boot : int
        Bootstrap resamples of the intervals (:data:`src_training.statistics.N_BOOT`; fewer in the fast budget).
    """

    name: str
    t2: int
    t3: int
    rounds: int
    batch_size: int = 4
    crop_size: int = 128
    lr_denoiser: float = 5e-4
    lr_detector: float = 1e-4
    lesion_crop_fraction: float = 0.75
    slices: Optional[int] = None
    n_boot: int = N_BOOT

    def config(self, **overrides: Any) -> TrainConfig:
        """The :class:`TrainConfig` of a run on this budget (protocol data, T1 = 0, Adam); ``overrides``
        replace any field (``denoiser``, ``seed``, ``lambda_roi``, ...).

        Raises
        ------
        ConfigError
            An invalid value.
        """
        fields_ = dict(
            denoiser="cpce", detector_backbone="resnet18", t1=0, t2=self.t2, t3=self.t3, rounds=self.rounds,
            batch_size=self.batch_size, crop_size=self.crop_size, lr_denoiser=self.lr_denoiser,
            lr_detector=self.lr_detector, detector_optimizer="adam", lesion_crop_fraction=self.lesion_crop_fraction,
            image_size=IMAGE_SIZE, synthetic_nodules_per_slice=TRAIN_NODULES, data_seed=DATA_SEED,
            train_data=[f"sample:{TRAIN_CASE}"], checkpoint_every=0, log_every=1,
        )
        fields_.update(overrides)
        return TrainConfig(**fields_).validate()


#: The demo: about ten minutes on two CPU cores, from an empty cache (measured in the README).
DEMO_BUDGET = Budget("demo", t2=80, t3=30, rounds=3)
#: The study and reproduce runs: a shorter schedule (2 rounds of 40 / 20).
STUDY_BUDGET = Budget("study", t2=40, t3=20, rounds=2)
#: Tests and a first look: 4 slices per case, 2 steps per phase; the numbers mean nothing.
FAST_BUDGET = Budget("fast", t2=2, t3=1, rounds=2, batch_size=2, crop_size=64, slices=4, n_boot=200)


# --------------------------------------------------------------------------------------------- data
@dataclass
class ExperimentData:
    """The training and evaluation cases of the protocol at one dose.

    Attributes
    ----------
    train, eval : CaseArrays
        ``lung1`` / ``lung2`` with synthetic nodules, LDCT simulated natively, resampled to the working size.
    n0 : float
    geometry : src_training.simulation.ScanGeometry
    seconds : float
    """

    train: CaseArrays
    eval: CaseArrays
    n0: float
    geometry: Any
    seconds: float

    def noise(self) -> dict[str, Any]:
        """Soft-tissue sigma (HU) of the simulated noise per case: pooled over slices on the native and the
        working grid, the middle slice and the range over slices (native), and the geometry."""
        def by(case: CaseArrays) -> dict[str, float]:
            s = [v for v in case.native_noise_sigma_by_slice if v == v]
            mid = case.native_noise_sigma_by_slice[len(case.native_noise_sigma_by_slice) // 2] if s else float("nan")
            return {"middle": mid, "min": min(s) if s else float("nan"), "max": max(s) if s else float("nan")}

        return {
            "n0": float(self.n0),
            "geometry": self.geometry.describe(),
            "train_native_sigma_hu": self.train.native_noise_sigma_hu,
            "train_sigma_hu": self.train.noise_sigma_hu,
            "train_native_slices": by(self.train),
            "eval_native_sigma_hu": self.eval.native_noise_sigma_hu,
            "eval_sigma_hu": self.eval.noise_sigma_hu,
            "eval_native_slices": by(self.eval),
            "native_pixel_mm": list(self.eval.native_spacing or ()),
            "working_pixel_mm": list(self.eval.spacing),
        }


def load_data(budget: Budget, *, n0: float, cache_dir: Optional[str | Path] = None, geometry=None,
              log: Callable[[str], None] = _log) -> ExperimentData:
    """Load, insert nodules, simulate (native, cached) and resample the protocol's two cases.

    Raises
    ------
    LidnetError
        Missing sample data or a simulation error.
    """
    geometry = geometry or DEFAULT_GEOMETRY
    t0 = time.perf_counter()
    opts = case_options(budget.config(n0=float(n0), sim_views=geometry.n_views, sim_bin_mm=geometry.bin_mm,
                                      sim_filter=geometry.filter_name))
    train = prepare_case(f"sample:{TRAIN_CASE}", cache_dir=cache_dir, max_slices=budget.slices, **opts)
    evalc = eval_case(n0=n0, cache_dir=cache_dir, geometry=geometry, max_slices=budget.slices)
    secs = time.perf_counter() - t0
    data = ExperimentData(train, evalc, float(n0), geometry, secs)
    log(f"  data: {TRAIN_CASE} ({train.n_slices} slices, {train.n_boxes} lesion boxes) trains, {EVAL_CASE} "
        f"({evalc.n_slices} slices, {evalc.n_boxes} boxes, {sum(len(b) for b in evalc.real_boxes.values())} real) "
        f"evaluates; data seed {DATA_SEED} [{secs:.0f} s]")
    log("  " + noise_line(data.noise()))
    return data


def noise_line(nz: Mapping[str, Any]) -> str:
    """One sentence stating N0, the geometry and the measured soft-tissue noise (for every report)."""
    def f(v) -> str:
        return "n/a" if v is None or v != v else f"{v:.0f}"

    e, t = nz["eval_native_slices"], nz["train_native_slices"]
    return (f"Low dose: N0 = {nz['n0']:g} photons per ray, {nz['geometry']}. Soft-tissue noise sigma of the simulated "
            f"scan (native {nz['native_pixel_mm'][1]:.2f} mm pixels): evaluation case {f(nz['eval_native_sigma_hu'])} "
            f"HU pooled, {f(e['middle'])} HU on the middle slice, {f(e['min'])}-{f(e['max'])} HU over slices; training "
            f"case {f(nz['train_native_sigma_hu'])} HU pooled, {f(t['middle'])} HU middle, {f(t['min'])}-{f(t['max'])} "
            f"HU. After resampling to {nz['working_pixel_mm'][1]:.2f} mm pixels (what the networks see): "
            f"{f(nz['eval_sigma_hu'])} HU (evaluation) and {f(nz['train_sigma_hu'])} HU (training), pooled. Fixed N0 "
            "per slice, no tube-current modulation: the noise grows with the attenuation of the slice.")


# --------------------------------------------------------------------------------------------- training
@dataclass
class TrainRun:
    """One finished training run.

    Attributes
    ----------
    trainer : the :mod:`src_training.training` trainer (``denoiser``, ``detector``, checkpoints)
    seconds : float
        Wall-clock time of ``run()`` without the time spent in ``on_event`` (e.g. Fig. 3 measurements).
    grad_shares : dict str -> float
        Mean over the measured denoiser steps (every ``config.grad_shares_every``-th) of each term's share of the
        gradient norm.
    grad_shares_by_round : dict int -> dict str -> float
    losses_last : dict str -> float
        The losses of the last denoiser step.
    """

    trainer: Any
    seconds: float
    grad_shares: dict[str, float] = field(default_factory=dict)
    grad_shares_by_round: dict[int, dict[str, float]] = field(default_factory=dict)
    losses_last: dict[str, float] = field(default_factory=dict)


def _iterate(trainer, label: str, log: Callable[[str], None], on_event=None) -> TrainRun:
    t0 = time.perf_counter()
    callback_s = 0.0
    last_print = 0.0
    sums: dict[int, dict[str, float]] = {}
    counts: dict[int, int] = {}
    every = int(getattr(trainer.config, "grad_shares_every", 1))
    denoiser_steps = 0
    losses_last: dict[str, float] = {}
    for ev in trainer.run():
        if ev.event == "phase_start":
            log(f"  [{label}] {ev.phase}" + (f" round {ev.round}" if ev.round else "") + f": {ev.phase_steps} steps")
        elif ev.event == "step":
            if ev.phase in ("T2", "baseline", "joint"):
                losses_last = dict(ev.losses)
                measured = every > 0 and denoiser_steps % every == 0  # the trainer's rule (schedule position)
                denoiser_steps += 1
                if ev.grad_shares and (measured or len(ev.grad_shares) == 1):
                    r = int(ev.round)
                    acc = sums.setdefault(r, {})
                    for k, v in ev.grad_shares.items():
                        acc[k] = acc.get(k, 0.0) + float(v)
                    counts[r] = counts.get(r, 0) + 1
            now = time.perf_counter()
            if now - last_print > 20 or ev.step == ev.phase_steps:
                parts = " ".join(f"{k}={v:.4g}" for k, v in ev.losses.items() if k in ("rec", "roi", "det", "total"))
                shares = " ".join(f"{k} {100 * v:.0f}%" for k, v in ev.grad_shares.items()) if ev.phase == "T2" else ""
                log(f"  [{label}] {ev.phase} {ev.step}/{ev.phase_steps} {parts}"
                    + (f" | grad share {shares}" if shares else "") + f" [{ev.elapsed_s:.0f} s]")
                last_print = now
        elif ev.event in ("stopped", "error"):
            log(f"  [{label}] {ev.event}: {ev.message}")
        if on_event is not None:
            tc = time.perf_counter()
            on_event(ev, trainer)
            callback_s += time.perf_counter() - tc
    by_round = {r: {k: v / counts[r] for k, v in acc.items()} for r, acc in sums.items()}
    total = sum(counts.values())
    mean: dict[str, float] = {}
    for r, acc in sums.items():
        for k, v in acc.items():
            mean[k] = mean.get(k, 0.0) + v / max(1, total)
    return TrainRun(trainer, time.perf_counter() - t0 - callback_s, mean, by_round, losses_last)


def train_lidnet(config: TrainConfig, data: ExperimentData, detectors: Detectors, *, device, run_dir=None,
                 label: str = "LIDnet", log: Callable[[str], None] = _log, on_event=None) -> TrainRun:
    """LIDnet (collaborative, Algorithm 1 from the pretrained detector: T1 = 0) on the training case.

    ``on_event(event, trainer)`` is called after every progress event (between two steps), e.g. to measure the
    current networks.

    The detector is a fresh copy of the shipped Faster R-CNN with the pretraining's RPN/ROI sampling
    (:data:`src_training.models.detector.FRCNN_SAMPLING`); ``detectors.own`` itself is not modified.

    Raises
    ------
    LidnetError
        A training failure (divergence, bad configuration).
    """
    torch.manual_seed(config.seed)
    det = build_detector(config.detector_backbone, weights_path=detectors.own_path, **FRCNN_SAMPLING)
    ds = SliceDataset([data.train], config.hu_range, crop_size=config.crop_size, seed=config.seed,
                      lesion_crop_fraction=config.lesion_crop_fraction)
    trainer = CollaborativeTrainer(config, ds, detector=det, device=device, run_dir=run_dir)
    return _iterate(trainer, label, log, on_event)


def train_baseline(config: TrainConfig, data: ExperimentData, *, device, run_dir=None, label: str = "baseline",
                   log: Callable[[str], None] = _log) -> TrainRun:
    """The baseline: the same denoiser, seed, crops and denoiser steps (``t2 * rounds``), reconstruction loss
    only (reduced as ``config.loss_reduction``).

    Raises
    ------
    LidnetError
        A training failure.
    """
    torch.manual_seed(config.seed)
    ds = SliceDataset([data.train], config.hu_range, crop_size=config.crop_size, seed=config.seed,
                      lesion_crop_fraction=config.lesion_crop_fraction)
    trainer = BaselineTrainer(config, ds, device=device, run_dir=run_dir)
    return _iterate(trainer, label, log)



# --------------------------------------------------------------------------------------------- reports
def _cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``; ``platform.processor()`` elsewhere). Trained weights and
    so the reports' last digits depend on the CPU's floating-point kernels (AVX2 vs AVX-512), so reports
    record it."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(dev: torch.device) -> dict[str, Any]:
    """Device, versions, threads and CPU (model, torch CPU capability) of a run (for the reports)."""
    env = {"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(),
           "cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env
