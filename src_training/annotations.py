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
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from .checkpoint import atomic_write_text
from .errors import LidnetError, OutputExistsError

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
    *,
    overwrite: bool = False,
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
    overwrite : bool
        Replace an existing file (atomically). Default False: an existing file is never replaced.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    LidnetError
        Invalid boxes, or labels/scores whose length does not match the boxes of a slice.
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing written).
    """
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(
            f"{path} already exists; nothing was written. Choose another file name, or ask to replace it "
            "(overwrite=True; CLI: --overwrite)."
        )
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


# ------------------------------------------------------------------------------ other annotation formats
#
# Readers of the annotation formats of public CT detection data sets. All of them return boxes in the
# contract's convention (xyxy pixels of the slice, float32, edges at pixel borders) with an int64 label per
# box, checked against the image size by :func:`clip_boxes_to_image`:
#
# - a box that does not overlap the image at all -> LidnetError naming the file and the box (such a box
#   belongs to another image or uses another convention: training on it would be wrong);
# - a box partly outside -> clipped to the image, with a ``UserWarning`` naming file and box (annotation
#   tools and sphere-to-box conversions routinely overshoot the border by a pixel or two).


@dataclass
class SliceAnnotations:
    """Lesion boxes of one CT series.

    Attributes
    ----------
    boxes : dict int -> ndarray float32 (n, 4)
        ``xyxy`` pixel boxes per z index (0-based, z order of :func:`src_training.io.load_ct`); only
        slices with at least one box.
    labels : dict int -> ndarray int64 (n,)
        Class label per box (1 = lesion unless a ``label_map`` said otherwise).
    """

    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    labels: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, z: int, boxes: np.ndarray, labels: Sequence[int]) -> None:
        """Append boxes ``(n, 4)`` with labels ``(n,)`` to slice ``z`` (nothing when n = 0)."""
        b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        lab = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(b) != len(lab):
            raise LidnetError(f"slice {z}: {len(b)} boxes but {len(lab)} labels.")
        if not len(b):
            return
        z = int(z)
        if z in self.boxes:
            self.boxes[z] = np.concatenate([self.boxes[z], b])
            self.labels[z] = np.concatenate([self.labels[z], lab])
        else:
            self.boxes[z], self.labels[z] = b, lab

    @property
    def n_boxes(self) -> int:
        """Total number of boxes."""
        return int(sum(len(b) for b in self.boxes.values()))

    def rows(self) -> list[list[float]]:
        """Boxes as rows ``[slice, x0, y0, x1, y1, label]`` sorted by slice (JSON-friendly)."""
        return [
            [int(z), *(float(v) for v in b), int(lab)]
            for z in sorted(self.boxes)
            for b, lab in zip(self.boxes[z], self.labels[z])
        ]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[float]], where: str = "boxes") -> "SliceAnnotations":
        """Inverse of :meth:`rows` (rows ``[slice, x0, y0, x1, y1(, label)]``; label default 1).

        Raises
        ------
        LidnetError
            A row of the wrong length, a non-integer slice or an invalid box.
        """
        out = cls()
        for r in rows:
            if len(r) not in (5, 6) or not float(r[0]).is_integer() or r[0] < 0:
                raise LidnetError(f"{where}: not a box row [slice, x0, y0, x1, y1, label]: {list(r)}.")
            b = validate_boxes(np.asarray([r[1:5]], dtype=np.float64), where=f"{where}, slice {int(r[0])}")
            out.add(int(r[0]), b, [int(r[5]) if len(r) == 6 else 1])
        return out


def clip_boxes_to_image(
    boxes: np.ndarray, shape: Sequence[int], where: str, labels: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate boxes against an image size: refuse boxes outside it, clip boxes partly outside.

    Parameters
    ----------
    boxes : array-like (n, 4)
        ``xyxy`` pixels.
    shape : (H, W) or (..., H, W)
        Slice size in pixels.
    where : str
        File (and slice) named in messages.
    labels : sequence of int (n,), optional
        Labels, returned alongside (default all 1).

    Returns
    -------
    (ndarray float32 (n, 4), ndarray int64 (n,))
        Boxes clipped to ``[0, W] x [0, H]`` and their labels.

    Raises
    ------
    LidnetError
        Invalid boxes (:func:`validate_boxes`) or a box with no overlap with the image.

    Warns
    -----
    UserWarning
        For every box that was clipped (partly outside the image).
    """
    b = validate_boxes(boxes, where=where).astype(np.float64)
    lab = np.ones(len(b), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(lab) != len(b):
        raise LidnetError(f"{where}: {len(b)} boxes but {len(lab)} labels.")
    h, w = int(shape[-2]), int(shape[-1])
    out = b.copy()
    out[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
    out[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
    for i in range(len(b)):
        if out[i, 2] <= out[i, 0] or out[i, 3] <= out[i, 1]:
            raise LidnetError(
                f"{where}: box {tuple(round(float(v), 3) for v in b[i])} (x0, y0, x1, y1 pixels) lies entirely "
                f"outside the {w} x {h} (width x height) image; check that the annotation belongs to this series "
                "and uses pixel coordinates (x = column, y = row)."
            )
        if not np.array_equal(out[i], b[i]):
            warnings.warn(
                f"{where}: box {tuple(round(float(v), 3) for v in b[i])} extends beyond the {w} x {h} image; "
                f"clipped to {tuple(round(float(v), 3) for v in out[i])}.",
                UserWarning,
                stacklevel=2,
            )
    return out.astype(np.float32), lab


def map_label(name: str, label_map: Mapping[str, int] | None, where: str) -> int:
    """Class label of an annotation's class name.

    ``label_map=None`` maps every class to 1 (= lesion, the contract's detector label): LIDnet's detector
    is a lesion / background detector (Chen et al. 2021, Sec. 3.2), so subtypes such as Lung-PET-CT-Dx's
    A/B/E/G collapse into "lesion". With a mapping, a name missing from it raises :class:`LidnetError`.
    """
    if label_map is None:
        return 1
    key = str(name).strip()
    if key not in label_map:
        raise LidnetError(
            f"{where}: class '{key}' is not in the label map ({', '.join(sorted(map(str, label_map)))}); add it "
            "or leave the label map out to treat every class as lesion (label 1)."
        )
    return int(label_map[key])


# ---- PASCAL VOC XML (TCIA Lung-PET-CT-Dx: one XML per slice, named by the slice's SOPInstanceUID)


def _parse_xml(path: Path):
    """Parse an XML file safely: defusedxml when installed, else the standard library with every DTD
    entity declaration refused (no entity expansion, no external entities).

    Raises
    ------
    LidnetError
        Unreadable or malformed file, or a file declaring entities.
    """
    try:
        import defusedxml.ElementTree as safe_et  # type: ignore[import-not-found]
    except ImportError:
        safe_et = None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LidnetError(f"Cannot read the annotation file {path}: {exc}.") from exc
    if safe_et is not None:
        try:
            return safe_et.fromstring(data)
        except Exception as exc:  # noqa: BLE001 - ParseError and defusedxml's Forbidden* errors
            raise LidnetError(f"{path} is not a valid (safe) XML annotation file: {exc}.") from exc
    import xml.etree.ElementTree as ET
    from xml.parsers import expat

    def _refuse(*_args):
        raise ValueError("entity declarations are not allowed in annotation files")

    # First pass with a bare expat parser that refuses any entity declaration or external reference; only
    # a document without them reaches ElementTree (which then has nothing to expand).
    check = expat.ParserCreate()
    check.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    check.EntityDeclHandler = _refuse
    check.UnparsedEntityDeclHandler = _refuse
    check.ExternalEntityRefHandler = _refuse
    try:
        check.Parse(data, True)
        return ET.fromstring(data)
    except (ET.ParseError, expat.ExpatError, ValueError) as exc:
        raise LidnetError(f"{path} is not a valid (safe) XML annotation file: {exc}.") from exc


def read_voc_xml(
    path: str | os.PathLike, one_based: bool = True
) -> tuple[np.ndarray, list[str], tuple[int, int] | None]:
    """Read one PASCAL VOC annotation file.

    PASCAL VOC pixel coordinates are 1-based and inclusive (``xmin=1`` is the first column); with
    ``one_based=True`` (default, the VOC specification, as detectron2 reads it) they become the contract's
    border convention as ``x0 = xmin - 1``, ``x1 = xmax`` (same for y). ``one_based=False`` takes the values
    as border coordinates unchanged (files written by LabelImg-like tools). Lung-PET-CT-Dx writes this
    format (one file per annotated slice); the difference between both readings is one pixel at the
    top-left corner.

    Parameters
    ----------
    path : path-like
        ``.xml`` with ``<object><name>`` and ``<bndbox><xmin/><ymin/><xmax/><ymax/></bndbox>``.
    one_based : bool
        See above.

    Returns
    -------
    (boxes ndarray float32 (n, 4) xyxy pixels, names list of n str, (H, W) from ``<size>`` or None)

    Raises
    ------
    LidnetError
        Unsafe/malformed XML, missing or non-numeric box coordinates, empty or inverted boxes.
    """
    path = Path(path)
    root = _parse_xml(path)
    size = None
    sz = root.find("size")
    if sz is not None:
        try:
            size = (int(float(sz.findtext("height"))), int(float(sz.findtext("width"))))
        except (TypeError, ValueError):
            size = None
    boxes, names = [], []
    for i, obj in enumerate(root.iter("object")):
        bb = obj.find("bndbox")
        try:
            vals = [float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr]
        except (AttributeError, TypeError, ValueError) as exc:
            raise LidnetError(
                f"{path}: object {i + 1} has no valid <bndbox> with numeric xmin, ymin, xmax, ymax."
            ) from exc
        off = 1.0 if one_based else 0.0
        boxes.append([vals[0] - off, vals[1] - off, vals[2], vals[3]])
        names.append((obj.findtext("name") or "").strip())
    arr = validate_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), where=str(path))
    return arr, names, size


def read_voc_annotations(
    files: Sequence[str | os.PathLike] | str | os.PathLike,
    sop_uids: Sequence[str],
    shape: Sequence[int],
    label_map: Mapping[str, int] | None = None,
    one_based: bool = True,
) -> SliceAnnotations:
    """Boxes of one series from VOC files named ``<SOPInstanceUID>.xml`` (Lung-PET-CT-Dx layout).

    Parameters
    ----------
    files : folder or sequence of paths
        The XML files (a folder is searched recursively for ``*.xml``). Files whose name matches no slice
        of the series are ignored (an annotation folder may cover several series).
    sop_uids : sequence of str, length Z
        SOPInstanceUID of every slice in z order (index = z).
    shape : (Z, H, W)
        Volume size; boxes are checked with :func:`clip_boxes_to_image`.
    label_map : mapping name -> int, optional
        See :func:`map_label`.
    one_based : bool
        See :func:`read_voc_xml`.

    Returns
    -------
    SliceAnnotations

    Raises
    ------
    LidnetError
        Bad XML/boxes, a ``<size>`` that differs from the slice size, or a box outside the image.
    """
    if isinstance(files, (str, os.PathLike)):
        files = sorted(Path(files).rglob("*.xml"))
    z_of = {str(u): z for z, u in enumerate(sop_uids)}
    out = SliceAnnotations()
    for f in files:
        f = Path(f)
        z = z_of.get(f.stem)
        if z is None:
            continue
        boxes, names, size = read_voc_xml(f, one_based=one_based)
        if size is not None and size != (int(shape[-2]), int(shape[-1])) and size != (0, 0):
            raise LidnetError(
                f"{f}: the annotation is for a {size[1]} x {size[0]} image but slice {z} is "
                f"{int(shape[-1])} x {int(shape[-2])}; it belongs to another series."
            )
        labels = [map_label(n, label_map, str(f)) for n in names]
        b, lab = clip_boxes_to_image(boxes, shape, f"{f} (slice {z})", labels)
        out.add(z, b, lab)
    return out


# ---- CSV of boxes with a series column (header-driven)

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


# ---- COCO JSON


def read_coco_json(
    path: str | os.PathLike, label_map: Mapping[str, int] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray, tuple[int, int] | None]]:
    """Read a COCO detection file: boxes per image ``file_name``.

    ``bbox`` is COCO's ``[x, y, width, height]`` in pixels (top-left corner at the pixel border), converted to
    ``xyxy``: ``(x, y, x + width, y + height)``. The class is the category's ``name`` mapped with
    ``label_map`` (:func:`map_label`; None = every category is lesion, label 1). Images without annotations
    are returned with no boxes; ``iscrowd`` annotations are kept like the others.

    Parameters
    ----------
    path : path-like
        ``.json`` with ``images`` (``id``, ``file_name``, optional ``width``/``height``), ``annotations``
        (``image_id``, ``bbox``, ``category_id``) and ``categories`` (``id``, ``name``).

    Returns
    -------
    dict file_name -> (boxes float32 (n, 4) xyxy, labels int64 (n,), (H, W) or None)

    Raises
    ------
    LidnetError
        Unreadable JSON, missing keys, an annotation of an unknown image/category, an invalid bbox.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LidnetError(f"Cannot read the COCO annotation file {path}: {exc}.") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(
        doc.get("annotations"), list
    ):
        raise LidnetError(f"{path} is not a COCO detection file: it needs 'images' and 'annotations' lists.")
    cats = {}
    for c in doc.get("categories") or []:
        try:
            cats[c["id"]] = str(c.get("name", c["id"]))
        except (TypeError, KeyError) as exc:
            raise LidnetError(f"{path}: a category without 'id': {c!r}.") from exc
    images: dict = {}
    for im in doc["images"]:
        try:
            size = (int(im["height"]), int(im["width"])) if "height" in im and "width" in im else None
            images[im["id"]] = (str(im["file_name"]), size)
        except (TypeError, KeyError, ValueError) as exc:
            raise LidnetError(f"{path}: an image entry needs 'id' and 'file_name': {im!r}.") from exc
    per: dict[str, tuple[list, list]] = {name: ([], []) for name, _ in images.values()}
    for k, a in enumerate(doc["annotations"]):
        where = f"{path}, annotation {a.get('id', k) if isinstance(a, dict) else k}"
        try:
            name, _ = images[a["image_id"]]
            x, y, bw, bh = (float(v) for v in a["bbox"])
        except KeyError as exc:
            raise LidnetError(f"{where}: unknown or missing image_id / bbox ({exc}).") from exc
        except (TypeError, ValueError) as exc:
            raise LidnetError(f"{where}: bbox must be [x, y, width, height] numbers.") from exc
        cid = a.get("category_id")
        if cats and cid not in cats:
            raise LidnetError(f"{where}: category_id {cid!r} is not in 'categories'.")
        cname = cats.get(cid, str(cid))
        per[name][0].append([x, y, x + bw, y + bh])
        per[name][1].append(map_label(cname, label_map, where))
    out = {}
    sizes = {name: size for name, size in images.values()}
    for name, (b, lab) in per.items():
        arr = validate_boxes(np.asarray(b, dtype=np.float64).reshape(-1, 4), where=f"{path}, image {name}")
        out[name] = (arr, np.asarray(lab, dtype=np.int64), sizes[name])
    return out


# ---- LUNA16 (nodule centres and diameters in world mm)


def read_luna16_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a LUNA16 ``annotations.csv``: ``seriesuid, coordX, coordY, coordZ, diameter_mm``.

    Coordinates are world (patient, LPS as in the .mhd/DICOM geometry) millimetres of the nodule centre;
    ``diameter_mm`` is the nodule diameter in mm.

    Returns
    -------
    dict seriesuid -> ndarray float64 (n, 4)
        ``(x, y, z, diameter)`` mm per nodule.

    Raises
    ------
    LidnetError
        Missing file/columns, non-numeric values, or a diameter <= 0 (line number given).
    """
    path = Path(path)
    reader, fields = _csv_dict_reader(path, "LUNA16 annotation file", lower=False)
    need = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
    missing = [c for c in need if c not in fields]
    if missing:
        raise LidnetError(
            f"{path} is not a LUNA16 annotation file: missing column(s) {', '.join(missing)} "
            f"(expected header {','.join(need)})."
        )
    reader.fieldnames = fields
    out: dict[str, list] = {}
    for lineno, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        try:
            vals = [float(row[c]) for c in need[1:]]
        except (TypeError, ValueError) as exc:
            raise LidnetError(f"{path}, line {lineno}: not a valid nodule row ({exc}).") from exc
        if not all(math.isfinite(v) for v in vals) or vals[3] <= 0:
            raise LidnetError(f"{path}, line {lineno}: coordinates must be finite and diameter_mm > 0.")
        out.setdefault(row["seriesuid"].strip(), []).append(vals)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def world_spheres_to_boxes(
    nodules_mm: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    where: str = "nodules",
    label: int = 1,
) -> SliceAnnotations:
    """Boxes of spherical nodules given in world mm, on every axial slice the sphere intersects.

    The centre is mapped to a continuous voxel index with SimpleITK's
    ``TransformPhysicalPointToContinuousIndex`` on the volume's geometry (origin, spacing, direction as in
    :class:`src_training.io.CTVolume`). Slice ``k`` (plane through the voxel centres of index k) lies at
    distance ``d = |k - k_c| * spacing_z`` mm from the centre; it intersects the sphere of radius ``R`` when
    ``d < R``, in a disc of radius ``r = sqrt(R^2 - d^2)`` mm. Its box is centred on the centre's pixel
    position, half-size ``r / spacing_x`` by ``r / spacing_y`` pixels; voxel centre ``i`` is at box
    coordinate ``i + 0.5`` (edges at pixel borders). Boxes partly outside the slice are clipped
    (:func:`clip_boxes_to_image`). Assumes orthonormal direction cosines (all CT series do).

    Parameters
    ----------
    nodules_mm : ndarray (n, 4)
        ``(x, y, z, diameter)`` in mm, world coordinates (LUNA16 ``coordX, coordY, coordZ, diameter_mm``).
    shape : (Z, H, W)
    spacing : (z, y, x) mm
    origin : (x, y, z) mm, centre of voxel (0, 0, 0)
    direction : 9 floats, SimpleITK row-major direction cosines
    where : str
        Named in messages.
    label : int

    Returns
    -------
    SliceAnnotations

    Raises
    ------
    LidnetError
        A nodule whose sphere meets no slice of the volume (wrong series or coordinates in voxels, not mm),
        or a box entirely outside the image.
    """
    import SimpleITK as sitk

    img = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    img.SetSpacing((float(spacing[2]), float(spacing[1]), float(spacing[0])))
    img.SetOrigin(tuple(float(v) for v in origin))
    img.SetDirection(tuple(float(v) for v in direction))
    nz = int(shape[0])
    out = SliceAnnotations()
    for n, (x, y, zc, diam) in enumerate(np.asarray(nodules_mm, dtype=np.float64).reshape(-1, 4)):
        ci, cj, ck = img.TransformPhysicalPointToContinuousIndex((float(x), float(y), float(zc)))
        radius = diam / 2.0
        reach = radius / float(spacing[0])
        ks = [k for k in range(max(0, math.floor(ck - reach)), min(nz - 1, math.ceil(ck + reach)) + 1)
              if abs(k - ck) * float(spacing[0]) < radius]
        if not ks:
            raise LidnetError(
                f"{where}: nodule {n + 1} at ({x:.1f}, {y:.1f}, {zc:.1f}) mm, diameter {diam:.1f} mm, meets no "
                f"slice of this {nz}-slice series (continuous slice index {ck:.1f}); check the series and that "
                "the coordinates are world millimetres."
            )
        for k in ks:
            r = math.sqrt(radius**2 - ((k - ck) * float(spacing[0])) ** 2)
            hx, hy = r / float(spacing[2]), r / float(spacing[1])
            box = [ci + 0.5 - hx, cj + 0.5 - hy, ci + 0.5 + hx, cj + 0.5 + hy]
            b, lab = clip_boxes_to_image(np.asarray([box]), shape, f"{where}, nodule {n + 1}, slice {k}", [label])
            out.add(k, b, lab)
    return out
