"""Slice positions along the slice normal: the one check that a stack of slices (the files of a series, or
the frames of a multi-frame file) forms one evenly spaced volume.

Used by :mod:`~src_training.io.dicom_series` (labels = file names) and :mod:`~src_training.io.enhanced_ct`
(labels = ``"frame k"``). What is refused: docs/reliability.md (missing, duplicated, unevenly spaced slices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import CTLoadError


def check_slice_positions(pos_mm: np.ndarray, labels: Sequence[str], where: str) -> float:
    """Check that sorted slice positions are distinct and evenly spaced; return the slice spacing.

    Parameters
    ----------
    pos_mm : numpy.ndarray, shape (n,), float
        Position of each slice along the slice normal in mm (``ImagePositionPatient . (row x column)``, DICOM
        PS3.3 C.7.6.2 Image Plane Module; for a multi-frame file the PlanePositionSequence of each frame,
        C.7.6.16.2.3), **sorted ascending**, ``n >= 2``.
    labels : sequence of str, length n
        What names each slice in a message, in the same order: the file path of a series slice, or
        ``"frame k"`` (1-based frame number) for a frame of a multi-frame file. The duplicate message shows a
        label as given; the gap message shows its last path component (``Path(label).name``).
    where : str
        Start of every message (``"series <uid> in <folder>"`` or the file path).

    Returns
    -------
    float
        The slice spacing ``dz`` in mm (> 0): the median of the differences between successive positions.
        Jitter up to 10 % of the spacing (at least 0.01 mm) is accepted.

    Raises
    ------
    CTLoadError
        Two slices closer than 0.001 mm ("are at the same position ... along the slice normal (duplicated
        slice ...)"), a gap that is a whole number of spacings ("about N missing slice(s) (expected at ... mm)"),
        any other irregular gap ("uneven slice spacing"; slices are never resampled to an even grid), or
        positions that are not finite numbers.
    ValueError
        If ``pos_mm`` has fewer than 2 values or ``labels`` a different length (a programming error).
    """
    pos = np.asarray(pos_mm, dtype=np.float64).reshape(-1)
    if pos.size < 2 or len(labels) != pos.size:
        raise ValueError(f"check_slice_positions needs >= 2 positions and one label each ({pos.size}, {len(labels)})")
    if not np.all(np.isfinite(pos)):
        i = int(np.nonzero(~np.isfinite(pos))[0][0])
        raise CTLoadError(f"{where}: the position of {labels[i]} along the slice normal is not a finite number.")
    diffs = np.diff(pos)
    dup = np.nonzero(diffs < 1e-3)[0]
    if dup.size:
        i = int(dup[0])
        raise CTLoadError(
            f"{where}: {labels[i]} and {labels[i + 1]} are at the same position {pos[i]:.2f} mm along "
            "the slice normal (duplicated slice, or two series sharing a SeriesInstanceUID). Remove the "
            "duplicate or load the series from a clean export."
        )
    dz = float(np.median(diffs))
    bad = np.nonzero(np.abs(diffs - dz) > max(0.1 * dz, 0.01))[0]
    if bad.size:
        i = int(bad[0])
        n_missing = int(round(diffs[i] / dz)) - 1
        if n_missing >= 1 and abs(diffs[i] - dz * (n_missing + 1)) <= max(0.1 * dz, 0.01):
            expected = ", ".join(f"{pos[i] + dz * (j + 1):.2f}" for j in range(min(n_missing, 5)))
            what = f"about {n_missing} missing slice(s) (expected at {expected} mm)"
            todo = "Load the complete series (all files) and try again."
        else:
            what = "uneven slice spacing"
            todo = ("Slices are not resampled to an even grid; load a series reconstructed with constant "
                    "spacing (or one of its parts).")
        raise CTLoadError(
            f"{where}: gap of {diffs[i]:.2f} mm between slice positions {pos[i]:.2f} mm "
            f"({Path(labels[i]).name}) and {pos[i + 1]:.2f} mm ({Path(labels[i + 1]).name}) where the "
            f"spacing is {dz:.2f} mm elsewhere: {what}. {todo}"
        )
    return dz


def stack_drift(
    ipp: np.ndarray, pos_mm: np.ndarray, normal: np.ndarray, pixel_spacing: Sequence[float], where: str,
    what: str = "slice",
) -> tuple[np.ndarray, float] | None:
    """In-plane drift of slice (frame) origins along a stack: the sign of a gantry tilt.

    Parameters
    ----------
    ipp : ndarray float64 (n, 3)
        ImagePositionPatient (LPS mm) of each slice, in stack order.
    pos_mm : ndarray float64 (n,)
        The same positions projected on the slice normal (mm), increasing.
    normal : ndarray float64 (3,)
        Unit slice normal (row cosines x column cosines, PS3.3 C.7.6.2.1.1).
    pixel_spacing : (row spacing, column spacing) mm
    where : str
        Start of the error message (the series / file).
    what : str
        ``"slice"`` or ``"frame"``, the word used in the message.

    Returns
    -------
    None, or (inplane, tilt_deg)
        None when the origins lie on the normal (no drift above 1 % of a pixel); else ``inplane`` float64
        (n, 3): each origin's offset from slice 0 in the slice plane (mm), and the tilt angle in degrees
        (the angle between the stacking line and the normal).

    Raises
    ------
    CTLoadError
        The origins do not lie on a straight line (the slices cannot be one volume).
    """
    off = ipp - ipp[0]
    inplane = off - np.outer(off @ normal, normal)
    if np.max(np.abs(inplane)) <= max(0.01, 0.01 * min(pixel_spacing)):
        return None
    along = pos_mm - pos_mm[0]
    per_mm = np.linalg.lstsq(along[:, None], inplane, rcond=None)[0][0]
    if np.max(np.abs(inplane - np.outer(along, per_mm))) > max(0.05, 0.1 * min(pixel_spacing)):
        raise CTLoadError(
            f"{where}: the {what} positions (ImagePositionPatient) do not lie on a straight line; the {what}s "
            "cannot be stacked into one volume. Re-export the series."
        )
    return inplane, float(np.degrees(np.arctan(np.linalg.norm(per_mm))))
