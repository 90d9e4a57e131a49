#!/usr/bin/env python
"""Build ``sample_data/`` from the chest CT test cases of the pyradiomics 3.0.1 source distribution.

Usage::

    python scripts/make_sample_data.py /path/to/pyradiomics-3.0.1 [--out sample_data]

The argument is the extracted sdist (``pyradiomics-3.0.1.tar.gz``, sha256
47c57f441d6cb7973fa3b2ea48d3948df78e3348e1c69e1e2ff19001601fc2f5, BSD-3-Clause). For each case
(``lung1``, ``lung2``) it reads ``data/<case>_image.nrrd`` (int16 HU) and ``data/<case>_label.nrrd``, keeps
20 consecutive axial slices containing all lesion slices, and writes

* ``<out>/<case>/ndct/IM_000NN.dcm``: a CT DICOM series (``src_training.io.write_dicom_series``,
  ImageType ORIGINAL\\PRIMARY, deterministic UIDs, fixed dates),
* ``<out>/<case>/label.nrrd``: the label cropped to the same slices, same geometry (uint8),
* ``<out>/<case>/boxes.csv``: one box per 8-connected lesion component per slice
  (``src_training.annotations``), slice indices relative to the stored series in loaded z order,
* ``<out>/LICENSE-pyradiomics.txt`` (copy of the sdist's LICENSE.txt).

The result is re-loaded and checked (HU equal, geometry, boxes). ``sample_data/README.md`` documents the
same; it is written by hand, not by this script. Output is deterministic (same bytes on every run).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from src_training.annotations import boxes_from_label_volume, read_boxes_csv, write_boxes_csv  # noqa: E402
from src_training.io import load_ct, volume_from_array, write_dicom_series, write_volume  # noqa: E402

N_KEEP = 20
CASES = {
    # case: (first slice kept, human description)
    "lung1": {"first": 24, "patient": "PYRADIOMICS-LUNG1", "role": "training"},
    "lung2": {"first": 10, "patient": "PYRADIOMICS-LUNG2", "role": "evaluation"},
}
FIXED_DATE = "20200101"  # pyradiomics 3.0.1 release year; the source files carry no acquisition date.
FIXED_TIME = "000000"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_case(sdist: Path, out: Path, case: str, first: int, patient: str) -> dict:
    img = sitk.ReadImage(str(sdist / "data" / f"{case}_image.nrrd"))
    lab = sitk.ReadImage(str(sdist / "data" / f"{case}_label.nrrd"))
    hu = sitk.GetArrayFromImage(img)
    label = sitk.GetArrayFromImage(lab)
    assert hu.dtype == np.int16, hu.dtype
    assert hu.shape == label.shape
    assert np.allclose(img.GetSpacing(), lab.GetSpacing()) and np.allclose(img.GetOrigin(), lab.GetOrigin())
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    # The z order of the loaded DICOM series is increasing position along the slice normal; the nrrd's
    # direction must be right-handed so that array order == loaded order.
    assert np.allclose(np.cross(direction[:, 0], direction[:, 1]), direction[:, 2]), "left-handed volume"
    lesion_z = np.nonzero(label.reshape(label.shape[0], -1).any(axis=1))[0]
    last = first + N_KEEP
    assert first <= lesion_z.min() and lesion_z.max() < last <= hu.shape[0], (case, lesion_z, first, last)
    sx, sy, sz = img.GetSpacing()
    spacing = (sz, sy, sx)
    origin = np.asarray(img.GetOrigin()) + direction[:, 2] * sz * first
    hu_c = hu[first:last]
    lab_c = (label[first:last] != 0).astype(np.uint8)

    case_dir = out / case
    case_dir.mkdir(parents=True, exist_ok=True)
    reference = volume_from_array(
        hu_c,
        spacing,
        origin,
        direction.ravel(),
        metadata={
            "PatientID": patient,
            "PatientName": f"PYRADIOMICS^{case.upper()}",
            "StudyDescription": f"pyradiomics 3.0.1 test case {case} (chest CT)",
            "StudyDate": FIXED_DATE,
            "StudyTime": FIXED_TIME,
        },
    )
    files = write_dicom_series(
        hu_c,
        case_dir / "ndct",
        spacing=spacing,
        reference=reference,
        series_description=f"pyradiomics {case} chest CT (NDCT)",
        overwrite=True,
        origin=tuple(origin),
        direction=tuple(direction.ravel()),
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        series_number=1,
        uid_entropy=f"napari-lidnet sample {case} pyradiomics-3.0.1",
        extra_tags={
            "SeriesDate": FIXED_DATE,
            "SeriesTime": FIXED_TIME,
            "ContentDate": FIXED_DATE,
            "ContentTime": FIXED_TIME,
            "BodyPartExamined": "CHEST",
            "ImageComments": f"pyradiomics 3.0.1 data/{case}_image.nrrd slices {first}..{last - 1} (BSD-3-Clause)",
        },
    )
    write_volume(lab_c, case_dir / "label.nrrd", spacing, origin=tuple(origin), direction=tuple(direction.ravel()),
                 overwrite=True)
    boxes = boxes_from_label_volume(lab_c)
    write_boxes_csv(boxes, case_dir / "boxes.csv", overwrite=True)

    # Check what was written.
    vol = load_ct(case_dir / "ndct")
    assert vol.hu.shape == hu_c.shape, vol.hu.shape
    assert np.array_equal(vol.hu, hu_c.astype(np.float32)), "HU differ after the DICOM round trip"
    assert np.allclose(vol.spacing, spacing, atol=1e-4), (vol.spacing, spacing)
    assert np.allclose(vol.origin, origin, atol=1e-3), (vol.origin, origin)
    lab_back = sitk.GetArrayFromImage(sitk.ReadImage(str(case_dir / "label.nrrd")))
    assert np.array_equal(lab_back, lab_c)
    back = read_boxes_csv(case_dir / "boxes.csv", lab_c.shape)
    assert back.keys() == boxes.keys() and all(np.array_equal(back[z], boxes[z]) for z in boxes)
    return {
        "case": case,
        "kept": (first, last - 1),
        "lesion_slices_original": (int(lesion_z.min()), int(lesion_z.max())),
        "lesion_slices_stored": sorted(boxes),
        "n_boxes": sum(len(b) for b in boxes.values()),
        "files": len(files),
        "spacing": spacing,
        "hu_range": (int(hu_c.min()), int(hu_c.max())),
        "image_sha256": sha256(sdist / "data" / f"{case}_image.nrrd"),
        "label_sha256": sha256(sdist / "data" / f"{case}_label.nrrd"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sdist", type=Path, help="extracted pyradiomics-3.0.1 source distribution folder")
    ap.add_argument("--out", type=Path, default=REPO / "sample_data", help="output folder (default: sample_data/)")
    args = ap.parse_args(argv)
    if not (args.sdist / "data" / "lung1_image.nrrd").is_file():
        ap.error(f"{args.sdist} does not look like the extracted pyradiomics 3.0.1 sdist (no data/lung1_image.nrrd)")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.sdist / "LICENSE.txt", args.out / "LICENSE-pyradiomics.txt")
    for case, info in CASES.items():
        summary = make_case(args.sdist, args.out, case, info["first"], info["patient"])
        print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
