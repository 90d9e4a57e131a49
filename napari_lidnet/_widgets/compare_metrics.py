"""The Qt-free parts of the Compare widget: the numbers of its table (the work runs in a worker thread),
which layers may be compared with which (:func:`same_grid`, :func:`layers_match`, :func:`guess_role`) and
the side-by-side grid (:class:`SideBySide`: napari's grid mode with titled cells and the lesion boxes
outlined in every cell, :func:`box_outline_vectors`).

Every number comes from :func:`src_training.evaluation.image_metrics` (PSNR / SSIM / RMSE on the networks'
[0, 1] scale: HU clipped to the model range ``DEFAULT_HU_RANGE``, default (-1024, 1024) HU, and scaled with
:func:`src_training.windowing.hu_to_unit`) and :func:`src_training.evaluation.detection_ap` (AP-50).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Points, Shapes

from src_training.evaluation import detection_ap, image_metrics
from src_training.shipped import shipped_models
from src_training.windowing import DEFAULT_HU_RANGE, hu_to_unit

from .._boxes import REFERENCE_BOX_COLOR, boxes_from_shapes_data, vertices_in_image
from .._layers import layer_geometry, layer_slice
from .._naming import denoiser_display_name
from ._layer_choice import DIFFERENCE_ROLE, RADIOMICS_ROI_NAME, layer_by_name

#: Table rows: (metric key in image_metrics / extra key, row label, format, higher_is_better or None).
#: The labels are short so that the table fits a narrow dock; :data:`METRIC_TIPS` says what each one is.
METRIC_ROWS: tuple[tuple[str, str, str, bool | None], ...] = (
    ("psnr", "PSNR slice (dB)", "{:.2f}", True),
    ("ssim", "SSIM slice", "{:.4f}", True),
    ("rmse", "RMSE slice", "{:.4f}", False),
    ("rmse_hu", "RMSE slice (HU)", "{:.1f}", False),
    ("psnr_roi", "PSNR boxes (dB)", "{:.2f}", True),
    ("ssim_roi", "SSIM boxes", "{:.4f}", True),
    ("rmse_roi", "RMSE boxes", "{:.4f}", False),
    ("rmse_roi_hu", "RMSE boxes (HU)", "{:.1f}", False),
    ("n_boxes", "lesion boxes", "{:.0f}", None),
    ("n_detections", "detections", "{:.0f}", None),
    ("ap50", "AP-50", "{:.3f}", True),
)

#: Tooltip of each table row (metric key -> what it measures, in which unit).
METRIC_TIPS: dict[str, str] = {
    "psnr": "Peak signal-to-noise ratio of the whole slice against the NDCT, in dB (higher is better).",
    "ssim": "Structural similarity of the whole slice with the NDCT, 0-1 (higher is better).",
    "rmse": "Root-mean-square error of the whole slice on the model's [0, 1] scale (lower is better).",
    "rmse_hu": "Root-mean-square error of the whole slice in HU (lower is better).",
    "psnr_roi": "PSNR inside the lesion boxes only, in dB (higher is better).",
    "ssim_roi": "SSIM inside the lesion boxes only (higher is better).",
    "rmse_roi": "RMSE inside the lesion boxes only, [0, 1] scale (lower is better).",
    "rmse_roi_hu": "RMSE inside the lesion boxes only, in HU (lower is better).",
    "n_boxes": "Number of reference lesion boxes on the measured slice(s).",
    "n_detections": "Number of boxes of this image's detections layer on the measured slice(s).",
    "ap50": "Detection average precision at 50 % box overlap against the lesion boxes (higher is better).",
}

#: Rules guessing a layer's role from its name (lower case): role -> predicate.
_ROLE_RULES = {
    "ldct": lambda s: ("ldct" in s or "low dose" in s or "low-dose" in s) and "lidnet" not in s
    and "baseline" not in s and "denois" not in s and "\u2212" not in s,
    "baseline": lambda s: ("baseline" in s or "redcnn" in s or "red-cnn" in s or "cpce" in s) and "lidnet" not in s
    and "\u2212" not in s,
    "lidnet": lambda s: "lidnet" in s and "\u2212" not in s,
    "ndct": lambda s: ("ndct" in s or "normal dose" in s or "normal-dose" in s) and "\u2212" not in s,
}


def guess_role(candidates: Sequence[tuple[str, int]], role: str) -> str | None:
    """Guess which layer plays ``role`` from the layer names.

    Parameters
    ----------
    candidates : sequence of (name, number of slices)
        The offered image layers, bottom to top (a 2D image counts as 1 slice).
    role : "ldct", "baseline", "lidnet" or "ndct"
        LDCT: "LDCT" / "low dose" (not a denoised output); baseline: "baseline", RED-CNN or CPCE (not
        LIDnet); LIDnet: "lidnet"; NDCT: "NDCT" / "normal dose". Difference maps (``… − NDCT``) never match.

    Returns
    -------
    str or None
        Among the names matching the rule, the one with the most slices (a whole-volume output is always
        preferred to an output computed on one slice), the lowest in the layer list on a tie; None when no
        name matches.
    """
    rule = _ROLE_RULES[role]
    best: tuple[int, str] | None = None
    for name, n in candidates:
        if rule(name.lower()) and (best is None or int(n) > best[0]):
            best = (int(n), name)
    return None if best is None else best[1]


def same_grid(shape_a: Sequence[int], scale_a: Sequence[float], shape_b: Sequence[int],
              scale_b: Sequence[float]) -> bool:
    """True when two image layers cover the same pixel grid: equal shapes (slices, rows, columns) and the
    same pixel spacing (layer ``scale``, mm, relative tolerance 1e-6), so they can be compared pixel for
    pixel. A one-slice output ``(1, y, x)`` of a ``(z, y, x)`` volume never matches it."""
    if tuple(int(v) for v in shape_a) != tuple(int(v) for v in shape_b):
        return False
    a = np.asarray(scale_a, dtype=float)
    b = np.asarray(scale_b, dtype=float)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=0.0))


def box_outline_vectors(slices: np.ndarray, boxes: np.ndarray, ndim: int = 3) -> np.ndarray:
    """Outlines of lesion boxes as napari vectors (four edges per box), for a Vectors layer on the image's
    pixel grid.

    Parameters
    ----------
    slices : ndarray int (N,)
        Slice index of each box (ignored when ``ndim`` is 2).
    boxes : ndarray (N, 4)
        ``xyxy`` in pixels with edges at pixel borders (architecture conventions).
    ndim : int
        2 (``(y, x)`` image) or 3 (``(z, y, x)`` volume; more axes get leading zeros).

    Returns
    -------
    ndarray float32 (4 N, 2, ndim)
        ``[start, direction]`` per edge in the image's data coordinates (napari pixel centres at integers,
        so a border at ``x0`` lies at ``x0 - 0.5``); the direction has no component along z, so each outline
        is drawn on its own slice only.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    slices = np.asarray(slices, dtype=np.float64).reshape(-1)
    out = np.zeros((4 * len(boxes), 2, ndim), dtype=np.float32)
    for i, (x0, y0, x1, y1) in enumerate(boxes - 0.5):
        corners = ((y0, x0), (y0, x1), (y1, x1), (y1, x0))
        for k in range(4):
            (ya, xa), (yb, xb) = corners[k], corners[(k + 1) % 4]
            row = out[4 * i + k]
            row[0, -2:] = (ya, xa)
            row[1, -2:] = (yb - ya, xb - xa)
            if ndim >= 3:
                row[0, -3] = slices[i] if len(slices) else 0.0
    return out


