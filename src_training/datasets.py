"""Real-study training sets: series index, patient split, JSON manifest, streaming slices.

A training set on disk is a folder of CT series (DICOM folders, NIfTI/NRRD/MHA files) plus lesion
annotations in one of the formats of :mod:`src_training.annotations` (PASCAL VOC XML per slice as in TCIA
Lung-PET-CT-Dx, a box CSV, COCO JSON, LUNA16 world-mm nodules). :func:`index_dataset` scans the folder
(headers only, no pixel data), attaches the annotations to every series as pixel boxes, groups series by
patient, splits the PATIENTS (never slices or series of one patient) into train/val/test and writes a JSON
manifest atomically::

    {"format": "lidnet-dataset", "version": 1, "root": "/abs/folder",
     "annotations": {"path": ..., "format": "voc|csv|coco|luna16|boxes.csv|none"},
     "split": {"seed": 0, "val": 0.2, "test": 0.2, "patient_rule": "file"},
     "cases": [{"id", "patient_id", "series_path" (relative to root), "series_uid", "kind": "dicom"|"file",
                "shape": [z, y, x], "spacing": [z, y, x], "annotation", "n_boxes",
                "boxes": [[slice, x0, y0, x1, y1, label], ...], "split": "train"|"val"|"test"}]}

Training configurations use it as ``train_data = ["manifest:/path/dataset.json#train"]`` (``#val``,
``#test``, ``#all``; no fragment = ``#train``); :func:`src_training.data.prepare_cases` expands such a
source into one source per case (``manifest:/path/dataset.json#case=<id>``).

:class:`StreamingSliceDataset` serves the same items as :class:`src_training.data.SliceDataset` while
keeping only an index in memory: NDCT and simulated LDCT of every case are cached once as float32 ``.npy``
files and read slice by slice through ``numpy`` memory maps.

Patient grouping: DICOM series by their PatientID (0010,0020); volume files (and DICOM series without a
PatientID) by ``patient_rule``: ``"file"`` (default: every file is its own patient, its name without
extension, e.g. LUNA16's one scan per patient), ``"folder"`` (the name of the folder holding the file or
series), or ``"regex:<pattern>"`` (the first group of ``re.search(pattern, relative path)``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .annotations import (
    SliceAnnotations,
    read_boxes_table,
    read_coco_json,
    read_luna16_csv,
    read_voc_annotations,
    table_rows_to_annotations,
    clip_boxes_to_image,
    world_spheres_to_boxes,
)
from .checkpoint import atomic_write_text
from .data import SliceDataset, boxes_csv_for
from .errors import ConfigError, LidnetError
from .windowing import DEFAULT_HU_RANGE

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


# ------------------------------------------------------------------------------------------------ scan


def _dicom_record(root: Path, folder: Path, files: Sequence[str], uid: str, modality: str) -> SeriesRecord | None:
    """Geometry, PatientID and SOPInstanceUIDs of one DICOM series from its headers (pydicom,
    ``stop_before_pixels=True``), slices sorted as :func:`src_training.io.load_ct` sorts them (increasing
    position along ``row x column``; InstanceNumber without geometry). None for non-CT series."""
    import pydicom

    if modality and modality.upper() != "CT":
        return None
    heads = []
    for f in files:
        try:
            heads.append((f, pydicom.dcmread(f, stop_before_pixels=True)))
        except Exception as exc:  # noqa: BLE001
            raise LidnetError(f"Cannot read the DICOM header of {f} ({type(exc).__name__}: {exc}).") from exc
    first = heads[0][1]
    if all("ImagePositionPatient" in ds and "ImageOrientationPatient" in ds for _, ds in heads):
        iop = np.asarray([float(v) for v in first.ImageOrientationPatient], dtype=np.float64)
        r, c = iop[:3], iop[3:6]
        n = np.cross(r, c)
        pos = np.array([np.dot(n, [float(v) for v in ds.ImagePositionPatient]) for _, ds in heads])
        order = np.argsort(pos, kind="stable")
        heads = [heads[i] for i in order]
        dz = float(np.median(np.diff(pos[order]))) if len(heads) > 1 else float(first.get("SliceThickness", 1) or 1)
        origin = tuple(float(v) for v in heads[0][1].ImagePositionPatient)
        direction = tuple(float(v) for v in np.stack([r, c, n], axis=1).ravel())
    else:
        heads.sort(key=lambda fd: int(fd[1].get("InstanceNumber", 0) or 0))
        dz = float(first.get("SliceThickness", 1.0) or 1.0)
        origin = (0.0, 0.0, 0.0)
        direction = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    ps = [float(v) for v in first.get("PixelSpacing", [1.0, 1.0])]
    rel = folder.relative_to(root).as_posix()
    return SeriesRecord(
        case_id=uid,
        patient_id=str(first.get("PatientID", "") or "").strip(),
        series_path=rel,
        series_uid=uid,
        kind="dicom",
        shape=(len(heads), int(first.get("Rows", 0)), int(first.get("Columns", 0))),
        spacing=(dz, ps[0], ps[1]),
        origin=origin,  # type: ignore[arg-type]
        direction=direction,
        sop_uids=[str(ds.get("SOPInstanceUID", "")) for _, ds in heads],
        file_names=[Path(f).relative_to(root).as_posix() for f, _ in heads],
    )


def _file_record(root: Path, path: Path) -> SeriesRecord:
    """Geometry of a NIfTI/NRRD/MHA file from its header (SimpleITK ``ReadImageInformation``)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except Exception as exc:  # noqa: BLE001
        raise LidnetError(f"Cannot read the header of {path}: it is not a readable volume ({exc}).") from exc
    size = reader.GetSize()
    sp = reader.GetSpacing()
    if len(size) == 2:
        size, sp = (*size, 1), (*sp, 1.0)
    rel = path.relative_to(root).as_posix()
    stem = _strip_volume_suffix(path.name)
    return SeriesRecord(
        case_id=_strip_volume_suffix(rel),
        patient_id="",
        series_path=rel,
        series_uid=stem,
        kind="file",
        shape=(int(size[2]), int(size[1]), int(size[0])),
        spacing=(float(sp[2]), float(sp[1]), float(sp[0])),
        origin=tuple(float(v) for v in reader.GetOrigin())[:3],  # type: ignore[arg-type]
        direction=tuple(float(v) for v in reader.GetDirection()),
    )


