"""Recognising DICOM files for :mod:`src_training.io` from their first bytes, before any parsing: DICOM
Part 10 files (128-byte preamble + ``DICM``), legacy files written without the preamble (older scanners,
ACR-NEMA-style exports; DICOM PS3.10 section 7.1 makes the preamble part of the file format, PS3.5 section
7 defines the data elements a legacy file starts with), and media directory files (DICOMDIR, Philips-style
DIRFILE: Media Storage Directory Storage, PS3.3 section F, SOP class 1.2.840.10008.1.3.10), which index a
medium and are never an image.

Nothing here raises: every function answers ``False`` / ``None`` for a file it cannot read.
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pydicom

#: File name suffixes that say "DICOM" (lower case).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima", ".dic")

#: Media Storage Directory Storage SOP class (DICOMDIR), PS3.4 Annex B / PS3.3 Annex F.
DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"

#: File names of media directory files (upper case, without suffix).
_DIRECTORY_NAMES = frozenset({"DICOMDIR", "DIRFILE"})

#: Two-letter value representations of PS3.5 table 6.2-1 (explicit VR files carry one after each tag).
_VRS = frozenset(
    "AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()
)

#: Groups a legacy (preamble-less) file may start with: file meta (0002), identifying (0008) - also their
#: group length elements (gggg,0000).
_FIRST_GROUPS = (0x0002, 0x0008)


def _head(path: str | os.PathLike, n: int = 132) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""


def _legacy_start(head: bytes) -> bool:
    """True when ``head`` starts with a plausible DICOM data element of group 0002 or 0008 (little or big
    endian, explicit or implicit VR) and, when the first element is short, the next one is plausible too."""
    for endian in ("<", ">"):
        if len(head) < 8:
            return False
        group, elem = struct.unpack(endian + "HH", head[:4])
        if group not in _FIRST_GROUPS:
            continue
        vr = head[4:6]
        if vr.isalpha() and vr.decode("ascii") in _VRS:  # explicit VR
            if vr in (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"):
                if len(head) < 12 or head[6:8] != b"\x00\x00":
                    continue
                (length,) = struct.unpack(endian + "I", head[8:12])
                nxt = 12 + length
            else:
                (length,) = struct.unpack(endian + "H", head[6:8])
                nxt = 8 + length
        else:  # implicit VR (little endian only, PS3.5 section 10.1)
            if endian == ">":
                continue
            (length,) = struct.unpack("<I", head[4:8])
            if length > 1 << 16 and length != 0xFFFFFFFF:
                continue
            nxt = 8 + length
        if len(head) >= nxt + 4 and length != 0xFFFFFFFF:
            g2, e2 = struct.unpack(endian + "HH", head[nxt:nxt + 4])
            if (g2, e2) <= (group, elem) or g2 > 0x7FE0 or g2 % 2:  # tags ascend (PS3.5 section 7.1)
                continue
        return True
    return False


def _dicom_kind(path: str | os.PathLike) -> str | None:
    """``"part10"`` (preamble + DICM), ``"legacy"`` (no preamble, starts with a DICOM element) or None."""
    head = _head(path, 512)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "part10"
    return "legacy" if _legacy_start(head) else None


def is_dicom_file(path: str | os.PathLike) -> bool:
    """Whether a file is DICOM, judged from its first bytes (the file is not parsed).

    Parameters
    ----------
    path : path-like
        Any file (a folder or an unreadable file answers False).

    Returns
    -------
    bool
        True for a DICOM Part 10 file (128-byte preamble followed by ``DICM``, PS3.10 section 7.1) and for
        a legacy file without the preamble whose first data element is a plausible element of group 0x0002
        (file meta) or 0x0008 (identifying), little or big endian, explicit or implicit VR (PS3.5 section
        7), with the tags of its first two elements ascending. False otherwise. Such legacy files are read
        by pydicom with ``force=True`` only after this check.
    """
    p = Path(path)
    return p.is_file() and _dicom_kind(p) is not None


def is_dicom_directory_file(path: str | os.PathLike) -> bool:
    """Whether a file is a media directory file (DICOMDIR, DIRFILE) rather than an image.

    Parameters
    ----------
    path : path-like
        Any file.

    Returns
    -------
    bool
        True when the file is named ``DICOMDIR`` or ``DIRFILE`` (any case, any suffix), or its file meta
        (MediaStorageSOPClassUID, PS3.10 section 7.1) is Media Storage Directory Storage
        (1.2.840.10008.1.3.10, PS3.3 Annex F). Loading ignores such files silently.
    """
    p = Path(path)
    if not p.is_file():
        return False
    if _directory_name(p):
        return True
    if _dicom_kind(p) != "part10":
        return False
    try:
        meta = pydicom.filereader.read_file_meta_info(str(p))
        return str(meta.get("MediaStorageSOPClassUID", "")) == DIRECTORY_SOP_CLASS
    except Exception:  # noqa: BLE001 - a damaged file meta: not a directory file (reported as damaged)
        return False


def _directory_name(path: str | os.PathLike) -> bool:
    """The file is named like a media directory file (DICOMDIR, DIRFILE; any case, any suffix)."""
    return Path(path).name.split(".")[0].upper() in _DIRECTORY_NAMES


def _name_pattern(name: str) -> str:
    """A file name with its digit runs replaced by ``#`` (``IM_00012.dcm`` -> ``IM_#.dcm``): files named like
    the slices of a series are looked at even when they no longer look like DICOM (a damaged slice)."""
    return re.sub(r"\d+", "#", name)
