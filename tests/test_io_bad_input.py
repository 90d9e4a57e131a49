"""Bad input through the core loader (``src_training.io.load_ct``) AND the napari reader (``read_ct``).

Every case of docs/reliability.md "## Bad input" is checked here: the core either loads correct HU (and
says what it corrected in ``metadata["warnings"]``) or raises a :class:`CTLoadError` whose message starts
as documented; the reader then shows that message as a notification and returns napari's "nothing to add"
value (never a traceback, never a half-made layer). No viewer is needed: the notification functions are
replaced by recorders. Test DICOM files are written by the project's own ``write_dicom_series`` into
``tmp_path`` and then altered with pydicom (sample_data is never touched).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from src_training.errors import CTLoadError, MultipleSeriesError
from src_training.io import load_ct, write_dicom_series
from src_training.sample import sample_dir

SAMPLE_SLICE = sample_dir() / "lung2" / "ndct" / "IM_00010.dcm"


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def reader(monkeypatch):
    """The napari reader with its notifications recorded: ``reader.read(path)``, ``.errors``, ``.infos``."""
    pytest.importorskip("napari")
    import napari_lidnet._layers as layers
    import napari_lidnet._reader as rd

    class R:
        errors: list[str] = []
        infos: list[str] = []

        @staticmethod
        def read(path):
            assert rd.napari_get_reader(str(path)) is rd.read_ct
            return rd.read_ct(str(path))

        @staticmethod
        def refuses(path, start: str) -> str:
            """The reader returns no layer and one error notification containing ``start``."""
            n = len(R.errors)
            out = R.read(path)
            assert out == rd.NO_LAYERS
            assert len(R.errors) == n + 1, "expected exactly one error notification"
            assert start in R.errors[-1], R.errors[-1]
            return R.errors[-1]

    R.errors, R.infos = [], []

    def fake_error(exc, context=""):
        msg = f"{context}: {exc}"
        assert isinstance(exc, CTLoadError), f"not a user-facing error: {type(exc).__name__}: {exc}"
        R.errors.append(msg)
        return msg

    monkeypatch.setattr(rd, "notify_error", fake_error)
    monkeypatch.setattr(layers, "notify_info", lambda m: R.infos.append(m))
    R.module = rd
    return R


def _hu(nz=5, ny=24, nx=20, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(-1024, 1500, size=(nz, ny, nx)).astype(np.float32)


def _series(folder: Path, hu: np.ndarray | None = None, spacing=(2.5, 0.7, 0.8), **kw) -> list[Path]:
    hu = _hu() if hu is None else hu
    return write_dicom_series(hu, folder, spacing=spacing, series_description=kw.pop("desc", "test"),
                              image_type=("ORIGINAL", "PRIMARY"), **kw)


def _edit(files, fn) -> None:
    """Apply ``fn(ds, k)`` to every file (pydicom) and save it in place."""
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        fn(ds, k)
        ds.save_as(f)


def _core_refuses(path, start: str, **kw) -> str:
    with pytest.raises(CTLoadError) as ei:
        load_ct(path, **kw)
    assert start in str(ei.value), str(ei.value)
    return str(ei.value)


# ------------------------------------------------------------------------------------------------ corrupt
def test_corrupt_and_truncated_dicom(tmp_path, reader):
    files = _series(tmp_path / "s")
    # random bytes with a .dcm name, alone in a folder and as a file
    junk = tmp_path / "junk" / "IM_1.dcm"
    junk.parent.mkdir()
    junk.write_bytes(np.random.default_rng(0).bytes(3000))
    _core_refuses(junk, "is not a readable DICOM file")
    reader.refuses(junk, "IM_1.dcm")
    _core_refuses(junk.parent, "not a readable DICOM file")
    # truncated pixel data in one slice of a series: the file is named
    data = files[3].read_bytes()
    files[3].write_bytes(data[:-200])
    msg = _core_refuses(tmp_path / "s", "Cannot decode the pixels of")
    assert "IM_00004.dcm" in msg and "Re-export" in msg
    reader.refuses(tmp_path / "s", "IM_00004.dcm")
    # header cut in the middle (file is 300 bytes long)
    files[1].write_bytes(data[:300])
    reader.refuses(tmp_path / "s", "IM_00002.dcm")
    _core_refuses(files[1], "IM_00002.dcm")


def test_corrupt_slice_in_lazy_series_is_reported_not_raised(tmp_path, reader, monkeypatch):
    """Above the lazy threshold slices are decoded on display; a bad one becomes air + a notification."""
    files = _series(tmp_path / "s")
    files[0].write_bytes(files[0].read_bytes()[:-100])
    monkeypatch.setattr(reader.module, "LAZY_THRESHOLD_BYTES", 100)
    [(data, kw, _)] = reader.read(tmp_path / "s")
    assert type(data).__module__.startswith("dask")
    arr = np.asarray(data)  # what napari does when it shows the slices
    assert np.all(arr[0] == -1024.0) and reader.errors and "IM_00001.dcm" in reader.errors[-1]
    ok = load_ct(tmp_path / "s", lazy=True)  # without a handler the core raises on use
    with pytest.raises(CTLoadError, match="IM_00001.dcm"):
        np.asarray(ok.hu)


# ------------------------------------------------------------------------------------------------ mixed folders
def test_folder_mixing_series_and_modalities(tmp_path, reader):
    hu = _hu()
    ct = _series(tmp_path / "ct", hu, desc="chest CT")
    mr = _series(tmp_path / "mr", hu[:3], desc="brain MR")
    _edit(mr, lambda ds, k: setattr(ds, "Modality", "MR"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in ct:
        shutil.copy(f, mixed / f"ct_{f.name}")
    for f in mr:
        shutil.copy(f, mixed / f"mr_{f.name}")
    with pytest.raises(MultipleSeriesError) as ei:
        load_ct(mixed)
    assert str(ei.value).startswith(f"{mixed} holds 2 DICOM series")
    assert "chest CT" in str(ei.value) and "MR" in str(ei.value)
    # the reader opens the CT and says which series it skipped
    layers = reader.read(mixed)
    assert [kw["name"] for _, kw, _ in layers] == ["chest CT"]
    np.testing.assert_allclose(layers[0][0], hu, atol=0.5)
    assert any("skipped 1 series that are not CT images" in m and "MR" in m for m in reader.infos)
    # a folder with only the MR series: refused by both
    _core_refuses(tmp_path / "mr", "is a MR image")
    reader.refuses(tmp_path / "mr", "holds no CT series")


# ------------------------------------------------------------------------------------------------ slices
def test_missing_duplicated_uneven_slices(tmp_path, reader):
    hu = _hu(nz=6)
    files = _series(tmp_path / "gap", hu)
    files[2].unlink()
    msg = _core_refuses(tmp_path / "gap", "gap of 5.00 mm between slice positions")
    assert "1 missing slice(s) (expected at 5.00 mm)" in msg
    reader.refuses(tmp_path / "gap", "missing slice")

    # an exact copy of a file (same SOPInstanceUID) is ignored with a warning
    files = _series(tmp_path / "dup", hu)
    shutil.copy(files[2], tmp_path / "dup" / "copy_of_3.dcm")
    vol = load_ct(tmp_path / "dup")
    np.testing.assert_allclose(vol.hu, hu, atol=0.5)
    assert any("copy_of_3.dcm is a copy of IM_00003.dcm" in w for w in vol.metadata["warnings"])
    reader.read(tmp_path / "dup")
    assert any("is a copy of" in m for m in reader.infos)
    # a different image at the same position is refused
    other = tmp_path / "dup" / "copy_of_3.dcm"
    ds = pydicom.dcmread(other)
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(other)
    _core_refuses(tmp_path / "dup", "are at the same position 5.00 mm")
    reader.refuses(tmp_path / "dup", "duplicated slice")

    # uneven spacing (positions 0, 2.5, 5, 9, 11.5, 14): refused, never resampled silently
    files = _series(tmp_path / "uneven", hu)
    _edit(files[3:], lambda ds, k: setattr(ds, "ImagePositionPatient", [0, 0, 9 + 2.5 * k]))
    msg = _core_refuses(tmp_path / "uneven", "gap of 4.00 mm between slice positions 5.00 mm")
    assert "uneven slice spacing" in msg
    reader.refuses(tmp_path / "uneven", "uneven slice spacing")

    # no positions and repeated InstanceNumbers: the order is unknown
    files = _series(tmp_path / "noorder", hu)

    def strip(ds, k):
        del ds.ImagePositionPatient
        ds.InstanceNumber = 1

    _edit(files, strip)
    _core_refuses(tmp_path / "noorder", "the slice order is unknown")
    reader.refuses(tmp_path / "noorder", "the slice order is unknown")


def test_gantry_tilt_is_corrected(tmp_path, reader):
    """Tilted acquisition: each slice's origin moves 1 pixel (0.8 mm) along y per slice, i.e. a gantry tilt
    of atan(0.8 / 2.5) = 17.7 deg. A column that is vertical in the patient appears 1 row higher on each
    slice; after the correction it is on the same rows on every slice."""
    nz, ny, nx = 5, 24, 20
    hu = np.full((nz, ny, nx), -1000.0, dtype=np.float32)
    for k in range(nz):
        hu[k, 14 - k : 18 - k, 8:12] = 400.0  # object at patient y rows 14..17 of slice 0
    files = _series(tmp_path / "tilt", hu, spacing=(2.5, 0.8, 0.8))
    _edit(files, lambda ds, k: (setattr(ds, "ImagePositionPatient", [0.0, 0.8 * k, 2.5 * k]),
                                setattr(ds, "GantryDetectorTilt", 17.7)))
    vol = load_ct(tmp_path / "tilt")
    assert vol.metadata["gantry_tilt_corrected_deg"] == pytest.approx(np.degrees(np.arctan(0.8 / 2.5)), abs=0.01)
    assert vol.spacing == pytest.approx((2.5, 0.8, 0.8))
    for k in range(nz):
        np.testing.assert_allclose(vol.hu[k, 14:18, 8:12], 400.0, atol=1e-3)
        assert np.all(vol.hu[k, :14] <= -1000.0 + 1e-3)
    assert any(w.startswith("gantry tilt of 17.7 deg") for w in vol.metadata["warnings"])
    reader.read(tmp_path / "tilt")
    assert any("gantry tilt of 17.7 deg" in m for m in reader.infos)
    # positions that are not on a line cannot be a tilt: refused
    _edit(files[2:3], lambda ds, k: setattr(ds, "ImagePositionPatient", [3.0, 0.0, 5.0]))
    _core_refuses(tmp_path / "tilt", "do not lie on a straight line")
    reader.refuses(tmp_path / "tilt", "do not lie on a straight line")


# ------------------------------------------------------------------------------------------------ modality
def test_non_ct_modality_and_colour_images(tmp_path, reader):
    f = tmp_path / "pet.dcm"
    shutil.copy(SAMPLE_SLICE, f)
    ds = pydicom.dcmread(f)
    ds.Modality = "PT"
    ds.save_as(f)
    _core_refuses(f, "is a PT image (DICOM Modality PT), not CT")
    reader.refuses(f, "not CT")
    # an RGB secondary capture (screenshot) with Modality CT
    rgb = tmp_path / "rgb.dcm"
    ds = pydicom.dcmread(SAMPLE_SLICE)
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.Rows, ds.Columns = 8, 8
    ds.PixelData = np.zeros((8, 8, 3), np.uint8).tobytes()
    ds.save_as(rgb)
    _core_refuses(rgb, "is a colour image (3 samples per pixel, RGB)")
    reader.refuses(rgb, "colour image")


# ------------------------------------------------------------------------------------------------ rescale
def test_rescale_slope_intercept(tmp_path, reader):
    hu = _hu()
    files = _series(tmp_path / "s", hu)
    stored = [pydicom.dcmread(f).pixel_array.astype(np.float64) for f in files]

    # unusual but valid: slope 0.5, intercept -1000, different intercept on one slice
    def half(ds, k):
        ds.RescaleSlope, ds.RescaleIntercept = "0.5", "-1000" if k != 2 else "-900"

    _edit(files, half)
    vol = load_ct(tmp_path / "s")
    expected = np.stack([s * 0.5 - (1000 if k != 2 else 900) for k, s in enumerate(stored)])
    np.testing.assert_array_equal(vol.hu, expected.astype(np.float32))
    assert vol.metadata["hu_check"].startswith("ok")
    [(data, _, _)] = reader.read(tmp_path / "s")
    np.testing.assert_array_equal(data, vol.hu)

    # absent: identity with a warning (shown by the reader)
    def strip(ds, k):
        del ds.RescaleSlope
        del ds.RescaleIntercept

    _edit(files, strip)
    vol = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, np.stack(stored).astype(np.float32))
    assert any(w.startswith("RescaleSlope/RescaleIntercept absent") for w in vol.metadata["warnings"])
    reader.read(tmp_path / "s")
    assert any("RescaleSlope/RescaleIntercept absent" in m for m in reader.infos)

    # unusable: slope 0
    _edit(files, lambda ds, k: (setattr(ds, "RescaleSlope", "0"), setattr(ds, "RescaleIntercept", "0")))
    _core_refuses(tmp_path / "s", "cannot convert the stored values to HU")
    reader.refuses(tmp_path / "s", "RescaleSlope 0")


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("bits_stored", [12, 16])
def test_signed_unsigned_12_16_bit(tmp_path, reader, signed, bits_stored):
    """Stored values v in the BitsStored range; with 12 bits the 4 high bits of each 16-bit word are
    garbage (set to 1010) and must be ignored. HU = v - 1024 (signed: v may be negative)."""
    rng = np.random.default_rng(3)
    lo, hi = (-(2 ** (bits_stored - 1)), 2 ** (bits_stored - 1)) if signed else (0, 2**bits_stored)
    v = rng.integers(max(lo, -2048), min(hi, 4096), size=(3, 16, 16))
    files = _series(tmp_path / "s", np.zeros((3, 16, 16)))
    word = (v & (2**bits_stored - 1)).astype(np.uint16)
    if bits_stored == 12:
        word |= np.uint16(0xA000)

    def put(ds, k):
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, int(signed)
        ds.PixelData = word[k].astype("<u2").tobytes()
        ds.RescaleIntercept = "-1024"

    _edit(files, put)
    vol = load_ct(tmp_path / "s")
    np.testing.assert_array_equal(vol.hu, (v - 1024).astype(np.float32))
    assert vol.metadata["hu_check"].startswith("ok")
    [(data, _, _)] = reader.read(tmp_path / "s")
    np.testing.assert_array_equal(data, vol.hu)


# ------------------------------------------------------------------------------------------------ compression
def _compress_jpeg_baseline(f: Path) -> None:
    """Re-encode a slice as 8-bit JPEG baseline (lossy) with Pillow; stored = HU / 8 + 128 clipped."""
    import io as _io

    from PIL import Image
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(f)
    u8 = np.clip((ds.pixel_array.astype(np.float64) - 1024) / 8 + 128, 0, 255).astype(np.uint8)
    buf = _io.BytesIO()
    Image.fromarray(u8).save(buf, format="JPEG", quality=95)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleSlope, ds.RescaleIntercept = "8", "-1024"
    ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEGBaseline8Bit
    ds.save_as(f)


@pytest.mark.parametrize("syntax", ["jpeg-baseline", "jpeg-ls", "jpeg-2000", "rle"])
def test_compressed_transfer_syntaxes(tmp_path, reader, syntax, monkeypatch):
    hu = np.round(_hu(nz=3, ny=32, nx=32, seed=4) / 8) * 8  # multiples of 8: exact in the JPEG case too
    hu[:, :16] = 40.0  # a flat region (lossy JPEG reproduces it well)
    files = _series(tmp_path / "s", hu)
    uids = {"jpeg-ls": pydicom.uid.JPEGLSLossless, "jpeg-2000": pydicom.uid.JPEG2000Lossless,
            "rle": pydicom.uid.RLELossless, "jpeg-baseline": pydicom.uid.JPEGBaseline8Bit}
    for f in files:
        if syntax == "jpeg-baseline":
            _compress_jpeg_baseline(f)
        else:
            ds = pydicom.dcmread(f)
            try:
                ds.compress(uids[syntax])
            except RuntimeError as exc:  # encoder missing in this environment
                pytest.skip(f"no {syntax} encoder to make the test file: {exc}")
            ds.save_as(f)
    vol = load_ct(tmp_path / "s")
    if syntax == "jpeg-baseline":
        np.testing.assert_allclose(vol.hu[:, :16], 40.0, atol=16.0)  # lossy
        assert np.mean(np.abs(vol.hu - np.clip(hu, -1024, 1016))) < 200
    else:
        np.testing.assert_array_equal(vol.hu, hu)
    [(data, _, _)] = reader.read(tmp_path / "s")
    np.testing.assert_array_equal(data, vol.hu)

    # without a decoder: refused, naming what to install
    from pydicom.pixels.decoders.base import Decoder

    monkeypatch.setattr(Decoder, "is_available", property(lambda self: False))
    msg = _core_refuses(tmp_path / "s", "no decoder for it is installed")
    assert "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg" in msg and "IM_00001.dcm" in msg
    reader.refuses(tmp_path / "s", "pip install pylibjpeg")


def test_pixel_handlers_installed():
    """The decoders named in pyproject.toml are there: JPEG baseline, JPEG-LS and JPEG 2000 decode."""
    from pydicom.pixels import get_decoder

    for uid in (pydicom.uid.JPEGBaseline8Bit, pydicom.uid.JPEGLSLossless, pydicom.uid.JPEG2000Lossless,
                pydicom.uid.JPEGLosslessSV1):
        assert get_decoder(uid).is_available, uid.name


# ------------------------------------------------------------------------------------------------ NaN / Inf
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_inf_in_volume_files_refused(tmp_path, reader, suffix, bad):
    arr = np.zeros((3, 6, 5), dtype=np.float32)
    arr[1, 2, 3] = bad
    arr[2, 0, 0] = bad
    p = tmp_path / f"v{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(p))
    _core_refuses(p, "the volume contains 2 NaN or infinite voxel(s)")
    reader.refuses(p, "NaN or infinite")


# ------------------------------------------------------------------------------------------------ 2-D / 3-D
def test_2d_where_3d_expected_and_reverse(tmp_path, reader):
    # one DICOM slice: a one-slice volume
    f = tmp_path / "one.dcm"
    shutil.copy(SAMPLE_SLICE, f)
    vol = load_ct(f)
    assert vol.hu.shape == (1, 512, 512) and vol.metadata["format"] == "dicom-file"
    assert vol.spacing[0] == pytest.approx(5.0)
    [(data, kw, _)] = reader.read(f)
    assert data.shape == (1, 512, 512)
    # a 2-D NIfTI: one-slice volume with a warning
    p = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((6, 5), 30, np.int16)), str(p))
    vol = load_ct(p)
    assert vol.hu.shape == (1, 6, 5) and vol.hu.dtype == np.float32 and np.all(vol.hu == 30)
    assert "2-D image" in vol.metadata["warnings"][0]
    reader.read(p)
    assert any("2-D image" in m for m in reader.infos)
    # a 4-D NIfTI (time series) and a vector image are refused
    img4 = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((3, 4, 5), np.float32))] * 2)
    sitk.WriteImage(img4, str(tmp_path / "t.nii"))
    _core_refuses(tmp_path / "t.nii", "is a 4-D image")
    reader.refuses(tmp_path / "t.nii", "4-D image")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5, 3), np.float32), isVector=True),
                    str(tmp_path / "vec.nrrd"))
    _core_refuses(tmp_path / "vec.nrrd", "has 3 values per voxel")
    reader.refuses(tmp_path / "vec.nrrd", "values per voxel")
    # a multi-frame (3-D) DICOM file loads as a volume; inside a series folder it is refused
    hu = _hu(nz=3, ny=8, nx=8)
    mf = tmp_path / "mf.dcm"
    ds = pydicom.dcmread(_series(tmp_path / "src", hu)[0])
    ds.NumberOfFrames = 3
    ds.PixelData = (hu + 1024).astype("<i2").tobytes()
    ds.save_as(mf)
    vol = load_ct(mf)
    np.testing.assert_array_equal(vol.hu, hu)
    [(data, _, _)] = reader.read(mf)
    assert data.shape == (3, 8, 8)
    shutil.copy(mf, tmp_path / "src" / "IM_00001.dcm")
    _core_refuses(tmp_path / "src", "holds 3 frames; multi-frame files in a series are not supported")
    reader.refuses(tmp_path / "src", "multi-frame")


# ------------------------------------------------------------------------------------------------ empty
def test_empty_folder_and_non_image_files(tmp_path, reader):
    empty = tmp_path / "empty"
    empty.mkdir()
    _core_refuses(empty, "is empty")
    reader.refuses(empty, "is empty")  # every folder is ours: the plugin says what is wrong
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.txt").write_text("report")
    (docs / "scan.pdf").write_bytes(b"%PDF-1.4")
    _core_refuses(docs, "No readable DICOM series in")
    reader.refuses(docs, "holds no CT images")
    # a series folder with extra non-image files (notes, a DICOM file without pixels) loads the images
    hu = _hu()
    _series(tmp_path / "s", hu)
    (tmp_path / "s" / "README.txt").write_text("exported from PACS")
    (tmp_path / "s" / "Thumbs.db").write_bytes(b"\x00" * 64)
    vol = load_ct(tmp_path / "s")
    np.testing.assert_allclose(vol.hu, hu, atol=0.5)
    [(data, _, _)] = reader.read(tmp_path / "s")
    assert data.shape == hu.shape
    # a DICOM file without pixel data (e.g. a structured report)
    sr = tmp_path / "report.dcm"
    ds = pydicom.dcmread(SAMPLE_SLICE)
    del ds.PixelData
    ds.save_as(sr)
    _core_refuses(sr, "is a DICOM file without pixel data")
    reader.refuses(sr, "without pixel data")


# ------------------------------------------------------------------------------------------------ malformed tags
def test_unknown_transfer_syntax_and_malformed_numbers(tmp_path, reader):
    f = tmp_path / "ts.dcm"
    ds = pydicom.dcmread(SAMPLE_SLICE)
    ds.file_meta.TransferSyntaxUID = "1.2.3.4"
    ds.save_as(f, enforce_file_format=False)
    _core_refuses(f, "unknown transfer syntax '1.2.3.4' (TransferSyntaxUID)")
    reader.refuses(f, "unknown transfer syntax")
    files = _series(tmp_path / "s")
    _edit(files[:1], lambda ds, k: setattr(ds, "PixelSpacing", [0.7, -1]))
    _core_refuses(tmp_path / "s", "the DICOM tag PixelSpacing = [0.7, -1.0] is not 2 finite positive number(s)")
    reader.refuses(tmp_path / "s", "PixelSpacing")
    _edit(files[:1], lambda ds, k: delattr(ds, "PixelSpacing"))
    vol = load_ct(tmp_path / "s")
    assert vol.spacing[1:] == (1.0, 1.0) and any("PixelSpacing absent" in w for w in vol.metadata["warnings"])
