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


def _save_mutated(ds: pydicom.Dataset, p, raw: dict[bytes, bytes]) -> bool:
    """Write ``ds`` to ``p`` with the raw byte replacements of :func:`_mutate`; False if pydicom cannot."""
    try:
        ds.save_as(p, enforce_file_format=False)
        data = p.read_bytes()
        for placeholder, text in raw.items():
            data = data.replace(placeholder, text)
        p.write_bytes(data)
    except Exception:  # noqa: BLE001 - the caller writes a stand-in
        return False
    return True


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
    if not _save_mutated(ds, p, raw):  # pydicom cannot even write it: write what it can as raw bytes
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


# ------------------------------------------------------------------------------------------------ multi-frame
def _enhanced_base() -> Path:
    """A 3-frame 16 x 16 Enhanced CT file (functional groups, shared rescale, frames in reverse z order)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def item(**kw):
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    sop = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.ImageType = "CT", ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.NumberOfFrames = 3
    ds.SharedFunctionalGroupsSequence = Sequence([item(
        PixelMeasuresSequence=Sequence([item(PixelSpacing=[0.7, 0.8], SliceThickness=2.0)]),
        PlaneOrientationSequence=Sequence([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelValueTransformationSequence=Sequence([item(RescaleSlope=1, RescaleIntercept=-1024, RescaleType="HU")]),
        CTImageFrameTypeSequence=Sequence([item(FrameType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"])]),
    )])
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        item(PlanePositionSequence=Sequence([item(ImagePositionPatient=[0.0, 0.0, 2.5 * (2 - k)])]),
             FrameContentSequence=Sequence([item(InStackPositionNumber=3 - k)]))
        for k in range(3)
    ])
    ds.PixelData = np.random.default_rng(0).integers(0, 2500, (3, 16, 16)).astype("<i2").tobytes()
    out = _WORK / "enhanced_base.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


ENHANCED = _enhanced_base()
#: tag -> functional-group macro sequence holding it (None: top level of the file)
_FG_TAGS = {
    "PixelSpacing": "PixelMeasuresSequence", "SliceThickness": "PixelMeasuresSequence",
    "ImagePositionPatient": "PlanePositionSequence", "ImageOrientationPatient": "PlaneOrientationSequence",
    "RescaleSlope": "PixelValueTransformationSequence", "RescaleIntercept": "PixelValueTransformationSequence",
    "RescaleType": "PixelValueTransformationSequence", "FrameType": "CTImageFrameTypeSequence",
    "TemporalPositionIndex": "FrameContentSequence", "StackID": "FrameContentSequence",
    "NumberOfFrames": None, "Rows": None, "ImageType": None,
}
_FG_SEQUENCES = ["PixelMeasuresSequence", "PlanePositionSequence", "PlaneOrientationSequence",
                 "PixelValueTransformationSequence", "FrameContentSequence", "CTImageFrameTypeSequence"]
_FG_VALUES = st.one_of(_VALUES, st.sampled_from(["HU", "US", "LOCALIZER", "1", "2"]))


def _check_multiframe(path: Path) -> None:
    """Through ``load_ct`` and straight through ``load_multiframe``: a finite float32 volume with positive
    spacing, or the project's own error that is not the last-resort message."""
    from src_training.io.dicom_header import _parse_dicom
    from src_training.io.enhanced_ct import load_multiframe

    _check(path)
    try:
        vol = load_multiframe(path, _parse_dicom(path))
    except LidnetError as exc:
        assert UNEXPECTED_MARK not in str(exc), str(exc)
        return
    hu = np.asarray(vol.hu)
    assert hu.dtype == np.float32 and hu.ndim == 3 and hu.size > 0 and np.all(np.isfinite(hu))
    assert all(s > 0 for s in vol.spacing), vol.spacing


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["shared", "frame 1", "frame 2", "top"]),
                          st.one_of(st.sampled_from(sorted(_FG_TAGS)), st.sampled_from(_FG_SEQUENCES)),
                          _FG_VALUES),
                min_size=1, max_size=4))
def test_multiframe_functional_group_mutations(mutations):
    """Random values / deletions of tags and whole macros in the functional groups of an Enhanced CT."""
    ds = pydicom.dcmread(ENHANCED)
    raw: dict[bytes, bytes] = {}
    for where, tag, value in mutations:
        if where == "top" or _FG_TAGS.get(tag, "") is None:
            group = ds
        else:
            seq = ds.SharedFunctionalGroupsSequence if where == "shared" else ds.PerFrameFunctionalGroupsSequence
            group = seq[0] if where == "shared" else seq[int(where[-1]) - 1]
        if tag in _FG_SEQUENCES:  # a whole macro deleted (or, at the top level, nothing to delete)
            if tag in group:
                delattr(group, tag)
            continue
        macro = _FG_TAGS[tag]
        if macro is not None and group is not ds:
            if macro not in group:
                setattr(group, macro, pydicom.sequence.Sequence([pydicom.Dataset()]))
            group = getattr(group, macro)[0]
        _mutate(group, tag, value, raw)
    p = _new_path()
    if not _save_mutated(ds, p, raw):  # pydicom cannot write it: the unmutated file stands in
        shutil.copy(ENHANCED, p)
    _check_multiframe(p)


def test_unmutated_enhanced_loads_sorted():
    """The multi-frame base file loads (frames stored in reverse z order come out ascending, HU exact)."""
    from src_training.io.dicom_header import _parse_dicom
    from src_training.io.enhanced_ct import load_multiframe

    vol = load_multiframe(ENHANCED, _parse_dicom(ENHANCED))
    stored = np.frombuffer(pydicom.dcmread(ENHANCED).PixelData, "<i2").reshape(3, 16, 16)
    np.testing.assert_array_equal(vol.hu, stored[::-1].astype(np.float32) - 1024)
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.8)) and vol.origin == pytest.approx((0, 0, 0))
