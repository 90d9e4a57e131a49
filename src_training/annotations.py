"""Lesion boxes: from label maps, to and from CSV.

Convention (``docs/architecture.md``): boxes are ``xyxy`` float32 in pixels of the slice they belong to
(x = column, y = row), edges at pixel borders: a lesion covering columns c0..c1 and rows r0..r1 (inclusive)
has the box ``(c0, r0, c1 + 1, r1 + 1)``; ``x1 > x0`` and ``y1 > y0``. Label 1 = lesion.

CSV format (one box a line, header required)::

    slice,x0,y0,x1,y1,label[,score]

``slice`` is the index along z of the volume the boxes belong to (0-based, in the z order of the loaded
volume).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from .checkpoint import atomic_write_text
from .errors import LidnetError

#: Required CSV columns, in the order they are written.
CSV_COLUMNS: tuple[str, ...] = ("slice", "x0", "y0", "x1", "y1", "label")


def boxes_from_label_slice(label2d: np.ndarray) -> np.ndarray:
    """One box per 8-connected component of the nonzero pixels of a 2-D label map.

    Parameters
    ----------
    label2d : ndarray (y, x), any dtype
        Nonzero = lesion.

    Returns
    -------
    ndarray float32 (n, 4)
        ``xyxy`` pixel boxes, edges at pixel borders, ordered by the components' first pixel in raster
        order (scipy.ndimage.label); ``(0, 4)`` when the slice has no lesion.

    Raises
    ------
    LidnetError
        If ``label2d`` is not 2-D.
    """
    lab = np.asarray(label2d)
    if lab.ndim != 2:
        raise LidnetError(f"boxes_from_label_slice expects a 2-D (y, x) label slice, got shape {lab.shape}.")
    comps, n = ndimage.label(lab != 0, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros((0, 4), dtype=np.float32)
    out = np.zeros((n, 4), dtype=np.float32)
    for i, sl in enumerate(ndimage.find_objects(comps)):
        ys, xs = sl
        out[i] = (xs.start, ys.start, xs.stop, ys.stop)
    return out


def boxes_from_label_volume(label: np.ndarray) -> dict[int, np.ndarray]:
    """Per-slice boxes of a 3-D label map (components are found slice by slice, 8-connected).

    Parameters
    ----------
    label : ndarray (z, y, x)
        Nonzero = lesion.

    Returns
    -------
    dict int -> ndarray float32 (n, 4)
        Only slices with at least one lesion pixel, keyed by z index, boxes as in
        :func:`boxes_from_label_slice`.

    Raises
    ------
    LidnetError
        If ``label`` is not 3-D.
    """
    lab = np.asarray(label)
    if lab.ndim != 3:
        raise LidnetError(f"boxes_from_label_volume expects a 3-D (z, y, x) label map, got shape {lab.shape}.")
    out: dict[int, np.ndarray] = {}
    for z in np.nonzero(lab.reshape(lab.shape[0], -1).any(axis=1))[0]:
        out[int(z)] = boxes_from_label_slice(lab[z])
    return out


def validate_boxes(boxes: np.ndarray, shape: Sequence[int] | None = None, where: str = "boxes") -> np.ndarray:
    """Check boxes against the contract and (optionally) an image size.

    Parameters
    ----------
    boxes : array-like (n, 4)
        ``xyxy`` pixels.
    shape : (H, W) or (..., H, W), optional
        Slice size in pixels; boxes must lie inside ``[0, W] x [0, H]``.
    where : str
        Used in error messages (file name, slice).

    Returns
    -------
    ndarray float32 (n, 4)

    Raises
    ------
    LidnetError
        Wrong shape, NaN/Inf, ``x1 <= x0`` or ``y1 <= y0``, or a box outside the image.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise LidnetError(f"{where}: boxes must be an (n, 4) array of x0, y0, x1, y1, got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise LidnetError(f"{where}: box coordinates must be finite numbers (found NaN or infinity).")
    bad = np.nonzero((arr[:, 2] <= arr[:, 0]) | (arr[:, 3] <= arr[:, 1]))[0]
    if bad.size:
        b = arr[bad[0]]
        raise LidnetError(
            f"{where}: box {tuple(float(v) for v in b)} is empty or inverted (need x1 > x0 and y1 > y0, xyxy pixels)."
        )
    if shape is not None:
        h, w = int(shape[-2]), int(shape[-1])
        out = np.nonzero((arr[:, 0] < 0) | (arr[:, 1] < 0) | (arr[:, 2] > w) | (arr[:, 3] > h))[0]
        if out.size:
            b = arr[out[0]]
            raise LidnetError(
                f"{where}: box {tuple(float(v) for v in b)} lies outside the {w} x {h} (width x height) image; "
                "check that the boxes belong to this image (x = column, y = row)."
            )
    return arr.astype(np.float32)


def write_boxes_csv(
    boxes_by_slice: Mapping[int, np.ndarray],
    path: str | os.PathLike,
    labels: Mapping[int, Sequence[int]] | None = None,
    scores: Mapping[int, Sequence[float]] | None = None,
) -> Path:
    """Write boxes to a CSV file atomically (columns ``slice,x0,y0,x1,y1,label`` and ``score`` if given).

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

    Returns
    -------
    pathlib.Path

    Raises
    ------
    LidnetError
        Invalid boxes, or labels/scores whose length does not match the boxes of a slice.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(list(CSV_COLUMNS) + (["score"] if scores is not None else []))
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
        for i in range(len(b)):
            row = [z] + [_fmt(v) for v in b[i]] + [int(lab[i])]
            if sc is not None:
                row.append(f"{float(sc[i]):.6g}")
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
        extra columns ignored; column order free).
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
    if not path.is_file():
        raise LidnetError(f"Box file not found: {path}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise LidnetError(f"Cannot read the box file {path}: {exc}.") from exc
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
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
