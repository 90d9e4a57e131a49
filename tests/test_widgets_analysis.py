"""Compare and ROI-radiomics widgets on small synthetic layers: the numbers they show equal the core's
(src_training.evaluation) computed directly. Run under Xvfb (see scripts/test.sh)."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from src_training.evaluation import detection_ap, glcm_features, image_metrics  # noqa: E402
from src_training.windowing import DEFAULT_HU_RANGE, hu_to_unit  # noqa: E402

from napari_lidnet._boxes import shapes_layer_data  # noqa: E402

SCALE = (2.5, 0.7, 0.7)  # (z, y, x) mm: the widgets must work in data coordinates, not world
BOXES = {1: np.array([[20, 22, 36, 38]], np.float32), 2: np.array([[8, 8, 20, 16], [40, 30, 56, 50]], np.float32)}


def _volumes(seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = 4, 64, 64
    yy, xx = np.mgrid[:y, :x]
    ndct = np.full((z, y, x), -800.0, np.float32)
    ndct[:, 10:54, 6:58] = 40.0  # "body"
    ndct += 30 * np.sin(xx / 5.0)[None] * np.cos(yy / 7.0)[None]
    lesion = (yy - 30) ** 2 + (xx - 28) ** 2 < 36
    ndct[1][lesion] = 120.0
    ldct = ndct + rng.normal(0, 120, ndct.shape).astype(np.float32)
    base = ndct + rng.normal(0, 40, ndct.shape).astype(np.float32)
    lid = ndct + rng.normal(0, 25, ndct.shape).astype(np.float32)
    return ndct, ldct, base, lid


@pytest.fixture
def viewer_with_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    ndct, ldct, base, lid = _volumes()
    viewer.add_image(ldct, name="LDCT", scale=SCALE)
    viewer.add_image(base, name="REDCNN baseline", scale=SCALE)
    viewer.add_image(lid, name="REDCNN LIDnet", scale=SCALE)
    viewer.add_image(ndct, name="NDCT", scale=SCALE)
    data, kw = shapes_layer_data(BOXES, name="lesion boxes", scale=SCALE)
    viewer.add_shapes(data, **kw)
    viewer.dims.set_current_step(0, 1)  # slice 1 (world z = 2.5 mm)
    return viewer, {"NDCT": ndct, "LDCT": ldct, "REDCNN baseline": base, "REDCNN LIDnet": lid}


def test_compare_table_equals_image_metrics(viewer_with_layers, qtbot, monkeypatch):
    from napari_lidnet._widgets.compare import CompareWidget

    monkeypatch.delenv("LIDNET_SYNC", raising=False)

    viewer, vols = viewer_with_layers
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    ch = w.chosen()  # roles guessed from the layer names
    assert [ch[k].name for k in ("ldct", "baseline", "lidnet", "ndct")] == [
        "LDCT", "REDCNN baseline", "REDCNN LIDnet", "NDCT"]
    assert ch["boxes"].name == "lesion boxes"

    results = w.compute_metrics()
    ref = hu_to_unit(vols["NDCT"][1], DEFAULT_HU_RANGE)
    for name in ("LDCT", "REDCNN baseline", "REDCNN LIDnet"):
        expected = image_metrics(hu_to_unit(vols[name][1], DEFAULT_HU_RANGE), ref, BOXES[1])
        for key in ("psnr", "ssim", "rmse", "psnr_roi", "ssim_roi", "rmse_roi", "rmse_hu"):
            assert results[name][key] == pytest.approx(expected[key], rel=1e-12)
            assert w.table_value(key, name) == pytest.approx(expected[key], rel=1e-12)
        assert results[name]["n_boxes"] == 1
    # the table text shows the same numbers, rounded; the header states the scale
    assert w.table.columnCount() == 3 and "[0, 1]" in w.header.text() and "-1024" in w.header.text()
    psnr_row = [w.table.verticalHeaderItem(i).text() for i in range(w.table.rowCount())].index("PSNR slice (dB)")
    assert w.table.item(psnr_row, 2).text() == f"{results['REDCNN LIDnet']['psnr']:.2f}"
    # less noise -> better numbers (sanity of the synthetic data)
    assert results["REDCNN LIDnet"]["psnr"] > results["REDCNN baseline"]["psnr"] > results["LDCT"]["psnr"]

    # all slices: means over slices; ROI values over the slices with boxes
    w.all_slices_check.setChecked(True)
    res_all = w.compute_metrics()
    per = [image_metrics(hu_to_unit(vols["LDCT"][z], DEFAULT_HU_RANGE), hu_to_unit(vols["NDCT"][z], DEFAULT_HU_RANGE),
                         BOXES.get(z, np.zeros((0, 4)))) for z in range(4)]
    assert res_all["LDCT"]["ssim"] == pytest.approx(np.mean([p["ssim"] for p in per]), rel=1e-12)
    assert res_all["LDCT"]["psnr_roi"] == pytest.approx(np.mean([per[1]["psnr_roi"], per[2]["psnr_roi"]]), rel=1e-12)
    assert res_all["LDCT"]["n_boxes"] == 3

    # the Compute button runs the same computation in a thread worker (TaskRunner) and fills the table
    w.results = {}
    w.compute_btn.native.click()  # the Qt button of the magicgui PushButton -> _on_compute_clicked
    qtbot.waitUntil(lambda: bool(w.results) and not w.runner.running, timeout=60000)
    assert w.results["LDCT"]["ssim"] == pytest.approx(res_all["LDCT"]["ssim"], rel=1e-12)
    assert w.runner.last_error is None and "mean over all 4 slices" in w.scope_label.text()


def test_compare_grid_difference_maps_and_detections(viewer_with_layers, qtbot):
    from napari_lidnet._widgets.compare import CompareWidget

    viewer, vols = viewer_with_layers
    # a detections layer made from the LIDnet output (scores as a feature)
    det = {1: np.array([[21, 22, 36, 37], [50, 50, 60, 60]], np.float32)}
    data, kw = shapes_layer_data(det, name="REDCNN LIDnet detections", scale=SCALE,
                                 features={"score": np.array([0.9, 0.2])},
                                 metadata={"derived_from": "REDCNN LIDnet"})
    viewer.add_shapes(data, **kw)
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    assert w.boxes_combo.currentText() == "lesion boxes"  # detections are not offered as ground truth
    w.side_btn.setChecked(True)
    grid = viewer.canvas.grid
    assert grid.enabled and tuple(grid.shape) == (2, 4)
    diff = viewer.layers["REDCNN LIDnet − NDCT"]
    np.testing.assert_allclose(diff.data, vols["REDCNN LIDnet"] - vols["NDCT"])
    assert tuple(diff.scale) == SCALE and tuple(diff.contrast_limits) == (-200.0, 200.0)
    assert not viewer.layers["lesion boxes"].visible
    w.side_btn.setChecked(False)
    assert not grid.enabled and viewer.layers["lesion boxes"].visible and not diff.visible

    res = w.compute_metrics()
    assert res["REDCNN LIDnet"]["n_detections"] == 2
    ap = detection_ap([{"boxes": det[1], "scores": np.array([0.9, 0.2])}], [{"boxes": BOXES[1]}])
    assert res["REDCNN LIDnet"]["ap50"] == pytest.approx(ap["ap50"])
    assert "n_detections" not in res["LDCT"]


def test_radiomics_click_on_box_equals_glcm_features(viewer_with_layers, qtbot, tmp_path, monkeypatch):
    import threading

    import napari_lidnet._widgets.radiomics_features as radiomics
    from napari_lidnet._widgets.radiomics import RadiomicsWidget

    monkeypatch.delenv("LIDNET_SYNC", raising=False)
    threads = set()
    real_glcm = radiomics.glcm_features

    def glcm(*args, **kwargs):  # pyradiomics, recording the thread it runs in
        threads.add(threading.get_ident())
        return real_glcm(*args, **kwargs)

    monkeypatch.setattr(radiomics, "glcm_features", glcm)
    viewer, vols = viewer_with_layers
    w = RadiomicsWidget(viewer)
    qtbot.addWidget(w)
    assert w.boxes_combo.currentText() == "lesion boxes" and w.ref_combo.currentText() == "NDCT"
    w.class_checks["firstorder"].setChecked(True)
    # world coordinate inside box [20, 22, 36, 38] of slice 1: pixel (y=30, x=28)
    worker = w.measure_at((1 * SCALE[0], 30 * SCALE[1], 28 * SCALE[2]))
    assert worker is not None  # a thread worker: pyradiomics does not run in the GUI thread
    qtbot.waitUntil(lambda: not w.runner.running, timeout=60000)
    assert threads and threading.get_ident() not in threads
    rows = w.rows
    assert [r["layer"] for r in rows] == ["LDCT", "REDCNN baseline", "REDCNN LIDnet", "NDCT"]
    ref = glcm_features(vols["NDCT"][1], BOXES[1][0], spacing_mm=SCALE[1:], feature_classes=("glcm", "firstorder"))
    for r in rows:
        assert r["slice"] == 1 and r["box"] == pytest.approx(BOXES[1][0].tolist())
        exp = glcm_features(vols[r["layer"]][1], BOXES[1][0], spacing_mm=SCALE[1:],
                            feature_classes=("glcm", "firstorder"))
        assert set(exp) == set(r["features"])
        for k, v in exp.items():
            assert r["features"][k] == pytest.approx(v, rel=1e-12, nan_ok=True)
            if r["layer"] != "NDCT":
                assert r["diff"][k] == pytest.approx(abs(v - ref[k]), rel=1e-9, abs=1e-12, nan_ok=True)
    assert "original_firstorder_Mean" in rows[0]["features"]
    # features as rows, one column per layer (the full layer name is the column's tooltip)
    assert w.table.columnCount() == 4 and w.table.rowCount() == len(rows[0]["features"])
    assert w.table.verticalHeaderItem(0).text() == "Correlation"
    assert [w.table.horizontalHeaderItem(j).toolTip() for j in range(4)][1] == "REDCNN baseline"
    # the ROI is drawn
    roi = viewer.layers["radiomics ROI"]
    assert len(roi.data) == 1

    # CSV export (atomic) and clipboard text hold the same numbers
    path = w.export_csv(tmp_path / "rad.csv")
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert float(table[2]["homogeneity"]) == rows[2]["features"]["homogeneity"]
    assert float(table[0]["absdiff_energy"]) == pytest.approx(rows[0]["diff"]["energy"])
    assert w.copy_to_clipboard().splitlines()[0].startswith("layer\treference\tslice")


def test_radiomics_mouse_click_and_point_roi(viewer_with_layers, qtbot):
    """A real click (press + release) outside any box makes a square ROI of the chosen size; a drag does not
    measure."""
    from napari_lidnet._widgets.radiomics import RadiomicsWidget

    viewer, vols = viewer_with_layers
    w = RadiomicsWidget(viewer)
    qtbot.addWidget(w)
    w.size_spin.setValue(10)

    class Ev:
        def __init__(self, pos, type_):
            self.position, self.type, self.button, self.modifiers = pos, type_, 1, ()

    pos = (1 * SCALE[0], 50 * SCALE[1], 12 * SCALE[2])  # pixel (y=50, x=12): no box there
    press = Ev(pos, "mouse_press")
    gen = w._on_mouse(viewer, press)
    next(gen)
    press.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    qtbot.waitUntil(lambda: bool(w.rows) and not w.runner.running, timeout=60000)
    assert w.rows[0]["box"] == pytest.approx([7, 45, 17, 55])
    exp = glcm_features(vols["LDCT"][1], [7, 45, 17, 55], spacing_mm=SCALE[1:])
    assert w.rows[0]["features"]["correlation"] == pytest.approx(exp["correlation"], rel=1e-12)

    # a drag (pan) does not measure
    w.rows = []
    press = Ev(pos, "mouse_press")
    gen = w._on_mouse(viewer, press)
    next(gen)
    press.type, press.position = "mouse_move", (pos[0], pos[1] + 5, pos[2])
    next(gen)
    press.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(gen)
    assert not w.runner.running and w.rows == []  # nothing was started
    assert not math.isnan(exp["energy"])
