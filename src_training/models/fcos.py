"""The independent judge: an FCOS lesion detector (torchvision) for 1-channel CT slices.

LIDnet's Table 2 (Chen et al., ACM MM 2021) scores every method's images with "a detector trained on NDCT".
If that detector is the one LIDnet's denoiser was trained against (T2 minimises its losses), the score is
biased towards LIDnet. napari-lidnet therefore scores Table 2 with a second detector that no LIDnet run ever
sees: another architecture (FCOS, anchor-free, one stage: Tian et al., "FCOS: Fully Convolutional One-Stage
Object Detection", ICCV 2019; implementation ``torchvision.models.detection.FCOS``), another seed, trained on
NDCT only by the same command (``lidnet pretrain-detector --arch fcos``). TOD-Net tests its denoiser on
networks it never saw in the same spirit.

Input convention as :class:`src_training.models.detector.LesionDetector`: ``(B, 1, H, W)`` float32 in [0, 1]
(HU clipped to the model range and scaled), the channel replicated to 3 and normalised with the ImageNet
statistics, no resizing (boxes in input pixels), zero-padded to a multiple of 32.

Architecture: ResNet body (``resnet18`` by default, from scratch: nothing is downloaded) with an FPN of
``fpn_channels`` (default 128) on strides 4, 8, 16, 32 plus a max-pooled level at stride 64; FCOS head with
``num_convs`` GroupNorm conv layers per tower; one "anchor" per location whose size equals the level's stride
(4-64 px, which sets FCOS's per-level regression ranges [4a, 8a]): lesions of 5-30 px are assigned to the
stride-4 and stride-8 levels.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models.detection import FCOS
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.fcos import FCOSHead
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..errors import ConfigError
from .detector_parts import IMAGE_MEAN, IMAGE_STD, NoResizeTransform, check_targets, images_to_list
from .freezing import eval_behaviour

__all__ = ["FCOS_BACKBONES", "FCOS_ANCHOR_SIZES", "FCOSLesionDetector", "build_fcos_detector"]

FCOS_BACKBONES: tuple[str, ...] = ("resnet18", "resnet34", "resnet50")
"""ResNet bodies the judge can use."""

FCOS_ANCHOR_SIZES: tuple[tuple[int, ...], ...] = ((4,), (8,), (16,), (32,), (64,))
"""One location size per FPN level = the level's stride in input pixels."""

_BODY_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512),
                  "resnet50": (256, 512, 1024, 2048)}


