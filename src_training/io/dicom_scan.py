"""Finding the DICOM series among the files of a folder or of a user's selection (:mod:`src_training.io`).

A folder is listed by SimpleITK/GDCM (``GetGDCMSeriesIDs``); the files GDCM leaves out are then looked at
one by one with pydicom: media directory files (DICOMDIR, DIRFILE) are ignored silently, files of a
series whose pixel data is damaged join their series (decoding then names them), series GDCM does not list
are added, non-image DICOM objects (reports, structure sets) are ignored, and **damaged** files (cut inside
their header, or overwritten by something that is not DICOM) are kept with their name and, when readable,
the series they belong to, so that the loader can name them as the likely missing slices. A list of
selected files is read the same way, with pydicom only.

Nothing here decides which series is loaded; see :mod:`~src_training.io.dicom_series`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import pydicom
import SimpleITK as sitk

from ..errors import CTLoadError
from ._library import _QuietSitk, _short
from .dicom_files import DICOM_SUFFIXES, _dicom_kind, _directory_name, _name_pattern, is_dicom_directory_file
from .dicom_header import _image_type, _incomplete_image, _is_localizer, _parse_dicom, _read_header
from .volume import SeriesInfo

#: The damage of a file whose first bytes are not DICOM although it is named like one.
NOT_DICOM = "not DICOM: overwritten, or another kind of file"
#: The damage of a DICOM file whose header cannot be read to its pixel data.
CUT_HEADER = "cut inside its header"


@dataclass
class Damaged:
    """A file that should be a DICOM image but cannot be read as one.

    Attributes
    ----------
    path : str
    reason : str
        :data:`CUT_HEADER`, :data:`NOT_DICOM` or "its header is corrupt (...)".
    series_uid : str or None
        Its SeriesInstanceUID when that was read completely, else None (then it may belong to any series).
    maybe_slice : bool
        False for a selected file that is neither DICOM nor named like the slices (never offered as a
        missing slice).
    """

    path: str
    reason: str
    series_uid: str | None = None
    maybe_slice: bool = True

    def __str__(self) -> str:
        return f"{Path(self.path).name} ({self.reason})"


@dataclass
class Scan:
    """The series found (:class:`SeriesInfo`) and the damaged files (:class:`Damaged`) of a folder / list."""

    series: list[SeriesInfo] = field(default_factory=list)
    damaged: list[Damaged] = field(default_factory=list)


def _uid_complete(ds: pydicom.Dataset) -> bool:
    """The SeriesInstanceUID was read whole: some element after it (0020,000E) was read too."""
    return any(int(tag) > 0x0020000E for tag in ds.keys())


def _classify(path: str, parsed: dict[str, pydicom.Dataset], named_like_slice: bool,
              selected: bool) -> pydicom.Dataset | Damaged | None:
    """A readable image dataset, a :class:`Damaged` record, or None (a file to ignore silently)."""
    kind = _dicom_kind(path)
    if kind is None:
        dicom_name = Path(path).suffix.lower() in DICOM_SUFFIXES
        if dicom_name or named_like_slice or selected:
            return Damaged(path, NOT_DICOM if (dicom_name or named_like_slice) else "not a DICOM file",
                           maybe_slice=dicom_name or named_like_slice)
        return None
    if is_dicom_directory_file(path):
        return None
    try:
        ds = _parse_dicom(path)
    except CTLoadError as exc:
        cause = exc.__cause__
        reason = CUT_HEADER if "cut inside its header" in str(exc) else (
            f"its header is corrupt: {_short(cause, 120)}" if cause is not None else "its header is corrupt")
        return Damaged(path, reason)
    uid = str(ds.get("SeriesInstanceUID", "") or "") if _uid_complete(ds) else ""
    if _incomplete_image(ds):
        return Damaged(path, CUT_HEADER, uid or None)
    if not any(t in ds for t in (0x7FE00010, 0x7FE00008, 0x7FE00009)):
        return None  # a complete non-image object (report, structure set, presentation state)
    if not uid:
        return Damaged(path, "it has no SeriesInstanceUID", None)
    parsed[str(path)] = ds
    return ds


def _info(uid: str, files: list[str], first: pydicom.Dataset | None, last: pydicom.Dataset | None) -> SeriesInfo:
    description = str(first.get("SeriesDescription", "") or "") if first is not None else ""
    modality = str(first.get("Modality", "") or "") if first is not None else ""
    image_type = _image_type(first) if first is not None else ()
    if first is not None and last is not None and _is_localizer(first) and not _is_localizer(last):
        image_type = _image_type(last)  # scouts stored inside an image series
    return SeriesInfo(uid, description, modality, len(files), list(files), image_type)


def _header(f: str, parsed: dict[str, pydicom.Dataset] | None) -> pydicom.Dataset | None:
    try:
        if parsed is None:
            return _read_header(f)
        if f not in parsed:
            parsed[f] = _parse_dicom(f)
        return parsed[f]
    except Exception:  # noqa: BLE001 - reported when the series is loaded
        return None


def _scan_folder(folder: str | os.PathLike, parsed: dict[str, pydicom.Dataset] | None) -> Scan:
    """List the series of ``folder`` (GDCM, then pydicom for the files GDCM left out) and its damaged files.

    ``parsed`` (path -> dataset), when given, receives every dataset parsed whole so that loading does not
    parse it again; without it only headers are read (:func:`~src_training.io.list_series`).

    Raises
    ------
    CTLoadError
        ``folder`` is not a folder, or GDCM fails on it.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CTLoadError(f"{folder} is not a folder. Choose the folder that holds the DICOM files of the series.")
    with _QuietSitk():
        try:
            uids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
        except Exception as exc:  # noqa: BLE001
            raise CTLoadError(f"Cannot scan {folder} for DICOM series ({_short(exc)}).") from exc
        by_uid: dict[str, list[str]] = {}
        for uid in uids:
            try:
                files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
            except Exception as exc:  # noqa: BLE001
                raise CTLoadError(f"Cannot list the files of series {uid} in {folder} ({_short(exc)}).") from exc
            by_uid[uid] = [str(f) for f in files if not _directory_name(f)]
    listed = {os.path.abspath(f) for files in by_uid.values() for f in files}
    patterns = {_name_pattern(Path(f).name) for files in by_uid.values() for f in files}
    store = parsed if parsed is not None else {}  # datasets parsed whole here (kept for the listing)
    scan = Scan()
    for p in sorted(folder.iterdir()):
        if not p.is_file() or os.path.abspath(p) in listed:
            continue
        got = _classify(str(p), store, _name_pattern(p.name) in patterns, selected=False)
        if isinstance(got, Damaged):
            scan.damaged.append(got)
        elif got is not None:
            by_uid.setdefault(str(got.SeriesInstanceUID), []).append(str(p))
    for uid, files in by_uid.items():
        if not files:
            continue
        first = store[files[0]] if files[0] in store else _header(files[0], parsed)
        last = None
        if first is not None and _is_localizer(first) and len(files) > 1:
            last = store[files[-1]] if files[-1] in store else _header(files[-1], parsed)
        scan.series.append(_info(uid, files, first, last))
    return scan


def _scan_files(paths: Sequence[str | os.PathLike], parsed: dict[str, pydicom.Dataset]) -> Scan:
    """Group selected files into series by their SeriesInstanceUID (pydicom only), keeping damaged files.

    Directory files (DICOMDIR / DIRFILE) and complete non-image objects are left out silently; a selected
    file that is not DICOM is kept as :class:`Damaged` (named in the message or the warnings).
    """
    files = [str(p) for p in paths]
    patterns = {_name_pattern(Path(f).name) for f in files if _dicom_kind(f) is not None}
    by_uid: dict[str, list[str]] = {}
    scan = Scan()
    for f in files:
        got = _classify(f, parsed, _name_pattern(Path(f).name) in patterns, selected=True)
        if isinstance(got, Damaged):
            scan.damaged.append(got)
        elif got is not None:
            by_uid.setdefault(str(got.SeriesInstanceUID), []).append(f)
    for uid, members in by_uid.items():
        first = parsed[members[0]]
        scan.series.append(_info(uid, members, first, parsed[members[-1]] if len(members) > 1 else None))
    return scan
