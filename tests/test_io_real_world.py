"""Real-world DICOM through the core loader (issue #12): per-slice rescale, RescaleType, legacy files without
the preamble, damaged files named, directory files, localizers, several selected files, per-slice metadata.

Every file is built here with pydicom from scratch (tiny 16 x 16 slices, a few per series) in ``tmp_path``;
nothing is downloaded. Expected HU are computed from the stored values and each slice's own tags.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from src_training.errors import CTLoadError, MultipleSeriesError
from src_training.io import is_dicom_directory_file, is_dicom_file, list_series, load_ct

NY = NX = 16
DZ = 2.5


# ------------------------------------------------------------------------------------------------ builders
def _slice(path: Path, stored: np.ndarray, z: float, *, series_uid: str, study_uid: str, number: int,
           slope: float | None = 1.0, intercept: float | None = -1024.0, image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
           iop=(1, 0, 0, 0, 1, 0), ipp=None, encoding: str = "part10", **tags) -> Path:
    """One CT slice (int16 stored values). ``encoding``: ``part10`` (preamble + DICM + file meta),
    ``no-preamble`` (file meta but neither preamble nor DICM), ``implicit`` (no file meta, implicit VR little
    endian, starts with group 0008), ``big-endian`` (no file meta, explicit VR big endian)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = tags.pop("sop", None) or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.ImageType = list(image_type)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = "20240101", "120000"
    ds.Modality = "CT"
    ds.PatientName, ds.PatientID = "Test^Real", "RW1"
    ds.SliceThickness = tags.pop("thickness", DZ)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, number
    ds.ImagePositionPatient = list(ipp) if ipp is not None else [0.0, 0.0, float(z)]
    ds.ImageOrientationPatient = list(iop)
    ds.FrameOfReferenceUID = study_uid
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [0.7, 0.8]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if slope is not None:
        ds.RescaleSlope = slope
    for k, v in tags.items():
        setattr(ds, k, v)
    path.parent.mkdir(parents=True, exist_ok=True)
    if encoding == "part10":
        ds.PixelData = stored.astype("<i2").tobytes()
        ds.save_as(path, enforce_file_format=True)
    elif encoding == "no-preamble":
        ds.PixelData = stored.astype("<i2").tobytes()
        ds.save_as(path, enforce_file_format=True)
        data = path.read_bytes()
        assert data[128:132] == b"DICM"
        path.write_bytes(data[132:])
    else:
        del ds.file_meta
        big = encoding == "big-endian"
        ds.PixelData = stored.astype(">i2" if big else "<i2").tobytes()
        ds.save_as(path, implicit_vr=not big, little_endian=not big, enforce_file_format=False)
    return path


def _series(folder: Path, nz: int = 5, *, seed: int = 0, names=None, series_uid=None, study_uid=None,
            per_slice=None, **kw) -> tuple[list[Path], np.ndarray]:
    """``nz`` slices at z = 0, 2.5, ... named IM_1.dcm ... (or ``names``); ``per_slice(k) -> dict`` of
    keyword overrides for slice k. Returns the files (in z order) and the stored values (z, y, x)."""
    rng = np.random.default_rng(seed)
    stored = rng.integers(-24, 2500, size=(nz, NY, NX)).astype(np.int16)
    series_uid, study_uid = series_uid or generate_uid(), study_uid or generate_uid()
    files = []
    for k in range(nz):
        name = names[k] if names else f"IM_{k + 1}.dcm"
        opts = dict(kw, **(per_slice(k) if per_slice else {}))
        files.append(_slice(folder / name, stored[k], DZ * k, series_uid=series_uid, study_uid=study_uid,
                            number=k + 1, **opts))
    return files, stored


def _refused(path, *parts, **kw) -> str:
    with pytest.raises(CTLoadError) as ei:
        load_ct(path, **kw)
    msg = str(ei.value)
    for part in parts:
        assert part in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------ rescale
