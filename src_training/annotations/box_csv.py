"""Box CSV files: the project's ``boxes.csv`` (:func:`read_boxes_csv`, :func:`write_boxes_csv`) and box tables
with a series or file column (:func:`read_boxes_table`, :func:`table_rows_to_annotations`,
:func:`write_boxes_table`), plus the UTF-8 CSV reader the other CSV formats share (:func:`_csv_dict_reader`).

``boxes.csv`` format (one box a line, header required)::

    slice,x0,y0,x1,y1,label[,score]

``slice`` is the index along z of the volume the boxes belong to (0-based, in the z order of the loaded
volume); boxes are xyxy pixels with edges at pixel borders (:mod:`src_training.boxes`). Writes are atomic
(:func:`src_training.checkpoint.atomic_write_text`).

Written with the CT the boxes were found on (``write_boxes_csv(..., reference=volume)``, e.g. by ``lidnet
detect``), each row also says where the box is for a PACS viewer (:data:`REFERENCE_COLUMNS`)::

    slice,x0,y0,x1,y1,label[,score],sop_instance_uid,instance_number,frame_number,center_x_mm,center_y_mm,center_z_mm

``sop_instance_uid`` / ``instance_number`` (DICOM SOPInstanceUID and InstanceNumber of the source slice) and
``frame_number`` (1-based frame of a multi-frame file) are empty when the source is not DICOM (or the slice is
unknown); ``center_*_mm`` is the box centre in patient coordinates (DICOM LPS, mm: x to the patient's left,
y to the back, z to the head), from the volume's origin, direction and spacing. Readers ignore these columns.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..boxes import clip_boxes_to_image, validate_boxes
from ..checkpoint import atomic_write_text
from ..errors import LidnetError, OutputExistsError
from .records import SliceAnnotations, map_label

if TYPE_CHECKING:  # never imported at run time: annotations does not depend on io
    from ..io.volume import CTVolume


#: Required CSV columns, in the order they are written.
CSV_COLUMNS: tuple[str, ...] = ("slice", "x0", "y0", "x1", "y1", "label")

#: Columns added after ``score`` when the boxes are written with their CT (``reference=``).
REFERENCE_COLUMNS: tuple[str, ...] = (
    "sop_instance_uid", "instance_number", "frame_number", "center_x_mm", "center_y_mm", "center_z_mm",
)


def box_centres_mm(
    boxes: np.ndarray, z: int, spacing: Sequence[float], origin: Sequence[float], direction: Sequence[float]
) -> np.ndarray:
    """Patient coordinates of box centres on slice ``z``.

    Parameters
    ----------
    boxes : array (n, 4)
        ``xyxy`` pixels, edges at pixel borders (the centre of the pixel at column c is at x = c + 0.5).
    z : int
        Slice index (0-based, z order of the volume).
    spacing : (dz, dy, dx) mm
    origin : (x, y, z) mm
        Centre of voxel (0, 0, 0) in patient coordinates (DICOM LPS; SimpleITK order).
    direction : 9 floats
        SimpleITK direction cosines, row-major 3x3, columns = directions of the column, row and slice axes.

    Returns
    -------
    ndarray float64 (n, 3)
        ``(x, y, z)`` mm, LPS: ``origin + D @ (i * dx, j * dy, z * dz)`` with (i, j) the centre in voxel
        indices (DICOM PS3.3 C.7.6.2.1.1, the Image Position / Orientation equation).
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    sp = [float(v) for v in spacing]
    d = np.asarray([float(v) for v in direction], dtype=np.float64).reshape(3, 3)
    i = (b[:, 0] + b[:, 2]) / 2.0 - 0.5
    j = (b[:, 1] + b[:, 3]) / 2.0 - 0.5
    steps = np.stack([i * sp[2], j * sp[1], np.full(len(b), float(z) * sp[0])], axis=1)
    return np.asarray([float(v) for v in origin], dtype=np.float64)[None, :] + steps @ d.T


def _slice_list(meta: Mapping[str, Any], key: str, nz: int | None) -> list | None:
    values = meta.get(key)
    if not isinstance(values, (list, tuple)) or (nz is not None and len(values) != nz):
        return None
    return list(values)


