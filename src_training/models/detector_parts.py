"""Constants and input handling shared by the detectors (Faster R-CNN :mod:`.detector`, FCOS :mod:`.fcos`).

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

import functools
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.misc import FrozenBatchNorm2d

from ..errors import ConfigError

__all__ = [
    "BACKBONES",
    "NORMS",
    "DEFAULT_ANCHOR_SIZES",
    "DEFAULT_ASPECT_RATIOS",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "NoResizeTransform",
    "anchor_settings",
    "backbone_key",
    "check_targets",
    "images_to_list",
    "norm_layer_class",
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


class NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detection transform without resizing (normalise + zero-pad at the bottom/right to
    ``size_divisible`` only), so boxes in and out stay in input pixels. Also used by :mod:`.fcos`."""

    def resize(self, image: Tensor, target: Optional[dict[str, Tensor]] = None):  # noqa: D102
        return image, target


def norm_layer_class(norm: str):
    """The ``norm_layer`` of torchvision's ResNet for a :data:`NORMS` name (see the module docstring).

    Raises
    ------
    ConfigError
        Unknown ``norm``.
    """
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "group":
        return functools.partial(nn.GroupNorm, 32)
    if norm == "frozen":
        return FrozenBatchNorm2d
    raise ConfigError(f"Unknown detector norm {norm!r}; choose one of: {', '.join(NORMS)}.")


def backbone_key(backbone: str) -> str:
    """Lower-case backbone name, checked against :data:`BACKBONES`.

    Raises
    ------
    ConfigError
        Unknown backbone (the message lists the choices).
    """
    key = str(backbone).strip().lower()
    if key not in BACKBONES:
        raise ConfigError(f"Unknown detector backbone {key!r}; choose one of: {', '.join(BACKBONES)}.")
    return key


def anchor_settings(
    anchor_sizes: Optional[Sequence[Sequence[int]]], aspect_ratios: Optional[Sequence[float]]
) -> tuple[tuple[tuple[int, ...], ...], tuple[float, ...]]:
    """Anchor sizes (pixels, one tuple per FPN level) and aspect ratios, defaults filled in and checked.

    Raises
    ------
    ConfigError
        Not 5 levels, levels with different numbers of sizes, a size <= 0, or no aspect ratio.
    """
    sizes = tuple(tuple(int(s) for s in level) for level in (anchor_sizes or DEFAULT_ANCHOR_SIZES))
    ratios = tuple(float(r) for r in (aspect_ratios or DEFAULT_ASPECT_RATIOS))
    if len(sizes) != 5 or len({len(s) for s in sizes}) != 1 or not ratios or min(min(sizes)) <= 0:
        raise ConfigError(
            f"anchor_sizes needs 5 levels ('0','1','2','3','pool') with the same number of positive sizes "
            f"each, got {sizes}; aspect_ratios must be non-empty, got {ratios}."
        )
    return sizes, ratios


def images_to_list(images: Tensor) -> list[Tensor]:
    """``(B, 1, H, W)`` floating [0, 1] slices -> list of B ``(3, H, W)`` views (channel replicated), the input
    of torchvision's detection models.

    Raises
    ------
    ValueError
        Not a ``(B, 1, H, W)`` tensor or not floating point.
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"LesionDetector expects (B, 1, H, W) [0, 1] CT slices, got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"LesionDetector expects floating-point images in [0, 1], got {images.dtype}")
    return list(images.expand(-1, 3, -1, -1).unbind(0))


def check_targets(targets: Any, n_images: int, device: torch.device) -> list[dict[str, Tensor]]:
    """Validate detector targets and convert them to torchvision's form on ``device``.

    Parameters
    ----------
    targets : sequence of dict
        Per image ``boxes`` ((n, 4) xyxy pixels, any array-like; ``n = 0`` allowed) and optionally
        ``labels`` ((n,) integers; default all 1 = lesion).
    n_images : int
        Batch size the targets must match.
    device : torch.device

    Returns
    -------
    list of dict
        ``boxes`` float32 ``(n, 4)`` and ``labels`` int64 ``(n,)`` per image.

    Raises
    ------
    ValueError
        Missing targets or a count different from ``n_images``; boxes not ``(n, 4)``; a box with
        ``x1 <= x0`` or ``y1 <= y0``; not as many labels as boxes.
    """
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
