"""Reproduction of the LIDnet paper's experiments on the bundled sample CT over several training seeds
(``lidnet reproduce``).

Chen et al., "Lesion-Inspired Denoising Network: Connecting Medical Image Denoising and Lesion Detection",
ACM MM 2021, arXiv:2104.08845. On the protocol's data (:mod:`src_training.protocol`) and budget
(:data:`src_training.experiment.STUDY_BUDGET` by default), for every selected denoiser and every seed:

* the baseline (reconstruction loss only) and LIDnet (Eq. 8, collaborative, from the shipped pretrained
  detector), same seed, crops and denoiser steps;
* **Table 2** AP-50 / AP-75 by the independent judge (and, labelled, LIDnet's own NDCT detector); **Table 3**
  ROI radiomics |difference| and PSNR / SSIM / RMSE: mean over seeds with a Student-t 95 % interval over
  seeds; LDCT and NDCT rows (no training) with slice/lesion bootstrap intervals;
* LIDnet - baseline: the per-seed paired difference, Student-t interval over seeds, verdict;
* **Table 4** (first seed): CNN form (Eq. 8) against GAN form (Eq. 5, WGAN-GP critic of Eq. 7), bootstrap
  intervals over slices, measured training time;
* **Fig. 3** (first seed): the judge's AP-50 on the current denoiser's output during training, collaborative
  (Algorithm 1) against simultaneous strategy.

Outputs in ``out_dir``: ``tables.md``, ``metrics.json``, ``fig3_ap_curve.png``, ``checkpoints/``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .checkpoint import atomic_write_text
from .checkpoint_files import write_checkpoint
from .device import auto_device
from .errors import ConfigError
from .evaluation.detection import detection_ap
from .evaluation.metrics import METRICS
from .evaluation.scoring import NDCTFeatures, pct, run_detections, score_volume, summarize, verdict_text
from .experiment import (FAST_BUDGET, STUDY_BUDGET, Budget, ExperimentData, environment, load_data, noise_line,
                         train_baseline, train_lidnet)
from .protocol import Detectors, load_detectors
from .inference import denoise_volume
from .models import denoisers as denoiser_registry
from .models.denoisers import display_name
from .report import (format_comparisons, format_form_table, format_grad_shares, format_markdown_tables,
                     save_ap_curve_figure)
from .sample import sample_dir
from .serialize import jsonable
from .statistics import seed_difference, seed_interval

__all__ = ["run_reproduction", "display_name", "seed_summary", "run_pair", "DEFAULT_SEEDS"]

#: Training seeds of a reproduction (at least three, so every trained number has an interval over seeds).
DEFAULT_SEEDS = (0, 1, 2)


def _out(msg: str) -> None:
    print(msg, flush=True)


def _select(names: Optional[Sequence[str]], what: str) -> list[str]:
    registry = list(denoiser_registry.DENOISERS)
    if names is None:
        return registry
    sel = [str(n).strip().lower() for n in names if str(n).strip()]
    bad = [n for n in sel if n not in registry]
    if bad:
        raise ConfigError(f"Unknown {what} {', '.join(repr(b) for b in bad)}. Choose among: {', '.join(registry)}.")
    if not sel:
        raise ConfigError(f"The {what} selection is empty. Choose among: {', '.join(registry)}.")
    return list(dict.fromkeys(sel))


def seed_summary(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of every :data:`METRICS` value with its Student-t interval (``key_ci``), and the
    per-seed values (``key_seeds``)."""
    out: dict[str, Any] = {}
    for m in METRICS:
        vals = [s.get(m.key) for s in per_seed]
        vals = [float(v) if v is not None else float("nan") for v in vals]
        est = seed_interval(vals)
        out[m.key], out[m.key + "_ci"], out[m.key + "_seeds"] = est.value, est.to_dict(), vals
    out["n_seeds"] = len(per_seed)
    return out