def _reference_cells(reference: Any, where: str) -> Any:
    """A function ``(z, boxes (n, 4)) -> list of rows of REFERENCE_COLUMNS cells`` for ``reference``."""
    meta = dict(getattr(reference, "metadata", None) or {})
    hu = getattr(reference, "hu", None)
    nz = int(hu.shape[0]) if hu is not None and getattr(hu, "ndim", 0) == 3 and hu.shape[0] else None
    nz = nz or (int(meta["n_slices"]) if isinstance(meta.get("n_slices"), int) else None)
    uids = _slice_list(meta, "sop_instance_uids", nz)
    numbers = _slice_list(meta, "instance_numbers", len(uids) if uids is not None else nz)
    frames = _slice_list(meta, "frame_numbers", len(uids) if uids is not None else nz)
    try:
        spacing = tuple(float(v) for v in reference.spacing)
        origin = tuple(float(v) for v in reference.origin)
        direction = tuple(float(v) for v in reference.direction)
        geometry_ok = len(spacing) == 3 and len(origin) == 3 and len(direction) == 9 and all(
            math.isfinite(v) for v in (*spacing, *origin, *direction))
    except (TypeError, ValueError, AttributeError):
        geometry_ok = False
    if not geometry_ok:
        raise LidnetError(f"{where}: the CT the boxes belong to has no usable geometry (spacing, origin, direction).")

    def item(values: list | None, z: int) -> str:
        if values is None or not 0 <= z < len(values) or values[z] is None:
            return ""
        return str(values[z])

    def cells(z: int, boxes: np.ndarray) -> list[list[str]]:
        mm = box_centres_mm(boxes, z, spacing, origin, direction)
        fixed = [item(uids, z), item(numbers, z), item(frames, z)]
        return [fixed + [f"{v:.3f}" for v in mm[i]] for i in range(len(mm))]

    return cells


def write_boxes_csv(
    boxes_by_slice: Mapping[int, np.ndarray],
    path: str | os.PathLike,
    labels: Mapping[int, Sequence[int]] | None = None,
    scores: Mapping[int, Sequence[float]] | None = None,
    *,
    overwrite: bool = False,
    reference: "CTVolume | None" = None,
) -> Path:
    """Write boxes to a CSV file atomically (columns ``slice,x0,y0,x1,y1,label``, ``score`` if given, and
    :data:`REFERENCE_COLUMNS` with a ``reference``).

    Parameters
    ----------
    boxes_by_slice : mapping int -> array (n, 4)
        ``xyxy`` pixel boxes per z index; slices with no box may be present (nothing is written for them).
    path : path-like
        Destination ``.csv``.
    labels : mapping int -> sequence of int, optional
        Class label per box (default 1 = lesion).
    scores : mapping int -> sequence of float, optional
        Detection scores in [0, 1] per box; adds the ``score`` column.
    overwrite : bool
        Replace an existing file (atomically). Default False: an existing file is never replaced.
    reference : CTVolume, optional
        The CT the boxes were found on (slice indices in its z order): adds the SOPInstanceUID,
        InstanceNumber and frame number of each box's slice (from ``metadata["sop_instance_uids"]``,
        ``["instance_numbers"]``, ``["frame_numbers"]``; empty cells when absent, e.g. NIfTI) and the box
        centre in patient coordinates, LPS mm (:func:`box_centres_mm`, from its spacing, origin, direction).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    LidnetError
        Invalid boxes, labels/scores whose length does not match the boxes of a slice, or a ``reference``
        without finite spacing/origin/direction.
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing written).
    """
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; nothing was written. Choose another file name, or allow replacing it."
        )
    ref_cells = _reference_cells(reference, str(path)) if reference is not None else None
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(CSV_COLUMNS) + (["score"] if scores is not None else [])
                    + (list(REFERENCE_COLUMNS) if ref_cells is not None else []))
    for z in sorted(int(k) for k in boxes_by_slice):
        b = validate_boxes(boxes_by_slice[z], where=f"{path}, slice {z}")
        lab = np.ones(len(b), dtype=np.int64) if labels is None or z not in labels else np.asarray(labels[z])
        if len(lab) != len(b):
            raise LidnetError(f"{path}: slice {z} has {len(b)} boxes but {len(lab)} labels.")
        sc = None
        if scores is not None:
            sc = np.asarray(scores.get(z, []), dtype=np.float64)
            if len(sc) != len(b):
                raise LidnetError(f"{path}: slice {z} has {len(b)} boxes but {len(sc)} scores.")
        extra = ref_cells(z, b) if ref_cells is not None else None
        for i in range(len(b)):
            row = [z] + [_fmt(v) for v in b[i]] + [int(lab[i])]
            if sc is not None:
                row.append(f"{float(sc[i]):.6g}")
            if extra is not None:
                row.extend(extra[i])
            writer.writerow(row)
    out = atomic_write_text(path, buf.getvalue())
    try:  # tempfile creates 0600 files; give the CSV the usual permissions under the umask
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(out, 0o666 & ~mask)
    except OSError:
        pass
    return out


def _fmt(v: float) -> str:
    v = float(v)
    return str(int(v)) if v.is_integer() else f"{v:.4f}".rstrip("0")


