"""``lidnet gui``: open napari with the sample chest CT (NDCT + lesion boxes + simulated LDCT) and the
LIDnet workbench docked on the right (every step as a tab, the Start tab first), the view fitted to the
canvas once the dock is in place.

Importing this module imports the ``napari_lidnet`` package first, whose start-up keeps ``triton`` out of
this process (see :mod:`napari_lidnet`) before napari and its OpenGL canvas are loaded here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import napari
from npe2 import PluginManager, PluginManifest
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from ._layer_order import keep_annotations_on_top
from ._messages import notify_error
from ._reader import prefer_plugin_reader, restore_reader_preference

PLUGIN = "napari-lidnet"

#: Display name of the workbench widget (napari.yaml): one dock with every step as a tab.
WORKBENCH = "LIDnet workbench"

#: Display names of the single-step widgets (napari.yaml), in the workbench's tab order.
STEP_WIDGETS: tuple[str, ...] = (
    "CT window",
    "Simulate low dose",
    "Denoise",
    "Detect lesions",
    "Compare denoisers",
    "ROI radiomics",
    "Train (collaborative, background)",
)

#: Widgets docked by ``lidnet gui``: the workbench only (it holds every step).
WIDGETS: tuple[str, ...] = (WORKBENCH,)

#: Sample-data keys opened at start (napari.yaml).
SAMPLES: tuple[str, ...] = ("lung2_ndct", "lung2_ldct")


def ensure_plugin_registered() -> None:
    """Make sure npe2 knows the napari-lidnet manifest (it does when the package is pip-installed; from a
    plain checkout the manifest file is registered directly)."""
    pm = PluginManager.instance()
    if PLUGIN in pm._manifests:  # noqa: SLF001 - npe2 has no public "is registered" query
        return
    pm.discover()
    if PLUGIN in pm._manifests:  # noqa: SLF001
        return
    manifest = PluginManifest.from_file(Path(__file__).with_name("napari.yaml"))
    pm.register(manifest)


def open_viewer(show: bool = True, samples: tuple[str, ...] = SAMPLES, widgets: tuple[str, ...] = WIDGETS) -> Any:
    """Create a napari viewer with the sample data opened and the LIDnet workbench docked on the right.

    Parameters
    ----------
    show : bool
        Show the window (False for scripts that only take screenshots of widgets).
    samples : tuple of str
        Sample keys of the plugin to open (a failing sample is reported, the others still open).
    widgets : tuple of str
        Display names of the plugin's widgets to dock on the right (default: the workbench alone). Several
        names are docked as tabs of one dock area, the first one raised.

    Returns
    -------
    napari.Viewer
    """
    ensure_plugin_registered()
    prefer_plugin_reader()  # DICOM opens with the plugin's reader, without napari's "choose reader" dialog
    viewer = napari.Viewer(title="napari-lidnet: low-dose CT denoising (LIDnet)", show=show)
    if show:
        fit_window_to_screen(viewer)
    keep_annotations_on_top(viewer)
    populate_viewer(viewer, samples, widgets)
    return viewer


def fit_window_to_screen(viewer: Any) -> None:
    """Give napari's main window the whole available area of its screen (maximised), so the canvas is as
    large as the screen allows next to the docks. Without a window manager (e.g. a virtual X display) the
    window is placed on the available area, which is what maximising means there."""
    window = viewer.window._qt_window  # noqa: SLF001 - napari has no public handle on its main window
    screen = window.screen() or QApplication.primaryScreen()
    if screen is None:
        return
    window.setGeometry(screen.availableGeometry())
    window.showMaximized()


def populate_viewer(viewer: Any, samples: tuple[str, ...] = SAMPLES, widgets: tuple[str, ...] = WIDGETS) -> list:
    """Dock ``widgets`` on the right of ``viewer``, open ``samples``, then fit the view to the canvas.

    The view is reset after the docks are in place and the window has laid itself out (now, and once more
    on the first turn of the event loop, when the window has its final size), so the whole CT is visible.
    Failures (a widget or a sample that cannot be opened) become error notifications; the viewer still
    opens.

    Parameters
    ----------
    viewer : napari.Viewer
    samples : tuple of str
        Sample keys of the plugin (napari.yaml), opened in this order.
    widgets : tuple of str
        Widget display names of the plugin (napari.yaml).

    Returns
    -------
    list
        The docked widgets (the plugin's widget objects), in the order of ``widgets``.
    """
    docked: list = []
    first = None
    for i, name in enumerate(widgets):
        try:
            dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=i > 0)
        except Exception as exc:  # noqa: BLE001 - one broken widget must not prevent the others
            notify_error(exc, f"Opening the panel '{name}'")
            continue
        docked.append(widget)
        if first is None:
            first = dock
    if first is not None:
        first.raise_()
    QApplication.processEvents()  # let the window lay out the docks before anything is fitted
    for key in samples:
        try:
            viewer.open_sample(PLUGIN, key)
        except Exception as exc:  # noqa: BLE001 - shown, the GUI still opens
            notify_error(exc, f"Opening sample {key}")
    QApplication.processEvents()
    viewer.reset_view()
    QTimer.singleShot(0, viewer.reset_view)  # once more when the event loop runs and the window is final
    return docked


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lidnet gui``: open the viewer and run the Qt event loop until it is closed.

    Returns
    -------
    int
        0.
    """
    try:
        open_viewer(show=True)
        napari.run()
    finally:
        restore_reader_preference()  # the reader preference was for this session only
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
