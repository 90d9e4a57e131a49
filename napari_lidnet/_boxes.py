"""Box (shapes) layers of napari-lidnet: lesion boxes per slice <-> napari rectangles, and the boxes of a
shapes layer that lie on one slice of an image layer.

No Qt import (pandas is imported by :func:`replace_rectangles` only).

Conventions (see ``docs/architecture.md``):

* Boxes are ``xyxy`` float32 in pixels of their slice with edges at pixel borders (a one-pixel lesion at
  column ``c`` has ``x0 = c, x1 = c + 1``). napari puts pixel *centres* at integer data coordinates, so a
  border at ``c`` is drawn at data coordinate ``c - 0.5``; :func:`boxes_to_rectangles` and
  :func:`boxes_from_shapes_data` apply and undo that half-pixel shift.
* A rectangle in a 3D shapes layer needs its four corners: an array ``(4, 3)`` of ``(z, y, x)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._layers import layer_geometry

#: Edge colour of reference (ground-truth) lesion boxes.
REFERENCE_BOX_COLOR = "#00ff7f"
#: Edge colour of RPN proposals.
PROPOSAL_BOX_COLOR = "#4da6ff"
#: Colormap of detection boxes coloured by score (0 = dark blue, 1 = yellow).
SCORE_COLORMAP = "plasma"
#: Colour of the score written above each detection (bright yellow: readable on lung, soft tissue and bone).
DETECTION_TEXT_COLOR = "#ffe500"
#: Size of that text in screen points (napari text is not scaled with the zoom).
DETECTION_TEXT_SIZE = 9


def detection_text(feature: str = "score") -> dict[str, Any]:
    """napari text spec of detection boxes: the score (two decimals) at the upper-left corner of each box,
    small, bright and of constant size on screen (``scaling=False``; napari draws it only for the boxes on
    the current slice). RPN proposals get no text (their objectness is a feature of the layer): written on
    every proposal it piles up into unreadable stacks.

    Parameters
    ----------
    feature : str
        Feature column holding the score in [0, 1].

    Returns
    -------
    dict
        ``string``, ``color``, ``size`` (points), ``anchor`` ("upper_left"), ``scaling`` (False), ``visible``.
    """
    return {"string": "{" + feature + ":.2f}", "color": DETECTION_TEXT_COLOR, "size": DETECTION_TEXT_SIZE,
            "anchor": "upper_left", "scaling": False, "visible": True}


def boxes_to_rectangles(boxes_by_slice: Mapping[int, Any], ndim: int = 3) -> tuple[list[np.ndarray], np.ndarray]:
    """Turn boxes per slice into napari rectangles.

    Parameters
    ----------
    boxes_by_slice : mapping int -> array (n, 4) or (n, >=4)
        ``xyxy`` boxes in pixels (edges at pixel borders) of slice ``z`` (the key).
    ndim : int
        3 (default): each rectangle is its four corners ``(4, 3)`` of ``(z, y, x)`` in data coordinates;
        2: ``(4, 2)`` corners ``(y, x)`` (the slice index is dropped).

    Returns
    -------
    rectangles : list of ndarray float32 (4, ndim)
        Corners in napari data coordinates (pixel centres at integers: borders at ``x0 - 0.5``...),
        ordered by slice then by input order.
    slices : ndarray int64 (N,)
        The slice of each rectangle.
    """
    rects: list[np.ndarray] = []
    slices: list[int] = []
    for z in sorted(int(k) for k in boxes_by_slice):
        arr = boxes_by_slice[z] if z in boxes_by_slice else boxes_by_slice[np.int64(z)]
        arr = np.asarray(arr, dtype=np.float32).reshape(-1, np.asarray(arr).shape[-1] if np.asarray(arr).size else 4)
        for b in arr:
            x0, y0, x1, y1 = (float(v) - 0.5 for v in b[:4])
            corners2 = np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=np.float32)
            if ndim == 3:
                corners = np.concatenate([np.full((4, 1), z, dtype=np.float32), corners2], axis=1)
            else:
                corners = corners2
            rects.append(corners)
            slices.append(z)
    return rects, np.asarray(slices, dtype=np.int64)


def _shape_slice(shape: np.ndarray) -> int:
    if shape.shape[-1] >= 3:
        return int(round(float(np.median(shape[:, -3]))))
    return 0


def boxes_from_shapes_data(shapes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`boxes_to_rectangles` for any list of shapes (their bounding boxes).

    Returns
    -------
    slices : ndarray int64 (N,)
    boxes : ndarray float32 (N, 4)
        ``xyxy`` in pixels, edges at pixel borders.
    """
    slices = np.zeros(len(shapes), dtype=np.int64)
    boxes = np.zeros((len(shapes), 4), dtype=np.float32)
    for i, s in enumerate(shapes):
        s = np.asarray(s, dtype=np.float64)
        slices[i] = _shape_slice(s)
        ys, xs = s[:, -2], s[:, -1]
        boxes[i] = (xs.min() + 0.5, ys.min() + 0.5, xs.max() + 0.5, ys.max() + 0.5)
    return slices, boxes