def _strip_volume_suffix(name: str) -> str:
    from .io import VOLUME_SUFFIXES

    low = name.lower()
    for s in VOLUME_SUFFIXES:
        if low.endswith(s):
            return name[: -len(s)]
    return name


def _patient_from_rule(rule: str, rec: SeriesRecord) -> str:
    rel = rec.series_path
    if rule == "file":
        return _strip_volume_suffix(Path(rel).name)
    if rule == "folder":
        parent = Path(rel).parent if rec.kind == "file" else Path(rel)
        return parent.name or "."
    if rule.startswith("regex:"):
        m = re.search(rule[6:], rel)
        if not m or not m.groups():
            raise ConfigError(
                f"patient_rule {rule!r} does not match '{rel}' (it needs one group that captures the patient id)."
            )
        return m.group(1)
    raise ConfigError(f"patient_rule must be 'file', 'folder' or 'regex:<pattern>', got {rule!r}.")


def scan_series(root: str | os.PathLike, patient_rule: str = "file") -> list[SeriesRecord]:
    """Find every CT series under ``root`` (recursively; hidden folders skipped).

    DICOM folders are listed with :func:`src_training.io.list_series` (several series per folder allowed;
    non-CT series such as PET are skipped with a warning); ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``,
    ``.mha``, ``.mhd`` files are volumes. Only headers are read.

    Parameters
    ----------
    root : path-like
        Data folder.
    patient_rule : str
        How files (and DICOM series without PatientID) get a patient id; see the module docstring.

    Returns
    -------
    list of SeriesRecord
        Sorted by ``series_path`` then ``series_uid``; ``case_id`` unique.

    Raises
    ------
    ConfigError
        ``root`` is not a folder, it holds no CT series, or ``patient_rule`` is invalid.
    LidnetError
        An unreadable header.
    """
    from .io import _is_volume_path, list_series

    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder. Give the folder that holds the CT series of the data set.")
    if patient_rule.startswith("regex:"):
        try:
            if re.compile(patient_rule[6:]).groups < 1:
                raise re.error("no group")
        except re.error as exc:
            raise ConfigError(f"patient_rule {patient_rule!r} is not a regular expression with one group ({exc}).")
    elif patient_rule not in ("file", "folder"):
        raise ConfigError(f"patient_rule must be 'file', 'folder' or 'regex:<pattern>', got {patient_rule!r}.")
    records: list[SeriesRecord] = []
    skipped: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        folder = Path(dirpath)
        others = False
        for name in sorted(filenames):
            p = folder / name
            if name.startswith("."):
                continue
            if _is_volume_path(p):
                records.append(_file_record(root, p))
            elif not name.lower().endswith((".xml", ".json", ".csv", ".txt", ".raw", ".zraw", ".npy", ".npz")):
                others = True
        if others:
            for s in list_series(folder):
                rec = _dicom_record(root, folder, s.files, s.series_uid, s.modality)
                if rec is None:
                    skipped.append(f"{folder.relative_to(root).as_posix()} ({s.modality})")
                else:
                    records.append(rec)
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} non-CT series: {', '.join(skipped[:5])}.", UserWarning, stacklevel=2)
    if not records:
        raise ConfigError(f"No CT series (DICOM, NIfTI, NRRD, MHA) found under {root}.")
    records.sort(key=lambda r: (r.series_path, r.series_uid))
    seen: dict[str, int] = {}
    for rec in records:
        if not rec.patient_id:
            rec.patient_id = _patient_from_rule(patient_rule, rec)
        k = seen.get(rec.case_id, 0)
        seen[rec.case_id] = k + 1
        if k:
            rec.case_id = f"{rec.case_id}~{k}"
    return records


