"""Annotations stay on top: shapes (lesion boxes, detections, RPN proposals, ROIs) and points layers are kept
above every image layer of a viewer, so a new image (LDCT, denoised, simulated) never hides the ground truth.

:func:`keep_annotations_on_top` is called by the sample data, ``lidnet gui`` and the workbench; it connects
once per viewer and then reorders after every layer insertion.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from napari.layers import Image, Points, Shapes

logger = logging.getLogger("napari_lidnet")

#: Layer types kept above every image layer.
ANNOTATION_TYPES: tuple[type, ...] = (Shapes, Points)

# id of each viewer already followed (the real ViewerModel, never a proxy) -> its keeper; an entry is dropped
# when its viewer is garbage collected (weakref.finalize). napari's event emitters hold bound methods weakly,
# so this dict is what keeps each keeper alive.
_KEEPERS: dict[int, "_Keeper"] = {}
# ids of the layer lists being reordered right now (re-entrance guard)
_REORDERING: set[int] = set()


def _unwrap(obj: Any) -> Any:
    """The object behind napari's ``PublicOnlyProxy`` (plugin widgets get proxies of the viewer)."""
    return getattr(obj, "__wrapped__", obj)


class _Keeper:
    """Reorders one viewer's layer list; holds the viewer weakly (the viewer owns the connection)."""

    def __init__(self, viewer: Any):
        self._viewer = weakref.ref(viewer)

    def on_inserted(self, event: Any = None) -> None:
        viewer = self._viewer()
        if viewer is None:
            return
        try:
            annotations_on_top(viewer.layers)
        except Exception:  # noqa: BLE001 - the order is a comfort: never break adding a layer
            logger.exception("napari-lidnet: could not move the annotation layers above the images")


def annotations_on_top(layers: Any) -> int:
    """Move every shapes / points layer of ``layers`` that lies below an image layer to just above the top
    image layer, keeping the relative order of the moved layers and of all the others; the selection and
    the active layer are left as they were.

    Parameters
    ----------
    layers : napari.components.LayerList
        A viewer's layer list (index 0 is drawn at the bottom).

    Returns
    -------
    int
        Number of layers moved (0 when the order was already right).
    """
    layers = _unwrap(layers)
    if id(layers) in _REORDERING:  # a move below re-entered (napari emits no insertion on a move): ignore
        return 0
    items = list(layers)
    image_idx = [i for i, layer in enumerate(items) if isinstance(layer, Image)]
    if not image_idx:
        return 0
    top_image = image_idx[-1]
    below = [i for i in range(top_image) if isinstance(items[i], ANNOTATION_TYPES)]
    if not below:
        return 0
    selection = getattr(layers, "selection", None)
    selected = set(selection) if selection is not None else set()
    _REORDERING.add(id(layers))
    try:
        layers.move_multiple(below, top_image + 1)
    finally:
        _REORDERING.discard(id(layers))
        if selection is not None and set(selection) != selected:
            # the active layer is the single selected one (napari's Selection): restoring the set restores it
            selection.clear()
            selection.update(selected)
    return len(below)


def keep_annotations_on_top(viewer: Any) -> None:
    """Keep every shapes and points layer of ``viewer`` above every image layer, from now on.

    Reorders once now and after every layer insertion (``viewer.layers.events.inserted``; an image added
    last, e.g. a denoised volume, goes below the boxes). Layers are moved with napari's own ``move`` (which
    emits ``moved`` / ``reordered``, never ``inserted``); the relative order of the shapes / points layers
    and of the other layers is kept, and the selected and active layers do not change. Idempotent:
    calling it again for the same viewer (or a napari proxy of it) connects nothing more.

    Parameters
    ----------
    viewer : napari.Viewer or napari.components.ViewerModel or None
        The viewer (a plugin widget's viewer proxy is fine). None: nothing happens.
    """
    if viewer is None:
        return
    real = _unwrap(viewer)
    keeper = _KEEPERS.get(id(real))
    if keeper is None or keeper._viewer() is not real:
        keeper = _Keeper(real)
        _KEEPERS[id(real)] = keeper
        weakref.finalize(real, _KEEPERS.pop, id(real), None)
        # position="last": napari's own handlers of the insertion (layer list view, canvas) run first
        real.layers.events.inserted.connect(keeper.on_inserted, position="last")
    keeper.on_inserted()


__all__ = ["ANNOTATION_TYPES", "annotations_on_top", "keep_annotations_on_top"]
