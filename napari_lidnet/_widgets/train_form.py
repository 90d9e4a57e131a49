"""The form of the Train widget: a preset, training data, model and schedule, images / device / run folder,
and the validated :class:`src_training.config.TrainConfig` built from it.

Presets (:data:`PRESETS`, typed :class:`TrainPreset` records): ``"CPU quick"`` is the demo recipe's scale
(:data:`src_training.experiment.DEMO_BUDGET`: CPCE, the shipped NDCT Faster R-CNN as the start so T1 is skipped,
256 px slices, lesion-centred 128 px crops, 3 rounds of 80 T2 / 30 T3 steps), finishing in minutes on two
CPU cores; ``"paper"`` is the paper's budget (RED-CNN, ResNet-50, T1 = T2 = 4000, T3 = 2000, batch 8, native
size: GPU hours). The form opens on "CPU quick" when no CUDA / MPS device is available
(:func:`default_preset_name`), on "paper" otherwise; editing a field turns the choice into ``"custom"``
(the non-form settings of the last preset are kept).

:class:`TrainForm` holds the fields only; :class:`napari_lidnet._widgets.train.TrainWidget` adds the run
controls (start, pause, stop, resume), the status line and the live loss plot.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

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
    QSizePolicy,
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
from src_training.device import auto_device
from src_training.errors import ConfigError, LidnetError
from src_training.experiment import DEMO_BUDGET
from src_training.protocol import DATA_SEED, DETECTOR_FILE, IMAGE_SIZE, TRAIN_NODULES, shipped_weights
from src_training.runs import default_runs_root, format_duration
from src_training.sample import sample_case_names

from .._boxes import boxes_from_shapes_data, vertices_in_image
from .._layers import layer_spacing
from .._sample_data import ldct_cache_dir
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


# --------------------------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class PresetTiming:
    """Measured cost of a preset on a stated machine (what its time estimate is computed from).

    Attributes
    ----------
    seconds_per_step : mapping phase -> float
        Wall-clock seconds per optimisation step of each phase (``"T1"``, ``"T2"``, ``"T3"``).
    data_s : float
        Seconds from launch to the first step (loading, cached low-dose simulation, model set-up).
    first_data_s : float or None
        The same on an empty simulation cache (the native low-dose simulation of the training case); None
        when not measured.
    machine : str
        Where it was measured, e.g. ``"2 CPU cores (AMD EPYC)"``.
    """

    seconds_per_step: Mapping[str, float]
    data_s: float
    first_data_s: Optional[float]
    machine: str


@dataclass(frozen=True)
class TrainPreset:
    """A named set of Train form values plus the configuration fields the form does not show.

    Attributes
    ----------
    name : str
        Shown in the preset chooser (``"CPU quick"``, ``"paper"``).
    summary : str
        One line: what the preset trains, how and for how long.
    values : mapping
        Form values as :meth:`TrainForm.set_values` takes them (``denoiser``, ``backbone``, ``t1`` ... ``crop_size``;
        ``image_size`` / ``crop_size`` 0 = native size / whole slices).
    extras : mapping
        :class:`~src_training.config.TrainConfig` fields not on the form (learning rates, lesion-centred crop
        fraction ...), applied by :meth:`TrainForm.build_config`.
    sample_extras : mapping
        Extra fields applied only when the data source is a bundled sample case (the demo's synthetic nodules
        and data seed, so that the cached low-dose simulation of the demo is reused).
    shipped_detector : str or None
        File name of a shipped detector (:func:`src_training.protocol.shipped_weights`) to start from
        (``detector_weights``); used only while the backbone is the preset's.
    timing : PresetTiming or None
        Measured cost (None: no measurement on a CPU, e.g. the paper's GPU budget).
    """

    name: str
    summary: str
    values: Mapping[str, Any]
    extras: Mapping[str, Any] = field(default_factory=dict)
    sample_extras: Mapping[str, Any] = field(default_factory=dict)
    shipped_detector: Optional[str] = None
    timing: Optional[PresetTiming] = None

    def estimate_seconds(self, cfg: TrainConfig, method: str = "lidnet") -> Optional[float]:
        """Estimated wall-clock seconds of a run of ``cfg`` from this preset's measurement.

        Only when ``cfg`` costs per step what was measured (LIDnet, CNN form, collaborative strategy, same
        denoiser, backbone, batch size, image and crop size, on a CPU); then the estimate is the set-up time
        plus the steps of every phase times their measured seconds per step. None otherwise.
        """
        t = self.timing
        if t is None or method != "lidnet" or cfg.form != "cnn" or cfg.strategy != "collaborative":
            return None
        v = self.values
        same = (cfg.denoiser == v["denoiser"] and cfg.detector_backbone == v["backbone"]
                and cfg.batch_size == v["batch_size"] and (cfg.image_size or 0) == v["image_size"]
                and (cfg.crop_size or 0) == v["crop_size"])
        try:
            on_cpu = auto_device(cfg.device).type == "cpu"
        except LidnetError:
            on_cpu = False
        if not (same and on_cpu):
            return None
        s = t.seconds_per_step
        steps = cfg.t1 * s.get("T1", s["T3"]) + cfg.rounds * (cfg.t2 * s["T2"] + cfg.t3 * s["T3"])
        return t.data_s + steps


#: Preset name shown once the user has edited a field.
CUSTOM = "custom"

#: The demo recipe (src_training.experiment.DEMO_BUDGET) as Train form values.
_QUICK = DEMO_BUDGET.config(denoiser="cpce")

PRESETS: dict[str, TrainPreset] = {
    "CPU quick": TrainPreset(
        name="CPU quick",
        summary=(f"CPU quick: CPCE denoiser + the shipped NDCT Faster R-CNN (ResNet-18, so T1 is skipped), "
                 f"{_QUICK.rounds} rounds of {_QUICK.t2} T2 / {_QUICK.t3} T3 steps, batch {_QUICK.batch_size} "
                 f"lesion-centred {_QUICK.crop_size} px crops of {IMAGE_SIZE} px slices (the demo's recipe)"),
        values=dict(denoiser=_QUICK.denoiser, backbone=_QUICK.detector_backbone, t1=0, t2=_QUICK.t2,
                    t3=_QUICK.t3, rounds=_QUICK.rounds, batch_size=_QUICK.batch_size, image_size=IMAGE_SIZE,
                    crop_size=_QUICK.crop_size, n0=1000.0, k=5, lambda1=5.0, lambda2=5.0, method="lidnet",
                    form="cnn", strategy="collaborative", perceptual="roi", loss_reduction="paper"),
        extras=dict(lr_denoiser=_QUICK.lr_denoiser, lr_detector=_QUICK.lr_detector,
                    detector_optimizer=_QUICK.detector_optimizer, lesion_crop_fraction=_QUICK.lesion_crop_fraction),
        sample_extras=dict(synthetic_nodules_per_slice=TRAIN_NODULES, data_seed=DATA_SEED),
        shipped_detector=DETECTOR_FILE,
        # measured: the same schedule, crops and Faster R-CNN sampling in `lidnet demo`'s LIDnet run (2026-12-02,
        # 2 CPU cores, AMD EPYC, other jobs running): T2 1.4 s/step, T3 0.87 s/step. (Before `lidnet train` used
        # the demo's sampling it measured 4.9 / 4.2 s/step; it has not been re-timed since.)
        timing=PresetTiming(seconds_per_step={"T2": 1.4, "T3": 0.87}, data_s=10.0, first_data_s=None,
                            machine="2 CPU cores"),
    ),
    "paper": TrainPreset(
        name="paper",
        summary=("paper: RED-CNN + Faster R-CNN ResNet-50 trained from scratch, T1 = T2 = 4000, T3 = 2000 steps, "
                 "batch 8 whole slices at native size (Chen et al. 2021, Sec. 4.1)"),
        values=dict(denoiser="redcnn", backbone="resnet50", t1=4000, t2=4000, t3=2000, rounds=1, batch_size=8,
                    image_size=0, crop_size=0, n0=1000.0, k=5, lambda1=5.0, lambda2=5.0, method="lidnet",
                    form="cnn", strategy="collaborative", perceptual="roi", loss_reduction="paper"),
    ),
}


def default_preset_name() -> str:
    """``"CPU quick"`` when the automatic device choice (:func:`src_training.device.auto_device`) is the CPU
    (no CUDA or MPS device), else ``"paper"``."""
    try:
        dev = auto_device("auto")
    except LidnetError:
        return "CPU quick"
    return "CPU quick" if dev.type == "cpu" else "paper"




def _compact(root: QWidget) -> None:
    """Let the form shrink to a workbench dock's width (about 500 px): drop-downs and number boxes size to a
    few characters instead of their longest entry or widest number."""
    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(3)
    for spin in root.findChildren(QSpinBox) + root.findChildren(QDoubleSpinBox):
        spin.setMinimumWidth(48)
        spin.setSizePolicy(QSizePolicy.Policy.Ignored, spin.sizePolicy().verticalPolicy())

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
        self._applying = False
        self._base_preset: TrainPreset = PRESETS[default_preset_name()]

        # ---- preset
        preset_box = QGroupBox("Preset")
        pf = QVBoxLayout(preset_box)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.preset_combo.setToolTip("CPU quick: the demo's recipe, minutes on a laptop CPU. paper: the paper's "
                                     "budget, for a GPU. Editing any field below makes it 'custom'.")
        self.preset_summary = QLabel("")
        self.preset_summary.setWordWrap(True)
        pf.addWidget(self.preset_combo)
        pf.addWidget(self.preset_summary)

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
        model_box = QGroupBox("Model and schedule")
        model_box.setToolTip("The paper: RED-CNN, ResNet-50, K=5, λ1=λ2=5, T1=T2=4000, T3=2000 (the 'paper' preset)")
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
        layout.addWidget(preset_box)
        layout.addWidget(data_box)
        layout.addWidget(model_box)
        layout.addWidget(run_box)
        self.data_mode.currentTextChanged.connect(self._update_data_rows)
        self._follower = LayerFollower(self.viewer, self.refresh_choices)
        self.refresh_choices()
        self._update_data_rows()
        self.apply_preset(self._base_preset.name)
        self.preset_combo.currentTextChanged.connect(self._on_preset_chosen)
        for combo in self._preset_combos().values():
            combo.currentTextChanged.connect(self._on_field_edited)
        for spin in self._spins().values():
            spin.valueChanged.connect(self._on_field_edited)
        self.data_mode.currentTextChanged.connect(self._update_summary)
        self.device_combo.currentTextChanged.connect(self._update_summary)
        _compact(self)



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

    # ------------------------------------------------------------------ presets
    def _preset_combos(self) -> dict[str, QComboBox]:
        """The drop-downs a preset sets (keys of :meth:`set_values`)."""
        return {"denoiser": self.denoiser_combo, "backbone": self.backbone_combo, "method": self.method_combo,
                "form": self.form_combo, "strategy": self.strategy_combo, "perceptual": self.perceptual_combo,
                "baseline_loss": self.baseline_loss_combo, "task_network": self.task_combo,
                "loss_reduction": self.reduction_combo}

    def _spins(self) -> dict[str, QSpinBox | QDoubleSpinBox]:
        return {"n0": self.n0_spin, "t1": self.t1_spin, "t2": self.t2_spin, "t3": self.t3_spin,
                "rounds": self.rounds_spin, "lambda1": self.lambda1_spin, "lambda2": self.lambda2_spin,
                "k": self.k_spin, "batch_size": self.batch_spin, "image_size": self.size_spin,
                "crop_size": self.crop_spin}

    @property
    def preset_name(self) -> str:
        """The chosen preset: a key of :data:`PRESETS`, or ``"custom"`` after an edit."""
        return self.preset_combo.currentText()

    @property
    def base_preset(self) -> TrainPreset:
        """The preset last applied (its non-form settings stay in force while the choice is ``"custom"``)."""
        return self._base_preset

    def apply_preset(self, name: str) -> None:
        """Fill the form with the values of preset ``name`` (a key of :data:`PRESETS`); data source, device
        and run folder are left as they are.

        Raises
        ------
        KeyError
            Unknown preset.
        """
        preset = PRESETS[name]
        self._applying = True
        try:
            self.set_values(**preset.values)
            self._base_preset = preset
            self.preset_combo.blockSignals(True)
            idx = self.preset_combo.findText(CUSTOM)
            if idx >= 0:
                self.preset_combo.removeItem(idx)
            self.preset_combo.setCurrentText(name)
            self.preset_combo.blockSignals(False)
        finally:
            self._applying = False
        self._update_summary()

    def _on_preset_chosen(self, name: str) -> None:
        if name in PRESETS:
            self.apply_preset(name)

    def _on_field_edited(self, *_: Any) -> None:
        if self._applying:
            return
        if self.preset_combo.currentText() != CUSTOM:
            self.preset_combo.blockSignals(True)
            if self.preset_combo.findText(CUSTOM) < 0:
                self.preset_combo.addItem(CUSTOM)
            self.preset_combo.setCurrentText(CUSTOM)
            self.preset_combo.blockSignals(False)
        self._update_summary()

    def _shipped_detector_applies(self) -> bool:
        p = self._base_preset
        return p.shipped_detector is not None and self.backbone_combo.currentText() == p.values.get("backbone")

    def summary_text(self) -> str:
        """The one-line summary under the preset chooser: what the preset does and its estimated time."""
        p = self._base_preset
        if self.preset_name == CUSTOM:
            head = f"custom (from {p.name}): {self.denoiser_combo.currentText()} + {self.backbone_combo.currentText()} " \
                   f"detector, T1 {self.t1_spin.value()}, {self.rounds_spin.value()} x (T2 {self.t2_spin.value()} / " \
                   f"T3 {self.t3_spin.value()}), batch {self.batch_spin.value()}"
            if p.shipped_detector and not self._shipped_detector_applies():
                head += "; the shipped detector fits ResNet-18 only, so the detector starts untrained"
                if self.t1_spin.value() == 0:
                    head += " and T1 = 0 leaves it untrained"
        else:
            head = p.summary
        cfg = self._cost_config()
        est = p.estimate_seconds(cfg, self.method_combo.currentText()) if cfg is not None else None
        if est is not None and p.timing is not None:
            first = p.timing.first_data_s
            extra = (f"+{format_duration(first - p.timing.data_s)} the first time" if first is not None
                     else "longer the first time")
            tail = (f"Estimated time: {format_duration(est)} on {p.timing.machine} ({extra}, while the low-dose "
                    "scan of the data is simulated once).")
        elif p.timing is None and self.preset_name != CUSTOM:
            tail = "Estimated time: hours on a GPU; weeks on a CPU."
        else:
            tail = "Time not estimated for these settings: the status line shows s/step and the time left once it runs."
        return f"{head}. {tail}"

    def _cost_config(self) -> Optional[TrainConfig]:
        try:
            return TrainConfig(
                denoiser=self.denoiser_combo.currentText(), detector_backbone=self.backbone_combo.currentText(),
                t1=self.t1_spin.value(), t2=self.t2_spin.value(), t3=self.t3_spin.value(),
                rounds=self.rounds_spin.value(), batch_size=self.batch_spin.value(),
                image_size=self.size_spin.value() or None, crop_size=self.crop_spin.value() or None,
                device=self.device_combo.currentText(), form=self.form_combo.currentText(),
                strategy=self.strategy_combo.currentText())
        except (TypeError, ValueError):
            return None

    def _update_summary(self, *_: Any) -> None:
        self.preset_summary.setText(self.summary_text())

    def set_values(self, **values: Any) -> None:
        """Set form fields programmatically: ``denoiser, backbone, method, form, strategy, perceptual,
        baseline_loss, task_network, loss_reduction, n0, t1, t2, t3, rounds, lambda1, lambda2, k, batch_size, image_size,
        crop_size, device, run_dir, sample, data_path``. A change of a preset field makes the preset ``"custom"``.

        Raises
        ------
        KeyError
            Unknown field.
        """
        combos = {**self._preset_combos(), "device": self.device_combo, "sample": self.sample_combo}
        spins = self._spins()
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
        preset = self._base_preset
        extras: dict[str, Any] = dict(preset.extras)
        if all(src.startswith("sample:") for src in train_data):
            # the demo's data: the shared, content-addressed low-dose cache is reused
            extras.update(preset.sample_extras)
            extras["cache_dir"] = str(ldct_cache_dir())
        if self._shipped_detector_applies():
            extras["detector_weights"] = str(shipped_weights(preset.shipped_detector))
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
            **extras,
        )
        return cfg.validate()


__all__ = ["CUSTOM", "DATA_LAYERS", "DATA_PATH", "DATA_SAMPLE", "LAYER_DATA_FILE", "PRESETS", "PresetTiming",
           "TrainForm", "TrainPreset", "default_preset_name", "save_layers_npz"]
