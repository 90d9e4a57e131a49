"""Lesion boxes: from label maps, to and from CSV, and the annotation formats of public CT detection data sets.

Convention (``docs/architecture.md``, owned by :mod:`src_training.boxes`): boxes are ``xyxy`` float32 in
pixels of the slice they belong to (x = column, y = row), edges at pixel borders: a lesion covering columns
c0..c1 and rows r0..r1 (inclusive) has the box ``(c0, r0, c1 + 1, r1 + 1)``; ``x1 > x0`` and ``y1 > y0``.
Label 1 = lesion.

CSV format (one box a line, header required)::

    slice,x0,y0,x1,y1,label[,score]

``slice`` is the index along z of the volume the boxes belong to (0-based, in the z order of the loaded
volume).

The readers of the other formats return boxes in the same convention with an int64 label per box, checked
against the image size by :func:`clip_boxes_to_image`: a box that does not overlap the image at all ->
:class:`~src_training.errors.LidnetError` naming the file and the box (such a box belongs to another image
or uses another convention: training on it would be wrong); a box partly outside -> clipped to the image,
with a ``UserWarning`` naming file and box (annotation tools and sphere-to-box conversions routinely
overshoot the border by a pixel or two).

Modules (one concept each; this ``__init__`` only re-exports, nothing imports from it inside the package):

- :mod:`src_training.boxes` (a core module): the box invariant, :func:`validate_boxes`,
  :func:`clip_boxes_to_image`.
- :mod:`~src_training.annotations.labels`: boxes from label maps.
- :mod:`~src_training.annotations.records`: :class:`SliceAnnotations`, :func:`map_label`.
- :mod:`~src_training.annotations.box_csv`: ``boxes.csv`` and box tables with a series / file column.
- :mod:`~src_training.annotations.voc`: PASCAL VOC XML (Lung-PET-CT-Dx).
- :mod:`~src_training.annotations.coco`: COCO JSON.
- :mod:`~src_training.annotations.luna16`: LUNA16 nodules in world mm.
"""

from __future__ import annotations

from ..boxes import clip_boxes_to_image, validate_boxes
from .box_csv import (
    CSV_COLUMNS,
    TABLE_ALIASES,
    read_boxes_csv,
    read_boxes_table,
    table_rows_to_annotations,
    write_boxes_csv,
    write_boxes_table,
)
from .coco import read_coco_json
from .labels import boxes_from_label_slice, boxes_from_label_volume
from .luna16 import read_luna16_csv, world_spheres_to_boxes
from .records import SliceAnnotations, map_label
from .voc import read_voc_annotations, read_voc_xml

__all__ = [
    "CSV_COLUMNS",
    "SliceAnnotations",
    "TABLE_ALIASES",
    "boxes_from_label_slice",
    "boxes_from_label_volume",
    "clip_boxes_to_image",
    "map_label",
    "read_boxes_csv",
    "read_boxes_table",
    "read_coco_json",
    "read_luna16_csv",
    "read_voc_annotations",
    "read_voc_xml",
    "table_rows_to_annotations",
    "validate_boxes",
    "world_spheres_to_boxes",
    "write_boxes_csv",
    "write_boxes_table",
]
