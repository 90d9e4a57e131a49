"""Choosing layers in the widgets: which layers are offered for what, and keeping the choosers in step with
the viewer's layer list.

* :class:`LayerFollower`: calls a widget's refresh when a layer is added, removed, moved or renamed. Every
  layer chooser of the plugin follows the layer list through it (the magicgui :class:`LayerChooser` /
  :class:`LayerMultiChooser` of Simulate, Denoise, Detect and CT window, and the Qt drop-downs of Compare,
  ROI radiomics and Train).
* :func:`refill_combo` / :func:`guess_name`: refill a Qt drop-down of layer names, keeping the current
  choice when that layer still exists, else a guess from the layer names.
* :func:`image_layers`, :func:`shapes_layers`, :func:`box_layers`, :func:`is_detection_layer`,
  :func:`layer_by_name`: the layers a chooser offers. The roles of the layers the plugin makes are named
  here once (:data:`DETECTIONS_KIND`, :data:`PROPOSALS_KIND`, :data:`DIFFERENCE_ROLE`,
  :data:`RADIOMICS_ROI_NAME`).

napari hands plugin widgets proxies of the viewer and its layers, so layers are compared by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from magicgui.widgets import ComboBox, Select
from napari.layers import Image, Shapes

#: The "nothing chosen" entry of the Qt drop-downs.
NONE = "(none)"

#: ``metadata["kind"]`` of the Detect widget's detections layers.
DETECTIONS_KIND = "detections"
#: ``metadata["kind"]`` of the Detect widget's RPN proposals layers.
PROPOSALS_KIND = "rpn proposals"
#: ``metadata["lidnet_role"]`` of the Compare widget's difference maps (``<name> − NDCT``, HU).
DIFFERENCE_ROLE = "lidnet_difference"
#: Name of the ROI radiomics widget's shapes layer showing the measured ROI.
RADIOMICS_ROI_NAME = "radiomics ROI"


# --------------------------------------------------------------------------------------------------
# following the layer list
# --------------------------------------------------------------------------------------------------
class LayerFollower:
    """Call ``callback()`` (GUI thread, no arguments) whenever a layer of ``viewer`` is added, removed,
    moved or renamed, i.e. whenever a layer chooser's list may be out of date.

    napari keeps only weak references to the bound methods connected here: the owner keeps the follower
    alive (e.g. as an attribute), and once the owner is gone the connections die with it. A callback that
    raises ``RuntimeError`` (its Qt widget was deleted while the viewer closes) is ignored.

    Parameters
    ----------
    viewer : napari.Viewer or None
        None: nothing is followed.
    callback : callable
        The chooser's refresh.
    """

    def __init__(self, viewer: Any, callback: Callable[[], Any]):
        self.viewer = viewer
        self.callback = callback
        if viewer is None:
            return
        events = viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._on_changed)
        events.reordered.connect(self._on_changed)  # move, reverse
        for layer in viewer.layers:
            layer.events.name.connect(self._on_changed)

    def _on_inserted(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(self._on_changed)
        self._on_changed()

    def _on_changed(self, event: Any = None) -> None:
        try:
            self.callback()
        except RuntimeError:  # the Qt widget is gone (viewer closing)
            pass


def guess_name(names: Iterable[str], words: Sequence[str]) -> str | None:
    """The first name containing one of ``words`` (case-insensitive), or None."""
    return next((n for n in names if any(w in n.lower() for w in words)), None)


def refill_combo(combo: Any, names: Sequence[str], preferred: str | None = None, fallback: str = NONE) -> None:
    """Refill a Qt ``QComboBox`` with ``(none)`` + ``names`` without emitting its change signals.

    The current choice is kept when it is still in ``names``; otherwise ``preferred`` is chosen (a guess,
    e.g. from :func:`guess_name`), else ``fallback``.
    """
    cur = combo.currentText()
    combo.blockSignals(True)
    try:
        combo.clear()
        combo.addItems([NONE, *names])
        combo.setCurrentText(cur if cur in names else (preferred or fallback))
    finally:
        combo.blockSignals(False)


# --------------------------------------------------------------------------------------------------
# which layers are offered
# --------------------------------------------------------------------------------------------------
def layer_by_name(viewer: Any, name: str | None) -> Any:
    """The layer called ``name`` (a drop-down's text), or None for ``(none)``, an empty or a stale name."""
    if not name or name == NONE or name not in viewer.layers:
        return None
    return viewer.layers[name]


def image_layers(viewer: Any, include_derived: bool = True) -> list:
    """Grey-level image layers of the viewer (bottom to top; RGB images left out), optionally without the
    Compare widget's difference maps."""
    out = [ly for ly in viewer.layers if isinstance(ly, Image) and not getattr(ly, "rgb", False)]
    if not include_derived:
        out = [ly for ly in out if (ly.metadata or {}).get("lidnet_role") != DIFFERENCE_ROLE]
    return out


def shapes_layers(viewer: Any) -> list:
    """Shapes layers of the viewer (bottom to top)."""
    return [ly for ly in viewer.layers if isinstance(ly, Shapes)]


def is_detection_layer(layer: Any) -> bool:
    """True for a shapes layer of detections: made by the Detect widget (``metadata["kind"]``), marked as
    such (``metadata["lidnet_role"]``), or named so ("detect" in its name)."""
    md = layer.metadata or {}
    return bool(
        md.get("lidnet_role") in ("detections", "detection")
        or md.get("kind") == DETECTIONS_KIND
        or "detect" in layer.name.lower()
    )


def is_box_layer(layer: Any) -> bool:
    """True for a shapes layer that may hold reference lesion boxes: not detections, not RPN proposals, not
    the radiomics ROI."""
    return not (
        is_detection_layer(layer)
        or (layer.metadata or {}).get("kind") == PROPOSALS_KIND
        or layer.name == RADIOMICS_ROI_NAME
    )


def box_layers(viewer: Any) -> list:
    """Shapes layers offered as lesion boxes (ground truth): see :func:`is_box_layer`."""
    return [ly for ly in shapes_layers(viewer) if is_box_layer(ly)]


# --------------------------------------------------------------------------------------------------
# magicgui choosers
# --------------------------------------------------------------------------------------------------
class _LayerListMixin:
    """Keeps a magicgui categorical widget's choices in step with ``viewer.layers`` (via
    :class:`LayerFollower`)."""

    _viewer: Any
    _layer_type: type

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        if self._viewer is None:
            return []
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, self._layer_type)]

    def _follow_layers(self) -> None:
        self._follower = LayerFollower(self._viewer, self._refresh)

    def _refresh(self) -> None:
        self.reset_choices()  # type: ignore[attr-defined]


