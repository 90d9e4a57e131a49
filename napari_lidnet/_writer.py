"""napari writers: image layer -> derived DICOM CT series or NIfTI; shapes layer -> boxes CSV (with the
SOPInstanceUID, InstanceNumber and patient-coordinate mm of each box when its CT is known).

All three are npe2 single-layer writers ``(path, data, meta) -> list[str]`` and call the core's atomic
writers (:mod:`src_training.io`, :mod:`src_training.annotations`). Failures raise a
:class:`~src_training.errors.LidnetError` whose message napari shows; nothing is left half-written.

They never replace existing data: napari's save command cannot pass an ``overwrite`` option, so an existing
non-empty series folder, NIfTI file or CSV file is refused with an
:class:`~src_training.errors.OutputExistsError` whose message names a free name to save under instead
(``denoised_2``, ``ct_2.nii.gz``...). To replace a file on purpose, delete it first, or call the core
functions with ``overwrite=True`` (``src_training.io.write_dicom_series``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from src_training.annotations import write_boxes_csv as core_write_boxes_csv
from src_training.errors import OutputExistsError
from src_training.io import CTVolume, write_volume
from src_training.io import write_dicom_series as core_write_dicom_series

from ._boxes import shapes_records
from ._layers import volume_from_layer, window_to_wl
from ._naming import denoiser_display_name


def free_name(path: str | os.PathLike) -> Path:
    """First name ``stem_2``, ``stem_3``... (same folder, same extension, ``.nii.gz`` kept whole) that does
    not exist yet; ``path`` itself when it is free."""
    p = Path(path)
    if not p.exists():
        return p
    name = p.name
    ext = next((e for e in (".nii.gz", ".nii", ".csv", ".nrrd", ".mha", ".dcm") if name.lower().endswith(e)), "")
    stem = name[: len(name) - len(ext)] if ext else name
    k = 2
    while (p.parent / f"{stem}_{k}{ext}").exists():
        k += 1
    return p.parent / f"{stem}_{k}{ext}"


def _refuse_existing(p: Path, what: str) -> None:
    """Raise OutputExistsError when ``p`` holds data (a file, or a non-empty folder)."""
    if p.is_dir():
        if not any(p.iterdir()):
            return
    elif not p.exists():
        return
    raise OutputExistsError(
        f"{p} already exists; napari-lidnet never overwrites saved data, nothing was written. Save the {what} "
        f"under a new name, e.g. {free_name(p)}, or delete the old one first."
    )


def _series_folder(path: str | os.PathLike) -> Path:
    """Folder of the DICOM series for a path chosen in napari's save dialog (``name.dcm`` -> ``name/``)."""
    p = Path(path)
    if p.name.lower().endswith(".dcm"):
        p = p.with_name(p.name[: -len(".dcm")] or "series")
    return p


def series_description(meta: dict[str, Any]) -> str:
    """SeriesDescription of a derived series, naming the model from the layer's metadata.

    ``{"model": "redcnn", "method": "lidnet"}`` -> ``"LIDnet RED-CNN denoised"``; a baseline model ->
    ``"RED-CNN (baseline) denoised"``; a simulated LDCT (``n0`` in metadata) -> ``"Simulated LDCT N0=1000"``;
    otherwise the layer name + ``" (napari-lidnet)"``.
    """
    md = dict(meta.get("metadata") or {})
    model = md.get("model")
    if model:
        method = str(md.get("method") or "").lower()
        base = denoiser_display_name(model)
        if method == "lidnet":
            return f"LIDnet {base} denoised"
        if method:
            return f"{base} ({method}) denoised"
        return f"{base} denoised"
    if md.get("n0") is not None:
        return f"Simulated LDCT N0={float(md['n0']):g} seed={md.get('seed', 0)}"
    name = str(meta.get("name") or "image")
    return f"{name} (napari-lidnet)"[:64]


def derivation_description(meta: dict[str, Any]) -> str:
    """DerivationDescription of a derived series from the layer's metadata: the model (display name, training
    method, step) and its checkpoint file for a denoised layer, N0 and seed for a simulated LDCT, else the
    series description."""
    md = dict(meta.get("metadata") or {})
    model = md.get("model")
    if model:
        method = md.get("method")
        step = md.get("step")
        details = ", ".join(x for x in (f"{method} training" if method else "",
                                        f"step {step}" if step is not None else "") if x)
        text = f"noise reduction by the {denoiser_display_name(model)} denoiser" + (f" ({details})" if details else "")
        ckpt = md.get("checkpoint")
        if ckpt:
            text += f", checkpoint {Path(str(ckpt)).name} ({ckpt})"
        if md.get("resampling") and not str(md["resampling"]).startswith("none"):
            text += f"; {md['resampling']}"
        return text
    if md.get("n0") is not None:
        return (f"simulated low-dose CT: N0 {float(md['n0']):g} photons per ray, seed {md.get('seed', 0)}"
                + (f", from layer {md['simulated_from']}" if md.get("simulated_from") else ""))
    return series_description(meta)


