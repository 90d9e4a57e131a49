"""LUNA16 nodule annotations: :func:`read_luna16_csv` (nodule centres and diameters in world mm) and
:func:`world_spheres_to_boxes` (spheres in world mm -> boxes of :mod:`src_training.boxes` on every slice
they intersect, on the geometry of a :class:`src_training.io.CTVolume`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..boxes import clip_boxes_to_image
from ..errors import LidnetError
from .box_csv import _csv_dict_reader
from .records import SliceAnnotations


def read_luna16_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a LUNA16 ``annotations.csv``: ``seriesuid, coordX, coordY, coordZ, diameter_mm``.

    Coordinates are world (patient, LPS as in the .mhd/DICOM geometry) millimetres of the nodule centre;
    ``diameter_mm`` is the nodule diameter in mm.

    Returns
    -------
    dict seriesuid -> ndarray float64 (n, 4)
        ``(x, y, z, diameter)`` mm per nodule.

    Raises
    ------
    LidnetError
        Missing file/columns, non-numeric values, or a diameter <= 0 (line number given).
    """
    path = Path(path)
    reader, fields = _csv_dict_reader(path, "LUNA16 annotation file", lower=False)
    need = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm")
    missing = [c for c in need if c not in fields]
    if missing:
        raise LidnetError(
            f"{path} is not a LUNA16 annotation file: missing column(s) {', '.join(missing)} "
            f"(expected header {','.join(need)})."
        )
    reader.fieldnames = fields
    out: dict[str, list] = {}
    for lineno, row in enumerate(reader, start=2):
        if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
            continue
        try:
            vals = [float(row[c]) for c in need[1:]]
        except (TypeError, ValueError) as exc:
            raise LidnetError(f"{path}, line {lineno}: not a valid nodule row ({exc}).") from exc
        if not all(math.isfinite(v) for v in vals) or vals[3] <= 0:
            raise LidnetError(f"{path}, line {lineno}: coordinates must be finite and diameter_mm > 0.")
        out.setdefault(row["seriesuid"].strip(), []).append(vals)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def world_spheres_to_boxes(
    nodules_mm: np.ndarray,
    shape: Sequence[int],
    spacing: Sequence[float],
    origin: Sequence[float],
    direction: Sequence[float],
    where: str = "nodules",
    label: int = 1,
) -> SliceAnnotations:
    """Boxes of spherical nodules given in world mm, on every axial slice the sphere intersects.

    The centre is mapped to a continuous voxel index with SimpleITK's
    ``TransformPhysicalPointToContinuousIndex`` on the volume's geometry (origin, spacing, direction as in
    :class:`src_training.io.CTVolume`). Slice ``k`` (plane through the voxel centres of index k) lies at
    distance ``d = |k - k_c| * spacing_z`` mm from the centre; it intersects the sphere of radius ``R`` when
    ``d < R``, in a disc of radius ``r = sqrt(R^2 - d^2)`` mm. Its box is centred on the centre's pixel
    position, half-size ``r / spacing_x`` by ``r / spacing_y`` pixels; voxel centre ``i`` is at box
    coordinate ``i + 0.5`` (edges at pixel borders). Boxes partly outside the slice are clipped
    (:func:`clip_boxes_to_image`). Assumes orthonormal direction cosines (all CT series do).

    Parameters
    ----------
    nodules_mm : ndarray (n, 4)
        ``(x, y, z, diameter)`` in mm, world coordinates (LUNA16 ``coordX, coordY, coordZ, diameter_mm``).
    shape : (Z, H, W)
    spacing : (z, y, x) mm
    origin : (x, y, z) mm, centre of voxel (0, 0, 0)
    direction : 9 floats, SimpleITK row-major direction cosines
    where : str
        Named in messages.
    label : int

    Returns
    -------
    SliceAnnotations

    Raises
    ------
    LidnetError
        A nodule whose sphere meets no slice of the volume (wrong series or coordinates in voxels, not mm),
        or a box entirely outside the image.
    """
    import SimpleITK as sitk

    img = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    img.SetSpacing((float(spacing[2]), float(spacing[1]), float(spacing[0])))
    img.SetOrigin(tuple(float(v) for v in origin))
    img.SetDirection(tuple(float(v) for v in direction))
    nz = int(shape[0])
    out = SliceAnnotations()
    for n, (x, y, zc, diam) in enumerate(np.asarray(nodules_mm, dtype=np.float64).reshape(-1, 4)):
        ci, cj, ck = img.TransformPhysicalPointToContinuousIndex((float(x), float(y), float(zc)))
        radius = diam / 2.0
        reach = radius / float(spacing[0])
        ks = [k for k in range(max(0, math.floor(ck - reach)), min(nz - 1, math.ceil(ck + reach)) + 1)
              if abs(k - ck) * float(spacing[0]) < radius]
        if not ks:
            raise LidnetError(
                f"{where}: nodule {n + 1} at ({x:.1f}, {y:.1f}, {zc:.1f}) mm, diameter {diam:.1f} mm, meets no "
                f"slice of this {nz}-slice series (continuous slice index {ck:.1f}); check the series and that "
                "the coordinates are world millimetres."
            )
        for k in ks:
            r = math.sqrt(radius**2 - ((k - ck) * float(spacing[0])) ** 2)
            hx, hy = r / float(spacing[2]), r / float(spacing[1])
            box = [ci + 0.5 - hx, cj + 0.5 - hy, ci + 0.5 + hx, cj + 0.5 + hy]
            b, lab = clip_boxes_to_image(np.asarray([box]), shape, f"{where}, nodule {n + 1}, slice {k}", [label])
            out.add(k, b, lab)
    return out
