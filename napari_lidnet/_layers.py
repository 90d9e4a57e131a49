"""Helpers shared by the reader, writers, sample data and widgets of napari-lidnet.

Everything here converts between the core's objects (:class:`src_training.io.CTVolume`, boxes per slice)
and napari layer data / keyword arguments. No Qt import; napari is imported lazily where needed.

Conventions (see ``docs/architecture.md``):

* Volumes are ``(z, y, x)`` float32 HU; spacing and origin are ``(z, y, x)`` in mm. An image layer gets
  ``scale = spacing`` and ``translate = origin`` so every layer of one scan lines up in world mm.
* Boxes are ``xyxy`` float32 in pixels of their slice with edges at pixel borders (a one-pixel lesion at
  column ``c`` has ``x0 = c, x1 = c + 1``). napari puts pixel *centres* at integer data coordinates, so a
  border at ``c`` is drawn at data coordinate ``c - 0.5``; :func:`boxes_to_rectangles` and
  :func:`boxes_from_shapes_layer` apply and undo that half-pixel shift.
* A rectangle in a 3D shapes layer needs its four corners: an array ``(4, 3)`` of ``(z, y, x)``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from src_training.errors import LidnetError
from src_training.windowing import DEFAULT_HU_RANGE, WINDOWS, window_limits

logger = logging.getLogger("napari_lidnet")

#: Words in BodyPartExamined / SeriesDescription / StudyDescription that mean "chest CT" (lung window).
CHEST_WORDS = ("chest", "lung", "thorax", "thoracic", "thx", "pulmo")

#: Edge colour of reference (ground-truth) lesion boxes.
REFERENCE_BOX_COLOR = "#00ff7f"
#: Edge colour of RPN proposals.
PROPOSAL_BOX_COLOR = "#4da6ff"
#: Colormap of detection boxes coloured by score (0 = dark blue, 1 = yellow).
SCORE_COLORMAP = "plasma"

#: Display names of the denoisers of ``src_training.models.denoisers.DENOISERS`` (lower-case keys).
def _display_names() -> dict[str, str]:
    """The core's display names (imported when first needed: importing the models loads torch) plus
    spellings seen in older files."""
    from src_training.models.denoisers import DISPLAY_NAMES

    return {**DISPLAY_NAMES, "red_cnn": "RED-CNN", "cpce2d": "CPCE"}


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
def notify_error(exc: BaseException, context: str = "") -> str:
    """Show a failure to the user as a napari notification (never a traceback dialog).

    Parameters
    ----------
    exc : BaseException
        The error. A :class:`src_training.errors.LidnetError` carries a message meant for the user and is
        shown as is; any other exception is logged with its traceback (logger ``napari_lidnet``) and shown
        as ``"<context> failed: <Type>: <message> (details in the log)"``.
    context : str
        What was being done, e.g. ``"Denoise"``; prefixed to the message.

    Returns
    -------
    str
        The message that was shown (handy for tests and status bars).
    """
    prefix = f"{context}: " if context else ""
    if isinstance(exc, LidnetError):
        message = f"{prefix}{exc}"
        logger.info("napari-lidnet: %s", message)
    else:
        message = f"{prefix}unexpected error {type(exc).__name__}: {exc} (details in the log)"
        logger.error("napari-lidnet: %s", message, exc_info=(type(exc), exc, exc.__traceback__))
    try:
        from napari.utils.notifications import show_error

        show_error(message)
    except Exception:  # noqa: BLE001 - napari missing or notification system down: the log has it
        logger.error("%s", message)
    return message


def notify_info(message: str) -> None:
    """Show an information notification in napari (logged when napari is not available)."""
    logger.info("napari-lidnet: %s", message)
    try:
        from napari.utils.notifications import show_info

        show_info(message)
    except Exception:  # noqa: BLE001
        pass


# --------------------------------------------------------------------------------------------------
# metadata helpers
# --------------------------------------------------------------------------------------------------
def meta_get(metadata: Mapping[str, Any] | None, *keys: str, default: Any = None) -> Any:
    """Look up a DICOM-style key in a (possibly nested) metadata mapping, case-insensitively.

    Searches ``metadata`` itself, then its ``"dicom"`` sub-dict; the first key found with a non-empty
    value wins.

    Parameters
    ----------
    metadata : mapping or None
        A ``CTVolume.metadata`` or a layer's ``metadata``.
    keys : str
        Candidate names, e.g. ``"SeriesDescription"``.
    default : Any
        Returned when nothing is found.
    """
    if not metadata:
        return default
    dicts = [metadata]
    for sub in ("dicom", "ct_metadata"):
        inner = metadata.get(sub) if isinstance(metadata, Mapping) else None
        if isinstance(inner, Mapping):
            dicts.append(inner)
    for d in dicts:
        lower = {str(k).lower(): v for k, v in d.items()}
        for key in keys:
            v = lower.get(key.lower())
            if v not in (None, "", [], ()):
                return v
    return default


def is_chest_ct(metadata: Mapping[str, Any] | None) -> bool:
    """True when the metadata says chest CT (BodyPartExamined CHEST, or a description mentioning
    chest/lung/thorax)."""
    texts = [
        meta_get(metadata, "BodyPartExamined", default=""),
        meta_get(metadata, "SeriesDescription", default=""),
        meta_get(metadata, "StudyDescription", default=""),
        meta_get(metadata, "ProtocolName", default=""),
    ]
    joined = " ".join(str(t) for t in texts).lower()
    return any(word in joined for word in CHEST_WORDS)


def default_window_name(metadata: Mapping[str, Any] | None) -> str:
    """The CT window to open a scan in: ``"lung"`` for chest CT, else ``"soft_tissue"``."""
    return "lung" if is_chest_ct(metadata) else "soft_tissue"


def window_to_wl(window: str | tuple[float, float]) -> tuple[float, float]:
    """Return ``(width, level)`` in HU of a preset name or a ``(W, L)`` pair."""
    lo, hi = window_limits(window)
    return float(hi - lo), float((hi + lo) / 2.0)


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples into plain Python objects (metadata stays printable)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _triple(value: Any, default: float) -> tuple[float, float, float]:
    if value is None:
        return (default, default, default)
    arr = np.asarray(value, dtype=float).ravel()
    if arr.size == 2:
        arr = np.concatenate([[default], arr])
    if arr.size != 3 or not np.all(np.isfinite(arr)):
        return (default, default, default)
    return tuple(float(v) for v in arr)  # type: ignore[return-value]


def series_name(metadata: Mapping[str, Any] | None, fallback: str = "CT") -> str:
    """Layer name of a series: its SeriesDescription, else ``fallback``."""
    desc = meta_get(metadata, "SeriesDescription", default="")
    desc = str(desc).strip()
    return desc or fallback


# --------------------------------------------------------------------------------------------------
# image layers
# --------------------------------------------------------------------------------------------------
def _translate_from_origin(origin_xyz: Any) -> tuple[float, float, float]:
    """napari ``translate`` (z, y, x) mm of a volume whose first voxel centre is ``origin_xyz`` (x, y, z) mm.

    Exact for the usual axis-aligned orientation (identity direction); for other orientations the layers of
    one scan still line up with each other (they all use the same rule).
    """
    o = _triple(origin_xyz, 0.0)
    return (o[2], o[1], o[0])


def _shift_origin(origin_xyz: Any, direction: Any, dz: float, z_offset: int) -> tuple[float, float, float]:
    """Origin (x, y, z) mm of the sub-volume starting ``z_offset`` slices further along the slice axis."""
    o = np.asarray(_triple(origin_xyz, 0.0), dtype=np.float64)
    d = np.asarray(direction if direction is not None else np.eye(3).ravel(), dtype=np.float64).ravel()
    if d.size != 9 or not np.all(np.isfinite(d)):
        d = np.eye(3).ravel()
    slice_dir = d.reshape(3, 3)[:, 2]
    return tuple(float(v) for v in o + z_offset * dz * slice_dir)  # type: ignore[return-value]


def image_layer_kwargs(
    volume: Any,
    *,
    name: str | None = None,
    window: str | tuple[float, float] | None = None,
    hu_range: tuple[float, float] | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``viewer.add_image`` (or a reader's layer-data meta) for a CT volume.

    Parameters
    ----------
    volume : src_training.io.CTVolume
        ``hu`` (z, y, x) float32 HU, ``spacing`` (z, y, x) mm, ``origin`` (x, y, z) mm (LPS, SimpleITK
        order), ``direction`` (9 floats), ``metadata`` dict (DICOM tags), ``source`` (path).
    name : str, optional
        Layer name; default: the SeriesDescription, else the source file name, else ``"CT"``.
    window : str or (W, L), optional
        Display window; default lung for chest CT, soft tissue otherwise (:func:`default_window_name`).
    hu_range : (float, float), optional
        HU range of the networks (saved in the layer's metadata); default ``DEFAULT_HU_RANGE``.
    extra_metadata : mapping, optional
        Merged into the layer's metadata (e.g. model name, checkpoint, N0).

    Returns
    -------
    dict
        ``name``, ``scale`` = spacing (z, y, x) mm, ``translate`` (z, y, x) mm (the origin), ``contrast_limits``
        (HU, from the window), ``colormap='gray'``, ``interpolation2d='nearest'`` and ``metadata`` with the
        keys ``spacing`` (z, y, x) mm, ``origin`` (x, y, z) mm, ``direction`` (9 floats), ``hu_range`` (HU),
        ``window`` ((W, L) HU), ``window_name``, ``source`` (path) and ``dicom`` (the CT metadata: DICOM tags,
        JSON-serialisable).
    """
    dicom = dict(getattr(volume, "metadata", None) or {})
    spacing = _triple(getattr(volume, "spacing", None), 1.0)
    origin = _triple(getattr(volume, "origin", None), 0.0)
    direction = getattr(volume, "direction", None)
    source = getattr(volume, "source", None)
    if window is None:
        window = default_window_name(dicom)
    window_name = window if isinstance(window, str) else "custom"
    w, l = window_to_wl(window)
    lo, hi = l - w / 2.0, l + w / 2.0
    if name is None:
        fallback = "CT"
        if source:
            import os

            base = os.path.basename(str(source).rstrip("/\\"))
            for ext in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima"):
                if base.lower().endswith(ext):
                    base = base[: -len(ext)]
                    break
            fallback = base or "CT"
        name = series_name(dicom, fallback)
    metadata: dict[str, Any] = {
        "spacing": spacing,
        "origin": origin,
        "direction": tuple(float(v) for v in np.asarray(direction, dtype=float).ravel())
        if direction is not None
        else None,
        "hu_range": tuple(float(v) for v in (hu_range or DEFAULT_HU_RANGE)),
        "window": (w, l),
        "window_name": window_name,
        "source": str(source) if source else None,
        "dicom": dicom,
    }
    if extra_metadata:
        metadata.update(dict(extra_metadata))
    return {
        "name": name,
        "scale": spacing,
        "translate": _translate_from_origin(origin),
        "contrast_limits": (lo, hi),
        "colormap": "gray",
        "interpolation2d": "nearest",
        "metadata": metadata,
    }


