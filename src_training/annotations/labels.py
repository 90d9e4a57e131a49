"""Boxes from label maps: one box per 8-connected lesion component of a slice (:func:`boxes_from_label_slice`)
or of every slice of a volume (:func:`boxes_from_label_volume`), in the box convention of
:mod:`src_training.boxes` (xyxy pixels, float32, edges at pixel borders).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import LidnetError


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