def _csv_dict_reader(path: Path, what: str, lower: bool = True) -> tuple[csv.DictReader, list[str]]:
    """A ``csv.DictReader`` over a UTF-8 (BOM allowed) file and its stripped (lower-cased) header names.

    Raises
    ------
    LidnetError
        Missing or unreadable file.
    """
    if not path.is_file():
        raise LidnetError(f"{what[0].upper()}{what[1:]} not found: {path}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LidnetError(f"Cannot read the {what} {path}: {exc}.") from exc
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() if lower else f.strip() for f in (reader.fieldnames or [])]
    return reader, fields


def read_boxes_csv(
    path: str | os.PathLike,
    shape: Sequence[int] | None = None,
    *,
    return_labels_scores: bool = False,
):
    """Read boxes written by :func:`write_boxes_csv` (or by hand with the same header).

    Parameters
    ----------
    path : path-like
        CSV with header ``slice,x0,y0,x1,y1,label`` (``label`` optional, default 1; ``score`` optional;
        extra columns, e.g. :data:`REFERENCE_COLUMNS`, ignored; column order free).
    shape : (Z, H, W) or (H, W), optional
        Volume or slice size: slice indices must be in ``[0, Z)`` and boxes inside ``[0, W] x [0, H]``.
    return_labels_scores : bool
        Also return labels and scores.

    Returns
    -------
    dict int -> ndarray float32 (n, 4)
        Boxes per slice index (only slices listed in the file), or, with ``return_labels_scores``, the
        tuple ``(boxes, labels: dict int -> int64 (n,), scores: dict int -> float32 (n,) or None)``.

    Raises
    ------
    LidnetError
        Missing file, missing columns, non-numeric values (line number given), invalid boxes or boxes
        outside ``shape``.
    """
    path = Path(path)
    reader, fields = _csv_dict_reader(path, "box file")
    missing = [c for c in CSV_COLUMNS[:5] if c not in fields]
    if missing:
        raise LidnetError(
            f"{path} is not a box CSV: missing column(s) {', '.join(missing)}. Expected the header "
            f"'{','.join(CSV_COLUMNS)}' (score optional)."
        )
    reader.fieldnames = fields
    has_score = "score" in fields
    rows: dict[int, list[tuple[list[float], int, float]]] = {}
    for lineno, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        try:
            zf = float(row["slice"])
            if not zf.is_integer():
                raise ValueError("slice must be an integer")
            z = int(zf)
            box = [float(row[c]) for c in ("x0", "y0", "x1", "y1")]
            lab_text = (row.get("label") or "").strip()
            lab = int(float(lab_text)) if lab_text else 1
            score = float(row["score"]) if has_score and (row.get("score") or "").strip() else math.nan
        except (TypeError, ValueError) as exc:
            raise LidnetError(f"{path}, line {lineno}: not a valid box row ({exc}): {dict(row)}.") from exc
        if any(not math.isfinite(v) for v in box):
            raise LidnetError(f"{path}, line {lineno}: box coordinates must be finite numbers.")
        if shape is not None and len(shape) == 3 and not 0 <= z < int(shape[0]):
            raise LidnetError(
                f"{path}, line {lineno}: slice {z} is outside the volume (it has {int(shape[0])} slices, 0-based)."
            )
        if z < 0:
            raise LidnetError(f"{path}, line {lineno}: negative slice index {z}.")
        validate_boxes(np.asarray([box]), shape, where=f"{path}, line {lineno}")
        rows.setdefault(z, []).append((box, lab, score))
    boxes = {z: np.asarray([r[0] for r in v], dtype=np.float32).reshape(-1, 4) for z, v in sorted(rows.items())}
    if not return_labels_scores:
        return boxes
    labels = {z: np.asarray([r[1] for r in v], dtype=np.int64) for z, v in sorted(rows.items())}
    scores = (
        {z: np.asarray([r[2] for r in v], dtype=np.float32) for z, v in sorted(rows.items())} if has_score else None
    )
    return boxes, labels, scores


#: Accepted header names (lower case) of :func:`read_boxes_table`, per meaning.
TABLE_ALIASES: dict[str, tuple[str, ...]] = {
    "series": ("series_uid", "seriesuid", "seriesinstanceuid", "series"),
    "file": ("file", "filename", "file_name", "path"),
    "slice": ("slice", "z", "slice_index"),
    "x0": ("x0", "xmin"),
    "y0": ("y0", "ymin"),
    "x1": ("x1", "xmax"),
    "y1": ("y1", "ymax"),
    "label": ("label", "class", "category"),
}


