"""Reproduction of the LIDnet paper's experiments on the bundled sample CT (``lidnet reproduce``).

Chen et al., "Lesion-Inspired Denoising Network: Connecting Medical Image Denoising and Lesion Detection",
ACM MM 2021, arXiv:2104.08845. What is reproduced, on the demo's data (:mod:`src_training.demo`: real chest
CT ``lung1`` trains, ``lung2`` evaluates, synthetic nodules inserted, LDCT simulated at N0):

* **Table 2** - AP-50 / AP-75 of one detector trained on NDCT (trained once, shared by every method)
  applied to LDCT, to each baseline denoiser's output, to each LIDnet version's output and to NDCT.
* **Table 3** - mean absolute difference to NDCT of three GLCM radiomics features inside the lesion boxes
  (correlation, homogeneity, energy) and whole-slice PSNR / SSIM / RMSE, for the same methods.
* **Table 4** - LIDnet's CNN form (Eq. 8) against its GAN form (Eq. 5, WGAN-GP critic of Eq. 7) for a
  selectable subset of denoisers, with the measured wall-clock training time.
* **Fig. 3** - AP-50 on the evaluation case during training, collaborative strategy (Algorithm 1) against
  the simultaneous strategy, evaluated every ``curve_every`` steps with the networks as they stand
  (the current denoiser's output, the current detector).

Protocol: every denoiser in the selection (default: every key of
:data:`src_training.models.denoisers.DENOISERS`, read at run time) is trained twice per seed with the same
seed and the same denoiser budget: the baseline (reconstruction loss only, ``t2 * rounds`` steps) and LIDnet
(CNN form, collaborative: ``rounds`` x (T2 denoiser steps with Eq. 8, T3 detector steps)). Phase T1 of
Algorithm 1 (the detector on NDCT) is run once and shared: every LIDnet run starts from a copy of that
NDCT detector (so its own T1 is 0 steps), and the same NDCT detector measures AP on every method's images.

Outputs in ``out_dir``: ``tables.md`` (the budget in a header, then Tables 2, 3 and 4 in the paper's
layouts), ``metrics.json``, ``fig3_ap_curve.png`` and ``checkpoints/`` (``detector_ndct.pt`` and one
``denoiser.pt`` per trained denoiser; ``torch.load(weights_only=True)``-loadable).
"""

from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .checkpoint import atomic_write_text, save_checkpoint
from .data import CaseArrays, SliceDataset
from .demo import (
    DETECTOR_SPEED_KWARGS,
    DISPLAY_NAMES,
    DemoBudget,
    budget_config,
    detection_scores,
    detector_from_state,
    evaluate_images,
    jsonable,
    load_demo_data,
    pct,
    run_trainer,
)
from .device import auto_device
from .errors import ConfigError
from .inference import denoise_volume
from .models import denoisers as denoiser_registry
from .report import format_form_table, format_markdown_tables, save_ap_curve_figure
from .sample import sample_dir
from .training import TRAINERS

__all__ = ["ReproBudget", "FAST_REPRO_BUDGET", "CPU_REPRO_BUDGET", "SMALL_REPRO_BUDGET", "REPRO_BUDGETS",
           "run_reproduction", "display_name"]