def test_slice_lacking_intercept_is_refused_by_name(tmp_path):
    """Issue #12 item 1: one slice without RescaleIntercept would read 1024 HU too bright; refused, named."""
    _series(tmp_path / "s", per_slice=lambda k: {"intercept": None} if k == 2 else {})
    msg = _refused(tmp_path / "s", "RescaleIntercept is missing in IM_3.dcm (1 of 5 files)",
                   "the other slices have RescaleIntercept -1024")
    assert "IM_1.dcm" not in msg and "IM_4.dcm" not in msg
    _refused(tmp_path / "s", "IM_3.dcm", lazy=True)  # checked when opening, not when the slice is shown
    # several slices lacking it: the first few are named with their count
    _series(tmp_path / "m", nz=9, per_slice=lambda k: {"intercept": None, "slope": None} if k >= 2 else {})
    _refused(tmp_path / "m", "IM_3.dcm, IM_4.dcm, IM_5.dcm, IM_6.dcm, IM_7.dcm and 2 more (7 of 9 files)")


def test_per_slice_different_slopes_give_exact_hu(tmp_path):
    rescale = {1: (0.5, -1000.0), 3: (2.0, -1024.0)}
    files, stored = _series(tmp_path / "s", per_slice=lambda k: dict(zip(("slope", "intercept"), rescale[k]))
                            if k in rescale else {})
    vol = load_ct(tmp_path / "s")
    expected = np.stack([stored[k].astype(np.float64) * rescale.get(k, (1.0, -1024.0))[0]
                         + rescale.get(k, (1.0, -1024.0))[1] for k in range(5)]).astype(np.float32)
    np.testing.assert_array_equal(vol.hu, expected)
    [warning] = [w for w in vol.metadata["warnings"] if w.startswith("the rescale differs between slices")]
    assert "IM_2.dcm (0.5 / -1000)" in warning and "IM_4.dcm (2 / -1024)" in warning
    assert "other 3 slice(s) (1 / -1024)" in warning and "IM_1.dcm" not in warning
    assert vol.metadata["hu_check"].startswith("ok")
    lazy = load_ct(tmp_path / "s", lazy=True)
    np.testing.assert_array_equal(np.asarray(lazy.hu), expected)


def test_rescale_type_other_than_hu_is_refused(tmp_path):
    _series(tmp_path / "us", RescaleType="US")
    _refused(tmp_path / "us", "IM_1.dcm: RescaleType is 'US' (unspecified units), not HU")
    f = _slice(tmp_path / "one.dcm", np.zeros((NY, NX), np.int16), 0.0, series_uid=generate_uid(),
               study_uid=generate_uid(), number=1, RescaleType="MGML")
    _refused(f, "one.dcm: RescaleType is 'MGML'", "not Hounsfield units")
    # one slice of a series with another type: that file is named
    _series(tmp_path / "mix", per_slice=lambda k: {"RescaleType": "HU" if k != 3 else "ED"})
    _refused(tmp_path / "mix", "IM_4.dcm: RescaleType is 'ED' (electron density)")
    # "HU" is HU
    _, stored = _series(tmp_path / "hu", RescaleType="HU")
    np.testing.assert_array_equal(load_ct(tmp_path / "hu").hu, stored.astype(np.float32) - 1024)


def test_gdcm_placeholder_rescale_type_us_is_taken_as_hu_with_notice(tmp_path):
    """GDCM (ITK, SimpleITK, 3D Slicer exports) writes RescaleType US into every CT it writes; that one is
    read as HU with a notice (tests/test_io.py loads such a SimpleITK-written series exactly)."""
    files, stored = _series(tmp_path / "g", RescaleType="US")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.2.1143.107.104.103.115.3.2.5"
        ds.save_as(f)
    vol = load_ct(tmp_path / "g")
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
    assert sum("RescaleType 'US'" in w and "written by GDCM/ITK" in w for w in vol.metadata["warnings"]) == 1