def format_value(value: float, fmt: str) -> str:
    """A table cell: ``fmt`` applied to ``value``; NaN/None -> "–", infinity -> "∞"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞"
    return fmt.format(value)


def _mean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("inf") if any(v is not None and math.isinf(v) for v in values) else float("nan")
    return float(np.mean(vals))


def metric_rows_work(payload: dict[str, Any]):
    """Progress generator computing the numbers of the compare table (runs in a worker thread: reads
    arrays only; no layer is modified).

    For every compared layer and slice: :func:`src_training.evaluation.image_metrics` of ``hu_to_unit(slice)``
    against ``hu_to_unit(NDCT slice)`` (model HU range ``DEFAULT_HU_RANGE``) with that slice's lesion boxes;
    detections (if any) are counted and scored with :func:`src_training.evaluation.detection_ap` (AP-50).
    Several slices: means (ROI values over the slices with boxes, NaN-free), counts summed, AP over all.

    Parameters
    ----------
    payload : dict
        From ``CompareWidget._gather``: ``ref`` (NDCT layer), ``zs`` (slice indices or [None]), ``boxes``
        (per slice (n, 4) xyxy pixels), ``has_boxes``, ``items`` (``name``, ``layer``, ``dets`` per slice
        (boxes, scores) or None).

    Yields
    ------
    (done, total, message)
        One step per (layer, slice).

    Returns
    -------
    dict layer name -> metrics dict

    Raises
    ------
    LidnetError
        Shape mismatch (from image_metrics).
    """
    ref, zs = payload["ref"], payload["zs"]
    total = max(len(payload["items"]) * len(zs), 1)
    done = 0
    results: dict[str, dict[str, float]] = {}
    for it in payload["items"]:
        ly, dets = it["layer"], it["dets"]
        per: list[dict[str, float]] = []
        preds, targets = [], []
        for i, z in enumerate(zs):
            boxes = payload["boxes"][i]
            pred = hu_to_unit(layer_slice(ly, z), DEFAULT_HU_RANGE)
            refs = hu_to_unit(layer_slice(ref, z), DEFAULT_HU_RANGE)
            m = dict(image_metrics(pred, refs, boxes, hu_range=DEFAULT_HU_RANGE))
            if dets is not None:
                db, ds = dets[i]
                m["n_detections"] = float(len(db))
                preds.append({"boxes": db, "scores": ds if ds is not None else np.ones(len(db), np.float32)})
                targets.append({"boxes": boxes})
            per.append(m)
            done += 1
            yield (done, total, f"metrics of {it['name']}: slice {i + 1}/{len(zs)}")
        if len(per) == 1:
            agg = dict(per[0])
        else:
            agg = {}
            for key in per[0]:
                vals = [float(p[key]) for p in per if key in p]
                agg[key] = float(np.sum(vals)) if key in ("n_boxes", "n_detections") else _mean(vals)
        if dets is not None and payload["has_boxes"]:
            agg["ap50"] = float(detection_ap(preds, targets)["ap50"])
        results[it["name"]] = agg
    return results


def compute_metric_rows(payload: dict[str, Any]) -> dict[str, dict[str, float]]:
    """:func:`metric_rows_work` run to its end in the calling thread; returns its result."""
    gen = metric_rows_work(payload)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


#: ``metadata["lidnet_role"]`` of the outline (Vectors) layers of the side-by-side cells.
GRID_OUTLINE_ROLE = "lidnet_grid_outlines"
#: Outline colours in the side-by-side cells (RGBA 0-1): reference boxes, detections, radiomics ROI.
OUTLINE_COLORS = {
    "reference": tuple(int(REFERENCE_BOX_COLOR[i:i + 2], 16) / 255.0 for i in (1, 3, 5)) + (1.0,),
    "detections": (1.0, 0.55, 0.0, 1.0),
    "roi": (1.0, 1.0, 0.0, 1.0),
}


# ----------------------------------------------------------------------------------------------- helpers
def _shape(layer) -> tuple[int, ...]:
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    return tuple(int(v) for v in data.shape)


def n_slices(layer) -> int:
    """Number of slices of an image layer (1 for a 2D image)."""
    shape = _shape(layer)
    return shape[-3] if len(shape) >= 3 else 1


def layers_match(a, b) -> bool:
    """True when two image layers cover the same pixels (shape and pixel spacing, :func:`same_grid`)."""
    return same_grid(_shape(a), tuple(a.scale), _shape(b), tuple(b.scale))


def describe_grid(layer) -> str:
    """``"3 slices of 64 × 64 pixels, 0.70 mm"``: what a layer covers, in a radiologist's words."""
    shape = _shape(layer)
    mm = float(abs(layer.scale[-1]))
    plane = f"{shape[-2]} × {shape[-1]} pixels, {mm:.2f} mm"
    if len(shape) < 3:
        return f"one image of {plane}"
    return f"{shape[-3]} slice{'s' if shape[-3] != 1 else ''} of {plane}"


