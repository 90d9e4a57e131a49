"""The form of the Train widget: training data, model and schedule, images / device / run folder, and the
validated :class:`src_training.config.TrainConfig` built from it.

:class:`TrainForm` holds the fields only; :class:`napari_lidnet._widgets.train.TrainWidget` adds the run
controls (start, pause, stop, resume), the status line and the live loss plot.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from src_training.checkpoint import atomic_write_bytes
from src_training.config import (
    BASELINE_LOSSES,
    DENOISER_NAMES,
    DETECTOR_BACKBONES,
    FORMS,
    LOSS_REDUCTIONS,
    PERCEPTUALS,
    STRATEGIES,
    TASK_NETWORKS,
    TrainConfig,
)
from src_training.errors import ConfigError, LidnetError
from src_training.runs import default_runs_root
from src_training.sample import sample_case_names

from .._boxes import boxes_from_shapes_data, vertices_in_image
from .._layers import layer_spacing
from ._controls import device_choices
from ._layer_choice import LayerFollower, box_layers, guess_name, image_layers, layer_by_name, refill_combo

if TYPE_CHECKING:
    import napari

#: Training ``.npz`` written into the run folder when the data source is the open layers.
LAYER_DATA_FILE = "train_data_from_layers.npz"

DATA_LAYERS = "open image + boxes layers"
DATA_PATH = "file or folder"
DATA_SAMPLE = "bundled sample"


def save_layers_npz(image_layer, boxes_layer, path: Path) -> Path:
    """Save an image layer (HU) and its boxes shapes layer as a training ``.npz`` (atomic write).

    Format (architecture contract): ``hu`` (z, y, x) float32 HU, ``spacing`` (3,) float64 mm (z, y, x),
    ``boxes`` (n, 5) float32 rows ``slice, x0, y0, x1, y1`` (pixels, edges at pixel borders). The boxes are
    mapped through world coordinates into the image's pixel grid; boxes off the volume's slices are dropped.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    LidnetError
        The image is not 2D/3D, or there is no box on it.
    """
    hu = np.asarray(image_layer.data, dtype=np.float32)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3:
        raise LidnetError(f"Layer '{image_layer.name}' has shape {hu.shape}; training needs a (z, y, x) CT volume.")
    rows = np.zeros((0, 5), dtype=np.float32)
    if boxes_layer is not None and len(boxes_layer.data):
        mapped = [vertices_in_image(boxes_layer, v, image_layer) for v in boxes_layer.data]
        slices, boxes = boxes_from_shapes_data(mapped)
        if image_layer.ndim < 3:
            slices = np.zeros_like(slices)
        ok = (slices >= 0) & (slices < hu.shape[0])
        rows = np.concatenate([slices[ok, None].astype(np.float32), boxes[ok]], axis=1).astype(np.float32)
    if len(rows) == 0:
        raise LidnetError(
            f"No lesion box lies on '{image_layer.name}'. Draw rectangles in a shapes layer over the lesions "
            "(or load the sample with its boxes) and choose it as 'boxes'."
        )
    buf = io.BytesIO()
    np.savez(buf, hu=hu, spacing=np.asarray(layer_spacing(image_layer), dtype=np.float64), boxes=rows)
    return atomic_write_bytes(path, buf.getvalue())



class TrainForm(QWidget):
    """The Train widget's form (no run control): what to train, how, where.

    The image / boxes drop-downs follow the viewer's layer list. Read it with :meth:`build_config`, fill it
    with :meth:`set_values`.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer = napari_viewer
        defaults = TrainConfig()

        # ---- data
        data_box = QGroupBox("Training data")
        df = QFormLayout(data_box)
        self.data_mode = QComboBox()
        self.data_mode.addItems([DATA_SAMPLE, DATA_LAYERS, DATA_PATH])
        self.sample_combo = QComboBox()
        try:
            self.sample_combo.addItems(sample_case_names())
        except Exception:  # noqa: BLE001 - no sample data shipped
            pass
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("Normal-dose CT layer (HU); the low-dose version is simulated at N0.")
        self.boxes_combo = QComboBox()
        self.boxes_combo.setToolTip("Shapes layer with the lesion rectangles of that image.")
        self.path_edit = QLineEdit()
        self.path_edit.setPlaceholderText("CT folder/file with boxes.csv beside it, or a training .npz")
        path_btn = QPushButton("…")
        path_btn.setMaximumWidth(30)
        path_btn.clicked.connect(self._browse_data)
        path_row = QHBoxLayout()
        path_row.addWidget(self.path_edit)
        path_row.addWidget(path_btn)
        df.addRow("source", self.data_mode)
        df.addRow("sample", self.sample_combo)
        df.addRow("NDCT layer", self.image_combo)
        df.addRow("boxes layer", self.boxes_combo)
        df.addRow("path", path_row)

        # ---- model / schedule
        model_box = QGroupBox("Model and schedule (paper: RED-CNN, ResNet-50, K=5, λ1=λ2=5, T1=T2=4000, T3=2000)")
        mf = QFormLayout(model_box)
        self.method_combo = QComboBox()
        self.method_combo.addItems(["lidnet", "baseline", "todnet"])
        self.method_combo.setToolTip("lidnet: collaborative training (Algorithm 1); baseline: denoiser alone "
                                     "(MAE or its published loss); todnet: TOD-Net task-oriented loss with a "
                                     "frozen downstream network.")
        self.form_combo = QComboBox()
        self.form_combo.addItems(list(FORMS))
        self.form_combo.setToolTip("cnn: LIDnet Eq. 8; gan: GAN form (Eq. 5) with a WGAN-GP critic (Eq. 7)")
        self.strategy_combo = QComboBox()
        self.strategy_combo.addItems(list(STRATEGIES))
        self.strategy_combo.setToolTip("collaborative: Algorithm 1; simultaneous: both networks every step "
                                       "(ablation, Fig. 3; same total steps)")
        self.perceptual_combo = QComboBox()
        self.perceptual_combo.addItems(list(PERCEPTUALS))
        self.perceptual_combo.setToolTip("roi: ROI perceptual loss in the top-K proposals (Eq. 4); global: over "
                                         "the whole feature maps; none: λ1 term dropped")
        self.reduction_combo = QComboBox()
        self.reduction_combo.addItems(list(LOSS_REDUCTIONS))
        self.reduction_combo.setCurrentText(defaults.loss_reduction)
        self.reduction_combo.setToolTip("Eq. 8 reduction. paper: reconstruction term summed over each image's pixels "
                                        "(as printed); normalised: per-pixel MAE and feature losses relative to the "
                                        "NDCT features. See docs/reproduction.md for what each does.")
        self.baseline_loss_combo = QComboBox()
        self.baseline_loss_combo.addItems(list(BASELINE_LOSSES))
        self.baseline_loss_combo.setToolTip("baseline: mae (paper's comparison) or the denoiser's published loss")
        self.task_combo = QComboBox()
        self.task_combo.addItems(list(TASK_NETWORKS))
        self.task_combo.setToolTip("todnet: frozen downstream network (Faster R-CNN detector or a 2-D U-Net "
                                   "segmenter on ellipses inscribed in the lesion boxes), trained on NDCT for T1 steps")
        self.denoiser_combo = QComboBox()
        self.denoiser_combo.addItems(list(DENOISER_NAMES))
        self.denoiser_combo.setCurrentText(defaults.denoiser)
        self.backbone_combo = QComboBox()
        self.backbone_combo.addItems(list(DETECTOR_BACKBONES))
        self.backbone_combo.setCurrentText(defaults.detector_backbone)
        self.n0_spin = self._dspin(1.0, 1e7, defaults.n0, 0, "incident photons per ray (detector bin and view) of the simulated LDCT")
        self.t1_spin = self._ispin(0, 10**6, defaults.t1, "detector steps on NDCT")
        self.t2_spin = self._ispin(0, 10**6, defaults.t2, "denoiser steps per round")
        self.t3_spin = self._ispin(0, 10**6, defaults.t3, "detector steps on denoised images per round")
        self.rounds_spin = self._ispin(1, 1000, defaults.rounds, "rounds of (T2, T3)")
        self.lambda1_spin = self._dspin(0.0, 1e4, defaults.lambda_roi, 3, "λ1: ROI perceptual loss weight (Eq. 8)")
        self.lambda2_spin = self._dspin(0.0, 1e4, defaults.lambda_det, 3, "λ2: detection loss weight (Eq. 8)")
        self.k_spin = self._ispin(1, 1000, defaults.k_proposals, "K top RPN proposals of the ROI loss (Eq. 4)")
        self.batch_spin = self._ispin(1, 256, defaults.batch_size, "slices per step")
        sched = QHBoxLayout()
        for lab, w in (("T1", self.t1_spin), ("T2", self.t2_spin), ("T3", self.t3_spin), ("rounds", self.rounds_spin)):
            sched.addWidget(QLabel(lab))
            sched.addWidget(w)
        lam = QHBoxLayout()
        for lab, w in (("λ1", self.lambda1_spin), ("λ2", self.lambda2_spin), ("K", self.k_spin)):
            lam.addWidget(QLabel(lab))
            lam.addWidget(w)
        mf.addRow("method", self.method_combo)
        variant = QHBoxLayout()
        for w in (self.form_combo, self.strategy_combo, self.perceptual_combo):
            variant.addWidget(w)
        mf.addRow("form / strategy / perceptual", variant)
        other = QHBoxLayout()
        for lab, w in (("Eq. 8", self.reduction_combo), ("baseline loss", self.baseline_loss_combo),
                       ("TOD-Net task", self.task_combo)):
            other.addWidget(QLabel(lab))
            other.addWidget(w)
        mf.addRow("", other)
        mf.addRow("denoiser", self.denoiser_combo)
        mf.addRow("detector backbone", self.backbone_combo)
        mf.addRow("N0", self.n0_spin)
        mf.addRow("steps", sched)
        mf.addRow("weights", lam)
        mf.addRow("batch size", self.batch_spin)

        # ---- image / device / run folder
        run_box = QGroupBox("Images, device, run folder")
        rf = QFormLayout(run_box)
        self.size_spin = self._ispin(0, 4096, 0, "resample slices to N×N pixels (0 = native size)")
        self.crop_spin = self._ispin(0, 4096, 0, "random square training crops (0 = whole slices)")
        size_row = QHBoxLayout()
        size_row.addWidget(QLabel("image size"))
        size_row.addWidget(self.size_spin)
        size_row.addWidget(QLabel("crop"))
        size_row.addWidget(self.crop_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(device_choices())
        self.run_edit = QLineEdit(str(default_runs_root() / datetime.now().strftime("run_%Y%m%d_%H%M%S")))
        run_btn = QPushButton("…")
        run_btn.setMaximumWidth(30)
        run_btn.clicked.connect(self._browse_run)
        run_row = QHBoxLayout()
        run_row.addWidget(self.run_edit)
        run_row.addWidget(run_btn)
        rf.addRow("size (px, 0 = native)", size_row)
        rf.addRow("device", self.device_combo)
        rf.addRow("run folder", run_row)

        layout = QVBoxLayout(self)
        layout.addWidget(data_box)
        layout.addWidget(model_box)
        layout.addWidget(run_box)
        self.data_mode.currentTextChanged.connect(self._update_data_rows)
        self._follower = LayerFollower(self.viewer, self.refresh_choices)
        self.refresh_choices()
        self._update_data_rows()

    # ------------------------------------------------------------------ small builders
    @staticmethod
    def _ispin(lo: int, hi: int, val: int, tip: str) -> QSpinBox:
        s = QSpinBox()
        s.setRange(lo, hi)
        s.setValue(int(val))
        s.setToolTip(tip)
        # room for 5 digits plus the +/- buttons (the paper's 4000-step phases were clipped)
        s.setMinimumWidth(s.fontMetrics().horizontalAdvance("00000") + 90)
        return s

    @staticmethod
    def _dspin(lo: float, hi: float, val: float, decimals: int, tip: str) -> QDoubleSpinBox:
        s = QDoubleSpinBox()
        s.setDecimals(decimals)
        s.setRange(lo, hi)
        s.setValue(float(val))
        s.setToolTip(tip)
        return s

    def refresh_choices(self, event=None) -> None:
        """Refill the image / boxes layer choosers (current choices kept; NDCT / "box" names preferred, else
        the topmost layer; detections, RPN proposals and the radiomics ROI are not offered as boxes)."""
        for cb, names, words in (
            (self.image_combo, [ly.name for ly in image_layers(self.viewer, include_derived=False)], ("ndct",)),
            (self.boxes_combo, [ly.name for ly in box_layers(self.viewer)], ("box", "lesion")),
        ):
            refill_combo(cb, names, guess_name(names, words) or (names[-1] if names else None))

    def _update_data_rows(self, *_: Any) -> None:
        mode = self.data_mode.currentText()
        self.sample_combo.setEnabled(mode == DATA_SAMPLE)
        self.image_combo.setEnabled(mode == DATA_LAYERS)
        self.boxes_combo.setEnabled(mode == DATA_LAYERS)
        self.path_edit.setEnabled(mode == DATA_PATH)

    def _browse_data(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "CT folder (with boxes.csv)")
        if path:
            self.path_edit.setText(path)
            self.data_mode.setCurrentText(DATA_PATH)

    def _browse_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder", str(default_runs_root()))
        if path:
            self.run_edit.setText(path)

    def set_values(self, **values: Any) -> None:
        """Set form fields programmatically: ``denoiser, backbone, method, form, strategy, perceptual,
        baseline_loss, task_network, loss_reduction, n0, t1, t2, t3, rounds, lambda1, lambda2, k, batch_size, image_size,
        crop_size, device, run_dir, sample, data_path``."""
        combos = {"denoiser": self.denoiser_combo, "backbone": self.backbone_combo, "method": self.method_combo,
                  "device": self.device_combo, "sample": self.sample_combo, "form": self.form_combo,
                  "strategy": self.strategy_combo, "perceptual": self.perceptual_combo,
                  "baseline_loss": self.baseline_loss_combo, "task_network": self.task_combo,
                  "loss_reduction": self.reduction_combo}
        spins = {"n0": self.n0_spin, "t1": self.t1_spin, "t2": self.t2_spin, "t3": self.t3_spin,
                 "rounds": self.rounds_spin, "lambda1": self.lambda1_spin, "lambda2": self.lambda2_spin,
                 "k": self.k_spin, "batch_size": self.batch_spin, "image_size": self.size_spin,
                 "crop_size": self.crop_spin}
        for key, val in values.items():
            if key in combos:
                combos[key].setCurrentText(str(val))
                if key == "sample":
                    self.data_mode.setCurrentText(DATA_SAMPLE)
            elif key in spins:
                spins[key].setValue(val or 0)
            elif key == "run_dir":
                self.run_edit.setText(str(val))
            elif key == "data_path":
                self.path_edit.setText(str(val))
                self.data_mode.setCurrentText(DATA_PATH)
            else:
                raise KeyError(f"Unknown field {key!r}")

    # ------------------------------------------------------------------ config
    def build_config(self, run_dir: Path):
        """A validated :class:`src_training.config.TrainConfig` from the form (layers are saved to
        ``RUN_DIR/train_data_from_layers.npz`` when the data source is the open layers).

        Raises
        ------
        LidnetError (ConfigError)
            Missing data source or invalid values.
        """
        mode = self.data_mode.currentText()
        if mode == DATA_SAMPLE:
            name = self.sample_combo.currentText()
            if not name:
                raise ConfigError("No bundled sample case is available; choose open layers or a file instead.")
            train_data = [f"sample:{name}"]
        elif mode == DATA_LAYERS:
            img = layer_by_name(self.viewer, self.image_combo.currentText())
            boxes = layer_by_name(self.viewer, self.boxes_combo.currentText())
            if img is None or boxes is None:
                raise ConfigError("Choose the NDCT image layer and the shapes layer holding its lesion boxes.")
            npz = save_layers_npz(img, boxes, run_dir / LAYER_DATA_FILE)
            train_data = [str(npz)]
        else:
            p = self.path_edit.text().strip()
            if not p:
                raise ConfigError("Enter the path of a CT (folder or file with boxes.csv beside it) or a .npz.")
            if not p.startswith("sample:") and not Path(p).expanduser().exists():
                raise ConfigError(f"Training data path does not exist: {p}")
            train_data = [p if p.startswith("sample:") else str(Path(p).expanduser().resolve())]
        cfg = TrainConfig(
            denoiser=self.denoiser_combo.currentText(),
            detector_backbone=self.backbone_combo.currentText(),
            k_proposals=self.k_spin.value(),
            lambda_roi=self.lambda1_spin.value(),
            lambda_det=self.lambda2_spin.value(),
            t1=self.t1_spin.value(),
            t2=self.t2_spin.value(),
            t3=self.t3_spin.value(),
            rounds=self.rounds_spin.value(),
            batch_size=self.batch_spin.value(),
            n0=self.n0_spin.value(),
            image_size=self.size_spin.value() or None,
            crop_size=self.crop_spin.value() or None,
            device=self.device_combo.currentText(),
            form=self.form_combo.currentText(),
            strategy=self.strategy_combo.currentText(),
            perceptual=self.perceptual_combo.currentText(),
            baseline_loss=self.baseline_loss_combo.currentText(),
            task_network=self.task_combo.currentText(),
            loss_reduction=self.reduction_combo.currentText(),
            train_data=train_data,
            checkpoint_every=max(1, min(500, (self.t1_spin.value() + self.t2_spin.value()) // 4 or 1)),
        )
        return cfg.validate()


__all__ = ["DATA_LAYERS", "DATA_PATH", "DATA_SAMPLE", "LAYER_DATA_FILE", "TrainForm", "save_layers_npz"]
