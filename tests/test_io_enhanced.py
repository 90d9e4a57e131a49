"""Enhanced (multi-frame) CT through ``src_training.io.enhanced_ct.load_multiframe`` and ``load_ct``.

The files are Enhanced CT Image Storage objects (DICOM PS3.3 A.38) built from scratch with pydicom in
``tmp_path``: 16 x 12 frames with Per-frame / Shared Functional Groups (Plane Position, Plane Orientation,
Pixel Measures, Pixel Value Transformation, Frame Content, CT Image Frame Type). Each test asserts HU
values, positions, spacing, orientation and the words of the messages.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from src_training.errors import CTLoadError
from src_training.io import load_ct
from src_training.io.enhanced_ct import ENHANCED_CT_STORAGE, load_multiframe
from src_training.io.slice_geometry import check_slice_positions

NY, NX = 12, 16


def _item(**kw) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _hu(nz: int = 5, seed: int = 0) -> np.ndarray:
    """HU volume in z order; air -1000 in a corner so that an intercept error is visible."""
    rng = np.random.default_rng(seed)
    hu = rng.integers(-1000, 1500, size=(nz, NY, NX)).astype(np.float32)
    hu[:, 0, 0] = -1000.0
    return hu


def enhanced_ct(
    path,
    hu: np.ndarray,
    *,
    spacing=(2.5, 0.7, 0.8),
    origin=(-10.0, -20.0, 30.0),
    iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    file_order=None,
    rescale=(1.0, -1024.0),
    per_frame_rescale=None,
    rescale_type="HU",
    shared_rescale=True,
    frame_type=("ORIGINAL", "PRIMARY", "AXIAL", "NONE"),
    image_type=None,
    temporal=None,
):
    """Write an Enhanced CT file whose slice z (in z order) holds ``hu[z]``.

    ``file_order[j]`` is the z index stored as frame j + 1 (default: z order); ``per_frame_rescale[z]`` gives
    (slope, intercept) of slice z in its per-frame item (else one shared rescale); ``temporal[z]`` a
    TemporalPositionIndex per slice.
    """
    nz = hu.shape[0]
    file_order = list(range(nz)) if file_order is None else list(file_order)
    r, c = np.asarray(iop[:3]), np.asarray(iop[3:])
    n = np.cross(r, c)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENHANCED_CT_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = ENHANCED_CT_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.PatientID = "ENH1"
    ds.InstanceNumber = 7
    ds.ImageType = list(image_type or ("ORIGINAL", "PRIMARY", "AXIAL", "NONE"))
    ds.Rows, ds.Columns = NY, NX
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.NumberOfFrames = nz
    shared = _item(
        PixelMeasuresSequence=Sequence([_item(PixelSpacing=[spacing[1], spacing[2]], SliceThickness=3.0)]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=list(iop))]),
        CTImageFrameTypeSequence=Sequence([_item(FrameType=list(frame_type))]),
    )
    if per_frame_rescale is None and shared_rescale:
        shared.PixelValueTransformationSequence = Sequence(
            [_item(RescaleSlope=rescale[0], RescaleIntercept=rescale[1], RescaleType=rescale_type)])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, stored = [], []
    for z in file_order:
        ipp = np.asarray(origin) + z * spacing[0] * n
        item = _item(
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=[float(v) for v in ipp])]),
            FrameContentSequence=Sequence([_item(InStackPositionNumber=z + 1)]),
        )
        if temporal is not None:
            item.FrameContentSequence[0].TemporalPositionIndex = temporal[z]
        slope, inter = rescale if per_frame_rescale is None else per_frame_rescale[z]
        if per_frame_rescale is not None:
            item.PixelValueTransformationSequence = Sequence(
                [_item(RescaleSlope=slope, RescaleIntercept=inter, RescaleType=rescale_type)])
        frames.append(item)
        stored.append(np.round((hu[z] - inter) / slope).astype("<i2"))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.PixelData = np.stack(stored).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _load(path):
    return load_multiframe(path, pydicom.dcmread(path, defer_size=1024))


def _refuses(path, *words) -> str:
    with pytest.raises(CTLoadError) as ei:
        _load(path)
    msg = str(ei.value)
    for w in words:
        assert w in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------ rescale
def test_functional_group_rescale_gives_exact_hu(tmp_path):
    hu = _hu()
    vol = _load(enhanced_ct(tmp_path / "e.dcm", hu))
    assert vol.hu.dtype == np.float32 and vol.hu.shape == (5, NY, NX)
    np.testing.assert_array_equal(vol.hu, hu)  # not off by 1024: the shared rescale is applied
    assert vol.hu[0, 0, 0] == -1000.0
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert vol.origin == pytest.approx((-10.0, -20.0, 30.0))
    assert vol.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
    m = vol.metadata
    assert m["frame_numbers"] == [1, 2, 3, 4, 5]
    assert m["sop_instance_uids"] == [m["sop_instance_uids"][0]] * 5 and m["sop_instance_uids"][0]
    assert m["instance_numbers"] == [7] * 5
    assert m["slice_thickness_mm"] == 3.0  # SliceThickness of the source, not the 2.5 mm spacing
    assert m["RescaleIntercept"] == -1024.0 and m["PixelSpacing"] == [0.7, 0.8]
    assert m["hu_check"].startswith("ok") or m["hu_check"].startswith("skipped"), m["hu_check"]
    assert m["warnings"] == []


def test_per_frame_rescale_differs(tmp_path):
    hu = _hu(seed=1)
    per = [(1.0, -1024.0), (2.0, -1000.0), (0.5, -1024.0), (1.0, -2048.0), (1.0, 0.0)]
    vol = _load(enhanced_ct(tmp_path / "e.dcm", hu, per_frame_rescale=per))
    expect = np.stack([np.round((hu[z] - b) / a) * a + b for z, (a, b) in enumerate(per)])
    np.testing.assert_array_equal(vol.hu, expect.astype(np.float32))
    assert np.max(np.abs(vol.hu - hu)) <= 1.0  # slope 2: one stored step is 2 HU


def test_rescale_type_other_than_hu_is_refused(tmp_path):
    p = enhanced_ct(tmp_path / "perf.dcm", _hu(), rescale_type="US", rescale=(0.01, 0.0))
    msg = _refuses(p, "perf.dcm", "unspecified units, e.g. a perfusion or derived map", "RescaleType US",
                   "not Hounsfield units")
    assert "frame" not in msg.split("RescaleType")[0]  # every frame: no single frame blamed
    # one derived frame with another type among HU frames: that frame is named
    per = [(1.0, -1024.0)] * 5
    p2 = enhanced_ct(tmp_path / "mixed.dcm", _hu(), per_frame_rescale=per)
    ds = pydicom.dcmread(p2)
    ds.PerFrameFunctionalGroupsSequence[3].PixelValueTransformationSequence[0].RescaleType = "MGML"
    ds.save_as(p2)
    _refuses(p2, "mixed.dcm", "frame 4", "mg/ml", "RescaleType MGML")


def test_frame_without_intercept_among_frames_with_one_is_refused(tmp_path):
    per = [(1.0, -1024.0)] * 5
    p = enhanced_ct(tmp_path / "e.dcm", _hu(), per_frame_rescale=per)
    ds = pydicom.dcmread(p)
    del ds.PerFrameFunctionalGroupsSequence[2].PixelValueTransformationSequence[0].RescaleIntercept
    ds.save_as(p)
    _refuses(p, "e.dcm", "frame 3 has no RescaleIntercept", "off by 1024 HU")


def test_rescale_absent_everywhere_is_identity_with_notice(tmp_path):
    hu = _hu() + 1024  # stored = HU when no rescale is given
    vol = _load(enhanced_ct(tmp_path / "e.dcm", hu, rescale=(1.0, 0.0), shared_rescale=False))
    np.testing.assert_array_equal(vol.hu, hu)
    assert any("RescaleSlope/RescaleIntercept absent" in w for w in vol.metadata["warnings"])


# ------------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("file_order", [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3]], ids=["reversed", "shuffled"])
def test_frames_out_of_order_are_sorted(tmp_path, file_order):
    hu = _hu(seed=2)
    vol = _load(enhanced_ct(tmp_path / "e.dcm", hu, file_order=file_order, origin=(5.0, 6.0, -100.0)))
    np.testing.assert_array_equal(vol.hu, hu)  # slice z holds hu[z] whatever the frame order
    assert vol.spacing[0] == pytest.approx(2.5) and vol.spacing[0] > 0
    assert vol.origin == pytest.approx((5.0, 6.0, -100.0))  # the lowest frame along the normal
    # frame_numbers: the 1-based frame holding each slice in z order
    assert vol.metadata["frame_numbers"] == [file_order.index(z) + 1 for z in range(5)]


def test_oblique_and_head_first_orientation(tmp_path):
    # rows along -x, columns along +z (a coronal-like plane): normal = r x c = (0, 1, 0)
    iop = (-1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    hu = _hu(nz=4, seed=3)
    vol = _load(enhanced_ct(tmp_path / "e.dcm", hu, iop=iop, file_order=[3, 2, 1, 0]))
    np.testing.assert_array_equal(vol.hu, hu)
    d = np.asarray(vol.direction).reshape(3, 3)
    np.testing.assert_allclose(d[:, 0], [-1, 0, 0])
    np.testing.assert_allclose(d[:, 1], [0, 0, 1])
    np.testing.assert_allclose(d[:, 2], np.cross([-1, 0, 0], [0, 0, 1]))
    assert vol.spacing[0] == pytest.approx(2.5)


def test_missing_frame_position_is_reported(tmp_path):
    p = enhanced_ct(tmp_path / "e.dcm", _hu())
    ds = pydicom.dcmread(p)
    del ds.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence
    ds.save_as(p)
    _refuses(p, "e.dcm", "frame 2 has no position", "PlanePositionSequence")


def test_missing_duplicated_uneven_frames_named(tmp_path):
    hu = _hu()
    p = enhanced_ct(tmp_path / "gap.dcm", hu)
    ds = pydicom.dcmread(p)  # frame 3 moved to where frame 4 would be: slice at 5.0 mm missing
    for k in (2, 3, 4):
        ds.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0].ImagePositionPatient = [-10, -20, 30 + 2.5 * (k + 1)]
    ds.save_as(p)
    _refuses(p, "gap.dcm", "gap of 5.00 mm", "(frame 2)", "(frame 3)", "about 1 missing slice(s) (expected at 35.00 mm)")
    ds.PerFrameFunctionalGroupsSequence[2].PlanePositionSequence[0].ImagePositionPatient = [-10, -20, 32.5]
    ds.save_as(p)
    _refuses(p, "gap.dcm", "frame 2 and frame 3 are at the same position 32.50 mm")


def test_check_slice_positions_messages():
    assert check_slice_positions(np.array([0.0, 2.5, 5.0]), ["a", "b", "c"], "w") == pytest.approx(2.5)
    with pytest.raises(CTLoadError, match="uneven slice spacing"):
        check_slice_positions(np.array([0, 2.5, 5, 9, 11.5, 14.0]), [f"/d/IM_{i}.dcm" for i in range(6)], "w")
    with pytest.raises(CTLoadError, match=r"\(IM_1.dcm\) and 7.50 mm \(IM_2.dcm\)"):
        check_slice_positions(np.array([0, 2.5, 7.5, 10.0]), [f"/d/IM_{i}.dcm" for i in range(4)], "w")


def test_several_temporal_positions_refused(tmp_path):
    p = enhanced_ct(tmp_path / "cine.dcm", _hu(nz=4), temporal=[1, 1, 2, 2])
    _refuses(p, "cine.dcm", "2 temporal positions", "4-D")


def test_frames_repeated_at_same_positions_refused(tmp_path):
    p = enhanced_ct(tmp_path / "rep.dcm", _hu(nz=4))
    ds = pydicom.dcmread(p)
    for k in (2, 3):
        ds.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0].ImagePositionPatient = [-10, -20, 30 + 2.5 * (k - 2)]
    ds.save_as(p)
    _refuses(p, "rep.dcm", "2 times at the same 2 positions")


def test_gantry_tilt_refused_not_resampled(tmp_path):
    p = enhanced_ct(tmp_path / "tilt.dcm", _hu(nz=4))
    ds = pydicom.dcmread(p)
    for k in range(4):  # positions drift in y by 1 mm per 2.5 mm slice
        ds.PerFrameFunctionalGroupsSequence[k].PlanePositionSequence[0].ImagePositionPatient = [-10, -20 + k, 30 + 2.5 * k]
    ds.save_as(p)
    _refuses(p, "tilt.dcm", "gantry tilt of 21.8 deg")


# ------------------------------------------------------------------------------------------------ localizer
def test_localizer_refused(tmp_path):
    p = enhanced_ct(tmp_path / "scout.dcm", _hu(nz=2), image_type=("ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"),
                    frame_type=("ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"))
    _refuses(p, "scout.dcm", "localizer (scout)")
    # only the frames say so (ImageType without LOCALIZER)
    p2 = enhanced_ct(tmp_path / "scout2.dcm", _hu(nz=2), frame_type=("ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"))
    _refuses(p2, "scout2.dcm", "localizer (scout)")


def test_localizer_frames_among_image_frames_dropped(tmp_path):
    hu = _hu()
    p = enhanced_ct(tmp_path / "e.dcm", hu)
    ds = pydicom.dcmread(p)
    ds.PerFrameFunctionalGroupsSequence[0].CTImageFrameTypeSequence = Sequence(
        [_item(FrameType=["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"])])
    ds.save_as(p)
    vol = _load(p)
    np.testing.assert_array_equal(vol.hu, hu[1:])
    assert vol.metadata["frame_numbers"] == [2, 3, 4, 5]
    assert vol.origin == pytest.approx((-10.0, -20.0, 32.5))
    assert any("skipped 1 localizer (scout) frame(s) of e.dcm: frame 1" in w for w in vol.metadata["warnings"])


def test_non_ct_and_concatenation_refused(tmp_path):
    p = enhanced_ct(tmp_path / "e.dcm", _hu(nz=3))
    ds = pydicom.dcmread(p)
    ds.ConcatenationUID = generate_uid()
    ds.InConcatenationNumber, ds.InConcatenationTotalNumber = 1, 2
    ds.save_as(p)
    _refuses(p, "e.dcm", "part 1 of 2 of a concatenation")
    ds.Modality = "MR"
    ds.save_as(p)
    _refuses(p, "e.dcm", "is a MR image (DICOM Modality MR), not CT")


def test_frame_count_mismatch_refused(tmp_path):
    p = enhanced_ct(tmp_path / "e.dcm", _hu(nz=3))
    ds = pydicom.dcmread(p)
    ds.NumberOfFrames = 4
    ds.save_as(p)
    _refuses(p, "e.dcm", "NumberOfFrames is 4 but the file describes 3 frame(s)")


# ------------------------------------------------------------------------------------------------ old style
def test_multiframe_without_functional_groups(tmp_path):
    """A classic CT file with NumberOfFrames (no functional groups): geometry from SimpleITK, spacing > 0."""
    hu = _hu(nz=3)
    p = enhanced_ct(tmp_path / "e.dcm", hu)
    ds = pydicom.dcmread(p)
    del ds.PerFrameFunctionalGroupsSequence, ds.SharedFunctionalGroupsSequence
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [1.0, 2.0, 3.0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness, ds.SpacingBetweenSlices = [0.7, 0.8], 2.0, -2.0
    ds.save_as(p)
    vol = _load(p)
    np.testing.assert_array_equal(vol.hu, hu)
    assert all(s > 0 for s in vol.spacing), vol.spacing
    assert vol.spacing[1:] == pytest.approx((0.7, 0.8))
    assert vol.metadata["frame_numbers"] == [1, 2, 3]
    assert vol.metadata["slice_thickness_mm"] == 2.0
    ds.RescaleType = "US"
    ds.save_as(p)
    _refuses(p, "e.dcm", "RescaleType US")


# ------------------------------------------------------------------------------------------------ load_ct
def test_load_ct_file_routes_to_enhanced(tmp_path):
    """Through ``load_ct(file)`` (routing: contract 7)."""
    hu = _hu(seed=5)
    vol = load_ct(enhanced_ct(tmp_path / "e.dcm", hu, file_order=[4, 3, 2, 1, 0]))
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.spacing[0] == pytest.approx(2.5)


def test_load_ct_folder_with_only_an_enhanced_file(tmp_path):
    """A folder holding one Enhanced CT file loads it (not "corrupt")."""
    hu = _hu(seed=6)
    (tmp_path / "only").mkdir()
    enhanced_ct(tmp_path / "only" / "e.dcm", hu, file_order=[1, 0, 2, 4, 3])
    vol = load_ct(tmp_path / "only")
    np.testing.assert_array_equal(vol.hu, hu)
    assert vol.metadata["frame_numbers"] == [2, 1, 3, 5, 4]