def mismatch_message(layer, ref) -> str:
    """The message shown when ``layer`` and ``ref`` cannot be compared pixel for pixel."""
    return (
        f"'{layer.name}' ({describe_grid(layer)}) does not cover the same pixels as '{ref.name}' "
        f"({describe_grid(ref)}), so they cannot be compared. Choose images of the whole scan, e.g. run "
        "Denoise on the whole volume."
    )


def output_layer_name(checkpoint: Path, config: dict[str, Any]) -> str:
    """Name of the layer a denoiser checkpoint makes: a shipped model's short name + " denoised" (e.g.
    ``"CPCE LIDnet (shipped) denoised"``), else the model and method + the checkpoint's folder and file
    (``"CPCE (LIDnet) denoised (lidnet/denoiser.pt)"``)."""
    p = Path(checkpoint).resolve()
    try:
        shipped = {m.path: m.short_name for m in shipped_models("denoiser")}
    except Exception:  # noqa: BLE001 - an unreadable catalogue: named after the file
        shipped = {}
    if p in shipped:
        return f"{shipped[p]} denoised"
    model = denoiser_display_name(str(config.get("denoiser", "")), config.get("method"))
    return f"{model} denoised ({p.parent.name}/{p.name})"


#: Font sizes (points) of the side-by-side cell titles: largest, smallest.
TITLE_FONT_SIZES = (10.0, 7.0)


