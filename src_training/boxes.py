"""THE box invariant of the project (docs/architecture.md, Conventions), owned here once.

A box is ``xyxy`` in pixels of the slice it belongs to (x = column, y = row), float32, with its edges at
pixel borders: a lesion covering columns c0..c1 and rows r0..r1 (inclusive) has the box
``(c0, r0, c1 + 1, r1 + 1)``. A box is **valid** when its four coordinates are finite and ``x1 > x0`` and
``y1 > y0`` (:func:`valid_box_mask`). Against an image of ``H`` rows and ``W`` columns a box lies **inside**
when ``0 <= x0``, ``0 <= y0``, ``x1 <= W``, ``y1 <= H``.

- :func:`valid_box_mask`: the one validity test, element-wise (no error).
- :func:`validate_boxes`: valid (and, given a shape, inside) or :class:`~src_training.errors.LidnetError`.
- :func:`clip_boxes_to_image`: the annotation readers' rule against an image: a box with no overlap ->
  :class:`~src_training.errors.LidnetError`, a box partly outside -> clipped to the image + ``UserWarning``.

Used by :mod:`src_training.annotations` (every reader and writer of box files).
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

from .errors import LidnetError

__all__ = ["valid_box_mask", "validate_boxes", "clip_boxes_to_image"]


def valid_box_mask(boxes: np.ndarray) -> np.ndarray:
    """Which boxes satisfy the invariant: finite coordinates, ``x1 > x0`` and ``y1 > y0``.

    Parameters
    ----------
    boxes : array-like (n, 4)
        ``xyxy`` pixels (any real dtype; lists, numpy arrays).

    Returns
    -------
    ndarray bool (n,)
        True for a valid box. No error is raised; the shape must already be ``(n, 4)`` (``(0, 4)`` gives
        an empty mask).
    """
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.isfinite(arr).all(axis=1) & (arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1])


def validate_boxes(boxes: np.ndarray, shape: Sequence[int] | None = None, where: str = "boxes") -> np.ndarray:
    """Check boxes against the invariant and (optionally) an image size.

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
        The boxes unchanged (``(0, 4)`` for an empty input).

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
    bad = np.nonzero(~valid_box_mask(arr))[0]
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
        Invalid boxes (:func:`validate_boxes`), labels whose number differs from the boxes', or a box with
        no overlap with the image.

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
    inside = valid_box_mask(out)
    for i in range(len(b)):
        if not inside[i]:
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