def shapes_records(data: list[np.ndarray], features: Any = None) -> list[dict[str, Any]]:
    """Rows ``slice, x0, y0, x1, y1, label, score`` of shapes (data coordinates) and their features.

    ``label`` defaults to 1 (lesion) and ``score`` to 1.0 (a reference box) when the features lack them;
    an ``objectness`` feature is used as the score of RPN proposals.
    """
    slices, boxes = boxes_from_shapes_data(list(data))
    n = len(slices)
    labels = np.ones(n, dtype=np.int64)
    scores = np.ones(n, dtype=np.float32)
    if features is not None and len(features) == n and n:
        cols = list(getattr(features, "columns", features.keys() if isinstance(features, Mapping) else []))
        if "label" in cols:
            labels = np.asarray(features["label"], dtype=np.int64)
        if "score" in cols:
            scores = np.asarray(features["score"], dtype=np.float32)
        elif "objectness" in cols:
            scores = np.asarray(features["objectness"], dtype=np.float32)
    return [
        {
            "slice": int(slices[i]),
            "x0": float(boxes[i, 0]),
            "y0": float(boxes[i, 1]),
            "x1": float(boxes[i, 2]),
            "y1": float(boxes[i, 3]),
            "label": int(labels[i]),
            "score": float(scores[i]),
        }
        for i in range(n)
    ]


def boxes_from_shapes_layer(layer: Any) -> dict[int, np.ndarray]:
    """Read boxes back from a shapes layer.

    Parameters
    ----------
    layer : napari.layers.Shapes
        Rectangles (or any shapes: their bounding boxes) in the layer's data coordinates, i.e. the pixel
        grid of the image layer with the same transform (scale, rotate, translate).

    Returns
    -------
    dict int -> ndarray float32 (n, 4)
        ``xyxy`` boxes per slice, in pixels with edges at pixel borders (the inverse of
        :func:`shapes_layer_data`). Slices without boxes are absent.
    """
    slices, boxes = boxes_from_shapes_data(list(layer.data))
    out: dict[int, np.ndarray] = {}
    for z in np.unique(slices):
        out[int(z)] = boxes[slices == z].astype(np.float32)
    return out