# ----------------------------------------------------------------------------------------- annotations


def detect_annotation_format(path: str | os.PathLike) -> str:
    """Guess the format of an annotation source: a folder (or ``.xml``) = ``"voc"``, ``.json`` = ``"coco"``,
    a ``.csv`` with ``coordX`` in its header = ``"luna16"``, another ``.csv`` = ``"csv"``.

    Raises
    ------
    ConfigError
        Missing path or unknown extension.
    """
    p = Path(path)
    if p.is_dir() or p.suffix.lower() == ".xml":
        return "voc"
    if not p.is_file():
        raise ConfigError(f"Annotation source {p} not found.")
    suffix = p.suffix.lower()
    if suffix == ".json":
        return "coco"
    if suffix == ".csv":
        with open(p, encoding="utf-8-sig", errors="replace") as fh:
            header = fh.readline().lower()
        return "luna16" if "coordx" in header else "csv"
    raise ConfigError(
        f"Cannot tell the annotation format of {p}: use a VOC folder, a .csv, a COCO .json, or give --format "
        f"({', '.join(ANNOTATION_FORMATS)})."
    )


def _default_coco_key(file_name: str) -> tuple[str, int] | None:
    """``<series>/<z>.<ext>`` or ``<series>_<z>.<ext>`` -> (series key, z); None otherwise."""
    p = Path(file_name.replace("\\", "/"))
    stem = _strip_volume_suffix(p.name).rsplit(".", 1)[0]
    if stem.isdigit() and p.parent.name:
        return p.parent.name, int(stem)
    m = re.fullmatch(r"(.+?)[_-](?:z|slice)?(\d+)", stem)
    if m:
        return m.group(1), int(m.group(2))
    return None