@dataclass(frozen=True)
class ReproBudget(DemoBudget):
    """Sizes and step counts of a reproduction run (a :class:`DemoBudget` plus the Fig. 3 settings).

    Attributes
    ----------
    curve_every : int
        Fig. 3: AP-50 on the evaluation case every this many training steps (and before the first step).
    step_scale : tuple of (denoiser name, factor)
        Optional per-denoiser multiplier of T2 and T3 (baseline steps follow T2 * rounds), to give costly
        networks fewer steps within a wall-clock budget; stated in ``tables.md``. Empty = same steps for all.
    eval_slices : int or None
        Evaluate on only this many slices of the evaluation case (those with the most real tumour boxes,
        then the most lesion boxes); None = every slice. The detector's box head dominates evaluation time on
        the CPU (about 0.5 s per slice), so the fast budget uses a few slices.
    curve_slices : int or None
        Fig. 3 points are measured on this many slices of the evaluation set (chosen as ``eval_slices``);
        None = the whole evaluation set. Each point needs a full denoiser inference, which costs up to
        about 20-40 s per 20 slices of 128 px for the largest networks on two CPU cores.
    """

    curve_every: int = 10
    step_scale: tuple = ()
    eval_slices: Optional[int] = None
    curve_slices: Optional[int] = None

    def steps_for(self, denoiser: str) -> tuple[int, int]:
        """(T2, T3) of ``denoiser`` after :attr:`step_scale` (at least 1 step each when the base is > 0)."""
        f = dict(self.step_scale).get(denoiser, 1.0)
        t2 = max(1, int(round(self.t2 * f))) if self.t2 > 0 else 0
        t3 = max(1, int(round(self.t3 * f))) if self.t3 > 0 else 0
        return t2, t3


#: Tests and a first look: seconds per network (64 px, 1-3 steps per phase). The numbers mean nothing.
FAST_REPRO_BUDGET = ReproBudget(image_size=64, crop_size=None, t1=3, t2=2, t3=1, rounds=1, batch_size=2,
                                train_nodules=2, eval_nodules=1, lr_denoiser=5e-4, lr_detector=1e-4, curve_every=1,
                                eval_slices=3)

#: The default CPU budget: the demo's image size (256 px slices, 128 px training crops, T1 = 100), at which the
#: detector trained on NDCT learns the synthetic nodules (measured: AP-50 46.2 % on NDCT, docs/reproduction.md,
#: Run B), then T2 = 30, T3 = 10, one round, batch 4, the demo's learning rates. Measured with CPCE, WGAN-VGG and
#: MAP-NN on 2 CPU cores: see docs/reproduction.md. The costliest networks (RED-CNN, Res-HLF, DCSCN, DCSWGAN:
#: ~25x CPCE's FLOPs per slice) get a quarter of the T2/T3 steps and MAP-NN half (``step_scale``); with all
#: eight denoisers expect well over an hour on a CPU (not timed end to end): select some with ``denoisers``.
CPU_REPRO_BUDGET = ReproBudget(image_size=256, crop_size=128, t1=100, t2=30, t3=10, rounds=1, batch_size=4,
                               train_nodules=3, eval_nodules=2, lr_denoiser=5e-4, lr_detector=1e-4, curve_every=10,
                               curve_slices=8,
                               step_scale=(("redcnn", 0.25), ("reshlf", 0.25), ("dcscn", 0.25), ("dcswgan", 0.25),
                                           ("mapnn", 0.5)))

#: A smaller CPU budget: all eight denoisers in about 30 minutes on 2 shared CPU cores (measured, 1816 s; Run A of
#: docs/reproduction.md): 128 px slices, 64 px crops, T1 = 50, T2 = 24, T3 = 8, one round; the four costliest
#: networks get half the T2/T3 steps and MAP-NN three quarters. At 128 px the synthetic nodules (2-6 px) are
#: below the detector's smallest anchor (8 px): the NDCT detector does not learn (AP-50 0 on NDCT), so Table 2
#: is uninformative; Tables 3 and 4 and the protocol are exercised.
SMALL_REPRO_BUDGET = ReproBudget(image_size=128, crop_size=64, t1=50, t2=24, t3=8, rounds=1, batch_size=4,
                                 train_nodules=3, eval_nodules=2, lr_denoiser=5e-4, lr_detector=1e-4, curve_every=8,
                                 curve_slices=8,
                                 step_scale=(("redcnn", 0.5), ("reshlf", 0.5), ("dcscn", 0.5), ("dcswgan", 0.5),
                                             ("mapnn", 0.75)))

#: Budgets by name (CLI ``lidnet reproduce --budget``).
REPRO_BUDGETS = {"cpu": CPU_REPRO_BUDGET, "small": SMALL_REPRO_BUDGET, "fast": FAST_REPRO_BUDGET}


