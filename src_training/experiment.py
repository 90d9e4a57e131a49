"""The building blocks of every experiment: data, the two shipped detectors, one LIDnet/baseline training run,
and the scoring of a method's images with confidence intervals.

Used by ``lidnet demo`` (:mod:`src_training.demo`), ``lidnet reproduce`` (:mod:`src_training.reproduce`) and
``lidnet study`` (:mod:`src_training.study`), so the three measure the same way (protocol:
:mod:`src_training.protocol`).

Scoring (:func:`score_volume`) keeps one value per evaluation unit, so that :func:`summarize` can give 95 %
bootstrap intervals and :func:`compare` paired differences (:mod:`src_training.statistics`):

* per slice: PSNR / SSIM / RMSE on the [0, 1] scale of the model HU range, whole slice and inside the lesion
  boxes (:func:`src_training.evaluation.image_metrics`);
* per lesion box: |GLCM feature - NDCT's| for correlation, homogeneity (Idm), energy (pyradiomics,
  :func:`src_training.evaluation.glcm_features`), all boxes and the real tumour's boxes;
* per slice matched detections of the independent judge (FCOS, ``judge``) and of LIDnet's own NDCT detector
  (the pretrained Faster R-CNN LIDnet trains against, ``own``), for AP-50 / AP-75 over all lesions and over
  the real tumour only. Point values of AP come from the library (torchmetrics + faster-coco-eval); the
  intervals resample the per-slice matches.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from .config import TrainConfig
from .data import CaseArrays, SliceDataset, prepare_case
from .statistics import (N_BOOT, Comparison, Estimate, SliceMatches, bootstrap_ap, bootstrap_ci, match_detections,
                         paired_ap_difference, paired_difference)
from .windowing import hu_to_unit

__all__ = ["Budget", "DEMO_BUDGET", "FAST_BUDGET", "STUDY_BUDGET", "ExperimentData", "load_data", "Detectors",
           "load_detectors", "TrainRun", "train_lidnet", "train_baseline", "MethodScores", "score_volume",
           "summarize", "compare", "verdict_text", "comparison_dict", "environment", "pct", "noise_line",
           "synthetic_boxes", "METRICS", "Metric"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- metrics table
@dataclass(frozen=True)
class Metric:
    """One reported number: key in the results, table label, format, scale, direction and unit of resampling.

    ``unit`` is ``"slice"`` (per-slice values), ``"lesion"`` (per lesion box) or ``"ap"`` (matched
    detections per slice)."""

    key: str
    label: str
    fmt: str
    scale: float
    higher_is_better: bool
    unit: str


#: Every number of Tables 2 and 3, in display order (the one table demo, reproduce, study and report use).
METRICS: tuple[Metric, ...] = (
    Metric("ap50", "AP-50 (%)", ".1f", 100.0, True, "ap"),
    Metric("ap75", "AP-75 (%)", ".1f", 100.0, True, "ap"),
    Metric("own_ap50", "own det. AP-50 (%)", ".1f", 100.0, True, "ap"),
    Metric("own_ap75", "own det. AP-75 (%)", ".1f", 100.0, True, "ap"),
    Metric("real_ap50", "real tumour AP-50 (%)", ".1f", 100.0, True, "ap"),
    Metric("glcm_correlation_diff", "Correlation", ".3f", 1.0, False, "lesion"),
    Metric("glcm_homogeneity_diff", "Homogeneity", ".3f", 1.0, False, "lesion"),
    Metric("glcm_energy_diff", "Energy", ".4f", 1.0, False, "lesion"),
    Metric("psnr", "PSNR (dB)", ".2f", 1.0, True, "slice"),
    Metric("ssim", "SSIM", ".3f", 1.0, True, "slice"),
    Metric("rmse", "RMSE [0,1]", ".4f", 1.0, False, "slice"),
    Metric("rmse_hu", "RMSE (HU)", ".1f", 1.0, False, "slice"),
    Metric("psnr_roi", "ROI PSNR (dB)", ".2f", 1.0, True, "slice"),
    Metric("ssim_roi", "ROI SSIM", ".3f", 1.0, True, "slice"),
    Metric("rmse_roi", "ROI RMSE [0,1]", ".4f", 1.0, False, "slice"),
)
_METRIC = {m.key: m for m in METRICS}
_AP_SOURCES = {"ap50": ("judge", 0.5), "ap75": ("judge", 0.75), "own_ap50": ("own", 0.5),
               "own_ap75": ("own", 0.75), "real_ap50": ("judge_real", 0.5)}


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
        from .protocol import DATA_SEED, IMAGE_SIZE, TRAIN_CASE, TRAIN_NODULES

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
    from .data import case_options
    from .protocol import DATA_SEED, EVAL_CASE, TRAIN_CASE, eval_case
    from .simulation import DEFAULT_GEOMETRY

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


# --------------------------------------------------------------------------------------------- detectors
@dataclass
class Detectors:
    """The shipped NDCT detectors (eval mode, on ``device``) and their files.

    Attributes
    ----------
    own : LesionDetector
        The pretrained Faster R-CNN: LIDnet's starting detector and the one it trains against.
    judge : FCOSLesionDetector
        The independent judge (never seen by any training run).
    own_path, judge_path : Path
    """

    own: Any
    judge: Any
    own_path: Path
    judge_path: Path


def load_detectors(device) -> Detectors:
    """Load both shipped detectors (:func:`src_training.protocol.shipped_weights`).

    Raises
    ------
    LidnetError
        A weights file is missing (with the command that rebuilds it) or damaged.
    """
    from .inference import load_detector
    from .protocol import DETECTOR_FILE, JUDGE_FILE, shipped_weights

    own_path, judge_path = shipped_weights(DETECTOR_FILE), shipped_weights(JUDGE_FILE)
    own, _ = load_detector(own_path, device=device)
    judge, _ = load_detector(judge_path, device=device)
    return Detectors(own, judge, own_path, judge_path)


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
    (:data:`src_training.pretrain.FRCNN_SAMPLING`); ``detectors.own`` itself is not modified.

    Raises
    ------
    LidnetError
        A training failure (divergence, bad configuration).
    """
    from .models.detector import build_detector
    from .pretrain import FRCNN_SAMPLING
    from .training import CollaborativeTrainer

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
    from .training import BaselineTrainer

    torch.manual_seed(config.seed)
    ds = SliceDataset([data.train], config.hu_range, crop_size=config.crop_size, seed=config.seed,
                      lesion_crop_fraction=config.lesion_crop_fraction)
    trainer = BaselineTrainer(config, ds, device=device, run_dir=run_dir)
    return _iterate(trainer, label, log)


