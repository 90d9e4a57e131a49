"""The baselines' published losses, under their old import path (re-exports only).

The code is in :mod:`src_training.losses.published` (``PublishedLoss``, ``published_loss``,
``PUBLISHED_LOSSES``, ``ssim_loss``, ``sobel_edge_loss``) and :mod:`src_training.losses.perceptual` (the VGG19
perceptual term and its seeded substitute). ``from src_training.baseline_losses import X`` keeps working for
every name it had.
"""

from __future__ import annotations

from .losses.perceptual import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    VGG_SUBSTITUTE_SEED,
    VGGPerceptual,
    load_vgg19_features,
    random_vgg19_features,
)
from .losses.published import (
    PUBLISHED_LOSSES,
    PublishedLoss,
    PublishedLossRecipe,
    published_loss,
    sobel_edge_loss,
    ssim_loss,
)

__all__ = [
    "PublishedLoss",
    "PublishedLossRecipe",
    "PUBLISHED_LOSSES",
    "published_loss",
    "VGGPerceptual",
    "load_vgg19_features",
    "random_vgg19_features",
    "ssim_loss",
    "sobel_edge_loss",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGG_SUBSTITUTE_SEED",
]
