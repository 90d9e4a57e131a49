"""Train widget: collaborative LIDnet training in a background process, watched live from napari.

The training runs as ``python -m src_training train --config CONFIG --out RUN_DIR`` in a separate process
(GPU memory is freed when it exits; the viewer stays responsive). A napari thread worker tails
``RUN_DIR/progress.jsonl`` with :func:`src_training.training.read_progress` and hands the events to the GUI
thread, which updates a live loss plot (matplotlib), a status line and the buttons. Control goes through
files, as the CLI contract says: ``RUN_DIR/PAUSE`` (the trainer waits while it exists), ``RUN_DIR/STOP``
(finish the step, save, exit 0). When the process ends, ``denoiser.pt`` and ``detector.pt`` are registered
in :mod:`napari_lidnet._registry` so the Denoise and Detect widgets list them.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QApplication,
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

from .compare import NONE, image_layers, shapes_layers

if TYPE_CHECKING:
    import napari

#: Files of a run folder (see docs/architecture.md, CLI contract).
PROGRESS_FILE = "progress.jsonl"
STOP_FILE = "STOP"
PAUSE_FILE = "PAUSE"
LOG_FILE = "train.log"
CONFIG_FILE = "widget_config.json"
LAYER_DATA_FILE = "train_data_from_layers.npz"
STATE_FILE = "trainer_state.pt"

#: Colours of the phase shading in the loss plot.
PHASE_COLORS = {"T1": "#3b82f6", "T2": "#22c55e", "T3": "#f59e0b", "baseline": "#9ca3af", "joint": "#a855f7"}

DATA_LAYERS = "open image + boxes layers"
DATA_PATH = "file or folder"
DATA_SAMPLE = "bundled sample"


# ------------------------------------------------------------------------------------------- headless parts
def event_dict(ev: Any) -> dict[str, Any]:
    """A progress event as a plain dict (accepts dicts, dataclasses such as ``ProgressEvent``, or objects
    with ``to_dict``)."""
    if isinstance(ev, dict):
        return ev
    if dataclasses.is_dataclass(ev):
        return dataclasses.asdict(ev)
    if hasattr(ev, "to_dict"):
        return dict(ev.to_dict())
    return dict(vars(ev))


def training_command(config_path: Path, run_dir: Path, resume: Path | None = None, method: str = "lidnet") -> list[str]:
    """The argv of the background training process (no shell):
    ``[python, -m, src_training, train, --config, CONFIG, --out, RUN_DIR, (--method M), (--resume STATE)]``."""
    cmd = [sys.executable, "-m", "src_training", "train", "--config", str(config_path), "--out", str(run_dir)]
    if method and method != "lidnet":
        cmd += ["--method", method]
    if resume is not None:
        cmd += ["--resume", str(resume)]
    return cmd


def _child_env() -> dict[str, str]:
    """Environment of the training process: ours, with this checkout on PYTHONPATH (works uninstalled)."""
    import src_training

    root = str(Path(src_training.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def launch_training(cmd: Sequence[str], run_dir: Path) -> subprocess.Popen:
    """Start the training process; stdout and stderr go to ``RUN_DIR/train.log`` (appended).

    Stale ``STOP`` / ``PAUSE`` files of an earlier run in the folder are removed first.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in (STOP_FILE, PAUSE_FILE):
        try:
            (run_dir / name).unlink()
        except FileNotFoundError:
            pass
    log = open(run_dir / LOG_FILE, "ab")  # noqa: SIM115 - closed by the watcher when the process ends
    log.write(f"\n=== {datetime.now().isoformat(timespec='seconds')} {' '.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=_child_env(), cwd=str(run_dir)
    )
    proc._lidnet_log = log  # type: ignore[attr-defined]
    return proc