# --------------------------------------------------------------------------------------------- scoring
@dataclass
class MethodScores:
    """One method's images scored on the evaluation case, one value per unit.

    Attributes
    ----------
    per_slice : dict str -> ndarray (z,)
        ``psnr``, ``ssim``, ``rmse``, ``rmse_hu``, ``psnr_roi``, ``ssim_roi``, ``rmse_roi`` (NaN where undefined).
    per_lesion : dict str -> ndarray (n_lesions,)
        ``glcm_{correlation,homogeneity,energy}_diff`` over every lesion box.
    per_real_lesion : dict str -> ndarray (n_real,)
        The same over the real tumour's boxes.
    matches : dict str -> list of SliceMatches
        ``judge``, ``own`` (all lesions) and ``judge_real`` (the real tumour only; the synthetic nodules are
        ignore regions there, so finding them is neither a hit nor a false positive), one entry per slice.
    ap : dict str -> float
        Library AP values (:func:`src_training.evaluation.detection_ap`): ``ap50``, ``ap75``, ``own_ap50``,
        ``own_ap75``, ``real_ap50``, ``real_ap75``.
    """

    per_slice: dict[str, np.ndarray]
    per_lesion: dict[str, np.ndarray]
    per_real_lesion: dict[str, np.ndarray]
    matches: dict[str, list[SliceMatches]]
    ap: dict[str, float]


class _NDCTFeatures:
    """GLCM features of the NDCT boxes, computed once per evaluation case."""

    def __init__(self, case: CaseArrays):
        self.case = case
        self.cache: dict[tuple[int, tuple[float, ...]], dict[str, float]] = {}

    def get(self, z: int, box) -> dict[str, float]:
        from .evaluation import glcm_features

        key = (int(z), tuple(float(v) for v in box))
        if key not in self.cache:
            sp = (float(self.case.spacing[1]), float(self.case.spacing[2]))
            self.cache[key] = glcm_features(self.case.ndct_hu[z], box, spacing_mm=sp)
        return self.cache[key]


