"""The in-memory records of :mod:`src_training.io`: :class:`CTVolume` (a HU volume with its patient
geometry), :class:`SeriesInfo` (one DICOM series of a folder), :func:`volume_from_array`, and the
finite-HU invariant every reader checks (:func:`_check_finite`).

Geometry follows SimpleITK's convention: ``origin`` ``(x, y, z)`` mm in DICOM/LPS patient coordinates,
``direction`` a row-major 3x3 matrix as a 9-tuple whose columns are the directions of the x (column),
y (row) and z (slice) axes; ``spacing`` is ``(z, y, x)`` mm like the array (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from ..errors import CTLoadError


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID (0020,000E).
    description : str
        SeriesDescription (0008,103E), ``""`` when absent.
    modality : str
        Modality (0008,0060), ``""`` when absent.
    n_files : int
        Number of files of the series in the folder.
    files : list of str
        Their paths (in the order GDCM lists them, then files GDCM left out that pydicom reads;
        :func:`~src_training.io.load_ct` sorts them by position).
    image_type : tuple of str
        ImageType (0008,0008) values of its first file, upper case (e.g. ``("ORIGINAL", "PRIMARY",
        "AXIAL")``); when the first file is a localizer but the last is not (scouts stored inside the series),
        those of the last file. ``()`` when absent.
    """

    series_uid: str
    description: str
    modality: str
    n_files: int
    files: list[str] = field(default_factory=list)
    image_type: tuple[str, ...] = ()

    @property
    def is_localizer(self) -> bool:
        """True for a localizer (scout) series: ``"LOCALIZER"`` in :attr:`image_type` (PS3.3 C.8.2.1.1.1)."""
        return "LOCALIZER" in self.image_type

    def __str__(self) -> str:  # used in error messages
        desc = self.description or "(no description)"
        scout = "  localizer (scout)" if self.is_localizer else ""
        return f"{self.series_uid}  '{desc}'  {self.modality or '?'}  {self.n_files} files{scout}"


@dataclass
class CTVolume:
    """A CT volume in HU with its geometry.

    Attributes
    ----------
    hu : ndarray float32, shape (z, y, x)
        Intensities in Hounsfield units. For DICOM, z runs in increasing position along the slice normal
        (``row direction x column direction``; for axial scans with the usual orientation that is feet to
        head).
    spacing : (float, float, float)
        Voxel size ``(z, y, x)`` in mm (z: distance between slice centres, not SliceThickness).
    origin : (float, float, float)
        Centre of the first voxel, ``(x, y, z)`` in mm in DICOM patient coordinates (LPS), SimpleITK order.
    direction : tuple of 9 floats
        SimpleITK direction cosines, row-major 3x3; column k is the direction of array axis k in
        ``(x, y, z)`` order (column 0: along a row / increasing x index, column 2: slice normal).
    metadata : dict
        JSON-serialisable: the DICOM tags of :data:`~src_training.io.METADATA_TAGS` found in the first slice
        (PatientName as str, multi-values as lists), plus ``source_path``, ``format`` (``"dicom-series"``,
        ``"dicom-file"``, ``"nifti"``, ``"nrrd"``, ``"metaimage"``), ``n_slices``, ``warnings`` and for
        DICOM ``hu_check``, ``files`` and, one entry per slice in z order, ``sop_instance_uids`` (list of
        str), ``instance_numbers`` (list of int or None), ``frame_numbers`` (list of 1-based frame numbers
        of a multi-frame file, None for a series of single-frame files) and ``slice_thickness_mm``
        (SliceThickness of the source in mm, not the spacing; None when absent).
    source : str
        The path the volume was loaded from (``""`` for volumes built in memory).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)`` shape of :attr:`hu`."""
        return tuple(int(s) for s in self.hu.shape)  # type: ignore[return-value]


def volume_from_array(
    hu: np.ndarray,
    spacing: Iterable[float],
    origin: Iterable[float] = (0.0, 0.0, 0.0),
    direction: Iterable[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
    metadata: dict[str, Any] | None = None,
) -> CTVolume:
    """Wrap an in-memory (z, y, x) HU array as a :class:`CTVolume` (float32, ``source=""``).

    Parameters
    ----------
    hu : array-like (z, y, x) or (y, x), HU
        Converted to float32 (a copy unless it already is float32); a 2-D slice becomes ``(1, y, x)``.
    spacing : (dz, dy, dx) mm
    origin : (x, y, z) mm, LPS position of the first voxel centre (SimpleITK order)
    direction : 9 floats, SimpleITK row-major direction cosines
    metadata : dict, optional
        Default ``{"format": "memory"}``.

    Returns
    -------
    CTVolume
        Nothing is checked (no error raised): the caller vouches for the values.
    """
    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    return CTVolume(
        hu=arr,
        spacing=tuple(float(v) for v in spacing),  # type: ignore[arg-type]
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in direction),
        metadata=dict(metadata or {"format": "memory"}),
        source="",
    )


def _check_finite(hu: np.ndarray, source: str) -> None:
    """Raise CTLoadError when ``hu`` holds NaN/Inf (checked slice by slice: no volume-sized temporary)."""
    flat = hu.reshape(-1, hu.shape[-1]) if hu.ndim > 1 else hu.reshape(1, -1)
    step = max(1, (1 << 20) // max(1, flat.shape[1]))
    n_bad = 0
    for i in range(0, flat.shape[0], step):
        block = flat[i : i + step]
        n_bad += int(block.size - np.count_nonzero(np.isfinite(block)))
    if n_bad:
        raise CTLoadError(
            f"{source}: the volume contains {n_bad} NaN or infinite voxel(s). A CT volume must hold finite HU "
            "values; re-export it from the scanner/PACS or fix the file."
        )
