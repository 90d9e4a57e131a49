"""What evaluation accepts: the error it raises, 2-D slices, box arrays and the pixels a box covers.

Boxes are ``xyxy`` in pixels with edges at pixel borders (``docs/architecture.md``): a box covers the pixels
``rows floor(y0) .. ceil(y1)-1`` and ``columns floor(x0) .. ceil(x1)-1``, clipped to the image (a fractional
box edge includes the partly covered pixel).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..boxes import valid_box_mask
from ..errors import LidnetError

__all__ = ["EvaluationError", "box_pixel_slices"]


class EvaluationError(LidnetError, ValueError):
    """Evaluation got input it cannot score (shape mismatch, NaN, HU where [0, 1] was expected, a box that
    is too small or outside the image, detections and targets of different lengths...)."""



# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------
def _as_2d(name: str, arr: Any) -> np.ndarray:
    """(H, W) float64 copy of a numpy array / torch tensor; leading singleton axes are dropped."""
    if hasattr(arr, "detach"):  # torch tensor
        arr = arr.detach().cpu().numpy()
    a = np.asarray(arr)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise EvaluationError(f"{name} must be one 2D slice (H, W); got an array of shape {np.shape(arr)}.")
    if a.size == 0:
        raise EvaluationError(f"{name} is empty (shape {a.shape}).")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise EvaluationError(f"{name} must hold real numbers, got dtype {a.dtype}.")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        n_bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise EvaluationError(
            f"{name} contains {n_bad} NaN/infinite pixel(s); metrics would be meaningless. "
            "Check the model output / the loaded image."
        )
    return a


def _as_boxes(name: str, boxes: Any, require_positive: bool = True) -> np.ndarray:
    """(n, 4) float64 xyxy boxes from a list / numpy array / torch tensor (n may be 0).

    Raises :class:`EvaluationError` for a wrong shape or NaN/Inf coordinates and, when
    ``require_positive``, for a box that breaks the project's box invariant (:func:`src_training.boxes.valid_box_mask`:
    x1 > x0 and y1 > y0). Also used by :mod:`src_training.report`."""
    if boxes is None:
        return np.zeros((0, 4))
    if hasattr(boxes, "detach"):
        boxes = boxes.detach().cpu().numpy()
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None, :]
    if b.ndim != 2 or b.shape[1] != 4:
        raise EvaluationError(f"{name} must be an (n, 4) array of xyxy pixel boxes, got shape {b.shape}.")
    if not np.all(np.isfinite(b)):
        raise EvaluationError(f"{name} contains NaN/infinite coordinates.")
    if require_positive and not valid_box_mask(b).all():
        raise EvaluationError(f"{name}: every box needs x1 > x0 and y1 > y0 (xyxy pixels); got {b.tolist()}.")
    return b


def box_pixel_slices(box: Sequence[float], shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Row/column slices of the pixels covered by one xyxy box, clipped to an image of ``shape``.

    Parameters
    ----------
    box : (4,) float
        ``x0, y0, x1, y1`` in pixels, edges at pixel borders (column c spans [c, c+1)).
    shape : (H, W)
        Image shape.

    Returns
    -------
    (slice rows, slice cols) or None
        ``None`` when the box lies entirely outside the image.
    """
    h, w = int(shape[0]), int(shape[1])
    x0, y0, x1, y1 = (float(v) for v in box)
    c0 = max(int(math.floor(x0)), 0)
    r0 = max(int(math.floor(y0)), 0)
    c1 = min(int(math.ceil(x1)), w)
    r1 = min(int(math.ceil(y1)), h)
    if c1 <= c0 or r1 <= r0:
        return None
    return slice(r0, r1), slice(c0, c1)


