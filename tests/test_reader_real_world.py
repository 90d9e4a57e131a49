"""The napari reader (``napari_lidnet._reader``) on DICOM as it comes from scanners, PACS and discs
(issue #12 items 3, 5, 6, 7, 9): several selected slice files, folders with good and broken series,
localizer (scout) series, legacy files without the 128-byte preamble, DICOMDIR index files, images kept in
sub-folders.

The DICOM files are built here with pydicom from scratch (tiny 16 x 16 slices, HU known to the voxel).
``read_ct`` / ``napari_get_reader`` are called directly with the notifications recorded (the reader's
``notify_error`` and ``napari_lidnet._layers.notify_info`` replaced, as in tests/test_io_bad_input.py); one
test opens a list of files in a napari viewer (run it under ``xvfb-run``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from src_training.errors import CTLoadError

pytest.importorskip("napari")

import napari_lidnet._layers as layers_module  # noqa: E402
import napari_lidnet._reader as rd  # noqa: E402
from napari_lidnet._messages import plain_words  # noqa: E402

SHAPE = (16, 16)
SPACING = (2.5, 0.7, 0.8)  # (z, y, x) mm
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def reader(monkeypatch):
    """``reader.read(path_or_paths)`` (checks that napari_get_reader accepts it), ``.errors``, ``.infos``."""

    class R:
        errors: list[str] = []
        infos: list[str] = []

        @staticmethod
        def read(path):
            arg = [str(p) for p in path] if isinstance(path, (list, tuple)) else str(path)
            assert rd.napari_get_reader(arg) is rd.read_ct
            return rd.read_ct(arg)

        @staticmethod
        def messages() -> list[str]:
            return R.errors + R.infos

    def fake_error(exc, context=""):
        assert isinstance(exc, CTLoadError), f"not a user-facing error: {type(exc).__name__}: {exc}"
        msg = f"{context}: {exc}"
        R.errors.append(msg)
        return msg

    R.errors, R.infos = [], []
    monkeypatch.setattr(rd, "notify_error", fake_error)
    monkeypatch.setattr(layers_module, "notify_info", lambda m: R.infos.append(m))
    return R


def _hu(nz: int, seed: int = 0) -> np.ndarray:
    """Integer HU (the stored values are HU + 1024, exact in int16)."""
    return np.random.default_rng(seed).integers(-1024, 1500, size=(nz, *SHAPE)).astype(np.float32)


def _slice(hu2d, k, *, series_uid, study_uid, desc, image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
           iop=AXIAL, ipp=None, dz=SPACING[0]) -> Dataset:
    """A CT Image (PS3.3 A.3) slice ``k`` of a series: position ``(0, 0, k * dz)`` mm unless ``ipp``."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.Modality, ds.SeriesDescription, ds.ImageType = "CT", desc, list(image_type)
    ds.PatientName, ds.PatientID = "Test^Patient", "P1"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "20240101", "120000", "1", 1, k + 1
    ds.ImagePositionPatient = list(ipp) if ipp is not None else [0.0, 0.0, dz * k]
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing, ds.SliceThickness = list(SPACING[1:]), dz
    ds.Rows, ds.Columns = hu2d.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = (hu2d + 1024).astype("<i2").tobytes()
    return ds


def _save(ds: Dataset, path: Path, *, preamble: bool = True) -> Path:
    """Save with the 128-byte preamble + file meta (PS3.10), or as a legacy file without either (implicit
    VR little endian, the dataset starting with group 0008)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        ds.save_as(path, enforce_file_format=True)
    else:
        pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return path


def _series(folder: Path, hu: np.ndarray, desc: str = "chest CT", *, prefix: str = "IM_", suffix: str = ".dcm",
            study_uid: str | None = None, preamble: bool = True, **kw) -> list[Path]:
    """Write ``hu`` (z, y, x) as one series of single-slice files ``<prefix>0001<suffix>``...; returns them."""
    uid, study = generate_uid(), study_uid or generate_uid()
    return [_save(_slice(hu[k], k, series_uid=uid, study_uid=study, desc=desc, **kw),
                  folder / f"{prefix}{k + 1:04d}{suffix}", preamble=preamble) for k in range(len(hu))]


def _dicomdir(files: list[Path], disc: Path) -> Path:
    """A disc layout written by pydicom's FileSet (PS3.10 section 8): ``disc/DICOMDIR`` and the images under
    ``PT000000/ST000000/SE000000/IM00000k``."""
    from pydicom.fileset import FileSet

    fs = FileSet()
    for f in files:
        fs.add(str(f))
    fs.write(str(disc))
    return disc / "DICOMDIR"


def _no_keywords(messages: list[str]) -> None:
    """What the user reads (after :func:`plain_words`, as notify_error shows it) has no programmer's words."""
    for m in map(plain_words, messages):
        for leak in ("series_uid=", "force=True", "Traceback", "Error:"):
            assert leak not in m, m


