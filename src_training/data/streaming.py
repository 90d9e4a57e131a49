"""Data sets larger than memory: slices cached once as float32 ``.npy`` files and read through memory maps.

:class:`StreamingSliceDataset` serves the same items as :class:`src_training.data.slices.SliceDataset` while
keeping only an index in memory: NDCT and simulated LDCT of every case are cached once as float32 ``.npy``
files and read slice by slice through ``numpy`` memory maps.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError
from ..simulation import SIMULATOR_VERSION
from ..windowing import DEFAULT_HU_RANGE
from .cases import prepare_case
from .slices import SliceDataset
from .sources import expand_sources, source_files



@dataclass
class CachedCase:
    """A case of :class:`StreamingSliceDataset`: where its slices are cached, not the slices themselves.

    Attributes
    ----------
    name : str
        Training source string.
    cache_dir : Path
        Folder with ``ndct.npy`` and ``ldct.npy`` (float32 HU ``(z, y, x)``) and ``meta.json``.
    shape : (Z, H, W)
    boxes : dict int -> ndarray float32 (n, 4)
        ``xyxy`` pixel boxes per slice (after resampling / synthetic nodules).
    """

    name: str
    cache_dir: Path
    shape: tuple[int, int, int]
    boxes: dict[int, np.ndarray]

    @property
    def n_slices(self) -> int:
        """Number of axial slices z."""
        return int(self.shape[0])


class StreamingSliceDataset(SliceDataset):
    """:class:`~src_training.data.SliceDataset` whose slices stream from disk.

    Every case is prepared once with :func:`src_training.data.prepare_case` (load, optional resampling,
    synthetic nodules, LDCT simulation with :func:`src_training.simulation.simulate_ldct`) and cached as
    ``cache_dir/slices_<key>/{ndct.npy, ldct.npy, meta.json}`` (float32 HU ``(z, y, x)``; written into a
    temporary folder and renamed into place, so a crash never leaves a half cache). The key hashes the
    source string, the source file's size and modification time, N0, seed, image_size,
    synthetic_nodules_per_slice and the simulator version. Only one case is in memory while caches are
    built; afterwards ``dataset.cases`` holds :class:`CachedCase` records (paths, shapes, boxes) and each item reads
    its NDCT and LDCT slice through ``numpy.load(..., mmap_mode="r")``.

    Items are identical to those of ``SliceDataset(prepare_cases(...), hu_range, crop_size, seed)``:
    ``(ldct (1,H,W) float32 [0,1], ndct (1,H,W) float32 [0,1], {"boxes": (n,4) float32, "labels": (n,) int64})``,
    indexed by ``i`` or ``(i, epoch)`` (as the trainers' batch stream asks), crops included.

    Parameters
    ----------
    sources : sequence of str
        Training sources (:func:`src_training.data.load_source`; ``manifest:`` split sources are expanded).
    cache_dir : path-like
        Folder of the slice caches.
    hu_range, crop_size, seed, min_box_fraction, lesion_slices_only
        As :class:`SliceDataset` (``seed`` also seeds simulation and nodules, as :func:`prepare_cases`).
    n0, image_size, synthetic_nodules_per_slice
        As :func:`src_training.data.prepare_case`.

    Raises
    ------
    ConfigError, CTLoadError, SimulationError
        As :func:`prepare_case`; ConfigError when no source / no usable slice.
    """

    def __init__(
        self,
        sources: Sequence[str],
        cache_dir: str | os.PathLike,
        hu_range: tuple[float, float] = DEFAULT_HU_RANGE,
        *,
        n0: float = 1000.0,
        seed: int = 0,
        image_size: Optional[int] = None,
        synthetic_nodules_per_slice: int = 0,
        crop_size: Optional[int] = None,
        min_box_fraction: float = 0.5,
        lesion_slices_only: bool = False,
    ):
        srcs = expand_sources([sources] if isinstance(sources, str) else list(sources))
        if not srcs:
            raise ConfigError("StreamingSliceDataset needs at least one training source.")
        self.cache_dir = Path(cache_dir)
        self.sources = srcs
        opts = dict(n0=float(n0), seed=int(seed), image_size=image_size,
                    synthetic_nodules_per_slice=int(synthetic_nodules_per_slice))
        cached = []
        for src in srcs:
            d = self._ensure_cache(src, opts)
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            boxes = {int(z): np.asarray(b, dtype=np.float32).reshape(-1, 4) for z, b in meta["boxes"].items()}
            cached.append(CachedCase(src, d, tuple(int(v) for v in meta["shape"]), boxes))  # type: ignore[arg-type]
        # SliceDataset's own checks and slice index, over cases that hold paths instead of volumes.
        super().__init__(cached, hu_range, crop_size=crop_size, seed=seed, min_box_fraction=min_box_fraction,
                         lesion_slices_only=lesion_slices_only)

    @classmethod
    def from_config(cls, config, cache_dir: str | os.PathLike | None = None) -> "StreamingSliceDataset":
        """Build from a :class:`~src_training.config.TrainConfig` (``train_data``, ``hu_range``, ``n0``,
        ``seed``, ``image_size``, ``crop_size``, ``synthetic_nodules_per_slice``); caches under ``cache_dir``
        or ``config.cache_dir``.

        Raises
        ------
        ConfigError
            No cache folder given, empty ``train_data``.
        """
        cache = cache_dir if cache_dir is not None else config.cache_dir
        if cache is None:
            raise ConfigError("StreamingSliceDataset needs a cache folder: set cache_dir in the configuration.")
        if not config.train_data:
            raise ConfigError("The configuration has no training data: set train_data.")
        return cls(config.train_data, cache, config.hu_range, n0=config.n0, seed=config.seed,
                   image_size=config.image_size, synthetic_nodules_per_slice=config.synthetic_nodules_per_slice,
                   crop_size=config.crop_size)

    @staticmethod
    def _source_stamp(src: str) -> list:
        """Size and mtime of the files a source reads (so an edited source gets a new cache)."""
        paths = source_files(src)
        stamp = []
        for p in paths:
            try:
                st = p.stat()
                stamp.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
            except OSError:
                stamp.append([str(p), None, None])
        return stamp

    def _ensure_cache(self, src: str, opts: dict) -> Path:
        key_doc = json.dumps({"v": 1, "source": src, "stamp": self._source_stamp(src), "sim": SIMULATOR_VERSION,
                              **opts}, sort_keys=True)
        key = hashlib.sha256(key_doc.encode("utf-8")).hexdigest()[:24]
        final = self.cache_dir / f"slices_{key}"
        if self._cache_ok(final):
            return final
        case = prepare_case(src, cache_dir=None, **opts)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".slices_{key}.tmp-", dir=self.cache_dir))
        try:
            np.save(tmp / "ndct.npy", np.ascontiguousarray(case.ndct_hu, dtype=np.float32))
            np.save(tmp / "ldct.npy", np.ascontiguousarray(case.ldct_hu, dtype=np.float32))
            meta = {"source": src, "key": key_doc, "shape": list(case.ndct_hu.shape), "spacing": list(case.spacing),
                    "boxes": {str(z): np.asarray(b).tolist() for z, b in case.boxes.items()}}
            (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
            del case
            if final.exists():  # an unusable old cache: replace it
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.replace(tmp, final)
            except OSError:
                if not self._cache_ok(final):  # not a concurrent writer that finished first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    @staticmethod
    def _cache_ok(d: Path) -> bool:
        try:
            meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
            shape = tuple(int(v) for v in meta["shape"])
            for name in ("ndct.npy", "ldct.npy"):
                arr = np.load(d / name, mmap_mode="r")
                if arr.shape != shape or arr.dtype != np.float32:
                    return False
                del arr
            return True
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def _slice_arrays(self, ci: int, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        case = self.cases[ci]
        nd = np.load(case.cache_dir / "ndct.npy", mmap_mode="r")
        ld = np.load(case.cache_dir / "ldct.npy", mmap_mode="r")
        out = np.array(nd[z]), np.array(ld[z])
        del nd, ld
        return out[0], out[1], case.boxes.get(z, np.zeros((0, 4), np.float32))
