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

Input convention
----------------
Images are ``(B, 1, H, W)`` float32 in ``[0, 1]`` (HU clipped to the model range and scaled). Inside,
the single channel is replicated to 3 channels and normalised with the fixed ImageNet statistics
``mean = (0.485, 0.456, 0.406)``, ``std = (0.229, 0.224, 0.225)`` (:data:`IMAGE_MEAN`,
:data:`IMAGE_STD`): with the default HU range (-1024, 1024) water (0 HU) maps to 0.5, so the normalised
input is roughly zero-mean and unit-variance, and ImageNet or torchvision detector weight files see the
statistics they were trained with. There is NO resizing: boxes (targets, proposals, detections) are
``xyxy`` in input pixels (x = column, y = row), any H, W works; the batch is zero-padded at the
bottom/right to a multiple of 32 (torchvision's ``size_divisible``), which does not move coordinates.

Anchors
-------
Default anchor sizes ``(8, 16, 32, 64, 128)`` pixels, one per FPN level (strides 4, 8, 16, 32, 64),
aspect ratios ``(0.5, 1.0, 2.0)``: suited to lesions of about 6-60 px (torchvision's defaults,
32-512 px, are made for COCO objects at 800 px). Configurable with ``anchor_sizes`` /
``aspect_ratios``; keeping 3 anchors per location keeps the RPN head compatible with torchvision's
COCO weights.

Normalisation layers (``norm``)
-------------------------------
- ``"batch"`` (default when training from scratch): ``nn.BatchNorm2d``. torchvision's default
  ``FrozenBatchNorm2d`` holds identity statistics when no pretrained file is given, i.e. an un-normalised
  deep ResNet that trains badly from scratch. BatchNorm is the standard, fastest option on CPU and GPU,
  keeps the state dict layout of ImageNet ResNets, and its running statistics are what
  :func:`set_frozen` protects. With batches of 1-2 slices its batch statistics are noisier than on
  natural-image batches; ``"group"`` is the batch-size-independent alternative
  (Wu & He, "Group normalization", ECCV 2018; He et al., "Rethinking ImageNet pre-training", ICCV 2019).
- ``"group"``: ``nn.GroupNorm(32, C)``: same behaviour in train and eval, no running statistics.
- ``"frozen"``: torchvision's ``FrozenBatchNorm2d`` (fixed affine statistics): only sensible with
  pretrained weights; chosen automatically when ``weights_path`` is an ImageNet ResNet file or a
  torchvision detector state dict (whose BN layers are frozen).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.misc import FrozenBatchNorm2d

from ..checkpoint import load_checkpoint
from ..errors import CheckpointError, ConfigError

__all__ = [
    "BACKBONES",
    "NORMS",
    "DEFAULT_ANCHOR_SIZES",
    "DEFAULT_ASPECT_RATIOS",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "RPNOutput",
    "LesionDetector",
    "build_detector",
    "set_frozen",
]

BACKBONES: tuple[str, ...] = ("resnet50", "resnet34", "resnet18")
"""Supported ResNet-FPN backbones (``resnet50`` is the paper's)."""

NORMS: tuple[str, ...] = ("batch", "group", "frozen")
"""Supported normalisation layers of the ResNet body (see the module docstring)."""

DEFAULT_ANCHOR_SIZES: tuple[tuple[int, ...], ...] = ((8,), (16,), (32,), (64,), (128,))
"""Anchor side lengths in input pixels, one tuple per FPN level ('0', '1', '2', '3', 'pool')."""

DEFAULT_ASPECT_RATIOS: tuple[float, ...] = (0.5, 1.0, 2.0)
"""Anchor aspect ratios (height / width), the same on every level."""

IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
"""Per-channel mean subtracted from the replicated [0, 1] slice (ImageNet statistics)."""

IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
"""Per-channel standard deviation dividing the replicated [0, 1] slice (ImageNet statistics)."""

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)


@dataclass
class RPNOutput:
    """FPN features and top-K RPN proposals of a batch.

    Attributes
    ----------
    features : OrderedDict[str, Tensor]
        FPN maps ``'0', '1', '2', '3', 'pool'`` (strides 4, 8, 16, 32, 64), each ``(B, 256, h, w)``
        float32, computed from the normalised, zero-padded batch (padded to a multiple of 32 at the
        bottom/right). The autograd graph back to the input images is kept.
    proposals : list[Tensor]
        Per image ``(K, 4)`` float32 ``xyxy`` boxes in input pixels, clipped to the image, detached,
        sorted by objectness (descending). ``K = min(k, number of proposals left after NMS)``.
    objectness : list[Tensor]
        Per image ``(K,)`` float32 objectness probabilities in [0, 1] (sigmoid of the RPN logits),
        detached, descending.
    image_sizes : list[tuple[int, int]]
        ``(H, W)`` of each input image (before padding), in pixels.
    """

    features: "OrderedDict[str, Tensor]"
    proposals: list[Tensor]
    objectness: list[Tensor]
    image_sizes: list[tuple[int, int]]


