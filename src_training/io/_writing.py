"""Argument checks and file permissions shared by the two writers of :mod:`src_training.io`
(:func:`~src_training.io.write_dicom_series`, :func:`~src_training.io.write_volume`).

The checks raise :class:`~src_training.errors.CTWriteError` before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CTWriteError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fix_mode(path: Path | str, is_dir: bool = False) -> None:
    """Give a temp file/folder (created 0600/0700 by tempfile) the usual permissions under the umask."""
    try:
        os.chmod(path, (0o777 if is_dir else 0o666) & ~_umask())
    except OSError:
        pass


def _check_hu_array(hu: Any, what: str) -> np.ndarray:
    arr = np.asarray(hu)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise CTWriteError(f"{what}: expected a (z, y, x) or (y, x) array, got shape {np.shape(hu)}.")
    if arr.dtype.kind not in "biuf":
        raise CTWriteError(f"{what}: expected numbers, got dtype {arr.dtype}.")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise CTWriteError(f"{what}: the array holds NaN or infinite values; nothing was written.")
    return arr


def _check_spacing(spacing: Sequence[float], what: str) -> tuple[float, float, float]:
    try:
        sp = tuple(float(v) for v in spacing)
    except Exception as exc:  # noqa: BLE001
        raise CTWriteError(f"{what}: spacing must be three numbers (z, y, x) in mm, got {spacing!r}.") from exc
    if len(sp) != 3 or not all(np.isfinite(v) and v > 0 for v in sp):
        raise CTWriteError(f"{what}: spacing must be three positive numbers (z, y, x) in mm, got {spacing!r}.")
    return sp  # type: ignore[return-value]


def _check_direction(direction: Sequence[float] | None) -> np.ndarray:
    if direction is None:
        return np.eye(3)
    d = np.asarray([float(v) for v in direction], dtype=np.float64)
    if d.size != 9:
        raise CTWriteError(f"direction must have 9 values (SimpleITK row-major 3x3), got {d.size}.")
    d = d.reshape(3, 3)
    if np.max(np.abs(d.T @ d - np.eye(3))) > 1e-3:
        raise CTWriteError("direction must be an orthonormal 3x3 matrix (SimpleITK direction cosines).")
    return d
