"""Lesion detector: torchvision Faster R-CNN with a ResNet-FPN backbone, for 1-channel CT slices.

LIDnet (Chen et al., "LIDnet: lesion-inspired denoising network", ACM MM 2021, arXiv 2104.08845) trains
a low-dose CT denoiser together with a lesion detector: the detector's losses on the denoised image and
an ROI perceptual loss on the detector's FPN features inside its top-K RPN proposals (Eq. 8) guide the
denoiser. This module gives the detector and the two entry points that training needs:

- :meth:`LesionDetector.rpn_topk`: FPN features (autograd graph kept back to the input images) and the
  top-K RPN proposals (detached) of a batch.
- :meth:`LesionDetector.losses_and_rpn`: the four Faster R-CNN losses *and* the top-K proposals from one
  transform + backbone pass.

Faster R-CNN: S. Ren et al., "Faster R-CNN: towards real-time object detection with region proposal
networks", NeurIPS 2015; FPN: T.-Y. Lin et al., "Feature pyramid networks for object detection",
CVPR 2017; implementation: ``torchvision.models.detection.FasterRCNN`` with
``backbone_utils.resnet_fpn_backbone``. The paper uses ResNet-50-FPN (our default); ResNet-34/18 are
lighter options for CPU runs.

Input convention, anchors and normalisation layers: :mod:`src_training.models.detector_parts`. Boxes
(targets, proposals, detections) are ``xyxy`` float32 in input pixels (x = column, y = row), no resizing;
proposals and detections are sorted by score (descending). The RPN that also returns the proposals'
objectness is :class:`~src_training.models.rpn.TopKRegionProposalNetwork`; freezing:
:mod:`src_training.models.freezing`; weights files: :mod:`src_training.models.detector_weights`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList

from ..checkpoint import load_checkpoint
from ..errors import CheckpointError, ConfigError
from .detector_parts import (
    BACKBONES,
    DEFAULT_ANCHOR_SIZES,
    DEFAULT_ASPECT_RATIOS,
    IMAGE_MEAN,
    IMAGE_STD,
    NORMS,
    NoResizeTransform,
    anchor_settings,
    backbone_key,
    check_targets,
    images_to_list,
    norm_layer_class,
)
from .detector_weights import guess_backbone, infer_norm, load_weights_into, strip_prefix
from .freezing import eval_behaviour, set_frozen, set_norms_eval, training_flag
from .rpn import RPNOutput, TopKRegionProposalNetwork, top_k_proposals

__all__ = [
    "BACKBONES",
    "NORMS",
    "DEFAULT_ANCHOR_SIZES",
    "DEFAULT_ASPECT_RATIOS",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "RPNOutput",
    "LesionDetector",
    "TopKRegionProposalNetwork",
    "build_detector",
    "FRCNN_SAMPLING",
    "eval_behaviour",
    "set_frozen",
]


#: RPN/ROI sampling of the Faster R-CNN during pretraining and LIDnet runs (torchvision keyword arguments;
#: no effect on the weights' shapes): fewer proposals and sampled RoIs than torchvision's COCO defaults, which
#: dominate the CPU step time on small images (RoIAlign's backward).
FRCNN_SAMPLING = {"rpn_pre_nms_top_n_train": 1000, "rpn_post_nms_top_n_train": 300,
                  "rpn_post_nms_top_n_test": 300, "box_batch_size_per_image": 64}


class LesionDetector(nn.Module):
    """Faster R-CNN (torchvision) with a ResNet-FPN backbone for 1-channel [0, 1] CT slices, no resizing.

    Parameters
    ----------
    backbone : str
        ``"resnet50"`` (paper, default), ``"resnet34"`` or ``"resnet18"``.
    num_classes : int
        Number of classes including background (2: background + lesion, label 1).
    norm : str
        ``"batch"`` (default), ``"group"`` or ``"frozen"``; see the module docstring.
    anchor_sizes : sequence of sequences of int, optional
        Anchor sizes in pixels per FPN level (5 levels); default :data:`DEFAULT_ANCHOR_SIZES`.
        All levels need the same number of anchors.
    aspect_ratios : sequence of float, optional
        Aspect ratios used on every level; default :data:`DEFAULT_ASPECT_RATIOS`.
    trainable_layers : int, optional
        ResNet stages left trainable (0-5, torchvision's meaning); default 5 (all) for ``batch``/``group``
        norms and 3 for ``frozen`` (torchvision's fine-tuning default).
    image_mean, image_std : 3-tuples of float
        Normalisation of the replicated slice; default ImageNet statistics.
    representation_size : int, optional
        Width of the box head's two fully connected layers (torchvision's ``TwoMLPHead``); default 1024
        (torchvision). The shipped detector uses 256: its first layer then holds 3.2 M weights instead of
        12.8 M, which keeps the file under 40 MB in fp16 and the CPU step time down.
    **faster_rcnn_kwargs
        Passed to ``torchvision.models.detection.FasterRCNN`` (e.g. ``box_detections_per_img``,
        ``rpn_post_nms_top_n_test``, ``box_batch_size_per_image``). Resizing options are ignored.

    Attributes
    ----------
    backbone_name : str
    model : torchvision.models.detection.FasterRCNN
        The wrapped detector; its ``transform`` does not resize.
    hparams : dict
        Everything needed to rebuild the same architecture (store it in checkpoints as ``"hparams"``).

    Raises
    ------
    ConfigError
        Unknown backbone or norm, invalid anchors, ``num_classes < 2``.
    """

    arch = "faster_rcnn"

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 2,
        *,
        norm: str = "batch",
        anchor_sizes: Optional[Sequence[Sequence[int]]] = None,
        aspect_ratios: Optional[Sequence[float]] = None,
        trainable_layers: Optional[int] = None,
        image_mean: Sequence[float] = IMAGE_MEAN,
        image_std: Sequence[float] = IMAGE_STD,
        representation_size: Optional[int] = None,
        **faster_rcnn_kwargs: Any,
    ):
        super().__init__()
        backbone = backbone_key(backbone)
        norm = str(norm).strip().lower()
        norm_layer = norm_layer_class(norm)
        if int(num_classes) < 2:
            raise ConfigError(f"num_classes must be >= 2 (background + lesion), got {num_classes}.")
        sizes, ratios = anchor_settings(anchor_sizes, aspect_ratios)
        if trainable_layers is None:
            trainable_layers = 3 if norm == "frozen" else 5
        if not 0 <= int(trainable_layers) <= 5:
            raise ConfigError(f"trainable_layers must be in 0..5, got {trainable_layers}.")
        for key in ("min_size", "max_size", "fixed_size", "_skip_resize"):
            faster_rcnn_kwargs.pop(key, None)

        self.backbone_name = backbone
        self.num_classes = int(num_classes)
        self.norm = norm
        self.anchor_sizes = sizes
        self.aspect_ratios = ratios
        self.trainable_layers = int(trainable_layers)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        if representation_size is not None and int(representation_size) < 1:
            raise ConfigError(f"representation_size must be a positive integer, got {representation_size}.")
        self.representation_size = None if representation_size is None else int(representation_size)
        self._frozen = False

        fpn = resnet_fpn_backbone(
            backbone_name=backbone, weights=None, norm_layer=norm_layer, trainable_layers=self.trainable_layers
        )
        anchors = AnchorGenerator(sizes=sizes, aspect_ratios=(ratios,) * len(sizes))
        if self.representation_size is not None:
            rep = self.representation_size
            faster_rcnn_kwargs["box_head"] = TwoMLPHead(fpn.out_channels * 7 * 7, rep)
            faster_rcnn_kwargs["box_predictor"] = FastRCNNPredictor(rep, self.num_classes)
        self.model = FasterRCNN(
            fpn,
            num_classes=None if self.representation_size is not None else self.num_classes,
            rpn_anchor_generator=anchors,
            image_mean=list(self.image_mean),
            image_std=list(self.image_std),
            **faster_rcnn_kwargs,
        )
        # torchvision's FasterRCNN takes rpn_* settings, not an rpn= module: swap in the top-K subclass that
        # also returns the objectness scores (same head and anchor generator objects, same state-dict keys)
        self.model.rpn = TopKRegionProposalNetwork.from_rpn(self.model.rpn)
        self.model.transform = NoResizeTransform(
            min_size=1, max_size=1, image_mean=list(self.image_mean), image_std=list(self.image_std), size_divisible=32
        )
        self._base_trainable = {n for n, p in self.named_parameters() if p.requires_grad}

    # ------------------------------------------------------------------ bookkeeping
    @property
    def hparams(self) -> dict[str, Any]:
        """Architecture settings (plain lists/str/int, safe for ``weights_only`` checkpoints and JSON)."""
        return {
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "norm": self.norm,
            "anchor_sizes": [list(s) for s in self.anchor_sizes],
            "aspect_ratios": list(self.aspect_ratios),
            "trainable_layers": self.trainable_layers,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "representation_size": self.representation_size,
        }

    def train(self, mode: bool = True) -> "LesionDetector":
        """Set training mode; norm layers of a frozen detector (or frozen submodule) stay in eval mode."""
        super().train(mode)
        for m in self.modules():
            if getattr(m, "_frozen", False):
                set_norms_eval(m)
        return self

    def _eval_behaviour(self):
        return eval_behaviour(self)

    # ------------------------------------------------------------------ input handling
    _to_list = staticmethod(images_to_list)
    _check_targets = staticmethod(check_targets)

    def _transform_backbone(self, images: Tensor, targets=None):
        image_list, targets = self.model.transform(self._to_list(images), targets)
        features = self.model.backbone(image_list.tensors)
        return image_list, targets, features

    def _rpn(self, image_list: ImageList, features, targets=None, *, training: bool):
        """RPN on ``features`` (training behaviour: training top-n + losses; eval: eval top-n, no losses).

        Returns (proposals after NMS, their objectness probabilities, RPN losses) per
        :meth:`TopKRegionProposalNetwork.forward_with_scores` (boxes xyxy float32 input pixels, sorted by
        objectness, detached).
        """
        return self.model.rpn.forward_with_scores(image_list, features, targets, training=training)

    @staticmethod
    def _rpn_output(image_list: ImageList, features, boxes: list[Tensor], scores: list[Tensor], k: int) -> RPNOutput:
        props, objs = top_k_proposals(boxes, scores, int(k))
        return RPNOutput(features, props, objs, [tuple(map(int, s)) for s in image_list.image_sizes])

    # ------------------------------------------------------------------ public API
    def forward(self, images: Tensor, targets: Optional[list[dict[str, Tensor]]] = None):
        """Run the detector.

        Parameters
        ----------
        images : Tensor
            ``(B, 1, H, W)`` float32 in [0, 1].
        targets : list of dict, optional
            Per image ``{"boxes": (n, 4) float32 xyxy pixels, "labels": (n,) int64}``; ``n`` may be 0.
            Required in training mode, ignored in eval mode.

        Returns
        -------
        dict[str, Tensor] (training mode)
            ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg`` (scalars).
        list[dict[str, Tensor]] (eval mode)
            Per image ``boxes`` (m, 4) float32 xyxy input pixels, ``scores`` (m,), ``labels`` (m,) int64.

        Raises
        ------
        ValueError
            Wrong image shape/dtype; missing or malformed targets in training mode.
        """
        imgs = self._to_list(images)
        if self.training:
            targets = self._check_targets(targets, len(imgs), images.device)
            return self.model(imgs, targets)
        return self.model(imgs)

    def rpn_topk(self, images: Tensor, k: int = 5) -> RPNOutput:
        """FPN features and the top-``k`` RPN proposals per image (after the RPN's NMS).

        One transform + backbone pass; the RPN uses its eval settings (pre/post-NMS top-n, 1000 by
        default) whatever the module mode, so the result is the same in train and eval mode (up to
        BatchNorm: in training mode a non-frozen backbone uses batch statistics and updates its running
        statistics). Gradients are not disabled: ``features`` keep the autograd graph back to ``images``.

        Parameters
        ----------
        images : Tensor
            ``(B, 1, H, W)`` float32 in [0, 1].
        k : int
            Proposals kept per image (>= 1).

        Returns
        -------
        RPNOutput
            ``proposals[i]`` is ``(min(k, available), 4)``, ``objectness[i]`` the matching probabilities.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        image_list, _, features = self._transform_backbone(images)
        boxes, scores, _ = self._rpn(image_list, features, training=False)
        return self._rpn_output(image_list, features, boxes, scores, k)

    def losses_and_rpn(
        self, images: Tensor, targets: list[dict[str, Tensor]], k: int = 5
    ) -> tuple[dict[str, Tensor], RPNOutput]:
        """Faster R-CNN losses and the top-``k`` RPN proposals from ONE transform + backbone pass.

        The RPN and ROI-head losses are computed with training behaviour (anchor/proposal sampling,
        training pre/post-NMS top-n for the proposals fed to the ROI heads) whatever the module mode;
        the backbone follows the module mode (BatchNorm batch statistics in training mode unless frozen).
        The top-``k`` proposals are the first ``k`` of the RPN's NMS output (identical to the eval-setting
        top-``k`` of :meth:`rpn_topk`, since extra lower-scoring candidates cannot change the best ones).

        Parameters
        ----------
        images : Tensor
            ``(B, 1, H, W)`` float32 in [0, 1].
        targets : list of dict
            Per image ``boxes`` (n, 4) float32 xyxy pixels and ``labels`` (n,) int64 (default all 1);
            ``n = 0`` (lesion-free slice) is allowed.
        k : int
            Proposals kept per image.

        Returns
        -------
        (dict[str, Tensor], RPNOutput)
            Loss dict with ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``
            (scalars with graph to the parameters and to ``images``), and the RPN output.

        Raises
        ------
        ValueError
            Wrong image shape, or missing/malformed/degenerate target boxes.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        targets = self._check_targets(targets, images.shape[0] if isinstance(images, Tensor) else -1, images.device)
        image_list, targets, features = self._transform_backbone(images, targets)
        boxes, scores, rpn_losses = self._rpn(image_list, features, targets, training=True)
        with training_flag(self.model.roi_heads, True):
            _, roi_losses = self.model.roi_heads(features, boxes, image_list.image_sizes, targets)
        losses = {**roi_losses, **rpn_losses}
        return losses, self._rpn_output(image_list, features, boxes, scores, k)

    def detect(self, images: Tensor, score_thresh: float = 0.05) -> list[dict[str, Tensor]]:
        """Detections with eval behaviour and no gradients, whatever the module mode (restored after).

        Parameters
        ----------
        images : Tensor
            ``(B, 1, H, W)`` float32 in [0, 1].
        score_thresh : float
            Minimum class score in [0, 1] of a returned box.

        Returns
        -------
        list[dict[str, Tensor]]
            Per image ``boxes`` (m, 4) float32 xyxy input pixels, ``scores`` (m,) float32 descending,
            ``labels`` (m,) int64 (1 = lesion). At most ``box_detections_per_img`` (100) per image.
        """
        roi = self.model.roi_heads
        old = roi.score_thresh
        roi.score_thresh = float(score_thresh)
        try:
            with torch.no_grad(), self._eval_behaviour():
                return self.model(self._to_list(images))
        finally:
            roi.score_thresh = old

    def detect_and_rpn(
        self, images: Tensor, k: int = 5, score_thresh: float = 0.05
    ) -> tuple[list[dict[str, Tensor]], RPNOutput]:
        """:meth:`detect` and :meth:`rpn_topk` from ONE transform + backbone + RPN pass (inference).

        Equal to ``(self.detect(images, score_thresh), self.rpn_topk(images, k))`` in eval behaviour
        (the RPN's eval pre/post-NMS top-n feed the ROI heads, exactly as in ``FasterRCNN.forward``),
        at about half the cost: the ResNet-FPN backbone, which dominates the run time, runs once.
        No gradients; eval behaviour whatever the module mode (restored after).

        Parameters
        ----------
        images : Tensor
            ``(B, 1, H, W)`` float32 in [0, 1].
        k : int
            RPN proposals kept per image (>= 1), as in the ROI perceptual loss (Eq. 4 of the LIDnet paper).
        score_thresh : float
            Minimum class score in [0, 1] of a returned detection.

        Returns
        -------
        (list[dict[str, Tensor]], RPNOutput)
            Detections per image (``boxes`` (m, 4) float32 xyxy input pixels, ``scores`` (m,) float32
            descending, ``labels`` (m,) int64) and the RPN output (features without autograd graph, top-``k``
            proposals sorted by objectness and their objectness per image).

        Raises
        ------
        ValueError
            Wrong image shape/dtype or ``k < 1``.
        """
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        roi = self.model.roi_heads
        old = roi.score_thresh
        roi.score_thresh = float(score_thresh)
        try:
            with torch.no_grad(), self._eval_behaviour():
                original_sizes = [tuple(int(v) for v in images.shape[-2:])] * int(images.shape[0])
                image_list, _, features = self._transform_backbone(images)
                boxes, scores, _ = self._rpn(image_list, features, training=False)
                dets, _ = roi(features, boxes, image_list.image_sizes)
                dets = self.model.transform.postprocess(dets, image_list.image_sizes, original_sizes)
        finally:
            roi.score_thresh = old
        return dets, self._rpn_output(image_list, features, boxes, scores, k)


# ---------------------------------------------------------------------- building / weights files
def build_detector(
    backbone: str = "resnet50",
    num_classes: int = 2,
    weights_path: Optional[str | Path] = None,
    *,
    norm: Optional[str] = None,
    anchor_sizes: Optional[Sequence[Sequence[int]]] = None,
    aspect_ratios: Optional[Sequence[float]] = None,
    trainable_layers: Optional[int] = None,
    representation_size: Optional[int] = None,
    **faster_rcnn_kwargs: Any,
) -> LesionDetector:
    """Build a :class:`LesionDetector`, optionally initialised from a local weights file (never downloads).

    Parameters
    ----------
    backbone : str
        ``"resnet50"`` (paper, default), ``"resnet34"``, ``"resnet18"``.
    num_classes : int
        Classes including background (2).
    weights_path : path-like, optional
        Local ``.pt``/``.pth`` file, loaded with :func:`src_training.checkpoint.load_checkpoint`
        (``weights_only=True``), one of:

        - a napari-lidnet ``detector.pt`` (``{"kind": "detector", "state_dict": ..., ...}``) or a bare
          :class:`LesionDetector` state dict (keys ``model.backbone...``);
        - a torchvision Faster R-CNN ResNet-FPN state dict (keys ``backbone.body...``, ``rpn...``,
          ``roi_heads...``), e.g. ``fasterrcnn_resnet50_fpn`` COCO weights: a box predictor made for
          another number of classes is re-initialised (with a warning);
        - an ImageNet ResNet state dict (keys ``conv1.weight``, ``layer1...``, ``fc...``): loaded into the
          backbone body (``fc`` dropped); FPN, RPN and ROI heads start from scratch.
    norm : str, optional
        ``"batch"``, ``"group"`` or ``"frozen"``. Default: from the file (a state dict with
        ``num_batches_tracked`` -> batch, with running statistics only -> frozen, none -> group; an
        ImageNet backbone file -> frozen); ``"batch"`` without a file. A napari-lidnet checkpoint's
        ``"hparams"`` (see :attr:`LesionDetector.hparams`) also supplies anchors and norm when not given.
    anchor_sizes, aspect_ratios, trainable_layers, representation_size, **faster_rcnn_kwargs
        See :class:`LesionDetector` (a napari-lidnet checkpoint's ``hparams`` supply the ones not given).

    Returns
    -------
    LesionDetector
        On the CPU, in training mode, not frozen.

    Raises
    ------
    ConfigError
        Unknown backbone/norm or invalid anchors.
    CheckpointError
        File missing/corrupt/unsafe, not a detector or ResNet state dict, saved for another backbone, or
        its weights' names or shapes don't match the model (the message lists examples).
    """
    backbone = backbone_key(backbone)
    kwargs = dict(anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios, trainable_layers=trainable_layers,
                  representation_size=representation_size)
    if weights_path is None:
        return LesionDetector(backbone, num_classes, norm=norm or "batch", **kwargs, **faster_rcnn_kwargs)

    path = Path(weights_path)
    ckpt = load_checkpoint(path)
    kind = ckpt.get("kind")
    if kind is not None and kind != "detector":
        raise CheckpointError(f"{path} is a {kind!r} checkpoint, not a detector; choose a detector.pt file.")
    file_backbone = ckpt.get("backbone")
    if isinstance(file_backbone, str) and file_backbone.lower() != backbone:
        raise CheckpointError(
            f"{path} holds a {file_backbone} detector but a {backbone} detector was requested; "
            f"use backbone={file_backbone!r}."
        )
    sd = ckpt.get("state_dict")
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} has no 'state_dict' of tensors; it is not a weights file.")
    sd = strip_prefix(dict(sd))
    hp = ckpt.get("hparams") if isinstance(ckpt.get("hparams"), dict) else {}
    for key in ("anchor_sizes", "aspect_ratios", "trainable_layers", "representation_size"):
        if kwargs[key] is None and hp.get(key) is not None:
            kwargs[key] = hp[key]
    if norm is None and hp.get("norm"):
        norm = hp["norm"]

    is_detector = any(k.startswith(("backbone.body.", "rpn.", "roi_heads.")) for k in sd)
    is_resnet = "conv1.weight" in sd and any(k.startswith("layer1.") for k in sd)
    if is_detector:
        norm = norm or infer_norm(sd)
        det = LesionDetector(backbone, num_classes, norm=norm, **kwargs, **faster_rcnn_kwargs)
        load_weights_into(
            det.model,
            sd,
            path,
            f"a {backbone} Faster R-CNN detector",
            guess_backbone(sd, "backbone.body."),
            allow_new_predictor=kind is None,
        )
    elif is_resnet:
        norm = norm or "frozen"
        det = LesionDetector(backbone, num_classes, norm=norm, **kwargs, **faster_rcnn_kwargs)
        body_sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        load_weights_into(det.model.backbone.body, body_sd, path, f"a {backbone} backbone", guess_backbone(sd, ""), False)
    else:
        raise CheckpointError(
            f"{path} is neither a detector state dict (keys 'backbone.body...', 'rpn...', 'roi_heads...') nor an "
            f"ImageNet ResNet state dict (keys 'conv1.weight', 'layer1...'); first keys: {list(sd)[:3]}."
        )
    return det
