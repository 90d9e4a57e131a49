"""Compare widget: LDCT vs baseline vs LIDnet (vs NDCT) side by side, difference maps and a metrics table.

Every number in the table comes from :func:`src_training.evaluation.image_metrics` (PSNR / SSIM / RMSE on
the networks' [0, 1] scale: HU clipped to the model range, default (-1024, 1024) HU, and scaled with
:func:`src_training.windowing.hu_to_unit`) and :func:`src_training.evaluation.detection_ap`.
The numbers are computed by :mod:`.compare_metrics` (in a worker thread when the button is pressed).
The side-by-side view is napari's grid mode, in which all grid cells share one camera and one slice
position, so zoom / pan / scrolling stay linked.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from src_training.errors import LidnetError
from src_training.windowing import DEFAULT_HU_RANGE

from .._boxes import boxes_on_slice
from .._layers import slice_index
from .._messages import notify_error
from ._layer_choice import (
    DIFFERENCE_ROLE,
    NONE,
    LayerFollower,
    box_layers,
    guess_name,
    image_layers,
    is_detection_layer,
    layer_by_name,
    refill_combo,
    shapes_layers,
)
from ._tasks import TaskRunner, run_controls
from .compare_metrics import METRIC_ROWS, compute_metric_rows, format_value, metric_rows_work

if TYPE_CHECKING:
    import napari

#: Roles of the compare widget, in display order (role key, label).
ROLES: tuple[tuple[str, str], ...] = (
    ("ldct", "LDCT"),
    ("baseline", "Baseline output"),
    ("lidnet", "LIDnet output"),
    ("ndct", "NDCT (reference)"),
)


# ----------------------------------------------------------------------------------------------- helpers
def _guess(names: list[str], role: str) -> str | None:
    low = [(n, n.lower()) for n in names]
    rules = {
        "ldct": lambda s: ("ldct" in s or "low dose" in s or "low-dose" in s) and "lidnet" not in s
        and "baseline" not in s and "denois" not in s and "−" not in s,
        "baseline": lambda s: ("baseline" in s or "redcnn" in s or "cpce" in s) and "lidnet" not in s and "−" not in s,
        "lidnet": lambda s: "lidnet" in s and "−" not in s,
        "ndct": lambda s: ("ndct" in s or "normal dose" in s) and "−" not in s,
    }
    for n, s in low:
        if rules[role](s):
            return n
    return None


# ----------------------------------------------------------------------------------------------- widget
class CompareWidget(QWidget):
    """Dock widget comparing LDCT, baseline and LIDnet outputs against the NDCT reference.

    Parameters
    ----------
    napari_viewer : napari.Viewer
        The viewer whose image / shapes layers are compared.

    Attributes
    ----------
    results : dict[str, dict[str, float]]
        After :meth:`compute_metrics`: layer name -> the :func:`image_metrics` dict (plus ``n_detections``,
        ``ap50`` when a detections layer is found). With "all slices" these are means over slices.
    table : QTableWidget
        Rows = metrics, columns = compared layers.
    runner : TaskRunner
        Runs "Compute metrics" (:func:`metric_rows_work`) in a worker thread; :meth:`compute_metrics` is
        the synchronous form for scripts.
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.results: dict[str, dict[str, float]] = {}
        self._saved_visibility: dict[str, bool] | None = None

        self.combos: dict[str, QComboBox] = {}
        form = QFormLayout()
        for key, label in ROLES:
            cb = QComboBox()
            cb.setToolTip(f"Image layer (HU) used as {label}.")
            self.combos[key] = cb
            form.addRow(label, cb)
        self.boxes_combo = QComboBox()
        self.boxes_combo.setToolTip("Shapes layer with the ground-truth lesion boxes (rectangles).")
        form.addRow("Lesion boxes", self.boxes_combo)

        self.diff_check = QCheckBox("Difference maps vs NDCT")
        self.diff_check.setChecked(True)
        self.diff_range = QDoubleSpinBox()
        self.diff_range.setRange(1.0, 4000.0)
        self.diff_range.setValue(200.0)
        self.diff_range.setSuffix(" HU")
        self.diff_range.setToolTip("Difference maps are shown from -range (blue) to +range (red), in HU.")
        diff_row = QHBoxLayout()
        diff_row.addWidget(self.diff_check)
        diff_row.addWidget(QLabel("±"))
        diff_row.addWidget(self.diff_range)
        self.all_slices_check = QCheckBox("All slices (mean over slices)")

        self.side_btn = QPushButton("Side by side")
        self.side_btn.setCheckable(True)
        self.side_btn.setToolTip("napari grid mode: one cell per image, camera and slice linked.")
        # Compute metrics runs in a worker thread through the plugin's TaskRunner (progress bar, Cancel)
        self.compute_btn, self.cancel_btn, self.progress, self.status = run_controls("Compute metrics")
        self.runner = TaskRunner("Compare", self.compute_btn, self.cancel_btn, self.progress, self.status)
        btn_row = QHBoxLayout()
        btn_row.addWidget(self.side_btn)
        btn_row.addWidget(self.compute_btn.native)
        btn_row.addWidget(self.cancel_btn.native)

        lo, hi = DEFAULT_HU_RANGE
        self.header = QLabel(
            f"PSNR / SSIM / RMSE vs NDCT on the [0, 1] scale of the model HU range ({lo:g}, {hi:g}) "
            "(HU clipped, then scaled); RMSE also in HU. Best value per row in bold."
        )
        self.header.setWordWrap(True)
        self.scope_label = QLabel("")
        self.scope_label.setWordWrap(True)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setMinimumHeight(260)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(diff_row)
        layout.addWidget(self.all_slices_check)
        layout.addLayout(btn_row)
        layout.addWidget(self.progress.native)
        layout.addWidget(self.status.native)
        layout.addWidget(self.header)
        layout.addWidget(self.scope_label)
        layout.addWidget(self.table, stretch=1)

        self.side_btn.toggled.connect(self._on_side_toggled)
        self.compute_btn.changed.connect(self._on_compute_clicked)
        self._follower = LayerFollower(self.viewer, self.refresh_choices)
        self.refresh_choices()

    # ------------------------------------------------------------------ choices
    def refresh_choices(self, event=None) -> None:
        """Refill the layer choosers (keeps the current choices when the layers still exist; guesses the
        roles from layer names - LDCT, baseline/REDCNN/CPCE, LIDnet, NDCT - for empty choices; detections,
        RPN proposals and the radiomics ROI are not offered as lesion boxes)."""
        names = [ly.name for ly in image_layers(self.viewer, include_derived=False)]
        for key, cb in self.combos.items():
            refill_combo(cb, names, _guess(names, key))
        snames = [ly.name for ly in box_layers(self.viewer)]
        refill_combo(self.boxes_combo, snames, guess_name(snames, ("box", "lesion")))

    def set_layers(self, ldct=None, baseline=None, lidnet=None, ndct=None, boxes=None) -> None:
        """Choose the compared layers programmatically (layer objects or names; None = "(none)")."""
        for key, val in (("ldct", ldct), ("baseline", baseline), ("lidnet", lidnet), ("ndct", ndct)):
            name = getattr(val, "name", val)
            self.combos[key].setCurrentText(name if name else NONE)
        name = getattr(boxes, "name", boxes)
        self.boxes_combo.setCurrentText(name if name else NONE)

    def chosen(self) -> dict[str, Any]:
        """The chosen layers: role -> napari layer or None (roles ldct, baseline, lidnet, ndct, boxes)."""
        out = {key: layer_by_name(self.viewer, cb.currentText()) for key, cb in self.combos.items()}
        out["boxes"] = layer_by_name(self.viewer, self.boxes_combo.currentText())
        return out

    def detection_layer_for(self, image_layer):
        """The detections shapes layer produced from ``image_layer`` (metadata ``source_layer`` / ``image``
        naming it, or a name starting with the image's name and containing "detect"), or None."""
        for ly in shapes_layers(self.viewer):
            if not is_detection_layer(ly):
                continue
            md = ly.metadata or {}
            src = md.get("source") or md.get("derived_from") or md.get("source_layer") or md.get("image")
            if src == image_layer.name:
                return ly
        for ly in shapes_layers(self.viewer):
            if is_detection_layer(ly) and (
                ly.name.startswith(image_layer.name) or ly.name.endswith(f"({image_layer.name})")
            ):
                return ly
        return None

    # ------------------------------------------------------------------ views
    def compared_images(self) -> list:
        """The chosen image layers in display order LDCT, baseline, LIDnet, NDCT (missing ones skipped)."""
        ch = self.chosen()
        return [ch[k] for k, _ in ROLES if ch[k] is not None]

    def make_difference_maps(self) -> list:
        """Create (or update) one difference layer ``<name> − NDCT`` (HU) per compared non-NDCT layer.

        Layers use a diverging colormap (coolwarm) with contrast limits ``±range`` HU, the source layer's
        scale and translate, and ``metadata["lidnet_role"] = "lidnet_difference"``.

        Returns
        -------
        list of napari Image layers (empty when no NDCT layer is chosen).
        """
        ch = self.chosen()
        ref = ch["ndct"]
        if ref is None:
            notify_error("Choose an NDCT (reference) layer to compute difference maps.")
            return []
        rng = float(self.diff_range.value())
        out = []
        ref_data = np.asarray(ref.data, dtype=np.float32)
        for key in ("ldct", "baseline", "lidnet"):
            ly = ch[key]
            if ly is None:
                continue
            data = np.asarray(ly.data, dtype=np.float32)
            if data.shape != ref_data.shape:
                notify_error(
                    f"Layer '{ly.name}' has shape {data.shape} but the NDCT layer '{ref.name}' has "
                    f"{ref_data.shape}: no difference map (resample one to the other first)."
                )
                continue
            diff = data - ref_data
            name = f"{ly.name} − NDCT"
            if name in self.viewer.layers:
                dl = self.viewer.layers[name]
                dl.data = diff
                dl.contrast_limits = (-rng, rng)
            else:
                dl = self.viewer.add_image(
                    diff,
                    name=name,
                    colormap="coolwarm",
                    contrast_limits=(-rng, rng),
                    scale=ly.scale,
                    translate=ly.translate,
                    metadata={"lidnet_role": DIFFERENCE_ROLE, "source_layer": ly.name, "reference": ref.name},
                )
            out.append(dl)
        return out

    def show_side_by_side(self, enabled: bool = True) -> None:
        """Turn napari's grid mode on (chosen images in a row: LDCT, baseline, LIDnet, NDCT; the difference
        maps in a second row when enabled) or off (the previous layer visibility is restored).

        In grid mode napari shows every cell with the same camera and slice, so zoom, pan and slice
        scrolling stay linked. Other layers are hidden while the grid is on.
        """
        grid = self.viewer.canvas.grid if hasattr(self.viewer, "canvas") else self.viewer.grid
        if not enabled:
            grid.enabled = False
            if self._saved_visibility is not None:
                for ly in self.viewer.layers:
                    if ly.name in self._saved_visibility:
                        ly.visible = self._saved_visibility[ly.name]
                    elif ly.metadata.get("lidnet_role") == DIFFERENCE_ROLE:
                        ly.visible = False
            self._saved_visibility = None
            return
        images = self.compared_images()
        if not images:
            notify_error("Choose at least one image layer to compare.")
            return
        if self._saved_visibility is None:
            self._saved_visibility = {
                ly.name: ly.visible for ly in self.viewer.layers if ly.metadata.get("lidnet_role") != DIFFERENCE_ROLE
            }
        diffs = self.make_difference_maps() if self.diff_check.isChecked() and self.chosen()["ndct"] else []
        wanted = images + diffs
        # grid cells follow layer-list order (index 0 = top-left): move the compared layers to the front
        # compare by name: napari hands plugin widgets proxies of the viewer/layers (identity is not stable)
        for i, ly in enumerate(wanted):
            cur = [x.name for x in self.viewer.layers].index(ly.name)
            if cur != i:
                self.viewer.layers.move(cur, i)
        keep = {ly.name for ly in wanted}
        for ly in self.viewer.layers:
            ly.visible = ly.name in keep
        self._show_slice_of(images[-1])
        n_cols = len(images)
        n_rows = 2 if diffs else 1
        grid.stride = 1
        grid.shape = (n_rows, n_cols)
        if hasattr(grid, "spacing"):
            grid.spacing = 4
        grid.enabled = True
        self.viewer.reset_view()

    def _show_slice_of(self, layer) -> None:
        """Move the viewer to a slice of ``layer`` if the current slice lies outside it (e.g. outputs computed
        on a few slices only): otherwise the grid cells would stay empty."""
        if layer.ndim < 3 or self.viewer.dims.ndim < 3:
            return
        axis = self.viewer.dims.ndim - 3
        z = float(self.viewer.dims.point[axis])
        n = layer.data.shape[-3]
        corners = [np.asarray(layer.data_to_world(np.r_[k, np.zeros(layer.ndim - 1)]), dtype=float)[-3] for k in (0, n - 1)]
        lo, hi = min(corners), max(corners)
        tol = 0.5 * abs(float(layer.scale[-3]))
        if not (lo - tol <= z <= hi + tol):
            k = int(np.clip(np.round(layer.world_to_data(self.viewer.dims.point)[-3]), 0, n - 1))
            zk = np.asarray(layer.data_to_world(np.r_[k, np.zeros(layer.ndim - 1)]), dtype=float)[-3]
            self.viewer.dims.set_point(axis, float(zk))

    def _on_side_toggled(self, checked: bool) -> None:
        try:
            self.show_side_by_side(checked)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            notify_error(exc)
        self.side_btn.setText("Exit side by side" if checked else "Side by side")

    # ------------------------------------------------------------------ metrics
    def _slices(self, ref) -> list[int | None]:
        if ref.ndim < 3:
            return [None]
        if self.all_slices_check.isChecked():
            return list(range(ref.data.shape[-3]))
        return [slice_index(self.viewer, ref)]

    def compute_metrics(self) -> dict[str, dict[str, float]]:
        """Compute the table for the chosen layers on the current slice (or all slices).

        For every compared layer (LDCT, baseline, LIDnet): :func:`src_training.evaluation.image_metrics` of
        ``hu_to_unit(layer slice)`` against ``hu_to_unit(NDCT slice)`` with the lesion boxes of that slice
        (from the chosen shapes layer, in the layer's pixels), plus, when a detections shapes layer of that
        image exists, the number of detections and :func:`src_training.evaluation.detection_ap` AP-50 against
        the lesion boxes. With "all slices", each value is the mean over slices (ROI values over the slices
        that have boxes; counts are summed; AP over all slices at once).

        Returns
        -------
        dict
            layer name -> metrics dict (also stored in :attr:`results` and shown in :attr:`table`).

        Raises
        ------
        LidnetError
            No NDCT layer, shape mismatch (from image_metrics).
        """
        payload = self._gather()
        results = compute_metric_rows(payload)
        self._show_results(results, payload)
        return results

    def _gather(self) -> dict[str, Any]:
        """Collect (GUI thread) what :func:`compute_metric_rows` needs: arrays, slices, boxes per slice.

        Raises
        ------
        LidnetError
            No NDCT layer, nothing to compare, or a compared layer's shape differs from the NDCT's.
        """
        ch = self.chosen()
        ref = ch["ndct"]
        if ref is None:
            raise LidnetError("Choose an NDCT (reference) layer: metrics are computed against it.")
        layers = [ch[k] for k in ("ldct", "baseline", "lidnet") if ch[k] is not None]
        if not layers:
            raise LidnetError("Choose at least one of LDCT / baseline / LIDnet output to compare with NDCT.")
        boxes_layer = ch["boxes"]
        zs = self._slices(ref)
        items = []
        for ly in layers:
            if tuple(ly.data.shape) != tuple(ref.data.shape):
                raise LidnetError(
                    f"Layer '{ly.name}' has shape {tuple(ly.data.shape)} but NDCT '{ref.name}' has "
                    f"{tuple(ref.data.shape)}; they must match pixel for pixel."
                )
            det_layer = self.detection_layer_for(ly)
            dets = [boxes_on_slice(det_layer, ly, z) for z in zs] if det_layer is not None else None
            items.append({"name": ly.name, "layer": ly, "dets": dets})
        boxes = [
            boxes_on_slice(boxes_layer, ref, z)[0] if boxes_layer is not None else np.zeros((0, 4), np.float32)
            for z in zs
        ]
        return {"ref": ref, "zs": zs, "items": items, "boxes": boxes, "has_boxes": boxes_layer is not None}

    def _show_results(self, results: dict[str, dict[str, float]], payload: dict[str, Any]) -> None:
        self.results = results
        self._fill_table(results, payload["ref"], payload["zs"])

    def _fill_table(self, results: dict[str, dict[str, float]], ref, zs) -> None:
        names = list(results)
        rows = [r for r in METRIC_ROWS if any(r[0] in results[n] for n in names)]
        self.table.clear()
        self.table.setColumnCount(len(names))
        self.table.setRowCount(len(rows))
        self.table.setHorizontalHeaderLabels(names)
        self.table.setVerticalHeaderLabels([r[1] for r in rows])
        bold = QFont()
        bold.setBold(True)
        for i, (key, _label, fmt, higher) in enumerate(rows):
            vals = [results[n].get(key, float("nan")) for n in names]
            finite = [v for v in vals if v is not None and not math.isnan(v)]
            best = None
            if higher is not None and len(finite) > 1:
                best = max(finite) if higher else min(finite)
            for j, v in enumerate(vals):
                item = QTableWidgetItem(format_value(v, fmt))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                item.setData(Qt.ItemDataRole.UserRole, None if v is None else float(v))
                if best is not None and v == best:
                    item.setFont(bold)
                self.table.setItem(i, j, item)
        if zs == [None]:
            scope = "2D image"
        elif len(zs) == 1:
            scope = f"slice {zs[0]} (of {ref.data.shape[-3]})"
        else:
            scope = f"mean over all {len(zs)} slices (ROI rows: slices with boxes; counts summed)"
        self.scope_label.setText(f"Reference: {ref.name} — {scope}")

    def table_value(self, metric: str, layer_name: str) -> float:
        """The raw (unrounded) number behind a table cell."""
        names = [self.table.horizontalHeaderItem(j).text() for j in range(self.table.columnCount())]
        labels = {r[0]: r[1] for r in METRIC_ROWS}
        rows = [self.table.verticalHeaderItem(i).text() for i in range(self.table.rowCount())]
        item = self.table.item(rows.index(labels[metric]), names.index(layer_name))
        return float(item.data(Qt.ItemDataRole.UserRole))

    def _on_compute_clicked(self, *_: Any) -> Any:
        """Compute the table in a thread worker (synchronous with ``LIDNET_SYNC=1``); the viewer stays usable.
        The chosen layers, slices and boxes are read here, in the GUI thread. Returns the worker (None when
        synchronous, busy, or the choice is incomplete: then a notification says what is missing)."""
        state: dict[str, Any] = {}

        def work():
            state["payload"] = payload = self._gather()  # GUI thread (TaskRunner.start calls work() here)
            self.scope_label.setText(f"computing {len(payload['zs'])} slice(s)…")
            return metric_rows_work(payload)

        return self.runner.start(work, lambda res: self._show_results(res, state["payload"]), desc="Compare")
