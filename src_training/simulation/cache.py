"""The on-disk cache of :mod:`src_training.simulation`: :func:`cached_simulate_ldct` (``ldct_<key>.npz``
files keyed by everything that changes the result, written atomically, checked by a checksum on reading) and
:func:`read_cached_ldct` (the cached result or None, never simulating).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..checkpoint import atomic_write_bytes
from ..errors import SimulationError
from .geometry import DEFAULT_FOV_TOLERANCE, ScanGeometry, _geometry
from .noise import (
    COUNT_FLOOR,
    DEFAULT_MODE,
    MU_WATER_PER_MM,
    SIMULATOR_VERSION,
    _check_array,
    _check_common,
    _check_n0,
    _check_spacing,
    simulate_ldct,
)

# the logger of the former single-file module (records keep their name)
log = logging.getLogger(__package__)


def _cache_key(arr: np.ndarray, spacing: float, n0: float, seed: int, geom: ScanGeometry, sigma, mode, tol,
               first_index):
    h = hashlib.blake2b(digest_size=20)
    meta = {
        "version": SIMULATOR_VERSION,
        "torch": torch.__version__.split("+")[0],
        "shape": list(arr.shape),
        "dtype": arr.dtype.str,
        "spacing": repr(float(spacing)),
        "n0": repr(float(n0)),
        "seed": int(seed),
        "geometry": geom.to_dict(),
        "electronic_noise_std": repr(float(sigma)),
        "mode": mode,
        "fov_tolerance": repr(float(tol)),
        "first_index": int(first_index),
        "mu_water": MU_WATER_PER_MM,
        "count_floor": COUNT_FLOOR,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _digest(a: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=20).hexdigest()


_CACHE_KWARGS = frozenset({"geometry", "n_views", "bin_mm", "filter_name", "electronic_noise_std", "mode",
                           "fov_tolerance", "batch_slices", "progress", "first_index"})


def _cache_path(hu, pixel_spacing_mm, n0, seed, cache_dir, kw) -> tuple[np.ndarray, str, Path]:
    """Validate the arguments of :func:`cached_simulate_ldct` and return ``(array, key, cache file)``."""
    unknown = set(kw) - _CACHE_KWARGS
    if unknown:
        raise TypeError(f"cached_simulate_ldct() got unexpected keyword argument(s): {sorted(unknown)}")
    arr = _check_array(hu, (2, 3), "The CT volume")
    spacing = _check_spacing(pixel_spacing_mm)
    n0v = _check_n0(n0)
    geom = _geometry(kw.get("geometry"), kw.get("n_views"), kw.get("bin_mm"), kw.get("filter_name"))
    sigma, mode, tol = _check_common(kw.get("electronic_noise_std", 0.0), kw.get("mode", DEFAULT_MODE),
                                     kw.get("fov_tolerance", DEFAULT_FOV_TOLERANCE))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SimulationError(f"seed = {seed!r} must be a non-negative integer.")
    key = _cache_key(arr, spacing, n0v, seed, geom, sigma, mode, tol, kw.get("first_index", 0))
    return arr, key, Path(cache_dir) / f"ldct_{key}.npz"


def _read_cache(path: Path, key: str, arr: np.ndarray) -> np.ndarray | None:
    """The cached result in ``path`` when it is valid (key, checksum, shape, float32), else None."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            data = np.array(z["ldct"])
            ok = (
                str(z["key"]) == key
                and str(z["checksum"]) == _digest(data)
                and data.shape == arr.shape
                and data.dtype == np.float32
            )
        if ok:
            return data
        log.warning("Low-dose cache file %s does not match its checksum/key; recomputing.", path)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("Low-dose cache file %s is unreadable (%s); recomputing.", path, exc)
    return None


def read_cached_ldct(
    hu: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    n0: float | None,
    *,
    seed: int,
    cache_dir: str | os.PathLike,
    **kw,
) -> np.ndarray | None:
    """The result :func:`cached_simulate_ldct` would return, if its cache already holds it; never simulates.

    Same arguments as :func:`cached_simulate_ldct` (the same cache key: input bytes, spacing, N0, seed,
    geometry, ...). Costs one hash of ``hu`` and, on a hit, reading and checking the cache file; use it to
    decide whether a simulation has to run (e.g. in a background worker) before calling
    :func:`cached_simulate_ldct`.

    Returns
    -------
    ndarray float32, same shape as ``hu``, or None
        Low-dose HU from the cache; None when there is no valid cache file (missing, damaged, another key).

    Raises
    ------
    SimulationError
        Invalid arguments (as :func:`simulate_ldct`).
    """
    arr, key, path = _cache_path(hu, pixel_spacing_mm, n0, seed, cache_dir, kw)
    return _read_cache(path, key, arr)


def cached_simulate_ldct(
    hu: np.ndarray,
    pixel_spacing_mm: float | Sequence[float],
    n0: float | None,
    *,
    seed: int,
    cache_dir: str | os.PathLike,
    **kw,
) -> np.ndarray:
    """:func:`simulate_ldct` with an on-disk cache.

    The cache file is ``cache_dir/ldct_<key>.npz`` where ``key`` hashes the input bytes, shape and dtype,
    spacing, N0, seed, geometry, electronic noise, mode, fov_tolerance, first_index, :data:`SIMULATOR_VERSION`
    and the torch version. ``batch_slices`` and ``progress`` do not change the result and are not part of the
    key. The file stores the result, the key and a checksum; it is written atomically
    (:func:`src_training.checkpoint.atomic_write_bytes`). A file that cannot be read, has the wrong key,
    shape or dtype, or fails its checksum is ignored, recomputed and overwritten. :func:`read_cached_ldct`
    tells whether the cache holds a result without simulating.

    Parameters
    ----------
    hu, pixel_spacing_mm, n0, seed
        As in :func:`simulate_ldct`.
    cache_dir : path-like
        Folder for cache files (created if needed).
    **kw
        Other keyword arguments of :func:`simulate_ldct`.

    Returns
    -------
    ndarray float32, same shape as ``hu``
        Low-dose HU (identical to the uncached call).

    Raises
    ------
    SimulationError
        As :func:`simulate_ldct`. An unwritable cache folder only logs a warning.
    """
    arr, key, path = _cache_path(hu, pixel_spacing_mm, n0, seed, cache_dir, kw)
    cached = _read_cache(path, key, arr)
    if cached is not None:
        return cached

    result = simulate_ldct(arr, pixel_spacing_mm, n0, seed=seed, **kw)
    buf = io.BytesIO()
    np.savez(buf, ldct=result, key=np.array(key), checksum=np.array(_digest(result)))
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        log.warning("Could not write the low-dose cache file %s (%s); continuing without cache.", path, exc)
    return result
