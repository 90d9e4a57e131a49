"""The LIDnet workbench dock and ``lidnet gui``'s layout: tabs in order with full titles, Start first, the
Start page's buttons open CTs and the sample, the window stays within a 1920 x 1080 screen, the view is
fitted after docking, closing the dock stops the pages' work. Run under Xvfb with a 1920x1080 screen (see
tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from qtpy.QtWidgets import QApplication, QFileDialog  # noqa: E402

from napari_lidnet._launch import WORKBENCH, fit_window_to_screen, populate_viewer  # noqa: E402
from napari_lidnet._widgets.workbench import MIN_WIDTH, TAB_TITLES, WorkbenchWidget  # noqa: E402

SCREEN_HEIGHT = 1080  # the Xvfb screen of the GUI tests


def _settle(n: int = 5) -> None:
    for _ in range(n):
        QApplication.processEvents()


def _dock_workbench(viewer):
    dock, wb = viewer.window.add_plugin_dock_widget("napari-lidnet", WORKBENCH)
    _settle()
    return dock, wb


@pytest.fixture
def shown_viewer(make_napari_viewer, lidnet_manifest):
    return make_napari_viewer(show=True)


def test_tabs_in_order_full_titles_start_first(shown_viewer):
    from napari_lidnet._widgets.detect import DetectWidget
    from napari_lidnet._widgets.train import TrainWidget
    from napari_lidnet._widgets.window import WindowWidget

    viewer = shown_viewer
    _dock, wb = _dock_workbench(viewer)
    assert isinstance(wb, WorkbenchWidget)
    tabs = wb.tabs
    assert [tabs.tabText(i) for i in range(tabs.count())] == list(TAB_TITLES)
    assert TAB_TITLES == ("Start", "Simulate", "Denoise", "Detect", "Compare", "Radiomics", "Train")
    assert tabs.currentIndex() == 0
    # every title drawn in full and every tab inside the visible bar (no elision, no scroll arrows)
    bar = tabs.tabBar()
    metrics = bar.fontMetrics()
    for i, title in enumerate(TAB_TITLES):
        assert bar.tabRect(i).width() >= metrics.horizontalAdvance(title), title
    assert bar.tabRect(len(TAB_TITLES) - 1).right() <= bar.width()
    assert wb.width() >= MIN_WIDTH
    # the pages are the plugin's widgets, the CT window on the Start page
    assert isinstance(wb.pages["Start"], WindowWidget)
    assert isinstance(wb.pages["Detect"], DetectWidget)
    assert isinstance(wb.pages["Train"], TrainWidget)
    # the next-step link of the Start page raises that tab
    wb.next_hint.linkActivated.emit("Simulate")
    assert tabs.tabText(tabs.currentIndex()) == "Simulate"


def test_window_stays_within_the_screen(shown_viewer):
    viewer = shown_viewer
    fit_window_to_screen(viewer)
    _dock, wb = _dock_workbench(viewer)
    win = viewer.window._qt_window
    for i in range(wb.tabs.count()):  # the tallest page must not stretch the window either
        wb.tabs.setCurrentIndex(i)
        _settle()
        assert win.frameGeometry().height() <= SCREEN_HEIGHT, wb.tabs.tabText(i)
    assert win.minimumSizeHint().height() <= SCREEN_HEIGHT
    assert wb.minimumSizeHint().height() <= 300
    # the canvas keeps most of the width on a full-HD screen
    assert viewer.window._qt_viewer.canvas.native.width() >= 0.45 * win.width()


def test_view_is_fitted_after_docking(shown_viewer):
    viewer = shown_viewer
    img = np.zeros((3, 200, 300), dtype=np.float32)
    img[:, 20:180, 30:270] = 100.0
    viewer.add_image(img, scale=(2.0, 0.7, 0.7))
    _settle()
    zoom_before_dock = viewer.camera.zoom
    populate_viewer(viewer, samples=(), widgets=(WORKBENCH,))
    _settle()
    zoom, center = viewer.camera.zoom, tuple(viewer.camera.center)
    assert zoom != pytest.approx(zoom_before_dock)  # the dock took canvas space: the old fit was wrong
    viewer.reset_view()
    assert viewer.camera.zoom == pytest.approx(zoom)
    assert tuple(viewer.camera.center) == pytest.approx(center)


@pytest.fixture
def fast_sample_ldct(monkeypatch):
    """The sample LDCT made of the NDCT with fixed noise (the real one simulates the whole volume)."""
    from napari.plugins import _npe2

    from napari_lidnet._sample_data import sample_ndct

    real = _npe2.get_sample_data

    def fake_ldct():
        hu, kwargs, _ = sample_ndct()[0]
        noisy = hu + np.random.default_rng(0).normal(0, 30, hu.shape).astype(np.float32)
        return [(noisy, dict(kwargs, name="lung2 LDCT N0=1000"), "image")]

    def get_sample_data(plugin, sample):
        data, available = real(plugin, sample)
        if (plugin, sample) == ("napari-lidnet", "lung2_ldct"):
            return fake_ldct, available
        return data, available

    monkeypatch.setattr(_npe2, "get_sample_data", get_sample_data)


def test_start_loads_the_sample_once(shown_viewer, fast_sample_ldct):
    viewer = shown_viewer
    _dock, wb = _dock_workbench(viewer)
    wb.sample_btn.click()
    names = [lyr.name for lyr in viewer.layers]
    assert set(names) == {"lung2 NDCT", "lung2 lesion boxes", "lung2 LDCT N0=1000"}
    assert {getattr(lyr.source, "sample", None) for lyr in viewer.layers} == {
        ("napari-lidnet", "lung2_ndct"), ("napari-lidnet", "lung2_ldct")}
    # the lesion boxes stay above the images
    kinds = [type(lyr).__name__ for lyr in viewer.layers]
    assert kinds.index("Shapes") > max(i for i, k in enumerate(kinds) if k == "Image")
    assert "lung2 NDCT" in wb.status.text()
    # a second click opens nothing twice
    assert wb.load_sample() == []
    assert len(viewer.layers) == 3
    assert "already open" in wb.status.text()


def test_start_opens_dicom_folder_and_file_with_the_plugin_reader(shown_viewer, tiny_ct, tmp_path, monkeypatch):
    from src_training.io import write_dicom_series, write_volume

    vol, _boxes = tiny_ct
    folder = tmp_path / "series"
    write_dicom_series(vol.hu, folder, spacing=vol.spacing, series_description="CHEST tiny")
    nii = write_volume(vol.hu, tmp_path / "tiny.nii.gz", spacing=vol.spacing)
    viewer = shown_viewer
    _dock, wb = _dock_workbench(viewer)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(folder)))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (str(nii), "")))
    wb.open_folder_btn.click()
    assert len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.source.reader_plugin == "napari-lidnet"
    assert np.allclose(np.asarray(layer.data), vol.hu, atol=1.0)
    assert np.allclose(layer.scale, vol.spacing)
    wb.open_file_btn.click()
    assert len(viewer.layers) == 2
    assert viewer.layers[1].source.reader_plugin == "napari-lidnet"
    assert np.allclose(np.asarray(viewer.layers[1].data), vol.hu, atol=1.0)
    # a cancelled dialog opens nothing
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: ("", "")))
    wb.open_file_btn.click()
    assert len(viewer.layers) == 2


def test_closing_the_dock_stops_every_page(shown_viewer):
    viewer = shown_viewer
    dock, wb = _dock_workbench(viewer)
    runners = [page.runner for page in wb.pages.values() if getattr(page, "runner", None) is not None]
    assert len(runners) == 5  # Simulate, Denoise, Detect, Compare, Radiomics
    assert not any(r.closed for r in runners)
    assert wb.pages["Train"]._redraw_timer.isActive()
    viewer.window.remove_dock_widget(dock)
    _settle()
    assert all(r.closed for r in runners)
    assert not wb.pages["Train"]._redraw_timer.isActive()


def test_open_viewer_docks_only_the_workbench_maximised(make_napari_viewer, lidnet_manifest, monkeypatch):
    import napari

    from napari_lidnet import _launch

    calls = []
    monkeypatch.setattr(_launch, "prefer_plugin_reader", lambda: calls.append("reader"))
    monkeypatch.setattr(napari, "Viewer", lambda **kw: make_napari_viewer(**kw))
    viewer = _launch.open_viewer(show=True, samples=("lung2_ndct",))
    _settle()
    assert calls == ["reader"]
    docks = list(viewer.window._wrapped_dock_widgets)
    assert docks == [f"{WORKBENCH} (napari-lidnet)"]
    wb = viewer.window._wrapped_dock_widgets[docks[0]].widget()
    assert wb.tabs.currentIndex() == 0
    win = viewer.window._qt_window
    avail = win.screen().availableGeometry()
    assert win.frameGeometry().height() <= min(SCREEN_HEIGHT, avail.height())
    assert win.width() >= 0.9 * avail.width()  # maximised: the canvas gets the room
    assert [type(lyr).__name__ for lyr in viewer.layers] == ["Image", "Shapes"]
    zoom, center = viewer.camera.zoom, tuple(viewer.camera.center)
    viewer.reset_view()
    assert viewer.camera.zoom == pytest.approx(zoom) and tuple(viewer.camera.center) == pytest.approx(center)
