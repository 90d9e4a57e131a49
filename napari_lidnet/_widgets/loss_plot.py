"""Live loss plot of the Train widget: one line per loss against the global step, the training phases
(T1, T2, T3, baseline, joint) as shaded bands.

:func:`render_loss_plot` draws with matplotlib's Agg backend (no Qt) into an RGBA image, in a napari worker
thread; :class:`LossPlot` shows the finished image in a ``QLabel``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from ._tasks import start_worker

#: Colours of the phase shading in the loss plot.
PHASE_COLORS = {"T1": "#3b82f6", "T2": "#22c55e", "T3": "#f59e0b", "baseline": "#9ca3af", "joint": "#a855f7"}


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



__all__ = ["PHASE_COLORS", "LossPlot", "render_loss_plot"]