class LayerChooser(_LayerListMixin, ComboBox):
    """Drop-down of the viewer's layers of one type (default image layers); ``.value`` is the layer or None.
    The topmost layer is chosen while nothing is.

    Parameters
    ----------
    viewer : napari.Viewer
    layer_type : type
        ``napari.layers.Image`` (default), ``napari.layers.Shapes``...
    label : str
        Label shown in the widget.
    """

    def __init__(self, viewer: Any, layer_type: type | None = None, label: str = "image", **kwargs: Any):
        self._viewer = viewer
        self._layer_type = layer_type or Image
        kwargs.setdefault("nullable", True)
        super().__init__(label=label, choices=self._layer_choices, **kwargs)
        self._follow_layers()
        self._select_default()

    def _select_default(self) -> None:
        if self.value is None:
            choices = self._layer_choices()
            if choices:
                self.value = choices[-1][1]

    def _refresh(self) -> None:
        super()._refresh()
        self._select_default()


class LayerMultiChooser(_LayerListMixin, Select):
    """List of the viewer's layers of one type (default image layers), several selectable; ``.value`` is a
    list of layers."""

    def __init__(self, viewer: Any, layer_type: type | None = None, label: str = "layers", **kwargs: Any):
        self._viewer = viewer
        self._layer_type = layer_type or Image
        super().__init__(label=label, choices=self._layer_choices, **kwargs)
        self._follow_layers()


__all__ = [
    "DETECTIONS_KIND",
    "DIFFERENCE_ROLE",
    "NONE",
    "PROPOSALS_KIND",
    "RADIOMICS_ROI_NAME",
    "LayerChooser",
    "LayerFollower",
    "LayerMultiChooser",
    "box_layers",
    "guess_name",
    "image_layers",
    "is_box_layer",
    "is_detection_layer",
    "layer_by_name",
    "refill_combo",
    "shapes_layers",
]
