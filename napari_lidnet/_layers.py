"""CT image layers of napari-lidnet: layer-data keyword arguments from the core's volumes and back, DICOM
metadata look-ups, and the slice / volume a widget reads from a layer.

Everything here converts between the core's objects (:class:`src_training.io.CTVolume`) and napari image
layers. No Qt import. The other layer concepts have their own modules: box (shapes) layers
:mod:`napari_lidnet._boxes`, layer names of denoised results :mod:`napari_lidnet._naming`, notifications
:mod:`napari_lidnet._messages`.

Conventions (see ``docs/architecture.md``):

* Volumes are ``(z, y, x)`` float32 HU; spacing and origin are ``(z, y, x)`` in mm (the origin of a
  ``CTVolume`` is ``(x, y, z)``, SimpleITK order). An image layer gets ``scale = spacing``, ``rotate`` = the
  direction cosines and ``translate`` = the origin, all in napari's ``(z, y, x)`` order
  (:func:`layer_transform`), so napari's data -> world map sends voxel ``(k, i, j)`` to its DICOM patient
  position (LPS, mm, ``(z, y, x)`` order) for every axial series (rotated in-plane, mirrored or feet first
  included); tilted, coronal and sagittal series get the same positions in a rotated world frame that
  napari can slice (:func:`display_frame`, ``metadata["world_from_patient"]``, :func:`patient_position`).
  Identity direction (usual axial CT): ``rotate`` is the identity, the layers are exactly the axis-aligned
  ones of before.
* Layers computed from a CT layer (denoised, low-dose, boxes, ROIs, grid outlines) copy its whole transform
  with :func:`layer_geometry`, so they are drawn in its pixel grid under any rotation.
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
# geometry: CTVolume (SimpleITK / DICOM) -> napari transforms, and copies of a layer's transform
# --------------------------------------------------------------------------------------------------
#: Identity direction cosines (usual axial CT), SimpleITK row-major 9-tuple.
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def direction_zyx(direction: Any) -> np.ndarray:
    """Direction cosines of a volume in napari's ``(z, y, x)`` axis order.

    Parameters
    ----------
    direction : sequence of 9 floats or None
        ``CTVolume.direction``: SimpleITK row-major 3x3 matrix whose rows are the patient axes x, y, z (LPS)
        and whose columns are the array axes along a row (x index), along a column (y index) and the slice
        axis, i.e. DICOM ImageOrientationPatient's row and column cosines and the slice normal (PS3.3
        C.7.6.2.1.1, Image Plane Module).

    Returns
    -------
    ndarray float64 (3, 3)
        The same matrix with rows and columns both reordered to ``(z, y, x)``: rows = patient axes z, y, x,
        columns = array axes 0 (slice), 1 (row index), 2 (column index). ``None``, a malformed or a singular
        matrix gives the identity.
    """
    if direction is None:
        return np.eye(3)
    d = np.asarray(direction, dtype=np.float64).ravel()
    if d.size != 9 or not np.all(np.isfinite(d)):
        return np.eye(3)
    m = d.reshape(3, 3)
    if abs(np.linalg.det(m)) < 1e-6:
        return np.eye(3)
    return m[::-1, ::-1].copy()


#: World axes (rows, as patient axes z, y, x) of a series whose slices are coronal or sagittal: the slice
#: axis first, then inferior (head up on screen) and the patient's left or posterior (radiological display).
_NON_AXIAL_FRAMES = {
    1: ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),  # coronal: world (y, -z, x)
    2: ((0.0, 0.0, -1.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),  # sagittal: world (-x, -z, y)
}


def display_frame(rotate_zyx: Any) -> np.ndarray:
    """World frame of a volume's layers: the rotation ``F`` with ``world = F @ patient`` (both ``(z, y, x)``).

    napari draws a 2D slice through a layer only when its transform keeps the slice axis on world axis 0
    and the slice plane on world axes 1 and 2: a transform exchanging axes (coronal or sagittal slices
    placed in patient axes) fails with "singular matrix" (napari issues #3410, #9050), and one tilting the
    slices out of the world's axial plane is sliced along the wrong axis (napari's "non-orthogonal slicing":
    slices far from the world origin are never drawn). So the world is the patient frame (LPS) itself
    whenever the slice normal is patient z (axial series, rotated in-plane, mirrored, feet first); else it is
    the patient frame rotated by the smallest rotation taking the slice normal onto its nearest patient axis
    (a gantry-tilted or double-oblique series: the slices are shown as acquired), and for coronal or
    sagittal slices the axes are then reordered by :data:`_NON_AXIAL_FRAMES` (head up, radiological
    left-right). ``F`` is always a proper rotation: distances, angles and handedness are kept.

    Parameters
    ----------
    rotate_zyx : array (3, 3)
        Direction cosines in ``(z, y, x)`` order (:func:`direction_zyx`; column 0 = slice normal).

    Returns
    -------
    ndarray float64 (3, 3)
        ``F``, orthogonal with determinant +1 (``patient = F.T @ world``); the identity for axial series.
    """
    n = np.asarray(rotate_zyx, dtype=np.float64).reshape(3, 3)[:, 0]
    n = n / (np.linalg.norm(n) or 1.0)
    axis = int(np.argmax(np.abs(n)))
    target = np.zeros(3)
    target[axis] = 1.0 if n[axis] > 0 else -1.0
    v, c = np.cross(n, target), float(n @ target)  # Rodrigues: the rotation taking n onto target
    vx = np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])
    tilt = np.eye(3) + vx + vx @ vx / (1.0 + c) if np.linalg.norm(v) > 1e-9 else np.eye(3)
    order = np.asarray(_NON_AXIAL_FRAMES[axis]) if axis in _NON_AXIAL_FRAMES else np.eye(3)
    return order @ tilt


def layer_transform(volume: Any) -> dict[str, Any]:
    """napari ``scale``, ``rotate`` and ``translate`` of a CT volume's layers (all in ``(z, y, x)`` order).

    With them napari's data -> world map is ``world = F @ (origin + D @ (spacing * (k, i, j)))``: the DICOM
    patient position of voxel ``(k, i, j)`` (PS3.3 C.7.6.2.1.1: ImagePositionPatient of slice ``k`` plus
    ``j`` column spacings along the row cosines and ``i`` row spacings along the column cosines), in LPS mm,
    ``(z, y, x)`` order, seen in the world frame ``F`` of :func:`display_frame` (the identity for axial
    series: world = patient coordinates; :func:`patient_position` turns world back into patient mm).

    Parameters
    ----------
    volume : src_training.io.CTVolume
        ``spacing`` (z, y, x) mm (positive), ``origin`` (x, y, z) mm LPS, ``direction`` (9 floats,
        SimpleITK order; a determinant of -1, a mirrored volume, is kept as it is: napari accepts a
        reflection as ``rotate``).

    Returns
    -------
    dict
        ``scale`` (3 floats, mm), ``rotate`` (3x3 tuple of tuples, ``F @ D`` in ``(z, y, x)`` order: the slice
        axis on world axis 0, the slice plane on world axes 1 and 2), ``translate`` (3 floats, mm,
        ``F @ origin``) and ``world_from_patient`` (``F``, 3x3 tuple of tuples). Identity direction:
        ``rotate`` is the identity and ``translate`` the origin in ``(z, y, x)``.
    """
    spacing = _triple(getattr(volume, "spacing", None), 1.0)
    o = _triple(getattr(volume, "origin", None), 0.0)
    d = direction_zyx(getattr(volume, "direction", None))
    frame = display_frame(d)
    rotate = frame @ d
    off_block = np.zeros((3, 3), dtype=bool)
    off_block[0, 1:] = off_block[1:, 0] = True
    rotate[off_block & (np.abs(rotate) < 1e-6)] = 0.0  # rounding of the cosines: keep napari's slicing exact
    translate = frame @ np.array([o[2], o[1], o[0]], dtype=np.float64)
    return {
        "scale": spacing,
        "rotate": _matrix_tuple(rotate),
        "translate": tuple(float(v) for v in translate),
        "world_from_patient": _matrix_tuple(frame),
    }


def _matrix_tuple(m: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) + 0.0 for v in row) for row in np.asarray(m, dtype=np.float64))


def layer_geometry(source: Any, *, ndim: int | None = None, z_offset: int = 0) -> dict[str, Any]:
    """The whole transform of a layer, as keyword arguments for a layer drawn in its pixel grid.

    Every layer derived from a CT layer (denoised or low-dose images, difference maps, detection / proposal
    / reference boxes and their score text, ROIs, the compare grid's outlines, placeholders) is created with
    these, so its data -> world map equals the source's (same ``layer.affine`` and ``data_to_world``) under
    any rotation or reflection.

    Parameters
    ----------
    source : napari layer or mapping
        The source layer, or its layer-data keyword arguments (``scale``, ``translate``, ``rotate``,
        ``shear``, ``affine`` keys; e.g. :func:`image_layer_kwargs`).
    ndim : int, optional
        Number of axes of the new layer (default: the source's). Fewer axes keep the trailing ones (a
        ``(y, x)`` layer over a ``(z, y, x)`` image: the in-plane part of the transform).
    z_offset : int
        The new layer starts at slice ``z_offset`` of the source (pixels along its axis -3): ``translate``
        moves by that many slices along the slice axis, in world mm.

    Returns
    -------
    dict
        ``scale`` (mm per pixel), ``translate`` (mm), ``rotate`` (``(ndim, ndim)`` tuple of tuples), plus
        ``shear`` (matrix) and ``affine`` (``(ndim + 1, ndim + 1)``) when the source has non-trivial ones.
    """
    get = source.get if isinstance(source, Mapping) else (lambda key: getattr(source, key, None))
    scale, translate, rotate, shear = get("scale"), get("translate"), get("rotate"), get("shear")
    affine = getattr(get("affine"), "affine_matrix", get("affine"))
    n_src = int(get("ndim") or len(scale if scale is not None else translate if translate is not None else "zyx"))

    def embed(values: Any, fill: float) -> np.ndarray:
        out = np.full(n_src, fill)
        if values is not None:
            v = np.asarray(values, dtype=np.float64).ravel()[-n_src:]
            out[n_src - len(v):] = v
        return out

    def embed2(m: Any, n: int) -> np.ndarray:
        out = np.eye(n)
        if m is not None and np.ndim(m) == 2:
            k = min(n, np.shape(m)[0])
            out[n - k:, n - k:] = np.asarray(m, dtype=np.float64)[-k:, -k:]
        return out

    sc, tr, rot = embed(scale, 1.0), embed(translate, 0.0), embed2(rotate, n_src)
    if shear is not None and np.ndim(shear) == 1:  # napari's upper-triangular values
        from napari.utils.transforms.transform_utils import shear_to_matrix

        shear = shear_to_matrix(np.asarray(shear, dtype=np.float64), ndim=n_src)
    sh = embed2(shear, n_src)
    aff = embed2(affine, n_src + 1)  # (n_src + 1) square: linear block and translation column
    if z_offset and n_src >= 3:
        tr = tr + (rot @ sh @ np.diag(sc))[:, -3] * float(z_offset)
    n = n_src if ndim is None else int(ndim)
    k = min(n, n_src)

    def cut(v: np.ndarray, fill: float) -> np.ndarray:  # the trailing axes kept, leading ones added
        return np.concatenate([np.full(n - k, fill), v[n_src - k:]])

    geometry: dict[str, Any] = {
        "scale": tuple(float(v) for v in cut(sc, 1.0)),
        "translate": tuple(float(v) for v in cut(tr, 0.0)),
        "rotate": _matrix_tuple(embed2(rot, n)),
    }
    if not np.allclose(embed2(sh, n), np.eye(n)):
        geometry["shear"] = embed2(sh, n)
    aff_n = np.eye(n + 1)
    aff_n[:-1, :-1] = embed2(aff[:-1, :-1], n)
    aff_n[:-1, -1] = cut(aff[:-1, -1], 0.0)
    if not np.allclose(aff_n, np.eye(n + 1)):
        geometry["affine"] = aff_n
    return geometry


def patient_position(layer: Any, data_point: Any) -> np.ndarray:
    """DICOM patient position (LPS mm, ``(z, y, x)`` order) of a point in an image layer's data coordinates.

    ``layer.data_to_world`` seen back in patient axes (``F.T`` of :func:`display_frame`, the layer's
    ``metadata["world_from_patient"]``; the identity for axial series and for layers without it).

    Parameters
    ----------
    layer : napari layer
    data_point : sequence of float
        ``(k, i, j)`` (slice, row, column) pixels, as many values as the layer has axes.

    Returns
    -------
    ndarray float64 (3,)
    """
    world = np.asarray(layer.data_to_world(np.asarray(data_point, dtype=np.float64)), dtype=np.float64)[-3:]
    frame = (getattr(layer, "metadata", None) or {}).get("world_from_patient")
    frame = np.eye(3) if frame is None else np.asarray(frame, dtype=np.float64)
    return frame.T @ world


# --------------------------------------------------------------------------------------------------
# image layers
# --------------------------------------------------------------------------------------------------
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
        ``name``, ``scale`` = spacing (z, y, x) mm, ``rotate`` (3x3, the direction cosines in (z, y, x)
        order) and ``translate`` (z, y, x) mm (the origin) from :func:`layer_transform` (world = DICOM
        patient position, LPS mm, for axial series; identity ``rotate`` for the usual axial orientation),
        ``contrast_limits``
        (HU, from the window), ``colormap='gray'``, ``interpolation2d='nearest'`` and ``metadata`` with the
        keys ``spacing`` (z, y, x) mm, ``origin`` (x, y, z) mm, ``direction`` (9 floats), ``hu_range`` (HU),
        ``window`` ((W, L) HU), ``window_name``, ``source`` (path), ``world_from_patient`` (3x3, the display
        frame of :func:`display_frame`) and ``dicom`` (the CT metadata: DICOM tags, JSON-serialisable).
    """
    dicom = dict(getattr(volume, "metadata", None) or {})
    geometry = layer_transform(volume)
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
        "world_from_patient": geometry["world_from_patient"],
        "dicom": dicom,
    }
    if extra_metadata:
        metadata.update(dict(extra_metadata))
    return {
        "name": name,
        "scale": geometry["scale"],
        "rotate": geometry["rotate"],
        "translate": geometry["translate"],
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

    The result keeps the source's whole transform (:func:`layer_geometry`: scale, rotate, translate shifted
    by ``z_offset`` slices along the slice axis when it covers only part of the volume, e.g. one slice as a
    ``(1, y, x)`` array), contrast limits and metadata; the
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
    geometry = layer_geometry(source_layer, z_offset=int(z_offset))
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
        **geometry,
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
        (spacing then from ``scale``; origin from ``translate``, direction from ``rotate``).
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
        rotate = layer.get("rotate")
        arr = data
    else:
        md = dict(getattr(layer, "metadata", None) or {})
        translate = getattr(layer, "translate", None)
        rotate = getattr(layer, "rotate", None)
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
    direction = md.get("direction")
    if direction is None:  # a layer of another plugin: its rotate (z, y, x) back to SimpleITK (x, y, z) order
        r = np.asarray(rotate, dtype=np.float64) if rotate is not None else np.eye(3)
        direction = r[-3:, -3:][::-1, ::-1].ravel() if r.ndim == 2 and r.shape[0] >= 3 else IDENTITY_DIRECTION
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

    The viewer's world position on the axes out of the 2D view is mapped into the layer's data the way
    napari picks the slice it draws: through the part of the world -> data transform on those axes only
    (the whole transform for axis-aligned and in-plane rotated series; for a series tilted out of the axial
    plane it is the slice napari draws, not the one under the centre of the view). Clipped to the layer's
    extent.
    """
    data = layer.data
    nz = int(data.shape[-3]) if getattr(data, "ndim", 0) >= 3 else 1
    if nz <= 1:
        return 0
    point = np.asarray(viewer.dims.point, dtype=np.float64)
    try:
        n = int(layer.ndim)
        w = point[-n:] if point.size >= n else np.concatenate([np.zeros(n - point.size), point])
        axis = n - 3
        origin = np.asarray(layer.world_to_data(np.zeros(n)), dtype=np.float64)
        idx_f = float(origin[axis])
        for b in range(n - 2):  # the axes a 2D view slices through
            e = np.zeros(n)
            e[b] = 1.0
            idx_f += (float(np.asarray(layer.world_to_data(e), dtype=np.float64)[axis]) - origin[axis]) * float(w[b])
        idx = int(round(idx_f))
    except Exception:  # noqa: BLE001 - a layer without transforms: scale / translate only
        scale = float(layer.scale[-3]) or 1.0
        idx = int(round((float(point[-3]) - float(layer.translate[-3])) / scale))
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
    "IDENTITY_DIRECTION",
    "WINDOWS",
    "current_slice_index",
    "default_window_name",
    "derived_image_kwargs",
    "direction_zyx",
    "display_frame",
    "image_layer_kwargs",
    "is_chest_ct",
    "layer_geometry",
    "layer_hu_range",
    "layer_slice",
    "layer_spacing",
    "layer_volume",
    "layer_transform",
    "meta_get",
    "notify_error",
    "notify_info",
    "patient_position",
    "series_name",
    "slice_index",
    "volume_from_layer",
    "window_to_wl",
]