# ------------------------------------------------------------------------------------------------ selected files
def test_selected_slice_files_open_as_one_volume(tmp_path, reader):
    """A user selecting the 5 slice files of a series (in any order) gets ONE (5, y, x) layer, equal to the
    folder's; a DICOMDIR among them is ignored; a volume file beside them gives its own layer."""
    hu = _hu(5)
    files = _series(tmp_path / "s", hu)
    [(folder_data, folder_kw, _)] = reader.read(tmp_path / "s")
    picked = [files[3], files[0], files[4], files[2], files[1]]
    out = reader.read(picked)
    assert len(out) == 1, [kw["name"] for _, kw, _ in out]
    data, kw, kind = out[0]
    assert kind == "image" and data.shape == (5, *SHAPE)
    np.testing.assert_array_equal(np.asarray(data), np.asarray(folder_data))
    np.testing.assert_array_equal(np.asarray(data), hu)
    assert kw["scale"] == pytest.approx(folder_kw["scale"]) and kw["scale"] == pytest.approx(SPACING)
    assert kw["translate"] == pytest.approx(folder_kw["translate"])
    assert kw["name"] == "chest CT"
    assert not reader.errors

    # with the disc's DICOMDIR selected too, and a NIfTI volume beside them
    dicomdir = _dicomdir(files, tmp_path / "disc")
    nii = tmp_path / "other.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((3, 4, 5), 40, np.int16)), str(nii))
    out = reader.read([*files, dicomdir, nii])
    assert sorted(np.asarray(d).shape for d, _, _ in out) == [(3, 4, 5), (5, *SHAPE)]
    assert not reader.errors
    _no_keywords(reader.messages())


def test_selected_files_of_two_series_and_a_broken_file(tmp_path, reader):
    """Files of two series selected together: one layer per series (named by SeriesDescription); a file with a
    DICOM name that is not DICOM is reported by name and the series still open."""
    a, b = _hu(4, seed=1), _hu(3, seed=2)
    fa = _series(tmp_path / "a", a, "soft tissue")
    fb = _series(tmp_path / "b", b, "lung")
    junk = tmp_path / "junk" / "IM_9999.dcm"
    junk.parent.mkdir()
    junk.write_text("exported by PACS on monday")
    out = reader.read([*fa, *fb, junk])
    got = {kw["name"]: np.asarray(d) for d, kw, _ in out}
    assert sorted(got) == ["lung", "soft tissue"]
    np.testing.assert_array_equal(got["soft tissue"], a)
    np.testing.assert_array_equal(got["lung"], b)
    assert len(reader.errors) == 1 and "IM_9999.dcm" in reader.errors[0] and "not a DICOM image" in reader.errors[0]
    _no_keywords(reader.messages())


def test_one_slice_of_a_folder_says_how_to_open_the_series(tmp_path, reader):
    """napari's plain Open File(s)... hands files over one at a time: the first slice opened from a folder
    says how to get one volume (once per folder), the slice itself still opens."""
    files = _series(tmp_path / "s", _hu(3))
    [(data, _, _)] = reader.read(files[0])
    assert np.asarray(data).shape == (1, *SHAPE)
    hints = [m for m in reader.infos if "Open Files as Stack" in m]
    assert len(hints) == 1 and "IM_0001.dcm is one slice" in hints[0] and "2 other DICOM file(s)" in hints[0]
    reader.read(files[1])
    assert len([m for m in reader.infos if "Open Files as Stack" in m]) == 1


