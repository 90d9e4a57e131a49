"""Detect-lesions widget: run a trained lesion detector (Faster R-CNN + FPN, LIDnet's detection network)
on the current slice or every slice, and show its detections and its top-K RPN proposals.

The network runs once with a low score threshold and a generous K; the raw results are kept, so moving
the score threshold or K re-filters the shapes layers without running the network again.

The detector sees the slices at its working size (the ``image_size`` of its training configuration, 256 px
for the shipped detectors), as in training and evaluation; the boxes are mapped back to the image's pixels.
The score threshold defaults to the detector's calibrated threshold
(:func:`src_training.evaluation.calibration.stored_score_threshold`), 0.5 when it has none.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, SpinBox

from src_training import inference
from src_training.errors import CheckpointError, LidnetError
from src_training.working_size import detect_at_size, working_size
from src_training.evaluation.calibration import DEFAULT_SCORE_THRESHOLD, StoredThreshold, stored_score_threshold

from .._boxes import (PROPOSAL_BOX_COLOR, SCORE_COLORMAP, boxes_to_rectangles, detection_text, replace_rectangles,
                      shapes_layer_data)
from .._layers import current_slice_index, layer_volume
from .._messages import notify_error
from ._checkpoints import CheckpointChooser, checkpoint_display_name
from ._controls import device_chooser, scope_chooser
from ._layer_choice import DETECTIONS_KIND, PROPOSALS_KIND, LayerChooser
from ._tasks import Cancelled, TaskRunner, run_controls
from .denoise import InferenceMessages, with_note

#: Score threshold of the network run (detections below it are never kept).
RAW_SCORE_THRESH = 0.01
#: Largest K offered; the network run keeps this many proposals per slice.
K_MAX = 50
def detect_work(
    checkpoint: Any,
    hu: np.ndarray,
    slices: list[int] | None,
    device: str,
    *,
    k: int = K_MAX,
    score_thresh: float = RAW_SCORE_THRESH,
    cancel_event: Any = None,
    batch_size: int = 1,
    on_message: Callable[[str], None] | None = None,
    at_working_size: bool = True,
):
    """Progress generator: load the detector and run it slice by slice (runs in a worker thread).

    Parameters
    ----------
    checkpoint : path
        ``detector.pt``.
    hu : ndarray float32 (z, y, x) HU
        The whole volume (``slices`` selects which slices are processed).
    slices : list of int or None
        Slice indices (None: all).
    device : "auto", "cuda", "cpu", "mps"
    k : int
        Proposals kept per slice.
    score_thresh : float
        Detections below this score are dropped by the network run.
    cancel_event : threading.Event, optional
    batch_size : int
        Slices per network pass (halved automatically when memory runs out, then the CPU is used).
    on_message : callable(str), optional
        Receives the out-of-memory fallback messages of :func:`src_training.inference.detect_slices`
        (called in this thread; e.g. an :class:`~napari_lidnet._widgets.denoise.InferenceMessages`). The
        progress messages repeat the latest one.
    at_working_size : bool
        True (default): the slices are resampled to the detector's working size (:func:`working_size`) before
        detection, as in its training and evaluation, and the boxes mapped back to the image's pixels; a
        detector run at another scale sees lesions and vessels at sizes it never learned (on the 512 px
        sample the shipped Faster R-CNN then fires on vessels: 22 boxes >= 0.5 on the middle LDCT slice
        instead of 3). False: the native slices.

    Yields
    ------
    (done, total, message)

    Returns
    -------
    (list of dict, dict config)
        One dict per processed slice as yielded by :func:`src_training.inference.detect_slices`
        (``slice``, ``boxes`` (n, 4) xyxy px of the image, ``scores``, ``labels``, ``proposals`` (K, 4),
        ``objectness``), and the checkpoint's configuration with ``detected_at`` (the slice size in pixels
        the network saw).

    Raises
    ------
    src_training.inference.InferenceMemoryError
        Out of memory even with one slice on the CPU.
    Cancelled
        ``cancel_event`` was set (checked after each slice).
    """
    total = int(hu.shape[0]) if slices is None else len(slices)
    yield (0, total, "loading the detector")
    detector, config = inference.load_detector(checkpoint, device=device)
    config = dict(config)
    hu_range = tuple(float(v) for v in config["hu_range"])
    results: list[dict[str, Any]] = []
    notes: list[str] = []

    def relay(message: str) -> None:
        notes.append(message)
        if on_message is not None:
            on_message(message)

    size = working_size(config) if at_working_size else None
    h, w = int(hu.shape[-2]), int(hu.shape[-1])
    if size is not None and (h, w) != (size, size):
        idx = list(range(int(hu.shape[0]))) if slices is None else [int(s) for s in slices]
        for s in idx:
            if not 0 <= s < int(hu.shape[0]):
                raise IndexError(f"Slice {s} is outside the volume of {hu.shape[0]} slices.")
        config["detected_at"] = size
        stream = detect_at_size(detector, hu, idx, size, hu_range, int(k), float(score_thresh),
                                max(1, int(batch_size)), relay)
    else:
        config["detected_at"] = None
        stream = inference.detect_slices(detector, hu, hu_range, k=int(k), score_thresh=float(score_thresh),
                                         slices=slices, batch_size=max(1, int(batch_size)), on_message=relay)
    for res in stream:
        results.append(res)
        text = f"detecting: slice {res['slice']}"
        yield (int(res["done"]), int(res["total"]), f"{text} ({notes[-1]})" if notes else text)
        if cancel_event is not None and cancel_event.is_set():
            raise Cancelled("cancelled by the user")
    return results, config


def filter_detections(results: list[dict[str, Any]], score_thresh: float) -> tuple[dict[int, np.ndarray], dict]:
    """Detections with ``score >= score_thresh``: boxes per slice and features in rectangle order
    (slice, then descending score) ``score``, ``label``."""
    boxes: dict[int, np.ndarray] = {}
    scores: list[float] = []
    labels: list[int] = []
    for res in sorted(results, key=lambda r: int(r["slice"])):
        sc = np.asarray(res["scores"], dtype=np.float32).reshape(-1)
        keep = np.flatnonzero(sc >= score_thresh)
        if keep.size == 0:
            continue
        keep = keep[np.argsort(-sc[keep], kind="stable")]
        boxes[int(res["slice"])] = np.asarray(res["boxes"], dtype=np.float32).reshape(-1, 4)[keep]
        scores.extend(sc[keep].tolist())
        labels.extend(np.asarray(res["labels"]).reshape(-1)[keep].astype(int).tolist())
    return boxes, {"score": np.asarray(scores, dtype=np.float32), "label": np.asarray(labels, dtype=np.int64)}


def filter_proposals(results: list[dict[str, Any]], k: int) -> tuple[dict[int, np.ndarray], dict]:
    """The top-``k`` RPN proposals of each slice (sorted by objectness) and features ``objectness``, ``rank``."""
    boxes: dict[int, np.ndarray] = {}
    obj: list[float] = []
    rank: list[int] = []
    for res in sorted(results, key=lambda r: int(r["slice"])):
        o = np.asarray(res["objectness"], dtype=np.float32).reshape(-1)
        order = np.argsort(-o, kind="stable")[: max(int(k), 0)]
        if order.size == 0:
            continue
        boxes[int(res["slice"])] = np.asarray(res["proposals"], dtype=np.float32).reshape(-1, 4)[order]
        obj.extend(o[order].tolist())
        rank.extend(range(1, order.size + 1))
    return boxes, {"objectness": np.asarray(obj, dtype=np.float32), "rank": np.asarray(rank, dtype=np.int64)}


class DetectWidget(Container):
    """Detect lesions on the chosen CT layer with a trained detector checkpoint.

    Adds two shapes layers on the image's grid (3D rectangles on their slices), named after the image and
    the checkpoint (``"lung2 LDCT · detections · Faster R-CNN NDCT (shipped)"``); running again with the same
    image and checkpoint updates those layers instead of adding new ones:

    * ``<image> · detections · <checkpoint>``: boxes with ``score``/``label`` features, edge colour by score
      (colormap ``plasma``, 0 -> 1), the score written small above the upper-left corner of each kept box
      (:func:`napari_lidnet._boxes.detection_text`);
    * ``<image> · RPN top-K · <checkpoint>``: the K proposals of highest objectness per slice
      (``objectness``/``rank`` features, no text), the boxes LIDnet's ROI perceptual loss looks at.

    ``score threshold`` and ``K`` re-filter the kept network results (no re-run). The threshold starts at the
    chosen checkpoint's calibrated value (the shipped detectors: max F1 at IoU 0.5 on ``lung1``) and follows
    the checkpoint while the user has not changed it; the line under it says where the value comes from.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = LayerChooser(napari_viewer, label="image")
        self.checkpoint = CheckpointChooser("detector", label="detector")
        self.device = device_chooser()
        self.scope = scope_chooser()
        self.score_thresh = FloatSpinBox(
            label="score threshold",
            min=0.0,
            max=1.0,
            step=0.01,
            value=DEFAULT_SCORE_THRESHOLD,
            tooltip="boxes with a lower score are hidden; starts at the detector's calibrated threshold",
        )
        self.threshold_source = Label(label="", value="")
        self.top_k = SpinBox(label="RPN top-K", min=0, max=K_MAX, value=5)
        self.show_proposals = CheckBox(label="show RPN proposals", value=True)
        self.batch_size = SpinBox(
            label="batch size",
            min=1,
            max=64,
            value=1,
            tooltip="slices per network pass; halved automatically (then the CPU is used) when memory runs out",
        )
        self.run_btn, self.cancel_btn, self.progress, self.status = run_controls("Detect")
        self.extend([
                self.image,
                self.checkpoint,
                self.device,
                self.scope,
                self.score_thresh,
                self.threshold_source,
                self.top_k,
                self.show_proposals,
                self.batch_size,
                self.run_btn,
                self.cancel_btn,
                self.progress,
                self.status,
            ])
        self.runner = TaskRunner("Detect lesions", self.run_btn, self.cancel_btn, self.progress, self.status)
        #: Messages of the last run (out-of-memory fallbacks), see :class:`InferenceMessages`.
        self.messages = InferenceMessages("Detect lesions", self.status)
        #: Raw network results of the last run: list of per-slice dicts (see :func:`detect_work`).
        self.raw_results: list[dict[str, Any]] | None = None
        self.source_layer: Any = None
        #: Checkpoint file and display name of the last run (its layers are named after them).
        self.result_checkpoint: Path | None = None
        self.result_name: str = ""
        self.result_size: int | None = None
        self.detections_layer: Any = None
        self.proposals_layer: Any = None
        #: How many times the network ran (tests check that re-filtering does not re-run it).
        self.n_network_runs = 0
        #: The chosen checkpoint's stored threshold (None: it has none) and whether the user changed the box.
        self.stored_threshold: StoredThreshold | None = None
        self.threshold_edited = False
        self._threshold_checkpoint: Path | None = None
        self._setting_threshold = False
        self.run_btn.changed.connect(self.run)
        self.score_thresh.changed.connect(self._on_threshold_changed)
        self.top_k.changed.connect(self.refilter)
        self.show_proposals.changed.connect(self._on_show_proposals)
        self.checkpoint.changed.connect(self._on_checkpoint_changed)
        self._on_checkpoint_changed()

    # ------------------------------------------------------------------ threshold default
    def default_threshold(self) -> float:
        """The chosen checkpoint's stored threshold, or 0.5 when it has none."""
        st = self.stored_threshold
        return float(st.value) if st is not None else DEFAULT_SCORE_THRESHOLD

    def _on_checkpoint_changed(self, *_: Any) -> None:
        path = self.checkpoint.value
        if path == self._threshold_checkpoint:
            return
        self._threshold_checkpoint = path
        self.stored_threshold = stored_score_threshold(path) if path is not None else None
        if not self.threshold_edited:
            self._set_threshold(self.default_threshold())
        self._show_threshold_source()

    def _set_threshold(self, value: float) -> None:
        self._setting_threshold = True
        try:
            self.score_thresh.value = round(float(value), 2)
        finally:
            self._setting_threshold = False
        self.refilter()

    def _on_threshold_changed(self, *_: Any) -> None:
        if not self._setting_threshold:
            self.threshold_edited = abs(float(self.score_thresh.value) - round(self.default_threshold(), 2)) > 1e-9
            self._show_threshold_source()
            self.refilter()

    def _show_threshold_source(self) -> None:
        st = self.stored_threshold
        if st is not None:
            where = f"{st.value:.2f} {st.source}"
        else:
            where = f"{DEFAULT_SCORE_THRESHOLD:.2f} (default; this detector carries no calibration)"
        if self.threshold_edited:
            text = f"threshold {float(self.score_thresh.value):.2f} (set by you; detector's: {where})"
        elif st is not None:
            text = f"threshold {st.value:.2f} ({st.source})"
        else:
            text = f"threshold {where}"
        self.threshold_source.value = text
        if st is not None and st.record:
            rec = st.record
            parts = [rec.get("method")]
            if isinstance(rec.get("f1"), (int, float)):
                parts.append(f"F1 {rec['f1']:.2f}, precision {rec.get('precision', float('nan')):.2f}, "
                             f"recall {rec.get('recall', float('nan')):.2f}")
            self.threshold_source.tooltip = "; ".join(str(p) for p in parts if p)

    # ------------------------------------------------------------------
    def run(self, *_: Any) -> Any:
        """Run the detector (thread worker; synchronous with ``LIDNET_SYNC=1``); layers are added/updated
        when it finishes."""
        layer = self.image.value
        ckpt = self.checkpoint.value
        device = self.device.value
        whole = self.scope.value == "whole volume"
        z_cur = current_slice_index(self.viewer, layer) if layer is not None else 0
        data = layer.data if layer is not None else None
        batch = int(self.batch_size.value)
        runner = self.runner
        messages = self.messages = InferenceMessages("Detect lesions", self.status)
        name = checkpoint_display_name(ckpt) if ckpt is not None else ""

        def work():
            if layer is None:
                raise LidnetError("Choose the image layer to run the detector on.")
            if ckpt is None:
                raise CheckpointError("Choose a detector checkpoint (detector.pt of a training run) first.")
            hu = layer_volume(data, layer.name)
            slices = None if whole else [z_cur]
            self.n_network_runs += 1
            results, config = yield from detect_work(
                ckpt, hu, slices, device, cancel_event=runner.cancel_event, batch_size=batch, on_message=messages
            )
            return results, config

        def done(result: Any) -> None:
            results, config = result
            self.raw_results = results
            self.source_layer = layer
            self.result_checkpoint, self.result_name = Path(ckpt), name
            self.result_size = config.get("detected_at") if isinstance(config, dict) else None
            self.detections_layer = self._own_layer(DETECTIONS_KIND)
            self.proposals_layer = self._own_layer(PROPOSALS_KIND)
            self.refilter()
            if messages.last:
                self.status.value = with_note(str(self.status.value), messages)

        return runner.start(work, done, desc="Detect lesions")

    # ------------------------------------------------------------------
    def _layer_alive(self, layer: Any) -> bool:
        return layer is not None and layer in self.viewer.layers

    def _layer_name(self, what: str) -> str:
        return f"{self.source_layer.name} · {what} · {self.result_name}"

    def _layer_metadata(self, kind: str) -> dict[str, Any]:
        return {"kind": kind, "source": self.source_layer.name, "checkpoint": str(self.result_checkpoint),
                "checkpoint_name": self.result_name}

    def _own_layer(self, kind: str) -> Any:
        """The viewer's layer of ``kind`` made earlier for the same image and checkpoint (re-used), or None."""
        want = self._layer_metadata(kind)
        for lyr in self.viewer.layers:
            md = getattr(lyr, "metadata", None) or {}
            if all(md.get(k) == want[k] for k in ("kind", "source", "checkpoint")) and lyr.ndim == self._ndim():
                return lyr
        return None

    def _ndim(self) -> int:
        data = self.source_layer.data
        return 3 if getattr(data, "ndim", 3) >= 3 else 2

    def refilter(self, *_: Any) -> None:
        """Rebuild the detection and proposal layers from the kept results with the current threshold and K."""
        if self.raw_results is None or self.source_layer is None:
            return
        try:
            self._update_detections()
            self._update_proposals()
            n_det = len(self.detections_layer.data) if self.detections_layer is not None else 0
            size = f"; run at {self.result_size} px, the detector's working size" if self.result_size else ""
            self.status.value = (
                f"{n_det} detection(s) >= {self.score_thresh.value:.2f} on {len(self.raw_results)} slice(s){size}"
            )
        except Exception as exc:  # noqa: BLE001
            notify_error(exc, "Detect lesions")

    def _update_detections(self) -> None:
        boxes, feats = filter_detections(self.raw_results or [], float(self.score_thresh.value))
        ndim = self._ndim()
        if self._layer_alive(self.detections_layer):
            rects, slices = boxes_to_rectangles(boxes, ndim=ndim)
            replace_rectangles(self.detections_layer, rects, {"slice": slices, **feats})
            return
        data, kwargs = shapes_layer_data(
            boxes,
            name=self._layer_name("detections"),
            like=self.source_layer,
            features=feats,
            edge_color="score",
            edge_width=2.0,
            text=detection_text("score"),
            metadata=self._layer_metadata(DETECTIONS_KIND),
            ndim=ndim,
        )
        kwargs["edge_colormap"] = SCORE_COLORMAP
        kwargs["edge_contrast_limits"] = (0.0, 1.0)
        if not data:
            kwargs["features"] = {k: np.asarray(v)[:0] for k, v in kwargs["features"].items()}
        self.detections_layer = self.viewer.add_shapes(data, **kwargs)

    def _update_proposals(self) -> None:
        boxes, feats = filter_proposals(self.raw_results or [], int(self.top_k.value))
        ndim = self._ndim()
        if self._layer_alive(self.proposals_layer):
            rects, slices = boxes_to_rectangles(boxes, ndim=ndim)
            replace_rectangles(self.proposals_layer, rects, {"slice": slices, **feats})
            self.proposals_layer.visible = bool(self.show_proposals.value)
            return
        data, kwargs = shapes_layer_data(
            boxes,
            name=self._layer_name("RPN top-K"),
            like=self.source_layer,
            features=feats,
            edge_color=PROPOSAL_BOX_COLOR,
            edge_width=1.0,
            metadata=self._layer_metadata(PROPOSALS_KIND),
            ndim=ndim,
        )
        kwargs["opacity"] = 0.8
        kwargs["visible"] = bool(self.show_proposals.value)
        if not data:
            kwargs["features"] = {k: np.asarray(v)[:0] for k, v in kwargs["features"].items()}
        self.proposals_layer = self.viewer.add_shapes(data, **kwargs)

    def _on_show_proposals(self, value: bool) -> None:
        if self._layer_alive(self.proposals_layer):
            self.proposals_layer.visible = bool(value)