def display_name(key: str) -> str:
    """Table name of a denoiser key: the demo's names, else the class's ``display_name``, else the key."""
    if key in DISPLAY_NAMES:
        return DISPLAY_NAMES[key]
    cls = denoiser_registry.DENOISERS.get(key)
    return str(getattr(cls, "display_name", None) or key)


def _subset(case: CaseArrays, real: dict[int, np.ndarray], n: Optional[int]):
    """The ``n`` slices of ``case`` with the most real tumour boxes, then lesion boxes (slice order kept),
    boxes re-indexed; ``(case, real)`` unchanged when ``n`` is None or covers every slice."""
    if n is None or n >= case.n_slices:
        return case, real
    rank = sorted(range(case.n_slices), key=lambda z: (-len(real.get(z, ())), -len(case.boxes.get(z, ())), z))
    keep = sorted(rank[: max(1, int(n))])
    new = {z: i for i, z in enumerate(keep)}
    sub = CaseArrays(name=case.name, ndct_hu=case.ndct_hu[keep], ldct_hu=case.ldct_hu[keep],
                     boxes={new[z]: b for z, b in case.boxes.items() if z in new}, spacing=case.spacing)
    return sub, {new[z]: b for z, b in real.items() if z in new}


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


class _CurveRecorder:
    """Fig. 3: AP-50 of the trainer's current networks on the evaluation case every ``every`` steps."""

    def __init__(self, trainer, every: int, evalc, eval_real, hu_range, k: int, device, label: str,
                 log: Callable[[str], None]):
        self.trainer, self.every, self.evalc, self.eval_real = trainer, max(1, int(every)), evalc, eval_real
        self.hu_range, self.k, self.device, self.label, self.log = hu_range, k, device, label, log
        self.points: list[dict[str, float]] = []
        self.eval_s = 0.0

    def _measure(self, step: int) -> None:
        t0 = time.perf_counter()
        with torch.no_grad():
            vol = denoise_volume(self.trainer.denoiser, self.evalc.ldct_hu, self.hu_range, device=self.device)
            ap = detection_scores(vol, self.evalc, self.eval_real, self.trainer.detector, self.hu_range, self.k)
        self.eval_s += time.perf_counter() - t0
        self.points.append({"step": int(step), "ap50": ap["ap50"], "ap75": ap["ap75"]})
        self.log(f"  [{self.label}] step {step}: AP-50 {pct(ap['ap50'])} (current denoiser + current detector)")

    def __call__(self, ev) -> None:
        if ev.event == "phase_start" and ev.global_step == 0 and not self.points:
            self._measure(0)
        elif ev.event == "step" and (ev.global_step % self.every == 0 or ev.global_step == ev.total_steps):
            self._measure(ev.global_step)


