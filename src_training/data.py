"""Training data of LIDnet: (LDCT, NDCT, lesion boxes) slice triplets.

Pipeline of one training source (:func:`prepare_case`)::

    load NDCT (HU) + boxes -> [resample slices to image_size] -> [insert synthetic nodules]
        -> simulate LDCT at flux N0 (cached) -> CaseArrays

:class:`SliceDataset` serves every axial slice of one or more :class:`CaseArrays` (slices with and
without lesions) as ``(ldct (1,H,W), ndct (1,H,W), target)`` tensors on the networks' [0, 1] scale,
optionally as random crops; :func:`collate_slices` batches them for the denoiser and the torchvision
Faster R-CNN detector.

Training sources (``TrainConfig.train_data``): ``sample:<case>``, a CT path with ``boxes.csv`` beside it, an
``.npz``, or a data set manifest split ``manifest:/path/dataset.json#train`` (``#val``, ``#test``, ``#all``)
written by ``lidnet dataset index`` (:mod:`src_training.datasets`); :func:`prepare_cases` expands a
manifest split into one ``manifest:PATH#case=<id>`` source per case (:func:`expand_sources`). For data
sets larger than memory use :class:`src_training.datasets.StreamingSliceDataset` (same items, slices read
from disk).

Training data follow the paper (Chen et al., ACM MM 2021, arXiv:2104.08845, Sec. 4.1): LDCT simulated
from NDCT (Poisson noise at incident flux N0 in the projection domain), 2-D slices, lesion boxes as
detection targets.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .errors import ConfigError, CTLoadError, LidnetError
from .windowing import DEFAULT_HU_RANGE, hu_to_unit

Target = dict[str, torch.Tensor]


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
                not np.all(np.isfinite(b))
                or np.any(b[:, 2] <= b[:, 0])
                or np.any(b[:, 3] <= b[:, 1])
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


# ----------------------------------------------------------------------------------------- loading


def _boxes_from_rows(rows: np.ndarray, where: str) -> dict[int, np.ndarray]:
    rows = np.asarray(rows, dtype=np.float64)
    if rows.size == 0:
        return {}
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise CTLoadError(f"{where}: 'boxes' must be an (n, 5) array of slice,x0,y0,x1,y1; got shape {rows.shape}.")
    out: dict[int, list] = {}
    for r in rows:
        if not float(r[0]).is_integer():
            raise CTLoadError(f"{where}: box slice index {r[0]} is not an integer.")
        out.setdefault(int(r[0]), []).append(r[1:5])
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _load_npz(path: Path) -> tuple[np.ndarray, tuple[float, float, float], dict[int, np.ndarray]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if "hu" not in data:
                raise CTLoadError(f"{path} has no 'hu' array; a training .npz needs hu (z,y,x), spacing (3,), boxes (n,5).")
            hu = np.asarray(data["hu"], dtype=np.float32)
            spacing = tuple(float(s) for s in np.asarray(data["spacing"]).reshape(-1)) if "spacing" in data else (1.0, 1.0, 1.0)
            rows = np.asarray(data["boxes"]) if "boxes" in data else np.zeros((0, 5))
    except CTLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/pickle/format errors
        raise CTLoadError(f"Cannot read training file {path}: {exc}") from exc
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3 or not np.all(np.isfinite(hu)):
        raise CTLoadError(f"{path}: 'hu' must be a finite (z, y, x) HU array, got shape {hu.shape}.")
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise CTLoadError(f"{path}: 'spacing' must hold 3 positive values (z, y, x) in mm, got {spacing}.")
    return hu, spacing, _boxes_from_rows(rows, str(path))


def boxes_csv_for(path: str | os.PathLike) -> Path:
    """Where the boxes CSV of a CT source is expected: ``<folder>/boxes.csv`` or ``<file>.boxes.csv``."""
    p = Path(path)
    return p / "boxes.csv" if p.is_dir() else p.with_name(p.name + ".boxes.csv")


def load_source(
    source: str, *, require_boxes: bool = True
) -> tuple[np.ndarray, tuple[float, float, float], dict[int, np.ndarray]]:
    """Load a training source string as (NDCT HU (z,y,x) float32, spacing (z,y,x) mm, boxes per slice).

    Parameters
    ----------
    source : str
        ``"sample:<case>"`` (bundled sample, :func:`src_training.sample.load_sample_case`), an ``.npz``
        with ``hu (z,y,x)``, ``spacing (3,)``, ``boxes (n,5: slice,x0,y0,x1,y1)``, or a CT path (DICOM
        folder/file, NIfTI/NRRD/MHA) with its boxes in ``boxes.csv`` inside the folder or
        ``<file>.boxes.csv`` beside the file, or a data set manifest case ``"manifest:PATH#case=<id>"``
        (:func:`src_training.datasets.load_manifest_case`; a split source ``"manifest:PATH#train"``
        (``#val``, ``#test``, ``#all``) is accepted by :func:`prepare_cases`, which expands it with
        :func:`expand_sources`, and here only when the split holds one case).
    require_boxes : bool
        Raise if a CT path has no boxes CSV (LIDnet needs lesion boxes); otherwise return no boxes.

    Raises
    ------
    ConfigError
        Unknown sample name, or no boxes CSV while ``require_boxes``.
    CTLoadError
        Unreadable CT / npz, invalid boxes.
    """
    source = str(source).strip()
    if source.lower().startswith("manifest:"):
        from .datasets import load_manifest_case

        return load_manifest_case(source)
    if source.lower().startswith("sample:"):
        from .sample import load_sample_case

        name = source.split(":", 1)[1].strip()
        try:
            case = load_sample_case(name)
        except LidnetError:
            raise
        except (KeyError, ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"Unknown sample case '{name}' in train_data ({exc}).") from exc
        vol = case.ndct
        boxes = {int(k): np.asarray(v, dtype=np.float32).reshape(-1, 4) for k, v in (case.boxes or {}).items()}
        return np.asarray(vol.hu, dtype=np.float32), tuple(float(s) for s in vol.spacing), boxes
    path = Path(source).expanduser()
    if not path.exists():
        raise ConfigError(
            f"Training source '{source}' not found. Use 'sample:<case>', a CT folder/file with boxes.csv beside it, "
            f"or an .npz with hu, spacing, boxes."
        )
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    from .annotations import read_boxes_csv
    from .io import load_ct

    vol = load_ct(path)
    csv_path = boxes_csv_for(path)
    if csv_path.is_file():
        boxes = read_boxes_csv(csv_path, shape=vol.hu.shape)
    elif require_boxes:
        raise ConfigError(
            f"No lesion boxes for training source {path}: expected {csv_path} (header slice,x0,y0,x1,y1,label). "
            f"Draw boxes in the plugin and save them there, or set synthetic_nodules_per_slice > 0."
        )
    else:
        boxes = {}
    return np.asarray(vol.hu, dtype=np.float32), tuple(float(s) for s in vol.spacing), boxes


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
    from .nodules import DEFAULT_DIAMETER_MM, insert_synthetic_nodules

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
    from . import simulation

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
    from .simulation import ScanGeometry

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


def expand_sources(sources: Sequence[str]) -> list[str]:
    """Training sources with every ``manifest:PATH#split`` replaced by its cases
    (``manifest:PATH#case=<id>``, :func:`src_training.datasets.manifest_case_sources`); other sources
    unchanged, order kept.

    Raises
    ------
    ConfigError
        Unreadable manifest or an empty split.
    """
    out: list[str] = []
    for src in sources:
        if str(src).strip().lower().startswith("manifest:"):
            from .datasets import manifest_case_sources

            out.extend(manifest_case_sources(str(src).strip()))
        else:
            out.append(str(src))
    return out


# ----------------------------------------------------------------------------------------- dataset


def crop_boxes(
    boxes: np.ndarray, x0: int, y0: int, size_x: int, size_y: int, min_fraction: float = 0.5
) -> np.ndarray:
    """Boxes of a crop ``[x0, x0+size_x) x [y0, y0+size_y)``: kept when at least ``min_fraction`` of the
    box area lies inside, clipped to the crop and shifted to crop coordinates.

    Parameters
    ----------
    boxes : ndarray (n, 4) float32, xyxy pixels of the full slice
    x0, y0 : int, crop origin (pixels)
    size_x, size_y : int, crop size
    min_fraction : float in (0, 1]

    Returns
    -------
    ndarray (m, 4) float32, m <= n, xyxy in crop pixels, every box with positive width and height.
    """
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not len(b):
        return b
    cx0 = np.clip(b[:, 0], x0, x0 + size_x)
    cy0 = np.clip(b[:, 1], y0, y0 + size_y)
    cx1 = np.clip(b[:, 2], x0, x0 + size_x)
    cy1 = np.clip(b[:, 3], y0, y0 + size_y)
    inter = np.maximum(cx1 - cx0, 0) * np.maximum(cy1 - cy0, 0)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep = (inter >= min_fraction * area) & (cx1 > cx0) & (cy1 > cy0)
    out = np.stack([cx0 - x0, cy0 - y0, cx1 - x0, cy1 - y0], axis=1)[keep]
    return out.astype(np.float32)


class SliceDataset(Dataset):
    """Every axial slice of one or more cases as ``(ldct, ndct, target)``.

    Parameters
    ----------
    cases : sequence of CaseArrays
    hu_range : (float, float)
        HU range scaled to [0, 1] (:func:`src_training.windowing.hu_to_unit`).
    crop_size : int or None
        Random square crops of this size (deterministic per seed, epoch and item; see
        :meth:`set_epoch`); None or >= the slice size = whole slices.
    seed : int
        Crop seed.
    min_box_fraction : float
        A box is kept in a crop when at least this fraction of its area is inside (then clipped).
    lesion_slices_only : bool
        Only slices with at least one box (default False: slices without lesions are included, with
        empty targets, as negatives for the detector).
    lesion_crop_fraction : float in [0, 1]
        Probability that a crop of a slice with lesions is centred on one of them (a random box, centre
        jittered by up to a quarter of the crop size; LIDnet's losses need lesions inside the crop); the other
        crops are uniform. 0 (default) = uniform crops only.

    Items
    -----
    ``dataset[i]`` or ``dataset[(i, epoch)]`` returns

    - ``ldct``: Tensor (1, H, W) float32 in [0, 1],
    - ``ndct``: Tensor (1, H, W) float32 in [0, 1],
    - ``target``: ``{"boxes": FloatTensor (n, 4) xyxy pixels, "labels": Int64Tensor (n,) of 1}``, n >= 0.

    ``dataset.index[i]`` is ``(case_index, slice_index)``.

    Raises
    ------
    ConfigError
        No cases / no slices, or invalid ``hu_range`` / ``crop_size``.
    """

    def __init__(
        self,
        cases: Sequence[CaseArrays],
        hu_range: tuple[float, float] = DEFAULT_HU_RANGE,
        *,
        crop_size: Optional[int] = None,
        seed: int = 0,
        min_box_fraction: float = 0.5,
        lesion_slices_only: bool = False,
        lesion_crop_fraction: float = 0.0,
    ):
        if isinstance(cases, CaseArrays):
            cases = [cases]
        self.cases = list(cases)
        if not self.cases:
            raise ConfigError("SliceDataset needs at least one case.")
        self.hu_range = (float(hu_range[0]), float(hu_range[1]))
        if not self.hu_range[1] > self.hu_range[0]:
            raise ConfigError(f"hu_range must be increasing, got {hu_range}.")
        if crop_size is not None and int(crop_size) < 1:
            raise ConfigError(f"crop_size must be a positive number of pixels, got {crop_size}.")
        self.crop_size = None if crop_size is None else int(crop_size)
        self.seed = int(seed)
        self.min_box_fraction = float(min_box_fraction)
        if not 0.0 <= float(lesion_crop_fraction) <= 1.0:
            raise ConfigError(f"lesion_crop_fraction must be in [0, 1], got {lesion_crop_fraction}.")
        self.lesion_crop_fraction = float(lesion_crop_fraction)
        self.epoch = 0
        self.index: list[tuple[int, int]] = [
            (ci, z)
            for ci, c in enumerate(self.cases)
            for z in range(c.n_slices)
            if not lesion_slices_only or len(c.boxes.get(z, ())) > 0
        ]
        if not self.index:
            raise ConfigError("The training cases hold no usable slice (no slice with lesion boxes?).")

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch used by ``dataset[i]`` to draw crops (``dataset[(i, epoch)]`` overrides it)."""
        self.epoch = int(epoch)

    def _slice_arrays(self, ci: int, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NDCT (H, W) HU, LDCT (H, W) HU and boxes (n, 4) of slice ``z`` of case ``ci`` (the hook
        :class:`src_training.datasets.StreamingSliceDataset` overrides to read from disk)."""
        case = self.cases[ci]
        return case.ndct_hu[z], case.ldct_hu[z], case.boxes.get(z, np.zeros((0, 4), np.float32))

    def __getitem__(self, item):
        if isinstance(item, (tuple, list)):
            i, epoch = int(item[0]), int(item[1])
        else:
            i, epoch = int(item), self.epoch
        nd, ld, boxes = self._slice_arrays(*self.index[i])
        h, w = nd.shape
        cs = self.crop_size
        if cs is not None and (cs < h or cs < w):
            ch, cw = min(cs, h), min(cs, w)
            rng = np.random.default_rng([self.seed, epoch, i])
            y0 = int(rng.integers(0, h - ch + 1))
            x0 = int(rng.integers(0, w - cw + 1))
            if self.lesion_crop_fraction > 0 and len(boxes) and rng.random() < self.lesion_crop_fraction:
                b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)[int(rng.integers(len(boxes)))]
                cy = 0.5 * (b[1] + b[3]) + rng.uniform(-0.25, 0.25) * ch
                cx = 0.5 * (b[0] + b[2]) + rng.uniform(-0.25, 0.25) * cw
                y0 = int(np.clip(round(cy - ch / 2), 0, h - ch))
                x0 = int(np.clip(round(cx - cw / 2), 0, w - cw))
            nd = nd[y0:y0 + ch, x0:x0 + cw]
            ld = ld[y0:y0 + ch, x0:x0 + cw]
            boxes = crop_boxes(boxes, x0, y0, cw, ch, self.min_box_fraction)
        ldct = torch.from_numpy(hu_to_unit(np.ascontiguousarray(ld), self.hu_range))[None]
        ndct = torch.from_numpy(hu_to_unit(np.ascontiguousarray(nd), self.hu_range))[None]
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        target = {"boxes": b, "labels": torch.ones((b.shape[0],), dtype=torch.int64)}
        return ldct, ndct, target


def collate_slices(items: Sequence[tuple[torch.Tensor, torch.Tensor, Target]]):
    """Batch dataset items.

    Returns
    -------
    (ldct (B,1,H,W) float32, ndct (B,1,H,W) float32, targets list of B dicts boxes/labels)

    Raises
    ------
    ConfigError
        If the slices have different sizes (set ``image_size`` or ``crop_size`` in the configuration).
    """
    shapes = {tuple(it[0].shape) for it in items}
    if len(shapes) != 1:
        raise ConfigError(
            f"Training slices of different sizes in one batch ({sorted(shapes)}); set image_size or crop_size "
            f"in the configuration."
        )
    ldct = torch.stack([it[0] for it in items])
    ndct = torch.stack([it[1] for it in items])
    targets = [{"boxes": it[2]["boxes"], "labels": it[2]["labels"]} for it in items]
    return ldct, ndct, targets