def read_boxes_table(
    path: str | os.PathLike, label_map: Mapping[str, int] | None = None
) -> tuple[str | None, dict[str, list[tuple[int, list[float], int, int]]]]:
    """Read a box CSV with an optional series column (any column order, header-driven).

    Columns (case-insensitive, aliases in :data:`TABLE_ALIASES`): ``series_uid`` or ``file`` (optional;
    which series/file a row belongs to), ``slice`` (0-based z index), ``x0, y0, x1, y1`` (or ``xmin, ymin,
    xmax, ymax``, same border convention), ``label`` (optional: an integer, or a class name mapped with
    ``label_map``; default 1). The project's ``boxes.csv`` (``slice,x0,y0,x1,y1,label``) is the special
    case without a series column. Image-size checks happen when the rows are attached to a series
    (:func:`table_rows_to_annotations`).

    Returns
    -------
    (key_kind, rows_by_key)
        ``key_kind`` is ``"series"``, ``"file"`` or None (no such column, every row under key ``""``);
        ``rows_by_key[key]`` lists ``(slice, [x0, y0, x1, y1], label, line number)``.

    Raises
    ------
    LidnetError
        Missing file or columns, or a row with non-numeric values (line number given).
    """
    path = Path(path)
    reader, fields = _csv_dict_reader(path, "box file")
    col = {k: next((a for a in names if a in fields), None) for k, names in TABLE_ALIASES.items()}
    missing = [k for k in ("slice", "x0", "y0", "x1", "y1") if col[k] is None]
    if missing:
        raise LidnetError(
            f"{path} is not a box CSV: missing column(s) {', '.join(missing)}. Expected a header such as "
            "'series_uid,slice,x0,y0,x1,y1,label' (series_uid or file optional)."
        )
    reader.fieldnames = fields
    kind = "series" if col["series"] else ("file" if col["file"] else None)
    out: dict[str, list[tuple[int, list[float], int, int]]] = {}
    for lineno, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        try:
            zf = float(row[col["slice"]])
            if not zf.is_integer() or zf < 0:
                raise ValueError("slice must be a non-negative integer")
            box = [float(row[col[c]]) for c in ("x0", "y0", "x1", "y1")]
            lab_text = (row.get(col["label"]) or "").strip() if col["label"] else ""
        except (TypeError, ValueError) as exc:
            raise LidnetError(f"{path}, line {lineno}: not a valid box row ({exc}): {dict(row)}.") from exc
        try:
            lab = int(float(lab_text)) if lab_text else 1
            if label_map is not None and lab_text:
                lab = map_label(lab_text, label_map, f"{path}, line {lineno}")
        except ValueError:
            lab = map_label(lab_text, label_map, f"{path}, line {lineno}")
        key = (row.get(col[kind]) or "").strip() if kind else ""
        out.setdefault(key, []).append((int(zf), box, lab, lineno))
    return kind, out


def table_rows_to_annotations(
    rows: Sequence[tuple[int, Sequence[float], int, int]], shape: Sequence[int], where: str
) -> SliceAnnotations:
    """Attach rows of :func:`read_boxes_table` to a series of size ``(Z, H, W)``: slice indices checked,
    boxes validated and clipped (:func:`clip_boxes_to_image`).

    Raises
    ------
    LidnetError
        A slice index outside ``[0, Z)`` or a box outside the image (file and line named).
    """
    out = SliceAnnotations()
    for z, box, lab, lineno in rows:
        if not 0 <= int(z) < int(shape[0]):
            raise LidnetError(
                f"{where}, line {lineno}: slice {z} is outside the series (it has {int(shape[0])} slices, 0-based)."
            )
        b, l_ = clip_boxes_to_image(np.asarray([box]), shape, f"{where}, line {lineno}", [lab])
        out.add(int(z), b, l_)
    return out


def write_boxes_table(
    per_series: Mapping[str, SliceAnnotations], path: str | os.PathLike, key_column: str = "series_uid"
) -> Path:
    """Write boxes of several series to one CSV atomically: ``<key_column>,slice,x0,y0,x1,y1,label``.

    Parameters
    ----------
    per_series : mapping key -> SliceAnnotations
        Key = SeriesInstanceUID (``key_column="series_uid"``) or file path (``key_column="file"``).
    path : path-like
        Destination ``.csv`` (replaced atomically if it exists).
    key_column : {"series_uid", "file"}
        Name of the first column.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    LidnetError
        Unknown ``key_column`` or invalid boxes.
    """
    if key_column not in ("series_uid", "file"):
        raise LidnetError(f"key_column must be 'series_uid' or 'file', got {key_column!r}.")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([key_column, *CSV_COLUMNS])
    for key in sorted(per_series):
        ann = per_series[key]
        for z in sorted(ann.boxes):
            b = validate_boxes(ann.boxes[z], where=f"{path}, {key}, slice {z}")
            for i in range(len(b)):
                writer.writerow([key, z, *(_fmt(v) for v in b[i]), int(ann.labels[z][i])])
    return atomic_write_text(path, buf.getvalue())
