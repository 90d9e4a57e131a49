"""Indexing a real-study training set: series scan (headers only), annotations attached, manifest built.

A training set on disk is a folder of CT series (DICOM folders, NIfTI/NRRD/MHA files) plus lesion
annotations in one of the formats of :mod:`src_training.annotations` (PASCAL VOC XML per slice as in TCIA
Lung-PET-CT-Dx, a box CSV, COCO JSON, LUNA16 world-mm nodules). :func:`index_dataset` scans the folder
(headers only, no pixel data), attaches the annotations to every series as pixel boxes, groups series by
patient, splits the PATIENTS into train/val/test (:func:`src_training.data.manifest.split_patients`) and
writes the JSON manifest (:mod:`src_training.data.manifest`) atomically.

Patient grouping: DICOM series by their PatientID (0010,0020); volume files (and DICOM series without a
PatientID) by ``patient_rule``: ``"file"`` (default: every file is its own patient, its name without
extension, e.g. LUNA16's one scan per patient), ``"folder"`` (the name of the folder holding the file or
series), or ``"regex:<pattern>"`` (the first group of ``re.search(pattern, relative path)``).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..annotations import (
    SliceAnnotations,
    clip_boxes_to_image,
    read_boxes_table,
    read_coco_json,
    read_luna16_csv,
    read_voc_annotations,
    table_rows_to_annotations,
    world_spheres_to_boxes,
)
from ..errors import ConfigError, LidnetError
from ..io.dicom_series import list_series
from ..io.volume_files import VOLUME_SUFFIXES, _is_volume_path
from .manifest import ANNOTATION_FORMATS, MANIFEST_FORMAT, MANIFEST_VERSION, SeriesRecord, split_patients, write_manifest
from .sources import boxes_csv_for

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


