"""Compare and ROI-radiomics widgets in the viewer (issue #11 items 5 and 10): only layers covering the same
pixels are compared, titled side-by-side cells with the lesion boxes in every cell, leaving side by side
restores the view, tables that fit a narrow dock, the ROI never takes a grid cell. Run under Xvfb."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari.layers import Shapes, Vectors  # noqa: E402

from src_training.errors import LidnetError  # noqa: E402

from napari_lidnet._boxes import shapes_layer_data  # noqa: E402
from napari_lidnet._widgets.compare_metrics import OUTLINE_COLORS, box_outline_vectors, guess_role  # noqa: E402

SCALE = (2.5, 0.7, 0.7)
BOXES = {1: np.array([[20, 22, 36, 38]], np.float32), 2: np.array([[8, 8, 20, 16], [40, 30, 56, 50]], np.float32)}
DOCK_WIDTH = 420


def _volumes(z=3, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    ndct = np.full((z, 48, 48), -800.0, np.float32)
    ndct[:, 6:42, 4:44] = 40.0 + 30 * np.sin(xx[6:42, 4:44] / 5.0)
    ldct = ndct + rng.normal(0, 120, ndct.shape).astype(np.float32)
    base = ndct + rng.normal(0, 40, ndct.shape).astype(np.float32)
    lid = ndct + rng.normal(0, 25, ndct.shape).astype(np.float32)
    return ndct, ldct, base, lid


@pytest.fixture
def scan(make_napari_viewer):
    """A 3-slice scan (LDCT, two whole-volume outputs, NDCT, boxes) plus one-slice partial outputs."""
    viewer = make_napari_viewer()
    ndct, ldct, base, lid = _volumes()
    # a one-slice output (as Denoise "current slice" makes it), listed before the whole volumes
    viewer.add_image(lid[1:2], name="CPCE (LIDnet) denoised slice 1", scale=SCALE, translate=(SCALE[0], 0, 0))
    viewer.add_image(ldct[2:3], name="LDCT slice 2", scale=SCALE, translate=(2 * SCALE[0], 0, 0))
    viewer.add_image(ldct, name="LDCT", scale=SCALE)
    viewer.add_image(base, name="CPCE (baseline) denoised", scale=SCALE)
    viewer.add_image(lid, name="CPCE (LIDnet) denoised", scale=SCALE)
    viewer.add_image(ndct, name="NDCT", scale=SCALE)
    viewer.add_image(ndct, name="NDCT resampled", scale=(2.5, 0.5, 0.5))  # same shape, other pixel size
    data, kw = shapes_layer_data({k: v[:, :4] for k, v in BOXES.items()}, name="lesion boxes", scale=SCALE)
    viewer.add_shapes(data, **kw)
    viewer.dims.set_current_step(0, 1)
    return viewer


def test_guess_prefers_whole_volumes():
    cands = [("CPCE (LIDnet) denoised slice 1", 1), ("CPCE (LIDnet) denoised", 3), ("LDCT slice 2", 1), ("LDCT", 3)]
    assert guess_role(cands, "lidnet") == "CPCE (LIDnet) denoised"
    assert guess_role(cands, "ldct") == "LDCT"
    assert guess_role(cands, "ndct") is None
    assert guess_role([("LDCT − NDCT", 3)], "ldct") is None  # difference maps are never guessed


def test_box_outline_vectors_at_pixel_borders():
    v = box_outline_vectors(np.array([2]), np.array([[10, 20, 14, 25]]), ndim=3)
    assert v.shape == (4, 2, 3)
    ends = v[:, 0] + v[:, 1]
    np.testing.assert_allclose(v[:, 0, 0], 2)
    np.testing.assert_allclose(v[:, 1, 0], 0)  # no component along z: drawn on slice 2 only
    corners = {tuple(p) for p in np.concatenate([v[:, 0, 1:], ends[:, 1:]])}
    assert corners == {(19.5, 9.5), (19.5, 13.5), (24.5, 13.5), (24.5, 9.5)}  # (y, x) border coordinates


def test_compare_offers_only_matching_layers(scan, qtbot, monkeypatch):
    from napari_lidnet._widgets.compare import CompareWidget

    monkeypatch.setenv("LIDNET_SYNC", "1")
    viewer = scan
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    ch = w.chosen()
    assert [ch[k].name for k in ("ldct", "baseline", "lidnet", "ndct")] == [
        "LDCT", "CPCE (baseline) denoised", "CPCE (LIDnet) denoised", "NDCT"]
    for role in ("baseline", "lidnet", "ndct"):
        offered = w.offered(role)
        assert "CPCE (LIDnet) denoised slice 1" not in offered and "LDCT slice 2" not in offered
        assert "NDCT resampled" not in offered and "LDCT" not in offered
        assert "NDCT" in offered and "CPCE (LIDnet) denoised" in offered
    assert "LDCT slice 2" in w.offered("ldct")  # the LDCT itself may be any image
    assert w.match_note.isVisibleTo(w) and "1 slice of 48 × 48" in w.match_note.text()

    # choosing a one-slice LDCT: only the layers of that slice's grid are offered, the volumes are not
    w.combos["ldct"].setCurrentText("LDCT slice 2")
    assert w.offered("lidnet") == ["CPCE (LIDnet) denoised slice 1"] and w.chosen()["ndct"] is None
    w.combos["ldct"].setCurrentText("LDCT")
    assert w.chosen()["ndct"].name == "NDCT" and w.chosen()["lidnet"].name == "CPCE (LIDnet) denoised"

    res = w.compute_metrics()
    assert set(res) == {"LDCT", "CPCE (baseline) denoised", "CPCE (LIDnet) denoised"}

    # a mismatch that still happens (a layer's data replaced by one slice): a clear message, no exception
    viewer.layers["CPCE (LIDnet) denoised"].data = viewer.layers["CPCE (LIDnet) denoised slice 1"].data
    w.compute_btn.native.click()
    err = w.runner.last_error
    assert isinstance(err, LidnetError)
    assert "'CPCE (LIDnet) denoised' (1 slice of 48 × 48 pixels" in str(err) and "NDCT" in str(err)
    assert "Traceback" not in str(err) and "shape" not in str(err)
    w.side_btn.setChecked(True)  # the grid still opens; no difference map for the mismatched layer
    assert viewer.canvas.grid.enabled and "CPCE (LIDnet) denoised − NDCT" not in viewer.layers
    w.side_btn.setChecked(False)
    assert not viewer.canvas.grid.enabled


def _cell_of(viewer, name):
    return viewer.canvas.grid.position(viewer.layers.index(viewer.layers[name]), viewer.layers)


def _colors(vec):
    return [tuple(np.round(c, 3)) for c in np.asarray(vec.edge_color)]


def test_side_by_side_titles_boxes_and_restore(scan, qtbot, monkeypatch):
    from napari_lidnet._widgets.compare import CompareWidget
    from napari_lidnet._widgets.radiomics import RadiomicsWidget

    monkeypatch.setenv("LIDNET_SYNC", "1")
    viewer = scan
    det = {1: np.array([[21, 22, 36, 37], [30, 30, 40, 40]], np.float32)}
    data, kw = shapes_layer_data(det, name="CPCE (LIDnet) denoised detections", scale=SCALE,
                                 features={"score": np.array([0.9, 0.2])},
                                 metadata={"derived_from": "CPCE (LIDnet) denoised"})
    viewer.add_shapes(data, **kw)
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    rad = RadiomicsWidget(viewer)
    qtbot.addWidget(rad)
    # a view the user made: zoom, pan, own layer order, a hidden layer, a selection
    viewer.layers.move(viewer.layers.index(viewer.layers["NDCT"]), 0)
    viewer.layers["LDCT slice 2"].visible = False
    cam = viewer.scene.camera
    cam.zoom, cam.center = 3.25, (0.0, 11.0, 17.5)
    viewer.layers.selection.active = viewer.layers["LDCT"]
    before = {"order": [ly.name for ly in viewer.layers], "visible": {ly.name: ly.visible for ly in viewer.layers},
              "zoom": cam.zoom, "center": tuple(cam.center), "stride": viewer.canvas.grid.stride}

    w.side_btn.setChecked(True)
    grid = viewer.canvas.grid
    assert grid.enabled and grid.stride == 2 and tuple(grid.shape) == (2, 4)
    images = ["LDCT", "CPCE (baseline) denoised", "CPCE (LIDnet) denoised", "NDCT",
              "LDCT − NDCT", "CPCE (baseline) denoised − NDCT", "CPCE (LIDnet) denoised − NDCT"]
    cells = [_cell_of(viewer, n) for n in images]
    assert cells == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]
    outlines = {ly.metadata["cell_of"]: ly for ly in viewer.layers if isinstance(ly, Vectors)}
    assert sorted(outlines) == sorted(images)
    for name in images:
        # the title is the layer's name overlay; the outlines share the image's cell
        assert viewer.layers[name].name_overlay.visible
        assert _cell_of(viewer, outlines[name].name) == _cell_of(viewer, name)
        assert not outlines[name].name_overlay.visible
    # no shapes layer has a cell of its own (hidden layers take none): 7 cells, 7 images
    assert all(_cell_of(viewer, ly.name) == (-1, -1) for ly in viewer.layers if isinstance(ly, Shapes))
    assert len({c for c in (_cell_of(viewer, ly.name) for ly in viewer.layers) if c != (-1, -1)}) == 7
    # boxes in every cell: the 3 reference boxes (4 edges each) everywhere, the detections in LIDnet's cells
    green, orange = tuple(np.round(OUTLINE_COLORS["reference"], 3)), tuple(np.round(OUTLINE_COLORS["detections"], 3))
    for name, vec in outlines.items():
        cols = _colors(vec)
        assert cols.count(green) == 12
        assert cols.count(orange) == (8 if name.startswith("CPCE (LIDnet) denoised") else 0)
    first = np.asarray(outlines["LDCT"].data)[0]
    np.testing.assert_allclose(first[0], [1, 21.5, 19.5])  # box [20, 22, 36, 38] of slice 1, pixel borders
    assert tuple(outlines["LDCT"].scale) == SCALE

    # a radiomics click while the grid is on: the ROI gets no cell, it is outlined in every cell instead
    rad.measure_at((1 * SCALE[0], 30 * SCALE[1], 28 * SCALE[2]))
    roi = viewer.layers["radiomics ROI"]
    assert not roi.visible and _cell_of(viewer, roi.name) == (-1, -1)
    yellow = tuple(np.round(OUTLINE_COLORS["roi"], 3))
    assert all(_colors(vec).count(yellow) == 4 for vec in outlines.values())
    # editing the boxes redraws the outlines
    boxes = viewer.layers["lesion boxes"]
    boxes.data = list(boxes.data)[:1]
    assert _colors(outlines["NDCT"]).count(green) == 4

    w.side_btn.setChecked(False)
    assert not grid.enabled and grid.stride == before["stride"]
    names = [ly.name for ly in viewer.layers]
    assert [n for n in names if n in before["order"]] == before["order"]  # the previous order exactly
    assert {n: viewer.layers[n].visible for n in before["order"]} == before["visible"]
    assert not any(isinstance(ly, Vectors) for ly in viewer.layers)
    assert not any(ly.name_overlay.visible for ly in viewer.layers)
    assert cam.zoom == pytest.approx(before["zoom"]) and tuple(cam.center) == pytest.approx(before["center"])
    assert viewer.layers.selection.active.name == "LDCT"
    assert roi.visible  # the ROI made meanwhile is shown again; the difference maps stay hidden
    assert not viewer.layers["LDCT − NDCT"].visible
    # the difference maps (new images) lie above the top image, below the annotations
    assert names.index("LDCT − NDCT") < names.index("lesion boxes")


def test_compare_table_fits_narrow_dock(scan, qtbot, monkeypatch):
    from napari_lidnet._widgets.compare import CompareWidget

    monkeypatch.setenv("LIDNET_SYNC", "1")
    viewer = scan
    viewer.layers["CPCE (baseline) denoised"].name = "CPCE baseline (shipped) denoised"
    viewer.layers["CPCE (LIDnet) denoised"].name = "CPCE LIDnet (shipped) denoised"
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    assert w.minimumSizeHint().width() <= DOCK_WIDTH
    w.resize(DOCK_WIDTH, 1000)
    w.show()
    qtbot.waitExposed(w)
    w.compute_metrics()
    t = w.table
    assert [t.horizontalHeaderItem(j).text() for j in range(3)] == ["LDCT", "Baseline", "LIDnet"]
    assert t.horizontalHeaderItem(2).toolTip() == "CPCE LIDnet (shipped) denoised"
    assert "dB" in t.verticalHeaderItem(0).toolTip() or "dB" in t.verticalHeaderItem(0).text()
    qtbot.wait(50)
    fm = t.horizontalHeader().fontMetrics()
    header = t.horizontalHeader()
    for j in range(t.columnCount()):
        need = max(fm.horizontalAdvance(t.horizontalHeaderItem(j).text()),
                   *(t.fontMetrics().horizontalAdvance(t.item(i, j).text()) for i in range(t.rowCount())))
        assert header.sectionSize(j) >= need + 4, (j, header.sectionSize(j), need)
    vfm = t.verticalHeader().fontMetrics()
    assert t.verticalHeader().width() >= max(vfm.horizontalAdvance(t.verticalHeaderItem(i).text())
                                             for i in range(t.rowCount()))
    assert t.horizontalScrollBar().maximum() == 0  # no sideways scrolling


def test_radiomics_compact_table_and_layer_filter(scan, qtbot, monkeypatch):
    from napari_lidnet._widgets.radiomics import RadiomicsWidget

    monkeypatch.setenv("LIDNET_SYNC", "1")
    viewer = scan
    w = RadiomicsWidget(viewer)
    qtbot.addWidget(w)
    w.resize(DOCK_WIDTH, 900)
    w.show()
    qtbot.waitExposed(w)
    assert w.ref_combo.currentText() == "NDCT"
    w.measure_at((1 * SCALE[0], 30 * SCALE[1], 28 * SCALE[2]))
    names = [r["layer"] for r in w.rows]
    # only the whole-volume layers on the NDCT's pixel grid; the others are named as not measured
    assert names == ["LDCT", "CPCE (baseline) denoised", "CPCE (LIDnet) denoised", "NDCT"]
    assert "Not measured" in w.info.text() and "LDCT slice 2" in w.info.text() and "NDCT resampled" in w.info.text()
    t = w.table
    feats = list(w.rows[0]["features"])
    assert (t.rowCount(), t.columnCount()) == (len(feats), 4)  # features as rows, layers as columns
    assert [t.horizontalHeaderItem(j).toolTip() for j in range(4)][:3] == names[:3]
    assert t.horizontalHeaderItem(3).toolTip() == "NDCT (reference)" and t.horizontalHeaderItem(3).font().bold()
    # short titles ("denoised" left out), on two lines when the column is narrow
    assert t.horizontalHeaderItem(1).text().replace("\n", " ") == "CPCE (baseline)"
    assert w.table_value("correlation", "LDCT") == pytest.approx(w.rows[0]["features"]["correlation"])
    qtbot.wait(50)
    assert t.horizontalScrollBar().maximum() == 0

    w.cells_combo.setCurrentIndex(1)  # |difference| to the reference
    assert w.table_value("energy", "LDCT") == pytest.approx(w.rows[0]["diff"]["energy"])
    assert t.item(feats.index("energy"), 3).text() == "ref"
    w.layers_as_rows.setChecked(True)
    assert (t.rowCount(), t.columnCount()) == (4, len(feats))
    assert t.verticalHeaderItem(0).toolTip() == "LDCT" and t.horizontalHeaderItem(0).text() == "Correlation"
    assert w.table_value("energy", "CPCE (LIDnet) denoised") == pytest.approx(w.rows[2]["diff"]["energy"])


def test_radiomics_roi_takes_no_grid_cell(scan, qtbot, monkeypatch):
    from napari_lidnet._widgets.radiomics import RadiomicsWidget

    monkeypatch.setenv("LIDNET_SYNC", "1")
    viewer = scan
    w = RadiomicsWidget(viewer)
    qtbot.addWidget(w)
    grid = viewer.canvas.grid
    grid.enabled = True  # napari's own grid button
    n_cells = len({grid.position(i, viewer.layers) for i in range(len(viewer.layers))} - {(-1, -1)})
    w.measure_at((1 * SCALE[0], 30 * SCALE[1], 28 * SCALE[2]))
    roi = viewer.layers["radiomics ROI"]
    assert not roi.visible and grid.position(viewer.layers.index(roi), viewer.layers) == (-1, -1)
    assert len({grid.position(i, viewer.layers) for i in range(len(viewer.layers))} - {(-1, -1)}) == n_cells
    grid.enabled = False
    assert roi.visible
    grid.enabled = True  # an existing ROI is hidden again when the grid comes back
    assert not roi.visible


def test_compare_denoises_with_two_models(scan, qtbot, monkeypatch):
    """The two-model row runs the shipped baseline and LIDnet denoisers on the LDCT; layer names carry the
    model's name and the outputs become the Baseline / LIDnet choices."""
    from napari_lidnet._widgets.compare import CompareWidget
    from napari_lidnet._widgets.denoise import denoise_work
    from src_training.shipped import shipped_models

    monkeypatch.setenv("LIDNET_SYNC", "1")
    shipped = {m.method: m for m in shipped_models("denoiser")}
    if not {"baseline", "lidnet"} <= set(shipped):
        pytest.skip("the shipped CPCE denoisers are not in the weights folder")
    viewer = scan
    w = CompareWidget(viewer)
    qtbot.addWidget(w)
    for role in ("baseline", "lidnet"):  # the shipped models are chosen by default when they are listed
        listed = [c for c in w.model_choosers[role].combo.choices if c is not None]
        if shipped[role].path in listed:
            assert w.model_choosers[role].value == shipped[role].path
    w.model_choosers["baseline"].value = shipped["baseline"].path
    w.model_choosers["lidnet"].value = shipped["lidnet"].path
    w.denoise_btn.native.click()
    assert w.denoise_runner.last_error is None
    names = {role: f"{shipped[role].short_name} denoised" for role in ("baseline", "lidnet")}
    for role, name in names.items():
        assert w.chosen()[role].name == name
        layer = viewer.layers[name]
        assert layer.data.shape == viewer.layers["LDCT"].data.shape and tuple(layer.scale) == SCALE
        gen = denoise_work(checkpoint=shipped[role].path, expected_model=None,
                           hu=np.asarray(viewer.layers["LDCT"].data), device="cpu")
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                expected = stop.value[0]
                break
        np.testing.assert_allclose(layer.data, expected, atol=1e-3)
        assert layer.metadata["checkpoint"] == str(shipped[role].path)
    # a second run updates the same layers (no "… [1]")
    n = len(viewer.layers)
    w.denoise_btn.native.click()
    assert len(viewer.layers) == n


