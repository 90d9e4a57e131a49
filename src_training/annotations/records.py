"""What the annotation readers return: :class:`SliceAnnotations` (boxes and labels per slice of one series)
and the class-name -> label rule (:func:`map_label`: every class is lesion, label 1, unless a ``label_map``
is given). Boxes follow :mod:`src_training.boxes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from ..boxes import validate_boxes
from ..errors import LidnetError


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
        """Append boxes ``(n, 4)`` with labels ``(n,)`` to slice ``z`` (nothing when n = 0).

        ``boxes`` are xyxy pixels (stored as float32; the readers validate them with :mod:`src_training.boxes`
        before adding), ``labels`` int (stored as int64).

        Raises
        ------
        LidnetError
            ``boxes`` and ``labels`` differ in length.
        """
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
        """Boxes as rows ``[slice, x0, y0, x1, y1, label]`` sorted by slice (JSON-friendly: int slice and
        label, float pixel coordinates)."""
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


def map_label(name: str, label_map: Mapping[str, int] | None, where: str) -> int:
    """Class label of an annotation's class name.

    ``label_map=None`` maps every class to 1 (= lesion, the contract's detector label): LIDnet's detector
    is a lesion / background detector (Chen et al. 2021, Sec. 3.2), so subtypes such as Lung-PET-CT-Dx's
    A/B/E/G collapse into "lesion". With a mapping, a name missing from it raises :class:`LidnetError`.

    Parameters
    ----------
    name : str
        Class name as written in the annotation file (surrounding white space ignored).
    label_map : mapping str -> int, or None
    where : str
        File (and line) named in the message.

    Returns
    -------
    int
        The detector label (1 = lesion).

    Raises
    ------
    LidnetError
        ``name`` is not in ``label_map``.
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
