"""The LIDnet workbench: one dock holding every step of the plugin as tabs (Start, Simulate, Denoise,
Detect, Compare, Radiomics, Train), each page in a scroll area so that the dock never makes napari's window
taller than the screen.

The pages are the plugin's own widgets (:class:`~napari_lidnet._widgets.window.WindowWidget` on the Start
page, :class:`~napari_lidnet._widgets.simulate.SimulateWidget`, ...), built when the workbench is built
(about 0.1 s for all of them once their modules are imported). The Start page says how to begin: open a CT
(DICOM folder or a volume file, read by the plugin's own reader) or the bundled sample chest CT, set the CT
window, then go on to the next step.

Closing the dock or the viewer stops the work of every page, as closing the viewer does for the single
widgets (see :mod:`napari_lidnet._widgets._lifecycle`): running computations are cancelled and a training
run is asked to stop cleanly (it saves its checkpoints).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from napari.utils.theme import get_theme
from qtpy.QtCore import QEvent, QSize, Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from .._layer_order import keep_annotations_on_top
from .._messages import notify_error
from ._lifecycle import on_window_close
from .compare import CompareWidget
from .denoise import DenoiseWidget
from .detect import DetectWidget
from .radiomics import RadiomicsWidget
from .simulate import SimulateWidget
from .train import TrainWidget
from .window import WindowWidget

logger = logging.getLogger("napari_lidnet")

PLUGIN = "napari-lidnet"

#: Sample-data keys of the plugin (napari.yaml) opened by "Load sample chest CT": NDCT + boxes, then LDCT.
SAMPLE_KEYS: tuple[str, ...] = ("lung2_ndct", "lung2_ldct")

#: Tab titles, in order.
TAB_TITLES: tuple[str, ...] = ("Start", "Simulate", "Denoise", "Detect", "Compare", "Radiomics", "Train")

#: The pages after Start: (tab title, one-line hint shown at the top of the page, widget class).
STEP_PAGES: tuple[tuple[str, str, type], ...] = (
    ("Simulate", "Makes a low-dose (LDCT) copy of an NDCT image at the chosen incident flux N0.", SimulateWidget),
    ("Denoise", "Removes the noise of a low-dose image with the chosen denoiser.", DenoiseWidget),
    ("Detect", "Finds lesions on the chosen image with the chosen detector.", DetectWidget),
    ("Compare", "Compares denoised images with the NDCT: side by side, PSNR / SSIM / RMSE, lesion boxes.",
     CompareWidget),
    ("Radiomics", "Texture (GLCM) features inside a region you click, for every image, against the NDCT.",
     RadiomicsWidget),
    ("Train", "Trains a denoiser (LIDnet or a baseline) in the background; Stop keeps the checkpoints.",
     TrainWidget),
)

#: File types offered by "Open file…" (the reader's volume and DICOM file endings).
CT_FILE_FILTER = (
    "CT images (*.dcm *.DCM *.ima *.IMA *.nii *.nii.gz *.nrrd *.nhdr *.mha *.mhd);;All files (*)"
)

#: Smallest dock width (pixels) at which every tab title and the pages' forms are readable.
MIN_WIDTH = 420
#: Preferred dock size (pixels); the height is only a hint, pages scroll when the dock is shorter.
PREFERRED_SIZE = (520, 720)
#: Smallest dock height (pixels): small, so the dock never forces the window taller than the screen.
MIN_HEIGHT = 200

_NEXT_HINT = (
    'Next: <a href="Simulate"{style}>Simulate</a> a low dose, or go to <a href="Denoise"{style}>Denoise</a> '
    "with the LDCT layer."
)


def _link_style(viewer: Any) -> str:
    """``style`` attribute for links in the viewer theme's text colour (Qt's default link blue is hard to
    read on napari's dark theme)."""
    try:
        return f' style="color: {get_theme(viewer.theme).text.as_hex()}; font-weight: bold"'
    except Exception:  # noqa: BLE001 - unknown theme: Qt's link colour
        return ""


def _hint_label(text: str) -> QLabel:
    label = QLabel(text)
    label.setWordWrap(True)
    label.setTextFormat(Qt.TextFormat.RichText)
    return label


def _scroll_page(*widgets: QWidget) -> QScrollArea:
    """A vertical stack of ``widgets`` (top-aligned) inside a frameless, resizable scroll area."""
    inner = QWidget()
    lay = QVBoxLayout(inner)
    lay.setContentsMargins(4, 4, 4, 4)
    for w in widgets:
        lay.addWidget(w)
    lay.addStretch(1)
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
    area.setWidget(inner)
    return area


