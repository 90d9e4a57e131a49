"""Live loss plot of the Train widget: one line per loss against the global step, the training phases
(T1, T2, T3, baseline, joint) as shaded bands, the legend below the axes (never over a curve), a log y axis
when the losses span orders of magnitude.

:func:`render_loss_plot` draws with matplotlib's Agg backend (no Qt) into an RGBA image, in a napari worker
thread; :class:`LossPlot` shows the finished image in a ``QLabel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from ._tasks import start_worker

#: Colours of the phase shading in the loss plot.
PHASE_COLORS = {"T1": "#3b82f6", "T2": "#22c55e", "T3": "#f59e0b", "baseline": "#9ca3af", "joint": "#a855f7"}


#: Ratio of the largest to the smallest loss value above which the y axis is logarithmic.
LOG_RATIO = 30.0


def choose_yscale(values: Sequence[float], log_ratio: float = LOG_RATIO) -> str:
    """``"log"`` when no value is negative and the positive ones span more than ``log_ratio`` (e.g. Eq. 8's
    summed reconstruction term in the hundreds next to detector losses of 0.01; exact zeros, such as a box
    loss without a positive proposal, are left out of a log plot), ``"symlog"`` when they span that much and
    some are negative (a critic's Wasserstein estimate), else ``"linear"``."""
    vals = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    mag = np.abs(vals)
    nonzero = mag[mag > 0]
    if nonzero.size == 0 or nonzero.max() / nonzero.min() <= log_ratio:
        return "linear"
    return "log" if (vals >= 0).all() else "symlog"


def _symlog_threshold(values: Sequence[float]) -> float:
    """Linear range of a symlog axis: the 5th percentile of the non-zero magnitudes (small losses stay
    readable instead of being squashed around 0)."""
    mag = np.abs(np.asarray([v for v in values if np.isfinite(v) and v != 0], dtype=np.float64))
    return float(np.percentile(mag, 5)) if mag.size else 1.0


def loss_label(name: str) -> str:
    """Legend name of a loss: torchvision's ``loss_`` prefix dropped (``loss_rpn_box_reg`` -> ``rpn_box_reg``)."""
    return name[5:] if name.startswith("loss_") and len(name) > 5 else name


def build_loss_figure(
    series: dict[str, tuple[list[float], list[float]]],
    phases: list[tuple[str, int, float]],
    last_step: float,
    width_px: int,
    height_px: int,
    dark: bool = True,
) -> tuple[Figure, Any, Any]:
    """The loss plot as a matplotlib Figure (Agg canvas attached, not drawn yet), with its axes and legend.

    The legend sits below the axes, outside them (it never covers a curve), in as many columns as fit the
    width; the phase names sit above the axes. Fonts are 9-10 pt, readable in a ~420 px wide dock.

    Parameters
    ----------
    series, phases, last_step, width_px, height_px, dark
        As :func:`render_loss_plot`.

    Returns
    -------
    (Figure, Axes, Legend or None)
        The legend is None when there is no series yet.
    """
    fg = "#e5e7eb" if dark else "#111827"
    bg = "#262930" if dark else "#ffffff"
    dpi = 100.0
    fig = Figure(figsize=(max(width_px, 50) / dpi, max(height_px, 50) / dpi), dpi=dpi, facecolor=bg,
                 layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    ax.set_facecolor(bg)
    for sp in ax.spines.values():
        sp.set_color(fg)
    ax.tick_params(colors=fg, labelsize=9)
    ax.set_xlabel("training step (all phases)", color=fg, fontsize=10)
    x_end = max(float(last_step), 1.0)
    for i, (phase, rnd, start) in enumerate(phases):
        end = phases[i + 1][2] if i + 1 < len(phases) else x_end
        color = PHASE_COLORS.get(phase, "#9ca3af")
        ax.axvspan(start, max(end, start + 0.5), color=color, alpha=0.18, lw=0)
        label = phase if phase in ("T1", "baseline") else f"{phase} r{rnd}"
        ax.text(start, 1.01, f" {label}", transform=ax.get_xaxis_transform(), va="bottom", ha="left",
                color=color, fontsize=9, fontweight="bold", clip_on=False)
    for name, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, lw=1.3, marker="." if len(xs) < 40 else None, ms=4, label=loss_label(name))
    legend = None
    if series:
        values = [v for _xs, ys in series.values() for v in ys]
        scale = choose_yscale(values)
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=_symlog_threshold(values))
        else:
            ax.set_yscale(scale)  # log: zeros are not drawn
        ax.set_ylabel("loss (unitless" + (", log scale)" if scale != "linear" else ")"), color=fg, fontsize=10)
        longest = max(len(loss_label(n)) for n in series)
        per_col = 7.0 * longest + 40.0  # pixels of one legend entry at 9 pt (handle + text + gap)
        ncol = int(max(1, min(len(series), (width_px - 20) // per_col)))
        legend = fig.legend(loc="outside lower center", ncol=ncol, fontsize=9, frameon=False)
        for t in legend.get_texts():
            t.set_color(fg)
    else:
        ax.set_ylabel("loss (unitless)", color=fg, fontsize=10)
        ax.text(0.5, 0.5, "losses appear here while training runs", transform=ax.transAxes,
                ha="center", va="center", color=fg, fontsize=10)
    ax.set_xlim(0, x_end * 1.02 + 0.5)
    return fig, ax, legend


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
    GUI thread only shows the finished image. Layout: :func:`build_loss_figure`.

    Parameters
    ----------
    series : dict name -> (global steps, values)
        One line per loss (unitless); y axis from :func:`choose_yscale` (log when the values span more than
        :data:`LOG_RATIO`).
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
    fig, _ax, _legend = build_loss_figure(series, phases, last_step, width_px, height_px, dark)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


class LossPlot(QWidget):
    """Live loss plot: one line per loss against the global step, phase shading.

    Rendering is done by :func:`render_loss_plot` (matplotlib Agg) in a napari worker thread and the image is
    shown in a QLabel: a matplotlib ``FigureCanvasQTAgg`` would draw in the GUI thread, which took 80-750 ms
    per redraw on a busy 2-core machine and froze the viewer. At most one render is in flight; new data
    arriving meanwhile triggers one more render afterwards.
    """

    def __init__(self, parent: QWidget | None = None, dark: bool = True):
        super().__init__(parent)
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
        self._busy = True
        start_worker(render_loss_plot, *args, returned=self._show, finished=self._done)

    def _done(self) -> None:
        self._busy = False

    def _show(self, rgba: np.ndarray) -> None:
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



__all__ = ["LOG_RATIO", "PHASE_COLORS", "LossPlot", "build_loss_figure", "choose_yscale", "loss_label",
           "render_loss_plot"]