def derived_image_kwargs(
    source_layer: Any,
    *,
    name: str,
    z_offset: int = 0,
    extra_metadata: Mapping[str, Any] | None = None,
    hu_range: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``viewer.add_image`` for a result computed from ``source_layer``.

    The result keeps the source's scale, translate (shifted by ``z_offset`` slices when it covers only
    part of the volume, e.g. one slice as a ``(1, y, x)`` array), contrast limits and metadata; the
    CT metadata is copied, the origin moved to the first slice of the result, the keys of
    ``extra_metadata`` added and ``derived_from`` names the source layer.

    Parameters
    ----------
    source_layer : napari.layers.Image
        The layer the result was computed from.
    name : str
        Name of the new layer.
    z_offset : int
        Index of the result's first slice in the source volume (pixels along z).
    extra_metadata : mapping, optional
        E.g. ``{"model": "redcnn", "checkpoint": "/path/denoiser.pt"}``.
    hu_range : (float, float), optional
        Replaces the source's ``hu_range`` in the metadata (e.g. the model's).
    """
    scale = tuple(float(s) for s in source_layer.scale)
    translate = [float(t) for t in source_layer.translate]
    if z_offset and len(translate) >= 3:
        translate[-3] += z_offset * scale[-3]
    meta = dict(source_layer.metadata or {})
    meta["derived_from"] = source_layer.name
    meta["z_offset"] = int(z_offset) + int(meta.get("z_offset", 0) or 0)
    if z_offset:
        dz = layer_spacing(source_layer)[0]
        meta["origin"] = _shift_origin(meta.get("origin"), meta.get("direction"), dz, int(z_offset))
    if hu_range is not None:
        meta["hu_range"] = tuple(float(v) for v in hu_range)
    if extra_metadata:
        meta.update(dict(extra_metadata))
    return {
        "name": name,
        "scale": scale,
        "translate": tuple(translate),
        "contrast_limits": tuple(float(c) for c in source_layer.contrast_limits),
        "colormap": "gray",
        "interpolation2d": "nearest",
        "metadata": meta,
    }


def volume_from_layer(layer: Any, data: Any = None) -> Any:
    """Rebuild a :class:`src_training.io.CTVolume` from an image layer (or a layer-data ``meta`` dict).

    Parameters
    ----------
    layer : napari.layers.Image or dict
        A layer made by this plugin (metadata keys of :func:`image_layer_kwargs`) or any image layer
        (spacing then from ``scale``; origin from ``translate``).
    data : array, optional
        The voxels when ``layer`` is a meta dict (writers get ``(path, data, meta)``).

    Returns
    -------
    CTVolume
        ``hu`` float32 (z, y, x) HU (a 2D image becomes one slice), spacing (z, y, x) mm, origin (x, y, z) mm,
        direction, ``metadata`` = the DICOM tags kept in the layer (empty dict if none).
    """
    from src_training.io import CTVolume

    if isinstance(layer, Mapping):
        md = dict(layer.get("metadata") or {})
        translate = layer.get("translate")
        arr = data
    else:
        md = dict(getattr(layer, "metadata", None) or {})
        translate = getattr(layer, "translate", None)
        arr = layer.data if data is None else data
    hu = np.asarray(arr, dtype=np.float32)
    if hu.ndim == 2:
        hu = hu[None]
    spacing = layer_spacing(layer)
    if md.get("origin") is not None:
        origin = _triple(md["origin"], 0.0)
    elif translate is not None:
        t = _triple(list(translate)[-3:], 0.0)
        origin = (t[2], t[1], t[0])
    else:
        origin = (0.0, 0.0, 0.0)
    direction = md.get("direction") or (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    return CTVolume(
        hu=hu,
        spacing=spacing,
        origin=origin,
        direction=tuple(float(v) for v in np.asarray(direction, dtype=float).ravel()),
        metadata=dict(md.get("dicom") or {}),
        source=str(md.get("source") or ""),
    )


def layer_spacing(layer_or_meta: Any) -> tuple[float, float, float]:
    """``(z, y, x)`` spacing in mm of an image layer (its metadata, else its scale) or a layer-data meta
    dict (``metadata`` / ``scale`` keys)."""
    if isinstance(layer_or_meta, Mapping):
        md = layer_or_meta.get("metadata") or {}
        scale = layer_or_meta.get("scale")
    else:
        md = getattr(layer_or_meta, "metadata", None) or {}
        scale = getattr(layer_or_meta, "scale", None)
    if md.get("spacing") is not None:
        return _triple(md["spacing"], 1.0)
    if scale is not None:
        sc = [float(s) for s in scale][-3:]
        return _triple(sc, 1.0)
    return (1.0, 1.0, 1.0)


def layer_hu_range(layer: Any) -> tuple[float, float]:
    """The networks' HU range stored in a layer's metadata (default ``DEFAULT_HU_RANGE``)."""
    md = getattr(layer, "metadata", None) or {}
    rng = md.get("hu_range")
    if rng is None or len(rng) != 2:
        return tuple(DEFAULT_HU_RANGE)  # type: ignore[return-value]
    return (float(rng[0]), float(rng[1]))


def current_slice_index(viewer: Any, layer: Any) -> int:
    """Index (pixels, along the layer's z axis) of the slice the viewer shows for a 3D layer.

    Converts the viewer's world position on the first displayed-out axis through the layer's
    scale/translate; clipped to the layer's extent.
    """
    data = layer.data
    nz = int(data.shape[-3]) if getattr(data, "ndim", 0) >= 3 else 1
    if nz <= 1:
        return 0
    try:
        point = viewer.dims.point
        world_z = float(point[-3])
        idx = layer.world_to_data(np.asarray(point))[-3]
        idx = int(round(float(idx)))
    except Exception:  # noqa: BLE001
        scale = float(layer.scale[-3]) or 1.0
        idx = int(round((world_z - float(layer.translate[-3])) / scale))
    return int(min(max(idx, 0), nz - 1))


# --------------------------------------------------------------------------------------------------
# boxes <-> shapes
# --------------------------------------------------------------------------------------------------
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
        grid of the image layer with the same scale/translate.

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
        Image layer (or its layer-data kwargs) whose ``scale``/``translate`` the rectangles follow.
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
        ``name, shape_type='rectangle', ndim, edge_color, face_color='transparent', edge_width, scale,
        translate, features, metadata`` (+ ``text``).
    """
    rects, slices = boxes_to_rectangles(boxes_by_slice, ndim=ndim)
    feats: dict[str, Any] = {"slice": slices}
    if features:
        for k, v in features.items():
            feats[k] = np.asarray(v)
    if like is not None:
        if isinstance(like, Mapping):
            scale = scale if scale is not None else like.get("scale")
            translate = translate if translate is not None else like.get("translate")
        else:
            scale = scale if scale is not None else tuple(like.scale)
            translate = translate if translate is not None else tuple(like.translate)
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
    }
    if scale is not None:
        kwargs["scale"] = tuple(float(s) for s in list(scale)[-ndim:])
    if translate is not None:
        kwargs["translate"] = tuple(float(t) for t in list(translate)[-ndim:])
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


def denoiser_display_name(model_name: str, method: str | None = None) -> str:
    """Human name of a denoiser for layer names, e.g. ``("redcnn", "lidnet") -> "RED-CNN (LIDnet)"``."""
    key = str(model_name).strip().lower().replace("-", "")
    base = _display_names().get(key, str(model_name))
    if method:
        m = str(method).strip().lower()
        label = {"lidnet": "LIDnet", "baseline": "baseline"}.get(m, str(method))
        return f"{base} ({label})"
    return base


def finite_or(value: Any, default: float) -> float:
    """``float(value)`` when finite, else ``default``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


__all__ = [
    "CHEST_WORDS",
    "WINDOWS",
    "boxes_from_shapes_data",
    "boxes_from_shapes_layer",
    "boxes_to_rectangles",
    "current_slice_index",
    "default_window_name",
    "denoiser_display_name",
    "derived_image_kwargs",
    "volume_from_layer",
    "image_layer_kwargs",
    "is_chest_ct",
    "layer_hu_range",
    "layer_spacing",
    "meta_get",
    "notify_error",
    "notify_info",
    "replace_rectangles",
    "series_name",
    "shapes_layer_data",
    "shapes_records",
    "window_to_wl",
]
