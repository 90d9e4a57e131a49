"""Compare widget: LDCT vs baseline vs LIDnet (vs NDCT) side by side, difference maps and a metrics table.

Every number in the table comes from :func:`src_training.evaluation.image_metrics` (PSNR / SSIM / RMSE on
the networks' [0, 1] scale: HU clipped to the model range, default (-1024, 1024) HU, and scaled with
:func:`src_training.windowing.hu_to_unit`) and :func:`src_training.evaluation.detection_ap`.
The numbers are computed by :mod:`.compare_metrics` (in a worker thread when the button is pressed).

Only layers covering the same pixels as the LDCT (same slices, rows, columns and pixel spacing) are offered
as baseline / LIDnet / NDCT, so an output computed on one slice is never compared with a volume.
"Denoise the LDCT with two models" runs two denoiser checkpoints (the shipped baseline and LIDnet CPCE by
default) on the LDCT in the background and chooses their outputs.

Side by side (:class:`SideBySide`) is napari's grid mode, in which all cells share one camera and one slice
position, so zoom / pan / scrolling stay linked. Each cell is one image with its own outline layer (a
Vectors layer drawn in the same cell, grid stride 2): the reference lesion boxes, that image's detections
and the radiomics ROI are outlined in every cell, and each cell is titled with the image's name (napari's
per-layer name overlay). Shapes layers are hidden while the grid is on, so no boxes / ROI layer takes a cell
of its own; leaving side by side restores the camera, layer order, visibility and name overlays.
"""

from __future__ import annotations

import math
from pathlib import Path
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
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from src_training.errors import CheckpointError, LidnetError
from src_training.shipped import shipped_models
from src_training.windowing import DEFAULT_HU_RANGE

from .._boxes import boxes_on_slice
from .._layers import derived_image_kwargs, layer_geometry, layer_volume, slice_index
from .._messages import notify_error
from ._checkpoints import CheckpointChooser
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
from .compare_metrics import (
    METRIC_ROWS,
    METRIC_TIPS,
    SideBySide,
    compute_metric_rows,
    describe_grid,
    format_value,
    guess_role,
    layers_match,
    metric_rows_work,
    mismatch_message,
    n_slices,
    output_layer_name,
)
from .denoise import InferenceMessages, denoise_work

if TYPE_CHECKING:
    import napari