def attach_annotations(
    records: Sequence[SeriesRecord],
    root: str | os.PathLike,
    annotations: str | os.PathLike | None,
    fmt: str | None = None,
    label_map: Mapping[str, int] | None = None,
) -> tuple[dict[str, SliceAnnotations], str]:
    """Boxes of every series from one annotation source.

    Matching rules per format:

    - ``voc``: XML files named ``<SOPInstanceUID>.xml`` anywhere under the folder -> the slice with that
      SOPInstanceUID (DICOM series only).
    - ``csv``: a ``series_uid`` column matches SeriesInstanceUIDs (or file names without extension); a
      ``file`` column matches the series path relative to ``root`` (or its last component); without either,
      the data set must hold one series.
    - ``coco``: ``file_name`` matches, in order, a SOPInstanceUID (name without extension), a DICOM file
      path relative to ``root`` (or its base name), or ``<series>/<z>.png`` / ``<series>_<z>.png`` where
      ``<series>`` is a SeriesInstanceUID, a file name without extension, or a series folder name.
    - ``luna16``: ``seriesuid`` matches SeriesInstanceUIDs or file names without extension (LUNA16's
      ``<seriesuid>.mhd``); spheres become boxes with :func:`world_spheres_to_boxes`.
    - None: ``boxes.csv`` inside each DICOM folder or ``<file>.boxes.csv`` beside each file, when present.

    Annotations that match no series are reported in a warning (count and first names).

    Returns
    -------
    (dict case_id -> SliceAnnotations, format used)

    Raises
    ------
    ConfigError
        Unknown format, or annotations matching no series at all.
    LidnetError
        Invalid boxes (file, line/box named).
    """
    root = Path(root).expanduser().resolve()
    out = {r.case_id: SliceAnnotations() for r in records}
    if annotations is None:
        for r in records:
            p = boxes_csv_for(root / r.series_path)
            if p.is_file():
                _, rows = read_boxes_table(p, label_map)
                out[r.case_id] = table_rows_to_annotations(rows.get("", []), r.shape, str(p))
        return out, "boxes.csv"
    ann = Path(annotations).expanduser().resolve()
    fmt = (fmt or detect_annotation_format(ann)).lower()
    if fmt not in ANNOTATION_FORMATS:
        raise ConfigError(f"Unknown annotation format {fmt!r}: choose {', '.join(ANNOTATION_FORMATS)}.")
    unmatched: list[str] = []
    by_uid: dict[str, SeriesRecord] = {}
    for r in records:
        by_uid.setdefault(r.series_uid, r)
        if r.kind == "file":
            by_uid.setdefault(_strip_volume_suffix(Path(r.series_path).name), r)
    if fmt == "voc":
        files = sorted(ann.rglob("*.xml")) if ann.is_dir() else [ann]
        known = set()
        for r in records:
            if r.kind != "dicom":
                continue
            uids = set(r.sop_uids)
            mine = [f for f in files if f.stem in uids]
            known.update(mine)
            if mine:
                out[r.case_id] = read_voc_annotations(mine, r.sop_uids, r.shape, label_map)
        unmatched = [f.name for f in files if f not in known]
    elif fmt == "csv":
        kind, rows = read_boxes_table(ann, label_map)
        for key, key_rows in rows.items():
            if kind is None:
                if len(records) != 1:
                    raise ConfigError(
                        f"{ann} has no series_uid or file column but the data set holds {len(records)} series; add "
                        "a series_uid (or file) column saying which series each box belongs to."
                    )
                rec = records[0]
            elif kind == "series":
                rec = by_uid.get(key)
            else:
                norm = key.replace("\\", "/").strip("/")
                rec = next((r for r in records if r.series_path == norm), None) or next(
                    (r for r in records if Path(r.series_path).name == Path(norm).name), None
                )
            if rec is None:
                unmatched.append(key)
                continue
            got = table_rows_to_annotations(key_rows, rec.shape, f"{ann} ({key or rec.series_path})")
            for z in got.boxes:
                out[rec.case_id].add(z, got.boxes[z], got.labels[z])
    elif fmt == "coco":
        images = read_coco_json(ann, label_map)
        sop: dict[str, tuple[SeriesRecord, int]] = {}
        fname: dict[str, tuple[SeriesRecord, int]] = {}
        for r in records:
            for z, (u, f) in enumerate(zip(r.sop_uids, r.file_names)):
                sop[u] = (r, z)
                fname[f] = (r, z)
                fname.setdefault(Path(f).name, (r, z))
        folder_of = {Path(r.series_path).name: r for r in records if r.kind == "dicom"}
        for name, (boxes, labels, size) in images.items():
            norm = name.replace("\\", "/")
            base = Path(norm).name
            hit = fname.get(norm) or fname.get(base) or sop.get(base) or sop.get(base.rsplit(".", 1)[0])
            if hit is None:
                key = _default_coco_key(norm)
                if key is not None:
                    rec = by_uid.get(key[0]) or folder_of.get(key[0])
                    hit = (rec, key[1]) if rec is not None else None
            if hit is None:
                unmatched.append(name)
                continue
            rec, z = hit
            if not 0 <= z < rec.shape[0]:
                raise LidnetError(f"{ann}: image {name} points to slice {z} but {rec.series_path} has {rec.shape[0]}.")
            if size is not None and tuple(size) != tuple(rec.shape[1:]):
                raise LidnetError(
                    f"{ann}: image {name} is {size[1]} x {size[0]} but slice {z} of {rec.series_path} is "
                    f"{rec.shape[2]} x {rec.shape[1]}; the annotation belongs to another image."
                )
            if len(boxes):
                b, lab = clip_boxes_to_image(boxes, rec.shape, f"{ann}, image {name}", labels)
                out[rec.case_id].add(z, b, lab)
    else:  # luna16
        nodules = read_luna16_csv(ann)
        for uid, arr in nodules.items():
            rec = by_uid.get(uid)
            if rec is None:
                unmatched.append(uid)
                continue
            got = world_spheres_to_boxes(arr, rec.shape, rec.spacing, rec.origin, rec.direction,
                                         where=f"{ann} (seriesuid {uid})")
            for z in got.boxes:
                out[rec.case_id].add(z, got.boxes[z], got.labels[z])
    if unmatched:
        if not any(a.n_boxes for a in out.values()):
            raise ConfigError(
                f"None of the annotations in {ann} ({fmt}) match a series under {root} (e.g. "
                f"{', '.join(unmatched[:3])}). Check the folder, the format and the matching rule."
            )
        warnings.warn(
            f"{len(unmatched)} annotation entries of {ann} match no series under {root} (e.g. "
            f"{', '.join(unmatched[:3])}); they were ignored.",
            UserWarning,
            stacklevel=2,
        )
    return out, fmt


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


