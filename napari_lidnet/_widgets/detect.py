"""Detect-lesions widget: run a trained lesion detector (Faster R-CNN + FPN, LIDnet's detection network)
on the current slice or every slice, and show its detections and its top-K RPN proposals.

The network runs once with a low score threshold and a generous K; the raw results are kept, so moving
the score threshold or K re-filters the shapes layers without running the network again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSlider, SpinBox

from src_training import inference
from src_training.errors import CheckpointError, LidnetError

from .._boxes import PROPOSAL_BOX_COLOR, SCORE_COLORMAP, boxes_to_rectangles, replace_rectangles, shapes_layer_data
from .._layers import current_slice_index, layer_volume
from .._messages import notify_error
from ._checkpoints import CheckpointChooser
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

    Yields
    ------
    (done, total, message)

    Returns
    -------
    (list of dict, dict config)
        One dict per processed slice as yielded by :func:`src_training.inference.detect_slices`
        (``slice``, ``boxes`` (n, 4) xyxy px, ``scores``, ``labels``, ``proposals`` (K, 4), ``objectness``).

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
    hu_range = tuple(float(v) for v in config["hu_range"])
    results: list[dict[str, Any]] = []
    notes: list[str] = []

    def relay(message: str) -> None:
        notes.append(message)
        if on_message is not None:
            on_message(message)

    for res in inference.detect_slices(
        detector,
        hu,
        hu_range,
        k=int(k),
        score_thresh=float(score_thresh),
        slices=slices,
        batch_size=max(1, int(batch_size)),
        on_message=relay,
    ):
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

    Adds two shapes layers on the image's grid (3D rectangles on their slices):

    * ``detections (<image>)``: boxes with ``score``/``label`` features, the score as text, edge colour by
      score (colormap ``plasma``, 0 -> 1);
    * ``RPN top-K (<image>)``: the K proposals of highest objectness per slice (``objectness``/``rank``
      features, objectness as text), the boxes LIDnet's ROI perceptual loss looks at.

    ``score threshold`` and ``K`` re-filter the kept network results (no re-run).

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
        self.score_thresh = FloatSlider(label="score threshold", min=0.0, max=1.0, step=0.01, value=0.5)
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
        self.detections_layer: Any = None
        self.proposals_layer: Any = None
        #: How many times the network ran (tests check that re-filtering does not re-run it).
        self.n_network_runs = 0
        self.run_btn.changed.connect(self.run)
        self.score_thresh.changed.connect(self.refilter)
        self.top_k.changed.connect(self.refilter)
        self.show_proposals.changed.connect(self._on_show_proposals)

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
            results, _config = result
            self.raw_results = results
            self.source_layer = layer
            self.refilter()
            if messages.last:
                self.status.value = with_note(str(self.status.value), messages)

        return runner.start(work, done, desc="Detect lesions")

    # ------------------------------------------------------------------
    def _layer_alive(self, layer: Any) -> bool:
        return layer is not None and layer in self.viewer.layers

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
            self.status.value = (
                f"{n_det} detection(s) >= {self.score_thresh.value:.2f} on {len(self.raw_results)} slice(s)"
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
            name=f"detections ({self.source_layer.name})",
            like=self.source_layer,
            features=feats,
            edge_color="score",
            edge_width=2.0,
            text={"string": "{score:.2f}", "color": "yellow", "size": 12, "anchor": "upper_left"},
            metadata={"kind": DETECTIONS_KIND, "source": self.source_layer.name},
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
            name=f"RPN top-K ({self.source_layer.name})",
            like=self.source_layer,
            features=feats,
            edge_color=PROPOSAL_BOX_COLOR,
            edge_width=1.0,
            text={"string": "{objectness:.2f}", "color": PROPOSAL_BOX_COLOR, "size": 10, "anchor": "lower_left"},
            metadata={"kind": PROPOSALS_KIND, "source": self.source_layer.name},
            ndim=ndim,
        )
        kwargs["opacity"] = 0.8
        kwargs["visible"] = bool(self.show_proposals.value)
        self.proposals_layer = self.viewer.add_shapes(data, **kwargs)

    def _on_show_proposals(self, value: bool) -> None:
        if self._layer_alive(self.proposals_layer):
            self.proposals_layer.visible = bool(value)