def title_font_size(n_chars: int, n_columns: int, screen_px: int = 1920) -> float:
    """Font size (points) of the cell titles so that a name of ``n_chars`` characters fits one of
    ``n_columns`` cells of a ``screen_px`` wide screen (the canvas takes about half of it): 10 pt for short
    names, down to 7 pt; longer names are cut at the cell's edge by napari."""
    cell_px = 0.5 * screen_px / max(int(n_columns), 1)
    size = cell_px / (max(int(n_chars), 1) * 0.95)  # a character is about 0.95 x the size in pixels
    hi, lo = TITLE_FONT_SIZES
    return float(min(hi, max(lo, np.floor(size))))


# ----------------------------------------------------------------------------------------------- grid
class SideBySide:
    """napari grid mode with one titled cell per image and the lesion boxes outlined in every cell.

    Each cell holds an image layer and, right above it in the layer list, a Vectors layer of outlines on
    the image's pixel grid (grid stride 2, so the two share the cell): the reference boxes (green), the
    image's detections (orange) and the radiomics ROI (yellow). The image's name overlay is the cell's
    title. While the grid is on, every other layer is hidden (hidden layers take no cell), a shapes layer
    added meanwhile (a new ROI, new detections) is hidden and outlined instead, and the outlines follow
    the boxes' edits. :meth:`leave` removes the outline layers and restores the camera, grid settings,
    layer order, visibility, name overlays and selection as they were before :meth:`enter`.

    Parameters
    ----------
    viewer : napari.Viewer
    detections_for : callable(image layer) -> shapes layer or None
        The detections layer made from an image.
    """

    def __init__(self, viewer: Any, detections_for: Callable[[Any], Any]):
        self.viewer = viewer
        self._detections_for = detections_for
        self._saved: dict[str, Any] | None = None
        #: (image layer name, outline layer name) per cell, in grid order.
        self.cells: list[tuple[str, str]] = []
        self._boxes_name: str | None = None
        self._hidden_new: set[str] = set()
        self._hooked: list[Any] = []
        self._busy = False

    @property
    def active(self) -> bool:
        """True while the side-by-side grid is shown."""
        return self._saved is not None

    # ------------------------------------------------------------------ enter / leave
    def save_view(self) -> None:
        """Remember the camera, grid settings, layer order, visibility, titles and selection (done by
        :meth:`enter`; call it earlier when layers are added before entering, e.g. difference maps, so that
        :meth:`leave` treats them as new). No-op while active."""
        if self._saved is not None:
            return
        layers = self.viewer.layers
        cam = self.viewer.scene.camera
        grid = self.viewer.canvas.grid
        self._saved = {
            "order": [ly.name for ly in layers],
            "visible": {ly.name: bool(ly.visible) for ly in layers},
            "titles": {ly.name: (bool(ly.name_overlay.visible), float(ly.name_overlay.font_size)) for ly in layers},
            "camera": {"center": tuple(cam.center), "zoom": float(cam.zoom), "angles": tuple(cam.angles),
                       "perspective": float(cam.perspective)},
            "grid": {"stride": grid.stride, "shape": tuple(grid.shape), "spacing": grid.spacing,
                     "enabled": grid.enabled},
            "selected": [ly.name for ly in layers.selection],
            "active": getattr(layers.selection.active, "name", None),
        }
        self._hidden_new = set()

    def enter(self, images: list, diffs: list, boxes_layer: Any = None) -> None:
        """Show ``images`` in the first row and ``diffs`` (difference maps) in the second row of the grid.

        Calling it again while active rebuilds the cells (the state saved by the first call is kept)."""
        layers = self.viewer.layers
        self.save_view()
        self._unhook()
        with layers.batched_update():  # one scene-graph update for all the changes below
            self._remove_outlines()
            self._boxes_name = getattr(boxes_layer, "name", None)
            self._busy = True
            try:
                self.cells = [(ly.name, self._add_outline_layer(ly).name) for ly in (*images, *diffs)]
                self._arrange()
                titled = {img for img, _ in self.cells}
                shown = titled | {vec for _, vec in self.cells}
                size = title_font_size(max((len(n) for n in titled), default=0), max(len(images), len(diffs), 1))
                for ly in layers:
                    ly.visible = ly.name in shown
                    ly.name_overlay.visible = ly.name in titled
                    if ly.name in titled:
                        ly.name_overlay.font_size = size
                self._restore_selection(self._saved["selected"], self._saved["active"])
            finally:
                self._busy = False
            self.refresh_outlines()
            self._hook()
            grid = self.viewer.canvas.grid
            grid.stride = 2
            grid.shape = (2 if diffs else 1, max(len(images), len(diffs), 1))
            grid.spacing = 4
            grid.enabled = True
        self.viewer.reset_view()

    def leave(self) -> None:
        """Leave the grid: remove the outline layers and restore what :meth:`enter` changed (no-op when
        not active). Layers added meanwhile stay: new images above the top image, difference maps hidden,
        new shapes layers visible."""
        saved = self._saved
        if saved is None:
            return
        self._unhook()
        self._busy = True
        try:
            with self.viewer.layers.batched_update():  # one scene-graph update
                self._remove_outlines()
                grid = self.viewer.canvas.grid
                grid.enabled = saved["grid"]["enabled"]
                grid.stride = saved["grid"]["stride"]
                grid.shape = saved["grid"]["shape"]
                grid.spacing = saved["grid"]["spacing"]
                layers = self.viewer.layers
                names = [ly.name for ly in layers]
                old = [n for n in saved["order"] if n in names]
                new = [n for n in names if n not in saved["order"]]
                new_images = [n for n in new if isinstance(layers[n], Image)]
                target = list(old)
                image_pos = [i for i, n in enumerate(target) if isinstance(layers[n], Image)]
                at = image_pos[-1] + 1 if image_pos else 0
                target[at:at] = new_images
                target += [n for n in new if n not in new_images]
                self._apply_order(target)
                for ly in layers:
                    if ly.name in saved["visible"]:
                        ly.visible = saved["visible"][ly.name]
                    elif (ly.metadata or {}).get("lidnet_role") == DIFFERENCE_ROLE:
                        ly.visible = False
                    elif ly.name in self._hidden_new:
                        ly.visible = True
                    shown, size = saved["titles"].get(ly.name, (False, ly.name_overlay.font_size))
                    ly.name_overlay.visible = shown
                    ly.name_overlay.font_size = size
                self._restore_selection(saved["selected"], saved["active"])
            cam = self.viewer.scene.camera
            cam.angles = saved["camera"]["angles"]
            cam.perspective = saved["camera"]["perspective"]
            cam.center = saved["camera"]["center"]
            cam.zoom = saved["camera"]["zoom"]
        finally:
            self._busy = False
            self._saved = None
            self.cells = []
            self._hidden_new = set()

    # ------------------------------------------------------------------ layer list
    def _apply_order(self, target: list[str]) -> None:
        """Reorder the layer list to ``target`` (every layer name, bottom to top), redrawing once."""
        layers = self.viewer.layers
        if [ly.name for ly in layers] == target:
            return
        with layers.events.reordered.blocker():  # one redraw at the end, not one per move
            for i, name in enumerate(target):
                cur = [ly.name for ly in layers].index(name)
                if cur != i:
                    layers.move(cur, i)
        layers.events.reordered(value=layers)

    def _arrange(self) -> None:
        """Cells first (image, then its outlines: one stride-2 group each), every other layer after."""
        names = [ly.name for ly in self.viewer.layers]
        cells = [n for pair in self.cells for n in pair if all(p in names for p in pair)]
        self._apply_order(cells + [n for n in names if n not in cells])

    def _restore_selection(self, selected: list[str], active: str | None) -> None:
        layers = self.viewer.layers
        keep = [layers[n] for n in selected if n in layers]
        layers.selection.clear()
        layers.selection.update(keep)
        if active in layers:
            layers.selection.active = layers[active]

    def _add_outline_layer(self, image: Any) -> Any:
        nd = image.ndim
        return self.viewer.add_vectors(
            np.zeros((0, 2, nd), np.float32),
            ndim=nd,
            name=f"{image.name} · outlines",
            **layer_geometry(image),
            edge_width=max(1.0, _shape(image)[-1] / 256.0),
            vector_style="line",
            opacity=1.0,
            metadata={"lidnet_role": GRID_OUTLINE_ROLE, "cell_of": image.name},
        )

    def _remove_outlines(self) -> None:
        for ly in [ly for ly in self.viewer.layers if (ly.metadata or {}).get("lidnet_role") == GRID_OUTLINE_ROLE]:
            self.viewer.layers.remove(ly)

    # ------------------------------------------------------------------ outlines
    def _sources(self, image: Any) -> list[tuple[Any, str]]:
        """Shapes layers outlined in the cell of ``image`` with their colour key."""
        out = []
        ref = layer_by_name(self.viewer, self._boxes_name)
        if ref is not None:
            out.append((ref, "reference"))
        source = layer_by_name(self.viewer, (image.metadata or {}).get("source_layer")) or image
        det = self._detections_for(source)
        if det is not None:
            out.append((det, "detections"))
        roi = layer_by_name(self.viewer, RADIOMICS_ROI_NAME)
        if roi is not None:
            out.append((roi, "roi"))
        return out

    def outline_boxes(self, image: Any, memo: dict | None = None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """The boxes outlined in the cell of ``image``: colour key -> (slices (N,), xyxy boxes (N, 4) in the
        image's pixels). ``memo`` (a dict shared by the cells of one redraw) keeps the mapping of a shapes
        layer into a pixel grid already computed for another cell on the same grid."""
        out = {}
        nz = n_slices(image)
        memo = {} if memo is None else memo
        grid_key = (tuple(image.scale), tuple(image.translate), tuple(np.ravel(image.rotate)), _shape(image))
        for layer, key in self._sources(image):
            if not len(layer.data):
                continue
            cache_key = (layer.name, grid_key)
            if cache_key in memo:
                out[key] = memo[cache_key]
                continue
            mapped = [vertices_in_image(layer, v, image) for v in layer.data]
            slices, boxes = boxes_from_shapes_data(mapped)
            if layer.ndim < image.ndim and image.ndim >= 3:  # a 2D shapes layer applies to every slice
                slices = np.repeat(np.arange(nz), len(boxes))
                boxes = np.tile(boxes, (nz, 1))
            keep = (slices >= 0) & (slices < nz) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            out[key] = memo[cache_key] = (slices[keep], boxes[keep])
        return out

    def refresh_outlines(self, *_: Any) -> None:
        """Redraw the outlines of every cell from the current boxes, detections and ROI."""
        if self._busy:
            return
        memo: dict = {}
        for img_name, vec_name in self.cells:
            image, vec = layer_by_name(self.viewer, img_name), layer_by_name(self.viewer, vec_name)
            if image is None or vec is None:
                continue
            parts, colors = [np.zeros((0, 2, image.ndim), np.float32)], [np.zeros((0, 4), np.float32)]
            for key, (slices, boxes) in self.outline_boxes(image, memo).items():
                v = box_outline_vectors(slices, boxes, image.ndim)
                parts.append(v)
                colors.append(np.tile(np.asarray(OUTLINE_COLORS[key], np.float32), (len(v), 1)))
            vec.data = np.concatenate(parts)
            if len(vec.data):
                vec.edge_color = np.concatenate(colors)

    # ------------------------------------------------------------------ events while active
    def _hook(self) -> None:
        events = self.viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._on_removed)
        self._hooked = [events.inserted, events.removed]
        for ly in self.viewer.layers:
            if isinstance(ly, Shapes):
                ly.events.data.connect(self.refresh_outlines)
                self._hooked.append(ly.events.data)

    def _unhook(self) -> None:
        for emitter in self._hooked:
            for cb in (self._on_inserted, self._on_removed, self.refresh_outlines):
                try:
                    emitter.disconnect(cb)
                except (TypeError, ValueError, RuntimeError):
                    pass
        self._hooked = []

    def _on_inserted(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if self._busy or layer is None or (layer.metadata or {}).get("lidnet_role") == GRID_OUTLINE_ROLE:
            return
        if isinstance(layer, (Shapes, Points)):  # would take a cell of its own: outlined instead
            self._hidden_new.add(layer.name)
            layer.visible = False
            if isinstance(layer, Shapes):
                layer.events.data.connect(self.refresh_outlines)
                self._hooked.append(layer.events.data)
            self.refresh_outlines()

    def _on_removed(self, event: Any = None) -> None:
        if self._busy:
            return
        names = {ly.name for ly in self.viewer.layers}
        self._busy = True
        try:
            for img, vec in list(self.cells):
                if img not in names and vec in names:
                    self.viewer.layers.remove(vec)
            self.cells = [(i, v) for i, v in self.cells if i in names]
            self._arrange()  # a removal shifts the stride-2 groups
        finally:
            self._busy = False
        self.refresh_outlines()


__all__ = [
    "GRID_OUTLINE_ROLE",
    "METRIC_ROWS",
    "METRIC_TIPS",
    "OUTLINE_COLORS",
    "SideBySide",
    "TITLE_FONT_SIZES",
    "box_outline_vectors",
    "compute_metric_rows",
    "describe_grid",
    "format_value",
    "guess_role",
    "layers_match",
    "metric_rows_work",
    "mismatch_message",
    "n_slices",
    "output_layer_name",
    "same_grid",
    "title_font_size",
]
