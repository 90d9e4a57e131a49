"""When does the ROI loss help? The Eq. 8 study (``lidnet study``).

Grid, on the protocol's data and the study budget (:data:`src_training.experiment.STUDY_BUDGET`), CPCE
denoiser, lambda_2 = 5 (the paper's) throughout:

* Eq. 8 reduction: ``paper`` (reconstruction term summed over each image's pixels, as printed) or
  ``normalised`` (per-pixel MAE, feature losses relative to the NDCT feature energy);
* lambda_1 in {0, 0.5, 5} (the ROI / global perceptual weight; 0 leaves Eq. 8 with the detection term only,
  so the perceptual choice is moot and run once);
* perceptual in {roi (Eq. 4, top-K proposals), global (the whole FPN maps)}.

Every configuration runs over the same seeds as a baseline of the same reduction (reconstruction loss only,
same seed, crops and denoiser steps). Reported per configuration: the judge's AP-50, PSNR, the three ROI
radiomics differences, each the mean over seeds with a Student-t 95 % interval, the paired difference to the
baseline over seeds with its verdict, and the mean gradient-norm shares of the loss terms.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .checkpoint import atomic_write_text
from .device import auto_device
from .errors import LidnetError
from .evaluation.metrics import METRICS
from .evaluation.scoring import NDCTFeatures, summarize
from .experiment import STUDY_BUDGET, Budget, environment, load_data, noise_line
from .protocol import load_detectors
from .reproduce import DEFAULT_SEEDS, run_pair, seed_comparison, seed_summary
from .sample import sample_dir
from .serialize import jsonable

__all__ = ["study_grid", "run_study", "run_study_parallel", "study_workers", "combine_studies", "format_study"]

#: Metrics shown in the study table.
STUDY_METRICS = ("ap50", "psnr", "glcm_correlation_diff", "glcm_homogeneity_diff", "glcm_energy_diff")


def study_grid(reductions: Sequence[str] = ("paper", "normalised"), lambdas: Sequence[float] = (0.0, 0.5, 5.0),
               perceptuals: Sequence[str] = ("roi", "global")) -> list[dict[str, Any]]:
    """The configurations of the study: ``{"loss_reduction", "lambda_roi", "perceptual", "label"}``; lambda_1 = 0
    appears once per reduction (``perceptual = "none"``)."""
    grid = []
    for red in reductions:
        for lam in lambdas:
            for perc in (["none"] if float(lam) == 0 else list(perceptuals)):
                grid.append({"loss_reduction": red, "lambda_roi": float(lam), "perceptual": perc,
                             "label": f"{red}, lambda_1={float(lam):g}" + ("" if perc == "none" else f", {perc}")})
    return grid


def _cell(d: dict, key: str, scale: float, fmt: str) -> str:
    v = d.get(key)
    ci = d.get(key + "_ci") or {}
    if v is None:
        return "n/a"
    txt = f"{v * scale:{fmt}}"
    lo, hi = ci.get("low"), ci.get("high")
    if lo is not None and hi is not None and lo == lo and hi == hi:
        txt += f" [{lo * scale:{fmt}}, {hi * scale:{fmt}}]"
    return txt


def format_study(result: dict[str, Any]) -> str:
    """Markdown: one row per configuration (plus the baselines): mean over seeds [t-interval] of each study
    metric, the difference to the baseline [interval] and its reading, and the gradient shares."""
    metric = {m.key: m for m in METRICS}
    head = ["configuration"]
    for k in STUDY_METRICS:
        head += [f"{metric[k].label}", "diff. to baseline"]
    head += ["grad share rec / roi / det (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for row in result["rows"]:
        cells = [row["label"]]
        for k in STUDY_METRICS:
            m = metric[k]
            cells.append(_cell(row["summary"], k, m.scale, m.fmt))
            c = row.get("vs_baseline", {}).get(k)
            if c:
                cells.append(_cell({"d": c["diff"]["value"], "d_ci": c["diff"]}, "d", m.scale, m.fmt)
                             + f" ({c['reading']})")
            else:
                cells.append("")
        gs = row.get("grad_shares") or {}
        cells.append(" / ".join(f"{100 * gs[t]:.1f}" if t in gs else "-" for t in ("rec", "roi", "det")))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "",
        f"*Mean over seeds {', '.join(map(str, result['seeds']))} [Student-t 95 % interval over seeds]; difference "
        "to the baseline of the same reduction, paired per seed; 'no difference' = the interval contains 0. AP-50 by "
        "the independent judge (FCOS, never trained against). Radiomics: |GLCM feature - NDCT's| in the lesion "
        "boxes, lower is better.*",
    ]
    return "\n".join(lines + notes) + "\n"


def run_study(out_dir: str | Path = "lidnet-study", *, seeds: Sequence[int] = DEFAULT_SEEDS, n0: float = 1000.0,
              device: str = "auto", budget: Optional[Budget] = None, grid: Optional[list[dict]] = None,
              denoiser: str = "cpce", cache_dir: Optional[str | Path] = None,
              reductions: Sequence[str] = ("paper", "normalised"),
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the study grid and write ``study.md`` and ``study.json`` (``metrics.json`` layout per row).

    Parameters
    ----------
    out_dir : path-like
    seeds : sequence of int
        Training seeds (default 0, 1, 2).
    n0 : float
    device : str
    budget : Budget, optional
        Default :data:`~src_training.experiment.STUDY_BUDGET`.
    grid : list of dict, optional
        Default :func:`study_grid` over ``reductions``.
    reductions : sequence of str
        Eq. 8 reductions of the default grid (``lidnet study --reductions``; :func:`run_study_parallel` runs one
        process per reduction).
    denoiser : str
    cache_dir : path-like, optional
    log : callable(str)

    Returns
    -------
    dict
        ``rows`` (label, config fields, summary over seeds, per-seed values, vs_baseline, grad_shares),
        ``seeds``, ``noise``, ``timing_s``, ``environment``.

    Raises
    ------
    LidnetError
        Missing data or detectors, training failures.
    """
    t_start = time.perf_counter()
    budget = budget or STUDY_BUDGET
    grid = grid or study_grid(reductions=tuple(reductions))
    seeds = [int(s) for s in seeds]
    dev = auto_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else sample_dir() / ".cache"
    detectors = load_detectors(dev)
    data = load_data(budget, n0=n0, cache_dir=cache, log=log)
    feats = NDCTFeatures(data.eval)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, list[dict[str, Any]]] = {}

    def cfg(seed: int, **kw):
        return budget.config(denoiser=denoiser, seed=seed, n0=float(n0), device=str(dev), cache_dir=str(cache),
                             detector_weights=str(detectors.own_path), **kw)

    partial = out / "study_partial.json"
    for red in dict.fromkeys(g["loss_reduction"] for g in grid):
        per = []
        for seed in seeds:
            res = run_pair(cfg(seed, loss_reduction=red, lambda_roi=0.0, perceptual="none"), data, detectors, dev,
                           feats, label=f"baseline {red} s{seed}", log=log, with_baseline=True)
            per.append(summarize(res["baseline"][1], seed=seed, n_boot=budget.n_boot))
            # the lambda_1 = 0 LIDnet run of this seed comes with it (same config)
            baselines.setdefault(f"lam0:{red}", []).append(
                (summarize(res["lidnet"][1], seed=seed, n_boot=budget.n_boot), res["lidnet"][0].grad_shares))
        baselines[red] = per
        rows.append({"label": f"baseline ({red} reduction)", "loss_reduction": red, "lambda_roi": None,
                     "perceptual": None, "summary": seed_summary(per), "per_seed": per})
    for g in grid:
        t0 = time.perf_counter()
        if g["lambda_roi"] == 0.0 and f"lam0:{g['loss_reduction']}" in baselines:
            got = baselines[f"lam0:{g['loss_reduction']}"]
            per, shares = [s for s, _ in got], [sh for _, sh in got]
        else:
            per, shares = [], []
            for seed in seeds:
                c = cfg(seed, loss_reduction=g["loss_reduction"], lambda_roi=g["lambda_roi"], perceptual=g["perceptual"])
                res = run_pair(c, data, detectors, dev, feats, label=f"{g['label']} s{seed}", log=log,
                               with_baseline=False)
                per.append(summarize(res["lidnet"][1], seed=seed, n_boot=budget.n_boot))
                shares.append(res["lidnet"][0].grad_shares)
        terms = sorted({t for s in shares for t in s})
        mean_shares = {t: sum(s.get(t, 0.0) for s in shares) / max(1, len(shares)) for t in terms}
        rows.append({**g, "summary": seed_summary(per), "per_seed": per,
                     "vs_baseline": seed_comparison(baselines[g["loss_reduction"]], per), "grad_shares": mean_shares,
                     "seconds": round(time.perf_counter() - t0, 1)})
        atomic_write_text(partial, json.dumps(jsonable({"rows": rows, "seeds": seeds}), indent=1) + "\n")
        log(f"== study row done: {g['label']}")
    result = {"rows": rows, "seeds": seeds, "denoiser": denoiser, "n0": float(n0), "noise": data.noise(),
              "budget": budget.__dict__, "timing_s": round(time.perf_counter() - t_start, 1),
              "environment": environment(dev)}
    _write_study(out, result, log)
    partial.unlink(missing_ok=True)
    return result


