"""Tests of src_training.io: DICOM series / files, NIfTI/NRRD, writers, error messages."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from src_training.errors import CTLoadError, CTWriteError, LidnetError, MultipleSeriesError, OutputExistsError
from src_training.io import CTVolume, list_series, load_ct, volume_from_array, write_dicom_series, write_volume
from src_training.sample import sample_dir

SAMPLE = sample_dir()


def _small_volume(nz=5, ny=12, nx=10, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 2000, size=(nz, ny, nx)).astype(np.int16)


def _sitk_series(folder: Path, arr: np.ndarray, spacing_xyz=(0.7, 0.8, 2.5), modality="CT", uid=None,
                 description="test series", skip=()) -> list[Path]:
    """Write a DICOM series with SimpleITK (the way the SimpleITK examples do), int16 stored values."""
    folder.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing(spacing_xyz)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    uid = uid or pydicom.uid.generate_uid()
    study = pydicom.uid.generate_uid()
    files = []
    for k in range(arr.shape[0]):
        if k in skip:
            continue
        sl = img[:, :, k]
        pos = img.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, val in [
            ("0008|0060", modality),
            ("0020|000e", uid),
            ("0020|000d", study),
            ("0008|103e", description),
            ("0020|0032", "\\".join(f"{v:g}" for v in pos)),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0020|0013", str(k + 1)),
            ("0018|0050", f"{spacing_xyz[2]:g}"),
            ("0028|0030", f"{spacing_xyz[1]:g}\\{spacing_xyz[0]:g}"),
            ("0008|0018", pydicom.uid.generate_uid()),
        ]:
            sl.SetMetaData(tag, val)
        f = folder / f"slice{k:03d}.dcm"
        writer.SetFileName(str(f))
        writer.Execute(sl)
        files.append(f)
    return files


# ------------------------------------------------------------------------------------------------ reading


def test_load_real_sample_series():
    vol = load_ct(SAMPLE / "lung2" / "ndct")
    assert isinstance(vol, CTVolume)
    assert vol.hu.shape == (20, 512, 512) and vol.hu.dtype == np.float32
    assert vol.spacing == pytest.approx((5.0, 0.6269531, 0.6269531), abs=1e-5)
    assert -1100 <= vol.hu.min() <= -900 and 500 < vol.hu.max() < 3100
    lung = vol.hu[10, 250:400, 320:420]  # right lung region: air-like parenchyma and the tumour
    assert np.percentile(vol.hu[10], 5) < -800 and np.median(lung) < 0
    assert vol.metadata["Modality"] == "CT"
    assert vol.metadata["format"] == "dicom-series"
    assert vol.metadata["hu_check"].startswith("ok")
    assert vol.metadata["SeriesDescription"] == "pyradiomics lung2 chest CT (NDCT)"
    json.dumps(vol.metadata)  # JSON-serialisable
    # z increases along the slice normal
    n = np.asarray(vol.direction).reshape(3, 3)[:, 2]
    assert n @ np.asarray([0, 0, 1.0]) > 0.99


def test_load_sitk_written_series_exact(tmp_path):
    arr = _small_volume()
    _sitk_series(tmp_path / "s", arr)
    vol = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, arr.astype(np.float32))
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert vol.metadata["Modality"] == "CT"
    # A single file of the series loads as one slice.
    one = load_ct(sorted((tmp_path / "s").iterdir())[2])
    assert one.hu.shape == (1, 12, 10)
    np.testing.assert_array_equal(one.hu[0], arr[2])
    assert one.metadata["format"] == "dicom-file"


def test_series_sorted_by_position_not_name(tmp_path):
    arr = _small_volume()
    files = _sitk_series(tmp_path / "s", arr)
    # Rename so that file-name order is the reverse of position order.
    for f in files:
        f.rename(f.with_name("x" + str(999 - int(f.stem[5:])) + ".dcm"))
    vol = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, arr.astype(np.float32))


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".nii", ".mha"])
def test_volume_round_trip(tmp_path, suffix):
    arr = np.random.default_rng(1).normal(0, 300, size=(4, 9, 7)).astype(np.float32)
    direction = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
    p = write_volume(arr, tmp_path / f"v{suffix}", (3.0, 0.5, 0.75), origin=(1.0, -2.0, 3.5), direction=direction)
    vol = load_ct(p)
    np.testing.assert_allclose(vol.hu, arr, atol=1e-4)
    assert vol.spacing == pytest.approx((3.0, 0.5, 0.75))
    assert vol.origin == pytest.approx((1.0, -2.0, 3.5), abs=1e-4)
    assert vol.direction == pytest.approx(direction, abs=1e-5)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp file left


def test_write_volume_keeps_integer_labels(tmp_path):
    lab = np.zeros((3, 5, 5), dtype=np.uint8)
    lab[1, 2, 2] = 1
    write_volume(lab, tmp_path / "l.nrrd", (1, 1, 1))
    assert sitk.ReadImage(str(tmp_path / "l.nrrd")).GetPixelID() == sitk.sitkUInt8
    with pytest.raises(CTWriteError):
        write_volume(lab, tmp_path / "l.png", (1, 1, 1))


def test_two_series_in_folder(tmp_path):
    arr = _small_volume()
    uid_a, uid_b = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    _sitk_series(tmp_path / "d", arr, uid=uid_a, description="soft kernel")
    # Same folder, other file names, other series.
    tmp2 = tmp_path / "b"
    _sitk_series(tmp2, arr[:, ::-1].copy(), uid=uid_b, description="lung kernel")
    for f in tmp2.iterdir():
        shutil.move(str(f), tmp_path / "d" / ("b_" + f.name))
    found = list_series(tmp_path / "d")
    assert {s.series_uid for s in found} == {uid_a, uid_b}
    with pytest.raises(MultipleSeriesError) as ei:
        load_ct(tmp_path / "d")
    msg = str(ei.value)
    assert uid_a in msg and uid_b in msg and "soft kernel" in msg and "lung kernel" in msg and "5 files" in msg
    assert {s.series_uid for s in ei.value.series} == {uid_a, uid_b}
    vol = load_ct(tmp_path / "d", series_uid=uid_b)
    np.testing.assert_array_equal(vol.hu, arr[:, ::-1].astype(np.float32))
    with pytest.raises(CTLoadError, match="not in"):
        load_ct(tmp_path / "d", series_uid="1.2.3")


def test_non_ct_modality(tmp_path):
    _sitk_series(tmp_path / "mr", _small_volume(), modality="MR")
    with pytest.raises(CTLoadError, match="MR"):
        load_ct(tmp_path / "mr")
    with pytest.raises(CTLoadError, match="MR"):
        load_ct(sorted((tmp_path / "mr").iterdir())[0])


def test_corrupt_files(tmp_path):
    rnd = tmp_path / "random.dcm"
    rnd.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(CTLoadError) as ei:
        load_ct(rnd)
    assert "random.dcm" in str(ei.value)
    # Folder with only a random file.
    (tmp_path / "f").mkdir()
    shutil.copy(rnd, tmp_path / "f" / "a.dcm")
    with pytest.raises(CTLoadError):
        load_ct(tmp_path / "f")
    # Truncated DICOM file (header intact, pixel data cut).
    files = _sitk_series(tmp_path / "t", _small_volume(ny=64, nx=64))
    data = files[0].read_bytes()
    trunc = tmp_path / "trunc.dcm"
    trunc.write_bytes(data[: len(data) - 3000])
    with pytest.raises(CTLoadError):
        load_ct(trunc)
    files[2].write_bytes(files[2].read_bytes()[:-3000])
    with pytest.raises(CTLoadError):
        load_ct(tmp_path / "t")
    # Corrupt NIfTI / NRRD.
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(CTLoadError, match="bad.nii.gz"):
        load_ct(bad)
    with pytest.raises(CTLoadError, match="does not exist"):
        load_ct(tmp_path / "nope.nrrd")


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CTLoadError, match="empty"):
        load_ct(tmp_path / "empty")
    assert list_series(tmp_path / "empty") == []


def test_nan_in_nifti(tmp_path):
    arr = np.zeros((3, 4, 4), dtype=np.float32)
    arr[1, 2, 2] = np.nan
    img = sitk.GetImageFromArray(arr)
    sitk.WriteImage(img, str(tmp_path / "nan.nii.gz"))
    with pytest.raises(CTLoadError, match="NaN"):  # ITK's reader would silently turn NaN into 0
        load_ct(tmp_path / "nan.nii.gz")
    sitk.WriteImage(img, str(tmp_path / "nan.nii"))
    with pytest.raises(CTLoadError, match="1 NaN"):
        load_ct(tmp_path / "nan.nii")
    sitk.WriteImage(img, str(tmp_path / "nan.nrrd"))
    with pytest.raises(CTLoadError, match="NaN"):
        load_ct(tmp_path / "nan.nrrd")
    with pytest.raises(CTWriteError, match="NaN"):
        write_volume(arr, tmp_path / "out.nii.gz", (1, 1, 1))


def test_missing_slice_reports_gap(tmp_path):
    _sitk_series(tmp_path / "gap", _small_volume(nz=6), spacing_xyz=(0.7, 0.8, 2.5), skip=(3,))
    with pytest.raises(CTLoadError) as ei:
        load_ct(tmp_path / "gap")
    msg = str(ei.value)
    assert "gap of 5.00 mm" in msg and "5.00 mm" in msg and "10.00 mm" in msg and "missing" in msg
    assert "expected at 7.50 mm" in msg and "slice003" not in msg and "slice004.dcm" in msg


# ------------------------------------------------------------------------------------------------ writing


def test_write_dicom_series_round_trip(tmp_path):
    _sitk_series(tmp_path / "orig", _small_volume())
    ref = load_ct(tmp_path / "orig")
    hu = ref.hu + np.random.default_rng(2).normal(0, 20, size=ref.hu.shape).astype(np.float32)
    files = write_dicom_series(hu, tmp_path / "den", spacing=ref.spacing, reference=ref,
                               series_description="LIDnet denoised (test)")
    assert len(files) == 5 and all(f.is_file() for f in files)
    back = load_ct(tmp_path / "den")
    assert np.max(np.abs(back.hu - hu)) <= 0.5 + 1e-3
    assert back.spacing == pytest.approx(ref.spacing, abs=1e-5)
    assert back.origin == pytest.approx(ref.origin, abs=1e-4)
    m = back.metadata
    assert m["SeriesInstanceUID"] != ref.metadata["SeriesInstanceUID"]
    assert m["StudyInstanceUID"] == ref.metadata["StudyInstanceUID"]
    assert m["ImageType"][:2] == ["DERIVED", "SECONDARY"]
    assert m["SeriesDescription"] == "LIDnet denoised (test)" and m["Modality"] == "CT"
    sops = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files}
    assert len(sops) == 5
    ds = pydicom.dcmread(files[1])
    assert ds.InstanceNumber == 2 and ds.PixelRepresentation == 1 and ds.BitsAllocated == 16
    assert float(ds.RescaleSlope) == 1.0 and float(ds.RescaleIntercept) == -1024.0
    np.testing.assert_allclose(ds.pixel_array * 1.0 - 1024.0, np.rint(hu[1]))
    # Refuses an existing series unless overwrite; overwrite replaces it atomically.
    with pytest.raises(OutputExistsError):
        write_dicom_series(hu, tmp_path / "den", spacing=ref.spacing, series_description="again")
    assert isinstance(OutputExistsError("x"), LidnetError)
    files2 = write_dicom_series(hu[:3], tmp_path / "den", spacing=ref.spacing, series_description="again",
                                overwrite=True)
    assert sorted(os.listdir(tmp_path / "den")) == sorted(f.name for f in files2)
    assert load_ct(tmp_path / "den").metadata["StudyInstanceUID"] != ref.metadata["StudyInstanceUID"]  # new study
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    # Never deletes a folder holding other things.
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        write_dicom_series(hu, tmp_path / "mixed", spacing=ref.spacing, series_description="x", overwrite=True)
    assert (tmp_path / "mixed" / "notes.txt").read_text() == "keep me"
    with pytest.raises(CTWriteError):
        write_dicom_series(np.full((2, 3, 3), np.nan), tmp_path / "n", spacing=(1, 1, 1), series_description="x")


def test_write_dicom_series_oblique_geometry(tmp_path):
    hu = _small_volume(nz=4).astype(np.float32)
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    write_dicom_series(hu, tmp_path / "o", spacing=(2.0, 0.5, 0.6), origin=(10.0, 20.0, -30.0),
                       direction=direction, series_description="oblique")
    back = load_ct(tmp_path / "o")
    np.testing.assert_array_equal(back.hu, hu)
    assert back.direction == pytest.approx(direction, abs=1e-6)
    assert back.origin == pytest.approx((10.0, 20.0, -30.0))
    assert back.spacing == pytest.approx((2.0, 0.5, 0.6))


def test_volume_from_array():
    v = volume_from_array(np.zeros((4, 4)), (1, 2, 3))
    assert v.hu.shape == (1, 4, 4) and v.hu.dtype == np.float32 and v.shape == (1, 4, 4)
