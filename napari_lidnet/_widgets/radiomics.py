"""ROI radiomics widget: click a lesion box (or any point) -> pyradiomics features of every image layer.

All numbers come from :func:`src_training.evaluation.glcm_features` (pyradiomics, computed in HU on the
current slice, pixel spacing from the layer scale): GLCM correlation, homogeneity (``Idm``), energy
(``JointEnergy``), plus the pyradiomics classes the user ticks (firstorder, glrlm, glszm, gldm, ngtdm).
Each layer's row also shows the absolute difference to a reference layer (normally the NDCT), the ROI
radiomics metric of the LIDnet paper (Table 3).

pyradiomics (:mod:`.radiomics_features`) runs in a napari thread worker
(:class:`~napari_lidnet._widgets._tasks.TaskRunner`, with a progress bar over the layers and Cancel); the
ROI and the slices are read from the viewer in the GUI thread.
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
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
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
from .._layers import layer_slice, slice_index
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
from .radiomics_features import EXTRA_CLASSES, GLCM_COLUMNS, radiomics_rows_work, short_name

if TYPE_CHECKING:
    import napari

#: Name of the shapes layer showing the measured ROI.
ROI_LAYER_NAME = RADIOMICS_ROI_NAME


class RadiomicsWidget(QWidget):
    """Dock widget measuring pyradiomics features in an ROI of every image layer on the current slice.

    Click inside a rectangle of the chosen boxes layer (the box is the ROI) or anywhere else (a square of
    "ROI size" pixels centred on the click is the ROI). A click that drags (panning) does nothing.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    rows : list[dict]
        After a measurement: one dict per image layer with ``layer``, ``slice``, ``box`` (x0, y0, x1, y1 in
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
        layout.addWidget(self.table, stretch=1)
        layout.addLayout(btns)

        self.copy_btn.clicked.connect(self.copy_to_clipboard)
        self.csv_btn.clicked.connect(self._on_export_clicked)
        self._follower = LayerFollower(self.viewer, self.refresh_choices)
        self.viewer.mouse_drag_callbacks.append(self._on_mouse)
        self.refresh_choices()

    # ------------------------------------------------------------------ choices
    def refresh_choices(self, event=None) -> None:
        """Refill the boxes and reference choosers (keeps current choices; guesses "box"/"lesion" and "NDCT";
        detections, RPN proposals and the ROI layer itself are not offered as boxes)."""
        snames = [ly.name for ly in box_layers(self.viewer)]
        inames = [ly.name for ly in image_layers(self.viewer, include_derived=False)]
        refill_combo(self.boxes_combo, snames, guess_name(snames, ("box", "lesion")))
        refill_combo(self.ref_combo, inames, guess_name(inames, ("ndct", "normal")))

    def _layer(self, name: str):
        return layer_by_name(self.viewer, name)

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
        images = image_layers(self.viewer, include_derived=False)
        if not images:
            raise LidnetError("Open an image layer first: there is nothing to measure.")
        grid_layer = self._layer(self.ref_combo.currentText()) or images[0]
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
            for ly in image_layers(self.viewer, include_derived=False):
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
        if ROI_LAYER_NAME in self.viewer.layers:
            lay = self.viewer.layers[ROI_LAYER_NAME]
            lay.data = [rect]
        else:
            active = self.viewer.layers.selection.active
            lay = self.viewer.add_shapes(
                [rect],
                shape_type="rectangle",
                name=ROI_LAYER_NAME,
                edge_color="yellow",
                face_color="transparent",
                edge_width=1.5,
                scale=grid_layer.scale[-rect.shape[1]:],
                translate=grid_layer.translate[-rect.shape[1]:],
            )
            if active is not None:  # keep the user's selection (adding a layer selects it)
                self.viewer.layers.selection.active = active

    # ------------------------------------------------------------------ table / export
    def _columns(self) -> list[str]:
        keys: list[str] = []
        for r in self.rows:
            for k in r.get("features", {}):
                if k not in keys:
                    keys.append(k)
        return keys

    def _fill_table(self, rows, ref_name, roi) -> None:
        keys = self._columns()
        headers = []
        for k in keys:
            headers.append(short_name(k))
            if ref_name:
                headers.append("|Δ|")
        headers.append("note")
        self.table.clear()
        self.table.setRowCount(len(rows))
        self.table.setColumnCount(len(headers))
        self.table.setHorizontalHeaderLabels(headers)
        tips = []
        for k in keys:
            tips.append(f"{k}: pyradiomics original_glcm_{'Correlation' if k == 'correlation' else 'Idm' if k == 'homogeneity' else 'JointEnergy'}" if k in GLCM_COLUMNS else k)
            if ref_name:
                tips.append(f"|{short_name(k)} − {short_name(k)} of {ref_name}|")
        for j, tip in enumerate(tips):
            self.table.horizontalHeaderItem(j).setToolTip(tip)
        self.table.setVerticalHeaderLabels([r["layer"] + (" (ref)" if r["layer"] == ref_name else "") for r in rows])
        for i, r in enumerate(rows):
            j = 0
            for k in keys:
                vals = [r["features"].get(k)]
                if ref_name:
                    vals.append(r["diff"].get(k))
                for v in vals:
                    item = QTableWidgetItem("–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}")
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                    item.setData(Qt.ItemDataRole.UserRole, v)
                    self.table.setItem(i, j, item)
                    j += 1
            self.table.setItem(i, j, QTableWidgetItem(r.get("error", "")))
        self.table.resizeColumnsToContents()
        first = rows[0] if rows else None
        if first is not None:
            b = first["box"]
            where = f"slice {first['slice']}, " if first["slice"] is not None else ""
            self.info.setText(
                f"ROI ({'lesion box' if roi['source'] == 'box' else 'square around the click'}): {where}"
                f"x {b[0]:.0f}–{b[2]:.0f}, y {b[1]:.0f}–{b[3]:.0f} px in '{first['layer']}' "
                f"({b[2] - b[0]:.0f}×{b[3] - b[1]:.0f} px). Features in HU, bin width {self.bin_spin.value()} HU."
            )

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
