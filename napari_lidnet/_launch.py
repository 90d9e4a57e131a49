"""``lidnet gui``: open napari with the sample chest CT (NDCT + lesion boxes + simulated LDCT) and every
napari-lidnet widget docked.

Importing this module imports the ``napari_lidnet`` package first, whose start-up keeps ``triton`` out of
this process (see :mod:`napari_lidnet`) before napari and its OpenGL canvas are loaded here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import napari
from npe2 import PluginManager, PluginManifest

from ._messages import notify_error

PLUGIN = "napari-lidnet"

#: Display names of the plugin's widgets (napari.yaml), in docking order.
WIDGETS: tuple[str, ...] = (
    "CT window",
    "Simulate low dose",
    "Denoise",
    "Detect lesions",
    "Compare denoisers",
    "ROI radiomics",
    "Train (collaborative, background)",
)

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
    """Create a napari viewer with the sample data opened and the widgets docked on the right (tabbed).

    Parameters
    ----------
    show : bool
        Show the window (False for scripts that only take screenshots of widgets).
    samples : tuple of str
        Sample keys of the plugin to open (a failing sample is reported, the others still open).
    widgets : tuple of str
        Widget display names to dock.

    Returns
    -------
    napari.Viewer
    """
    ensure_plugin_registered()
    viewer = napari.Viewer(title="napari-lidnet: low-dose CT denoising (LIDnet)", show=show)
    for key in samples:
        try:
            viewer.open_sample(PLUGIN, key)
        except Exception as exc:  # noqa: BLE001 - shown, the GUI still opens
            notify_error(exc, f"Opening sample {key}")
    first = None
    for i, name in enumerate(widgets):
        try:
            dock, _w = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=i > 0)
            if first is None:
                first = dock
        except Exception as exc:  # noqa: BLE001 - one broken widget must not prevent the others
            notify_error(exc, f"Opening widget '{name}'")
    if first is not None:
        first.raise_()
    return viewer


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lidnet gui``: open the viewer and run the Qt event loop until it is closed.

    Returns
    -------
    int
        0.
    """
    open_viewer(show=True)
    napari.run()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