# ------------------------------------------------------------------------------------------------ legacy files
@pytest.mark.parametrize("encoding", ["no-preamble", "implicit", "big-endian"])
def test_preamble_less_file_and_folder_load_with_the_right_hu(tmp_path, encoding):
    files, stored = _series(tmp_path / "s", nz=3, encoding=encoding, slope=2.0, intercept=-1000.0)
    head = files[0].read_bytes()[:132]
    assert head[128:132] != b"DICM"
    assert is_dicom_file(files[0]) and not is_dicom_directory_file(files[0])
    expected = stored.astype(np.float32) * 2 - 1000
    vol = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, expected)
    assert vol.spacing == pytest.approx((DZ, 0.7, 0.8))
    assert vol.metadata["hu_check"].startswith("ok"), vol.metadata["hu_check"]  # GDCM reads them too
    one = load_ct(files[1])
    np.testing.assert_array_equal(one.hu[0], expected[1])
    np.testing.assert_array_equal(np.asarray(load_ct(tmp_path / "s", lazy=True).hu), expected)
    assert [s.n_files for s in list_series(tmp_path / "s")] == [3]


def test_is_dicom_file_rejects_other_files(tmp_path):
    rng = np.random.default_rng(5)
    cases = {"random.dcm": rng.bytes(2000), "notes.txt": b"exported from PACS\n" * 20, "empty.dcm": b"",
             "pic.png": b"\x89PNG\r\n\x1a\n" + rng.bytes(500), "short": b"\x08\x00"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert not is_dicom_file(tmp_path / name), name
    assert not is_dicom_file(tmp_path)  # a folder
    f = _slice(tmp_path / "ok.dcm", np.zeros((NY, NX), np.int16), 0.0, series_uid=generate_uid(),
               study_uid=generate_uid(), number=1)
    assert is_dicom_file(f)
    _refused(tmp_path / "random.dcm", "random.dcm is not a readable DICOM file", "does not start like a DICOM file")
    assert "force" not in _refused(tmp_path / "notes.txt", "notes.txt")


# ------------------------------------------------------------------------------------------------ damaged files
@pytest.mark.parametrize("keep", ["meta", "before-series-uid", "after-series-uid", "before-pixels"])
def test_header_truncated_middle_slice_is_named(tmp_path, keep):
    files, _ = _series(tmp_path / "s")
    data = files[2].read_bytes()
    ds = pydicom.dcmread(files[2])
    offsets = {"meta": 140,  # inside the file meta
               "before-series-uid": data.index(str(ds.StudyInstanceUID).encode()) + 8,
               "after-series-uid": data.index(str(ds.SeriesInstanceUID).encode()) + len(ds.SeriesInstanceUID) + 12,
               "before-pixels": len(data) - NY * NX * 2 - 12}
    files[2].write_bytes(data[: offsets[keep]])
    msg = _refused(tmp_path / "s", "IM_3.dcm is damaged (cut inside its header)")
    for other in ("IM_2.dcm is damaged", "IM_4.dcm is damaged", "IM_1.dcm", "IM_5.dcm"):
        assert other not in msg, msg
    if keep in ("meta", "before-series-uid"):  # its series is unknown: named as the missing slice
        assert "about 1 missing slice(s) (expected at 5.00 mm)" in msg and "probably the missing slice" in msg
    else:  # its series is known: a slice of this series that cannot be read
        assert "it is a slice of this series that cannot be read" in msg
    _refused(files[2], "IM_3.dcm")  # alone: its own message


def test_garbage_middle_slice_is_named(tmp_path):
    names = [f"IM{k:04d}" for k in range(1, 6)]  # PACS exports without a suffix
    files, _ = _series(tmp_path / "s", names=names)
    files[2].write_bytes(np.random.default_rng(1).bytes(files[2].stat().st_size))
    (tmp_path / "s" / "README").write_text("exported from PACS")  # not named like a slice: never blamed
    msg = _refused(tmp_path / "s", "IM0003 is damaged (not DICOM", "probably the missing slice",
                   "about 1 missing slice(s)")
    assert "README" not in msg and "IM0002 is damaged" not in msg
    # at the end of the series it leaves no gap: loaded, and the notice names it
    files2, stored = _series(tmp_path / "end", names=names)
    files2[4].write_bytes(np.random.default_rng(2).bytes(2000))
    vol = load_ct(tmp_path / "end")
    np.testing.assert_array_equal(vol.hu, stored[:4].astype(np.float32) - 1024)
    assert any("ignored 1 damaged file(s)" in w and "IM0005 (not DICOM" in w for w in vol.metadata["warnings"])


def test_directory_files_are_ignored_silently(tmp_path):
    from pydicom.fileset import FileSet

    files, stored = _series(tmp_path / "s")
    fs = FileSet()
    for f in files:
        fs.add(pydicom.dcmread(f))
    fs.write(tmp_path / "media")
    shutil.copy(tmp_path / "media" / "DICOMDIR", tmp_path / "s" / "DICOMDIR")
    shutil.copy(tmp_path / "media" / "DICOMDIR", tmp_path / "s" / "DIRFILE")
    shutil.copy(tmp_path / "media" / "DICOMDIR", tmp_path / "s" / "index.dcm")  # by its SOP class
    for name in ("DICOMDIR", "DIRFILE", "index.dcm"):
        assert is_dicom_directory_file(tmp_path / "s" / name)
    assert not is_dicom_directory_file(files[0])
    vol = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
    assert not any(n in w for w in vol.metadata["warnings"] for n in ("DICOMDIR", "DIRFILE", "index.dcm"))
    assert [s.n_files for s in list_series(tmp_path / "s")] == [5]
    # with a missing slice, the directory files are not offered as the missing slice
    files[2].unlink()
    msg = _refused(tmp_path / "s", "about 1 missing slice(s)")
    assert "DICOMDIR" not in msg and "DIRFILE" not in msg and "damaged" not in msg
    _refused(tmp_path / "s" / "DICOMDIR", "is a DICOM directory file (DICOMDIR / DIRFILE)")


# ------------------------------------------------------------------------------------------------ localizers
def _localizer(path: Path, study_uid: str, series_uid: str | None = None, number: int = 1) -> Path:
    """A lateral scout: ImageType ORIGINAL\\PRIMARY\\LOCALIZER, sagittal orientation."""
    return _slice(path, np.full((NY, NX), 1024, np.int16), 0.0, series_uid=series_uid or generate_uid(),
                  study_uid=study_uid, number=number, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
                  iop=(0, 1, 0, 0, 0, -1), ipp=(0.0, -50.0, 100.0), SeriesDescription="Topogram")


def test_localizer_beside_a_series_is_skipped_with_notice(tmp_path):
    study = generate_uid()
    files, stored = _series(tmp_path / "s", study_uid=study, SeriesDescription="Thorax 1.0")
    scout = _localizer(tmp_path / "s" / "SCOUT_1.dcm", study)
    found = {s.description: s for s in list_series(tmp_path / "s")}
    assert found["Topogram"].is_localizer and found["Topogram"].image_type == ("ORIGINAL", "PRIMARY", "LOCALIZER")
    assert not found["Thorax 1.0"].is_localizer
    vol = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
    assert any(w.startswith("skipped localizer (scout) series") and "'Topogram'" in w
               for w in vol.metadata["warnings"])
    # chosen explicitly, alone in a folder, or as a file: refused
    _refused(tmp_path / "s", "localizer (scout)", series_uid=found["Topogram"].series_uid)
    _refused(scout, "SCOUT_1.dcm is a localizer (scout) image (ImageType ORIGINAL\\PRIMARY\\LOCALIZER)")
    (tmp_path / "only").mkdir()
    shutil.copy(scout, tmp_path / "only" / "SCOUT_1.dcm")
    _localizer(tmp_path / "only" / "SCOUT_2.dcm", study)
    _refused(tmp_path / "only", "holds only localizer (scout) images")
    # a second image series: the choice is the user's; the message has no Python keyword
    _series(tmp_path / "s", study_uid=study, names=[f"B_{k}.dcm" for k in range(5)], SeriesDescription="Lung")
    with pytest.raises(MultipleSeriesError) as ei:
        load_ct(tmp_path / "s")
    msg = str(ei.value)
    assert "holds 2 DICOM series; choose one series" in msg and "series_uid" not in msg
    assert "and 1 localizer (scout) series" in msg and len(ei.value.series) == 3


def test_localizer_inside_the_series_is_dropped_by_name(tmp_path):
    study, uid = generate_uid(), generate_uid()
    files, stored = _series(tmp_path / "s", series_uid=uid, study_uid=study)
    _localizer(tmp_path / "s" / "IM_0.dcm", study, series_uid=uid, number=0)
    vol = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
    assert "dropped 1 localizer (scout) image(s) stored in the series: IM_0.dcm." in vol.metadata["warnings"]
    assert [Path(f).name for f in vol.metadata["files"]] == [f.name for f in files]


# ------------------------------------------------------------------------------------------------ file lists
def test_list_of_slice_files_is_one_volume(tmp_path):
    files, stored = _series(tmp_path / "s", iop=(1, 0, 0, 0, 0.8, -0.6))  # oblique, to compare geometry
    folder_vol = load_ct(tmp_path / "s")
    picked = [files[k] for k in (3, 0, 4, 2, 1)]  # any selection order
    vol = load_ct([str(f) for f in picked])
    np.testing.assert_array_equal(vol.hu, folder_vol.hu)
    assert vol.spacing == folder_vol.spacing and vol.origin == folder_vol.origin
    assert vol.direction == pytest.approx(folder_vol.direction)
    assert vol.metadata["files"] == folder_vol.metadata["files"] and vol.source == str(tmp_path / "s")
    assert load_ct(tuple(picked)).hu.shape == (5, NY, NX)
    np.testing.assert_array_equal(load_ct([files[2]]).hu[0], stored[2].astype(np.float32) - 1024)
    # a selection missing a slice gets the gap message
    _refused(picked[:3] + picked[4:], "about 1 missing slice(s)")
    # two series selected: a choice
    other, stored_b = _series(tmp_path / "b", seed=3, SeriesDescription="other")
    with pytest.raises(MultipleSeriesError) as ei:
        load_ct(files + other)
    assert "choose one series" in str(ei.value) and "series_uid" not in str(ei.value)
    uid_b = pydicom.dcmread(other[0]).SeriesInstanceUID
    np.testing.assert_array_equal(load_ct(files + other, series_uid=uid_b).hu, stored_b.astype(np.float32) - 1024)
    # what cannot be a selection of slices
    _refused([], "No file selected")
    _refused([files[0], tmp_path / "b"], "is a folder")
    _refused([files[0], tmp_path / "nope.dcm"], "nope.dcm does not exist")
    # a damaged selected slice is named
    files[2].write_bytes(files[2].read_bytes()[:400])
    _refused(files, "IM_3.dcm is damaged (cut inside its header)")


# ------------------------------------------------------------------------------------------------ metadata
def test_per_slice_metadata_lists_are_in_z_order(tmp_path):
    """Files named against the z order (IM_1.dcm is the highest slice), InstanceNumbers in file order."""
    nz = 4
    names = [f"IM_{nz - k}.dcm" for k in range(nz)]  # z = 0 is IM_4.dcm
    sops = [generate_uid() for _ in range(nz)]
    files, stored = _series(tmp_path / "s", nz=nz, names=names, thickness=3.0,
                            per_slice=lambda k: {"sop": sops[k]})
    vol = load_ct(tmp_path / "s")
    assert [Path(f).name for f in vol.metadata["files"]] == names
    assert vol.metadata["sop_instance_uids"] == sops
    assert vol.metadata["instance_numbers"] == [1, 2, 3, 4]
    assert vol.metadata["frame_numbers"] is None
    assert vol.metadata["slice_thickness_mm"] == 3.0 and vol.spacing[0] == pytest.approx(DZ)
    np.testing.assert_array_equal(vol.hu, stored.astype(np.float32) - 1024)
    # reversed positions (head first along -z): still increasing along the normal, spacing positive
    files, stored = _series(tmp_path / "r", nz=nz, per_slice=lambda k: {"ipp": (0.0, 0.0, -DZ * k)})
    vol = load_ct(tmp_path / "r")
    assert vol.spacing[0] == pytest.approx(DZ) and vol.origin[2] == pytest.approx(-DZ * (nz - 1))
    assert vol.metadata["instance_numbers"] == [4, 3, 2, 1]
    np.testing.assert_array_equal(vol.hu, stored[::-1].astype(np.float32) - 1024)
    assert len(vol.direction) == 9 and vol.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