# -------------------------------------------------------------------------------------------- manifest


def build_manifest(
    root: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    fmt: str | None = None,
    *,
    val: float = 0.2,
    test: float = 0.2,
    seed: int = 0,
    patient_rule: str = "file",
    label_map: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Scan, annotate and split a data set (:func:`scan_series`, :func:`attach_annotations`,
    :func:`split_patients`) into a manifest dictionary (layout in the module docstring).

    Series without any box are kept (negative slices for the detector) with ``n_boxes = 0``.

    Raises
    ------
    ConfigError, LidnetError
        As the functions above.
    """
    root_p = Path(root).expanduser().resolve()
    records = scan_series(root_p, patient_rule)
    ann, used = attach_annotations(records, root_p, annotations, fmt, label_map)
    splits = split_patients([r.patient_id for r in records], val, test, seed)
    cases = []
    for r in records:
        a = ann[r.case_id]
        cases.append({
            "id": r.case_id,
            "patient_id": r.patient_id,
            "series_path": r.series_path,
            "series_uid": r.series_uid,
            "kind": r.kind,
            "shape": list(r.shape),
            "spacing": list(r.spacing),
            "annotation": str(Path(annotations).expanduser().resolve()) if annotations is not None else (
                str(boxes_csv_for(root_p / r.series_path)) if a.n_boxes else None),
            "n_boxes": a.n_boxes,
            "boxes": a.rows(),
            "split": splits[r.patient_id],
        })
    return {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "root": str(root_p),
        "annotations": {"path": None if annotations is None else str(Path(annotations).expanduser().resolve()),
                        "format": used},
        "split": {"seed": int(seed), "val": float(val), "test": float(test), "patient_rule": patient_rule},
        "cases": cases,
    }


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


def index_dataset(
    root: str | os.PathLike,
    out: str | os.PathLike,
    annotations: str | os.PathLike | None = None,
    fmt: str | None = None,
    **kw,
) -> dict[str, Any]:
    """:func:`build_manifest` then :func:`write_manifest` to ``out``; returns the manifest.
    Keyword arguments as :func:`build_manifest`."""
    manifest = build_manifest(root, annotations, fmt, **kw)
    write_manifest(manifest, out)
    return manifest


# ------------------------------------------------------------------------------ manifest training sources


def parse_manifest_source(source: str) -> tuple[Path, str, Optional[str]]:
    """Split ``"manifest:PATH[#train|#val|#test|#all|#case=ID]"`` into (path, split, case id or None).

    No fragment means ``train``. Raises :class:`ConfigError` on anything else.
    """
    body = str(source).strip()[len("manifest:"):]
    path, _, frag = body.partition("#")
    frag = frag.strip() or "train"
    if not path.strip():
        raise ConfigError(f"Training source {source!r}: give the manifest path, e.g. manifest:/data/ds.json#train.")
    if frag.startswith("case="):
        return Path(path.strip()).expanduser(), "case", frag[5:]
    if frag not in (*SPLITS, "all"):
        raise ConfigError(f"Training source {source!r}: after '#' use train, val, test, all or case=<id>.")
    return Path(path.strip()).expanduser(), frag, None


def manifest_case_sources(source: str) -> list[str]:
    """One ``manifest:PATH#case=<id>`` source per case of the split named in ``source``.

    Raises
    ------
    ConfigError
        Bad manifest, or the split holds no case.
    """
    path, split, case = parse_manifest_source(source)
    if split == "case":
        return [str(source).strip()]
    doc = read_manifest(path)
    ids = [c["id"] for c in doc["cases"] if split == "all" or c["split"] == split]
    if not ids:
        raise ConfigError(f"{path}: the '{split}' split holds no case (choose another split or re-index).")
    return [f"manifest:{path}#case={i}" for i in ids]


def load_manifest_case(source: str) -> tuple[np.ndarray, tuple[float, float, float], dict[int, np.ndarray]]:
    """Load one case ``manifest:PATH#case=<id>``: NDCT HU ``(z, y, x)`` float32, spacing ``(z, y, x)`` mm,
    boxes per slice (``(n, 4)`` float32 xyxy pixels; labels are not kept: every box is a lesion).

    The series is read with :func:`src_training.io.load_ct` from ``root / series_path`` (SeriesInstanceUID
    chosen for DICOM folders).

    Raises
    ------
    ConfigError
        Unknown case id, or the series' size differs from the manifest (re-index).
    CTLoadError
        Unreadable series.
    """
    from .io import load_ct

    path, split, case_id = parse_manifest_source(source)
    doc = read_manifest(path)
    if split != "case":
        ids = manifest_case_sources(source)
        if len(ids) != 1:
            raise ConfigError(
                f"{source} names {len(ids)} cases; use prepare_cases (or one source per case, '#case=<id>')."
            )
        _, _, case_id = parse_manifest_source(ids[0])
    case = next((c for c in doc["cases"] if c["id"] == case_id), None)
    if case is None:
        raise ConfigError(f"{path} has no case '{case_id}'.")
    root = Path(doc.get("root") or path.parent)
    if not root.is_absolute():
        root = path.parent / root
    series = root / case["series_path"]
    uid = case.get("series_uid") if case.get("kind") == "dicom" else None
    vol = load_ct(series, series_uid=uid)
    if list(vol.hu.shape) != [int(v) for v in case["shape"]]:
        raise ConfigError(
            f"{series}: the series is {tuple(vol.hu.shape)} but the manifest {path} says {tuple(case['shape'])}; "
            "the data changed since indexing: run 'lidnet dataset index' again."
        )
    ann = SliceAnnotations.from_rows(case["boxes"], where=f"{path}, case {case_id}")
    return np.asarray(vol.hu, dtype=np.float32), tuple(float(s) for s in vol.spacing), ann.boxes  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------- streaming


@dataclass
class CachedCase:
    """A case of :class:`StreamingSliceDataset`: where its slices are cached, not the slices themselves.

    Attributes
    ----------
    name : str
        Training source string.
    cache_dir : Path
        Folder with ``ndct.npy`` and ``ldct.npy`` (float32 HU ``(z, y, x)``) and ``meta.json``.
    shape : (Z, H, W)
    boxes : dict int -> ndarray float32 (n, 4)
        ``xyxy`` pixel boxes per slice (after resampling / synthetic nodules).
    """

    name: str
    cache_dir: Path
    shape: tuple[int, int, int]
    boxes: dict[int, np.ndarray]

    @property
    def n_slices(self) -> int:
        """Number of axial slices z."""
        return int(self.shape[0])


class StreamingSliceDataset(SliceDataset):
    """:class:`~src_training.data.SliceDataset` whose slices stream from disk.

    Every case is prepared once with :func:`src_training.data.prepare_case` (load, optional resampling,
    synthetic nodules, LDCT simulation with :func:`src_training.simulation.simulate_ldct`) and cached as
    ``cache_dir/slices_<key>/{ndct.npy, ldct.npy, meta.json}`` (float32 HU ``(z, y, x)``; written into a
    temporary folder and renamed into place, so a crash never leaves a half cache). The key hashes the
    source string, the source file's size and modification time, N0, seed, image_size,
    synthetic_nodules_per_slice and the simulator version. Only one case is in memory while caches are
    built; afterwards ``dataset.cases`` holds :class:`CachedCase` records (paths, shapes, boxes) and each item reads
    its NDCT and LDCT slice through ``numpy.load(..., mmap_mode="r")``.

    Items are identical to those of ``SliceDataset(prepare_cases(...), hu_range, crop_size, seed)``:
    ``(ldct (1,H,W) float32 [0,1], ndct (1,H,W) float32 [0,1], {"boxes": (n,4) float32, "labels": (n,) int64})``,
    indexed by ``i`` or ``(i, epoch)`` (as the trainers' batch stream asks), crops included.

    Parameters
    ----------
    sources : sequence of str
        Training sources (:func:`src_training.data.load_source`; ``manifest:`` split sources are expanded).
    cache_dir : path-like
        Folder of the slice caches.
    hu_range, crop_size, seed, min_box_fraction, lesion_slices_only
        As :class:`SliceDataset` (``seed`` also seeds simulation and nodules, as :func:`prepare_cases`).
    n0, image_size, synthetic_nodules_per_slice
        As :func:`src_training.data.prepare_case`.

    Raises
    ------
    ConfigError, CTLoadError, SimulationError
        As :func:`prepare_case`; ConfigError when no source / no usable slice.
    """

    def __init__(
        self,
        sources: Sequence[str],
        cache_dir: str | os.PathLike,
        hu_range: tuple[float, float] = DEFAULT_HU_RANGE,
        *,
        n0: float = 1000.0,
        seed: int = 0,
        image_size: Optional[int] = None,
        synthetic_nodules_per_slice: int = 0,
        crop_size: Optional[int] = None,
        min_box_fraction: float = 0.5,
        lesion_slices_only: bool = False,
    ):
        from .data import expand_sources

        srcs = expand_sources([sources] if isinstance(sources, str) else list(sources))
        if not srcs:
            raise ConfigError("StreamingSliceDataset needs at least one training source.")
        self.cache_dir = Path(cache_dir)
        self.sources = srcs
        opts = dict(n0=float(n0), seed=int(seed), image_size=image_size,
                    synthetic_nodules_per_slice=int(synthetic_nodules_per_slice))
        cached = []
        for src in srcs:
            d = self._ensure_cache(src, opts)
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            boxes = {int(z): np.asarray(b, dtype=np.float32).reshape(-1, 4) for z, b in meta["boxes"].items()}
            cached.append(CachedCase(src, d, tuple(int(v) for v in meta["shape"]), boxes))  # type: ignore[arg-type]
        # SliceDataset's own checks and slice index, over cases that hold paths instead of volumes.
        super().__init__(cached, hu_range, crop_size=crop_size, seed=seed, min_box_fraction=min_box_fraction,
                         lesion_slices_only=lesion_slices_only)

    @classmethod
    def from_config(cls, config, cache_dir: str | os.PathLike | None = None) -> "StreamingSliceDataset":
        """Build from a :class:`~src_training.config.TrainConfig` (``train_data``, ``hu_range``, ``n0``,
        ``seed``, ``image_size``, ``crop_size``, ``synthetic_nodules_per_slice``); caches under ``cache_dir``
        or ``config.cache_dir``.

        Raises
        ------
        ConfigError
            No cache folder given, empty ``train_data``.
        """
        cache = cache_dir if cache_dir is not None else config.cache_dir
        if cache is None:
            raise ConfigError("StreamingSliceDataset needs a cache folder: set cache_dir in the configuration.")
        if not config.train_data:
            raise ConfigError("The configuration has no training data: set train_data.")
        return cls(config.train_data, cache, config.hu_range, n0=config.n0, seed=config.seed,
                   image_size=config.image_size, synthetic_nodules_per_slice=config.synthetic_nodules_per_slice,
                   crop_size=config.crop_size)

    @staticmethod
    def _source_stamp(src: str) -> list:
        """Size and mtime of the files a source reads (so an edited source gets a new cache)."""
        paths: list[Path] = []
        if src.startswith("manifest:"):
            mpath, _, _ = parse_manifest_source(src)
            paths.append(mpath)
        elif not src.lower().startswith("sample:"):
            p = Path(src).expanduser()
            paths += [p, boxes_csv_for(p)] if p.exists() else [p]
        stamp = []
        for p in paths:
            try:
                st = p.stat()
                stamp.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                stamp.append([str(p), None, None])
        return stamp

    def _ensure_cache(self, src: str, opts: dict) -> Path:
        from .data import prepare_case
        from .simulation import SIMULATOR_VERSION

        key_doc = json.dumps({"v": 1, "source": src, "stamp": self._source_stamp(src), "sim": SIMULATOR_VERSION,
                              **opts}, sort_keys=True)
        key = hashlib.sha256(key_doc.encode("utf-8")).hexdigest()[:24]
        final = self.cache_dir / f"slices_{key}"
        if self._cache_ok(final):
            return final
        case = prepare_case(src, cache_dir=None, **opts)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".slices_{key}.tmp-", dir=self.cache_dir))
        try:
            np.save(tmp / "ndct.npy", np.ascontiguousarray(case.ndct_hu, dtype=np.float32))
            np.save(tmp / "ldct.npy", np.ascontiguousarray(case.ldct_hu, dtype=np.float32))
            meta = {"source": src, "key": key_doc, "shape": list(case.ndct_hu.shape), "spacing": list(case.spacing),
                    "boxes": {str(z): np.asarray(b).tolist() for z, b in case.boxes.items()}}
            (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            del case
            if final.exists():  # an unusable old cache: replace it
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:
                if not self._cache_ok(final):  # not a concurrent writer that finished first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    @staticmethod
    def _cache_ok(d: Path) -> bool:
        try:
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            shape = tuple(int(v) for v in meta["shape"])
            for name in ("ndct.npy", "ldct.npy"):
                arr = np.load(d / name, mmap_mode="r")
                if arr.shape != shape or arr.dtype != np.float32:
                    return False
                del arr
            return True
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _slice_arrays(self, ci: int, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        case = self.cases[ci]
        nd = np.load(case.cache_dir / "ndct.npy", mmap_mode="r")
        ld = np.load(case.cache_dir / "ldct.npy", mmap_mode="r")
        out = np.array(nd[z]), np.array(ld[z])
        del nd, ld
        return out[0], out[1], case.boxes.get(z, np.zeros((0, 4), np.float32))