def _hinted_page(hint: str, body: QScrollArea) -> QWidget:
    """``hint`` (one line, wrapped to the dock width) above the scrolling ``body``: the hint stays readable
    when a wide form scrolls sideways."""
    page = QWidget()
    lay = QVBoxLayout(page)
    lay.setContentsMargins(4, 4, 0, 0)
    lay.setSpacing(2)
    lay.addWidget(_hint_label(hint))
    lay.addWidget(body, 1)
    return page


def _native(widget: Any) -> QWidget:
    """The QWidget of a magicgui widget (``.native``) or the widget itself."""
    native = getattr(widget, "native", None)
    return native if isinstance(native, QWidget) else widget


class WorkbenchWidget(QWidget):
    """Every napari-lidnet step in one dock: tabs Start, Simulate, Denoise, Detect, Compare, Radiomics,
    Train (in this order, Start shown first), each page scrollable.

    The Start page opens a CT (a DICOM series folder or a DICOM / NIfTI / NRRD / MHA file, read by the
    plugin's reader, so napari asks no "choose reader" question) or the bundled sample chest CT lung2
    (NDCT with its lesion boxes, and its simulated LDCT at N0 = 1000), holds the CT window widget and a
    hint of the next step. Shapes layers (lesion boxes, detections) are kept above the images
    (:func:`napari_lidnet._layer_order.keep_annotations_on_top`).

    Parameters
    ----------
    napari_viewer : napari.Viewer
    parent : QWidget, optional

    Attributes
    ----------
    tabs : QTabWidget
        The tabs, titles :data:`TAB_TITLES`.
    pages : dict[str, Any]
        Tab title -> the step's widget (``"Start"`` -> the :class:`WindowWidget` of the Start page).
    status : QLabel
        What the Start page did last (opened files, samples already open).
    """

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self._docked = False
        self._closed = False
        self._last_dir = str(Path.home())
        keep_annotations_on_top(napari_viewer)

        self.tabs = QTabWidget(self)
        bar = self.tabs.tabBar()
        bar.setElideMode(Qt.TextElideMode.ElideNone)  # full titles, never "Radi…"
        bar.setUsesScrollButtons(False)  # ... and all of them visible: the dock is at least as wide as the bar
        bar.setExpanding(False)

        self.pages: dict[str, Any] = {}
        self.window_widget = WindowWidget(napari_viewer)
        self.pages["Start"] = self.window_widget
        self.tabs.addTab(self._start_page(), "Start")
        for title, hint, cls in STEP_PAGES:
            page = cls(napari_viewer)
            self.pages[title] = page
            self.tabs.addTab(_hinted_page(hint, _scroll_page(_native(page))), title)
            self.tabs.setTabToolTip(self.tabs.count() - 1, hint)
        self.tabs.setCurrentIndex(0)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.tabs)
        self.setMinimumSize(max(MIN_WIDTH, bar.sizeHint().width() + 8), MIN_HEIGHT)

    # ------------------------------------------------------------------ Start page
    def _start_page(self) -> QScrollArea:
        intro = _hint_label("<b>Start here.</b> Open a CT, then choose the window you read it with.")
        self.open_folder_btn = QPushButton("Open DICOM folder…")
        self.open_folder_btn.setToolTip("A folder with the DICOM files of one or more CT series.")
        self.open_file_btn = QPushButton("Open file…")
        self.open_file_btn.setToolTip("A DICOM file or a CT volume file (NIfTI, NRRD, MHA).")
        self.sample_btn = QPushButton("Load sample chest CT")
        self.sample_btn.setToolTip(
            "Chest CT lung2: normal dose (NDCT) with its lesion boxes, and its simulated low dose (LDCT, N0=1000)."
        )
        self.open_folder_btn.clicked.connect(self.open_folder_dialog)
        self.open_file_btn.clicked.connect(self.open_file_dialog)
        self.sample_btn.clicked.connect(self.load_sample)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.open_folder_btn)
        row.addWidget(self.open_file_btn)
        buttons = QWidget()
        buttons.setLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        window_title = _hint_label("<b>CT window</b>")
        self.next_hint = _hint_label(_NEXT_HINT.format(style=_link_style(self.viewer)))
        self.next_hint.linkActivated.connect(self.show_step)
        return _scroll_page(intro, buttons, self.sample_btn, self.status, window_title,
                            self.window_widget.native, self.next_hint)

    def show_step(self, title: str) -> None:
        """Raise the tab ``title`` (one of :data:`TAB_TITLES`; unknown titles are ignored)."""
        if title in TAB_TITLES:
            self.tabs.setCurrentIndex(TAB_TITLES.index(title))

    def open_folder_dialog(self, *_: Any) -> list:
        """Ask for a DICOM folder and open it (:meth:`open_path`); returns the new layers (none if cancelled)."""
        path = QFileDialog.getExistingDirectory(self, "Open DICOM folder", self._last_dir)
        return self.open_path(path) if path else []

    def open_file_dialog(self, *_: Any) -> list:
        """Ask for a CT file and open it (:meth:`open_path`); returns the new layers (none if cancelled)."""
        path, _filter = QFileDialog.getOpenFileName(self, "Open CT file", self._last_dir, CT_FILE_FILTER)
        return self.open_path(path) if path else []

    def open_path(self, path: str | Path) -> list:
        """Open a DICOM folder or a CT file with the plugin's reader (``viewer.open(path, plugin=...)``).

        A CT the reader cannot read gives the reader's own error notification and no layer; any other
        failure is shown as a notification too (never raised).

        Parameters
        ----------
        path : str or Path
            A folder of DICOM files, a DICOM file, or a NIfTI / NRRD / MHA file.

        Returns
        -------
        list of napari layers
            The layers added (empty when nothing could be read).
        """
        p = Path(path)
        self._last_dir = str(p if p.is_dir() else p.parent)
        try:
            layers = list(self.viewer.open(str(p), plugin=PLUGIN) or [])
        except Exception as exc:  # noqa: BLE001 - shown to the user, the viewer goes on
            self.status.setText(notify_error(exc, f"Opening {p.name}"))
            return []
        layers = [lyr for lyr in layers if lyr is not None]
        self.status.setText(
            f"Opened {', '.join(lyr.name for lyr in layers)}." if layers else f"Nothing could be read from {p.name}."
        )
        return layers

    def load_sample(self, *_: Any) -> list:
        """Open the plugin's sample chest CT (``viewer.open_sample`` of :data:`SAMPLE_KEYS`: NDCT with lesion
        boxes, then its simulated LDCT). A sample already in the viewer is not opened twice; a failing
        sample is reported and the others still open.

        Returns
        -------
        list of napari layers
            The layers added.
        """
        added: list = []
        already: list[str] = []
        for key in SAMPLE_KEYS:
            if any(getattr(lyr.source, "sample", None) == (PLUGIN, key) for lyr in self.viewer.layers):
                already.append(key)
                continue
            try:
                added.extend(lyr for lyr in (self.viewer.open_sample(PLUGIN, key) or []) if lyr is not None)
            except Exception as exc:  # noqa: BLE001 - shown, the other sample still opens
                notify_error(exc, "Opening the sample chest CT")
        if added:
            self.status.setText(f"Opened {', '.join(lyr.name for lyr in added)}.")
        elif already:
            self.status.setText("The sample chest CT is already open.")
        return added

    # ------------------------------------------------------------------ size and lifecycle
    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """Preferred size :data:`PREFERRED_SIZE` (pixels), never narrower than the minimum width."""
        return QSize(max(PREFERRED_SIZE[0], self.minimumWidth()), PREFERRED_SIZE[1])

    def minimumSizeHint(self) -> QSize:  # noqa: N802 - Qt API
        """At least :data:`MIN_WIDTH` wide (all tab titles in full) and only :data:`MIN_HEIGHT` high."""
        return QSize(self.minimumWidth(), MIN_HEIGHT)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt API
        """Once docked in napari's main window, stop every page's work when that window closes."""
        super().showEvent(event)
        win = self.window()
        if isinstance(win, QMainWindow):
            on_window_close(win, self.shutdown)

    def event(self, event: Any) -> bool:
        """Watch re-parenting: napari closes a dock by taking this widget out of it (parent None)."""
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.shutdown()
        return super().event(event)

    def shutdown(self) -> None:
        """Stop the work of every page (the dock or the viewer is closing): running computations are
        cancelled and waited for, a training run is asked to stop cleanly (it saves its checkpoints).
        Idempotent; errors are logged, never raised."""
        if self._closed:
            return
        self._closed = True
        for title, page in self.pages.items():
            try:
                if callable(getattr(page, "shutdown", None)):
                    page.shutdown()
                runner = getattr(page, "runner", None)
                if runner is not None:
                    runner.shutdown()
            except Exception:  # noqa: BLE001 - closing must go on
                logger.exception("napari-lidnet: error while stopping the %s page", title)


__all__ = ["CT_FILE_FILTER", "SAMPLE_KEYS", "STEP_PAGES", "TAB_TITLES", "WorkbenchWidget"]
