"""CT input/output: DICOM series, single DICOM files, NIfTI / NRRD / MetaImage volumes.

Everything returns a :class:`CTVolume`: ``hu`` float32 ``(z, y, x)`` in Hounsfield units, ``spacing``
``(z, y, x)`` in mm, and the patient geometry in SimpleITK's convention (``origin`` ``(x, y, z)`` mm in
DICOM/LPS patient coordinates, ``direction`` a row-major 3x3 matrix as a 9-tuple whose columns are the
directions of the x (column), y (row) and z (slice) axes).

DICOM series are listed with SimpleITK/GDCM (``GetGDCMSeriesIDs``) and each file is parsed once by pydicom
(``defer_size``: the pixel data stays in the file until its slice is decoded), which orders the slices
(increasing position along the slice normal ``row x column``), checks that they are
evenly spaced (a missing slice is reported with its position), corrects a gantry tilt, and decodes the pixels
one slice at a time into one preallocated float32 array (RescaleSlope/RescaleIntercept per slice; compressed
transfer syntaxes through the pylibjpeg decoders); the middle slice is decoded a second time by SimpleITK as
a cross-check. Every failure of the underlying libraries is reported as
:class:`~src_training.errors.CTLoadError` with a message naming the file and what to do; docs/reliability.md
lists each bad input and what the user sees.

Writers (:func:`write_dicom_series`, :func:`write_volume`) are atomic: they write into a temporary folder /
file beside the destination and rename it into place.

Modules (one concept each; this ``__init__`` only re-exports, nothing imports from it inside the package):

- :mod:`~src_training.io.volume`: :class:`CTVolume`, :class:`SeriesInfo`, :func:`volume_from_array`, the
  finite-HU check.
- :mod:`~src_training.io.loader`: :func:`load_ct` (what a path is, which reader reads it),
  :data:`UNEXPECTED_MARK`.
- :mod:`~src_training.io.dicom_series`: :func:`list_series`, choosing the series of a folder or of a list of
  selected files (localizers skipped, damaged files named), ordering and geometry checks of a series, the
  eager / lazy slice stack, single files (multi-frame ones handed to ``enhanced_ct``).
- :mod:`~src_training.io.dicom_scan`: the series and the damaged files of a folder (GDCM, then pydicom for
  the files GDCM leaves out) or of a list of files.
- :mod:`~src_training.io.dicom_files`: :func:`is_dicom_file` (also legacy files without the preamble),
  :func:`is_dicom_directory_file` (DICOMDIR / DIRFILE), from the first bytes of a file.
- :mod:`~src_training.io.series_checks`: per-slice rescale to HU (missing or differing values named by
  file, RescaleType), localizer (scout) images dropped from a series.
- :mod:`~src_training.io.slice_geometry`: missing / duplicated / unevenly spaced slices.
- :mod:`~src_training.io.enhanced_ct`: multi-frame and Enhanced CT files.
- :mod:`~src_training.io.dicom_header`: parsing a DICOM file once (``force`` only for legacy files), numeric
  tags, ImageType, per-slice identifiers, :data:`METADATA_TAGS`.
- :mod:`~src_training.io.dicom_pixels`: decoding a slice to HU, :data:`PIXEL_HANDLERS_HINT`, the SimpleITK
  cross-check.
- :mod:`~src_training.io.volume_files`: NIfTI / NRRD / MetaImage through SimpleITK, :func:`write_volume`,
  :data:`VOLUME_SUFFIXES`.
- :mod:`~src_training.io.dicom_writer`: :func:`write_dicom_series`.
- ``_library`` (library error summaries, quiet SimpleITK) and ``_writing`` (writer argument checks).
"""

from __future__ import annotations

from .dicom_files import is_dicom_directory_file, is_dicom_file
from .dicom_header import METADATA_TAGS
from .dicom_pixels import PIXEL_HANDLERS_HINT
from .dicom_pixels import _decode_slice  # noqa: F401 - kept importable from src_training.io
from .dicom_series import list_series
from .dicom_writer import write_dicom_series
from .loader import UNEXPECTED_MARK, load_ct
from .volume import CTVolume, SeriesInfo, volume_from_array
from .volume_files import VOLUME_SUFFIXES, write_volume
from .volume_files import _is_volume_path  # noqa: F401 - private, kept for old imports

__all__ = [
    "CTVolume",
    "METADATA_TAGS",
    "PIXEL_HANDLERS_HINT",
    "SeriesInfo",
    "UNEXPECTED_MARK",
    "VOLUME_SUFFIXES",
    "is_dicom_directory_file",
    "is_dicom_file",
    "list_series",
    "load_ct",
    "volume_from_array",
    "write_dicom_series",
    "write_volume",
]