class _NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without resizing (normalise + pad to ``size_divisible`` only)."""

    def resize(self, image: Tensor, target: Optional[dict[str, Tensor]] = None):  # noqa: D102
        return image, target


@contextlib.contextmanager
def _training_flag(module: nn.Module, mode: bool) -> Iterator[None]:
    """Temporarily set ``module.training`` (and its children's) without calling ``train()``."""
    saved = [(m, m.training) for m in module.modules()]
    for m, _ in saved:
        m.training = mode
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def eval_behaviour(module: nn.Module):
    """Context manager: every submodule of ``module`` in eval behaviour for the ``with`` block, the training
    flags restored after (unlike ``module.eval()``, which would leave them off)."""
    return _training_flag(module, False)


def _set_norms_eval(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, _NORM_TYPES):
            m.training = False


def set_frozen(module: nn.Module, frozen: bool) -> None:
    """Freeze or unfreeze a module (the detector or the denoiser) for collaborative training.

    Frozen: every parameter gets ``requires_grad=False`` and every normalisation layer is put in eval
    mode, so running statistics (BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``) no
    longer change. Gradients still flow *through* the module to its inputs (LIDnet's T2 phase trains the
    denoiser through a frozen detector whose losses are computed in training mode). A
    :class:`LesionDetector` remembers the flag: a later ``train()`` keeps the norm layers of a frozen
    detector (or of any frozen submodule of it) in eval mode. For other module types, call
    ``set_frozen`` again after ``train()`` if they have norm layers (the denoisers here have none).

    Unfreezing restores ``requires_grad`` to what it was when the detector was built (layers that
    torchvision keeps frozen with ``trainable_layers < 5`` stay frozen; for other modules all
    parameters become trainable) and lets the norm layers follow ``module.training`` again.

    Parameters
    ----------
    module : nn.Module
    frozen : bool
    """
    module._frozen = bool(frozen)
    base = getattr(module, "_base_trainable", None)
    for name, p in module.named_parameters():
        p.requires_grad_(False if frozen else (base is None or name in base))
    if frozen:
        _set_norms_eval(module)
    else:
        for m in module.modules():
            if m is not module and getattr(m, "_frozen", False):
                m._frozen = False
        for m in module.modules():
            if isinstance(m, _NORM_TYPES):
                m.training = module.training


def _norm_layer(norm: str):
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return functools.partial(nn.GroupNorm, 32)
    if norm == "frozen":
        return FrozenBatchNorm2d
    raise ConfigError(f"Unknown detector norm {norm!r}; choose one of: {', '.join(NORMS)}.")


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
        backbone = str(backbone).strip().lower()
        if backbone not in BACKBONES:
            raise ConfigError(f"Unknown detector backbone {backbone!r}; choose one of: {', '.join(BACKBONES)}.")
        norm = str(norm).strip().lower()
        norm_layer = _norm_layer(norm)
        if int(num_classes) < 2:
            raise ConfigError(f"num_classes must be >= 2 (background + lesion), got {num_classes}.")
        sizes = tuple(tuple(int(s) for s in level) for level in (anchor_sizes or DEFAULT_ANCHOR_SIZES))
        ratios = tuple(float(r) for r in (aspect_ratios or DEFAULT_ASPECT_RATIOS))
        if len(sizes) != 5 or len({len(s) for s in sizes}) != 1 or not ratios or min(min(sizes)) <= 0:
            raise ConfigError(
                f"anchor_sizes needs 5 levels ('0','1','2','3','pool') with the same number of positive sizes "
                f"each, got {sizes}; aspect_ratios must be non-empty, got {ratios}."
            )
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
        self.model.transform = _NoResizeTransform(
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
                _set_norms_eval(m)
        return self

    def _eval_behaviour(self):
        return eval_behaviour(self)

    # ------------------------------------------------------------------ input handling
    def _to_list(self, images: Tensor) -> list[Tensor]:
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 1:
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"LesionDetector expects (B, 1, H, W) [0, 1] CT slices, got {shape}")
        if not images.is_floating_point():
            raise ValueError(f"LesionDetector expects floating-point images in [0, 1], got {images.dtype}")
        return list(images.expand(-1, 3, -1, -1).unbind(0))

    @staticmethod
    def _check_targets(targets: Any, n_images: int, device: torch.device) -> list[dict[str, Tensor]]:
        if targets is None or len(targets) != n_images:
            got = "None" if targets is None else f"{len(targets)} targets"
            raise ValueError(f"Expected one target dict per image ({n_images}), got {got}")
        out = []
        for i, t in enumerate(targets):
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32, device=device)
            if boxes.numel() == 0:
                boxes = boxes.reshape(0, 4)
            if boxes.dim() != 2 or boxes.shape[1] != 4:
                raise ValueError(f"Target {i}: boxes must be (n, 4) xyxy pixels, got shape {tuple(boxes.shape)}")
            bad = (boxes[:, 2:] <= boxes[:, :2]).any(dim=1)
            if bool(bad.any()):
                raise ValueError(
                    f"Target {i}: box {boxes[bad][0].tolist()} has zero or negative width/height "
                    "(need x1 > x0, y1 > y0)"
                )
            labels = t.get("labels")
            if labels is None:
                labels = torch.ones(boxes.shape[0], dtype=torch.int64, device=device)
            labels = torch.as_tensor(labels, dtype=torch.int64, device=device).reshape(-1)
            if labels.shape[0] != boxes.shape[0]:
                raise ValueError(f"Target {i}: {boxes.shape[0]} boxes but {labels.shape[0]} labels")
            out.append({"boxes": boxes, "labels": labels})
        return out

    def _transform_backbone(self, images: Tensor, targets=None):
        image_list, targets = self.model.transform(self._to_list(images), targets)
        features = self.model.backbone(image_list.tensors)
        return image_list, targets, features

    def _rpn(self, image_list, features, targets, *, training_filter: bool, compute_loss: bool):
        """RPN head on ``features``; returns (proposals after NMS, their probabilities, rpn losses)."""
        rpn = self.model.rpn
        feats = list(features.values())
        objectness, deltas = rpn.head(feats)
        anchors = rpn.anchor_generator(image_list, feats)
        num_images = len(anchors)
        num_anchors_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(deltas.detach(), anchors).view(num_images, -1, 4)
        with _training_flag(rpn, training_filter):
            boxes, scores = rpn.filter_proposals(proposals, objectness, image_list.image_sizes, num_anchors_per_level)
        losses: dict[str, Tensor] = {}
        if compute_loss:
            labels, matched_gt_boxes = rpn.assign_targets_to_anchors(anchors, targets)
            regression_targets = rpn.box_coder.encode(matched_gt_boxes, anchors)
            loss_objectness, loss_rpn_box_reg = rpn.compute_loss(objectness, deltas, labels, regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, scores, losses

    @staticmethod
    def _topk(boxes: list[Tensor], scores: list[Tensor], k: int) -> tuple[list[Tensor], list[Tensor]]:
        # filter_proposals returns boxes sorted by decreasing score (batched_nms order)
        return [b[:k].detach().float() for b in boxes], [s[:k].detach().float() for s in scores]

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
        boxes, scores, _ = self._rpn(image_list, features, None, training_filter=False, compute_loss=False)
        props, objs = self._topk(boxes, scores, int(k))
        return RPNOutput(features, props, objs, [tuple(map(int, s)) for s in image_list.image_sizes])

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
        boxes, scores, rpn_losses = self._rpn(image_list, features, targets, training_filter=True, compute_loss=True)
        with _training_flag(self.model.roi_heads, True):
            _, roi_losses = self.model.roi_heads(features, boxes, image_list.image_sizes, targets)
        props, objs = self._topk(boxes, scores, int(k))
        losses = {**roi_losses, **rpn_losses}
        return losses, RPNOutput(features, props, objs, [tuple(map(int, s)) for s in image_list.image_sizes])

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
            Detections per image (``boxes`` (m, 4) float32 xyxy input pixels, ``scores`` (m,), ``labels``
            (m,) int64) and the RPN output (features without autograd graph, top-``k`` proposals and
            objectness per image).

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
                boxes, scores, _ = self._rpn(image_list, features, None, training_filter=False, compute_loss=False)
                dets, _ = roi(features, boxes, image_list.image_sizes)
                dets = self.model.transform.postprocess(dets, image_list.image_sizes, original_sizes)
        finally:
            roi.score_thresh = old
        props, objs = self._topk(boxes, scores, int(k))
        return dets, RPNOutput(features, props, objs, [tuple(map(int, s)) for s in image_list.image_sizes])


# ---------------------------------------------------------------------- weights loading
def _strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _guess_backbone(sd: dict[str, Tensor], prefix: str) -> str:
    keys = [k[len(prefix):] for k in sd if k.startswith(prefix)]
    if not keys:
        return "unknown"
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in keys)
    n_layer3 = len({k.split(".")[1] for k in keys if k.startswith("layer3.")})
    if bottleneck:
        return {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(n_layer3, "a bottleneck ResNet")
    return {2: "resnet18", 6: "resnet34"}.get(n_layer3, "a basic-block ResNet")


def _infer_norm(sd: dict[str, Tensor]) -> str:
    if any(k.endswith("num_batches_tracked") for k in sd):
        return "batch"
    if any(k.endswith("running_mean") for k in sd):
        return "frozen"
    return "group"


def _load_into(
    target: nn.Module, sd: dict[str, Tensor], path: Path, what: str, guess: str, allow_new_predictor: bool
) -> None:
    expected = {k: v for k, v in target.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & given.keys() if tuple(expected[k].shape) != tuple(given[k].shape))
    if allow_new_predictor and wrong and all(k.startswith("roi_heads.box_predictor.") for k in wrong):
        warnings.warn(
            f"{path}: the box predictor has {given['roi_heads.box_predictor.cls_score.weight'].shape[0]} classes; "
            f"it is re-initialised for {expected['roi_heads.box_predictor.cls_score.weight'].shape[0]}.",
            stacklevel=3,
        )
        for k in wrong:
            given.pop(k)
        wrong = []
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(
                f"{len(wrong)} with other shapes (e.g. {wrong[0]}: file {tuple(given[wrong[0]].shape)}, "
                f"model {tuple(expected[wrong[0]].shape)})"
            )
        raise CheckpointError(
            f"Weights file {path} does not fit {what}: {'; '.join(parts)}. The file looks like it was saved for "
            f"backbone {guess}. Choose the backbone the file was trained with, or another weights file."
        )
    if any(isinstance(v, Tensor) and not v.is_floating_point() and v.dtype != torch.int64 for v in given.values()):
        raise CheckpointError(f"Weights file {path} holds tensors of unexpected types; it is not a detector file.")
    result = target.load_state_dict(given, strict=False)
    left = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    left += [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if left:  # pragma: no cover - the pre-check above covers these
        raise CheckpointError(f"Weights file {path} does not fit {what}: {left[:5]}")


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
    backbone = str(backbone).strip().lower()
    if backbone not in BACKBONES:
        raise ConfigError(f"Unknown detector backbone {backbone!r}; choose one of: {', '.join(BACKBONES)}.")
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
    sd = _strip_prefix(dict(sd))
    hp = ckpt.get("hparams") if isinstance(ckpt.get("hparams"), dict) else {}
    for key in ("anchor_sizes", "aspect_ratios", "trainable_layers", "representation_size"):
        if kwargs[key] is None and hp.get(key) is not None:
            kwargs[key] = hp[key]
    if norm is None and hp.get("norm"):
        norm = hp["norm"]

    is_detector = any(k.startswith(("backbone.body.", "rpn.", "roi_heads.")) for k in sd)
    is_resnet = "conv1.weight" in sd and any(k.startswith("layer1.") for k in sd)
    if is_detector:
        norm = norm or _infer_norm(sd)
        det = LesionDetector(backbone, num_classes, norm=norm, **kwargs, **faster_rcnn_kwargs)
        _load_into(
            det.model,
            sd,
            path,
            f"a {backbone} Faster R-CNN detector",
            _guess_backbone(sd, "backbone.body."),
            allow_new_predictor=kind is None,
        )
    elif is_resnet:
        norm = norm or "frozen"
        det = LesionDetector(backbone, num_classes, norm=norm, **kwargs, **faster_rcnn_kwargs)
        body_sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}
        _load_into(det.model.backbone.body, body_sd, path, f"a {backbone} backbone", _guess_backbone(sd, ""), False)
    else:
        raise CheckpointError(
            f"{path} is neither a detector state dict (keys 'backbone.body...', 'rpn...', 'roi_heads...') nor an "
            f"ImageNet ResNet state dict (keys 'conv1.weight', 'layer1...'); first keys: {list(sd)[:3]}."
        )
    return det
