"""Layer geometry (issue #12, contract 10): image layers carry the series orientation (``rotate`` beside
``scale`` and ``translate``), so napari's data -> world map gives each voxel's DICOM patient position, and
every layer derived from a CT layer (denoised, boxes, ROI, compare grid outlines, difference maps) has the
identical transform. DICOM series are written here with pydicom (no downloads). Run under Xvfb::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m pytest tests/test_layer_geometry.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

import pydicom  # noqa: E402
from pydicom.dataset import FileDataset, FileMetaDataset  # noqa: E402
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # noqa: E402

from src_training.io import CTVolume, load_ct  # noqa: E402

from napari_lidnet._boxes import boxes_on_slice, shapes_layer_data  # noqa: E402
from napari_lidnet._layers import (  # noqa: E402
    current_slice_index,
    derived_image_kwargs,
    image_layer_kwargs,
    layer_geometry,
    patient_position,
)

ROWS, COLS = 12, 16
PIXEL_SPACING = (0.8, 0.7)  # DICOM PixelSpacing: (between rows, between columns) mm
STEP = 2.5  # mm between slice centres along the normal
N_SLICES = 4
#: slice k, row i, column j of a few voxels checked (first, interior, last corner)
VOXELS = [(0, 0, 0), (1, 5, 9), (N_SLICES - 1, ROWS - 1, COLS - 1)]


def _rot(axis: int, deg: float) -> np.ndarray:
    """Rotation matrix (x, y, z) about patient axis 0 = x, 1 = y, 2 = z."""
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    m = np.eye(3)
    m[i, i] = m[j, j] = c
    m[i, j], m[j, i] = -s, s
    return m


#: ImageOrientationPatient (row cosines, column cosines) of the series tested, LPS.
ORIENTATIONS = {
    "oblique 20° about z": (_rot(2, 20) @ [1, 0, 0], _rot(2, 20) @ [0, 1, 0]),
    "double oblique": (_rot(0, 15) @ _rot(2, 20) @ [1, 0, 0], _rot(0, 15) @ _rot(2, 20) @ [0, 1, 0]),
    "feet first": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}


def _stored(f: int) -> np.ndarray:
    """Stored values of file ``f``: unique over the whole series (file and pixel can be told from the HU)."""
    return (300 * f + np.arange(ROWS * COLS).reshape(ROWS, COLS)).astype(np.int16)


def _write_series(folder: Path, row, col, ipp0=(-40.0, 25.0, 110.0)) -> list[dict]:
    """CT slices written with pydicom, file names in reverse position order. Returns per file its IPP, IOP
    and index (the truth the test compares with)."""
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(row, col)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    truth = []
    for f in range(N_SLICES):
        ipp = np.asarray(ipp0, float) + f * STEP * normal
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{N_SLICES - f:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.PatientName, ds.PatientID, ds.SeriesDescription = "CT", "Geometry^Test", "G1", "oblique"
        ds.InstanceNumber = N_SLICES - f
        ds.ImageOrientationPatient = [round(float(v), 8) for v in (*row, *col)]
        ds.ImagePositionPatient = [round(float(v), 6) for v in ipp]
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.SliceThickness = STEP
        ds.Rows, ds.Columns = ROWS, COLS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = _stored(f).tobytes()
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        truth.append({"ipp": np.asarray(ds.ImagePositionPatient, float),
                      "row": np.asarray(ds.ImageOrientationPatient[:3], float),
                      "col": np.asarray(ds.ImageOrientationPatient[3:], float)})
    return truth


def _dicom_position_zyx(truth: list[dict], f: int, i: int, j: int) -> np.ndarray:
    """PS3.3 C.7.6.2.1.1: position of row i, column j of file f = IPP + j * column spacing * row cosines +
    i * row spacing * column cosines (x, y, z), returned in napari's (z, y, x) order."""
    t = truth[f]
    p = t["ipp"] + j * PIXEL_SPACING[1] * t["row"] + i * PIXEL_SPACING[0] * t["col"]
    return p[::-1]


def _file_and_pixel(hu: np.ndarray, k: int, i: int, j: int) -> tuple[int, int, int]:
    """Which file and pixel voxel (k, i, j) of the loaded volume came from (from its unique value)."""
    v = int(round(float(hu[k, i, j]) + 1024))
    f, rest = divmod(v, 300)
    return f, rest // COLS, rest % COLS