def seed_comparison(base: Sequence[dict[str, Any]], lid: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``LIDnet - baseline`` per seed (paired: same seed), Student-t interval over seeds, metric-aware reading."""
    out = {}
    for m in METRICS:
        a = [float(s[m.key]) if s.get(m.key) is not None else float("nan") for s in base]
        b = [float(s[m.key]) if s.get(m.key) is not None else float("nan") for s in lid]
        c = seed_difference(a, b)
        out[m.key] = {**c.to_dict(), "reading": verdict_text(m.key, c)}
    return out


def run_pair(config, data: ExperimentData, detectors: Detectors, dev, feats, *, label: str,
             ckpt_dir: Optional[Path] = None, log: Callable[[str], None] = _out, with_baseline: bool = True,
             on_event=None) -> dict[str, Any]:
    """Train LIDnet (and, with ``with_baseline``, the baseline) with ``config``, score both on the evaluation
    case; returns ``{"lidnet": (TrainRun, MethodScores), "baseline": ...}``."""
    out: dict[str, Any] = {}
    runs = [("lidnet", train_lidnet)] + ([("baseline", train_baseline)] if with_baseline else [])
    for kind, fn in runs:
        kw = dict(device=dev, label=f"{label} {kind}", log=log)
        run = (fn(config, data, detectors, on_event=on_event, **kw) if kind == "lidnet"
               else fn(config, data, **kw))
        if ckpt_dir is not None:
            write_checkpoint(ckpt_dir / kind / "denoiser.pt", run.trainer.denoiser_checkpoint())
        vol = denoise_volume(run.trainer.denoiser, data.eval.ldct_hu, config.hu_range, device=dev)
        out[kind] = (run, score_volume(vol, data.eval, detectors, config.hu_range, feats))
    return out


class _CurveRecorder:
    """Fig. 3: the judge's AP-50 on the current denoiser's output every ``every`` steps (an ``on_event`` of
    :func:`src_training.experiment.train_lidnet`)."""

    def __init__(self, every: int, data: ExperimentData, detectors: Detectors, hu_range, dev, label, log):
        self.every, self.data, self.det = max(1, int(every)), data, detectors
        self.hu_range, self.dev, self.label, self.log = hu_range, dev, label, log
        self.points: list[dict[str, float]] = []

    def _measure(self, step: int, trainer) -> None:
        with torch.no_grad():
            vol = denoise_volume(trainer.denoiser, self.data.eval.ldct_hu, self.hu_range, device=self.dev)
        case = self.data.eval
        tg = [{"boxes": np.asarray(case.boxes.get(z, np.zeros((0, 4))), np.float32).reshape(-1, 4)}
              for z in range(case.n_slices)]
        ap = detection_ap(run_detections(self.det.judge, vol, self.hu_range), tg)
        self.points.append({"step": int(step), "ap50": ap["ap50"], "ap75": ap["ap75"]})
        self.log(f"  [{self.label}] step {step}: judge AP-50 {pct(ap['ap50'])} %")

    def __call__(self, ev, trainer) -> None:
        if ev.event == "phase_start" and ev.global_step == 0 and not self.points:
            self._measure(0, trainer)
        elif ev.event == "step" and (ev.global_step % self.every == 0 or ev.global_step == ev.total_steps):
            self._measure(ev.global_step, trainer)


def run_reproduction(out_dir: str | Path = "lidnet-reproduction", *, denoisers: Optional[Sequence[str]] = None,
                     gan_denoisers: Optional[Sequence[str]] = None, fig3_denoiser: Optional[str] = None,
                     budget: Optional[Budget] = None, fast: bool = False, seeds: Sequence[int] = DEFAULT_SEEDS,
                     n0: float = 1000.0, device: str = "auto", cache_dir: Optional[str | Path] = None,
                     curve_every: int = 10, loss_reduction: str = "paper",
                     log: Callable[[str], None] = _out) -> dict[str, Any]:
    """Train every selected baseline and its LIDnet version over ``seeds``; write Tables 2-4 and Fig. 3.

    Parameters
    ----------
    out_dir : path-like
        Report folder (created).
    denoisers : sequence of str, optional
        Keys of :data:`src_training.models.denoisers.DENOISERS` (default every key, read at call time).
    gan_denoisers : sequence of str, optional
        Denoisers of Table 4 (default the first of ``denoisers``; ``[]`` skips Table 4).
    fig3_denoiser : str, optional
        Denoiser of Fig. 3 (default the first of ``denoisers``).
    budget : Budget, optional
        Default :data:`~src_training.experiment.STUDY_BUDGET` (``fast``: ``FAST_BUDGET``).
    fast : bool
    seeds : sequence of int
        Training seeds (default 0, 1, 2); the data are the protocol's, fixed.
    n0 : float
        Photons per ray of the simulated LDCT.
    device : str
    cache_dir : path-like, optional
    curve_every : int
        Fig. 3 point every this many steps.
    loss_reduction : str
        Eq. 8 reduction of every LIDnet and baseline run.
    log : callable(str)

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    ConfigError
        Unknown denoiser names, empty selection or no seed.
    LidnetError
        Missing sample data or detectors, simulation or training failures.
    """
    t_start = time.perf_counter()
    budget = budget or (FAST_BUDGET if fast else STUDY_BUDGET)
    names = _select(denoisers, "denoiser(s)")
    gan_names = names[:1] if gan_denoisers is None else (_select(gan_denoisers, "GAN-form denoiser(s)")
                                                         if list(gan_denoisers) else [])
    fig3 = _select([fig3_denoiser], "Fig. 3 denoiser")[0] if fig3_denoiser else names[0]
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("Give at least one seed.")
    dev = auto_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoints"
    cache = Path(cache_dir) if cache_dir is not None else sample_dir() / ".cache"
    detectors = load_detectors(dev)
    log(f"lidnet reproduce: {', '.join(names)}; seeds {seeds}; {dev}; N0={n0:g}; budget '{budget.name}' (T2={budget.t2} "
        f"T3={budget.t3} rounds={budget.rounds}, batch {budget.batch_size}, {budget.crop_size} px crops)")
    data = load_data(budget, n0=n0, cache_dir=cache, log=log)
    feats = NDCTFeatures(data.eval)

    def cfg(d: str, seed: int, **kw):
        return budget.config(denoiser=d, seed=seed, n0=float(n0), device=str(dev), cache_dir=str(cache),
                             detector_weights=str(detectors.own_path), loss_reduction=loss_reduction, **kw)

    hr = cfg(names[0], seeds[0]).hu_range
    ref = {"LDCT": summarize(score_volume(data.eval.ldct_hu, data.eval, detectors, hr, feats), n_boot=budget.n_boot),
           "NDCT": summarize(score_volume(data.eval.ndct_hu, data.eval, detectors, hr, feats), n_boot=budget.n_boot)}
    per_seed: dict[str, list[dict[str, Any]]] = {}
    shares: dict[str, list[dict[str, float]]] = {}
    timing: dict[str, float] = {"data": round(data.seconds, 1)}
    curves: dict[str, list[dict[str, float]]] = {}
    table4_rows: dict[str, dict[str, Any]] = {}
    for d in names:
        dn = display_name(d)
        for seed in seeds:
            log(f"== {dn}, seed {seed}")
            rec = None
            if d == fig3 and seed == seeds[0]:
                rec = _CurveRecorder(curve_every, data, detectors, hr, dev, "Fig. 3 collaborative", log)
            t0 = time.perf_counter()
            res = run_pair(cfg(d, seed), data, detectors, dev, feats, label=f"{dn} s{seed}",
                           ckpt_dir=ckpt_dir / d / f"s{seed}", log=log, on_event=rec)
            timing[f"{d}_s{seed}"] = round(time.perf_counter() - t0, 1)
            if rec is not None:
                curves["collaborative"] = rec.points
            for kind, label in (("baseline", f"Baseline ({dn})"), ("lidnet", f"LIDnet ({dn})")):
                run, scores = res[kind]
                s = summarize(scores, seed=seed, n_boot=budget.n_boot)
                s["training_s"] = round(run.seconds, 1)  # includes Fig. 3 measurements on that run
                per_seed.setdefault(label, []).append(s)
                shares.setdefault(label, []).append(run.grad_shares)
            if d in gan_names and seed == seeds[0]:
                table4_rows[f"LIDnet ({dn}), CNN form"] = {**per_seed[f"LIDnet ({dn})"][-1], "form": "CNN (Eq. 8)"}
    methods: dict[str, dict[str, Any]] = {"LDCT": ref["LDCT"]}
    comparisons: dict[str, dict[str, Any]] = {}
    for d in names:
        dn = display_name(d)
        b, lid = per_seed[f"Baseline ({dn})"], per_seed[f"LIDnet ({dn})"]
        methods[f"Baseline ({dn})"] = seed_summary(b)
        methods[f"LIDnet ({dn})"] = seed_summary(lid)
        comparisons[f"LIDnet - Baseline ({dn})"] = seed_comparison(b, lid)
    methods["NDCT"] = ref["NDCT"]

    # Table 4: GAN form, first seed (the CNN row is the Table 2 run of that seed).
    for d in gan_names:
        dn = display_name(d)
        log(f"== {dn}, GAN form (Eq. 5, WGAN-GP critic), seed {seeds[0]}")
        res = run_pair(cfg(d, seeds[0], form="gan"), data, detectors, dev, feats, label=f"{dn} GAN",
                       ckpt_dir=ckpt_dir / d / "gan", log=log, with_baseline=False)
        run, scores = res["lidnet"]
        table4_rows[f"LIDnet ({dn}), GAN form"] = {**summarize(scores, seed=seeds[0], n_boot=budget.n_boot), "form": "GAN (Eq. 5)",
                                                   "training_s": round(run.seconds, 1)}

    # Fig. 3: simultaneous strategy on the Fig. 3 denoiser, first seed.
    log(f"== Fig. 3: {display_name(fig3)}, simultaneous strategy, seed {seeds[0]}")
    rec = _CurveRecorder(curve_every, data, detectors, hr, dev, "Fig. 3 simultaneous", log)
    run_pair(cfg(fig3, seeds[0], strategy="simultaneous"), data, detectors, dev, feats,
             label=f"{display_name(fig3)} simultaneous", log=log, with_baseline=False, on_event=rec)
    curves["simultaneous"] = rec.points
    save_ap_curve_figure(out / "fig3_ap_curve.png",
                         {k: [(p["step"], p["ap50"]) for p in v] for k, v in curves.items()},
                         title=f"Fig. 3: judge AP-50 on {data.eval.name} during training, LIDnet "
                               f"({display_name(fig3)}), seed {seeds[0]}",
                         xlabel="training step (after the pretrained detector)", ylabel="AP-50 (%)")
    timing["total"] = round(time.perf_counter() - t_start, 1)
    mean_shares = {k: {t: float(np.mean([s.get(t, np.nan) for s in v])) for t in sorted({t for s in v for t in s})}
                   for k, v in shares.items() if k.startswith("LIDnet")}
    metrics = {
        "methods": methods,
        "per_seed": per_seed,
        "comparisons": comparisons,
        "grad_shares": mean_shares,
        "table4": {"rows": table4_rows, "note": f"one seed ({seeds[0]}): intervals are over slices, not seeds"},
        "fig3": {"denoiser": fig3, "every": curve_every, "curves": curves,
                 "measure": "AP-50 of the judge on the current denoiser's output, evaluation case, one seed"},
        "denoisers": names, "gan_denoisers": gan_names, "seeds": seeds, "n0": float(n0),
        "noise": data.noise(), "budget": asdict(budget), "config": cfg(names[0], seeds[0]).to_dict(),
        "hu_range": list(hr), "n_images": int(data.eval.n_slices), "n_lesions": int(data.eval.n_boxes),
        "n_real_lesions": int(sum(len(b) for b in data.eval.real_boxes.values())),
        "statistics": "trained rows: mean over seeds, Student-t 95 % interval over seeds; LDCT/NDCT rows: "
                      "bootstrap over slices/lesions; LIDnet - Baseline: paired per seed, t interval",
        "timing_s": timing, "environment": environment(dev),
    }
    nz = data.noise()
    header = "\n".join([
        "# LIDnet reproduction (Chen et al., ACM MM 2021, arXiv:2104.08845)", "",
        f"Budget '{budget.name}': T2 = {budget.t2}, T3 = {budget.t3}, rounds = {budget.rounds} after the shipped "
        f"NDCT detector (T1 = 0), batch {budget.batch_size} lesion-centred crops of {budget.crop_size} px at 256 px; "
        f"baseline = the same denoiser steps, reconstruction loss only; Eq. 8 reduction '{loss_reduction}'; seeds "
        f"{', '.join(map(str, seeds))}; {dev}; total {timing['total']:.0f} s. Paper: 4000 / 4000 / 2000 steps on whole "
        f"512 px slices.", "", noise_line(nz), ""])
    text = "\n\n".join([header, format_markdown_tables(metrics).rstrip(), format_comparisons(comparisons, METRICS, over_seeds=True),
                        format_grad_shares(mean_shares), format_form_table(metrics["table4"], markdown=True),
                        "**Fig. 3.** `fig3_ap_curve.png`: the judge's AP-50 (%) on the current denoiser's output "
                        f"every {curve_every} steps, collaborative (Algorithm 1) vs simultaneous strategy, one seed."]) + "\n"
    atomic_write_text(out / "tables.md", text)
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2) + "\n")
    log(text)
    log(f"Reproduction written to {out.resolve()} in {timing['total']:.0f} s")
    return metrics
