"""CT display windows and the HU <-> [0, 1] scaling used by the networks.

Display windows are (width W, level L) in HU; the window maps [L - W/2, L + W/2] to [0, 1].
Presets follow common radiology practice (see ``../shared/reference/ct-conventions.md``):
lung 1500/-600, mediastinum 350/50, abdomen (soft tissue) 400/40, liver 150/30, bone 1800/400,
brain 80/40.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from .errors import ConfigError

#: Window presets: name -> (width, level) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "abdomen": (400.0, 40.0),
    "soft_tissue": (400.0, 40.0),
    "liver": (150.0, 30.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}

#: HU range the networks see by default: clipped to [-1024, 1024] HU, then scaled to [0, 1].
DEFAULT_HU_RANGE: tuple[float, float] = (-1024.0, 1024.0)

Window = Union[str, tuple[float, float]]


def window_limits(window: Window) -> tuple[float, float]:
    """Return the (low, high) HU limits of a window.

    Parameters
    ----------
    window : str or (float, float)
        A preset name from :data:`WINDOWS` (case-insensitive, ``-``/space allowed for ``_``) or
        ``(width, level)`` in HU.

    Returns
    -------
    (float, float)
        ``(level - width/2, level + width/2)`` in HU.

    Raises
    ------
    ConfigError
        Unknown preset name, or width <= 0.
    """
    if isinstance(window, str):
        key = window.strip().lower().replace("-", "_").replace(" ", "_")
        if key not in WINDOWS:
            raise ConfigError(f"Unknown CT window '{window}'. Presets: {', '.join(WINDOWS)}.")
        width, level = WINDOWS[key]
    else:
        width, level = (float(v) for v in window)
    if not np.isfinite(width) or not np.isfinite(level) or width <= 0:
        raise ConfigError(f"A CT window needs a positive finite width, got W={width}, L={level}.")
    return level - width / 2.0, level + width / 2.0


def apply_window(hu: np.ndarray, window: Window) -> np.ndarray:
    """Map HU to [0, 1] through a display window (clipped outside it).

    Parameters
    ----------
    hu : ndarray, any shape
        Intensities in HU.
    window : str or (width, level)
        See :func:`window_limits`.

    Returns
    -------
    ndarray float32, same shape, values in [0, 1].
    """
    lo, hi = window_limits(window)
    out = (np.asarray(hu, dtype=np.float32) - lo) / (hi - lo)
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def hu_to_unit(hu, hu_range: tuple[float, float] = DEFAULT_HU_RANGE):
    """Clip HU to ``hu_range`` and scale to [0, 1] (the networks' input scale).

    Works on numpy arrays (returns float32) and torch tensors (returns the same dtype).

    Raises
    ------
    ConfigError
        If ``hu_range`` is not increasing.
    """
    lo, hi = float(hu_range[0]), float(hu_range[1])
    if not hi > lo:
        raise ConfigError(f"hu_range must be increasing, got {hu_range}.")
    if isinstance(hu, np.ndarray) or np.isscalar(hu):
        return np.clip((np.asarray(hu, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
    return ((hu - lo) / (hi - lo)).clamp(0.0, 1.0)


def unit_to_hu(unit, hu_range: tuple[float, float] = DEFAULT_HU_RANGE):
    """Inverse of :func:`hu_to_unit` (no clipping): ``HU = lo + u * (hi - lo)``.

    Works on numpy arrays (returns float32) and torch tensors.
    """
    lo, hi = float(hu_range[0]), float(hu_range[1])
    if isinstance(unit, np.ndarray) or np.isscalar(unit):
        return (lo + np.asarray(unit, dtype=np.float32) * (hi - lo)).astype(np.float32)
    return lo + unit * (hi - lo)
