"""Property-based robustness of ``load_ct`` (hypothesis): random bytes, random byte corruption and random
tag mutations of a real CT slice either load as a finite float32 HU volume or raise the project's own
:class:`LidnetError` (a message for the user) - never another exception.

The real file is slice 10 of the sample case lung2 (pyradiomics data), copied and cropped to 48 x 48
pixels in a temporary folder so that each example decodes in milliseconds; sample_data is not modified.
Examples are bounded (``max_examples``) so the file runs in well under 30 s.
"""

from __future__ import annotations

import atexit
import itertools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from src_training.errors import LidnetError  # noqa: E402
from src_training.io import UNEXPECTED_MARK, load_ct  # noqa: E402
from src_training.sample import sample_dir  # noqa: E402

SAMPLE = sample_dir() / "lung2" / "ndct"
_WORK = Path(tempfile.mkdtemp(prefix="lidnet-fuzz-"))
atexit.register(shutil.rmtree, _WORK, True)
_COUNTER = itertools.count()
FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


def _small_real_slice(name: str, k: int) -> Path:
    """Copy of sample slice ``k`` cropped to 48 x 48 (pixels and Rows/Columns), in the work folder."""
    ds = pydicom.dcmread(SAMPLE / f"IM_{k:05d}.dcm")
    px = ds.pixel_array[300:348, 300:348].copy()
    ds.Rows, ds.Columns = px.shape
    ds.PixelData = px.tobytes()
    out = _WORK / name
    ds.save_as(out)
    return out


BASE = _small_real_slice("base.dcm", 10)
BASE_BYTES = BASE.read_bytes()


def _check(path: Path) -> None:
    try:
        vol = load_ct(path)
    except LidnetError as exc:
        # the specific checks caught it, not load_ct's last-resort handler
        assert UNEXPECTED_MARK not in str(exc), str(exc)
        return
    hu = np.asarray(vol.hu)
    assert hu.dtype == np.float32 and hu.ndim == 3 and hu.size > 0
    assert np.all(np.isfinite(hu))


def _new_path(suffix: str = ".dcm") -> Path:
    return _WORK / f"case{next(_COUNTER)}{suffix}"


@FUZZ
@given(st.binary(min_size=0, max_size=2048), st.sampled_from([".dcm", "", ".nii", ".nii.gz", ".nrrd", ".mha"]))
def test_random_bytes(data, suffix):
    p = _new_path(suffix)
    p.write_bytes(data)
    _check(p)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(BASE_BYTES) - 1), st.binary(min_size=1, max_size=8)),
                min_size=1, max_size=6),
       st.one_of(st.none(), st.integers(0, len(BASE_BYTES))))
def test_byte_corruption(patches, cut):
    data = bytearray(BASE_BYTES)
    for pos, chunk in patches:
        data[pos : pos + len(chunk)] = chunk
    if cut is not None:
        data = data[:cut]
    p = _new_path()
    p.write_bytes(bytes(data))
    _check(p)


_TAGS = ["Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
         "RescaleSlope", "RescaleIntercept", "PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient",
         "Modality", "NumberOfFrames", "PhotometricInterpretation", "SliceThickness", "SpacingBetweenSlices",
         "GantryDetectorTilt", "InstanceNumber", "SeriesInstanceUID", "PlanarConfiguration"]
_VALUES = st.one_of(
    st.none(),
    st.integers(-70000, 70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet="0123456789.-+eE\\ abcCTMR", max_size=12),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=7),
)


def _mutate(ds: pydicom.Dataset, tag: str, value, raw: dict[bytes, bytes]) -> None:
    """Set ``tag`` to ``value`` (delete it for None). A text value pydicom refuses for the tag's VR (e.g.
    RescaleSlope "C") is written through a numeric placeholder replaced in the file's bytes (``raw``)."""
    if value is None:
        if tag in ds:
            delattr(ds, tag)
        return
    try:
        setattr(ds, tag, value)
        return
    except Exception:  # noqa: BLE001 - pydicom validates values
        pass
    vr = pydicom.datadict.dictionary_VR(tag)
    if isinstance(value, str) and vr in ("DS", "IS", "CS", "UI"):
        placeholder = f"9876.{5432 + len(raw)}"  # 9 characters, unique per mutation
        setattr(ds, tag, placeholder)
        raw[placeholder.encode()] = value[:9].ljust(9).encode("ascii", "replace")


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_TAGS), _VALUES), min_size=1, max_size=4),
       st.booleans(), st.sampled_from(["", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50",
                                       "1.2.840.10008.1.2.4.90", "1.2.3.4"]))
def test_tag_mutations(mutations, in_series, syntax):
    """Mutated slice alone (DICOM-file path) or as the middle slice of a 3-file series (series path)."""
    ds = pydicom.dcmread(BASE)
    raw: dict[bytes, bytes] = {}
    for tag, value in mutations:
        _mutate(ds, tag, value, raw)
    if syntax:
        ds.file_meta.TransferSyntaxUID = syntax
    folder = _WORK / f"series{next(_COUNTER)}"
    folder.mkdir()
    p = folder / "IM_00002.dcm"
    try:
        ds.save_as(p, enforce_file_format=False)
        data = p.read_bytes()
        for placeholder, text in raw.items():
            data = data.replace(placeholder, text)
        p.write_bytes(data)
    except Exception:  # noqa: BLE001 - pydicom cannot even write it: write what it can as raw bytes
        p.write_bytes(BASE_BYTES[:200])
    if in_series:
        for k, name in ((9, "IM_00001.dcm"), (11, "IM_00003.dcm")):
            shutil.copy(_small_real_slice(f"src{k}.dcm", k), folder / name)
        target = folder
    else:
        target = p
    _check(target)


def test_unmutated_copy_loads():
    """The base file itself loads (so the properties above do exercise the success branch)."""
    vol = load_ct(BASE)
    assert vol.hu.shape == (1, 48, 48) and np.all(np.isfinite(vol.hu))
