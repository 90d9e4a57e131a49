"""CT image layers of napari-lidnet: layer-data keyword arguments from the core's volumes and back, DICOM
metadata look-ups, and the slice / volume a widget reads from a layer.

Everything here converts between the core's objects (:class:`src_training.io.CTVolume`) and napari image
layers. No Qt import. The other layer concepts have their own modules: box (shapes) layers
:mod:`napari_lidnet._boxes`, layer names of denoised results :mod:`napari_lidnet._naming`, notifications
:mod:`napari_lidnet._messages`.

Conventions (see ``docs/architecture.md``):

* Volumes are ``(z, y, x)`` float32 HU; spacing and origin are ``(z, y, x)`` in mm (the origin of a
  ``CTVolume`` is ``(x, y, z)``, SimpleITK order). An image layer gets ``scale = spacing`` and ``translate`` =
  the origin in ``(z, y, x)``, so every layer of one scan lines up in world mm.
* Slices are ``(y, x)``; a slice index is in pixels along the layer's z axis (data coordinates).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from src_training.errors import LidnetError
from src_training.io import CTVolume
from src_training.windowing import DEFAULT_HU_RANGE, WINDOWS, window_limits

# notify_error / notify_info stay importable from here (tests/test_io_bad_input.py records the reader's
# notices by patching napari_lidnet._layers.notify_info); they are defined in napari_lidnet._messages.
from ._messages import notify_error, notify_info

#: Words in BodyPartExamined / SeriesDescription / StudyDescription that mean "chest CT" (lung window).
CHEST_WORDS = ("chest", "lung", "thorax", "thoracic", "thx", "pulmo")

#: File name endings dropped from a source file's name when it becomes a layer name.
_VOLUME_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".ima")


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
    """Return ``(width, level)`` in HU of a preset name (a key of ``WINDOWS``) or a ``(W, L)`` pair.

    Raises
    ------
    src_training.errors.ConfigError
        Unknown preset name or a width <= 0 (from :func:`src_training.windowing.window_limits`).
    """
    lo, hi = window_limits(window)
    return float(hi - lo), float((hi + lo) / 2.0)


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
            base = os.path.basename(str(source).rstrip("/\\"))
            for ext in _VOLUME_ENDINGS:
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



def slice_index(viewer: Any, layer: Any) -> int | None:
    """Index (along the layer's first axis, data coordinates) of the slice the viewer shows for a 3D layer,
    ``None`` for a 2D layer (scale/translate respected; :func:`current_slice_index`)."""
    if layer.ndim < 3:
        return None
    return current_slice_index(viewer, layer)


def layer_slice(layer: Any, z: int | None) -> np.ndarray:
    """(H, W) float32 array (HU) of a 2D layer, or of slice ``z`` of a 3D image layer (a lazy dask slice is
    read here)."""
    data = layer.data
    if layer.ndim < 3:
        return np.asarray(data, dtype=np.float32)
    idx = (0,) * (layer.ndim - 3) + (int(z),)
    return np.asarray(data[idx], dtype=np.float32)


def layer_volume(data: Any, layer_name: str) -> np.ndarray:
    """A CT image layer's data as a float32 ``(z, y, x)`` volume in HU (a 2-D slice becomes ``(1, y, x)``).

    Raises
    ------
    src_training.errors.LidnetError
        The layer is neither a slice nor a volume (the message names ``layer_name``).
    """
    vol = np.asarray(data, dtype=np.float32)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise LidnetError(f"Layer '{layer_name}' has {vol.ndim} dimensions; a CT slice or volume is needed.")
    return vol


__all__ = [
    "CHEST_WORDS",
    "WINDOWS",
    "current_slice_index",
    "default_window_name",
    "derived_image_kwargs",
    "image_layer_kwargs",
    "is_chest_ct",
    "layer_hu_range",
    "layer_slice",
    "layer_spacing",
    "layer_volume",
    "meta_get",
    "notify_error",
    "notify_info",
    "series_name",
    "slice_index",
    "volume_from_layer",
    "window_to_wl",
]