# ------------------------------------------------------------------------------------------------ several series
def test_folder_with_good_and_broken_series_opens_the_good_one(tmp_path, reader):
    """Not all or nothing: the good series becomes a layer, the broken one (a missing slice) is named in one
    error notification with the core's reason."""
    good, broken = _hu(5, seed=3), _hu(6, seed=4)
    mixed = tmp_path / "mixed"
    _series(mixed, good, "good CT", prefix="A_")
    bad = _series(mixed, broken, "broken CT", prefix="B_")
    bad[2].unlink()
    out = reader.read(mixed)
    assert [kw["name"] for _, kw, _ in out] == ["good CT"]
    np.testing.assert_array_equal(np.asarray(out[0][0]), good)
    assert len(reader.errors) == 1
    msg = reader.errors[0]
    assert "'broken CT' (5 images)" in msg and "'mixed'" in msg and "was not opened" in msg
    assert "about 1 missing slice(s)" in msg and "B_0002.dcm" in msg and "B_0004.dcm" in msg
    assert "good CT" not in msg

    # two broken series beside the good one: still ONE error notification naming both
    other = _series(mixed, _hu(4, seed=5), "second broken", prefix="C_")
    other[1].write_bytes(other[1].read_bytes()[:-100])  # pixel data cut short
    n = len(reader.errors)
    out = reader.read(mixed)
    assert [kw["name"] for _, kw, _ in out] == ["good CT"]
    assert len(reader.errors) == n + 1
    msg = reader.errors[-1]
    assert msg.startswith("Open CT: 2 series or files could not be opened; 1 volume(s) were opened.")
    # (GDCM leaves the cut file out of the series' listing; the core puts it back and names it)
    assert "'broken CT' (5 images)" in msg and "'second broken' (" in msg and "C_0002.dcm" in msg
    _no_keywords(reader.messages())

    # only broken series: nothing to add, the one notification names them
    shutil.rmtree(mixed)
    bad = _series(mixed, broken, "broken CT", prefix="B_")
    bad[2].unlink()
    other = _series(mixed, _hu(4, seed=5), "second broken", prefix="C_")
    other[1].write_bytes(other[1].read_bytes()[:-100])
    n = len(reader.errors)
    assert reader.read(mixed) == rd.NO_LAYERS
    assert len(reader.errors) == n + 1 and "'broken CT'" in reader.errors[-1] and "'second broken'" in reader.errors[-1]


# ------------------------------------------------------------------------------------------------ localizers
def test_localizer_beside_series_is_skipped_with_a_notice(tmp_path, reader):
    """A scout (ImageType LOCALIZER, coronal) in the series folder: the axial series opens, the scout is
    named in an information notice; a folder of scouts only gets a clear error."""
    hu = _hu(5, seed=6)
    folder = tmp_path / "exam"
    _series(folder, hu, "chest 2.5 mm", prefix="AX_")
    _series(folder, _hu(2, seed=7), "SCOUT", prefix="LOC_", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"),
            iop=CORONAL, ipp=(0.0, 0.0, 0.0))
    out = reader.read(folder)
    assert [kw["name"] for _, kw, _ in out] == ["chest 2.5 mm"]
    np.testing.assert_array_equal(np.asarray(out[0][0]), hu)
    assert not reader.errors
    notes = [m for m in reader.infos if "localizer (scout)" in m]
    assert len(notes) == 1 and "'SCOUT' (2 images)" in notes[0] and "exam" in notes[0]

    scouts = tmp_path / "scouts"
    _series(scouts, _hu(2, seed=7), "SCOUT", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), iop=CORONAL,
            ipp=(0.0, 0.0, 0.0))
    assert reader.read(scouts) == rd.NO_LAYERS
    assert "holds only localizer (scout) images: series 'SCOUT' (2 images)" in reader.errors[-1]
    _no_keywords(reader.messages())


# ------------------------------------------------------------------------------------------------ legacy files
def test_preamble_less_legacy_files_are_recognised_and_loaded(tmp_path, reader):
    """Files without the 128-byte preamble and 'DICM' (older scanners; PS3.10 7.1 makes the preamble part
    of the file format, but such files are still met): the folder and the files are the reader's and load."""
    hu = _hu(4, seed=8)
    files = _series(tmp_path / "legacy", hu, "legacy CT", prefix="IM", suffix="", preamble=False)
    assert files[0].read_bytes()[:4] == b"\x08\x00\x08\x00"  # group 0008 first, no preamble
    assert rd._is_dicom_file(files[0]) and rd._folder_has_dicom(tmp_path / "legacy")
    [(data, kw, _)] = reader.read(tmp_path / "legacy")
    np.testing.assert_array_equal(np.asarray(data), hu)
    assert kw["scale"] == pytest.approx(SPACING)
    [(one, _, _)] = reader.read(files[0])  # an extension-less legacy file on its own
    np.testing.assert_array_equal(np.asarray(one)[0], hu[0])
    out = reader.read(files)  # all of them selected
    assert len(out) == 1 and np.asarray(out[0][0]).shape == hu.shape
    # with a DICOM name: loaded, not called "not a DICOM image"
    named = shutil.copy(files[1], tmp_path / "legacy_slice.dcm")
    [(one, _, _)] = reader.read(named)
    np.testing.assert_array_equal(np.asarray(one)[0], hu[1])
    assert not reader.errors
    _no_keywords(reader.messages())