def layer_window(meta: dict[str, Any]) -> tuple[tuple[float, float], str] | None:
    """The window the layer is shown with, ``((W, L) HU, explanation)``, or None when unknown.

    The layer's contrast limits are what the user sees (after a preset of the Window widget or dragging the
    slider); the preset name is kept when ``metadata["window"]`` matches them (``CUSTOM`` otherwise).
    """
    md = dict(meta.get("metadata") or {})
    named = md.get("window")
    name = str(md.get("window_name") or "custom").replace("_", " ").upper()
    limits = meta.get("contrast_limits")
    try:
        if limits is not None:
            lo, hi = (float(v) for v in limits)
            w, l_ = hi - lo, (hi + lo) / 2.0
            if not (np.isfinite(w) and np.isfinite(l_) and w > 0):
                raise ValueError("empty contrast limits")
            if named is not None:
                nw, nl = window_to_wl(tuple(named))
                if abs(nw - w) > 1e-3 or abs(nl - l_) > 1e-3:
                    name = "CUSTOM"
            return (w, l_), name
        if named is not None:
            return window_to_wl(tuple(named)), name
    except Exception:  # noqa: BLE001 - no usable window: the core's rule (source window, body part) applies
        return None
    return None


def write_dicom_series(path: str, data: Any, meta: dict) -> list[str]:
    """Save an image layer as a derived DICOM CT series (a new folder of ``IM_00001.dcm``...).

    The series joins the source's study; each slice references its source slice (SourceImageSequence) when
    the layer keeps the source's per-slice UIDs; SliceThickness is the source's; the window is the layer's
    (:func:`layer_window`); DerivationDescription names the model and checkpoint
    (:func:`derivation_description`). See :func:`src_training.io.write_dicom_series`.

    Parameters
    ----------
    path : str
        Folder to create (a trailing ``.dcm`` is dropped: ``out/denoised.dcm`` -> ``out/denoised/``). An
        existing non-empty folder is never overwritten.
    data : array (z, y, x) or (y, x)
        HU.
    meta : dict
        The layer's state: ``metadata`` (spacing, origin, direction, window, ``z_offset`` of a partial result
        and ``dicom`` tags from the source series: the new series joins the same study), ``contrast_limits``,
        ``scale``, ``translate``, ``name``.

    Returns
    -------
    list of str
        The written files.

    Raises
    ------
    OutputExistsError
        The folder exists and is not empty (nothing written; the message names a free folder name).
    CTWriteError
        Bad data (NaN, wrong dimensions) or an unwritable folder.
    """
    out_dir = _series_folder(path)
    _refuse_existing(out_dir, "DICOM series")
    vol = volume_from_layer(meta, data)
    md = dict(meta.get("metadata") or {})
    chosen = layer_window(meta)
    z_offset = md.get("z_offset") if "z_offset" in md else None
    files = core_write_dicom_series(
        vol.hu,
        out_dir,
        spacing=vol.spacing,
        reference=vol if vol.metadata else None,
        series_description=series_description(meta)[:64],
        overwrite=False,
        origin=vol.origin,
        direction=vol.direction,
        image_type=("DERIVED", "SECONDARY"),
        window=chosen[0] if chosen else None,
        window_explanation=chosen[1] if chosen else None,
        derivation_description=derivation_description(meta),
        reference_z_offset=int(z_offset) if z_offset is not None else None,
    )
    return [str(f) for f in files]


def write_nifti(path: str, data: Any, meta: dict) -> list[str]:
    """Save an image layer as a NIfTI volume (``.nii`` / ``.nii.gz``) in HU with its spacing (mm) and origin.

    Parameters
    ----------
    path : str
        Destination file; ``.nii.gz`` is appended when it has neither ``.nii`` nor ``.nii.gz``.
    data : array (z, y, x) or (y, x)
        HU.
    meta : dict
        Layer state (``metadata`` spacing/origin/direction, else ``scale``/``translate``).

    Returns
    -------
    list of str
        ``[path]``.

    Raises
    ------
    OutputExistsError
        The file exists (nothing written; the message names a free name).
    CTWriteError
        Bad data or an unwritable destination (which is then left untouched).
    """
    p = Path(path)
    if not p.name.lower().endswith((".nii", ".nii.gz")):
        p = p.with_name(p.name + ".nii.gz")
    _refuse_existing(p, "volume")
    vol = volume_from_layer(meta, data)
    out = write_volume(vol.hu, p, spacing=vol.spacing, origin=vol.origin, direction=vol.direction)
    return [str(out)]


