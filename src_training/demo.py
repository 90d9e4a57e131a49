"""The main job: LIDnet end to end on the bundled real chest CT (``lidnet demo``).

1. Load the two real chest CTs shipped in ``sample_data/`` (pyradiomics 3.0.1 test data, stored as DICOM
   series): ``lung1`` trains, ``lung2`` evaluates (split by patient, never by slice).
2. Resample the slices to the demo's image size, insert synthetic nodule-like lesions with known boxes
   (the two real tumours alone are too few to train a detector; the real tumour boxes are kept and the
   real-tumour-only AP is reported separately), and simulate low-dose CT at incident flux N0 (Poisson noise
   in the sinogram, :mod:`src_training.simulation`; seeded, cached).
3. Train the LIDnet pair with the collaborative strategy (Chen et al., ACM MM 2021, Algorithm 1: T1
   detector steps on NDCT, then rounds of T2 denoiser steps with Eq. 8 and the detector frozen, T3 detector
   steps on denoised images with the denoiser frozen), and the baseline denoiser (the same network, MAE
   only) with the same denoiser budget and seed. The detector as it stands after T1 is "the detector trained
   on NDCT" used to measure AP on every method's images.
4. Evaluate LDCT, baseline and LIDnet against NDCT on the held-out case: PSNR / SSIM / RMSE (whole slice
   and inside lesion boxes, on the [0, 1] scale of the model HU range), mean absolute difference of the
   GLCM radiomics features (correlation, homogeneity = Idm, energy = JointEnergy; pyradiomics) inside the
   lesion boxes, and AP-50 / AP-75.
5. Write the report folder: ``metrics.json``, ``tables.txt`` / ``tables.md`` (the paper's Tables 2 and 3
   layouts, also printed), ``comparison.png`` (NDCT | LDCT | baseline | LIDnet with lesion boxes and the
   top-K RPN proposals) and ``checkpoints/`` (atomic, ``torch.load(weights_only=True)``-loadable).

The step counts are far below the paper's (T1 = T2 = 4000, T3 = 2000 at 512 x 512, batch 8, on GPUs) so that
the job runs in about ten minutes on two CPU cores; they are written into the report.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from .checkpoint import atomic_write_text, save_checkpoint
from .config import TrainConfig
from .data import CaseArrays, SliceDataset, load_source, prepare_case, resample_slices
from .device import auto_device
from .evaluation import detection_ap, image_metrics, radiomics_difference
from .inference import denoise_volume, detect_slices
from .models.denoisers import DENOISERS
from .report import format_markdown_tables, format_tables, save_comparison_figure
from .sample import load_sample_case, sample_dir
from .training import BaselineTrainer, CollaborativeTrainer
from .windowing import hu_to_unit

#: Display names of the denoisers in the tables.
DISPLAY_NAMES = {"redcnn": "RED-CNN", "cpce": "CPCE", "wganvgg": "WGAN-VGG", "mapnn": "MAP-NN", "ssms": "SSMS", "reshlf": "Res-HLF", "dcscn": "DCSCN", "dcswgan": "DCSWGAN"}


@dataclass(frozen=True)
class DemoBudget:
    """Sizes and step counts of a demo run (paper: 512 px, T1 = T2 = 4000, T3 = 2000, batch 8).

    Attributes
    ----------
    image_size : int
        Slices are resampled to ``image_size`` x ``image_size`` pixels before simulation; evaluation uses
        these whole slices.
    crop_size : int or None
        Training steps see random ``crop_size`` squares of the slices (None = whole slices, as the paper).
    t1, t2, t3, rounds : int
        Algorithm 1 step counts (the baseline gets ``t2 * rounds`` denoiser steps).
    batch_size : int
        Slices per step.
    train_nodules, eval_nodules : int
        Synthetic nodules inserted per training / evaluation slice.
    lr_denoiser, lr_detector : float
        Learning rates (Adam for both).
    """

    image_size: int
    crop_size: Optional[int]
    t1: int
    t2: int
    t3: int
    rounds: int
    batch_size: int
    train_nodules: int
    eval_nodules: int
    lr_denoiser: float
    lr_detector: float


#: About ten minutes on two CPU cores (measured in the README).
FULL_BUDGET = DemoBudget(image_size=256, crop_size=128, t1=100, t2=40, t3=20, rounds=2, batch_size=4,
                         train_nodules=3, eval_nodules=2, lr_denoiser=5e-4, lr_detector=1e-4)
#: About a minute: for tests and a first look (the numbers mean little).
FAST_BUDGET = DemoBudget(image_size=64, crop_size=None, t1=2, t2=2, t3=1, rounds=1, batch_size=2,
                         train_nodules=2, eval_nodules=1, lr_denoiser=5e-4, lr_detector=1e-4)


#: Detector sampling settings of the demo (torchvision Faster R-CNN keyword arguments; no effect on weights).
DETECTOR_SPEED_KWARGS = {"rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 500,
                         "rpn_post_nms_top_n_test": 300, "box_batch_size_per_image": 128}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def case_with_nodules(source: str, budget: DemoBudget, nodules: int, n0: float, seed: int,
                      cache_dir: Path) -> tuple[CaseArrays, dict[int, np.ndarray]]:
    """Prepare a sample case (:func:`src_training.data.prepare_case`: resampled to ``budget.image_size``,
    ``nodules`` synthetic nodules per slice, LDCT simulated at ``n0`` with ``seed``, cached in ``cache_dir``)
    and also return its real lesion boxes ``{slice: (n, 4) xyxy pixels}`` at that image size."""
    case = prepare_case(source, n0=n0, seed=seed, image_size=budget.image_size,
                        synthetic_nodules_per_slice=nodules, cache_dir=cache_dir)
    hu, spacing, boxes = load_source(source, require_boxes=True)
    _, real, _ = resample_slices(hu, boxes, spacing, budget.image_size)
    return case, real


def run_trainer(trainer, label: str, snapshot_phase: Optional[str] = None, *,
                on_event: Optional[Callable[[Any], None]] = None,
                log: Callable[[str], None] = None) -> tuple[float, Optional[dict]]:
    """Iterate a trainer's ``run()`` to the end, printing compact progress (every 15 s and at phase ends).

    Parameters
    ----------
    trainer : a :mod:`src_training.training` trainer
    label : str
        Prefix of the progress lines.
    snapshot_phase : str, optional
        When this phase starts the first time, a CPU copy of ``trainer.detector.state_dict()`` is taken
        (the demo's "detector trained on NDCT" is the detector as it stands when T2 starts).
    on_event : callable(ProgressEvent), optional
        Called after every event, between two training steps (e.g. to evaluate the current networks).
    log : callable(str), optional
        Where progress lines go (default: stderr).

    Returns
    -------
    (float, dict or None)
        Wall-clock seconds of the whole iteration (including ``on_event`` time) and the snapshot.
    """
    log = log or _log
    t0 = time.perf_counter()
    snapshot = None
    last_print = 0.0
    for ev in trainer.run():
        if ev.event == "phase_start":
            if snapshot_phase and ev.phase == snapshot_phase and snapshot is None:
                snapshot = copy.deepcopy({k: v.detach().cpu() for k, v in trainer.detector.state_dict().items()})
            log(f"  [{label}] {ev.phase} (round {ev.round}): {ev.phase_steps} steps")
        elif ev.event == "step":
            now = time.perf_counter()
            if now - last_print > 15 or ev.step == ev.phase_steps:
                losses = " ".join(f"{k}={v:.4f}" for k, v in ev.losses.items() if k in ("rec", "roi", "det", "total"))
                log(f"  [{label}] {ev.phase} step {ev.step}/{ev.phase_steps} "
                    f"({ev.global_step}/{ev.total_steps}) {losses} [{ev.elapsed_s:.0f} s]")
                last_print = now
        elif ev.event in ("stopped", "error"):
            log(f"  [{label}] {ev.event}: {ev.message}")
        if on_event is not None:
            on_event(ev)
    return time.perf_counter() - t0, snapshot


def _mean(values) -> float:
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_images(name: str, images_hu: np.ndarray, case: CaseArrays, real_boxes: dict[int, np.ndarray],
                    detector, hu_range, k: int) -> dict[str, Any]:
    """Metrics of one method's evaluation volume against NDCT (see module docstring, step 4).

    ``images_hu`` (z, y, x) float32 HU, same shape as ``case.ndct_hu``. Returns a flat dict: ``psnr``,
    ``ssim``, ``rmse`` ([0, 1] scale of ``hu_range``), ``rmse_hu``, the ``*_roi`` versions inside the lesion
    boxes, ``glcm_{correlation,homogeneity,energy}_diff`` (mean absolute difference to NDCT over all
    boxes; ``real_*`` over the real tumour boxes) and :func:`detection_scores`. ``name`` is unused (kept
    for logging call sites).
    """
    ndct = case.ndct_hu
    per_slice = []
    for z in range(ndct.shape[0]):
        boxes = case.boxes.get(z)
        m = image_metrics(hu_to_unit(images_hu[z], hu_range), hu_to_unit(ndct[z], hu_range),
                          boxes=boxes if boxes is not None and len(boxes) else None, hu_range=hu_range)
        per_slice.append(m)
    out: dict[str, Any] = {}
    for key in ("psnr", "ssim", "rmse", "rmse_hu", "psnr_roi", "ssim_roi", "rmse_roi", "rmse_roi_hu"):
        out[key] = _mean(m.get(key) for m in per_slice)
    # Radiomics: every lesion box (real and synthetic), spacing in mm of the resampled slices.
    diffs = {"glcm_correlation_diff": [], "glcm_homogeneity_diff": [], "glcm_energy_diff": []}
    real_diffs = {k2: [] for k2 in diffs}
    spacing = (float(case.spacing[1]), float(case.spacing[2]))
    for z, boxes in case.boxes.items():
        if not len(boxes):
            continue
        rd = radiomics_difference(images_hu[z], ndct[z], boxes, spacing_mm=spacing)
        n = int(rd.get("n_boxes", 0))
        for k2 in diffs:
            if n and np.isfinite(rd[k2]):
                diffs[k2].extend([rd[k2]] * n)
        rb = real_boxes.get(z)
        if rb is not None and len(rb):
            rr = radiomics_difference(images_hu[z], ndct[z], rb, spacing_mm=spacing)
            for k2 in diffs:
                if int(rr.get("n_boxes", 0)) and np.isfinite(rr[k2]):
                    real_diffs[k2].append(rr[k2])
    for k2 in diffs:
        out[k2] = _mean(diffs[k2])
        out[f"real_{k2}"] = _mean(real_diffs[k2])
    # Detection with the detector trained on NDCT.
    out.update(detection_scores(images_hu, case, real_boxes, detector, hu_range, k))
    return out


def detection_scores(images_hu: np.ndarray, case: CaseArrays, real_boxes: dict[int, np.ndarray], detector,
                     hu_range, k: int) -> dict[str, float]:
    """AP-50 / AP-75 (fractions in [0, 1]) of ``detector`` on a volume, over all lesion boxes and over the
    real tumour boxes only (Chen et al., ACM MM 2021, Table 2).

    Parameters
    ----------
    images_hu : ndarray (z, y, x) float32, HU
        One method's images of ``case`` (same shape as ``case.ndct_hu``).
    case : CaseArrays
        Gives the ground-truth boxes ``case.boxes`` {slice: (n, 4) xyxy pixels}.
    real_boxes : dict {slice: (n, 4)}
        Real tumour boxes (``real_ap50`` / ``real_ap75``).
    detector : LesionDetector
        Run in eval behaviour, no gradient (:func:`src_training.inference.detect_slices`, score
        threshold 0).
    hu_range : (float, float)
        Model HU range scaled to [0, 1].
    k : int
        Top-K RPN proposals (kept in the detector output, unused by AP).

    Returns
    -------
    dict
        ``ap50``, ``ap75``, ``real_ap50``, ``real_ap75`` (NaN where there is no ground truth).
    """
    preds, targets, real_targets = [], [], []
    for res in detect_slices(detector, images_hu, hu_range, k=k, score_thresh=0.0):
        z = res["slice"]
        preds.append({"boxes": res["boxes"], "scores": res["scores"], "labels": res["labels"]})
        gt = case.boxes.get(z, np.zeros((0, 4), np.float32))
        targets.append({"boxes": gt, "labels": np.ones(len(gt), np.int64)})
        rg = real_boxes.get(z, np.zeros((0, 4), np.float32))
        real_targets.append({"boxes": rg, "labels": np.ones(len(rg), np.int64)})
    ap = detection_ap(preds, targets)
    ap_real = detection_ap(preds, real_targets)
    return {"ap50": ap["ap50"], "ap75": ap["ap75"], "real_ap50": ap_real["ap50"], "real_ap75": ap_real["ap75"]}


def detector_from_state(backbone: str, state: dict, device: torch.device):
    """A detector with the demo's sampling settings (:data:`DETECTOR_SPEED_KWARGS`) loaded from a state
    dict, on ``device``, in eval behaviour."""
    from .models.detector import build_detector

    det = build_detector(backbone, **DETECTOR_SPEED_KWARGS)
    det.load_state_dict(state)
    return det.to(device).eval()


def budget_config(budget: DemoBudget, *, denoiser: str, backbone: str, n0: float, seed: int, device,
                  cache: Path, train_case: str, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` of a demo-style run: ``budget``'s sizes, steps and learning rates, Adam for
    both networks, no periodic checkpoints, training data ``sample:<train_case>``; ``overrides`` replace
    any field (e.g. ``t1=0``, ``form="gan"``).

    Raises
    ------
    ConfigError
        An invalid value (from :meth:`TrainConfig.validate`, run by the trainers).
    """
    fields = dict(
        denoiser=denoiser, detector_backbone=backbone, t1=budget.t1, t2=budget.t2, t3=budget.t3,
        rounds=budget.rounds, batch_size=budget.batch_size, lr_denoiser=budget.lr_denoiser,
        lr_detector=budget.lr_detector, detector_optimizer="adam", n0=float(n0), seed=int(seed),
        image_size=budget.image_size, crop_size=budget.crop_size, synthetic_nodules_per_slice=budget.train_nodules,
        device=str(device), checkpoint_every=0, train_data=[f"sample:{train_case}"], cache_dir=str(cache), log_every=1,
    )
    fields.update(overrides)
    return TrainConfig(**fields)


def load_demo_data(budget: DemoBudget, *, n0: float, seed: int, cache: Path, train_case: str, eval_case: str,
                   log: Callable[[str], None] = None) -> tuple[CaseArrays, CaseArrays, dict[int, np.ndarray], float]:
    """Steps 1-2 of the demo: load the sample cases, insert synthetic nodules, simulate LDCT (cached).

    The training case gets ``budget.train_nodules`` nodules per slice and LDCT seed ``seed``; the
    evaluation case ``budget.eval_nodules`` and seed ``seed + 1000`` (split by patient).

    Returns
    -------
    (CaseArrays, CaseArrays, dict, float)
        Training case, evaluation case, the evaluation case's real tumour boxes {slice: (n, 4) xyxy px}
        and the seconds spent.

    Raises
    ------
    LidnetError
        Missing sample data or a simulation error.
    """
    log = log or _log
    t0 = time.perf_counter()
    for name in (train_case, eval_case):
        c = load_sample_case(name)
        log(f"  loaded {name}: {c.ndct.hu.shape[0]} slices {c.ndct.hu.shape[1]}x{c.ndct.hu.shape[2]}, "
            f"spacing {tuple(round(s, 3) for s in c.ndct.spacing)} mm, {sum(len(b) for b in c.boxes.values())} "
            f"real lesion boxes")
    train, _ = case_with_nodules(f"sample:{train_case}", budget, budget.train_nodules, n0, seed, cache)
    evalc, eval_real = case_with_nodules(f"sample:{eval_case}", budget, budget.eval_nodules, n0, seed + 1000,
                                         cache)
    t_data = time.perf_counter() - t0
    log(f"  data ready in {t_data:.1f} s (LDCT cache: {cache})")
    return train, evalc, eval_real, t_data


def run_demo(out_dir: str | Path = "lidnet-report", *, fast: bool = False, n0: float = 1000.0, seed: int = 0,
             device: str = "auto", denoiser: Optional[str] = None, backbone: Optional[str] = None,
             cache_dir: Optional[str | Path] = None, budget: Optional[DemoBudget] = None,
             train_case: str = "lung1", eval_case: str = "lung2") -> dict[str, Any]:
    """Run the main job and write the report folder (see the module docstring for the steps).

    Parameters
    ----------
    out_dir : path-like
        Report folder (created; existing files of a previous report are replaced atomically).
    fast : bool
        Use :data:`FAST_BUDGET` (about a minute) instead of :data:`FULL_BUDGET` (about ten minutes on 2 CPU
        cores).
    n0 : float
        Incident flux N0 (photons per detector bin) of the simulated LDCT (paper: 1000 for lung CT).
    seed : int
        Seed of everything (simulation, nodules, initialisation, data order).
    device : str
        ``auto`` (cuda > mps > cpu), ``cuda``, ``mps`` or ``cpu``.
    denoiser : str, optional
        A name from :data:`src_training.models.denoisers.DENOISERS`. Default: ``"redcnn"`` (the paper's main
        baseline) on a GPU, ``"cpce"`` on the CPU (RED-CNN's 96-filter 5x5 layers cost about 15x more per
        step, too much for the ten-minute CPU budget).
    backbone : str, optional
        Detector backbone (default ``"resnet18"`` on the CPU budget; the paper uses ``"resnet50"``).
    cache_dir : path-like, optional
        Cache of simulated LDCT (default ``sample_data/.cache``).
    budget : DemoBudget, optional
        Overrides ``fast``.
    train_case, eval_case : str
        Sample case names.

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    LidnetError
        Missing sample data, bad options (unknown denoiser/backbone/device), simulation errors.
    """
    t_start = time.perf_counter()
    budget = budget or (FAST_BUDGET if fast else FULL_BUDGET)
    dev = auto_device(device)
    denoiser = (denoiser or ("redcnn" if dev.type == "cuda" else "cpce")).lower()
    backbone = backbone or ("resnet50" if dev.type == "cuda" else "resnet18")
    if denoiser not in DENOISERS:
        from .errors import ConfigError

        raise ConfigError(f"Unknown denoiser '{denoiser}'. Choose one of: {', '.join(DENOISERS)}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoints"
    cache = Path(cache_dir) if cache_dir is not None else sample_dir() / ".cache"
    dname = DISPLAY_NAMES.get(denoiser, denoiser)
    config = budget_config(budget, denoiser=denoiser, backbone=backbone, n0=n0, seed=seed, device=dev,
                           cache=cache, train_case=train_case)
    _log(f"napari-lidnet demo: {dname} + Faster R-CNN ({backbone}-FPN) on {dev}, N0={n0:g}, seed={seed}, "
         f"{budget.image_size}x{budget.image_size} px, T1={budget.t1} T2={budget.t2} T3={budget.t3} "
         f"rounds={budget.rounds} batch={budget.batch_size}")

    # 1-2. Data: real CT, synthetic nodules, simulated LDCT (cached).
    train, evalc, eval_real, t_data = load_demo_data(budget, n0=n0, seed=seed, cache=cache, train_case=train_case,
                                                     eval_case=eval_case)
    dataset = SliceDataset([train], config.hu_range, crop_size=budget.crop_size, seed=seed)

    # 3. LIDnet (collaborative) then the baseline, same seed and denoiser budget.
    torch.manual_seed(seed)
    from .models.detector import build_detector

    # Fewer RPN proposals kept and fewer sampled RoIs than torchvision's defaults (1000/2000, 512): on
    # small CPU images the defaults dominate the step time. The architecture (and weights) are unchanged.
    detector = build_detector(backbone, **DETECTOR_SPEED_KWARGS)
    lid = CollaborativeTrainer(config, dataset, detector=detector, device=dev, run_dir=ckpt_dir / "lidnet")
    t_lid, det_ndct_state = run_trainer(lid, "LIDnet", snapshot_phase="T2")
    if det_ndct_state is None:  # rounds = 0: the detector never left NDCT
        det_ndct_state = {k: v.detach().cpu() for k, v in lid.detector.state_dict().items()}
    save_checkpoint(ckpt_dir / "detector_ndct.pt", {
        "kind": "detector", "backbone": backbone, "state_dict": det_ndct_state, "config": config.to_dict(),
        "method": "ndct", "step": budget.t1, "hparams": lid.detector.hparams})
    torch.manual_seed(seed)
    base = BaselineTrainer(config, dataset, device=dev, run_dir=ckpt_dir / "baseline")
    t_base, _ = run_trainer(base, "baseline")

    # 4. Evaluation on the held-out case.
    t0 = time.perf_counter()
    _log(f"  evaluating on {eval_case} ({evalc.n_slices} slices, "
         f"{sum(len(b) for b in evalc.boxes.values())} lesion boxes, "
         f"{sum(len(b) for b in eval_real.values())} of them real)")
    det_eval = detector_from_state(backbone, det_ndct_state, dev)
    hu_range = config.hu_range
    outputs = {
        "NDCT": evalc.ndct_hu,
        "LDCT": evalc.ldct_hu,
        f"Baseline ({dname})": denoise_volume(base.denoiser, evalc.ldct_hu, hu_range, device=dev),
        f"LIDnet ({dname})": denoise_volume(lid.denoiser, evalc.ldct_hu, hu_range, device=dev),
    }
    methods = {}
    for name, vol in outputs.items():
        methods[name] = evaluate_images(name, vol, evalc, eval_real, det_eval, hu_range, config.k_proposals)
    t_eval = time.perf_counter() - t0

    # 5. Report.
    z_fig = max(eval_real, key=lambda z: float(np.prod(eval_real[z][:, 2:] - eval_real[z][:, :2], axis=1).max()))\
        if eval_real else max(evalc.boxes, key=lambda z: len(evalc.boxes[z]))
    proposals = {}
    panels = []
    for name, vol in outputs.items():
        res = next(detect_slices(det_eval, vol, hu_range, k=config.k_proposals, slices=[z_fig]))
        proposals[name] = res["proposals"]
        panels.append((name, vol[z_fig]))
    fig_boxes = evalc.boxes.get(z_fig)
    save_comparison_figure(
        out / "comparison.png", panels, window="lung", boxes=fig_boxes, proposals=proposals,
        title=f"{eval_case} slice {z_fig}: simulated LDCT N0={n0:g}; boxes = lesions (real + synthetic), "
              f"dashed = top-{config.k_proposals} RPN proposals of the NDCT detector")
    metrics = {
        "methods": {k: v for k, v in methods.items() if k != "NDCT"},
        "ndct_reference": methods["NDCT"],
        "hu_range": list(hu_range),
        "n_images": int(evalc.n_slices),
        "n_lesions": int(sum(len(b) for b in evalc.boxes.values())),
        "n_real_lesions": int(sum(len(b) for b in eval_real.values())),
        "config": config.to_dict(),
        "budget": asdict(budget),
        "data": {"train_case": train_case, "eval_case": eval_case, "sample_dir": str(sample_dir()),
                 "synthetic_nodules": "inserted before simulation; boxes known; AP and radiomics over all "
                                      "lesions, real-tumour-only values under real_*"},
        "timing_s": {"data": round(t_data, 1), "lidnet_training": round(t_lid, 1),
                     "baseline_training": round(t_base, 1), "evaluation": round(t_eval, 1),
                     "total": round(time.perf_counter() - t_start, 1)},
        "environment": {"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads()},
    }
    tables = format_tables(metrics)
    atomic_write_text(out / "tables.txt", tables + "\n")
    atomic_write_text(out / "tables.md", format_markdown_tables(metrics) + "\n")
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2) + "\n")
    print(tables)
    ref = methods["NDCT"]
    print(f"\nReference: the NDCT detector on NDCT itself gives AP-50 {pct(ref['ap50'])} / "
          f"AP-75 {pct(ref['ap75'])}; real tumour only (lung2, {metrics['n_real_lesions']} boxes): "
          + ", ".join(f"{k} AP-50 {pct(v['real_ap50'])}" for k, v in methods.items()))
    print(f"Report written to {out.resolve()} (metrics.json, tables.txt, tables.md, comparison.png, checkpoints/) "
          f"in {metrics['timing_s']['total']:.0f} s")
    return metrics


def pct(v) -> str:
    """A fraction in [0, 1] as a percentage with one decimal, or 'n/a' (None / NaN)."""
    return "n/a" if v is None or not math.isfinite(float(v)) else f"{100 * float(v):.1f}"


def jsonable(obj):
    """Replace non-finite floats by None and numpy scalars by Python ones (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