def _environment(dev: torch.device) -> dict[str, Any]:
    env = {"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()}
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def _budget_header(budget: ReproBudget, denoisers, seeds, n0, env, backbone, timing, eval_info: str) -> str:
    hw = f"GPU ({env['gpu']})" if "gpu" in env else f"CPU ({env['threads']} threads)"
    crop = f", training on random {budget.crop_size} px crops" if budget.crop_size else ", whole slices"
    lines = [
        "# LIDnet reproduction (Chen et al., ACM MM 2021, arXiv:2104.08845)",
        "",
        f"**Budget**: images {budget.image_size} x {budget.image_size} px{crop}; batch {budget.batch_size}; "
        f"T1 = {budget.t1} detector steps on NDCT (run once, shared by every LIDnet run and used for all AP "
        f"values); T2 = {budget.t2}, T3 = {budget.t3}, rounds = {budget.rounds}; baseline = T2 x rounds "
        f"denoiser steps with the reconstruction loss only; Adam, lr {budget.lr_denoiser:g} (denoiser) / "
        f"{budget.lr_detector:g} (detector); N0 = {n0:g}; seeds {', '.join(str(s) for s in seeds)} "
        f"(tables: mean over seeds); device {env['device']}, {hw}; detector Faster R-CNN {backbone}-FPN; "
        f"denoisers {', '.join(display_name(d) for d in denoisers)}; {eval_info}.",
    ]
    if budget.step_scale:
        scaled = "; ".join(f"{display_name(d)}: T2 = {budget.steps_for(d)[0]}, T3 = {budget.steps_for(d)[1]}"
                           for d, _ in budget.step_scale if d in denoisers)
        if scaled:
            lines.append(f"Per-denoiser step counts (scaled to comparable wall time; baseline and LIDnet alike): "
                         f"{scaled}.")
    lines += ["", "Paper: T1 = T2 = 4000, T3 = 2000 on whole 512 px slices, batch 8, GPUs. These numbers come "
              f"from a far smaller budget (measured total {timing:.0f} s) and one held-out patient: they show "
              "the protocol working, not the paper's result.", ""]
    return "\n".join(lines)


def _mean_metrics(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    keys = sorted({k for r in runs for k, v in r.items() if isinstance(v, (int, float, np.floating))})
    out = {}
    for k in keys:
        vals = [float(r[k]) for r in runs if r.get(k) is not None and np.isfinite(float(r[k]))]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    return out


def run_reproduction(out_dir: str | Path = "lidnet-reproduction", *, denoisers: Optional[Sequence[str]] = None,
                     gan_denoisers: Optional[Sequence[str]] = None, fig3_denoiser: Optional[str] = None,
                     budget: Optional[ReproBudget] = None, fast: bool = False, seeds: Sequence[int] = (0,),
                     n0: float = 1000.0, device: str = "auto", backbone: Optional[str] = None,
                     cache_dir: Optional[str | Path] = None, train_case: str = "lung1",
                     eval_case: str = "lung2", log: Callable[[str], None] = _out) -> dict[str, Any]:
    """Train every selected baseline denoiser and its LIDnet version, evaluate, write Tables 2-4 and Fig. 3.

    Parameters
    ----------
    out_dir : path-like
        Report folder (created; files of a previous report are replaced atomically).
    denoisers : sequence of str, optional
        Keys of :data:`src_training.models.denoisers.DENOISERS`; default every key (read at call time).
    gan_denoisers : sequence of str, optional
        Denoisers of Table 4 (CNN form vs GAN form); default the first of ``denoisers``; ``[]`` skips Table 4.
    fig3_denoiser : str, optional
        Denoiser of Fig. 3 (default the first of ``denoisers``).
    budget : ReproBudget, optional
        Overrides ``fast``. Default :data:`CPU_REPRO_BUDGET`, or :data:`FAST_REPRO_BUDGET` with ``fast``.
    fast : bool
        Tiny budget (tests).
    seeds : sequence of int
        Training seeds; baseline and LIDnet of a denoiser get the same seed. Data (synthetic nodules, LDCT
        noise) and the shared NDCT detector use the first seed. Tables show the mean over seeds,
        ``metrics.json`` every seed.
    n0 : float
        Incident flux N0 of the simulated LDCT (photons per detector bin; paper: 1000 for lung CT).
    device : str
        ``auto`` (cuda > mps > cpu), ``cuda``, ``mps`` or ``cpu``.
    backbone : str, optional
        Detector backbone (default ``resnet50`` on CUDA, ``resnet18`` otherwise).
    cache_dir : path-like, optional
        Cache of simulated LDCT (default ``sample_data/.cache``).
    train_case, eval_case : str
        Sample case names (split by patient).
    log : callable(str)
        Progress lines (default: stdout).

    Returns
    -------
    dict
        The content of ``metrics.json``: ``methods`` (Tables 2/3 rows, mean over seeds), ``per_seed``,
        ``table4`` {``rows``, ``available``, ``note``}, ``fig3`` {``curves``, ``every``, ``denoiser``},
        ``budget``, ``seeds``, ``timing_s``, ``environment``, ...

    Raises
    ------
    ConfigError
        Unknown denoiser names, empty selection, no seed, or a form/strategy the trainers reject.
    LidnetError
        Missing sample data, simulation errors, a diverging training run.
    """
    t_start = time.perf_counter()
    budget = budget or (FAST_REPRO_BUDGET if fast else CPU_REPRO_BUDGET)
    names = _select(denoisers, "denoiser(s)")
    gan_names = _select(gan_denoisers, "GAN-form denoiser(s)") if gan_denoisers else []
    if gan_denoisers is None:
        gan_names = names[:1]
    fig3 = _select([fig3_denoiser], "Fig. 3 denoiser")[0] if fig3_denoiser else names[0]
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("Give at least one seed.")
    dev = auto_device(device)
    backbone = backbone or ("resnet50" if dev.type == "cuda" else "resnet18")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_dir = out / "checkpoints"
    cache = Path(cache_dir) if cache_dir is not None else sample_dir() / ".cache"
    seed0 = seeds[0]
    env = _environment(dev)
    log(f"lidnet reproduce: {len(names)} denoiser(s) ({', '.join(names)}), seeds {seeds}, {dev}, "
        f"{budget.image_size} px, T1={budget.t1} T2={budget.t2} T3={budget.t3} rounds={budget.rounds} "
        f"batch={budget.batch_size}, N0={n0:g}, detector {backbone}")

    def cfg(denoiser: str, seed: int, **overrides):
        t2, t3 = budget.steps_for(denoiser)
        overrides.setdefault("t2", t2)
        overrides.setdefault("t3", t3)
        return budget_config(budget, denoiser=denoiser, backbone=backbone, n0=n0, seed=seed, device=dev,
                             cache=cache, train_case=train_case, **overrides)

    # Data (demo steps 1-2).
    train, evalc, eval_real, t_data = load_demo_data(budget, n0=n0, seed=seed0, cache=cache, train_case=train_case,
                                                     eval_case=eval_case, log=log)
    evalc, eval_real = _subset(evalc, eval_real, budget.eval_slices)
    if budget.eval_slices is not None:
        log(f"  evaluation on {evalc.n_slices} slices of {eval_case} ({evalc.n_boxes} lesion boxes, "
            f"{sum(len(b) for b in eval_real.values())} real)")
    curve_case = _subset(evalc, eval_real, budget.curve_slices)
    base_cfg = cfg(names[0], seed0)
    hu_range, k = base_cfg.hu_range, base_cfg.k_proposals

    def dataset(seed: int) -> SliceDataset:
        return SliceDataset([train], hu_range, crop_size=budget.crop_size, seed=seed)

    # The shared detector trained on NDCT (Algorithm 1, T1), once.
    from .models.detector import build_detector

    torch.manual_seed(seed0)
    det_trainer = TRAINERS["detector"](base_cfg, dataset(seed0), detector=build_detector(backbone, **DETECTOR_SPEED_KWARGS),
                                       device=dev)
    t_det, _ = run_trainer(det_trainer, "NDCT detector", log=log)
    det_state = {k2: v.detach().cpu().clone() for k2, v in det_trainer.detector.state_dict().items()}
    save_checkpoint(ckpt_dir / "detector_ndct.pt", det_trainer.detector_checkpoint())
    det_eval = detector_from_state(backbone, det_state, dev)
    timing: dict[str, float] = {"data": round(t_data, 1), "ndct_detector": round(t_det, 1)}

    def evaluate(label: str, vol: np.ndarray) -> dict[str, Any]:
        t0 = time.perf_counter()
        m = evaluate_images(label, vol, evalc, eval_real, det_eval, hu_range, k)
        log(f"  evaluated {label}: AP-50 {pct(m['ap50'])}, PSNR {m['psnr']:.2f} dB "
            f"[{time.perf_counter() - t0:.0f} s]")
        return m

    ref = {"LDCT": evaluate("LDCT", evalc.ldct_hu), "NDCT": evaluate("NDCT", evalc.ndct_hu)}

    def train_lidnet(denoiser: str, seed: int, tag: str, curve_label: Optional[str] = None, **overrides):
        """One LIDnet run from a copy of the NDCT detector (T1 = 0 here: it is shared)."""
        torch.manual_seed(seed)
        trainer = TRAINERS["lidnet"](cfg(denoiser, seed, t1=0, **overrides), dataset(seed),
                                     detector=detector_from_state(backbone, det_state, dev), device=dev)
        rec = None
        if curve_label is not None:
            rec = _CurveRecorder(trainer, budget.curve_every, *curve_case, hu_range, k, dev, curve_label, log)
        wall, _ = run_trainer(trainer, f"{display_name(denoiser)} {tag}", on_event=rec, log=log)
        save_checkpoint(ckpt_dir / denoiser / f"{tag}_s{seed}" / "denoiser.pt", trainer.denoiser_checkpoint())
        return trainer, wall - (rec.eval_s if rec else 0.0), rec

    # Tables 2 and 3: baseline and LIDnet (CNN form, collaborative) per denoiser and seed.
    per_seed: dict[str, dict[str, dict[str, Any]]] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    for d in names:
        dn = display_name(d)
        for seed in seeds:
            log(f"== {dn}, seed {seed}")
            torch.manual_seed(seed)
            base = TRAINERS["baseline"](cfg(d, seed), dataset(seed), device=dev)
            t_base, _ = run_trainer(base, f"{dn} baseline", log=log)
            save_checkpoint(ckpt_dir / d / f"baseline_s{seed}" / "denoiser.pt", base.denoiser_checkpoint())
            want_curve = d == fig3 and seed == seed0
            lid, t_lid, rec = train_lidnet(d, seed, "lidnet", "Fig. 3 collaborative" if want_curve else None,
                                           form="cnn", strategy="collaborative")
            if rec is not None:
                curves["collaborative"] = rec.points
            for label, trainer, secs in ((f"Baseline ({dn})", base, t_base), (f"LIDnet ({dn})", lid, t_lid)):
                vol = denoise_volume(trainer.denoiser, evalc.ldct_hu, hu_range, device=dev)
                m = evaluate(label, vol)
                m["training_s"] = round(secs, 1)
                per_seed.setdefault(label, {})[str(seed)] = m

    methods: dict[str, dict[str, Any]] = {"LDCT": ref["LDCT"]}
    for label, runs in per_seed.items():
        methods[label] = _mean_metrics(list(runs.values()))
    methods["NDCT"] = ref["NDCT"]

    # Table 4: CNN form (Eq. 8) vs GAN form (Eq. 5), measured training time.
    table4_rows: dict[str, dict[str, Any]] = {}
    table4_note = ""
    for d in gan_names:
        dn = display_name(d)
        cnn_label = f"LIDnet ({dn})"
        if cnn_label in per_seed:
            cnn = dict(per_seed[cnn_label][str(seed0)])
        else:  # a GAN-form denoiser outside the Table 2 selection: train its CNN form too
            lid, secs, _ = train_lidnet(d, seed0, "lidnet", form="cnn", strategy="collaborative")
            cnn = evaluate(cnn_label, denoise_volume(lid.denoiser, evalc.ldct_hu, hu_range, device=dev))
            cnn["training_s"] = round(secs, 1)
        cnn["form"] = "CNN (Eq. 8)"
        table4_rows[f"{cnn_label}, CNN form"] = cnn
        log(f"== {dn}, GAN form (Eq. 5, WGAN-GP critic), seed {seed0}")
        gan, secs, _ = train_lidnet(d, seed0, "lidnet_gan", form="gan", strategy="collaborative")
        if getattr(gan, "critic", None) is None:
            table4_note = ("The GAN form is not implemented by this build's LIDnet trainer (it has no WGAN-GP "
                           "critic): the GAN rows are left out.")
            log(f"  {table4_note}")
            continue
        g = evaluate(f"{cnn_label}, GAN form", denoise_volume(gan.denoiser, evalc.ldct_hu, hu_range, device=dev))
        g["training_s"] = round(secs, 1)
        g["form"] = "GAN (Eq. 5)"
        table4_rows[f"{cnn_label}, GAN form"] = g

    # Fig. 3: the simultaneous strategy on the Fig. 3 denoiser (the collaborative curve came from Table 2's run).
    fig3_note = ""
    log(f"== Fig. 3: {display_name(fig3)}, simultaneous strategy, seed {seed0}")
    if "collaborative" not in curves:  # Fig. 3 denoiser outside the Table 2 selection
        _, _, rec = train_lidnet(fig3, seed0, "lidnet", "Fig. 3 collaborative", form="cnn", strategy="collaborative")
        curves["collaborative"] = rec.points
    sim, _, rec = train_lidnet(fig3, seed0, "lidnet_simultaneous", "Fig. 3 simultaneous", form="cnn",
                               strategy="simultaneous")
    if any(p.name in ("T2", "T3") for p in sim.schedule):
        fig3_note = ("The simultaneous strategy is not implemented by this build's LIDnet trainer (it ran "
                     "Algorithm 1's T2/T3 phases): its curve is left out.")
        log(f"  {fig3_note}")
    else:
        curves["simultaneous"] = rec.points
    steps_total = budget.rounds * sum(budget.steps_for(fig3))
    save_ap_curve_figure(
        out / "fig3_ap_curve.png",
        {name: [(p["step"], p["ap50"]) for p in pts] for name, pts in curves.items()},
        title=f"Fig. 3: AP-50 on {eval_case} during training, LIDnet ({display_name(fig3)}), "
              f"{steps_total} steps after a shared T1 = {budget.t1}",
        xlabel="training step (after T1)", ylabel="AP-50 (%)",
    )

    timing["total"] = round(time.perf_counter() - t_start, 1)
    metrics = {
        "methods": methods,
        "per_seed": per_seed,
        "table4": {"rows": table4_rows, "available": "GAN form" in " ".join(table4_rows), "note": table4_note},
        "fig3": {"denoiser": fig3, "every": budget.curve_every, "curves": curves, "note": fig3_note,
                 "n_images": int(curve_case[0].n_slices),
                 "measure": "AP-50 of the current detector on the current denoiser's output, evaluation case"},
        "denoisers": names,
        "gan_denoisers": gan_names,
        "seeds": seeds,
        "hu_range": list(hu_range),
        "n_images": int(evalc.n_slices),
        "n_lesions": int(sum(len(b) for b in evalc.boxes.values())),
        "n_real_lesions": int(sum(len(b) for b in eval_real.values())),
        "n0": float(n0),
        "backbone": backbone,
        "budget": asdict(budget),
        "config": base_cfg.to_dict(),
        "data": {"train_case": train_case, "eval_case": eval_case, "sample_dir": str(sample_dir())},
        "timing_s": timing,
        "environment": env,
    }
    eval_info = (f"evaluation on {metrics['n_images']} slices of {eval_case} ({metrics['n_lesions']} lesion boxes, "
                 f"{metrics['n_real_lesions']} of them the real tumour)")
    header = _budget_header(budget, names, seeds, n0, env, backbone, timing["total"], eval_info)
    table4 = format_form_table(metrics["table4"], markdown=True)
    fig3_md = ("**Fig. 3.** `fig3_ap_curve.png`: AP-50 (%) of the current detector on the current denoiser's "
               f"output of {curve_case[0].n_slices} slices of {eval_case}, every {budget.curve_every} steps; "
               "collaborative (Algorithm 1) vs "
               "simultaneous strategy." + (f" {fig3_note}" if fig3_note else ""))
    text = "\n".join([header, format_markdown_tables(metrics), table4, "", fig3_md, ""])
    atomic_write_text(out / "tables.md", text)
    atomic_write_text(out / "metrics.json", json.dumps(jsonable(metrics), indent=2) + "\n")
    log(text)
    log(f"Reproduction written to {out.resolve()} (tables.md, metrics.json, fig3_ap_curve.png, checkpoints/) "
        f"in {timing['total']:.0f} s")
    return metrics