def watch_training(
    proc: subprocess.Popen,
    progress_path: Path,
    offset: int = 0,
    poll_s: float = 0.2,
    read: Callable[[Path, int], tuple[list, int]] | None = None,
) -> Iterator[tuple[list[dict], int]]:
    """Generator run in a napari thread worker: tail ``progress.jsonl`` until the process exits.

    Yields ``(events, new_offset)`` every ``poll_s`` seconds (``events`` may be empty: yielding often lets
    ``worker.quit()`` act quickly) and returns the process's exit code.

    Parameters
    ----------
    proc : subprocess.Popen
        The training process.
    progress_path : Path
        ``RUN_DIR/progress.jsonl`` (may not exist yet).
    offset : int
        Byte offset to start reading from (the end of earlier runs' lines when resuming).
    poll_s : float
        Seconds between polls.
    read : callable, optional
        ``read(path, offset) -> (events, new_offset)``; default :func:`src_training.training.read_progress`.
    """
    if read is None:
        from src_training.training import read_progress as read
    while True:
        rc = proc.poll()
        events: list = []
        if progress_path.exists():
            events, offset = read(progress_path, offset)
        yield [event_dict(e) for e in events], offset
        if rc is not None:
            if progress_path.exists():  # lines written just before the exit
                events, offset = read(progress_path, offset)
                if events:
                    yield [event_dict(e) for e in events], offset
            log = getattr(proc, "_lidnet_log", None)
            if log is not None:
                log.close()
            return rc
        time.sleep(poll_s)


def log_tail(run_dir: Path, n_lines: int = 15) -> str:
    """The last ``n_lines`` lines of ``RUN_DIR/train.log`` (stdout + stderr of the process)."""
    path = Path(run_dir) / LOG_FILE
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-n_lines:])


def save_layers_npz(image_layer, boxes_layer, path: Path) -> Path:
    """Save an image layer (HU) and its boxes shapes layer as a training ``.npz`` (atomic write).

    Format (architecture contract): ``hu`` (z, y, x) float32 HU, ``spacing`` (3,) float64 mm (z, y, x),
    ``boxes`` (n, 5) float32 rows ``slice, x0, y0, x1, y1`` (pixels, edges at pixel borders). The boxes are
    mapped through world coordinates into the image's pixel grid.

    Raises
    ------
    LidnetError
        The image is not 2D/3D, or there is no box on it.
    """
    from src_training.checkpoint import atomic_write_bytes
    from src_training.errors import LidnetError

    from napari_lidnet._layers import boxes_from_shapes_data, layer_spacing

    from .compare import _vertices_in_image

    hu = np.asarray(image_layer.data, dtype=np.float32)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3:
        raise LidnetError(f"Layer '{image_layer.name}' has shape {hu.shape}; training needs a (z, y, x) CT volume.")
    rows = np.zeros((0, 5), dtype=np.float32)
    if boxes_layer is not None and len(boxes_layer.data):
        mapped = [_vertices_in_image(boxes_layer, v, image_layer) for v in boxes_layer.data]
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


def default_runs_root() -> Path:
    """Where new run folders go by default: ``~/lidnet-runs`` (searched by the checkpoint choosers)."""
    return Path.home() / "lidnet-runs"


