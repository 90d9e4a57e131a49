"""Argument checks and file permissions shared by the two writers of :mod:`src_training.io`
(:func:`~src_training.io.write_dicom_series`, :func:`~src_training.io.write_volume`), and the checks a
command runs before a long computation (:func:`check_destination`, :func:`check_volume_output`; the DICOM
one is :func:`src_training.io.dicom_writer.check_dicom_series_output`).

The checks raise :class:`~src_training.errors.CTWriteError` (or ``OutputExistsError``) before anything is
written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CTWriteError, OutputExistsError


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


#: File endings :func:`~src_training.io.write_volume` writes (NIfTI, NRRD, MetaImage in one file).
VOLUME_WRITE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".mha")


def _volume_suffix(path: Path | str) -> str | None:
    """The ending of ``path`` among :data:`VOLUME_WRITE_SUFFIXES` (case-insensitive), or None."""
    name = Path(path).name.lower()
    return next((s for s in VOLUME_WRITE_SUFFIXES if name.endswith(s)), None)


def _check_origin(origin: Sequence[float] | None, what: str) -> np.ndarray:
    """``origin`` (x, y, z) mm as float64 (3,); ``(0, 0, 0)`` when None. Raises CTWriteError otherwise."""
    if origin is None:
        return np.zeros(3)
    try:
        o = np.asarray([float(v) for v in origin], dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        raise CTWriteError(f"{what}: origin must be three numbers (x, y, z) mm, got {origin!r}.") from exc
    if o.size != 3 or not np.all(np.isfinite(o)):
        raise CTWriteError(f"{what}: origin must be three finite numbers (x, y, z) mm, got {origin!r}.")
    return o


def check_destination(path: Path | str, what: str) -> None:
    """Check that ``path`` (a file or folder to be created or replaced) can be written, without writing.

    The nearest existing folder above ``path`` must be a folder (not a file) that the user may write to;
    the writers create the missing folders below it.

    Raises
    ------
    CTWriteError
        A file is in the way of the folders, or the folder is not writable (message names both paths).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    for p in (parent, *parent.parents):
        if not p.exists():
            continue
        if not p.is_dir():
            raise CTWriteError(
                f"Cannot write the {what} {path}: {p} is a file, not a folder. Choose another destination."
            )
        if not os.access(p, os.W_OK | os.X_OK):
            raise CTWriteError(
                f"Cannot write the {what} {path}: the folder {p} is not writable (permission denied). Choose a "
                "folder you can write to."
            )
        return


def check_volume_output(
    path: str | os.PathLike,
    *,
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    direction: Sequence[float] | None = None,
    overwrite: bool = False,
) -> None:
    """Check, without writing, that :func:`~src_training.io.write_volume` can write a volume of this geometry
    to ``path``: a supported ending (:data:`VOLUME_WRITE_SUFFIXES`), positive spacing, finite origin,
    orthonormal direction, no existing file unless ``overwrite``, a writable folder.

    Raises
    ------
    CTWriteError
        Unsupported ending, bad geometry, or a destination that cannot be written (the message names it).
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if _volume_suffix(path) is None:
        raise CTWriteError(f"{path}: unsupported ending for a volume; use .nii, .nii.gz, .nrrd or .mha.")
    _check_spacing(spacing, str(path))
    _check_origin(origin, str(path))
    try:
        _check_direction(direction)
    except CTWriteError as exc:
        raise CTWriteError(f"{path}: {exc}") from exc
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; nothing was written. Choose another file name.")
    if path.is_dir():
        raise CTWriteError(f"Cannot write the volume {path}: it is a folder. Choose a file name.")
    check_destination(path, "volume")
