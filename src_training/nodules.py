"""Synthetic lung nodules: the lung-parenchyma mask and nodule insertion (data augmentation).

The two real lesions of the bundled sample data give 14 boxes in all, far too few to train or evaluate a
detector, so nodule-like SYNTHETIC blobs are pasted into the lung parenchyma of real CT slices. They are an
augmentation with known ground-truth boxes, not clinical findings.

Everything is computed in small windows around each nodule (the lung-distance map once per slice, which
callers may precompute and pass in), so inserting fresh nodules into every training crop at every step is
cheap (:mod:`src_training.pretrain`).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from .errors import LidnetError

__all__ = ["DEFAULT_DIAMETER_MM", "DEFAULT_SOLID_FRACTION", "SOLID_HU", "SUBSOLID_HU", "lung_mask_2d",
           "lung_distance_map", "insert_synthetic_nodules"]

#: Default range of the synthetic nodule diameter (mean of the two ellipse axes), mm: from a small solid
#: nodule (6 mm, the Fleischner follow-up threshold) to a 24 mm mass. Used for training and evaluation alike.
DEFAULT_DIAMETER_MM: tuple[float, float] = (6.0, 24.0)
#: Default fraction of solid nodules; the others are subsolid (ground-glass) nodules.
DEFAULT_SOLID_FRACTION = 0.5
#: Mean attenuation of solid / subsolid nodules, HU (solid: soft tissue; subsolid: ground glass, the hazy
#: partial filling of the airspaces seen in adenocarcinoma of the lung, about -650 to -300 HU).
SOLID_HU: tuple[float, float] = (20.0, 60.0)
SUBSOLID_HU: tuple[float, float] = (-650.0, -300.0)

_EDGE_PX = 0.5  # width of the sigmoid edge, pixels
_TRIES = 60  # candidate centres tried per nodule before giving up


def lung_mask_2d(hu2d: np.ndarray, threshold_hu: float = -600.0, min_area_px: int = 500) -> np.ndarray:
    """Lung parenchyma of an axial slice: low-HU regions enclosed by the body.

    Pixels below ``threshold_hu`` form candidate regions (8-connected); regions touching the image border
    (air outside the patient, including the region outside the scan circle) are dropped, as are regions
    smaller than ``min_area_px`` or than 10 % of the largest enclosed region (trachea, bowel gas). Vessels
    inside the lung are not part of the mask.

    Parameters
    ----------
    hu2d : ndarray (y, x), HU
    threshold_hu : float
        HU below which a pixel is air-like (default -600 HU).
    min_area_px : int
        Smallest region kept, pixels.

    Returns
    -------
    ndarray bool (y, x)

    Raises
    ------
    LidnetError
        ``hu2d`` is not 2-D.
    """
    hu = np.asarray(hu2d, dtype=np.float32)
    if hu.ndim != 2:
        raise LidnetError(f"lung_mask_2d expects a (y, x) slice, got shape {hu.shape}.")
    low = hu < threshold_hu
    comps, n = ndimage.label(low, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros_like(low)
    border = np.unique(np.concatenate([comps[0], comps[-1], comps[:, 0], comps[:, -1]]))
    areas = np.bincount(comps.ravel(), minlength=n + 1)
    areas[0] = 0
    areas[border] = 0
    keep = (areas >= min_area_px) & (areas >= 0.1 * areas.max())
    return keep[comps]


def lung_distance_map(hu2d: np.ndarray) -> np.ndarray:
    """Distance in pixels from each lung-parenchyma pixel to the nearest non-lung pixel (0 outside the lung).

    ``scipy.ndimage.distance_transform_edt`` of :func:`lung_mask_2d`; precompute it once per slice and pass it
    to :func:`insert_synthetic_nodules` (``lung_distance=``) to insert nodules into many crops cheaply.

    Parameters
    ----------
    hu2d : ndarray (y, x), HU

    Returns
    -------
    ndarray float32 (y, x), pixels
    """
    return ndimage.distance_transform_edt(lung_mask_2d(hu2d)).astype(np.float32)


def _box_gap(cy: float, cx: float, boxes: np.ndarray) -> float:
    """Smallest distance (pixels) from a point to a set of xyxy boxes (0 inside one; inf without boxes)."""
    if not len(boxes):
        return math.inf
    dx = np.maximum(np.maximum(boxes[:, 0] - cx, cx - boxes[:, 2]), 0.0)
    dy = np.maximum(np.maximum(boxes[:, 1] - cy, cy - boxes[:, 3]), 0.0)
    return float(np.sqrt(dx * dx + dy * dy).min())


def insert_synthetic_nodules(
    hu2d: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    rng: np.random.Generator | int,
    n: int,
    diameter_mm: tuple[float, float] = DEFAULT_DIAMETER_MM,
    avoid_boxes: np.ndarray | None = None,
    *,
    lung_distance: np.ndarray | None = None,
    solid_fraction: float = DEFAULT_SOLID_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste SYNTHETIC lung nodules into an axial CT slice (data augmentation for the detector).

    Each nodule is a slightly elliptical blob (axis ratio 0.75-1, random orientation), either solid (mean
    20-60 HU, :data:`SOLID_HU`, faint smooth texture of std 8 HU) or, with probability ``1 - solid_fraction``,
    subsolid / ground glass (mean -650 to -300 HU, :data:`SUBSOLID_HU`, texture std 25 HU), blended into the
    slice with a smooth sigmoid edge (width 0.5 px; the blend weight falls below 5 % within 1.5 px outside the
    contour). Subsolid nodules have 200-550 HU of contrast against the lung instead of ~850 HU, so their
    detection depends on the dose noise, as it does in lung screening. Centres are drawn so that
    the whole nodule plus a 2 px margin lies inside lung parenchyma (:func:`lung_mask_2d`: pixels < -600 HU
    enclosed by the body; the slice border counts as outside) and keeps 4 px from ``avoid_boxes`` and from
    the nodules inserted before it. Work is done in a window around each nodule.

    Parameters
    ----------
    hu2d : ndarray (y, x), HU
        The slice (not modified), finite.
    pixel_spacing_mm : float or (dy, dx)
        Pixel size in mm, to turn ``diameter_mm`` into pixels.
    rng : numpy.random.Generator or int
        Random source (an int seeds ``numpy.random.default_rng``); the result is deterministic for a given
        generator state.
    n : int
        Number of nodules wanted (>= 0).
    diameter_mm : (min, max) mm
        Range of the nodule diameter (mean of the two ellipse axes), drawn uniformly
        (default :data:`DEFAULT_DIAMETER_MM`).
    avoid_boxes : array (m, 4), optional
        ``xyxy`` pixel boxes (e.g. real lesions) the nodules must not overlap.
    lung_distance : ndarray (y, x), optional
        Precomputed :func:`lung_distance_map` of this slice (or the matching crop of the whole slice's map);
        computed here when not given.
    solid_fraction : float in [0, 1]
        Probability that a nodule is solid (default 0.5; 1 = solid only).

    Returns
    -------
    hu2d_new : ndarray float32 (y, x), HU
    boxes : ndarray float32 (k, 4), k <= n
        ``xyxy`` pixel boxes of the inserted nodules (edges at pixel borders), each the bounding box of the
        pixels whose blending weight is >= 0.5 (the nodule's half-intensity contour, as a reader would
        outline it). Fewer than ``n`` when the lungs have no room left.

    Raises
    ------
    LidnetError
        ``hu2d`` not 2-D or not finite, ``n < 0``, bad ``diameter_mm``, spacing or ``lung_distance`` shape.
    """
    hu = np.asarray(hu2d, dtype=np.float32)
    if hu.ndim != 2:
        raise LidnetError(f"insert_synthetic_nodules expects a (y, x) slice, got shape {hu.shape}.")
    if not np.all(np.isfinite(hu)):
        raise LidnetError("insert_synthetic_nodules: the slice contains NaN or infinite values.")
    if n < 0:
        raise LidnetError(f"insert_synthetic_nodules: n must be >= 0, got {n}.")
    if not 0.0 <= float(solid_fraction) <= 1.0:
        raise LidnetError(f"insert_synthetic_nodules: solid_fraction must be in [0, 1], got {solid_fraction}.")
    dmin, dmax = (float(v) for v in diameter_mm)
    if not 0 < dmin <= dmax:
        raise LidnetError(f"insert_synthetic_nodules: diameter_mm must be (min, max) with 0 < min <= max, got {diameter_mm}.")
    ps = np.broadcast_to(np.asarray(pixel_spacing_mm, dtype=np.float64), (2,))
    if not np.all(np.isfinite(ps)) or np.any(ps <= 0):
        raise LidnetError(f"insert_synthetic_nodules: pixel spacing must be positive mm, got {pixel_spacing_mm}.")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    h, w = hu.shape
    if lung_distance is None:
        dist = lung_distance_map(hu) if n > 0 else np.zeros((h, w), np.float32)
    else:
        dist = np.asarray(lung_distance, dtype=np.float32)
        if dist.shape != hu.shape:
            raise LidnetError(f"insert_synthetic_nodules: lung_distance {dist.shape} does not match the slice {hu.shape}.")
    # The slice border counts as outside the lung (a nodule must lie wholly inside the image).
    yy0, xx0 = np.ogrid[:h, :w]
    dist = np.minimum(dist, np.minimum(np.minimum(yy0 + 1, h - yy0), np.minimum(xx0 + 1, w - xx0)).astype(np.float32))
    taken = np.asarray(avoid_boxes if avoid_boxes is not None else np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4)
    out = hu.copy()
    boxes: list[tuple[float, float, float, float]] = []
    for _ in range(n):
        d_mm = rng.uniform(dmin, dmax)
        ratio = rng.uniform(0.75, 1.0)
        theta = rng.uniform(0.0, np.pi)
        solid = rng.random() < float(solid_fraction)
        mean_hu = rng.uniform(*(SOLID_HU if solid else SUBSOLID_HU))
        texture_std = 8.0 if solid else 25.0
        r_px = 0.5 * d_mm / float(np.mean(ps))
        a, b_ax = r_px * 2.0 / (1.0 + ratio), r_px * 2.0 * ratio / (1.0 + ratio)  # semi-axes, mean = r_px
        reach = a + 3.0 * _EDGE_PX + 2.0  # the blob (incl. its soft edge) + margin stays in the lung
        cand = np.flatnonzero(dist.ravel() >= reach)
        if cand.size == 0:
            break
        centre = None
        for _try in range(_TRIES):
            idx = int(cand[rng.integers(cand.size)])
            cy, cx = divmod(idx, w)
            cy += rng.uniform(-0.5, 0.5)
            cx += rng.uniform(-0.5, 0.5)
            if _box_gap(cy + 0.5, cx + 0.5, taken) >= reach + 4.0:
                centre = (cy, cx)
                break
        if centre is None:
            break
        cy, cx = centre
        half = int(math.ceil(a + 6.0 * _EDGE_PX + 2.0))
        r0, r1 = max(int(cy) - half, 0), min(int(cy) + half + 1, h)
        c0, c1 = max(int(cx) - half, 0), min(int(cx) + half + 1, w)
        yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
        ct, st = np.cos(theta), np.sin(theta)
        u = (xx - cx) * ct + (yy - cy) * st
        v = -(xx - cx) * st + (yy - cy) * ct
        rho = np.sqrt((u / a) ** 2 + (v / b_ax) ** 2)
        signed = (rho - 1.0) * np.sqrt(a * b_ax)  # ~ distance to the contour, pixels (negative inside)
        alpha = 1.0 / (1.0 + np.exp(np.clip(signed / _EDGE_PX, -50, 50)))
        texture = ndimage.gaussian_filter(rng.standard_normal(alpha.shape), sigma=max(r_px / 4.0, 1.0))
        texture *= texture_std / max(float(texture.std()), 1e-6)
        win = out[r0:r1, c0:c1]
        out[r0:r1, c0:c1] = (win * (1.0 - alpha) + (mean_hu + texture) * alpha).astype(np.float32)
        inside = alpha >= 0.5
        rows = np.nonzero(inside.any(axis=1))[0]
        cols = np.nonzero(inside.any(axis=0))[0]
        if rows.size == 0:
            continue
        box = (float(c0 + cols[0]), float(r0 + rows[0]), float(c0 + cols[-1] + 1), float(r0 + rows[-1] + 1))
        boxes.append(box)
        taken = np.vstack([taken, np.asarray(box, dtype=np.float64)[None]])
    return out, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