# ------------------------------------------------------------------------------------------- loss plot
def render_loss_plot(
    series: dict[str, tuple[list[float], list[float]]],
    phases: list[tuple[str, int, float]],
    last_step: float,
    width_px: int,
    height_px: int,
    dark: bool = True,
) -> np.ndarray:
    """Render the loss plot with matplotlib (Agg, no Qt) into an RGBA image.

    Thread-safe (a new Figure per call, nothing global touched), so it runs in a worker thread and the
    GUI thread only shows the finished image.

    Parameters
    ----------
    series : dict name -> (global steps, values)
        One line per loss; log y scale when every value is positive (symlog otherwise).
    phases : list of (phase, round, start global step)
        Shaded bands (T1 blue, T2 green, T3 orange, baseline grey) with their names on top.
    last_step : float
        Right end of the x axis (global steps).
    width_px, height_px : int
        Image size in pixels.
    dark : bool
        napari's dark theme colours.

    Returns
    -------
    ndarray uint8 (height_px, width_px, 4)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fg = "#e5e7eb" if dark else "#111827"
    bg = "#262930" if dark else "#ffffff"
    dpi = 100.0
    fig = Figure(figsize=(max(width_px, 50) / dpi, max(height_px, 50) / dpi), dpi=dpi, facecolor=bg)
    canvas = FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.14, right=0.98, top=0.90, bottom=0.17)
    ax = fig.add_subplot(111)
    ax.set_facecolor(bg)
    for sp in ax.spines.values():
        sp.set_color(fg)
    ax.tick_params(colors=fg, labelsize=8)
    ax.set_xlabel("global step", color=fg, fontsize=9)
    ax.set_ylabel("loss", color=fg, fontsize=9)
    x_end = max(float(last_step), 1.0)
    for i, (phase, rnd, start) in enumerate(phases):
        end = phases[i + 1][2] if i + 1 < len(phases) else x_end
        color = PHASE_COLORS.get(phase, "#9ca3af")
        ax.axvspan(start, max(end, start + 0.5), color=color, alpha=0.18, lw=0)
        label = phase if phase in ("T1", "baseline") else f"{phase} r{rnd}"
        ax.text(start, 1.01, f" {label}", transform=ax.get_xaxis_transform(), va="bottom", ha="left",
                color=color, fontsize=8, fontweight="bold", clip_on=False)
    all_pos = all(v > 0 for _xs, ys in series.values() for v in ys)
    for name, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, lw=1.2, marker="." if len(xs) < 40 else None, ms=4, label=name)
    if series:
        ax.set_yscale("log" if all_pos else "symlog")
        leg = ax.legend(fontsize=7, loc="upper right", framealpha=0.7, facecolor=bg, edgecolor=fg,
                        ncol=2 if len(series) > 4 else 1)
        for t in leg.get_texts():
            t.set_color(fg)
    else:
        ax.text(0.5, 0.5, "losses appear here while training runs", transform=ax.transAxes,
                ha="center", va="center", color=fg, fontsize=9)
    ax.set_xlim(0, x_end * 1.02 + 0.5)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


class LossPlot(QWidget):
    """Live loss plot: one line per loss against the global step, phase shading.

    Rendering is done by :func:`render_loss_plot` (matplotlib Agg) in a napari worker thread and the image is
    shown in a QLabel: a matplotlib ``FigureCanvasQTAgg`` would draw in the GUI thread, which took 80-750 ms
    per redraw on a busy 2-core machine and froze the viewer. At most one render is in flight; new data
    arriving meanwhile triggers one more render afterwards.
    """

    def __init__(self, parent: QWidget | None = None, dark: bool = True):
        super().__init__(parent)
        from qtpy.QtCore import Qt

        self.dark = dark
        self.label = QLabel(self)
        self.label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.label.setMinimumSize(200, 150)
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.setMinimumHeight(240)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.label)
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.phases: list[tuple[str, int, float]] = []  # (phase, round, start global step)
        self.last_step = 0.0
        self._dirty = True
        self._busy = False
        self.draw_count = 0
        self.last_image: np.ndarray | None = None

    def clear(self) -> None:
        """Forget all data."""
        self.series.clear()
        self.phases.clear()
        self.last_step = 0.0
        self._dirty = True

    def add_events(self, events: Sequence[dict]) -> None:
        """Add progress events (``step`` events carry ``losses``; ``phase_start`` starts a shaded band)."""
        for ev in events:
            kind = ev.get("event")
            step = ev.get("global_step")
            if step is None:
                continue
            step = float(step)
            self.last_step = max(self.last_step, step)
            phase = ev.get("phase")
            if kind == "phase_start":
                self.phases.append((str(phase), int(ev.get("round") or 0), step))
                self._dirty = True
            elif kind == "step":
                if phase and (not self.phases or self.phases[-1][0] != phase):
                    self.phases.append((str(phase), int(ev.get("round") or 0), max(step - 1, 0)))
                for name, val in (ev.get("losses") or {}).items():
                    try:
                        v = float(val)
                    except (TypeError, ValueError):
                        continue
                    if not np.isfinite(v):
                        continue
                    xs, ys = self.series.setdefault(str(name), ([], []))
                    xs.append(step)
                    ys.append(v)
                self._dirty = True

    def _size(self) -> tuple[int, int]:
        w, h = self.label.width(), self.label.height()
        if w < 100 or h < 80:
            w, h = max(w, 400), max(h, 260)
        return int(w), int(h)

    def redraw(self, force: bool = False, sync: bool = False) -> None:
        """Render the plot if data changed (or ``force``), in a worker thread (``sync=True``: right here)."""
        if not (self._dirty or force) or self._busy:
            return
        self._dirty = False
        args = (
            {k: (list(xs), list(ys)) for k, (xs, ys) in self.series.items()},
            list(self.phases),
            self.last_step,
            *self._size(),
            self.dark,
        )
        if sync:
            self._show(render_loss_plot(*args))
            return
        from napari.qt.threading import create_worker

        self._busy = True
        worker = create_worker(render_loss_plot, *args, _start_thread=False)
        worker.returned.connect(self._show)
        worker.finished.connect(self._done)
        worker.start()

    def _done(self) -> None:
        self._busy = False

    def _show(self, rgba: np.ndarray) -> None:
        from qtpy.QtGui import QImage, QPixmap

        self.last_image = rgba
        h, w = rgba.shape[:2]
        img = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
        try:
            self.label.setPixmap(QPixmap.fromImage(img))
        except RuntimeError:  # widget deleted meanwhile
            return
        self.draw_count += 1

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt API
        """Re-render at the new size."""
        super().resizeEvent(event)
        self._dirty = True


# ------------------------------------------------------------------------------------------- widget
class TrainWidget(QWidget):
    """Dock widget: configure and run LIDnet collaborative training in the background.

    Parameters
    ----------
    napari_viewer : napari.Viewer

    Attributes
    ----------
    proc : subprocess.Popen or None
        The running training process.
    run_dir : Path or None
        The current run folder.
    events : list[dict]
        Every progress event received from the current run folder (in order).
    last_exit_code : int or None
        Exit code of the last finished process.
    state : str
        ``idle``, ``running``, ``paused``, ``stopping``, ``finished``, ``stopped`` or ``failed``.
    """

    #: argv factory ``(config_path, run_dir, resume, method) -> list[str]``; tests may replace it.
    command_factory: Callable[..., list[str]] = staticmethod(training_command)

    def __init__(self, napari_viewer: "napari.Viewer", parent: QWidget | None = None):
        super().__init__(parent)
        # heavy imports here, in the GUI thread at dock time: importing them later inside the watcher / plot
        # threads holds the import lock and the GIL for hundreds of ms and freezes the viewer
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401
        import src_training.training  # noqa: F401
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

        self.viewer = napari_viewer
        self.proc: subprocess.Popen | None = None
        self.worker = None
        self.run_dir: Path | None = None
        self.events: list[dict] = []
        self.last_exit_code: int | None = None
        self.last_error: str | None = None
        self.state = "idle"
        self._offset = 0
        self._t_start = 0.0
        self._last = {}
        defaults = TrainConfig()

        # ---- data
        data_box = QGroupBox("Training data")
        df = QFormLayout(data_box)
        self.data_mode = QComboBox()
        self.data_mode.addItems([DATA_SAMPLE, DATA_LAYERS, DATA_PATH])
        self.sample_combo = QComboBox()
        try:
            from src_training.sample import sample_case_names

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
        try:
            from ._common import device_choices

            self.device_combo.addItems(device_choices())
        except Exception:  # noqa: BLE001
            self.device_combo.addItems(["auto", "cuda", "cpu"])
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

        # ---- controls
        self.start_btn = QPushButton("Start")
        self.pause_btn = QPushButton("Pause")
        self.pause_btn.setCheckable(True)
        self.stop_btn = QPushButton("Stop")
        self.resume_btn = QPushButton("Resume from checkpoint")
        self.resume_btn.setToolTip("Relaunch in the run folder with --resume RUN_DIR/trainer_state.pt")
        ctl = QHBoxLayout()
        for b in (self.start_btn, self.pause_btn, self.stop_btn, self.resume_btn):
            ctl.addWidget(b)
        self.status = QLabel("idle")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(self.status.textInteractionFlags() | _selectable_flag())
        self.plot = LossPlot(self)

        layout = QVBoxLayout(self)
        layout.addWidget(data_box)
        layout.addWidget(model_box)
        layout.addWidget(run_box)
        layout.addLayout(ctl)
        layout.addWidget(self.status)
        layout.addWidget(self.plot, stretch=1)

        self.data_mode.currentTextChanged.connect(self._update_data_rows)
        self.start_btn.clicked.connect(self._on_start)
        self.pause_btn.toggled.connect(self._on_pause_toggled)
        self.stop_btn.clicked.connect(self._on_stop)
        self.resume_btn.clicked.connect(self._on_resume)
        ev = self.viewer.layers.events
        ev.inserted.connect(self.refresh_choices)
        ev.removed.connect(self.refresh_choices)
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setInterval(500)
        self._redraw_timer.timeout.connect(self.plot.redraw)
        self._redraw_timer.start()  # renders (in a thread) only when new data arrived
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self.refresh_choices()
        self._update_data_rows()
        self._update_buttons()

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
        """Refill the image / boxes layer choosers (current choices kept; NDCT / "box" names preferred)."""
        for cb, names, words in (
            (self.image_combo, [ly.name for ly in image_layers(self.viewer, include_derived=False)], ("ndct",)),
            (
                self.boxes_combo,
                [
                    ly.name
                    for ly in shapes_layers(self.viewer)
                    if (ly.metadata or {}).get("kind") not in ("detections", "rpn proposals")
                    and ly.name != "radiomics ROI"
                ],
                ("box", "lesion"),
            ),
        ):
            cur = cb.currentText()
            cb.blockSignals(True)
            cb.clear()
            cb.addItems([NONE, *names])
            guess = next((n for n in names if any(w in n.lower() for w in words)), None)
            cb.setCurrentText(cur if cur in names else (guess or (names[-1] if names else NONE)))
            cb.blockSignals(False)

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
        from src_training.config import TrainConfig
        from src_training.errors import ConfigError

        mode = self.data_mode.currentText()
        if mode == DATA_SAMPLE:
            name = self.sample_combo.currentText()
            if not name:
                raise ConfigError("No bundled sample case is available; choose open layers or a file instead.")
            train_data = [f"sample:{name}"]
        elif mode == DATA_LAYERS:
            img = self._layer(self.image_combo.currentText())
            boxes = self._layer(self.boxes_combo.currentText())
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

    def _layer(self, name: str):
        if not name or name == NONE or name not in self.viewer.layers:
            return None
        return self.viewer.layers[name]

    # ------------------------------------------------------------------ run control
    @property
    def running(self) -> bool:
        """True while the training process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> subprocess.Popen:
        """Write the config into the run folder and launch a new training process there.

        Returns
        -------
        subprocess.Popen

        Raises
        ------
        LidnetError
            Already running, the run folder already holds a run (use Resume), or a bad configuration.
        """
        from src_training.errors import LidnetError

        if self.running:
            raise LidnetError("A training run is already going; stop it first.")
        run_dir = Path(self.run_edit.text().strip() or default_runs_root() / "run").expanduser().resolve()
        if (run_dir / STATE_FILE).exists() or (run_dir / PROGRESS_FILE).exists():
            raise LidnetError(
                f"{run_dir} already holds a training run. Press 'Resume from checkpoint' to continue it, or "
                "choose a new run folder."
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.build_config(run_dir)
        cfg_path = cfg.save_json(run_dir / CONFIG_FILE)
        self.plot.clear()
        self.events = []
        self._offset = 0
        return self._launch(run_dir, cfg_path, resume=None)

    def resume(self) -> subprocess.Popen:
        """Relaunch the training of the run folder from ``RUN_DIR/trainer_state.pt`` (same config).

        Raises
        ------
        LidnetError
            Already running, or no trainer state / config in the run folder.
        """
        from src_training.errors import LidnetError

        if self.running:
            raise LidnetError("Training is running; stop it before resuming.")
        run_dir = Path(self.run_edit.text().strip()).expanduser().resolve()
        state = run_dir / STATE_FILE
        if not state.is_file():
            raise LidnetError(f"No {STATE_FILE} in {run_dir}: nothing to resume (start a new run instead).")
        cfg_path = next((p for p in (run_dir / CONFIG_FILE, run_dir / "config.json") if p.is_file()), None)
        if cfg_path is None:
            raise LidnetError(f"No configuration ({CONFIG_FILE} or config.json) in {run_dir}.")
        if self.run_dir != run_dir:  # another folder: show its whole history
            self.plot.clear()
            self.events = []
            self._offset = 0
        prog = run_dir / PROGRESS_FILE
        if self._offset == 0 and prog.exists():
            self._load_history(prog)
        return self._launch(run_dir, cfg_path, resume=state)

    def _load_history(self, prog: Path) -> None:
        from src_training.training import read_progress

        events, self._offset = read_progress(prog, 0)
        self._on_events(([event_dict(e) for e in events], self._offset))

    def _launch(self, run_dir: Path, cfg_path: Path, resume: Path | None) -> subprocess.Popen:
        from napari.qt.threading import create_worker

        cmd = self.command_factory(cfg_path, run_dir, resume, self.method_combo.currentText())
        self.run_dir = run_dir
        self.last_exit_code = None
        self.last_error = None
        self.proc = launch_training(cmd, run_dir)
        self._t_start = time.monotonic()
        self.state = "running"
        self.pause_btn.blockSignals(True)
        self.pause_btn.setChecked(False)
        self.pause_btn.setText("Pause")
        self.pause_btn.blockSignals(False)
        self.status.setText(f"started (pid {self.proc.pid}) in {run_dir}; preparing data…")
        worker = create_worker(watch_training, self.proc, run_dir / PROGRESS_FILE, self._offset, _start_thread=False)
        worker.yielded.connect(self._on_events)
        worker.returned.connect(self._on_finished)
        worker.errored.connect(self._on_watch_error)
        self.worker = worker
        worker.start()
        try:
            from ._common import on_window_close

            on_window_close(self.window(), self.shutdown)  # viewer closed: stop the run cleanly
        except Exception:  # noqa: BLE001
            pass
        try:
            from ._common import register_run_dir

            register_run_dir(run_dir.parent)
        except Exception:  # noqa: BLE001
            pass
        self._update_buttons()
        return self.proc

    def pause(self, paused: bool = True) -> None:
        """Create (``paused=True``) or remove ``RUN_DIR/PAUSE``; the trainer waits, computing nothing, while it
        exists."""
        if self.run_dir is None:
            return
        flag = self.run_dir / PAUSE_FILE
        if paused:
            flag.touch()
            if self.running:
                self.state = "paused"
        else:
            try:
                flag.unlink()
            except FileNotFoundError:
                pass
            if self.running:
                self.state = "running"
        self._update_status()
        self._update_buttons()

    def stop(self, force: bool = False) -> None:
        """Ask the trainer to stop: ``RUN_DIR/STOP`` (it finishes the step, saves the checkpoints and exits 0).

        A pause is lifted so that the trainer can see the request. ``force=True`` (or a second press of Stop)
        sends SIGTERM, which the CLI also handles by saving and exiting.
        """
        if self.run_dir is None or not self.running:
            return
        (self.run_dir / STOP_FILE).touch()
        try:
            (self.run_dir / PAUSE_FILE).unlink()
        except FileNotFoundError:
            pass
        if force or self.state == "stopping":
            self.proc.terminate()
        self.state = "stopping"
        self.status.setText("stopping: finishing the current step and saving the checkpoints…")
        self._update_buttons()

    def wait(self, timeout: float = 120.0) -> int | None:
        """Process Qt events until the training process has ended and its events are handled (tests/scripts).
        Returns the exit code (None on timeout)."""
        t0 = time.monotonic()
        while self.worker is not None or self.running:
            QApplication.processEvents()
            if time.monotonic() - t0 > timeout:
                return None
            time.sleep(0.01)
        QApplication.processEvents()
        return self.last_exit_code

    def shutdown(self) -> None:
        """On quit or when the viewer window closes: ask a running trainer to stop cleanly (``RUN_DIR/STOP``:
        it finishes the current step, saves ``trainer_state.pt`` and the model files, and exits 0 by itself,
        also after napari has gone), stop the progress-watcher thread and the plot timer. Idempotent."""
        try:
            if self.running:
                self.stop()
        except Exception:  # noqa: BLE001
            pass
        try:
            self._redraw_timer.stop()
        except RuntimeError:  # Qt object already deleted
            pass
        worker, self.worker = self.worker, None
        if worker is not None:
            from ._common import wait_worker

            try:
                worker.quit()  # the watcher yields every 0.2 s
            except RuntimeError:
                pass
            wait_worker(worker, 5.0)
            log = getattr(self.proc, "_lidnet_log", None)
            if log is not None:
                log.close()  # the child keeps its own handle to train.log

    # ------------------------------------------------------------------ worker callbacks (GUI thread)
    def _on_events(self, item: tuple[list[dict], int]) -> None:
        events, self._offset = item
        if not events:
            if self.running:
                self._update_status()
            return
        self.events.extend(events)
        self.plot.add_events(events)
        for ev in events:
            if ev.get("event") in ("step", "phase_start", "checkpoint", "paused", "stopped", "done", "error"):
                self._last = ev
            if ev.get("event") == "error":
                self.last_error = str(ev.get("message") or "")
        self._update_status()

    def _on_finished(self, rc: int) -> None:
        self.worker = None
        self.last_exit_code = rc
        run_dir = self.run_dir
        registered = self._register_checkpoints() if rc == 0 else []
        kinds = {ev.get("event") for ev in self.events}
        if rc == 0:
            self.state = "stopped" if (self.state == "stopping" or "stopped" in kinds) and "done" not in kinds else "finished"
            what = ", ".join(p.name for p in registered) or "no checkpoint found"
            self.status.setText(
                f"{self.state} (exit 0) after {self._elapsed()}; {what} registered for Denoise / Detect. "
                f"Folder: {run_dir}"
            )
            from napari_lidnet._layers import notify_info

            notify_info(f"Training {self.state}: {what} in {run_dir}")
        else:
            self.state = "failed"
            tail = log_tail(run_dir) if run_dir else ""
            event_msg = self.last_error  # message of an 'error' progress event, if the trainer wrote one
            lines = [ln for ln in tail.splitlines() if ln.strip()]
            key = [ln for ln in lines if "error" in ln.lower()][-2:] or lines[-3:]
            self.last_error = tail or event_msg
            self.status.setText(
                f"FAILED (exit code {rc}): " + (event_msg or "") + "\n" + "\n".join(key)
                + f"\n(full output: {run_dir / LOG_FILE if run_dir else LOG_FILE})"
            )
            self.status.setToolTip(tail)
            from src_training.errors import LidnetError

            from napari_lidnet._layers import notify_error

            notify_error(LidnetError(f"Training failed (exit code {rc}); see {run_dir / LOG_FILE}.\n{tail}"))
        self.proc = None
        self._update_buttons()

    def _on_watch_error(self, exc: BaseException) -> None:
        from napari_lidnet._layers import notify_error

        self.worker = None
        notify_error(exc, "Training monitor")
        self._update_buttons()

    def _register_checkpoints(self) -> list[Path]:
        from napari_lidnet import _registry

        out = []
        if self.run_dir is None:
            return out
        for kind in ("denoiser", "detector"):
            p = self.run_dir / f"{kind}.pt"
            if p.is_file():
                step = next((ev.get("global_step") for ev in reversed(self.events) if ev.get("global_step") is not None), None)
                label = f"{self.run_dir.name} / {kind} ({self.method_combo.currentText()}, step {step})"
                _registry.register_checkpoint(p, kind, label=label, run_dir=str(self.run_dir), step=step)
                out.append(p)
        return out

    # ------------------------------------------------------------------ display
    def _elapsed(self) -> str:
        secs = float(self._last.get("elapsed_s") or (time.monotonic() - self._t_start))
        m, s = divmod(int(secs), 60)
        h, m = divmod(m, 60)
        return f"{h:d}:{m:02d}:{s:02d}"

    def _update_status(self) -> None:
        ev = self._last
        parts = [self.state]
        if ev:
            phase = ev.get("phase")
            if phase:
                rnd = ev.get("round")
                parts.append(f"phase {phase}" + (f" (round {rnd})" if rnd and phase not in ("T1", "baseline") else ""))
            if ev.get("step") is not None and ev.get("phase_steps"):
                parts.append(f"step {ev.get('step')}/{ev.get('phase_steps')}")
            if ev.get("global_step") is not None and ev.get("total_steps"):
                parts.append(f"total {ev.get('global_step')}/{ev.get('total_steps')}")
            losses = ev.get("losses") or {}
            if losses:
                parts.append(", ".join(f"{k} {float(v):.4g}" for k, v in list(losses.items())[:4]))
        else:
            parts.append("preparing data (loading, simulating the low-dose scan)…")
        parts.append(f"elapsed {self._elapsed()}")
        self.status.setText(" · ".join(parts))

    def _update_buttons(self) -> None:
        running = self.running
        self.start_btn.setEnabled(not running)
        self.resume_btn.setEnabled(not running)
        self.pause_btn.setEnabled(running and self.state != "stopping")
        self.stop_btn.setEnabled(running)
        self.stop_btn.setText("Force stop" if self.state == "stopping" else "Stop")

    # ------------------------------------------------------------------ button slots
    def _on_start(self) -> None:
        from napari_lidnet._layers import notify_error

        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - shown to the user
            notify_error(exc, "Train")

    def _on_resume(self) -> None:
        from napari_lidnet._layers import notify_error

        try:
            self.resume()
        except Exception as exc:  # noqa: BLE001
            notify_error(exc, "Resume")

    def _on_pause_toggled(self, checked: bool) -> None:
        self.pause(checked)
        self.pause_btn.setText("Resume" if checked else "Pause")

    def _on_stop(self) -> None:
        self.stop(force=self.state == "stopping")


def _selectable_flag():
    from qtpy.QtCore import Qt

    return Qt.TextInteractionFlag.TextSelectableByMouse
