"""Peak memory of opening a large CT series: 512 x 512 x 600 (600 MiB as float32).

Writes a synthetic DICOM series (int16, one file per slice: the project's ``write_dicom_series`` makes
the first slice, pydicom copies it with new positions/UIDs/pixels) to a temporary folder, then in a fresh
child process loads it with ``load_ct`` and reports:

- the peak of Python/numpy allocations (tracemalloc) and the peak resident memory growth (VmHWM - VmRSS
  before loading, Linux), both against one float32 copy of the volume;
- for the napari reader's lazy path (``load_ct(lazy=True)``): the time and memory to open it and to decode
  one slice.

Usage: ``.venv/bin/python benchmarks/large_volume.py [--slices 600] [--size 512] [--keep DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def write_series(folder: Path, nz: int, n: int) -> None:
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    from src_training.io import write_dicom_series

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) ** 2 + (xx - n / 2) ** 2) < (0.4 * n) ** 2
    first = write_dicom_series(np.where(body, 40.0, -1000.0)[None], folder / "tmpl", spacing=(1.0, 0.7, 0.7),
                               series_description="large volume benchmark", image_type=("ORIGINAL", "PRIMARY"))[0]
    ds = pydicom.dcmread(first)
    shutil.rmtree(folder / "tmpl")
    out = folder / "series"
    out.mkdir()
    for k in range(nz):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [0, 0, float(k)]
        hu = np.where(body, rng.normal(40, 20, size=(n, n)), -1000.0)
        ds.PixelData = np.clip(np.rint(hu) + 1024, -32768, 32767).astype("<i2").tobytes()
        ds.save_as(out / f"IM_{k + 1:05d}.dcm")


def measure(folder: Path) -> dict:
    import tracemalloc

    import numpy as np

    from src_training.io import load_ct

    rss0 = _status_kib("VmRSS")
    tracemalloc.start()
    t0 = time.perf_counter()
    vol = load_ct(folder)
    t_load = time.perf_counter() - t0
    py_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    hwm = _status_kib("VmHWM")
    one = vol.hu.nbytes
    res = {
        "shape": list(vol.hu.shape),
        "float32_volume_MiB": round(one / 2**20, 1),
        "load_s": round(t_load, 2),
        "tracemalloc_peak_MiB": round(py_peak / 2**20, 1),
        "tracemalloc_peak_x_volume": round(py_peak / one, 3),
        "rss_growth_peak_MiB": round((hwm - rss0) / 1024, 1),
        "rss_growth_peak_x_volume": round((hwm - rss0) * 1024 / one, 3),
        "hu_mean_body": round(float(vol.hu[vol.hu.shape[0] // 2][vol.hu[0] > -500].mean()), 1),
    }
    del vol
    t0 = time.perf_counter()
    lazy = load_ct(folder, lazy=True)
    res["lazy_open_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    np.asarray(lazy.hu[123])
    res["lazy_one_slice_s"] = round(time.perf_counter() - t0, 3)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=600)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--keep", type=Path, default=None, help="write the series here and keep it")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure)))
        return
    base = args.keep or Path(tempfile.mkdtemp(prefix="lidnet-large-"))
    try:
        t0 = time.perf_counter()
        write_series(base, args.slices, args.size)
        print(f"wrote {args.slices} slices of {args.size}x{args.size} in {time.perf_counter() - t0:.1f} s to {base}")
        out = subprocess.run([sys.executable, __file__, "--measure", str(base / "series")], capture_output=True,
                             text=True, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if out.returncode != 0:
            print(out.stderr[-3000:])
            sys.exit(out.returncode)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        for k, v in res.items():
            print(f"{k:28s} {v}")
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
