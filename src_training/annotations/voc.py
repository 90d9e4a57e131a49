"""PASCAL VOC XML annotations (TCIA Lung-PET-CT-Dx: one XML per annotated slice, named by the slice's
SOPInstanceUID): :func:`read_voc_xml` (one file, parsed safely: no entity expansion, no external entities)
and :func:`read_voc_annotations` (the files of one series -> :class:`SliceAnnotations`).

VOC's 1-based inclusive pixel coordinates become the border convention of :mod:`src_training.boxes`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..boxes import clip_boxes_to_image, validate_boxes
from ..errors import LidnetError
from .records import SliceAnnotations, map_label


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