def shapes_layer_data(
    boxes_by_slice: Mapping[int, Any],
    *,
    name: str = "lesion boxes",
    like: Any = None,
    scale: tuple[float, ...] | None = None,
    translate: tuple[float, ...] | None = None,
    features: Mapping[str, Any] | None = None,
    edge_color: Any = REFERENCE_BOX_COLOR,
    edge_width: float = 1.5,
    text: Any = None,
    metadata: Mapping[str, Any] | None = None,
    ndim: int = 3,
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Data and keyword arguments of ``viewer.add_shapes`` for boxes per slice.

    Parameters
    ----------
    boxes_by_slice : mapping int -> (n, 4)
        ``xyxy`` boxes in pixels per slice (architecture conventions).
    name : str
        Layer name.
    like : napari.layers.Image or dict, optional
        Image layer (or its layer-data kwargs) whose whole transform (scale, rotate, translate:
        :func:`napari_lidnet._layers.layer_geometry`) the rectangles follow: drawn in the image's data
        coordinates, they stay on its pixels under any orientation of the series.
    scale, translate : tuple, optional
        Override ``like``'s.
    features : mapping of column -> array (N,), optional
        Per-rectangle features, in the order of :func:`boxes_to_rectangles` (slice, then input order).
        ``slice`` is always added.
    edge_color : colour or feature name
        Default: a bright green; pass ``"score"`` with ``edge_colormap`` in ``kwargs`` to colour by score.
    edge_width : float
        In screen pixels (``edge_width_is_relative`` is not used by napari shapes; width is in data units
        scaled by the layer; 1.5 reads well on 512-pixel slices).
    text : dict or str, optional
        napari text spec, e.g. ``{"string": "{score:.2f}", ...}``.
    metadata : mapping, optional
        Layer metadata.
    ndim : int
        3 for volumes (four corners per rectangle), 2 for single images.

    Returns
    -------
    data : list of ndarray (4, ndim)
    kwargs : dict
        ``name, shape_type='rectangle', ndim, edge_color, face_color='transparent', edge_width, features,
        metadata`` (+ ``scale``, ``translate``, ``rotate`` and any ``shear`` / ``affine`` of ``like``, + ``text``).
    """
    rects, slices = boxes_to_rectangles(boxes_by_slice, ndim=ndim)
    feats: dict[str, Any] = {"slice": slices}
    if features:
        for k, v in features.items():
            feats[k] = np.asarray(v)
    geometry: dict[str, Any] = layer_geometry(like, ndim=ndim) if like is not None else {}
    if scale is not None:
        geometry["scale"] = tuple(float(s) for s in list(scale)[-ndim:])
    if translate is not None:
        geometry["translate"] = tuple(float(t) for t in list(translate)[-ndim:])
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "rectangle",
        "ndim": ndim,
        "edge_color": edge_color,
        "face_color": "transparent",
        "edge_width": edge_width,
        "opacity": 1.0,
        "features": feats,
        "metadata": dict(metadata or {}),
        **geometry,
    }
    if text is not None:
        kwargs["text"] = text
    return rects, kwargs


def replace_rectangles(layer: Any, rectangles: list[np.ndarray], features: Mapping[str, Any]) -> None:
    """Replace every shape of a shapes layer by ``rectangles`` with ``features`` (one row each), keeping
    the layer's colours, colormap, text and position in the layer list.

    Parameters
    ----------
    layer : napari.layers.Shapes
    rectangles : list of ndarray (4, ndim)
        Corners in data coordinates (see :func:`boxes_to_rectangles`).
    features : mapping column -> array (N,)
    """
    import pandas as pd

    if layer.nshapes:
        layer.selected_data = set(range(layer.nshapes))
        layer.remove_selected()
    if rectangles:
        layer.add_rectangles(list(rectangles))
    layer.features = pd.DataFrame({k: np.asarray(v) for k, v in features.items()})
    try:
        layer.refresh_colors(update_color_mapping=False)
    except Exception:  # noqa: BLE001 - colours by direct value: nothing to refresh
        pass
    layer.refresh()


def vertices_in_image(shapes_layer: Any, verts: np.ndarray, image_layer: Any) -> np.ndarray:
    """Vertices ``(k, shapes.ndim)`` in the shapes layer's data coordinates -> ``(k, image.ndim)`` in the
    image layer's data coordinates (pixels), through world coordinates (so the two layers may have different
    scale / translate)."""
    out = []
    for v in np.asarray(verts, dtype=float):
        w = np.asarray(shapes_layer.data_to_world(v), dtype=float)
        out.append(np.asarray(image_layer.world_to_data(w), dtype=float))
    return np.asarray(out)


def boxes_on_slice(shapes_layer: Any, image_layer: Any, z: int | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Rectangles of a shapes layer that lie on slice ``z`` of ``image_layer``, as xyxy pixel boxes.

    The shapes' vertices are mapped through world coordinates into the image layer's pixel grid (so a
    shapes layer with another scale/translate still works), then converted with the plugin's convention
    (:func:`boxes_from_shapes_data`: napari pixel centres at integers, box edges at
    pixel borders, i.e. corner + 0.5). A 2D shapes layer applies to every slice.

    Parameters
    ----------
    shapes_layer : napari Shapes layer
        Rectangles (or any shapes: their bounding boxes are used).
    image_layer : napari Image layer
        The layer whose pixel grid the boxes are expressed in.
    z : int or None
        Slice index in ``image_layer`` (None for a 2D image).

    Returns
    -------
    boxes : (n, 4) float32
        ``x0, y0, x1, y1`` in pixels of the image slice.
    scores : (n,) float32 or None
        The ``score`` (else ``objectness``) feature of those shapes when the layer has one (detections),
        else None.
    """
    data = list(shapes_layer.data)
    if not data:
        return np.zeros((0, 4), np.float32), None
    mapped = [vertices_in_image(shapes_layer, v, image_layer) for v in data]
    slices, boxes = boxes_from_shapes_data(mapped)
    keep = np.ones(len(boxes), dtype=bool)
    if image_layer.ndim >= 3 and z is not None and shapes_layer.ndim >= 3:
        keep = slices == int(z)
    keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    feats = getattr(shapes_layer, "features", None)
    cols = list(getattr(feats, "columns", []))
    score_col = "score" if "score" in cols else ("objectness" if "objectness" in cols else None)
    scores = None
    if score_col is not None and len(feats) == len(data):
        scores = np.asarray(feats[score_col], dtype=np.float32)[keep]
    return boxes[keep].astype(np.float32), scores


__all__ = [
    "DETECTION_TEXT_COLOR",
    "DETECTION_TEXT_SIZE",
    "PROPOSAL_BOX_COLOR",
    "REFERENCE_BOX_COLOR",
    "SCORE_COLORMAP",
    "boxes_from_shapes_data",
    "boxes_from_shapes_layer",
    "boxes_on_slice",
    "boxes_to_rectangles",
    "detection_text",
    "replace_rectangles",
    "shapes_layer_data",
    "shapes_records",
    "vertices_in_image",
]