def test_detections_are_credited_to_their_own_image(make_napari_viewer):
    """The LIDnet output's name starts with the LDCT's name (Denoise's naming): its detections must not be
    counted in the LDCT column (found on the sample: "detections 2" under LDCT)."""
    from napari_lidnet._widgets.compare import CompareWidget

    viewer = make_napari_viewer()
    ndct, ldct, _base, lid = _volumes()
    ld = viewer.add_image(ldct, name="lung2 LDCT N0=1000", scale=SCALE)
    li = viewer.add_image(lid, name="lung2 LDCT N0=1000 · CPCE LIDnet (shipped)", scale=SCALE)
    data, kw = shapes_layer_data({1: BOXES[1]}, name=f"{li.name} · detections · Faster R-CNN NDCT detector (shipped)",
                                 scale=SCALE, metadata={"kind": "detections", "source": li.name})
    det = viewer.add_shapes(data, **kw)
    old, kw2 = shapes_layer_data({1: BOXES[1]}, name=f"{ld.name} detections", scale=SCALE)  # no metadata: by name
    named = viewer.add_shapes(old, **kw2)
    w = CompareWidget(viewer)
    assert w.detection_layer_for(li) is det
    assert w.detection_layer_for(ld) is named
    viewer.layers.remove(named)
    assert w.detection_layer_for(ld) is None
