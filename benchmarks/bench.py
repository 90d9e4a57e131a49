"""Speed and scale benchmark of napari-lidnet (issue #5): loading, denoising, detection, training steps.

Usage::

    .venv/bin/python benchmarks/bench.py [--quick] [--size 512] [--slices 4] [--models redcnn cpce ...]
                                         [--backbone resnet50] [--train-size 128] [--out bench.json]

Every comparison is measured side by side in one run: the variants of one measurement are
interleaved repetition by repetition and the median is reported, so ratios hold on a noisy, shared
machine even when absolute times drift. Prints tables and writes a JSON file (``--out``).

Sections
--------
1. Loading a DICOM series (sample ``lung2`` and a synthetic larger series written with
   ``src_training.io.write_dicom_series``): project ``load_ct`` vs plain SimpleITK ``ImageSeriesReader`` vs
   reading the raw file bytes (the disk floor; warm page cache: files are read once first, the cache
   cannot be dropped without root). MB/s (file bytes) and slices/s.
2. Denoising, every model of ``DENOISERS``: plain eager fp32 PyTorch (``fast=False``) vs the project's
   default fast path vs bf16 autocast (and ``torch.compile`` with ``--compile``); the peer package
   ``ldct-benchmark`` RED-CNN when importable. slices/s, ms/slice, volume time, FLOPs/slice
   (``torch.utils.flop_counter.FlopCounterMode``), achieved GFLOP/s vs a measured matmul peak, the
   PSNR change vs the plain fp32 output, peak numpy memory (tracemalloc) and process max RSS.
3. Detection: ``detect`` + ``rpn_topk`` (two backbone passes, the old ``detect_slices``) vs the fused
   ``detect_and_rpn``; RPN proposal extraction alone.
4. One training step of each phase T1, T2, T3 (``CollaborativeTrainer``), with the share of the T2 step
   spent in ``roi_perceptual_loss``, and the projected time of the paper schedule.

Never used as a timed test. Weights are random (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

RESULTS: dict[str, Any] = {}


# ------------------------------------------------------------------------------------------ helpers
def interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int = 1) -> dict[str, float]:
    """Median wall seconds of each function; repetitions interleaved (a, b, c, a, b, c, ...)."""
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def flops_of(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def matmul_peak(device: torch.device, dtype=torch.float32, n: int = 1024, reps: int = 5) -> float:
    """Measured GFLOP/s of an n x n matmul (the practical peak of the device for dense math)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run():
        a @ b
        sync()

    run()
    best = float("inf")
    for _ in range(reps):  # best of: the peak is what the device reaches when it is least disturbed
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def psnr(a: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - ref.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    print(f"\n## {title}")
    cells = [header] + [[f"{c:.3g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
        if j == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.contextmanager
def section(name: str):
    t0 = time.perf_counter()
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - a failing section is reported, the others still run
        RESULTS.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
        print(f"\n## {name}: FAILED ({type(exc).__name__}: {exc})")
    finally:
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]", flush=True)


# ------------------------------------------------------------------------------------------ 1. loading
def bench_loading(args, tmp: Path) -> None:
    import SimpleITK as sitk

    from src_training.io import load_ct, write_dicom_series

    series = {"lung2 (sample)": ROOT / "sample_data" / "lung2" / "ndct"}
    rng = np.random.default_rng(0)
    z = args.load_slices
    hu = rng.integers(-1024, 1500, size=(z, 512, 512)).astype(np.float32)
    syn = tmp / "synthetic_dicom"
    write_dicom_series(hu, syn, spacing=(1.0, 0.7, 0.7), series_description="bench")
    series[f"synthetic {z}x512x512"] = syn

    rows = []
    for label, folder in series.items():
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".dcm", ""))
        nbytes = sum(p.stat().st_size for p in files)
        for p in files:  # warm the page cache
            p.read_bytes()

        def raw():
            for p in files:
                p.read_bytes()

        def plain_sitk():
            r = sitk.ImageSeriesReader()
            r.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
            return sitk.GetArrayFromImage(r.Execute()).astype(np.float32)

        def project():
            return load_ct(folder).hu

        t = interleaved({"raw bytes": raw, "SimpleITK": plain_sitk, "load_ct": project}, args.reps)
        n = len(files)
        for k, v in t.items():
            rows.append([label, k, n, nbytes / 1e6, v, nbytes / 1e6 / v, n / v, v / t["raw bytes"]])
        RESULTS.setdefault("loading", {})[label] = {
            "files": n, "mb": nbytes / 1e6, "seconds": t, "ratio_load_ct_to_raw": t["load_ct"] / t["raw bytes"],
            "ratio_load_ct_to_sitk": t["load_ct"] / t["SimpleITK"], "cache": "warm",
        }
    table("DICOM loading (warm page cache)", ["series", "reader", "slices", "MB", "s", "MB/s", "slices/s", "x raw"], rows)