# ------------------------------------------------------------------------------------------------ DICOMDIR
def test_dicomdir_alone_is_not_a_dicom_folder(tmp_path, reader):
    """A DICOMDIR (the index of a disc, no image) does not make a folder a DICOM folder, is never offered as
    a file to read, and is not reported as unreadable beside the images."""
    files = _series(tmp_path / "src", _hu(4, seed=9), "disc CT")
    dicomdir = _dicomdir(files, tmp_path / "disc")
    alone = tmp_path / "only index"
    alone.mkdir()
    shutil.copy(dicomdir, alone / "DICOMDIR")
    assert not rd._is_dicom_file(alone / "DICOMDIR") and not rd._folder_has_dicom(alone)
    assert rd.napari_get_reader(str(alone / "DICOMDIR")) is None
    assert reader.read(alone) == rd.NO_LAYERS
    [msg] = reader.errors
    assert "'only index' holds only DICOMDIR, the index of a DICOM disc" in msg
    assert "PT000000/ST000000/SE000000/IM000000" in msg  # what it lists
    for wrong in ("corrupt", "unreadable", "not a readable"):
        assert wrong not in msg, msg
    # a DIRFILE beside the images of a series folder: the series opens, no word about the index
    series = tmp_path / "series"
    shutil.copytree(tmp_path / "src", series)
    shutil.copy(dicomdir, series / "DIRFILE")
    [(data, _, _)] = reader.read(series)
    assert np.asarray(data).shape == (4, *SHAPE)
    assert len(reader.errors) == 1
    assert not [m for m in reader.infos if "DIRFILE" in m or "unreadable" in m], reader.infos


# ------------------------------------------------------------------------------------------------ sub-folders
def test_images_in_sub_folders_are_pointed_to(tmp_path, reader):
    """The core's hint "It has sub-folders (...); choose the one with the images." reaches the user, with
    the folders that hold the images (a PACS disc keeps them four levels down)."""
    study = tmp_path / "study"
    _series(study / "SE1", _hu(3), "arterial")
    _series(study / "SE2", _hu(3), "venous")
    (study / "notes.txt").write_text("two phases")
    assert reader.read(study) == rd.NO_LAYERS
    msg = reader.errors[-1]
    assert "It has sub-folders (SE1, SE2); choose the one with the images." in msg and str(study) in msg

    # a disc: DICOMDIR on top, the images in PT000000/ST000000/SE000000
    files = _series(tmp_path / "src", _hu(3), "disc CT")
    disc = tmp_path / "disc"
    _dicomdir(files, disc)
    assert reader.read(disc) == rd.NO_LAYERS
    msg = reader.errors[-1]
    assert "It has sub-folders (PT000000); choose the one with the images" in msg
    assert "PT000000/ST000000/SE000000" in msg

    # a damaged DICOM-named file on top, the series below: the core's reason (naming it) plus the hint
    (study / "IM_0001.dcm").write_bytes(np.random.default_rng(0).bytes(3000))
    assert reader.read(study) == rd.NO_LAYERS
    msg = reader.errors[-1]
    assert "IM_0001.dcm" in msg and "It has sub-folders (SE1, SE2); choose the one with the images." in msg
    _no_keywords(reader.messages())


# ------------------------------------------------------------------------------------------------ napari
def test_viewer_opens_selected_slice_files_as_one_layer(tmp_path, make_napari_viewer, lidnet_manifest):
    """File > Open Files as Stack... (or shift + drop) hands napari's list to the reader: one layer."""
    hu = _hu(5, seed=10)
    files = _series(tmp_path / "s", hu)
    viewer = make_napari_viewer()
    added = viewer.open([str(f) for f in files[::-1]], stack=True, plugin="napari-lidnet")
    assert len(added) == 1 and len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.data.shape == (5, *SHAPE) and layer.name == "chest CT"
    np.testing.assert_array_equal(np.asarray(layer.data), hu)
    assert tuple(layer.scale) == pytest.approx(SPACING)
