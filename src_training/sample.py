"""Bundled sample chest CT cases and synthetic nodules.

The sample cases (``sample_data/lung1``, ``sample_data/lung2``) are real chest CT from the pyradiomics 3.0.1
test data (BSD-3-Clause), 20 axial slices each, built by ``scripts/make_sample_data.py`` (see
``sample_data/README.md``). ``lung1`` (one ~15 px nodule on 3 slices) is for training, ``lung2`` (a ~50 px
tumour on 11 slices) for evaluation; cases are never split by slice.

Two real lesions are far too few to train a detector, so :func:`src_training.nodules.insert_synthetic_nodules`
(re-exported here) pastes SYNTHETIC nodule-like blobs into lung parenchyma. They are an augmentation, not
clinical findings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .annotations import read_boxes_csv
from .errors import LidnetError
from .io import CTVolume, load_ct
from .nodules import insert_synthetic_nodules, lung_mask_2d  # noqa: F401 - re-exported (their home: nodules.py)

#: Default sample-data folder: ``<repo root>/sample_data`` (found relative to this file). The environment
#: variable ``LIDNET_SAMPLE_DATA`` overrides it; :func:`sample_dir` re-reads the variable at each call.
SAMPLE_DIR: Path = Path(os.environ.get("LIDNET_SAMPLE_DATA") or Path(__file__).resolve().parents[1] / "sample_data")


def sample_dir() -> Path:
    """The sample-data folder now: ``$LIDNET_SAMPLE_DATA`` if set, else :data:`SAMPLE_DIR`."""
    env = os.environ.get("LIDNET_SAMPLE_DATA")
    return Path(env) if env else SAMPLE_DIR


@dataclass
class SampleCase:
    """One bundled sample case.

    Attributes
    ----------
    name : str
        ``"lung1"`` or ``"lung2"``.
    ndct : CTVolume
        The normal-dose CT series (``<case>/ndct``), hu float32 (z, y, x) in HU.
    label : ndarray uint8 (z, y, x)
        Lesion mask (1 = lesion) on the same grid and z order as ``ndct.hu``.
    boxes : dict int -> ndarray float32 (n, 4)
        ``xyxy`` pixel boxes per z index (slices with lesions only), from ``<case>/boxes.csv``.
    """

    name: str
    ndct: CTVolume
    label: np.ndarray
    boxes: dict[int, np.ndarray]


def sample_case_names() -> list[str]:
    """Names of the sample cases available (sub-folders of :func:`sample_dir` with an ``ndct`` series),
    sorted; empty when the folder is missing."""
    root = sample_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "ndct").is_dir())


def load_sample_case(name: str) -> SampleCase:
    """Load a sample case: CT series, label map and boxes.

    Parameters
    ----------
    name : str
        A name from :func:`sample_case_names` (``"lung1"``, ``"lung2"``).

    Returns
    -------
    SampleCase

    Raises
    ------
    LidnetError
        The case folder, its ``ndct`` series, ``label.nrrd`` or ``boxes.csv`` is missing or does not match
        (the message names the folder and how to rebuild it).
    """
    root = sample_dir()
    folder = root / name
    rebuild = "Rebuild it with: python scripts/make_sample_data.py <extracted pyradiomics-3.0.1 sdist>."
    if not (folder / "ndct").is_dir():
        available = ", ".join(sample_case_names()) or "none"
        raise LidnetError(
            f"Sample case '{name}' not found: {folder / 'ndct'} does not exist (available: {available}; sample "
            f"folder {root}, override with LIDNET_SAMPLE_DATA). {rebuild}"
        )
    for f in ("label.nrrd", "boxes.csv"):
        if not (folder / f).is_file():
            raise LidnetError(f"Sample case '{name}' is incomplete: {folder / f} is missing. {rebuild}")
    ndct = load_ct(folder / "ndct")
    lab_vol = load_ct(folder / "label.nrrd")
    label = (lab_vol.hu > 0.5).astype(np.uint8)
    if label.shape != ndct.hu.shape:
        raise LidnetError(
            f"Sample case '{name}': label {label.shape} and CT {ndct.hu.shape} differ in shape in {folder}. {rebuild}"
        )
    boxes = read_boxes_csv(folder / "boxes.csv", ndct.hu.shape)
    return SampleCase(name=name, ndct=ndct, label=label, boxes=boxes)
