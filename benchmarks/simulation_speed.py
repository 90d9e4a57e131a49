"""Speed and noise level of the low-dose simulation (src_training.simulation), measured side by side.

    .venv/bin/python benchmarks/simulation_speed.py [--slices 8] [--repeat 2]

1. Speed on the bundled lung2 case at its native 512 x 512 px: the project's batched-torch simulator (default
   geometry: 1000 views, 1 mm bins, Hann FBP; ``noise_only``) per slice for 1 slice and for ``--slices`` slices
   in one call, against scikit-image's ``radon`` + ``iradon`` (the previous implementation's projector) at the
   same number of views on the same slice. Interleaved repetitions, medians; prints the ratio.
2. Noise: the soft-tissue sigma (HU) of the added noise on the middle slices of lung1 and lung2 at N0 = 1000 and
   3000 for each FBP window, and the analytic value at the centre of a 200 mm water disk.

Never a timed test: the numbers depend on the machine (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src_training import simulation as sim  # noqa: E402
from src_training.sample import load_sample_case  # noqa: E402


def _median_times(fns, repeat):
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--slices", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    from skimage.transform import iradon, radon

    c = load_sample_case("lung2")
    hu, sp = c.ndct.hu, c.ndct.spacing[1]
    z = hu.shape[0] // 2
    views = sim.DEFAULT_GEOMETRY.n_views
    theta = np.linspace(0.0, 180.0, views, endpoint=False)
    mu = sim.hu_to_mu(hu[z])
    yy, xx = np.mgrid[:512, :512]
    mu_c = np.where((yy - 255.5) ** 2 + (xx - 255.5) ** 2 <= 256**2, mu, 0.0)

    def skimage_pair():
        s = radon(mu_c, theta=theta, circle=True)
        iradon(s, theta=theta, circle=True, filter_name="hann")

    vol = hu[: args.slices]
    t = _median_times({
        "torch, 1 slice": lambda: sim.simulate_ldct(hu[z], sp, 1000, seed=0),
        f"torch, {len(vol)} slices in one call": lambda: sim.simulate_ldct(vol, sp, 1000, seed=0),
        "skimage radon + iradon (no noise, no padding)": skimage_pair,
    }, args.repeat)
    per = {k: v / (len(vol) if "slices" in k else 1) for k, v in t.items()}
    print(f"Speed, lung2 512x512, {views} views (median of {args.repeat}, seconds per slice):")
    base = per["skimage radon + iradon (no noise, no padding)"]
    for k, v in per.items():
        print(f"  {k:48s} {v:7.2f} s/slice   x{base / v:.2f} vs skimage")
    print("  (the torch simulator also pads lung2 to 736 px to hold the couch, which scikit-image here does not)")

    print("\nSoft-tissue noise sigma (HU) of the added noise, middle slice, default geometry except the window:")
    print(f"  {'case':6s} {'window':12s} {'N0=1000':>8s} {'N0=3000':>8s}")
    for name in ("lung1", "lung2"):
        cc = load_sample_case(name)
        s2 = cc.ndct.hu[cc.ndct.hu.shape[0] // 2]
        for filt in sim.FILTERS:
            vals = [sim.soft_tissue_noise_sigma(s2, sim.simulate_ldct_slice(s2, cc.ndct.spacing[1], n0, seed=0,
                                                                              filter_name=filt)) for n0 in (1000, 3000)]
            print(f"  {name:6s} {filt:12s} {vals[0]:8.1f} {vals[1]:8.1f}")
    for n0 in (1000, 3000):
        print(f"  analytic, centre of a 200 mm water disk, hann, N0={n0}: "
              f"{sim.predicted_noise_sigma_hu(sim.MU_WATER_PER_MM * 200, n0):.1f} HU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
