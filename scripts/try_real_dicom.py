"""Open every real DICOM file of pydicom's own test collection with ``load_ct`` and compare the HU with
pydicom's rescale (``pydicom.pixels.apply_rescale``): a check on files the project did not build itself.

Run: ``.venv/bin/python scripts/try_real_dicom.py`` (no download: the files come with pydicom). Prints one
line per file / folder: LOADED (shape, spacing, max |load_ct - pydicom| HU, notices) or REFUSED (the
project's message); a CRASH line (any other exception) would be a bug. Results: docs/reliability.md,
"Real files tried".
"""

from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import pydicom
from pydicom.pixels import apply_rescale

from src_training.errors import LidnetError
from src_training.io import load_ct


def main() -> int:
    warnings.filterwarnings("ignore")
    base = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    files = sorted(glob.glob(base + "/*.dcm")) + [base + "/dicomdirtests/DICOMDIR"]
    n_crash = 0
    for f in files:
        name = os.path.relpath(f, base)
        try:
            ds = pydicom.dcmread(f, force=True)
            modality, n_frames = str(ds.get("Modality", "?")), int(ds.get("NumberOfFrames", 1) or 1)
        except Exception:  # noqa: BLE001 - reported through load_ct below
            ds, modality, n_frames = None, "unreadable", 0
        try:
            vol = load_ct(f)
        except LidnetError as exc:
            print(f"REFUSED {name} [{modality}, {n_frames} fr]: {str(exc)[:230]}")
            continue
        except Exception as exc:  # noqa: BLE001
            n_crash += 1
            print(f"CRASH   {name}: {type(exc).__name__}: {exc}")
            continue
        diff = ""
        try:
            ref = apply_rescale(ds.pixel_array.astype(np.float64), ds) if n_frames == 1 else None
        except Exception:  # noqa: BLE001
            ref = None
        if ref is not None and ref.shape == vol.hu.shape[1:]:
            diff = f" max|load_ct - pydicom rescale| = {np.max(np.abs(vol.hu[0] - ref)):.3g} HU"
        spacing = tuple(round(s, 3) for s in vol.spacing)
        print(f"LOADED  {name} [{modality}, {n_frames} fr] shape {vol.shape} spacing {spacing}{diff}; "
              f"notices: {vol.metadata.get('warnings')}")
    for d in sorted(glob.glob(base + "/dicomdirtests/**/", recursive=True)):
        try:
            vol = load_ct(d)
            print(f"LOADED  folder {os.path.relpath(d, base)} shape {vol.shape}")
        except LidnetError as exc:
            print(f"REFUSED folder {os.path.relpath(d, base)}: {str(exc)[:200]}")
    return 1 if n_crash else 0


if __name__ == "__main__":
    raise SystemExit(main())
