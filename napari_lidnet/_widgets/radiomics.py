"""ROI radiomics widget: click a lesion box (or any point) -> pyradiomics features of every image layer.

All numbers come from :func:`src_training.evaluation.glcm_features` (pyradiomics, computed in HU on the
current slice, pixel spacing from the layer scale): GLCM correlation, homogeneity (``Idm``), energy
(``JointEnergy``), plus the pyradiomics classes the user ticks (firstorder, glrlm, glszm, gldm, ngtdm).
Each layer's row also shows the absolute difference to a reference layer (normally the NDCT), the ROI
radiomics metric of the LIDnet paper (Table 3).

pyradiomics (:mod:`.radiomics_features`) runs in a napari thread worker
(:class:`~napari_lidnet._widgets._tasks.TaskRunner`, with a progress bar over the layers and Cancel); the
ROI and the slices are read from the viewer in the GUI thread.

Only the image layers covering the same pixels as the measured one (the reference, else the selected image:
same slices, size and pixel spacing) are measured, so an output computed on one slice never fills a column.
The table is compact: features as rows and layers as columns (or the other way round), cells showing the
feature values or their |difference| to the reference, short titles with the full names as tooltips. In
napari's grid mode the ROI layer is hidden (it would take a grid cell of its own); Compare's side-by-side
view outlines the ROI in every cell.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QFont, QFontMetrics
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from src_training.checkpoint import atomic_write_text
from src_training.errors import LidnetError

from .._boxes import boxes_on_slice
from .._layers import layer_geometry, layer_slice, slice_index
from .._messages import notify_error
from ._layer_choice import (
    NONE,
    RADIOMICS_ROI_NAME,
    LayerFollower,
    box_layers,
    guess_name,
    image_layers,
    layer_by_name,
    refill_combo,
)
from ._tasks import TaskRunner, run_controls
from .compare_metrics import describe_grid, guess_role, layers_match, n_slices
from .radiomics_features import (
    EXTRA_CLASSES,
    feature_tooltip,
    radiomics_rows_work,
    short_layer_title,
    short_name,
)

if TYPE_CHECKING:
    import napari

#: Name of the shapes layer showing the measured ROI.
ROI_LAYER_NAME = RADIOMICS_ROI_NAME
#: Table cell contents: (key, label of the "Show" drop-down).
CELL_MODES = (("value", "feature values"), ("diff", "|difference| to the reference"))
#: Widest row / column title of the table (pixels); longer titles are elided (full text in the tooltip).
MAX_TITLE_PX = 150


class RadiomicsWidget(QWidget):
    """Dock widget measuring pyradiomics features in an ROI of every image layer covering the same pixels as
    the reference (:meth:`measured_layers`) on the current slice.

    Click inside a rectangle of the chosen boxes layer (the box is the ROI) or anywhere else (a square of
    "ROI size" pixels centred on the click is the ROI). A click that drags (panning) does nothing.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    rows : list[dict]
        After a measurement: one dict per measured image layer with ``layer``, ``slice``, ``box`` (x0, y0, x1, y1 in
        that layer's pixels), ``features`` (the :func:`glcm_features` dict) and ``diff`` (absolute difference
        to the reference layer, feature by feature; empty for the reference itself), or ``error``.
    runner : TaskRunner
        Runs the pyradiomics computation of a measurement in a worker thread.
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.rows: list[dict[str, Any]] = []
        self._last_roi: dict[str, Any] | None = None

        self.boxes_combo = QComboBox()
        self.boxes_combo.setToolTip("Shapes layer whose rectangles are the lesion ROIs.")
        self.ref_combo = QComboBox()
        self.ref_combo.setToolTip("Reference layer (normally the NDCT) for the |difference| columns.")
        self.size_spin = QSpinBox()
        self.size_spin.setRange(2, 512)
        self.size_spin.setValue(32)
        self.size_spin.setSuffix(" px")
        self.size_spin.setToolTip("Side of the square ROI made around a click outside any box (pixels).")
        self.bin_spin = QSpinBox()
        self.bin_spin.setRange(1, 500)
        self.bin_spin.setValue(25)
        self.bin_spin.setSuffix(" HU")
        self.bin_spin.setToolTip("Grey-level bin width of pyradiomics (25 HU is its default).")
        self.click_check = QCheckBox("Measure on click in the viewer")
        self.click_check.setChecked(True)
        self.cells_combo = QComboBox()
        for _key, label in CELL_MODES:
            self.cells_combo.addItem(label)
        self.cells_combo.setToolTip("What the table cells show: the features, or |feature − reference feature|.")
        self.layers_as_rows = QCheckBox("Layers as rows")
        self.layers_as_rows.setToolTip("Default: one row per feature, one column per layer.")

        form = QFormLayout()
        form.addRow("Lesion boxes", self.boxes_combo)
        form.addRow("Reference", self.ref_combo)
        form.addRow("ROI size (click)", self.size_spin)
        form.addRow("Bin width", self.bin_spin)

        classes_box = QGroupBox("pyradiomics classes (GLCM always)")
        grid = QGridLayout(classes_box)
        self.class_checks: dict[str, QCheckBox] = {}
        for i, name in enumerate(EXTRA_CLASSES):
            cb = QCheckBox(name)
            self.class_checks[name] = cb
            grid.addWidget(cb, i // 3, i % 3)

        _run, self.cancel_btn, self.progress, self.status = run_controls()  # measurements start on a click
        self.runner = TaskRunner("ROI radiomics", None, self.cancel_btn, self.progress, self.status)

        self.info = QLabel("Click inside a lesion box (or anywhere: a square ROI is made) on the current slice.")
        self.info.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setMinimumHeight(200)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setMinimumSectionSize(36)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        view_row = QHBoxLayout()
        view_row.addWidget(QLabel("Show"))
        view_row.addWidget(self.cells_combo, stretch=1)
        view_row.addWidget(self.layers_as_rows)
        self.copy_btn = QPushButton("Copy table")
        self.csv_btn = QPushButton("Export CSV…")
        btns = QHBoxLayout()
        btns.addWidget(self.copy_btn)
        btns.addWidget(self.csv_btn)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(classes_box)
        layout.addWidget(self.click_check)
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress.native, stretch=1)
        progress_row.addWidget(self.cancel_btn.native)
        layout.addLayout(progress_row)
        layout.addWidget(self.status.native)
        layout.addWidget(self.info)
        layout.addLayout(view_row)
        layout.addWidget(self.table, stretch=1)
        layout.addLayout(btns)

        self.copy_btn.clicked.connect(self.copy_to_clipboard)
        self.csv_btn.clicked.connect(self._on_export_clicked)
        self._fitting = False
        self.table.horizontalHeader().sectionResized.connect(self._fit_titles)
        self.cells_combo.currentIndexChanged.connect(self._refill)
        self.layers_as_rows.toggled.connect(self._refill)
        self._follower = LayerFollower(self.viewer, self.refresh_choices)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self._roi_hidden_for_grid = False
        self.viewer.canvas.grid.events.enabled.connect(self._on_grid_toggled)
        self._ref_name: str | None = None
        self._skipped: list[str] = []
        self.refresh_choices()

    # ------------------------------------------------------------------ choices
    def refresh_choices(self, event=None) -> None:
        """Refill the boxes and reference choosers (keeps current choices; guesses "box"/"lesion" and "NDCT";
        detections, RPN proposals and the ROI layer itself are not offered as boxes)."""
        snames = [ly.name for ly in box_layers(self.viewer)]
        cands = [(ly.name, n_slices(ly)) for ly in image_layers(self.viewer, include_derived=False)]
        refill_combo(self.boxes_combo, snames, guess_name(snames, ("box", "lesion")))
        refill_combo(self.ref_combo, [n for n, _ in cands], guess_role(cands, "ndct"))

    def _layer(self, name: str):
        return layer_by_name(self.viewer, name)

    def measured_layer(self):
        """The image layer whose pixels define the ROI: the reference, else the selected image layer, else
        the image with the most slices (None without image layers)."""
        images = image_layers(self.viewer, include_derived=False)
        ref = self._layer(self.ref_combo.currentText())
        if ref is not None:
            return ref
        active = self.viewer.layers.selection.active
        if active is not None and active.name in [ly.name for ly in images]:
            return active
        return max(images, key=n_slices) if images else None

    def measured_layers(self) -> list:
        """The image layers measured (bottom to top): those covering the same pixels as
        :meth:`measured_layer` (same slices, size and pixel spacing; difference maps left out)."""
        anchor = self.measured_layer()
        if anchor is None:
            return []
        return [ly for ly in image_layers(self.viewer, include_derived=False) if layers_match(ly, anchor)]

    def feature_classes(self) -> tuple[str, ...]:
        """The pyradiomics classes to compute: ``glcm`` plus the ticked ones."""
        return ("glcm", *[n for n, cb in self.class_checks.items() if cb.isChecked()])

    # ------------------------------------------------------------------ mouse
    def _on_mouse(self, viewer, event):
        """Mouse-drag callback: measure on a click (press + release without moving), ignore drags."""
        try:
            enabled = self.click_check.isChecked()
        except RuntimeError:  # the widget was deleted: unhook
            self.disconnect_viewer()
            return
        if not enabled or getattr(event, "button", 1) != 1:
            return
        if getattr(event, "modifiers", None):
            return
        layer = viewer.layers.selection.active
        if layer is not None and getattr(layer, "mode", "pan_zoom") not in ("pan_zoom", "select", "transform"):
            return  # the user is drawing / painting: leave the click alone
        start = np.asarray(event.position, dtype=float)
        moved = False
        yield
        while event.type == "mouse_move":
            if np.linalg.norm(np.asarray(event.position, dtype=float) - start) > 1e-6:
                moved = True
            yield
        if moved:
            return
        self.measure_at(start)  # errors become notifications (TaskRunner)

    # ------------------------------------------------------------------ measurement
    def roi_at(self, world_point: Sequence[float]) -> dict[str, Any]:
        """The ROI for a world coordinate: the box of the boxes layer containing it on the current slice,
        else a square of "ROI size" pixels (in the reference / first image layer's pixels) around it.

        Returns
        -------
        dict
            ``world_corners`` (2, ndim) world coordinates of the ROI's opposite pixel corners (used to map it
            into every layer), ``source`` ("box" or "click"), ``grid_layer`` (layer whose pixels define it).

        Raises
        ------
        LidnetError
            No image layer is open.
        """
        world_point = np.asarray(world_point, dtype=float)
        ndim = self.viewer.dims.ndim
        if len(world_point) < ndim:
            pt = np.asarray(self.viewer.dims.point, dtype=float)
            pt[-len(world_point):] = world_point
            world_point = pt
        elif ndim >= 3:
            # a full world point may lie on another slice: show (and measure) that slice
            axis = ndim - 3
            if not np.isclose(self.viewer.dims.point[axis], world_point[-3]):
                self.viewer.dims.set_point(axis, float(world_point[-3]))
        grid_layer = self.measured_layer()
        if grid_layer is None:
            raise LidnetError("Open an image layer first: there is nothing to measure.")
        z = slice_index(self.viewer, grid_layer)
        pd = np.asarray(grid_layer.world_to_data(world_point), dtype=float)
        py, px = pd[-2], pd[-1]
        box = None
        boxes_layer = self._layer(self.boxes_combo.currentText())
        if boxes_layer is not None:
            boxes, _ = boxes_on_slice(boxes_layer, grid_layer, z)
            # boxes have edges at pixel borders; the clicked pixel-border coordinate is data + 0.5
            inside = [
                b for b in boxes if b[0] <= px + 0.5 <= b[2] and b[1] <= py + 0.5 <= b[3]
            ]
            if inside:
                box = min(inside, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        source = "box"
        if box is None:
            source = "click"
            size = int(self.size_spin.value())
            col, row = int(np.floor(px + 0.5)), int(np.floor(py + 0.5))  # the clicked pixel
            x0, y0 = col - size // 2, row - size // 2
            box = np.array([x0, y0, x0 + size, y0 + size], dtype=float)
        # box corners (edge coords) -> data coords (-0.5) -> world
        corners = []
        for x, y in ((box[0], box[1]), (box[2], box[3])):
            d = np.asarray(pd, dtype=float).copy()
            d[-2], d[-1] = y - 0.5, x - 0.5
            if z is not None:
                d[-3] = z
            corners.append(np.asarray(grid_layer.data_to_world(d), dtype=float))
        return {"world_corners": np.asarray(corners), "source": source, "grid_layer": grid_layer.name}

    def _box_in_layer(self, layer, world_corners: np.ndarray) -> tuple[int | None, np.ndarray]:
        z = slice_index(self.viewer, layer)
        pts = [np.asarray(layer.world_to_data(c), dtype=float) for c in world_corners]
        ys = [p[-2] + 0.5 for p in pts]
        xs = [p[-1] + 0.5 for p in pts]
        box = np.array([min(xs), min(ys), max(xs), max(ys)], dtype=float)
        return z, np.round(box, 6)

    def measure_at(self, world_point: Sequence[float]) -> Any:
        """Measure the features of every image layer in the ROI at ``world_point`` on the current slice.

        The ROI and each layer's slice are read here (GUI thread); pyradiomics runs in a thread worker
        (:func:`radiomics_rows_work`; synchronously with ``LIDNET_SYNC=1``). When it is done, :attr:`rows`
        holds the measurements, the table shows them and the ROI is drawn. Failures (no image layer...)
        become notifications.

        Parameters
        ----------
        world_point : sequence of float
            World coordinate (viewer order, e.g. ``(z, y, x)`` in the layers' world units; a shorter ``(y, x)``
            is completed with the current slice position).

        Returns
        -------
        napari worker or None
            None when it ran synchronously, or did not start (busy, or an error was shown). Each layer's
            features come from :func:`src_training.evaluation.glcm_features` on that layer's current slice in
            HU, with the ROI mapped into the layer's own pixels and ``spacing_mm`` = the layer's (y, x) scale.
        """
        state: dict[str, Any] = {}

        def work():  # TaskRunner.start calls this in the GUI thread; the generator it returns runs in the worker
            roi = state["roi"] = self.roi_at(world_point)
            items = []
            measured = self.measured_layers()
            anchor = self.measured_layer()
            state["skipped"] = [
                f"'{ly.name}' ({describe_grid(ly)})" for ly in image_layers(self.viewer, include_derived=False)
                if ly.name not in [m.name for m in measured]
            ] if anchor is not None else []
            for ly in measured:
                z, box = self._box_in_layer(ly, roi["world_corners"])
                item = {"layer": ly.name, "slice": z, "box": box}
                try:
                    item["spacing_mm"] = tuple(float(abs(v)) for v in ly.scale[-2:])
                    item["image"] = np.array(layer_slice(ly, z), dtype=np.float32, copy=True)
                except Exception as exc:  # noqa: BLE001 - reported in this layer's row
                    item["error"] = str(exc)
                items.append(item)
            state["ref_name"] = ref_name = self.ref_combo.currentText()
            return radiomics_rows_work(items, self.feature_classes(), float(self.bin_spin.value()), ref_name)

        def show(rows: list[dict[str, Any]]) -> None:
            roi, ref_name = state["roi"], state["ref_name"]
            has_ref = any(r["layer"] == ref_name and r["features"] for r in rows)
            self.rows = rows
            self._last_roi = roi
            self._skipped = state["skipped"]
            self._show_roi(roi)
            self._fill_table(rows, ref_name if has_ref else None, roi)

        return self.runner.start(work, show, desc="ROI radiomics")

    def _show_roi(self, roi: dict[str, Any]) -> None:
        """Draw the measured ROI as a yellow rectangle in a "radiomics ROI" shapes layer."""
        grid_layer = self._layer(roi["grid_layer"])
        if grid_layer is None:
            return
        c0, c1 = roi["world_corners"]
        d0 = np.asarray(grid_layer.world_to_data(c0), dtype=float)
        d1 = np.asarray(grid_layer.world_to_data(c1), dtype=float)
        if grid_layer.ndim >= 3:
            z = d0[-3]
            rect = np.array([[z, d0[-2], d0[-1]], [z, d0[-2], d1[-1]], [z, d1[-2], d1[-1]], [z, d1[-2], d0[-1]]])
        else:
            rect = np.array([[d0[-2], d0[-1]], [d0[-2], d1[-1]], [d1[-2], d1[-1]], [d1[-2], d0[-1]]])
        in_grid = bool(self.viewer.canvas.grid.enabled)
        if ROI_LAYER_NAME in self.viewer.layers:
            lay = self.viewer.layers[ROI_LAYER_NAME]
            lay.data = [rect]
        else:
            active = self.viewer.layers.selection.active
            self._roi_hidden_for_grid = in_grid
            lay = self.viewer.add_shapes(
                [rect],
                shape_type="rectangle",
                name=ROI_LAYER_NAME,
                edge_color="yellow",
                face_color="transparent",
                edge_width=1.5,
                **layer_geometry(grid_layer, ndim=rect.shape[1]),
                visible=not in_grid,  # in grid mode it would take a cell of its own
            )
            if active is not None:  # keep the user's selection (adding a layer selects it)
                self.viewer.layers.selection.active = active

    def _on_grid_toggled(self, event: Any = None) -> None:
        """Grid mode on: hide the ROI layer (it would take a cell of its own); off: show it again if it was
        hidden for the grid."""
        try:
            lay = self._layer(ROI_LAYER_NAME)
            enabled = bool(self.viewer.canvas.grid.enabled)
        except RuntimeError:  # the widget or viewer is gone
            return
        if lay is None:
            return
        if enabled and lay.visible:
            lay.visible = False
            self._roi_hidden_for_grid = True
        elif not enabled and self._roi_hidden_for_grid:
            lay.visible = True
            self._roi_hidden_for_grid = False

    # ------------------------------------------------------------------ table / export
    def _columns(self) -> list[str]:
        keys: list[str] = []
        for r in self.rows:
            for k in r.get("features", {}):
                if k not in keys:
                    keys.append(k)
        return keys

    def cell_mode(self) -> str:
        """``"value"`` (feature values) or ``"diff"`` (|difference| to the reference), as shown."""
        return CELL_MODES[max(self.cells_combo.currentIndex(), 0)][0]

    def _title(self, text: str, width: int = MAX_TITLE_PX, lines: int = 1, fm: QFontMetrics | None = None) -> str:
        """``text`` on up to ``lines`` (1 or 2) lines of at most ``width`` pixels (font metrics ``fm``, default
        the table's font): split at the space giving the narrowest lines, each line elided (middle) when
        still too wide."""
        fm = fm or QFontMetrics(self.table.font())
        words = text.split()
        if lines > 1 and fm.horizontalAdvance(text) > width and len(words) > 1:
            splits = [(" ".join(words[:i]), " ".join(words[i:])) for i in range(1, len(words))]
            parts = min(splits, key=lambda p: max(fm.horizontalAdvance(p[0]), fm.horizontalAdvance(p[1])))
        else:
            parts = (text,)
        return "\n".join(fm.elidedText(p, Qt.TextElideMode.ElideMiddle, width) for p in parts)

    def _refill(self, *_: Any) -> None:
        if self.rows and self._last_roi is not None:
            self._fill_table(self.rows, self._ref_name, self._last_roi)

    def _fill_table(self, rows, ref_name, roi) -> None:
        """Features as rows and layers as columns (or transposed with "Layers as rows"); the cells show the
        values or the |differences| to the reference (``ref_name``, or None). Titles are short (layer
        titles without "denoised" / "(shipped)", elided to :data:`MAX_TITLE_PX` pixels) with the full
        names as tooltips, so the table fits a narrow dock without sideways scrolling."""
        self._ref_name = ref_name
        keys = self._columns()
        diff = self.cell_mode() == "diff" and ref_name is not None
        feats = [(self._title(short_name(k)), feature_tooltip(k)) for k in keys]
        by_layer = not self.layers_as_rows.isChecked()  # default: layers are the columns
        per_col = max(36, (self.table.viewport().width() or 300) // max(len(rows), 1) - 8)
        lays = [
            (self._title(short_layer_title(r["layer"]), min(MAX_TITLE_PX, per_col), lines=2 if by_layer else 1),
             r["layer"] + (" (reference)" if r["layer"] == ref_name else "") + (f": {r['error']}" if r.get("error") else ""))
            for r in rows
        ]
        row_titles, col_titles = (feats, lays) if by_layer else (lays, feats)
        self.table.clear()
        self.table.setRowCount(len(row_titles))
        self.table.setColumnCount(len(col_titles))
        bold = QFont()
        bold.setBold(True)
        for setter, titles, is_layer in ((self.table.setVerticalHeaderItem, row_titles, not by_layer),
                                         (self.table.setHorizontalHeaderItem, col_titles, by_layer)):
            for i, (text, tip) in enumerate(titles):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                if is_layer:  # re-fitted to the column width when the table is resized
                    item.setData(Qt.ItemDataRole.UserRole, short_layer_title(rows[i]["layer"]))
                if is_layer and rows[i]["layer"] == ref_name:
                    item.setFont(bold)
                setter(i, item)
        for li, r in enumerate(rows):
            for fi, k in enumerate(keys):
                v = (r.get("diff") or {}).get(k) if diff else r["features"].get(k)
                text = "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"
                if diff and r["layer"] == ref_name:
                    text = "ref"
                item = QTableWidgetItem(text)
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                item.setData(Qt.ItemDataRole.UserRole, v)
                item.setToolTip(f"{r['layer']}: {short_name(k)}" + (f" |Δ| to {ref_name}" if diff else "")
                                + (f" — {r['error']}" if r.get("error") else ""))
                self.table.setItem(fi if by_layer else li, li if by_layer else fi, item)
        self._fit_titles()
        first = rows[0] if rows else None
        if first is not None:
            b = first["box"]
            where = f"slice {first['slice']}, " if first["slice"] is not None else ""
            skipped = f" Not measured (other size): {', '.join(self._skipped)}." if self._skipped else ""
            self.info.setText(
                f"ROI ({'lesion box' if roi['source'] == 'box' else 'square around the click'}): {where}"
                f"x {b[0]:.0f}–{b[2]:.0f}, y {b[1]:.0f}–{b[3]:.0f} px in '{first['layer']}' "
                f"({b[2] - b[0]:.0f}×{b[3] - b[1]:.0f} px). Features in HU, bin width {self.bin_spin.value()} HU."
                + skipped
            )

    def _fit_titles(self, *_: Any) -> None:
        """Fit the layer column titles to their columns' widths (two lines, elided; runs on resizes)."""
        if self._fitting or self.layers_as_rows.isChecked():
            return
        self._fitting = True
        try:
            header = self.table.horizontalHeader()
            for j in range(self.table.columnCount()):
                item = self.table.horizontalHeaderItem(j)
                short = item.data(Qt.ItemDataRole.UserRole) if item is not None else None
                if short:
                    width = max(24, min(MAX_TITLE_PX, header.sectionSize(j) - 16))  # the header's padding
                    text = self._title(str(short), width, lines=2, fm=header.fontMetrics())
                    if item.text() != text:
                        item.setText(text)
        finally:
            self._fitting = False

    def table_value(self, feature: str, layer_name: str) -> float | None:
        """The raw number behind a table cell (feature key, e.g. ``"correlation"``; layer name), in the
        current cell mode and orientation."""
        keys = self._columns()
        li = [r["layer"] for r in self.rows].index(layer_name)
        fi = keys.index(feature)
        by_layer = not self.layers_as_rows.isChecked()
        item = self.table.item(fi if by_layer else li, li if by_layer else fi)
        return item.data(Qt.ItemDataRole.UserRole)

    def table_text(self, sep: str = "\t") -> str:
        """The measurements as delimited text (header + one line per layer): layer, slice, box, features,
        absolute differences to the reference, error."""
        keys = self._columns()
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=sep, lineterminator="\n")
        w.writerow(
            ["layer", "reference", "slice", "x0", "y0", "x1", "y1", *keys, *[f"absdiff_{k}" for k in keys], "error"]
        )
        ref_name = self.ref_combo.currentText()
        for r in self.rows:
            w.writerow(
                [
                    r["layer"],
                    ref_name if ref_name != NONE else "",
                    "" if r["slice"] is None else r["slice"],
                    *[f"{v:g}" for v in r["box"]],
                    *[repr(float(r["features"][k])) if k in r["features"] else "" for k in keys],
                    *[repr(float(r["diff"][k])) if k in r.get("diff", {}) else "" for k in keys],
                    r.get("error", ""),
                ]
            )
        return buf.getvalue()

    def copy_to_clipboard(self) -> str:
        """Copy the measurements (tab-separated, pastes into a spreadsheet) to the clipboard; returns the text."""
        text = self.table_text("\t")
        QApplication.clipboard().setText(text)
        return text

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Write the measurements as CSV atomically (temporary file + rename); returns the path.

        Raises
        ------
        LidnetError
            Nothing measured yet.
        """
        if not self.rows:
            raise LidnetError("Nothing to export yet: click inside a lesion box first.")
        return atomic_write_text(path, self.table_text(","))

    def _on_export_clicked(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Export radiomics CSV", "radiomics.csv", "CSV (*.csv)")
        if not path:
            return
        try:
            self.export_csv(path)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            notify_error(exc)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Remove the viewer click callback when the widget closes."""
        self.disconnect_viewer()
        super().closeEvent(event)

    def disconnect_viewer(self) -> None:
        """Remove the click callback from the viewer (idempotent)."""
        try:
            self.viewer.mouse_drag_callbacks.remove(self._on_mouse)
        except ValueError:
            pass
