"""Training and evaluation cases: NDCT + simulated LDCT + lesion boxes of one source, in memory.

Pipeline of one source (:func:`prepare_case`)::

    load NDCT (HU) + boxes (src_training.data.sources) -> [insert synthetic nodules] -> simulate LDCT at
        flux N0 on the native grid (cached) -> [resample slices to image_size] -> CaseArrays

:func:`case_options` is the one map from a :class:`~src_training.config.TrainConfig` to this pipeline.
Training data follow the paper (Chen et al., ACM MM 2021, arXiv:2104.08845, Sec. 4.1): LDCT simulated
from NDCT (Poisson noise at incident flux N0 in the projection domain), 2-D slices, lesion boxes as
detection targets.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .. import simulation
from ..boxes import valid_box_mask
from ..simulation import ScanGeometry
from ..errors import ConfigError, CTLoadError
from ..nodules import DEFAULT_DIAMETER_MM, insert_synthetic_nodules
from .sources import expand_sources, load_source

@dataclass
class CaseArrays:
    """One training case in memory.

    Attributes
    ----------
    name : str
        Identifier (the training source string).
    ndct_hu : ndarray float32 (z, y, x)
        Normal-dose CT in HU.
    ldct_hu : ndarray float32 (z, y, x)
        Simulated low-dose CT in HU, same shape.
    boxes : dict int -> ndarray float32 (n, 4)
        Lesion boxes ``xyxy`` in pixels per slice index (slices without lesions may be absent).
    spacing : (float, float, float)
        Voxel size ``(z, y, x)`` in mm.
    real_boxes : dict int -> ndarray float32 (n, 4)
        The subset of ``boxes`` that are real (annotated) lesions, not synthetic nodules.
    noise_sigma_hu : float or None
        Soft-tissue sigma (HU) of the simulated dose noise on this (possibly resampled) grid
        (:func:`src_training.simulation.soft_tissue_noise_sigma`); None when not simulated.
    native_noise_sigma_hu : float or None
        The same at the native pixel size, where the simulation ran.
    native_spacing : (float, float, float) or None
        Voxel size of the native grid, mm.
    native_noise_sigma_by_slice : list of float
        The native soft-tissue sigma of every slice (HU; empty when not simulated): the dose noise grows
        with the attenuation of the slice (fixed N0, no tube-current modulation).

    Raises
    ------
    CTLoadError
        Shapes differ, not 3-D, or a box is invalid / outside the slice.
    """

    name: str
    ndct_hu: np.ndarray
    ldct_hu: np.ndarray
    boxes: dict[int, np.ndarray] = field(default_factory=dict)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    real_boxes: dict[int, np.ndarray] = field(default_factory=dict)
    noise_sigma_hu: Optional[float] = None
    native_noise_sigma_hu: Optional[float] = None
    native_spacing: Optional[tuple[float, float, float]] = None
    native_noise_sigma_by_slice: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ndct_hu = np.asarray(self.ndct_hu, dtype=np.float32)
        self.ldct_hu = np.asarray(self.ldct_hu, dtype=np.float32)
        if self.ndct_hu.ndim != 3 or self.ndct_hu.shape != self.ldct_hu.shape:
            raise CTLoadError(
                f"Case {self.name}: NDCT {self.ndct_hu.shape} and LDCT {self.ldct_hu.shape} must be equal (z, y, x) "
                f"volumes."
            )
        z, h, w = self.ndct_hu.shape
        clean: dict[int, np.ndarray] = {}
        for k, b in (self.boxes or {}).items():
            k = int(k)
            b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
            if not 0 <= k < z:
                raise CTLoadError(f"Case {self.name}: boxes on slice {k}, but the volume has {z} slices.")
            if len(b) and (
                not valid_box_mask(b).all()  # the project's box invariant (src_training.boxes)
                or np.any(b[:, :2] < -0.5)
                or np.any(b[:, 2] > w + 0.5)
                or np.any(b[:, 3] > h + 0.5)
            ):
                raise CTLoadError(
                    f"Case {self.name}: invalid box on slice {k} (need x0 < x1, y0 < y1 inside the {w}x{h} slice): {b}"
                )
            if len(b):
                b = b.copy()
                b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, w)
                b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, h)
                clean[k] = b
        self.boxes = clean
        self.real_boxes = {int(k): np.asarray(b, dtype=np.float32).reshape(-1, 4)
                           for k, b in (self.real_boxes or {}).items() if len(np.asarray(b).reshape(-1, 4))}
        self.spacing = tuple(float(s) for s in self.spacing)  # type: ignore[assignment]

    @property
    def n_slices(self) -> int:
        """Number of axial slices z."""
        return int(self.ndct_hu.shape[0])

    @property
    def n_boxes(self) -> int:
        """Total number of lesion boxes."""
        return int(sum(len(b) for b in self.boxes.values()))



def resample_slices(
    hu: np.ndarray, boxes: dict[int, np.ndarray], spacing: Sequence[float], image_size: int
) -> tuple[np.ndarray, dict[int, np.ndarray], tuple[float, float, float]]:
    """Resample every axial slice to ``image_size x image_size`` (bilinear, anti-aliased).

    Parameters
    ----------
    hu : ndarray float32 (z, y, x), HU
    boxes : dict int -> (n, 4) xyxy pixels
    spacing : (z, y, x) mm
    image_size : int
        New H = W in pixels.

    Returns
    -------
    (hu (z, S, S) float32, boxes scaled to the new grid, spacing (z, y*H/S, x*W/S))
    """
    z, h, w = hu.shape
    s = int(image_size)
    if (h, w) == (s, s):
        return hu.astype(np.float32, copy=False), dict(boxes), tuple(float(v) for v in spacing)  # type: ignore[return-value]
    t = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[:, None]
    out = F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False, antialias=True)[:, 0].numpy()
    fx, fy = s / w, s / h
    new_boxes = {}
    for k, b in boxes.items():
        b = np.asarray(b, dtype=np.float32).reshape(-1, 4).copy()
        b[:, [0, 2]] *= fx
        b[:, [1, 3]] *= fy
        new_boxes[int(k)] = b
    new_spacing = (float(spacing[0]), float(spacing[1]) * h / s, float(spacing[2]) * w / s)
    return out.astype(np.float32), new_boxes, new_spacing


def _case_seed(source: str, seed: int) -> int:
    """Deterministic per-source seed (so every case gets its own noise realisation)."""
    return (int(seed) * 1_000_003 + zlib.crc32(source.encode("utf-8"))) % (2**31 - 1)


def _insert_nodules(hu, boxes, spacing, per_slice: int, seed: int, diameter_mm=None):
    """Insert ``per_slice`` synthetic nodules in every slice (:func:`src_training.nodules.insert_synthetic_nodules`,
    avoiding the real lesions; diameters ``diameter_mm``, default the module's); returns (new HU volume, boxes
    real + synthetic)."""
    diameter_mm = tuple(diameter_mm) if diameter_mm is not None else DEFAULT_DIAMETER_MM

    rng = np.random.default_rng([int(seed), 7])
    out = np.empty_like(hu, dtype=np.float32)
    merged: dict[int, np.ndarray] = {}
    for z in range(hu.shape[0]):
        real = np.asarray(boxes.get(z, np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        new_slice, new_boxes = insert_synthetic_nodules(
            hu[z], (float(spacing[1]), float(spacing[2])), rng, int(per_slice), diameter_mm, avoid_boxes=real
        )
        out[z] = new_slice
        allb = np.concatenate([real, np.asarray(new_boxes, dtype=np.float32).reshape(-1, 4)])
        if len(allb):
            merged[z] = allb
    return out, merged


def prepare_case(
    source: str,
    *,
    n0: Optional[float] = 1000.0,
    seed: int = 0,
    image_size: Optional[int] = None,
    synthetic_nodules_per_slice: int = 0,
    cache_dir: Optional[str | os.PathLike] = None,
    nodule_diameter_mm: Optional[Sequence[float]] = None,
    geometry=None,
    simulate: bool = True,
    max_slices: Optional[int] = None,
) -> CaseArrays:
    """Load one training or evaluation source and simulate its low-dose version at the NATIVE pixel size.

    Steps: :func:`load_source` -> optional synthetic nodules on the native grid (seeded, never overlapping the
    real lesions) -> low-dose simulation at flux ``n0`` on the native grid
    (:func:`src_training.simulation.cached_simulate_ldct`, cached under ``cache_dir``; uncached when
    ``cache_dir`` is None) -> optional :func:`resample_slices` of NDCT, LDCT and boxes to ``image_size``.
    Simulating before resampling keeps the noise texture of the scanner geometry (the project's rule; the
    previous order, resample then simulate, tied the noise to the working pixel size). The soft-tissue noise
    sigma is measured on both grids (:func:`src_training.simulation.soft_tissue_noise_sigma`).

    Parameters
    ----------
    source : str
        See :func:`load_source`.
    n0 : float or None
        Incident photons per ray of the simulated low-dose scan (paper: 1000 for lung CT, 3000 PE-CT).
    seed : int
        Data seed; the case's simulation and nodule seeds derive from it and the source string.
    image_size : int or None
        Resample slices to ``image_size``^2 pixels after the simulation (boxes scaled, spacing updated); None
        keeps the native size.
    synthetic_nodules_per_slice : int
        Nodules inserted per slice (0 = none).
    cache_dir : path-like or None
        Simulation cache folder.
    nodule_diameter_mm : (min, max) mm, optional
        Synthetic nodule diameters (default :data:`src_training.nodules.DEFAULT_DIAMETER_MM`).
    geometry : src_training.simulation.ScanGeometry, optional
        Scanner geometry (default :data:`src_training.simulation.DEFAULT_GEOMETRY`).
    simulate : bool
        False: no simulation (``ldct_hu`` is a copy of the NDCT; for NDCT-only uses such as detector
        evaluation).
    max_slices : int, optional
        Keep only this many slices, chosen before anything else: those with real lesions first, then the
        others (z order kept). For quick runs and tests.

    Returns
    -------
    CaseArrays
        With ``real_boxes`` and the noise sigma on both grids.

    Raises
    ------
    ConfigError, CTLoadError, SimulationError
        Bad source, unreadable data, or input the simulator refuses.
    """
    hu, spacing, boxes = load_source(source, require_boxes=synthetic_nodules_per_slice <= 0)
    if max_slices is not None and int(max_slices) < hu.shape[0]:
        rank = sorted(range(hu.shape[0]), key=lambda z: (-len(boxes.get(z, ())), z))
        keep = sorted(rank[: max(1, int(max_slices))])
        new_index = {z: i for i, z in enumerate(keep)}
        hu = hu[keep]
        boxes = {new_index[z]: b for z, b in boxes.items() if z in new_index}
    real = {int(k): np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in boxes.items()}
    cseed = _case_seed(source, seed)
    if synthetic_nodules_per_slice > 0:
        hu, boxes = _insert_nodules(hu, boxes, spacing, int(synthetic_nodules_per_slice), cseed + 1,
                                    nodule_diameter_mm)
    native_sigma = None
    if simulate:
        kw = {} if geometry is None else {"geometry": geometry}
        if cache_dir is not None:
            ldct = simulation.cached_simulate_ldct(hu, spacing[1], n0, seed=cseed, cache_dir=cache_dir, **kw)
        else:
            ldct = simulation.simulate_ldct(hu, spacing[1], n0, seed=cseed, **kw)
        native_sigma = simulation.soft_tissue_noise_sigma(hu, ldct)
        by_slice = [simulation.soft_tissue_noise_sigma(hu[z], ldct[z]) for z in range(hu.shape[0])]
    else:
        by_slice = []
        ldct = hu.copy()
    native_spacing = tuple(float(v) for v in spacing)
    if image_size is not None:
        both, boxes, new_spacing = resample_slices(np.concatenate([hu, ldct]), boxes, spacing, int(image_size))
        _, real, _ = resample_slices(hu[:1], real, spacing, int(image_size))
        hu, ldct, spacing = both[: hu.shape[0]], both[hu.shape[0]:], new_spacing
    sigma = simulation.soft_tissue_noise_sigma(hu, ldct) if simulate else None
    return CaseArrays(name=str(source), ndct_hu=hu, ldct_hu=np.asarray(ldct, dtype=np.float32), boxes=boxes,
                      spacing=spacing, real_boxes=real, noise_sigma_hu=sigma, native_noise_sigma_hu=native_sigma,
                      native_spacing=native_spacing, native_noise_sigma_by_slice=by_slice)


def case_options(config) -> dict:
    """Keyword arguments of :func:`prepare_case` that a :class:`~src_training.config.TrainConfig` sets (the one
    place mapping the configuration to the data pipeline): ``n0``, ``seed`` (``config.data_seed``, or
    ``config.seed`` when None), ``image_size``, ``synthetic_nodules_per_slice``, ``nodule_diameter_mm`` and the
    scanner ``geometry`` (``sim_views``, ``sim_bin_mm``, ``sim_filter``)."""
    return dict(
        n0=config.n0,
        seed=config.seed if config.data_seed is None else config.data_seed,
        image_size=config.image_size,
        synthetic_nodules_per_slice=config.synthetic_nodules_per_slice,
        nodule_diameter_mm=tuple(config.nodule_diameter_mm),
        geometry=ScanGeometry(n_views=config.sim_views, bin_mm=config.sim_bin_mm, filter_name=config.sim_filter),
    )


def prepare_cases(config, cache_dir: Optional[str | os.PathLike] = None) -> list[CaseArrays]:
    """:func:`prepare_case` for every source of ``config.train_data`` (a :class:`TrainConfig`).

    Raises
    ------
    ConfigError
        ``train_data`` is empty; plus whatever :func:`prepare_case` raises.
    """
    if not config.train_data:
        raise ConfigError("The configuration has no training data: set train_data, e.g. [\"sample:lung1\"].")
    cache = cache_dir if cache_dir is not None else config.cache_dir
    opts = case_options(config)
    return [prepare_case(src, cache_dir=cache, **opts) for src in expand_sources(config.train_data)]