# ------------------------------------------------------------------------------------------ 2. denoising
def _ldct_benchmark_redcnn(site: str | None):
    """The peer package's RED-CNN class ``ldctbench.methods.redcnn.network.Model``, or (None, reason).

    ``ldct-benchmark`` is never a project dependency: install it into a throwaway venv
    (``python -m venv /tmp/ldctvenv && /tmp/ldctvenv/bin/pip install --no-deps ldct-benchmark``) and pass
    its site-packages with ``--peer-site``.
    """
    if site:
        sys.path.append(site)
    try:
        from ldctbench.methods.redcnn.network import Model
    except Exception as exc:  # noqa: BLE001
        return None, f"not installed ({type(exc).__name__}: {exc}; see --peer-site)"
    import ldctbench

    where = Path(ldctbench.__file__).parent
    version = next((p.name for p in where.parent.glob("ldct_benchmark-*.dist-info")), "version unknown")
    return Model, f"ldctbench.methods.redcnn.network.Model ({version})"


def _sample_input(size: int, z: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(ndct, ldct proxy) HU volumes (z, size, size) from the bundled lung2 sample (+ Gaussian noise)."""
    from skimage.transform import resize

    from src_training.io import load_ct

    vol = load_ct(ROOT / "sample_data" / "lung2" / "ndct").hu
    mid = vol.shape[0] // 2
    idx = [min(vol.shape[0] - 1, mid + i) for i in range(z)]
    ndct = np.stack([resize(vol[i], (size, size), preserve_range=True, anti_aliasing=True) for i in idx])
    ldct = ndct + np.random.default_rng(seed).normal(0, 40.0, ndct.shape)
    return ndct.astype(np.float32), ldct.astype(np.float32)


def bench_denoisers(args) -> None:
    from src_training import inference
    from src_training.inference import denoise_volume
    from src_training.models.denoisers import DENOISERS, build_denoiser
    from src_training.windowing import DEFAULT_HU_RANGE, hu_to_unit

    hr = DEFAULT_HU_RANGE
    ndct, ldct = _sample_input(args.size, args.slices)
    peak = matmul_peak(torch.device("cpu"))
    RESULTS["cpu_matmul_peak_gflops"] = peak
    print(f"\nCPU fp32 matmul peak (1024^3, measured now): {peak:.1f} GFLOP/s")
    names = args.models or list(DENOISERS)
    peer, peer_note = _ldct_benchmark_redcnn(args.peer_site)
    RESULTS["ldct_benchmark"] = peer_note
    print(f"ldct-benchmark RED-CNN: {peer_note}")
    rows = []
    for name in names:
        try:
            torch.manual_seed(0)
            model = build_denoiser(name).eval()
            with torch.no_grad():  # non-zero last layers, so outputs (and precision errors) are not trivial
                for p in model.parameters():
                    if p.dim() > 1 and float(p.abs().max()) == 0.0:
                        p.normal_(0, 1e-3)
            x1 = torch.from_numpy(hu_to_unit(ldct[:1], hr))[:, None]
            with torch.inference_mode():
                flops = flops_of(lambda: model(x1))
            paths: dict[str, Callable[[], Any]] = {
                "plain eager fp32": lambda: denoise_volume(model, ldct, hr, batch_size=args.batch, fast=False),
                "fast (default)": lambda: denoise_volume(model, ldct, hr, batch_size=args.batch),
            }
            if not args.skip_bf16:
                paths["fast bf16"] = lambda: denoise_volume(model, ldct, hr, batch_size=args.batch, precision="bf16")
            if args.compile:
                comp = inference.prepare_denoiser(model, "cpu", compile=True)
                t0 = time.perf_counter()
                with torch.inference_mode():
                    comp(x1.expand(args.batch, -1, -1, -1).contiguous())
                RESULTS.setdefault("compile_seconds", {})[name] = time.perf_counter() - t0

                def compiled():
                    with torch.inference_mode():
                        for s in range(0, ldct.shape[0], args.batch):
                            comp(torch.from_numpy(hu_to_unit(ldct[s:s + args.batch], hr))[:, None])

                paths["fast + torch.compile"] = compiled
            if peer is not None and name == "redcnn":
                pm = peer(None).eval()  # its `args` is unused; same layers as ours, no final ReLU

                def peer_run():
                    with torch.inference_mode():
                        for s in range(0, ldct.shape[0], args.batch):
                            pm(torch.from_numpy(hu_to_unit(ldct[s:s + args.batch], hr))[:, None])

                paths["ldct-benchmark RED-CNN"] = peer_run
            outs = {k: f() for k, f in paths.items() if k in ("plain eager fp32", "fast (default)", "fast bf16")}
            t = interleaved(paths, args.reps, warmup=0)
            peak = max(peak, matmul_peak(torch.device("cpu")))
            ref_psnr = psnr(outs["plain eager fp32"], ndct, hr[1] - hr[0])
            mem = {}
            for k in ("plain eager fp32", "fast (default)"):
                tracemalloc.start()
                paths[k]()
                mem[k] = tracemalloc.get_traced_memory()[1] / 1e6
                tracemalloc.stop()
            z = ldct.shape[0]
            res = {}
            for k, v in t.items():
                d_psnr = psnr(outs[k], ndct, hr[1] - hr[0]) - ref_psnr if k in outs else float("nan")
                gfs = flops * z / v / 1e9
                res[k] = {"volume_s": v, "ms_per_slice": 1e3 * v / z, "slices_per_s": z / v,
                          "speedup_vs_plain": t["plain eager fp32"] / v, "gflops": gfs, "dpsnr_db": d_psnr,
                          "numpy_peak_mb": mem.get(k)}
                rows.append([name, k, 1e3 * v / z, z / v, v, t["plain eager fp32"] / v, d_psnr, gfs,
                             gfs / peak, mem.get(k, float("nan"))])
            res["flops_per_slice"] = flops
            res["psnr_plain_vs_ndct_db"] = ref_psnr
            res["applied"] = list(getattr(inference.prepare_denoiser(model, "cpu"), "applied", []))
            RESULTS.setdefault("denoisers", {})[name] = res
            print(f"  {name}: {flops / 1e9:.1f} GFLOP/slice; fast path: {', '.join(res['applied'])}", flush=True)
        except Exception as exc:  # noqa: BLE001 - one broken model must not stop the others
            RESULTS.setdefault("errors", {})[f"denoiser {name}"] = f"{type(exc).__name__}: {exc}"
            print(f"  {name}: FAILED ({type(exc).__name__}: {exc})", flush=True)
    RESULTS["cpu_matmul_peak_gflops"] = peak
    print(f"CPU fp32 matmul peak, best of all measurements: {peak:.1f} GFLOP/s ('of peak' below uses the "
          "peak measured so far when the row was taken)")
    table(
        f"Denoising {args.slices}x{args.size}x{args.size}, batch {args.batch}, CPU threads {torch.get_num_threads()}",
        ["model", "path", "ms/slice", "slices/s", "volume s", "x plain", "dPSNR dB", "GFLOP/s", "of peak",
         "numpy peak MB"],
        rows,
    )
    print(f"process max RSS so far: {max_rss_mb():.0f} MB")
    RESULTS["max_rss_mb_after_denoising"] = max_rss_mb()


# ------------------------------------------------------------------------------------------ 3. detection
def bench_detection(args) -> None:
    from src_training.models.detector import build_detector

    torch.manual_seed(0)
    det = build_detector(args.backbone).eval()
    x = torch.rand(args.det_batch, 1, args.det_size, args.det_size, generator=torch.Generator().manual_seed(0))

    def two_pass():
        with torch.inference_mode():
            det.detect(x, 0.05)
            det.rpn_topk(x, 5)

    def fused():
        with torch.inference_mode():
            det.detect_and_rpn(x, 5, 0.05)

    def rpn_only():
        with torch.inference_mode():
            det.rpn_topk(x, 5)

    with torch.inference_mode():
        flops = flops_of(lambda: det.detect_and_rpn(x[:1], 5, 0.05))
    t = interleaved({"detect + rpn_topk (2 passes)": two_pass, "detect_and_rpn (fused)": fused,
                     "rpn_topk only (proposals)": rpn_only}, args.reps)
    b = args.det_batch
    rows = [[k, 1e3 * v / b, b / v, t["detect + rpn_topk (2 passes)"] / v] for k, v in t.items()]
    table(f"Detection ({args.backbone}, {b}x{args.det_size}x{args.det_size}, {flops / 1e9:.1f} GFLOP/slice fused)",
          ["path", "ms/slice", "slices/s", "x two-pass"], rows)
    RESULTS["detection"] = {"backbone": args.backbone, "size": args.det_size, "batch": b,
                            "flops_per_slice_fused": flops,
                            "seconds_per_batch": t, "fused_speedup": t["detect + rpn_topk (2 passes)"] / t["detect_and_rpn (fused)"]}


# ------------------------------------------------------------------------------------------ 4. training
class _SyntheticSlices(torch.utils.data.Dataset):
    """Items ``(ldct (1,H,W), ndct (1,H,W), target)`` with one square 'lesion' box per slice."""

    def __init__(self, n: int, size: int, hu_range):
        self.n, self.size, self.hu_range = n, size, tuple(hu_range)

    def __len__(self):
        return self.n

    def __getitem__(self, key):
        i = key[0] if isinstance(key, tuple) else key
        g = torch.Generator().manual_seed(int(i))
        nd = torch.rand(1, self.size, self.size, generator=g) * 0.3 + 0.35
        c = self.size // 2
        nd[:, c - 4:c + 4, c - 4:c + 4] += 0.2
        ld = (nd + 0.05 * torch.randn(nd.shape, generator=g)).clamp(0, 1)
        box = torch.tensor([[c - 4.0, c - 4.0, c + 4.0, c + 4.0]])
        return ld, nd, {"boxes": box, "labels": torch.ones(1, dtype=torch.int64)}


def bench_training(args) -> None:
    from src_training import training
    from src_training.training import lidnet as training_lidnet  # where the T2 step calls the ROI loss
    from src_training.config import TrainConfig

    cfg = TrainConfig(denoiser=args.train_denoiser, detector_backbone=args.backbone, batch_size=args.train_batch,
                      t1=1, t2=1, t3=1, rounds=1, device="cpu")
    ds = _SyntheticSlices(max(8, args.train_batch), args.train_size, cfg.hu_range)
    trainer = training.CollaborativeTrainer(cfg, ds, device="cpu")
    items = [ds[i] for i in range(args.train_batch)]
    batch = (torch.stack([a for a, _, _ in items]), torch.stack([b for _, b, _ in items]), [t for _, _, t in items])
    roi_time = [0.0]
    orig = training_lidnet.roi_perceptual_loss

    def timed_roi(*a, **kw):
        t0 = time.perf_counter()
        out = orig(*a, **kw)
        roi_time[0] += time.perf_counter() - t0
        return out

    phases = {p.name: p for p in trainer.schedule}
    rows, res = [], {}
    training_lidnet.roi_perceptual_loss = timed_roi
    try:
        fns = {}
        for name in ("T1", "T2", "T3"):
            ph = phases[name]

            def step(ph=ph):
                trainer._modes(*trainer._phase_modes(ph))
                trainer._train_step(ph, batch)

            fns[name] = step
        # T2 alone (to attribute the ROI loss time), then the three interleaved
        for f in fns.values():
            f()
        roi_time[0] = 0.0
        t2_alone = [interleaved({"T2": fns["T2"]}, 1, warmup=0)["T2"] for _ in range(args.reps)]
        roi_share = roi_time[0] / sum(t2_alone)
        t = interleaved(fns, args.reps, warmup=0)
    finally:
        training_lidnet.roi_perceptual_loss = orig
    scale = (8 / args.train_batch) * (512 / args.train_size) ** 2
    steps = {"T1": 4000, "T2": 4000, "T3": 2000}
    proj = sum(t[k] * scale * steps[k] for k in steps)
    for k, v in t.items():
        rows.append([k, v, v * scale, steps[k], v * scale * steps[k] / 3600])
        res[k] = {"step_s": v, "projected_step_s_b8_512": v * scale}
    table(f"Training steps ({args.train_denoiser} + {args.backbone}, batch {args.train_batch}, "
          f"{args.train_size}x{args.train_size}, CPU)",
          ["phase", "step s", "proj. step s (b8, 512^2)", "paper steps", "proj. hours"], rows)
    print(f"ROI perceptual loss: {100 * roi_share:.1f}% of a T2 step (forward only; its backward is inside the "
          f"step's backward)")
    print(f"Projected paper schedule (T1=T2=4000, T3=2000, batch 8, 512^2) on this CPU: {proj / 3600:.0f} h "
          f"(linear in batch and pixels; GPU numbers need a GPU run)")
    RESULTS["training"] = {"denoiser": args.train_denoiser, "backbone": args.backbone, "batch": args.train_batch,
                           "size": args.train_size, "phases": res, "roi_share_of_t2_forward": roi_share,
                           "projected_paper_schedule_hours_this_device": proj / 3600}


# ------------------------------------------------------------------------------------------ GPU
def bench_gpu(args) -> None:
    if not torch.cuda.is_available():
        print("\nNo CUDA GPU: GPU section skipped.")
        RESULTS["gpu"] = "not available"
        return
    from src_training.inference import denoise_volume
    from src_training.models.denoisers import DENOISERS, build_denoiser

    dev = torch.device("cuda")
    peak32 = matmul_peak(dev, torch.float32, 4096)
    peak16 = matmul_peak(dev, torch.bfloat16, 4096)
    ndct, ldct = _sample_input(args.size, max(args.slices, 8))
    rows, res = [], {}
    for name in args.models or list(DENOISERS):
        model = build_denoiser(name).to(dev).eval()
        with torch.inference_mode():
            flops = flops_of(lambda: model(torch.rand(1, 1, args.size, args.size, device=dev)))

        def run(**kw):
            denoise_volume(model, ldct, batch_size=args.batch, **kw)
            torch.cuda.synchronize()

        t = interleaved({"plain": lambda: run(fast=False), "fast": lambda: run(),
                         "fast bf16": lambda: run(precision="bf16")}, args.reps)
        z = ldct.shape[0]
        for k, v in t.items():
            g = flops * z / v / 1e9
            rows.append([name, k, 1e3 * v / z, z / v, g, g / (peak16 if "bf16" in k else peak32)])
        res[name] = {"seconds": t, "flops_per_slice": flops}
    table(f"GPU {torch.cuda.get_device_name()} (matmul peak fp32 {peak32:.0f}, bf16 {peak16:.0f} GFLOP/s)",
          ["model", "path", "ms/slice", "slices/s", "GFLOP/s", "of peak"], rows)
    RESULTS["gpu"] = {"name": torch.cuda.get_device_name(), "peak_fp32": peak32, "peak_bf16": peak16, **res}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repetitions (a few minutes)")
    ap.add_argument("--size", type=int, default=None, help="denoising slice size (default 512; quick 128)")
    ap.add_argument("--slices", type=int, default=None, help="slices denoised per volume (default 4; quick 2)")
    ap.add_argument("--batch", type=int, default=None, help="denoising batch size (default 4; quick 2)")
    ap.add_argument("--reps", type=int, default=None, help="interleaved repetitions (default 5; quick 3)")
    ap.add_argument("--models", nargs="*", default=None, help="denoisers (default: every entry of DENOISERS)")
    ap.add_argument("--skip-bf16", action="store_true", help="do not time bf16 autocast (slow without bf16 CPUs)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--backbone", default=None, help="detector backbone (default resnet50; quick resnet18)")
    ap.add_argument("--det-size", type=int, default=None, help="detection slice size (default 512; quick 256)")
    ap.add_argument("--load-slices", type=int, default=None, help="slices of the synthetic DICOM series")
    ap.add_argument("--train-size", type=int, default=None, help="training slice size (default 256; quick 128)")
    ap.add_argument("--train-batch", type=int, default=2)
    ap.add_argument("--train-denoiser", default="redcnn")
    ap.add_argument("--peer-site", default=os.environ.get("LDCT_BENCHMARK_SITE"),
                    help="site-packages of a throwaway venv holding ldct-benchmark (never a project dependency)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["loading", "denoising", "detection", "training", "gpu"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "bench_results.json")
    args = ap.parse_args()
    q = args.quick
    args.size = args.size or (128 if q else 512)
    args.slices = args.slices or (2 if q else 4)
    args.batch = args.batch or (2 if q else 4)
    args.reps = args.reps or (3 if q else 5)
    args.backbone = args.backbone or ("resnet18" if q else "resnet50")
    args.det_size = args.det_size or (256 if q else 512)
    args.det_batch = 2
    args.load_slices = args.load_slices or (40 if q else 200)
    args.train_size = args.train_size or (128 if q else 256)

    RESULTS["machine"] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_average_start": os.getloadavg()[0], "cuda": torch.cuda.is_available(),
        "cxx_compiler": shutil.which("g++") or shutil.which("c++") or shutil.which("clang++"),
    }
    RESULTS["args"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    print(f"machine: {RESULTS['machine']}")
    with tempfile.TemporaryDirectory() as td:
        if "loading" not in args.skip:
            with section("loading"):
                bench_loading(args, Path(td))
    if "denoising" not in args.skip:
        with section("denoising"):
            bench_denoisers(args)
    if "detection" not in args.skip:
        with section("detection"):
            bench_detection(args)
    if "training" not in args.skip:
        with section("training"):
            bench_training(args)
    if "gpu" not in args.skip:
        with section("gpu"):
            bench_gpu(args)
    RESULTS["machine"]["load_average_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(RESULTS, indent=1, default=str))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