#: Roles of the compare widget, in display order (role key, label).
ROLES: tuple[tuple[str, str], ...] = (
    ("ldct", "LDCT"),
    ("baseline", "Baseline output"),
    ("lidnet", "LIDnet output"),
    ("ndct", "NDCT (reference)"),
)
#: Short column titles of the table (the full layer name is the column's tooltip).
COLUMN_TITLES = {"ldct": "LDCT", "baseline": "Baseline", "lidnet": "LIDnet"}

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
        Rows = metrics (short labels, tooltips say what each one is), columns = LDCT / Baseline / LIDnet
        (tooltip: the layer's full name).
    runner : TaskRunner
        Runs "Compute metrics" (:func:`metric_rows_work`) in a worker thread; :meth:`compute_metrics` is
        the synchronous form for scripts.
    denoise_runner : TaskRunner
        Runs "Denoise LDCT with both" (:func:`~napari_lidnet._widgets.denoise.denoise_work` twice).
    side : SideBySide
        The side-by-side grid.
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.results: dict[str, dict[str, float]] = {}
        self._table_layers: list[str] = []
        self.side = SideBySide(napari_viewer, self.detection_layer_for)

        self.combos: dict[str, QComboBox] = {}
        form = QFormLayout()
        for key, label in ROLES:
            cb = QComboBox()
            cb.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            cb.setMinimumContentsLength(12)
            cb.setToolTip(
                f"Image layer (HU) used as {label}." + ("" if key == "ldct" else
                " Only images covering the same pixels as the LDCT (slices, size, pixel spacing) are offered.")
            )
            self.combos[key] = cb
            form.addRow(label, cb)
        self.boxes_combo = QComboBox()
        self.boxes_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.boxes_combo.setMinimumContentsLength(12)
        self.boxes_combo.setToolTip("Shapes layer with the ground-truth lesion boxes (rectangles).")
        form.addRow("Lesion boxes", self.boxes_combo)
        self.match_note = QLabel("")
        self.match_note.setWordWrap(True)
        self.match_note.setVisible(False)

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
        self.side_btn.setToolTip(
            "One cell per image, titled, with the lesion boxes in every cell; zoom and slice are linked. "
            "Press again to go back to the previous view."
        )
        # Compute metrics runs in a worker thread through the plugin's TaskRunner (progress bar, Cancel)
        self.compute_btn, self.cancel_btn, self.progress, self.status = run_controls("Compute metrics")
        self.runner = TaskRunner("Compare", self.compute_btn, self.cancel_btn, self.progress, self.status)
        btn_row = QHBoxLayout()
        btn_row.addWidget(self.side_btn)
        btn_row.addWidget(self.compute_btn.native)
        btn_row.addWidget(self.cancel_btn.native)

        models = self._models_section()

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
        self.table.setWordWrap(True)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.horizontalHeader().setMinimumSectionSize(40)
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.table.setMinimumHeight(260)

        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.match_note)
        layout.addWidget(models)
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
        self.combos["ldct"].currentTextChanged.connect(self.refresh_choices)
        self.combos["ndct"].currentTextChanged.connect(self.refresh_choices)
        self._follower = LayerFollower(self.viewer, self.refresh_choices)
        self.refresh_choices()

    # ------------------------------------------------------------------ two models
    def _models_section(self) -> QWidget:
        """The collapsible "Denoise the LDCT with two models" row (two checkpoint choosers + a button)."""
        box = QWidget()
        outer = QVBoxLayout(box)
        outer.setContentsMargins(0, 0, 0, 0)
        self.models_toggle = QToolButton()
        self.models_toggle.setText("Denoise the LDCT with two models")
        self.models_toggle.setCheckable(True)
        self.models_toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.models_toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.models_toggle.setToolTip(
            "Denoise the chosen LDCT with a baseline and a LIDnet model (the shipped CPCE models by default) "
            "in the background; their outputs become the Baseline and LIDnet choices."
        )
        self.models_panel = QWidget()
        panel = QVBoxLayout(self.models_panel)
        panel.setContentsMargins(8, 0, 0, 0)
        self.model_choosers = {
            "baseline": CheckpointChooser("denoiser", label="model"),
            "lidnet": CheckpointChooser("denoiser", label="model"),
        }
        self._preselect_shipped()
        for role, chooser in self.model_choosers.items():
            panel.addWidget(QLabel("LIDnet model (LIDnet output)" if role == "lidnet" else
                                   "Baseline model (Baseline output)"))
            panel.addWidget(chooser.native)
        (self.denoise_btn, self.denoise_cancel, self.denoise_progress,
         self.denoise_status) = run_controls("Denoise LDCT with both")
        self.denoise_runner = TaskRunner("Denoise with two models", self.denoise_btn, self.denoise_cancel,
                                         self.denoise_progress, self.denoise_status)
        row = QHBoxLayout()
        row.addWidget(self.denoise_btn.native)
        row.addWidget(self.denoise_cancel.native)
        panel.addLayout(row)
        panel.addWidget(self.denoise_progress.native)
        panel.addWidget(self.denoise_status.native)
        self.models_panel.setVisible(False)
        outer.addWidget(self.models_toggle)
        outer.addWidget(self.models_panel)
        self.models_toggle.toggled.connect(self._on_models_toggled)
        self.denoise_btn.changed.connect(self.denoise_with_models)
        return box

    def _on_models_toggled(self, shown: bool) -> None:
        self.models_panel.setVisible(shown)
        self.models_toggle.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def _preselect_shipped(self) -> None:
        """Choose the shipped baseline / LIDnet denoisers in the two choosers when they are listed."""
        try:
            shipped = shipped_models("denoiser")
        except Exception:  # noqa: BLE001 - no catalogue: the choosers' own defaults
            return
        for role, chooser in self.model_choosers.items():
            model = next((m for m in shipped if str(m.method).lower() == role), None)
            try:
                listed = [Path(c) for c in chooser.combo.choices if c is not None]
                if model is not None and model.path in [p.resolve() for p in listed]:
                    chooser.combo.value = next(c for c in chooser.combo.choices if c is not None
                                               and Path(c).resolve() == model.path)
            except Exception:  # noqa: BLE001 - the chooser keeps its default
                pass

    def denoise_with_models(self, *_: Any) -> Any:
        """Denoise the chosen LDCT layer (whole volume) with the baseline and the LIDnet checkpoint, one
        after the other in a worker thread (:func:`~napari_lidnet._widgets.denoise.denoise_work`, automatic
        device), then add (or update) one layer per model, named after the checkpoint, e.g.
        ``"CPCE LIDnet (shipped) denoised"``, and choose them as Baseline / LIDnet output.

        Returns the worker (None when synchronous with ``LIDNET_SYNC=1``, busy, or when a choice is
        missing: then a notification says what to choose)."""
        ldct = self.chosen()["ldct"]
        ckpts = {role: ch.value for role, ch in self.model_choosers.items()}
        runner = self.denoise_runner
        messages = InferenceMessages("Compare", self.denoise_status)

        def work():
            if ldct is None:
                raise LidnetError("Choose the LDCT layer to denoise first.")
            missing = [r for r, p in ckpts.items() if p is None]
            if missing:
                raise CheckpointError(
                    "Choose a " + " and a ".join("LIDnet" if r == "lidnet" else r for r in missing)
                    + " denoiser model first."
                )
            data = ldct.data
            return _denoise_both(data, ldct.name, ckpts, runner, messages)

        def add(outputs: list[tuple[str, Path, np.ndarray, dict]]) -> None:
            names = {}
            for role, ckpt, out, config in outputs:
                method = config.get("method")
                name = output_layer_name(ckpt, config)
                if ldct.ndim == 2:
                    out = out[0]
                existing = layer_by_name(self.viewer, name)
                if existing is not None and (existing.metadata or {}).get("denoised_from") == ldct.name:
                    existing.data = out
                else:
                    kwargs = derived_image_kwargs(
                        ldct, name=name, hu_range=tuple(config["hu_range"]),
                        extra_metadata={"model": config.get("denoiser"), "method": method, "checkpoint": str(ckpt),
                                        "step": config.get("step"), "denoised_from": ldct.name},
                    )
                    name = self.viewer.add_image(out, **kwargs).name
                names[role] = name
            self.refresh_choices()
            for role, name in names.items():
                self.combos[role].setCurrentText(name)
            self.denoise_status.value = "added " + " and ".join(f"'{n}'" for n in names.values())

        return runner.start(work, add, desc="Denoise with two models")

    # ------------------------------------------------------------------ choices
    def refresh_choices(self, event=None) -> None:
        """Refill the layer choosers (keeping the current choices when still offered).

        The LDCT chooser offers every image layer (difference maps excepted); Baseline, LIDnet and NDCT
        offer only the layers covering the same pixels as the chosen LDCT (:func:`layers_match`; without an
        LDCT the NDCT is the one they must match). Empty choices are guessed from the layer names (LDCT,
        baseline/RED-CNN/CPCE, LIDnet, NDCT; whole volumes before one-slice outputs). Detections, RPN
        proposals and the radiomics ROI are not offered as lesion boxes.
        """
        imgs = image_layers(self.viewer, include_derived=False)
        cands = [(ly.name, n_slices(ly)) for ly in imgs]
        names = [n for n, _ in cands]
        refill_combo(self.combos["ldct"], names, guess_role(cands, "ldct"))
        anchor = layer_by_name(self.viewer, self.combos["ldct"].currentText())
        roles = ["baseline", "lidnet", "ndct"]
        if anchor is None:
            refill_combo(self.combos["ndct"], names, guess_role(cands, "ndct"))
            anchor = layer_by_name(self.viewer, self.combos["ndct"].currentText())
            roles.remove("ndct")
        match = [ly for ly in imgs if anchor is None or (ly.name != anchor.name and layers_match(ly, anchor))]
        mcands = [(ly.name, n_slices(ly)) for ly in match]
        for key in roles:
            refill_combo(self.combos[key], [n for n, _ in mcands], guess_role(mcands, key))
        other = [ly for ly in imgs if anchor is not None and ly.name != anchor.name and not layers_match(ly, anchor)]
        self.match_note.setText(
            f"Not offered (other size than '{anchor.name}'): " + ", ".join(
                f"'{ly.name}' ({describe_grid(ly)})" for ly in other) if other else ""
        )
        self.match_note.setVisible(bool(other))
        snames = [ly.name for ly in box_layers(self.viewer)]
        refill_combo(self.boxes_combo, snames, guess_name(snames, ("box", "lesion")))

    def set_layers(self, ldct=None, baseline=None, lidnet=None, ndct=None, boxes=None) -> None:
        """Choose the compared layers programmatically (layer objects or names; None = "(none)"). A layer
        that is not offered (other size than the LDCT) leaves that choice unchanged."""
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

    def offered(self, role: str) -> list[str]:
        """The layer names a role's chooser offers (without "(none)")."""
        cb = self.combos[role]
        return [cb.itemText(i) for i in range(cb.count()) if cb.itemText(i) != NONE]

    def detection_layer_for(self, image_layer):
        """The detections shapes layer produced from ``image_layer`` (metadata ``source_layer`` / ``image``
        naming it; for layers without such metadata, a name made of the image's name followed by "detections"), or
        None. A layer whose metadata names another image is never credited to this one (the LIDnet output's
        name starts with the LDCT's name)."""
        for ly in shapes_layers(self.viewer):
            if not is_detection_layer(ly):
                continue
            md = ly.metadata or {}
            src = md.get("source") or md.get("derived_from") or md.get("source_layer") or md.get("image")
            if src == image_layer.name:
                return ly
        for ly in shapes_layers(self.viewer):
            md = ly.metadata or {}
            if md.get("source") or md.get("derived_from") or md.get("source_layer") or md.get("image"):
                continue  # it names its image (another one): never credited to this one by its name
            rest = ly.name[len(image_layer.name):] if ly.name.startswith(image_layer.name) else None
            if is_detection_layer(ly) and (
                (rest is not None and rest.lstrip(" ·-").lower().startswith("detect"))
                or ly.name.endswith(f"({image_layer.name})")
            ):
                return ly
        return None

    # ------------------------------------------------------------------ views
    def compared_images(self) -> list:
        """The chosen image layers in display order LDCT, baseline, LIDnet, NDCT (missing and repeated
        ones skipped)."""
        ch = self.chosen()
        out: list = []
        for k, _ in ROLES:
            if ch[k] is not None and ch[k].name not in [ly.name for ly in out]:
                out.append(ch[k])
        return out

    def make_difference_maps(self) -> list:
        """Create (or update) one difference layer ``<name> − NDCT`` (HU) per compared non-NDCT layer.

        Layers use a diverging colormap (coolwarm) with contrast limits ``±range`` HU, the source layer's
        transform (scale, rotate, translate: :func:`~napari_lidnet._layers.layer_geometry`), and
        ``metadata["lidnet_role"] = "lidnet_difference"``. A layer that does not cover the NDCT's pixels gets
        no map (a notification says why).

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
            if ly is None or ly.name == ref.name:
                continue
            if not layers_match(ly, ref):
                notify_error(mismatch_message(ly, ref))
                continue
            diff = np.asarray(ly.data, dtype=np.float32) - ref_data
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
                    **layer_geometry(ly),
                    metadata={"lidnet_role": DIFFERENCE_ROLE, "source_layer": ly.name, "reference": ref.name},
                )
            out.append(dl)
        return out

    def show_side_by_side(self, enabled: bool = True) -> None:
        """Turn the side-by-side grid on (chosen images in a row: LDCT, baseline, LIDnet, NDCT; the
        difference maps in a second row when enabled; see :class:`SideBySide`) or off (camera, layer
        order, visibility and titles as before)."""
        if not enabled:
            self.side.leave()
            return
        images = self.compared_images()
        if not images:
            notify_error("Choose at least one image layer to compare.")
            return
        self.side.save_view()  # before the difference maps are added: leaving hides them again
        diffs = self.make_difference_maps() if self.diff_check.isChecked() and self.chosen()["ndct"] else []
        self._show_slice_of(images[-1])
        self.side.enter(images, diffs, self.chosen()["boxes"])

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
        except Exception as exc:  # noqa: BLE001 - shown to the user; the previous view comes back
            notify_error(exc)
            if checked:
                self.side.leave()
        if checked and not self.side.active:  # nothing to show: the button pops back up
            self.side_btn.blockSignals(True)
            self.side_btn.setChecked(False)
            self.side_btn.blockSignals(False)
            checked = False
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
            No NDCT layer, nothing to compare, or a layer that does not cover the NDCT's pixels (the
            Compute button shows these as notifications).
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
            No NDCT layer, nothing to compare, or a compared layer's shape / spacing differs from the NDCT's.
        """
        ch = self.chosen()
        ref = ch["ndct"]
        if ref is None:
            raise LidnetError("Choose an NDCT (reference) layer: metrics are computed against it.")
        roles = [k for k in ("ldct", "baseline", "lidnet") if ch[k] is not None and ch[k].name != ref.name]
        if not roles:
            raise LidnetError("Choose at least one of LDCT / baseline / LIDnet output to compare with NDCT.")
        boxes_layer = ch["boxes"]
        zs = self._slices(ref)
        items, seen = [], set()
        for key in roles:
            ly = ch[key]
            if ly.name in seen:
                continue
            seen.add(ly.name)
            if not layers_match(ly, ref):
                raise LidnetError(mismatch_message(ly, ref))
            det_layer = self.detection_layer_for(ly)
            dets = [boxes_on_slice(det_layer, ly, z) for z in zs] if det_layer is not None else None
            items.append({"name": ly.name, "role": key, "layer": ly, "dets": dets})
        boxes = [
            boxes_on_slice(boxes_layer, ref, z)[0] if boxes_layer is not None else np.zeros((0, 4), np.float32)
            for z in zs
        ]
        return {"ref": ref, "zs": zs, "items": items, "boxes": boxes, "has_boxes": boxes_layer is not None}

    def _show_results(self, results: dict[str, dict[str, float]], payload: dict[str, Any]) -> None:
        self.results = results
        roles = {it["name"]: it.get("role") for it in payload["items"]}
        self._fill_table(results, payload["ref"], payload["zs"], roles)

    def _fill_table(self, results: dict[str, dict[str, float]], ref, zs, roles: dict[str, str] | None = None) -> None:
        """Metrics as rows, compared layers as columns titled LDCT / Baseline / LIDnet (full name as the
        tooltip), so that the table fits a narrow dock."""
        names = list(results)
        roles = roles or {}
        self._table_layers = names
        rows = [r for r in METRIC_ROWS if any(r[0] in results[n] for n in names)]
        self.table.clear()
        self.table.setColumnCount(len(names))
        self.table.setRowCount(len(rows))
        for j, n in enumerate(names):
            head = QTableWidgetItem(COLUMN_TITLES.get(roles.get(n, ""), n))
            head.setToolTip(n)
            self.table.setHorizontalHeaderItem(j, head)
        for i, (key, label, _fmt, _hi) in enumerate(rows):
            head = QTableWidgetItem(label)
            head.setToolTip(METRIC_TIPS.get(key, label))
            self.table.setVerticalHeaderItem(i, head)
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
                item.setToolTip(f"{names[j]}: {METRIC_TIPS.get(key, key)}")
                if best is not None and v == best:
                    item.setFont(bold)
                self.table.setItem(i, j, item)
        if zs == [None]:
            scope = "2D image"
        elif len(zs) == 1:
            scope = f"slice {zs[0]} (of {ref.data.shape[-3]})"
        else:
            scope = f"mean over all {len(zs)} slices (box rows: slices with boxes; counts summed)"
        self.scope_label.setText(f"Reference: {ref.name} — {scope}")

    def table_value(self, metric: str, layer_name: str) -> float:
        """The raw (unrounded) number behind a table cell (``metric`` key of :data:`METRIC_ROWS`, column of
        the layer called ``layer_name``)."""
        labels = {r[0]: r[1] for r in METRIC_ROWS}
        rows = [self.table.verticalHeaderItem(i).text() for i in range(self.table.rowCount())]
        item = self.table.item(rows.index(labels[metric]), self._table_layers.index(layer_name))
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


def _denoise_both(data: Any, name: str, ckpts: dict[str, Path], runner: TaskRunner, messages: Any):
    """Progress generator (worker thread): the LDCT ``data`` denoised by each checkpoint of ``ckpts``
    (role -> denoiser.pt) with :func:`~napari_lidnet._widgets.denoise.denoise_work`; returns
    ``[(role, checkpoint, (z, y, x) float32 HU, config)]``."""
    hu = layer_volume(data, name)
    total = 2 * int(hu.shape[0])
    outputs = []
    for i, (role, ckpt) in enumerate(ckpts.items()):
        gen = denoise_work(checkpoint=ckpt, expected_model=None, hu=hu, device="auto", batch_size=4,
                           cancel_event=runner.cancel_event, on_message=messages)
        offset = i * int(hu.shape[0])
        while True:
            try:
                done, _tot, msg = next(gen)
            except StopIteration as stop:
                out, config = stop.value
                break
            yield (offset + int(done), total, f"{'LIDnet' if role == 'lidnet' else role} model: {msg}")
        outputs.append((role, Path(ckpt), out, config))
    return outputs