_ROI_KEYS = ("correlation", "homogeneity", "energy")


def _lesion_diffs(images_hu: np.ndarray, case: CaseArrays, boxes_by_slice, ndct: _NDCTFeatures) -> dict[str, np.ndarray]:
    from .evaluation import EvaluationError, glcm_features

    sp = (float(case.spacing[1]), float(case.spacing[2]))
    out: dict[str, list[float]] = {k: [] for k in _ROI_KEYS}
    for z in sorted(boxes_by_slice):
        for box in np.asarray(boxes_by_slice[z]).reshape(-1, 4):
            try:
                fi = glcm_features(images_hu[z], box, spacing_mm=sp)
                fr = ndct.get(z, box)
                for k in _ROI_KEYS:
                    out[k].append(abs(fi[k] - fr[k]))
            except EvaluationError:  # a box thinner than 2 px after clipping
                for k in _ROI_KEYS:
                    out[k].append(float("nan"))
    return {f"glcm_{k}_diff": np.asarray(v, dtype=np.float64) for k, v in out.items()}


def synthetic_boxes(case: CaseArrays, z: int) -> np.ndarray:
    """The boxes of slice ``z`` that are synthetic nodules (``case.boxes`` minus ``case.real_boxes``), (n, 4)."""
    allb = np.asarray(case.boxes.get(z, np.zeros((0, 4))), np.float32).reshape(-1, 4)
    real = np.asarray(case.real_boxes.get(z, np.zeros((0, 4))), np.float32).reshape(-1, 4)
    if not len(real):
        return allb
    keep = [not np.any(np.all(np.isclose(b, real), axis=1)) for b in allb]
    return allb[np.asarray(keep, dtype=bool)] if len(allb) else allb


def _detections(detector, images_hu, hu_range) -> list[dict]:
    from .inference import detect_slices

    return [{"boxes": r["boxes"], "scores": r["scores"], "labels": r["labels"]}
            for r in detect_slices(detector, images_hu, hu_range, k=1, score_thresh=0.0)]


def score_volume(images_hu: np.ndarray, case: CaseArrays, detectors: Detectors, hu_range,
                 ndct_features: Optional[_NDCTFeatures] = None) -> MethodScores:
    """Score one method's images (``(z, y, x)`` float32 HU, same shape as ``case.ndct_hu``) against NDCT.

    Raises
    ------
    EvaluationError
        Shape mismatch or non-finite images.
    """
    from .evaluation import EvaluationError, detection_ap, image_metrics

    vol = np.asarray(images_hu, dtype=np.float32)
    if vol.shape != case.ndct_hu.shape:
        raise EvaluationError(f"images {vol.shape} and the evaluation NDCT {case.ndct_hu.shape} differ in shape.")
    keys = ("psnr", "ssim", "rmse", "rmse_hu", "psnr_roi", "ssim_roi", "rmse_roi")
    per_slice = {k: np.full(case.n_slices, np.nan) for k in keys}
    for z in range(case.n_slices):
        b = case.boxes.get(z)
        m = image_metrics(hu_to_unit(vol[z], hu_range), hu_to_unit(case.ndct_hu[z], hu_range),
                          boxes=b if b is not None and len(b) else None, hu_range=hu_range)
        for k in keys:
            per_slice[k][z] = m[k]
    ndct_features = ndct_features or _NDCTFeatures(case)
    per_lesion = _lesion_diffs(vol, case, case.boxes, ndct_features)
    per_real = _lesion_diffs(vol, case, case.real_boxes, ndct_features)

    def targets(boxes):
        return [{"boxes": np.asarray(boxes.get(z, np.zeros((0, 4))), np.float32).reshape(-1, 4)}
                for z in range(case.n_slices)]

    t_all, t_real = targets(case.boxes), targets(case.real_boxes)
    for z, t in enumerate(t_real):  # the synthetic nodules are ignore regions when the real tumour is scored
        t["ignore"] = synthetic_boxes(case, z)
    dj = _detections(detectors.judge, vol, hu_range)
    do = _detections(detectors.own, vol, hu_range)
    lib_j, lib_o, lib_r = detection_ap(dj, t_all), detection_ap(do, t_all), detection_ap(dj, t_real)
    matches = {"judge": match_detections(dj, t_all), "own": match_detections(do, t_all),
               "judge_real": match_detections(dj, t_real)}
    ap = {"ap50": lib_j["ap50"], "ap75": lib_j["ap75"], "own_ap50": lib_o["ap50"], "own_ap75": lib_o["ap75"],
          "real_ap50": lib_r["ap50"], "real_ap75": lib_r["ap75"]}
    return MethodScores(per_slice, per_lesion, per_real, matches, ap)


