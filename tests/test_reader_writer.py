"""Reader, writers, sample data and layer helpers of the napari plugin (napari_lidnet).

Run under a virtual X server (the viewer tests need an OpenGL context):
``xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m pytest tests/test_reader_writer.py``.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

pytest.importorskip("napari")

from src_training.io import write_dicom_series as core_write_series  # noqa: E402
from src_training.sample import sample_dir  # noqa: E402

from napari_lidnet import _boxes, _layers, _messages  # noqa: E402
from napari_lidnet._reader import NO_LAYERS, napari_get_reader, read_ct  # noqa: E402
from napari_lidnet._writer import write_boxes_csv, write_dicom_series, write_nifti  # noqa: E402

LUNG2 = sample_dir() / "lung2" / "ndct"


def _image_meta(vol, **extra):
    kw = _layers.image_layer_kwargs(vol, extra_metadata=extra or None)
    return kw


# ------------------------------------------------------------------------------------------- manifest
def test_manifest_valid_and_imports(lidnet_manifest):
    """The npe2 manifest validates and every python_name of it imports (npe2 validate --imports)."""
    from pathlib import Path

    from npe2 import PluginManifest

    mf = PluginManifest.from_file(Path(__file__).resolve().parents[1] / "napari_lidnet" / "napari.yaml")
    mf.validate_imports()
    names = {c.python_name for c in mf.contributions.commands}
    assert "napari_lidnet._reader:napari_get_reader" in names


# ------------------------------------------------------------------------------------------- reader
def test_get_reader_refuses_foreign_paths(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(b"\x89PNG....")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    # every folder is ours, so an empty or non-CT folder gets the plugin's own message (tests/test_gui_startup.py)
    assert napari_get_reader(str(tmp_path / "empty")) is read_ct
    assert napari_get_reader(str(tmp_path / "pics")) is read_ct
    assert napari_get_reader(str(tmp_path / "pics" / "a.png")) is None
    assert napari_get_reader(str(LUNG2)) is read_ct
    assert napari_get_reader(str(tmp_path / "x.nii.gz")) is read_ct  # ours by name, even if missing/corrupt


def test_read_sample_series_layer():
    layers = read_ct(str(LUNG2))
    assert len(layers) == 1
    data, kw, kind = layers[0]
    assert kind == "image"
    assert data.shape == (20, 512, 512) and data.dtype == np.float32
    assert np.allclose(kw["scale"], (5.0, 0.6269531, 0.6269531), atol=1e-5)
    md = kw["metadata"]
    assert md["dicom"]["BodyPartExamined"] == "CHEST"
    assert np.allclose(md["spacing"], kw["scale"])
    assert md["window_name"] == "lung" and md["window"] == (1500.0, -600.0)
    assert kw["contrast_limits"] == (-1350.0, 150.0)
    assert md["hu_range"] == (-1024.0, 1024.0)
    assert kw["name"] == md["dicom"]["SeriesDescription"]
    assert -1100 < float(data.min()) and float(data.max()) > 100  # HU, not stored values


def test_viewer_opens_sample_with_scale_and_metadata(make_napari_viewer, lidnet_manifest):
    viewer = make_napari_viewer()
    layers = viewer.open(str(LUNG2), plugin="napari-lidnet")
    assert len(layers) == 1
    layer = layers[0]
    assert np.allclose(layer.scale, (5.0, 0.6269531, 0.6269531), atol=1e-5)
    assert layer.metadata["dicom"]["Modality"] == "CT"
    assert tuple(layer.contrast_limits) == (-1350.0, 150.0)


def test_corrupt_input_notifies_and_adds_no_layer(make_napari_viewer, lidnet_manifest, tmp_path, notifications):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 20)
    assert napari_get_reader(str(bad)) is read_ct
    assert read_ct(str(bad)) == NO_LAYERS
    assert notifications.errors(), "no error notification"
    assert "broken.dcm" in str(notifications.errors()[-1].message)

    viewer = make_napari_viewer()
    n_before = len(notifications.errors())
    added = viewer.open(str(bad), plugin="napari-lidnet")  # must not raise
    assert added == [] and len(viewer.layers) == 0
    assert len(notifications.errors()) == n_before + 1

    # a folder whose second series is broken: nothing at all is added (no half-made result)
    bad_nii = tmp_path / "vol.nii.gz"
    bad_nii.write_bytes(b"not a nifti")
    assert viewer.open(str(bad_nii), plugin="napari-lidnet") == []
    assert len(viewer.layers) == 0


def test_folder_with_two_series_gives_two_named_layers(tiny_ct, tmp_path):
    vol, _ = tiny_ct
    a = core_write_series(vol.hu, tmp_path / "a", spacing=vol.spacing, reference=vol, series_description="soft A")
    b = core_write_series(vol.hu[:2] + 100, tmp_path / "b", spacing=vol.spacing, reference=vol,
                          series_description="lung B")
    both = tmp_path / "both"
    both.mkdir()
    for f in a:
        shutil.copy(f, both / f"a_{f.name}")
    for f in b:
        shutil.copy(f, both / f"b_{f.name}")
    layers = read_ct(str(both))
    names = sorted(kw["name"] for _, kw, _ in layers)
    assert names == ["lung B", "soft A"]
    shapes = {kw["name"]: d.shape for d, kw, _ in layers}
    assert shapes["soft A"] == (4, 64, 64) and shapes["lung B"] == (2, 64, 64)


# ------------------------------------------------------------------------------------------- writers
def test_dicom_writer_round_trip_derived_series(tiny_ct, tmp_path):
    import pydicom

    vol, _ = tiny_ct
    kw = _image_meta(vol, model="redcnn", method="lidnet", checkpoint="/x/denoiser.pt")
    denoised = vol.hu + 3.0
    written = write_dicom_series(str(tmp_path / "out" / "denoised.dcm"), denoised, kw)
    folder = tmp_path / "out" / "denoised"
    assert len(written) == 4 and all(p.startswith(str(folder)) for p in written)

    ds = pydicom.dcmread(written[0])
    assert ds.SeriesDescription == "LIDnet RED-CNN denoised"
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.StudyInstanceUID == vol.metadata["StudyInstanceUID"]  # same study
    assert ds.SeriesInstanceUID != vol.metadata["SeriesInstanceUID"]  # new series
    assert float(ds.WindowWidth) == 1500 and float(ds.WindowCenter) == -600

    layers = read_ct(str(folder))
    assert len(layers) == 1
    data, kw2, _ = layers[0]
    assert np.allclose(kw2["scale"], vol.spacing, atol=1e-4)
    assert np.allclose(kw2["translate"], kw["translate"], atol=1e-3)
    assert np.max(np.abs(data - denoised)) <= 0.5 + 1e-3

    # never overwrite an existing series folder
    from src_training.errors import OutputExistsError

    mtime = (folder / "IM_00001.dcm").stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        write_dicom_series(str(folder), denoised - 50, kw)
    assert (folder / "IM_00001.dcm").stat().st_mtime_ns == mtime


def test_viewer_save_layer_as_dicom_and_nifti(make_napari_viewer, lidnet_manifest, tiny_ct, tmp_path):
    vol, _ = tiny_ct
    viewer = make_napari_viewer()
    kw = _image_meta(vol)
    layer = viewer.add_image(vol.hu, **kw)
    out = viewer.layers.save(str(tmp_path / "ct.dcm"), selected=False, plugin="napari-lidnet")
    assert len(out) == 4
    nii = write_nifti(str(tmp_path / "ct.nii.gz"), layer.data, layer.as_layer_data_tuple()[1])
    data, kw2, _ = read_ct(nii[0])[0]
    assert np.allclose(data, vol.hu)
    assert np.allclose(kw2["scale"], vol.spacing, atol=1e-5)


def test_boxes_csv_writer(tiny_ct, tmp_path):
    from napari.layers import Shapes

    from src_training.annotations import read_boxes_csv

    vol, boxes = tiny_ct
    n = sum(len(b) for b in boxes.values())
    data, kw = _boxes.shapes_layer_data(boxes, features={"score": np.linspace(0.9, 0.5, n), "label": [1] * n})
    layer = Shapes(data, **kw)
    assert all(np.asarray(s).shape == (4, 3) for s in layer.data)
    # the rectangles sit on their slices and read back to the same boxes
    back = _boxes.boxes_from_shapes_layer(layer)
    assert sorted(back) == sorted(boxes)
    for z in boxes:
        assert np.allclose(back[z], boxes[z], atol=1e-4)

    path = write_boxes_csv(str(tmp_path / "boxes"), layer.data, layer.as_layer_data_tuple()[1])[0]
    assert path.endswith("boxes.csv")
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0].keys()) == ["slice", "x0", "y0", "x1", "y1", "label", "score"]
    assert len(rows) == n
    assert abs(float(rows[0]["score"]) - 0.9) < 1e-5
    read = read_boxes_csv(path, vol.hu.shape)
    for z in boxes:
        assert np.allclose(read[z], boxes[z], atol=1e-4)


# ------------------------------------------------------------------------------------------- sample data
def test_sample_ndct_layers():
    from napari_lidnet._sample_data import sample_ndct
    from src_training.sample import load_sample_case

    case = load_sample_case("lung2")
    (img, ikw, itype), (shapes, skw, stype) = sample_ndct()
    assert (itype, stype) == ("image", "shapes")
    assert img.shape == case.ndct.hu.shape
    assert ikw["contrast_limits"] == (-1350.0, 150.0)
    assert skw["face_color"] == "transparent" and skw["shape_type"] == "rectangle"
    assert skw["scale"] == ikw["scale"] and skw["translate"] == ikw["translate"]
    assert len(shapes) == sum(len(b) for b in case.boxes.values()) == 11
    zs = sorted({int(s[0, 0]) for s in shapes})
    assert zs == sorted(case.boxes)
    # corner (x0, y0) of slice 5 at data coords (y0 - 0.5, x0 - 0.5): pixel borders
    b5 = case.boxes[5][0]
    s5 = [s for s in shapes if s[0, 0] == 5][0]
    assert np.allclose(s5.min(axis=0), [5, b5[1] - 0.5, b5[0] - 0.5])


def test_sample_ldct_uses_core_cache(tiny_ct, tmp_path, monkeypatch):
    """The LDCT sample calls the core's cached simulation (N0 1000, seed 0) in the cache folder; here on the
    tiny crop for speed (the real sample is the same code on the full case)."""
    import napari_lidnet._sample_data as sd
    from src_training.sample import SampleCase
    from src_training.simulation import simulate_ldct

    vol, boxes = tiny_ct
    monkeypatch.setattr(sd, "load_sample_case",
                        lambda name: SampleCase(name, vol, np.zeros(vol.hu.shape, np.uint8), boxes))
    monkeypatch.setenv("LIDNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LIDNET_SYNC", "1")  # simulate in this thread even if a viewer is current
    [(ldct, kw, kind)] = sd.sample_ldct()
    assert kind == "image" and ldct.shape == vol.hu.shape
    assert kw["metadata"]["n0"] == 1000.0 and kw["metadata"]["seed"] == 0
    assert list((tmp_path / "cache").glob("*.npz")), "the core cache was not used"
    assert np.array_equal(ldct, simulate_ldct(vol.hu, vol.spacing[1], 1000.0, seed=0))
    assert kw["name"].endswith("LDCT N0=1000")


# ------------------------------------------------------------------------------------------- helpers
def test_window_choice_from_metadata():
    assert _layers.default_window_name({"BodyPartExamined": "CHEST"}) == "lung"
    assert _layers.default_window_name({"dicom": {"SeriesDescription": "Thorax 1mm"}}) == "lung"
    assert _layers.default_window_name({"SeriesDescription": "Abdomen PV"}) == "soft_tissue"
    assert _layers.default_window_name({}) == "soft_tissue"


def test_notify_error_only_user_message_for_lidnet_errors(notifications, caplog):
    from src_training.errors import CheckpointError

    msg = _messages.notify_error(CheckpointError("file x.pt is corrupt"), "Denoise")
    assert msg == "Denoise: file x.pt is corrupt"
    msg2 = _messages.notify_error(RuntimeError("boom"), "Denoise")
    assert "RuntimeError" in msg2 and "boom" in msg2
    assert any("boom" in r.getMessage() for r in caplog.records)
    assert [str(n.message) for n in notifications.errors()][-2:] == [msg, msg2]
