"""CT window widget: window presets (lung, mediastinum, abdomen, liver, bone, brain) and custom W/L,
applied to several image layers together (their ``contrast_limits``)."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton
from napari.layers import Image

from src_training.windowing import WINDOWS, window_limits

from .._layers import window_to_wl
from .._messages import notify_error
from ._layer_choice import LayerMultiChooser

CUSTOM = "custom"


def preset_names() -> list[str]:
    """Window presets offered: the keys of ``src_training.windowing.WINDOWS`` (duplicates of the same W/L
    listed once, e.g. abdomen = soft tissue) + ``"custom"``."""
    names: list[str] = []
    seen: set[tuple[float, float]] = set()
    for name, wl in WINDOWS.items():
        if tuple(wl) in seen:
            continue
        seen.add(tuple(wl))
        names.append(name)
    return names + [CUSTOM]


def apply_window_to_layers(layers: list[Any], width: float, level: float, name: str = CUSTOM) -> None:
    """Set ``contrast_limits = (L - W/2, L + W/2)`` (HU) on every layer and record the window in its metadata.

    Raises
    ------
    ConfigError
        If ``width <= 0``.
    """
    lo, hi = window_limits((float(width), float(level)))
    for layer in layers:
        rng = getattr(layer, "contrast_limits_range", None)
        if rng is not None:
            # let the slider reach the window even when the data do not (e.g. bone window on a lung crop)
            new_rng = (min(float(rng[0]), lo), max(float(rng[1]), hi))
            if tuple(new_rng) != tuple(rng):
                layer.contrast_limits_range = new_rng
        layer.contrast_limits = (lo, hi)
        md = layer.metadata
        md["window"] = (float(width), float(level))
        md["window_name"] = name


class WindowWidget(Container):
    """Apply a CT display window to the chosen image layers.

    Choose a preset (W/L in HU from ``src_training.windowing.WINDOWS``) or type a custom width and level;
    *Apply* sets the contrast limits of every layer chosen in the list (or, when none is chosen there, of
    the image layers selected in napari's layer list, or all image layers). Choosing a preset applies it
    at once.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.layers = LayerMultiChooser(napari_viewer, label="image layers")
        try:
            self.layers.native.setMaximumHeight(110)
        except Exception:  # noqa: BLE001
            pass
        self.layers.tooltip = "Layers to window (none chosen: napari's selected image layers, else all)"
        self.preset = ComboBox(label="preset", choices=preset_names(), value="lung")
        self.win_width = FloatSpinBox(label="width W (HU)", min=1.0, max=6000.0, step=10.0, value=1500.0)
        self.win_level = FloatSpinBox(label="level L (HU)", min=-1500.0, max=3000.0, step=10.0, value=-600.0)
        self.apply_btn = PushButton(text="Apply window")
        self.status = Label(value="")
        self.extend([self.layers, self.preset, self.win_width, self.win_level, self.apply_btn, self.status])
        self._updating = False
        self.preset.changed.connect(self._on_preset)
        self.win_width.changed.connect(self._on_custom)
        self.win_level.changed.connect(self._on_custom)
        self.apply_btn.changed.connect(self.apply)

    # ------------------------------------------------------------------
    def target_layers(self) -> list[Any]:
        """Layers the window is applied to (see class docstring)."""
        chosen = list(self.layers.value or [])
        if chosen:
            return chosen
        selected = [lyr for lyr in self.viewer.layers.selection if isinstance(lyr, Image)]
        if selected:
            return selected
        return [lyr for lyr in self.viewer.layers if isinstance(lyr, Image)]

    def _on_preset(self, name: str) -> None:
        if name == CUSTOM or name not in WINDOWS:
            return
        w, l = window_to_wl(name)
        self._updating = True
        try:
            self.win_width.value = w
            self.win_level.value = l
        finally:
            self._updating = False
        self.apply()

    def _on_custom(self, *_: Any) -> None:
        if self._updating:
            return
        if self.preset.value != CUSTOM:
            self._updating = True
            try:
                self.preset.value = CUSTOM
            finally:
                self._updating = False

    def apply(self, *_: Any) -> list[Any]:
        """Apply the current W/L to the target layers; returns them (errors become notifications)."""
        try:
            layers = self.target_layers()
            name = self.preset.value
            apply_window_to_layers(layers, self.win_width.value, self.win_level.value, name)
            self.status.value = (
                f"W {self.win_width.value:g} / L {self.win_level.value:g} on {len(layers)} layer(s)" if layers else "no image layer"
            )
            return layers
        except Exception as exc:  # noqa: BLE001
            notify_error(exc, "CT window")
            return []