def _units(scores: MethodScores, key: str):
    m = _METRIC[key]
    if m.unit == "slice":
        return scores.per_slice[key]
    if m.unit == "lesion":
        return scores.per_lesion[key]
    return scores.matches[_AP_SOURCES[key][0]]


def summarize(scores: MethodScores, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Any]:
    """Point values and 95 % bootstrap intervals of every :data:`METRICS` entry (plus the real-tumour radiomics).

    Returns
    -------
    dict
        ``{key: value, key + "_ci": Estimate dict}`` for every metric; AP point values are the library's,
        their intervals resample slices; radiomics resample lesion boxes; image metrics resample slices.
        Also ``real_glcm_*_diff`` (+ ``_ci``) and ``n_slices``, ``n_lesions``.
    """
    out: dict[str, Any] = {}
    for m in METRICS:
        if m.unit == "ap":
            src, thr = _AP_SOURCES[m.key]
            est = bootstrap_ap(scores.matches[src], thr, n_boot=n_boot, seed=seed)
            value = scores.ap[m.key]
            est = Estimate(value, est.low, est.high, est.n)
        else:
            est = bootstrap_ci(_units(scores, m.key), n_boot=n_boot, seed=seed)
        out[m.key] = est.value
        out[m.key + "_ci"] = est.to_dict()
    for k, v in scores.per_real_lesion.items():
        est = bootstrap_ci(v, n_boot=n_boot, seed=seed)
        out[f"real_{k}"] = est.value
        out[f"real_{k}_ci"] = est.to_dict()
    out["real_ap75"] = scores.ap["real_ap75"]
    out["n_slices"] = len(scores.per_slice["psnr"])
    out["n_lesions"] = len(scores.per_lesion["glcm_correlation_diff"])
    return out


def compare(a: MethodScores, b: MethodScores, *, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, Comparison]:
    """Paired differences ``b - a`` (same slices / lesions resampled for both) of every :data:`METRICS`
    entry, with verdicts (``higher`` / ``lower`` / ``no difference``; whether higher is better is in
    :data:`METRICS`)."""
    out: dict[str, Comparison] = {}
    for m in METRICS:
        if m.unit == "ap":
            src, thr = _AP_SOURCES[m.key]
            out[m.key] = paired_ap_difference(a.matches[src], b.matches[src], thr, n_boot=n_boot, seed=seed)
        else:
            out[m.key] = paired_difference(_units(a, m.key), _units(b, m.key), n_boot=n_boot, seed=seed)
    return out


def pct(v) -> str:
    """A fraction in [0, 1] as a percentage with one decimal, or 'n/a' (None / NaN)."""
    return "n/a" if v is None or v != v else f"{100 * float(v):.1f}"


def comparison_dict(comparisons: Mapping[str, Comparison]) -> dict[str, dict[str, Any]]:
    """:func:`compare` output as plain dicts with the metric-aware reading (:func:`verdict_text`)."""
    return {k: {**c.to_dict(), "reading": verdict_text(k, c)} for k, c in comparisons.items()}


def environment(dev: torch.device) -> dict[str, Any]:
    """Device, versions and threads of a run (for the reports)."""
    import platform

    env = {"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def verdict_text(key: str, comparison: Comparison) -> str:
    """``"better"`` / ``"worse"`` / ``"no difference"`` for metric ``key`` (direction from :data:`METRICS`)."""
    if comparison.verdict == "no difference":
        return "no difference"
    better = (comparison.verdict == "higher") == _METRIC[key].higher_is_better
    return "better" if better else "worse"