def _write_study(out: Path, result: dict[str, Any], log: Callable[[str], None]) -> None:
    """Write ``study.md`` (header, noise line, :func:`format_study`) and ``study.json`` atomically; log the text."""
    text = _study_text(result)
    atomic_write_text(out / "study.md", text)
    atomic_write_text(out / "study.json", json.dumps(jsonable(result), indent=2) + "\n")
    log(text)


def _study_text(result: dict[str, Any]) -> str:
    budget = result["budget"]
    return ("# Eq. 8 study: reduction x lambda_1 x perceptual\n\n"
            f"Denoiser {result['denoiser']}, budget '{budget['name']}' (T2 = {budget['t2']}, T3 = {budget['t3']}, "
            f"rounds = {budget['rounds']}, batch {budget['batch_size']}, {budget['crop_size']} px lesion-centred crops "
            f"at 256 px), lambda_2 = 5, N0 = {result['n0']:g}, seeds {', '.join(map(str, result['seeds']))}, "
            f"{result['environment'].get('device', '')}, {result['timing_s']:.0f} s"
            + (f" ({result['workers']} processes, one per reduction)" if result.get("workers", 1) > 1 else "")
            + ".\n\n" + noise_line(result["noise"]) + "\n\n" + format_study(result))


def combine_studies(parts: Sequence[dict[str, Any]], out_dir: str | Path, *, timing_s: float,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Merge the results of :func:`run_study` runs over disjoint reductions (same seeds, budget, data) into one
    ``study.md`` / ``study.json`` in ``out_dir``; rows keep the order of ``parts``.

    Parameters
    ----------
    parts : sequence of dict
        :func:`run_study` results (their ``study.json``).
    out_dir : path-like
        Existing folder for the merged files.
    timing_s : float
        Wall time of the whole study, seconds (the parts' own times are kept as ``part_timing_s``).
    log : callable(str)

    Returns
    -------
    dict
        The merged result: the first part's fields, all rows, ``timing_s``, ``workers``, ``part_timing_s``.

    Raises
    ------
    LidnetError
        The parts disagree on seeds, budget, denoiser or N0 (they are not one study).
    """
    if not parts:
        raise LidnetError("combine_studies: no study parts to combine")
    first = parts[0]
    for key in ("seeds", "budget", "denoiser", "n0"):
        for part in parts[1:]:
            if part[key] != first[key]:
                raise LidnetError(f"combine_studies: the parts differ in {key} ({first[key]} vs {part[key]})")
    result = {**first, "rows": [row for part in parts for row in part["rows"]], "timing_s": round(timing_s, 1),
              "workers": len(parts), "part_timing_s": [part["timing_s"] for part in parts]}
    _write_study(Path(out_dir), result, log)
    return result


def study_workers(device: str, n_reductions: int) -> int:
    """Processes for ``lidnet study`` when ``--workers`` is not given: one per reduction on a CPU with 2 or more
    cores (measured faster there, :func:`run_study_parallel`), else 1."""
    on_cpu = auto_device(device).type == "cpu"
    return int(n_reductions) if on_cpu and (os.cpu_count() or 1) >= 2 and n_reductions > 1 else 1


def run_study_parallel(out_dir: str | Path = "lidnet-study", *, reductions: Sequence[str] = ("paper", "normalised"),
                       seeds: Sequence[int] = DEFAULT_SEEDS, n0: float = 1000.0, device: str = "cpu",
                       cache_dir: Optional[str | Path] = None, fast: bool = False,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """:func:`run_study` with one process per Eq. 8 reduction (``python -m src_training study --reductions R``),
    ``os.cpu_count() // len(reductions)`` threads each, then :func:`combine_studies`. On a 2-core CPU two
    single-threaded processes do the same work in less wall time than one process with two threads (measured:
    the 2026-12-02 study, docs/reproduction.md). Each part writes ``out_dir/part_<reduction>/`` (its
    ``study.json`` and ``log.txt``); the numbers of a part do not depend on the other part.

    Parameters
    ----------
    out_dir : path-like
    reductions : sequence of str
        One process each.
    seeds, n0, device, cache_dir
        As :func:`run_study` (the default grid, budget and denoiser).
    fast : bool
        The parts use :data:`~src_training.experiment.FAST_BUDGET` (``--fast``).
    log : callable(str)

    Returns
    -------
    dict
        As :func:`combine_studies`.

    Raises
    ------
    LidnetError
        A worker failed (the message names its log file and quotes its end).
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    reductions = list(dict.fromkeys(reductions))
    threads = max(1, (os.cpu_count() or 1) // len(reductions))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    procs = []
    for red in reductions:
        part = out / f"part_{red}"
        part.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "src_training", "study", "--out", str(part), "--reductions", red,
               "--workers", "1", "--n0", str(n0), "--device", device, "--seed", *map(str, seeds)]
        if cache_dir is not None:
            cmd += ["--cache-dir", str(cache_dir)]
        if fast:
            cmd.append("--fast")
        log(f"study part '{red}': {threads} thread(s), log {part / 'log.txt'}")
        with open(part / "log.txt", "w") as fh:  # the child keeps its own copy of the descriptor
            procs.append((red, part, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)))
    failed = []
    for red, part, proc in procs:
        rc = proc.wait()
        if rc != 0:
            tail = (part / "log.txt").read_text(errors="replace")[-1500:]
            failed.append(f"study part '{red}' failed (exit {rc}); see {part / 'log.txt'}:\n{tail}")
    if failed:
        raise LidnetError("\n\n".join(failed))
    parts = [json.loads((part / "study.json").read_text()) for _, part, _ in procs]
    return combine_studies(parts, out, timing_s=time.perf_counter() - t0, log=log)