class FCOSLesionDetector(nn.Module):
    """FCOS (torchvision) with a ResNet-FPN backbone for 1-channel [0, 1] CT slices, no resizing.

    Parameters
    ----------
    backbone : str
        ``"resnet18"`` (default), ``"resnet34"`` or ``"resnet50"``; random initialisation.
    num_classes : int
        Classes including background (2: background + lesion, label 1).
    fpn_channels : int
        Channels of the FPN and of the FCOS head (default 128).
    num_convs : int
        Conv layers per head tower (FCOS: 4).
    anchor_sizes : sequence of sequences of int, optional
        One size per level (5 levels); default :data:`FCOS_ANCHOR_SIZES`.
    image_mean, image_std : 3-tuples of float
        Normalisation of the replicated slice (ImageNet statistics).
    **fcos_kwargs
        Passed to ``torchvision.models.detection.FCOS`` (e.g. ``center_sampling_radius``,
        ``detections_per_img``, ``topk_candidates``, ``nms_thresh``). Resizing options are ignored.

    Attributes
    ----------
    arch : str
        ``"fcos"`` (stored in checkpoints; ``"faster_rcnn"`` for :class:`~src_training.models.detector.LesionDetector`).
    backbone_name : str
    model : torchvision.models.detection.FCOS
    hparams : dict
        Everything needed to rebuild the same architecture.

    Raises
    ------
    ConfigError
        Unknown backbone, invalid anchors, ``num_classes < 2``.
    """

    arch = "fcos"

    def __init__(
        self,
        backbone: str = "resnet18",
        num_classes: int = 2,
        *,
        fpn_channels: int = 128,
        num_convs: int = 4,
        anchor_sizes: Optional[Sequence[Sequence[int]]] = None,
        image_mean: Sequence[float] = IMAGE_MEAN,
        image_std: Sequence[float] = IMAGE_STD,
        **fcos_kwargs: Any,
    ):
        super().__init__()
        backbone = str(backbone).strip().lower()
        if backbone not in FCOS_BACKBONES:
            raise ConfigError(f"Unknown FCOS backbone {backbone!r}; choose one of: {', '.join(FCOS_BACKBONES)}.")
        if int(num_classes) < 2:
            raise ConfigError(f"num_classes must be >= 2 (background + lesion), got {num_classes}.")
        sizes = tuple(tuple(int(s) for s in lv) for lv in (anchor_sizes or FCOS_ANCHOR_SIZES))
        if len(sizes) != 5 or any(len(s) != 1 or s[0] <= 0 for s in sizes):
            raise ConfigError(f"FCOS anchor_sizes needs 5 levels of one positive size each, got {sizes}.")
        for key in ("min_size", "max_size", "fixed_size", "_skip_resize"):
            fcos_kwargs.pop(key, None)
        self.backbone_name = backbone
        self.num_classes = int(num_classes)
        self.fpn_channels = int(fpn_channels)
        self.num_convs = int(num_convs)
        self.anchor_sizes = sizes
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self._frozen = False
        body = getattr(resnet, backbone)(weights=None, norm_layer=nn.BatchNorm2d)
        fpn = BackboneWithFPN(
            body,
            return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
            in_channels_list=list(_BODY_CHANNELS[backbone]),
            out_channels=self.fpn_channels,
            extra_blocks=LastLevelMaxPool(),
        )
        anchors = AnchorGenerator(sizes=sizes, aspect_ratios=((1.0,),) * len(sizes))
        head = FCOSHead(self.fpn_channels, 1, self.num_classes, num_convs=self.num_convs)
        self.model = FCOS(fpn, num_classes=self.num_classes, anchor_generator=anchors, head=head,
                          image_mean=list(self.image_mean), image_std=list(self.image_std), **fcos_kwargs)
        self.model.transform = NoResizeTransform(min_size=1, max_size=1, image_mean=list(self.image_mean),
                                                  image_std=list(self.image_std), size_divisible=32)
        self._base_trainable = {n for n, p in self.named_parameters() if p.requires_grad}

    @property
    def hparams(self) -> dict[str, Any]:
        """Architecture settings (plain lists/str/int: ``weights_only`` and JSON safe)."""
        return {
            "arch": self.arch,
            "backbone": self.backbone_name,
            "num_classes": self.num_classes,
            "fpn_channels": self.fpn_channels,
            "num_convs": self.num_convs,
            "anchor_sizes": [list(s) for s in self.anchor_sizes],
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    _to_list = staticmethod(images_to_list)
    _check_targets = staticmethod(check_targets)

    def forward(self, images: Tensor, targets: Optional[list[dict[str, Tensor]]] = None):
        """Training mode with targets: loss dict (``classification``, ``bbox_regression``, ``bbox_ctrness``);
        eval mode: detections per image (``boxes`` (m, 4) xyxy input pixels, ``scores``, ``labels``).

        Parameters
        ----------
        images : Tensor (B, 1, H, W) float32 in [0, 1]
        targets : list of dict, optional
            Per image ``boxes`` (n, 4) float32 xyxy pixels (n may be 0) and ``labels`` (n,) int64.

        Raises
        ------
        ValueError
            Wrong image shape/dtype; missing or malformed targets in training mode.
        """
        imgs = self._to_list(images)
        if self.training:
            return self.model(imgs, self._check_targets(targets, len(imgs), images.device))
        return self.model(imgs)

    def detect(self, images: Tensor, score_thresh: float = 0.05) -> list[dict[str, Tensor]]:
        """Detections with eval behaviour and no gradients, whatever the module mode (restored after).

        Parameters
        ----------
        images : Tensor (B, 1, H, W) float32 in [0, 1]
        score_thresh : float
            Minimum score in [0, 1] of a returned box.

        Returns
        -------
        list of dict
            Per image ``boxes`` (m, 4) float32 xyxy input pixels, ``scores`` (m,) descending, ``labels``
            (m,) int64; at most ``detections_per_img`` (100).
        """
        old = self.model.score_thresh
        self.model.score_thresh = float(score_thresh)
        try:
            with torch.no_grad(), eval_behaviour(self):
                return self.model(self._to_list(images))
        finally:
            self.model.score_thresh = old


def build_fcos_detector(backbone: str = "resnet18", num_classes: int = 2, **kwargs: Any) -> FCOSLesionDetector:
    """A randomly initialised :class:`FCOSLesionDetector` on the CPU (never downloads weights).

    ``kwargs`` as :class:`FCOSLesionDetector` (also accepts a checkpoint's ``hparams``; its ``arch`` and
    ``backbone`` keys are ignored here).

    Raises
    ------
    ConfigError
        Invalid settings.
    """
    kwargs = {k: v for k, v in kwargs.items() if k not in ("arch", "backbone", "num_classes")}
    return FCOSLesionDetector(backbone, num_classes, **kwargs)
