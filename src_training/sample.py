"""Bundled sample chest CT cases and synthetic nodules.

The sample cases (``sample_data/lung1``, ``sample_data/lung2``) are real chest CT from the pyradiomics 3.0.1
test data (BSD-3-Clause), 20 axial slices each, built by ``scripts/make_sample_data.py`` (see
``sample_data/README.md``). ``lung1`` (one ~15 px nodule on 3 slices) is for training, ``lung2`` (a ~50 px
tumour on 11 slices) for evaluation; cases are never split by slice.

Two real lesions are far too few to train a detector, so :func:`insert_synthetic_nodules` pastes
SYNTHETIC nodule-like blobs into lung parenchyma. They are an augmentation, not clinical findings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from .annotations import read_boxes_csv
from .errors import LidnetError
from .io import CTVolume, load_ct

#: Default sample-data folder: ``<repo root>/sample_data`` (found relative to this file). The environment
#: variable ``LIDNET_SAMPLE_DATA`` overrides it; :func:`sample_dir` re-reads the variable at each call.
SAMPLE_DIR: Path = Path(os.environ.get("LIDNET_SAMPLE_DATA") or Path(__file__).resolve().parents[1] / "sample_data")


def sample_dir() -> Path:
    """The sample-data folder now: ``$LIDNET_SAMPLE_DATA`` if set, else :data:`SAMPLE_DIR`."""
    env = os.environ.get("LIDNET_SAMPLE_DATA")
    return Path(env) if env else SAMPLE_DIR


@dataclass
class SampleCase:
    """One bundled sample case.

    Attributes
    ----------
    name : str
        ``"lung1"`` or ``"lung2"``.
    ndct : CTVolume
        The normal-dose CT series (``<case>/ndct``), hu float32 (z, y, x) in HU.
    label : ndarray uint8 (z, y, x)
        Lesion mask (1 = lesion) on the same grid and z order as ``ndct.hu``.
    boxes : dict int -> ndarray float32 (n, 4)
        ``xyxy`` pixel boxes per z index (slices with lesions only), from ``<case>/boxes.csv``.
    """

    name: str
    ndct: CTVolume
    label: np.ndarray
    boxes: dict[int, np.ndarray]


def sample_case_names() -> list[str]:
    """Names of the sample cases available (sub-folders of :func:`sample_dir` with an ``ndct`` series),
    sorted; empty when the folder is missing."""
    root = sample_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "ndct").is_dir())


def load_sample_case(name: str) -> SampleCase:
    """Load a sample case: CT series, label map and boxes.

    Parameters
    ----------
    name : str
        A name from :func:`sample_case_names` (``"lung1"``, ``"lung2"``).

    Returns
    -------
    SampleCase

    Raises
    ------
    LidnetError
        The case folder, its ``ndct`` series, ``label.nrrd`` or ``boxes.csv`` is missing or does not match
        (the message names the folder and how to rebuild it).
    """
    root = sample_dir()
    folder = root / name
    rebuild = "Rebuild it with: python scripts/make_sample_data.py <extracted pyradiomics-3.0.1 sdist>."
    if not (folder / "ndct").is_dir():
        available = ", ".join(sample_case_names()) or "none"
        raise LidnetError(
            f"Sample case '{name}' not found: {folder / 'ndct'} does not exist (available: {available}; sample "
            f"folder {root}, override with LIDNET_SAMPLE_DATA). {rebuild}"
        )
    for f in ("label.nrrd", "boxes.csv"):
        if not (folder / f).is_file():
            raise LidnetError(f"Sample case '{name}' is incomplete: {folder / f} is missing. {rebuild}")
    ndct = load_ct(folder / "ndct")
    lab_vol = load_ct(folder / "label.nrrd")
    label = (lab_vol.hu > 0.5).astype(np.uint8)
    if label.shape != ndct.hu.shape:
        raise LidnetError(
            f"Sample case '{name}': label {label.shape} and CT {ndct.hu.shape} differ in shape in {folder}. {rebuild}"
        )
    boxes = read_boxes_csv(folder / "boxes.csv", ndct.hu.shape)
    return SampleCase(name=name, ndct=ndct, label=label, boxes=boxes)


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


def insert_synthetic_nodules(
    hu2d: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    rng: np.random.Generator | int,
    n: int,
    diameter_mm: tuple[float, float] = (6.0, 14.0),
    avoid_boxes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste SYNTHETIC lung nodules into an axial CT slice (data augmentation for the detector).

    These lesions are synthetic: the two real tumours of the sample data give too few boxes to train a
    detector. Each nodule is a slightly elliptical soft-tissue blob (axis ratio 0.75-1, random orientation),
    mean 20-60 HU plus faint smooth texture (std ~8 HU), blended into the slice with a smooth sigmoid edge
    (width 0.5 px; the blend weight falls below 5 % within 1.5 px outside the contour). Centres are drawn so that the whole nodule (plus a 2 px margin) lies inside lung
    parenchyma (:func:`lung_mask_2d`: pixels < -600 HU enclosed by the body) and does not touch
    ``avoid_boxes`` nor another inserted nodule (4 px margin).

    Parameters
    ----------
    hu2d : ndarray (y, x), HU
        The slice (not modified).
    pixel_spacing_mm : float or (dy, dx)
        Pixel size in mm, to turn ``diameter_mm`` into pixels.
    rng : numpy.random.Generator or int
        Random source (an int seeds ``numpy.random.default_rng``); the result is deterministic for a given
        generator state.
    n : int
        Number of nodules wanted (>= 0).
    diameter_mm : (min, max) mm
        Range of the nodule diameter (mean of the two ellipse axes), drawn uniformly.
    avoid_boxes : array (m, 4), optional
        ``xyxy`` pixel boxes (e.g. real lesions) the nodules must not overlap.

    Returns
    -------
    hu2d_new : ndarray float32 (y, x), HU
    boxes : ndarray float32 (k, 4), k <= n
        ``xyxy`` pixel boxes of the inserted nodules (edges at pixel borders), each the bounding box of the
        pixels whose blending weight is >= 0.5 (the nodule's half-intensity contour, as a reader would
        outline it). Fewer than ``n`` when the lungs have no room left (or none is found).

    Raises
    ------
    LidnetError
        ``hu2d`` not 2-D or not finite, ``n < 0``, bad ``diameter_mm`` or spacing.
    """
    hu = np.asarray(hu2d, dtype=np.float32)
    if hu.ndim != 2:
        raise LidnetError(f"insert_synthetic_nodules expects a (y, x) slice, got shape {hu.shape}.")
    if not np.all(np.isfinite(hu)):
        raise LidnetError("insert_synthetic_nodules: the slice contains NaN or infinite values.")
    if n < 0:
        raise LidnetError(f"insert_synthetic_nodules: n must be >= 0, got {n}.")
    dmin, dmax = (float(v) for v in diameter_mm)
    if not 0 < dmin <= dmax:
        raise LidnetError(f"insert_synthetic_nodules: diameter_mm must be (min, max) with 0 < min <= max, got {diameter_mm}.")
    ps = np.broadcast_to(np.asarray(pixel_spacing_mm, dtype=np.float64), (2,))
    if not np.all(np.isfinite(ps)) or np.any(ps <= 0):
        raise LidnetError(f"insert_synthetic_nodules: pixel spacing must be positive mm, got {pixel_spacing_mm}.")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = hu.copy()
    h, w = hu.shape
    free = lung_mask_2d(hu)
    blocked = np.zeros_like(free)
    for b in np.asarray(avoid_boxes if avoid_boxes is not None else np.zeros((0, 4)), dtype=np.float64).reshape(-1, 4):
        x0, y0 = max(int(np.floor(b[0])) - 4, 0), max(int(np.floor(b[1])) - 4, 0)
        x1, y1 = min(int(np.ceil(b[2])) + 4, w), min(int(np.ceil(b[3])) + 4, h)
        blocked[y0:y1, x0:x1] = True
    boxes: list[tuple[float, float, float, float]] = []
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    edge = 0.5  # sigmoid width, pixels
    for _ in range(n):
        # Draw the nodule's size/shape first, then find where it fits.
        d_mm = rng.uniform(dmin, dmax)
        ratio = rng.uniform(0.75, 1.0)
        theta = rng.uniform(0.0, np.pi)
        mean_hu = rng.uniform(20.0, 60.0)
        r_px = 0.5 * d_mm / float(np.mean(ps))
        a, b_ax = r_px * 2.0 / (1.0 + ratio), r_px * 2.0 * ratio / (1.0 + ratio)  # semi-axes, mean = r_px
        reach = a + 3.0 * edge + 2.0  # the blob (incl. its soft edge) + margin stays in the lung
        dist_lung = ndimage.distance_transform_edt(free)
        dist_block = ndimage.distance_transform_edt(~blocked) if blocked.any() else np.full(free.shape, np.inf)
        cand = np.argwhere((dist_lung >= reach) & (dist_block >= reach + 4.0))
        if cand.size == 0:
            break
        cy, cx = cand[rng.integers(len(cand))].astype(np.float64)
        cy += rng.uniform(-0.5, 0.5)
        cx += rng.uniform(-0.5, 0.5)
        ct, st = np.cos(theta), np.sin(theta)
        u = (xx - cx) * ct + (yy - cy) * st
        v = -(xx - cx) * st + (yy - cy) * ct
        rho = np.sqrt((u / a) ** 2 + (v / b_ax) ** 2)
        signed = (rho - 1.0) * np.sqrt(a * b_ax)  # ~ distance to the contour, pixels (negative inside)
        alpha = 1.0 / (1.0 + np.exp(np.clip(signed / edge, -50, 50)))
        texture = ndimage.gaussian_filter(rng.standard_normal((h, w)), sigma=max(r_px / 4.0, 1.0))
        texture *= 8.0 / max(float(texture.std()), 1e-6)
        lesion = mean_hu + texture
        out = (out * (1.0 - alpha) + lesion * alpha).astype(np.float32)
        inside = alpha >= 0.5
        rows = np.nonzero(inside.any(axis=1))[0]
        cols = np.nonzero(inside.any(axis=0))[0]
        if rows.size == 0:
            continue
        box = (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))
        boxes.append(box)
        blocked[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = True
        free &= ~(alpha > 0.01)
    return out, np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
