"""The main job: LIDnet against its baseline on the bundled real chest CT (``lidnet demo``).

1. Data (:mod:`src_training.protocol`): ``lung1`` trains, ``lung2`` evaluates (split by patient). Synthetic
   nodules are inserted on the native 512 x 512 grid, the low-dose scan is simulated there with a stated
   clinical-like geometry (:mod:`src_training.simulation`: 1000 views, 1 mm bins, Hann-windowed FBP) and the
   soft-tissue noise sigma is measured; then NDCT and LDCT are resampled to 256 px (cached).
2. LIDnet with the collaborative strategy (Chen et al., ACM MM 2021, Algorithm 1) starting from the shipped
   NDCT-pretrained Faster R-CNN (T1 replaced by the pretraining, as the paper starts from a pre-trained
   ResNet-50): ``rounds`` x (T2 denoiser steps with Eq. 8 as the paper writes it, detector frozen; T3
   detector steps on the denoised images, denoiser frozen), on lesion-centred crops. The baseline: the same
   denoiser, seed, crops and denoiser steps, reconstruction loss only. Every denoiser step records each
   loss term's share of the gradient norm.
3. Evaluation of LDCT, baseline and LIDnet against NDCT on ``lung2``: Table 2 AP-50 / AP-75 by the independent
   judge (an FCOS detector trained on NDCT that no LIDnet run sees) and, labelled, by LIDnet's own NDCT
   detector; Table 3 ROI radiomics |difference| and PSNR / SSIM / RMSE. Every number has a 95 % bootstrap
   interval (slices, or lesion boxes for radiomics), and LIDnet - baseline is a paired difference with a
   verdict ("no difference" when the interval contains 0). One training seed: ``lidnet reproduce`` repeats
   over seeds.
4. Report folder: ``metrics.json``, ``tables.txt`` / ``tables.md`` (also printed), ``comparison.png`` (NDCT |
   LDCT | baseline | LIDnet in the lung window with the lesion boxes and the top-K RPN proposals) and
   ``checkpoints/`` (``torch.load(weights_only=True)``-loadable).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .checkpoint import atomic_write_text
from .device import auto_device
from .errors import ConfigError
from .evaluation.metrics import METRICS
from .evaluation.scoring import NDCTFeatures, compare, comparison_dict, pct, score_volume, summarize
from .experiment import (DEMO_BUDGET, FAST_BUDGET, Budget, environment, load_data, noise_line, train_baseline,
                         train_lidnet)
from .protocol import load_detectors
from .inference import denoise_volume, detect_slices
from .models.denoisers import DENOISERS, display_name
from .report import (format_comparisons, format_grad_shares, format_markdown_tables, format_tables,
                     save_comparison_figure)
from .sample import sample_dir
from .serialize import jsonable

__all__ = ["run_demo"]

def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _detector_record(path: Path, detector) -> dict[str, Any]:
    meta = path.with_suffix(".json")
    rec: dict[str, Any] = {"file": str(path), "arch": getattr(detector, "arch", None),
                           "backbone": getattr(detector, "backbone_name", None)}
    if meta.is_file():
        d = json.loads(meta.read_text(encoding="utf-8"))
        rec.update({"sha256": d.get("sha256"), "measured_ndct": d.get("measured", {}).get("eval_all_lesions")})
    return rec


def run_demo(out_dir: str | Path = "lidnet-report", *, fast: bool = False, n0: float = 1000.0, seed: int = 0,
             device: str = "auto", denoiser: Optional[str] = None, cache_dir: Optional[str | Path] = None,
             budget: Optional[Budget] = None, loss_reduction: str = "paper") -> dict[str, Any]:
    """Run the main job and write the report folder (steps in the module docstring).

    Parameters
    ----------
    out_dir : path-like
        Report folder (created; files of a previous report are replaced atomically).
    fast : bool
        :data:`src_training.experiment.FAST_BUDGET` (a minute or two, 4 slices per case: the numbers mean
        nothing) instead of :data:`src_training.experiment.DEMO_BUDGET`.
    n0 : float
        Incident photons per ray of the simulated LDCT (paper: 1000 for lung CT).
    seed : int
        Training seed (initialisation, order, crops); the data seed is the protocol's, fixed.
    device : str
        ``auto`` (cuda > mps > cpu), ``cuda``, ``mps`` or ``cpu``.
    denoiser : str, optional
        A key of :data:`src_training.models.denoisers.DENOISERS`; default ``"redcnn"`` on CUDA, ``"cpce"``
        otherwise (RED-CNN costs ~25x CPCE's FLOPs, too much for the ten-minute CPU budget).
    cache_dir : path-like, optional
        Cache of simulated LDCT (default ``sample_data/.cache``).
    budget : Budget, optional
        Overrides ``fast``.
    loss_reduction : str
        ``"paper"`` (Eq. 8 as written, default) or ``"normalised"`` (:class:`src_training.config.TrainConfig`).

    Returns
    -------
    dict
        The content of ``metrics.json``.

    Raises
    ------
    LidnetError
        Missing sample data or shipped detectors, bad options, simulation or training errors.
    """
    t_start = time.perf_counter()
    budget = budget or (FAST_BUDGET if fast else DEMO_BUDGET)
    dev = auto_device(device)
    denoiser = (denoiser or ("redcnn" if dev.type == "cuda" else "cpce")).lower()
    if denoiser not in DENOISERS:
        raise ConfigError(f"Unknown denoiser '{denoiser}'. Choose one of: {', '.join(DENOISERS)}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoints"
    cache = Path(cache_dir) if cache_dir is not None else sample_dir() / ".cache"
    dname = display_name(denoiser)
    detectors = load_detectors(dev)
    config = budget.config(denoiser=denoiser, seed=int(seed), n0=float(n0), device=str(dev), cache_dir=str(cache),
                           detector_weights=str(detectors.own_path), loss_reduction=loss_reduction)
    _log(f"napari-lidnet demo: {dname} + pretrained Faster R-CNN (resnet18-FPN) on {dev}, N0={n0:g}, seed={seed}, "
         f"{config.image_size} px, {config.crop_size} px lesion-centred crops, T2={config.t2} T3={config.t3} "
         f"rounds={config.rounds} batch={config.batch_size}, Eq. 8 reduction '{config.loss_reduction}'")

    data = load_data(budget, n0=n0, cache_dir=cache, log=_log)
    lid = train_lidnet(config, data, detectors, device=dev, run_dir=ckpt_dir / "lidnet", label="LIDnet")
    base = train_baseline(config, data, device=dev, run_dir=ckpt_dir / "baseline", label="baseline")

    t0 = time.perf_counter()
    evalc, hr = data.eval, config.hu_range
    names = ("LDCT", f"Baseline ({dname})", f"LIDnet ({dname})")
    volumes = {
        names[0]: evalc.ldct_hu,
        names[1]: denoise_volume(base.trainer.denoiser, evalc.ldct_hu, hr, device=dev),
        names[2]: denoise_volume(lid.trainer.denoiser, evalc.ldct_hu, hr, device=dev),
        "NDCT": evalc.ndct_hu,
    }
    feats = NDCTFeatures(evalc)
    scores = {k: score_volume(v, evalc, detectors, hr, feats) for k, v in volumes.items()}
    methods = {k: summarize(scores[k], seed=seed, n_boot=budget.n_boot) for k in names}
    comparisons = {
        "LIDnet - Baseline": comparison_dict(compare(scores[names[1]], scores[names[2]], seed=seed, n_boot=budget.n_boot)),
        "Baseline - LDCT": comparison_dict(compare(scores[names[0]], scores[names[1]], seed=seed, n_boot=budget.n_boot)),
    }
    t_eval = time.perf_counter() - t0

    # Figure: the slice with the largest real tumour box.
    real = evalc.real_boxes
    z_fig = (max(real, key=lambda z: float(np.prod(real[z][:, 2:] - real[z][:, :2], axis=1).max())) if real
             else max(evalc.boxes, key=lambda z: len(evalc.boxes[z])))
    proposals, panels = {}, []
    for name, vol in {"NDCT": volumes["NDCT"], **{k: volumes[k] for k in names}}.items():
        res = next(detect_slices(detectors.own, vol, hr, k=config.k_proposals, slices=[z_fig]))
        proposals[name] = res["proposals"]
        panels.append((name, vol[z_fig]))
    noise = data.noise()
    save_comparison_figure(
        out / "comparison.png", panels, window="lung", boxes=evalc.boxes.get(z_fig), proposals=proposals,
        title=(f"{evalc.name} slice {z_fig}: simulated LDCT N0={n0:g} (soft-tissue noise "
               f"{evalc.native_noise_sigma_by_slice[z_fig]:.0f} HU native)\nboxes = lesions (real + synthetic), dashed = top-"
               f"{config.k_proposals} RPN proposals of the pretrained NDCT Faster R-CNN"))

    shares = {f"LIDnet ({dname}), round {r}": v for r, v in sorted(lid.grad_shares_by_round.items())}
    shares[f"LIDnet ({dname}), all T2 steps"] = lid.grad_shares
    metrics = {
        "methods": methods,
        "ndct_reference": summarize(scores["NDCT"], seed=seed, n_boot=budget.n_boot),
        "comparisons": comparisons,
        "grad_shares": {"lidnet_mean": lid.grad_shares,
                        "lidnet_by_round": {str(r): v for r, v in lid.grad_shares_by_round.items()},
                        "baseline_mean": base.grad_shares},
        "noise": noise,
        "hu_range": list(hr),
        "n_images": int(evalc.n_slices),
        "n_lesions": int(evalc.n_boxes),
        "n_real_lesions": int(sum(len(b) for b in evalc.real_boxes.values())),
        "config": config.to_dict(),
        "budget": asdict(budget),
        "detectors": {"judge": _detector_record(detectors.judge_path, detectors.judge),
                      "own": _detector_record(detectors.own_path, detectors.own)},
        "statistics": f"95 % percentile bootstrap, {budget.n_boot} resamples, over slices (AP, image metrics) or lesion boxes "
                      "(radiomics); LIDnet - Baseline paired (same resampled units); one training seed",
        "timing_s": {"data": round(data.seconds, 1), "lidnet_training": round(lid.seconds, 1),
                     "baseline_training": round(base.seconds, 1), "evaluation": round(t_eval, 1),
                     "total": round(time.perf_counter() - t_start, 1)},
        "environment": environment(dev),
    }
    noise_text = noise_line(noise)
    budget_line = (f"Budget: {config.denoiser} denoiser, T2 = {config.t2}, T3 = {config.t3}, rounds = {config.rounds} "
                   f"after the pretrained detector (T1 = 0), batch {config.batch_size} lesion-centred crops of "
                   f"{config.crop_size} px at {config.image_size} px, Adam {config.lr_denoiser:g} / "
                   f"{config.lr_detector:g}, lambda_1 = {config.lambda_roi:g}, lambda_2 = {config.lambda_det:g}, "
                   f"Eq. 8 reduction '{config.loss_reduction}', seed {seed}; baseline: the same "
                   f"{config.t2 * config.rounds} denoiser steps with the reconstruction loss only. Paper: 4000 / "
                   f"4000 / 2000 steps on whole 512 px slices.")
    ref = metrics["ndct_reference"]
    ref_line = (f"Reference: NDCT itself scores AP-50 {pct(ref['ap50'])} % (judge) / {pct(ref['own_ap50'])} % "
                f"(own detector); real tumour only ({metrics['n_real_lesions']} boxes): "
                + ", ".join(f"{k} {pct(v['real_ap50'])} %" for k, v in methods.items()) + " (judge AP-50).")
    md = "\n\n".join([noise_text, budget_line, format_markdown_tables(metrics).rstrip(),
                      format_comparisons(comparisons, METRICS),
                      format_grad_shares(shares), ref_line]) + "\n"
    txt = "\n\n".join([noise_text, budget_line, format_tables(metrics).rstrip(),
                       format_comparisons(comparisons, METRICS, markdown=False),
                       format_grad_shares(shares, markdown=False), ref_line]) + "\n"
    atomic_write_text(out / "tables.txt", txt)
    atomic_write_text(out / "tables.md", md)
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2) + "\n")
    print(txt)
    print(f"Report written to {out.resolve()} (metrics.json, tables.txt, tables.md, comparison.png, checkpoints/) "
          f"in {metrics['timing_s']['total']:.0f} s")
    return metrics
