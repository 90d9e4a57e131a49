"""The data set manifest: its JSON layout, reading, writing and the patient split.

Layout (written by :func:`src_training.data.index.index_dataset`)::

    {"format": "lidnet-dataset", "version": 1, "root": "/abs/folder",
     "annotations": {"path": ..., "format": "voc|csv|coco|luna16|boxes.csv|none"},
     "split": {"seed": 0, "val": 0.2, "test": 0.2, "patient_rule": "file"},
     "cases": [{"id", "patient_id", "series_path" (relative to root), "series_uid", "kind": "dicom"|"file",
                "shape": [z, y, x], "spacing": [z, y, x], "annotation", "n_boxes",
                "boxes": [[slice, x0, y0, x1, y1, label], ...], "split": "train"|"val"|"test"}]}

Patients (never slices or series of one patient) are split into train/val/test (:func:`split_patients`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..checkpoint import atomic_write_text
from ..errors import ConfigError

MANIFEST_FORMAT = "lidnet-dataset"
MANIFEST_VERSION = 1
SPLITS = ("train", "val", "test")
ANNOTATION_FORMATS = ("voc", "csv", "coco", "luna16")


@dataclass
class SeriesRecord:
    """One CT series found by :func:`scan_series` (geometry from headers, no pixel data).

    Attributes
    ----------
    case_id : str
        Unique id in the data set (SeriesInstanceUID for DICOM, relative path without extension for files).
    patient_id : str
    series_path : str
        Folder (DICOM) or file, relative to the scanned root (POSIX separators).
    series_uid : str
        SeriesInstanceUID (DICOM) or the file name without extension (LUNA16's ``seriesuid``).
    kind : str
        ``"dicom"`` or ``"file"``.
    shape : (Z, H, W) ints
    spacing : (z, y, x) mm
    origin : (x, y, z) mm, centre of the first voxel (SimpleITK / :class:`src_training.io.CTVolume`)
    direction : 9 floats, SimpleITK direction cosines
    sop_uids : list of str
        SOPInstanceUID per slice in the z order of :func:`src_training.io.load_ct` (DICOM only).
    file_names : list of str
        DICOM file paths relative to the root, in the same z order (DICOM only).
    """

    case_id: str
    patient_id: str
    series_path: str
    series_uid: str
    kind: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    sop_uids: list[str] = field(default_factory=list)
    file_names: list[str] = field(default_factory=list)



# ----------------------------------------------------------------------------------------------- split


def split_patients(
    patient_ids: Sequence[str], val: float = 0.2, test: float = 0.2, seed: int = 0
) -> dict[str, str]:
    """Assign every patient to ``train``, ``val`` or ``test``.

    The unique ids are sorted, shuffled with ``numpy.random.default_rng(seed)``; the first
    ``round(test * n)`` go to test, the next ``round(val * n)`` to val, the rest to train (at least one
    patient stays in train). Deterministic for a given set of ids, fractions and seed.

    Raises
    ------
    ConfigError
        Fractions outside [0, 1) or summing to 1 or more.
    """
    val, test = float(val), float(test)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ConfigError(f"val and test fractions must be in [0, 1) with val + test < 1, got {val}, {test}.")
    ids = sorted(set(str(p) for p in patient_ids))
    order = np.random.default_rng(int(seed)).permutation(len(ids))
    n = len(ids)
    n_test = int(round(test * n))
    n_val = int(round(val * n))
    while n_test + n_val >= n and n_test + n_val > 0:
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    out = {}
    for rank, i in enumerate(order):
        out[ids[i]] = "test" if rank < n_test else ("val" if rank < n_test + n_val else "train")
    return out



def write_manifest(manifest: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a manifest as indented JSON, atomically (:func:`src_training.checkpoint.atomic_write_text`)."""
    return atomic_write_text(path, json.dumps(manifest, indent=1) + "\n")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a manifest written by :func:`write_manifest`.

    Raises
    ------
    ConfigError
        Missing/unreadable file, not a lidnet-dataset manifest, a newer version, or a case without
        ``id``, ``series_path``, ``shape``, ``boxes`` or a valid ``split``.
    """
    p = Path(path).expanduser()
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"Data set manifest {p} not found; create it with 'lidnet dataset index'.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"Cannot read the data set manifest {p}: {exc}.") from exc
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ConfigError(f"{p} is not a napari-lidnet data set manifest (format '{MANIFEST_FORMAT}').")
    if int(doc.get("version", 0)) > MANIFEST_VERSION:
        raise ConfigError(f"{p} has manifest version {doc.get('version')}; this napari-lidnet reads up to "
                          f"{MANIFEST_VERSION}. Update napari-lidnet.")
    for i, c in enumerate(doc.get("cases") or []):
        if not isinstance(c, dict) or any(k not in c for k in ("id", "series_path", "shape", "boxes", "split")) \
                or c["split"] not in SPLITS:
            raise ConfigError(f"{p}: case {i} is incomplete (needs id, series_path, shape, boxes, split train/val/test).")
    if not doc.get("cases"):
        raise ConfigError(f"{p} lists no cases.")
    return doc