def _layer_geometry(layer_or_meta: Any) -> CTVolume | None:
    """Geometry and DICOM tags of an image layer (or a layer-data meta dict) as a voxel-less CTVolume
    (``hu`` of shape ``(nz, 0, 0)``: the layer's data are not read), or None when it carries no CT metadata."""
    if isinstance(layer_or_meta, Mapping):
        md = dict(layer_or_meta.get("metadata") or {})
        translate = layer_or_meta.get("translate")
        shape = None
    else:
        md = dict(getattr(layer_or_meta, "metadata", None) or {})
        translate = getattr(layer_or_meta, "translate", None)
        shape = getattr(getattr(layer_or_meta, "data", None), "shape", None)
    if not md.get("dicom") and md.get("origin") is None:
        return None
    probe = volume_from_layer({"metadata": md, "scale": (layer_or_meta.get("scale") if isinstance(
        layer_or_meta, Mapping) else getattr(layer_or_meta, "scale", None)), "translate": translate},
        np.zeros((1, 1, 1), np.float32))
    nz = int(shape[-3]) if shape is not None and len(shape) >= 3 else 0
    return CTVolume(hu=np.empty((nz, 0, 0), np.float32), spacing=probe.spacing, origin=probe.origin,
                    direction=probe.direction, metadata=probe.metadata, source=probe.source)


def boxes_reference(meta: dict[str, Any]) -> CTVolume | None:
    """The CT a shapes layer's boxes were drawn on, for the CSV's DICOM and patient-coordinate columns.

    The shapes layer's own metadata when it carries the CT's (``dicom`` tags / ``origin``), else the image
    layer its ``metadata["source"]`` names in the current viewer (the Detect widget sets it). None when
    neither is known (the CSV then has the array columns only).
    """
    md = dict(meta.get("metadata") or {})
    own = _layer_geometry(meta)
    if own is not None:
        return own
    source = md.get("source")
    if not source:
        return None
    try:
        import napari

        viewer = napari.current_viewer()
        layer = viewer.layers[str(source)] if viewer is not None and str(source) in viewer.layers else None
    except Exception:  # noqa: BLE001 - no viewer (a script): no reference
        return None
    return _layer_geometry(layer) if layer is not None else None


def write_boxes_csv(path: str, data: Any, meta: dict) -> list[str]:
    """Save a shapes layer of boxes as CSV ``slice,x0,y0,x1,y1,label,score`` (pixels, edges at pixel borders)
    plus, when the CT the boxes belong to is known (:func:`boxes_reference`), each box's SOPInstanceUID,
    InstanceNumber, frame number and centre in patient coordinates (LPS mm;
    :data:`src_training.annotations.box_csv.REFERENCE_COLUMNS`).

    Each shape's bounding box on its slice is written; ``label`` / ``score`` come from the layer's features
    (defaults 1 and 1.0; RPN proposals use their ``objectness``).

    Parameters
    ----------
    path : str
        Destination ``.csv`` (``.csv`` appended if missing).
    data : list of arrays (4, 3) or (4, 2)
        The shapes in data coordinates (the image's pixel grid).
    meta : dict
        Layer state with ``features`` and ``metadata``.

    Returns
    -------
    list of str
        ``[path]``.

    Raises
    ------
    OutputExistsError
        The file exists (nothing written; the message names a free name).
    """
    p = Path(path)
    if p.suffix.lower() != ".csv":
        p = p.with_name(p.name + ".csv")
    _refuse_existing(p, "boxes")
    rows = shapes_records(list(data or []), meta.get("features"))
    boxes: dict[int, list] = {}
    labels: dict[int, list] = {}
    scores: dict[int, list] = {}
    for r in rows:
        z = r["slice"]
        boxes.setdefault(z, []).append([r["x0"], r["y0"], r["x1"], r["y1"]])
        labels.setdefault(z, []).append(r["label"])
        scores.setdefault(z, []).append(r["score"])
    out = core_write_boxes_csv(
        {z: np.asarray(b, dtype=np.float32) for z, b in boxes.items()},
        p,
        labels={z: np.asarray(v, dtype=np.int64) for z, v in labels.items()},
        scores={z: np.asarray(v, dtype=np.float32) for z, v in scores.items()},
        reference=boxes_reference(meta),
    )
    return [str(out)]


__all__ = [
    "boxes_reference",
    "derivation_description",
    "free_name",
    "layer_window",
    "series_description",
    "write_boxes_csv",
    "write_dicom_series",
    "write_nifti",
]

