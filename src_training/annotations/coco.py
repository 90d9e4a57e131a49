"""COCO detection JSON: :func:`read_coco_json` (``bbox`` ``[x, y, width, height]`` -> xyxy pixels of
:mod:`src_training.boxes`, category names -> labels with :func:`~src_training.annotations.map_label`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ..boxes import validate_boxes
from ..errors import LidnetError
from .records import map_label


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