def _world_matrix(layer) -> np.ndarray:
    """napari's whole data -> world map of a layer as a (ndim + 1) square matrix (from ``data_to_world``)."""
    n = layer.ndim
    o = np.asarray(layer.data_to_world(np.zeros(n)), float)
    m = np.eye(n + 1)
    for b in range(n):
        e = np.zeros(n)
        e[b] = 1.0
        m[:n, b] = np.asarray(layer.data_to_world(e), float) - o
    m[:n, n] = o
    return m


def _same_transform(a, b) -> None:
    np.testing.assert_allclose(_world_matrix(a), _world_matrix(b), atol=1e-9)
    np.testing.assert_allclose(np.asarray(a.rotate), np.asarray(b.rotate), atol=1e-12)
    np.testing.assert_allclose(a.affine.affine_matrix, b.affine.affine_matrix, atol=1e-12)


def _oblique_volume(nz=4, ny=24, nx=20) -> CTVolume:
    """In-memory double-oblique CT (rotated 20° about z, tilted 15° about x), structured HU."""
    rng = np.random.default_rng(0)
    hu = (-700 + 40 * rng.standard_normal((nz, ny, nx))).astype(np.float32)
    hu[:, 6:14, 5:12] = 30.0
    d = _rot(0, 15) @ _rot(2, 20)
    return CTVolume(hu=hu, spacing=(2.5, 0.8, 0.7), origin=(-40.0, 25.0, 110.0), direction=tuple(d.ravel()),
                    metadata={"SeriesDescription": "oblique chest"}, source="")


# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_series_voxels_land_on_their_dicom_patient_position(tmp_path, make_napari_viewer, orientation):
    import warnings

    row, col = ORIENTATIONS[orientation]
    truth = _write_series(tmp_path / "series", row, col)
    vol = load_ct(tmp_path / "series")
    assert min(vol.spacing) > 0
    viewer = make_napari_viewer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layer = viewer.add_image(vol.hu, **image_layer_kwargs(vol))  # 2D view: no "singular matrix"
        # napari draws every slice: the slider at slice k's world position shows slice k
        for k in range(N_SLICES):
            viewer.dims.set_point(0, float(layer.data_to_world((k, ROWS // 2, COLS // 2))[0]))
            assert int(round(float(layer._data_slice.point[0]))) == k
            assert current_slice_index(viewer, layer) == k
    assert not [w for w in caught if "Non-orthogonal slicing" in str(w.message)]
    frame = np.asarray(layer.metadata["world_from_patient"], float)
    np.testing.assert_allclose(frame @ frame.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(frame) == pytest.approx(1.0)  # a rotation: distances and handedness kept
    for k, i, j in VOXELS:
        f, fi, fj = _file_and_pixel(vol.hu, k, i, j)
        expected = _dicom_position_zyx(truth, f, fi, fj)
        np.testing.assert_allclose(patient_position(layer, (k, i, j)), expected, atol=1e-4)
        np.testing.assert_allclose(layer.data_to_world((k, i, j)), frame @ expected, atol=1e-4)
        if orientation in ("oblique 20° about z", "feet first"):
            # slices in the patient's axial plane: the world is the patient frame itself (LPS, z y x)
            np.testing.assert_allclose(layer.data_to_world((k, i, j)), expected, atol=1e-4)
    if orientation in ("oblique 20° about z", "feet first"):
        np.testing.assert_allclose(frame, np.eye(3))
    else:
        assert not np.allclose(frame, np.eye(3))
    if orientation in ("coronal", "sagittal"):  # shown as acquired: head up, no in-plane turn
        np.testing.assert_allclose(np.asarray(layer.rotate)[1:, 1:], np.eye(2), atol=1e-9)


def test_rotate_is_the_direction_in_zyx_order(tmp_path):
    row, col = ORIENTATIONS["oblique 20° about z"]
    _write_series(tmp_path / "s", row, col)
    vol = load_ct(tmp_path / "s")
    kw = image_layer_kwargs(vol)
    d = np.asarray(vol.direction, float).reshape(3, 3)  # rows x, y, z; columns column, row, slice axes
    np.testing.assert_allclose(np.asarray(kw["rotate"]), d[::-1, ::-1], atol=1e-12)
    c, s = np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))
    # rows z, y, x; columns slice, row index, column index: a step along a row (column index) goes +c in x
    # and +s in y, a step down a column (row index) goes -s in x and +c in y
    np.testing.assert_allclose(np.asarray(kw["rotate"]), [[1, 0, 0], [0, c, s], [0, -s, c]], atol=1e-6)
    assert kw["scale"] == pytest.approx((STEP, PIXEL_SPACING[0], PIXEL_SPACING[1]))
    np.testing.assert_allclose(kw["translate"], np.asarray(vol.origin)[::-1], atol=1e-9)


def test_identity_direction_gives_todays_layer(make_napari_viewer):
    vol = CTVolume(hu=np.zeros((3, 8, 10), np.float32), spacing=(2.5, 0.7, 0.8), origin=(-120.5, 33.0, 410.25))
    kw = image_layer_kwargs(vol)
    assert kw["rotate"] == ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    assert kw["scale"] == (2.5, 0.7, 0.8)
    assert kw["translate"] == (410.25, 33.0, -120.5)  # the origin (x, y, z) in (z, y, x) order, as before
    layer = make_napari_viewer().add_image(vol.hu, **kw)
    np.testing.assert_array_equal(layer.rotate, np.eye(3))
    np.testing.assert_allclose(_world_matrix(layer)[:3, :3], np.diag([2.5, 0.7, 0.8]))
    np.testing.assert_allclose(layer.data_to_world((2, 3, 4)), (410.25 + 5.0, 33.0 + 2.1, -120.5 + 3.2))


def test_mirrored_direction_determinant_minus_one(tmp_path, make_napari_viewer):
    """A NIfTI whose rows run towards anterior (direction det -1): napari takes the reflection as rotate and
    the voxels land where SimpleITK says they are; the slice is drawn mirrored (anterior up)."""
    import SimpleITK as sitk

    arr = np.arange(3 * 8 * 10, dtype=np.int16).reshape(3, 8, 10) - 1000
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.7, 2.5))
    img.SetOrigin((-20.0, 60.0, 5.0))
    img.SetDirection((1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path / "mirrored.nii.gz"
    sitk.WriteImage(img, str(path))
    vol = load_ct(path)
    kw = image_layer_kwargs(vol)
    layer = make_napari_viewer().add_image(vol.hu, **kw)
    assert np.linalg.det(np.asarray(layer.rotate)) == pytest.approx(float(np.linalg.det(
        np.asarray(vol.direction, float).reshape(3, 3))))
    for k, i, j in [(0, 0, 0), (1, 4, 7), (2, 7, 9)]:
        v = int(round(float(vol.hu[k, i, j])))  # find the voxel in the file by its value
        fk, rest = divmod(v + 1000, 80)
        fi, fj = divmod(rest, 10)
        expected = np.asarray(img.TransformIndexToPhysicalPoint((fj, fi, fk)), float)[::-1]
        np.testing.assert_allclose(layer.data_to_world((k, i, j)), expected, atol=1e-4)
    if np.linalg.det(np.asarray(vol.direction, float).reshape(3, 3)) < 0:
        # row index runs towards anterior (-y): in the world, row 0 lies below the last row
        assert layer.data_to_world((0, 0, 0))[1] > layer.data_to_world((0, 7, 0))[1]


def test_denoised_layer_has_the_source_transform(make_napari_viewer, tiny_checkpoints, sync_mode):
    from napari_lidnet._widgets.denoise import DenoiseWidget

    vol = _oblique_volume()
    viewer = make_napari_viewer()
    src = viewer.add_image(vol.hu, **image_layer_kwargs(vol, name="NDCT"))
    viewer.dims.set_point(0, float(src.data_to_world((2, 0, 0))[0]))
    shown = int(round(float(src._data_slice.point[0])))  # the slice napari draws
    assert shown == 2 and current_slice_index(viewer, src) == 2
    w = DenoiseWidget(viewer)
    w.image.value = src
    w.checkpoint.set_path(tiny_checkpoints["denoiser"])
    w.device.value = "cpu"
    w.scope.value = "current slice"
    w.run()
    part = viewer.layers[-1]
    assert part.data.shape == (1, 24, 20) and part.metadata["derived_from"] == "NDCT"
    for i, j in [(0, 0), (7, 11), (23, 19)]:  # the one slice lies exactly on the source's slice
        np.testing.assert_allclose(part.data_to_world((0, i, j)), src.data_to_world((shown, i, j)), atol=1e-9)
    np.testing.assert_allclose(part.rotate, src.rotate, atol=1e-12)
    assert int(round(float(part._data_slice.point[0]))) == 0  # drawn together with the source's slice
    w.scope.value = "whole volume"
    w.run()
    _same_transform(viewer.layers[-1], src)


def test_boxes_layer_has_the_image_transform(make_napari_viewer):
    vol = _oblique_volume()
    viewer = make_napari_viewer()
    img = viewer.add_image(vol.hu, **image_layer_kwargs(vol, name="NDCT"))
    boxes = {1: np.array([[5, 6, 12, 14]], np.float32), 3: np.array([[2, 3, 4, 5], [10, 11, 18, 20]], np.float32)}
    data, kw = shapes_layer_data(boxes, name="detections", like=img, features={"score": [0.9, 0.5, 0.7]})
    shapes = viewer.add_shapes(data, **kw)
    _same_transform(shapes, img)
    # a box corner drawn at the pixel border lands on the image's pixel border in the world
    np.testing.assert_allclose(shapes.data_to_world(shapes.data[0][0]), img.data_to_world((1, 5.5, 4.5)),
                               atol=1e-9)
    got, scores = boxes_on_slice(shapes, img, 3)
    np.testing.assert_allclose(got, boxes[3], atol=1e-4)
    np.testing.assert_allclose(scores, [0.5, 0.7])
    # layer-data kwargs (sample data, reader) work as ``like`` too
    _, kw2 = shapes_layer_data(boxes, like=image_layer_kwargs(vol))
    np.testing.assert_allclose(kw2["rotate"], kw["rotate"])
    assert kw2["translate"] == pytest.approx(kw["translate"])


def test_layer_geometry_offsets_and_fewer_axes():
    vol = _oblique_volume()
    kw = image_layer_kwargs(vol)
    rot = np.asarray(kw["rotate"])
    g = layer_geometry(kw, z_offset=3)
    np.testing.assert_allclose(g["translate"], np.asarray(kw["translate"]) + rot[:, 0] * 2.5 * 3, atol=1e-12)
    g2 = layer_geometry(kw, ndim=2)
    assert g2["scale"] == (0.8, 0.7)
    np.testing.assert_allclose(g2["rotate"], rot[1:, 1:])
    assert "shear" not in g and "affine" not in g  # nothing beyond scale / rotate / translate to copy


def test_compare_grid_and_restore_with_rotated_layers(make_napari_viewer, qtbot, monkeypatch):
    from napari.layers import Vectors

    from napari_lidnet._widgets.compare import CompareWidget
    from napari_lidnet._widgets.radiomics import RadiomicsWidget

    monkeypatch.setenv("LIDNET_SYNC", "1")
    vol = _oblique_volume()
    viewer = make_napari_viewer()
    ndct = viewer.add_image(vol.hu, **image_layer_kwargs(vol, name="NDCT"))
    noisy = vol.hu + np.random.default_rng(1).normal(0, 60, vol.hu.shape).astype(np.float32)
    ldct = viewer.add_image(noisy, **derived_image_kwargs(ndct, name="LDCT"))
    data, kw = shapes_layer_data({2: np.array([[5, 6, 12, 14]], np.float32)}, name="lesion boxes", like=ndct)
    viewer.add_shapes(data, **kw)
    viewer.dims.set_current_step(0, 2)
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    rad = RadiomicsWidget(viewer)
    qtbot.addWidget(rad)
    cam = viewer.scene.camera
    cam.zoom, cam.center = 2.5, (0.0, 40.0, 100.0)
    before = (cam.zoom, tuple(cam.center), tuple(cam.angles))

    w.side_btn.setChecked(True)
    assert viewer.canvas.grid.enabled
    outlines = {ly.metadata["cell_of"]: ly for ly in viewer.layers if isinstance(ly, Vectors)}
    assert {"NDCT", "LDCT", "LDCT − NDCT"} <= set(outlines)
    for name, vec in outlines.items():
        _same_transform(vec, viewer.layers[name])
    _same_transform(viewer.layers["LDCT − NDCT"], ldct)
    first = np.asarray(outlines["NDCT"].data)[0]
    np.testing.assert_allclose(first[0], [2, 5.5, 4.5])  # box [5, 6, 12, 14] of slice 2, pixel borders
    # a radiomics click on a pixel centre: the ROI is drawn in the image's pixels, with its transform
    rad.measure_at(ndct.data_to_world((2, 10, 8)))
    roi = viewer.layers["radiomics ROI"]
    _same_transform(roi, ndct)
    w.side_btn.setChecked(False)
    assert not viewer.canvas.grid.enabled
    assert not any(isinstance(ly, Vectors) for ly in viewer.layers)
    assert cam.zoom == pytest.approx(before[0]) and tuple(cam.center) == pytest.approx(before[1])
    assert tuple(cam.angles) == pytest.approx(before[2])
