"""Speed and noise-level table of src_training.simulation.

Usage::

    .venv/bin/python benchmarks/simulation_speed.py [--lung PATH_TO_lung1_image.nrrd] [--repeat 2]

Prints, for 256^2 and 512^2 slices: wall and CPU seconds per slice for one slice (workers=1 and all
cores) and per slice of an 8-slice volume (threads over slices). With ``--lung`` (e.g. pyradiomics'
``data/lung1_image.nrrd``, 0.5703 mm pixels) it also simulates the middle slice at 512^2 and 2x2-binned
256^2 (1.14 mm) and prints the added-noise standard deviation (HU) in the most uniform 40 HU soft-tissue
window for N0 = 1e3, 3e3, 1e4, 1e5. Timings depend on the machine's load: compare CPU and wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src_training.simulation import default_n_views, simulate_ldct, simulate_ldct_slice  # noqa: E402


def phantom(n: int) -> np.ndarray:
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    hu = np.full((n, n), -1000.0, np.float32)
    hu[(yy / (0.44 * n)) ** 2 + (xx / (0.47 * n)) ** 2 <= 1] = 40.0
    hu[((yy + 0.12 * n) / (0.12 * n)) ** 2 + ((xx + 0.2 * n) / (0.12 * n)) ** 2 <= 1] = -800.0
    hu[((yy - 0.18 * n) / (0.07 * n)) ** 2 + ((xx - 0.2 * n) / (0.07 * n)) ** 2 <= 1] = 700.0
    return hu


def timed(fn, repeat: int) -> tuple[float, float]:
    best_wall, best_cpu = np.inf, np.inf
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def soft_tissue_roi(s: np.ndarray, w: int):
    from scipy.ndimage import uniform_filter

    m = uniform_filter(s, w)
    v = uniform_filter(s * s, w) - m * m
    v[(m < 20) | (m > 70)] = np.inf
    i = np.unravel_index(np.argmin(v), v.shape)
    return slice(i[0] - w // 2, i[0] + w // 2), slice(i[1] - w // 2, i[1] + w // 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lung", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = ap.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    print(f"{'case':38s} {'views':>5s} {'wall s/slice':>12s} {'cpu s/slice':>11s}")
    for n in args.sizes:
        hu = phantom(n)
        sp = 300.0 / n
        for w in (1, None):
            wall, cpu = timed(lambda: simulate_ldct_slice(hu, sp, 1000, seed=0, workers=w), args.repeat)
            print(f"{f'{n}^2 one slice, workers={w or os.cpu_count()}':38s} {default_n_views(n):5d} {wall:12.2f} {cpu:11.2f}")
        vol = np.stack([hu] * 8)
        wall, cpu = timed(lambda: simulate_ldct(vol, sp, 1000, seed=0), 1)
        print(f"{f'{n}^2 8-slice volume, threads':38s} {default_n_views(n):5d} {wall / 8:12.2f} {cpu / 8:11.2f}")

    if args.lung is not None:
        import SimpleITK as sitk

        img = sitk.ReadImage(str(args.lung))
        a = sitk.GetArrayFromImage(img).astype(np.float32)
        sp512 = float(img.GetSpacing()[0])
        s512 = a[a.shape[0] // 2]
        s256 = s512.reshape(256, 2, 256, 2).mean(axis=(1, 3))
        print(f"\nreal chest slice {args.lung.name} z={a.shape[0] // 2}: added-noise std (HU) in soft tissue")
        print(f"{'slice':22s} {'N0':>8s} {'std HU':>7s} {'mean shift':>10s} {'wall s':>7s}")
        for s, sp in ((s256, 2 * sp512), (s512, sp512)):
            roi = soft_tissue_roi(s, s.shape[0] // 16)
            for n0 in (1e3, 3e3, 1e4, 1e5):
                t0 = time.perf_counter()
                d = simulate_ldct_slice(s, sp, n0, seed=0) - s
                dt = time.perf_counter() - t0
                label = f"{s.shape[0]}^2 ({sp:.3f} mm)"
                print(f"{label:22s} {n0:8.0e} {d[roi].std():7.1f} {d[roi].mean():+10.1f} {dt:7.2f}")


if __name__ == "__main__":
    main()
