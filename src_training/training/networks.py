"""The two main networks of a trainer: default construction, optimizers, freezing, CPU weight copies.

Owns how the denoiser and the detector are built from a :class:`~src_training.config.TrainConfig` when the
caller gives none (:func:`default_denoiser`, :func:`default_detector`), their optimizers
(:func:`denoiser_optimizer`, :func:`detector_optimizer`), freezing between phases (:func:`freeze`: no gradient,
normalisation layers keep their running statistics; Algorithm 1 of Chen et al. 2021 freezes the detector in
T2 and the denoiser in T3) and detached CPU copies of weights for checkpoints (:func:`cpu_state_dict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
from torch import nn

from src_training.config import TrainConfig
from src_training.models.denoisers import build_denoiser
from src_training.models.detector import FRCNN_SAMPLING, build_detector, set_frozen


def default_denoiser(config: TrainConfig) -> nn.Module:
    """``build_denoiser(config.denoiser)``: input/output ``(B,1,H,W)`` float32 in [0, 1]."""
    return build_denoiser(config.denoiser)


def default_detector(config: TrainConfig) -> nn.Module:
    """``build_detector(config.detector_backbone, weights_path=config.detector_weights, **FRCNN_SAMPLING)``
    (no download): the RPN/RoI sampling the shipped detector was pretrained with and the demo's LIDnet runs
    use (fewer proposals and sampled RoIs than torchvision's COCO defaults; the weights are the same).

    Raises
    ------
    CheckpointError
        ``config.detector_weights`` is missing, refused or does not fit.
    """
    return build_detector(config.detector_backbone, weights_path=config.detector_weights, **FRCNN_SAMPLING)


def trainable_mask(module: nn.Module) -> list[bool]:
    """``requires_grad`` of every parameter, in ``parameters()`` order (restored by :func:`freeze`)."""
    return [p.requires_grad for p in module.parameters()]


def denoiser_optimizer(denoiser: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam(``config.lr_denoiser``) over the denoiser's trainable parameters."""
    return torch.optim.Adam([p for p in denoiser.parameters() if p.requires_grad], lr=config.lr_denoiser)


def detector_optimizer(detector: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD(``lr_detector``, ``detector_momentum``) when ``config.detector_optimizer == "sgd"``, else
    Adam(``lr_detector``), over the detector's trainable parameters."""
    params = [p for p in detector.parameters() if p.requires_grad]
    if config.detector_optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr_detector, momentum=config.detector_momentum)
    return torch.optim.Adam(params, lr=config.lr_detector)


def norm_layers(module: nn.Module) -> list[nn.Module]:
    """Normalisation layers of ``module`` that keep running statistics (BatchNorm / InstanceNorm with
    ``track_running_stats``)."""
    return [
        m
        for m in module.modules()
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm))
        and getattr(m, "track_running_stats", False)
    ]


def freeze(module: Optional[nn.Module], frozen: bool, mask: Sequence[bool]) -> None:
    """Freeze (no grad, norm layers keep their statistics) or unfreeze ``module`` (None: nothing).

    :func:`src_training.models.detector.set_frozen` first (a detector keeps its own flag), then every
    parameter's ``requires_grad`` off and the norm layers in eval mode; unfreezing restores the flags
    ``mask`` recorded when the trainer was built (:func:`trainable_mask`). Call after
    ``module.train()``/``eval()``.
    """
    if module is None:
        return
    set_frozen(module, frozen)
    if frozen:
        for p in module.parameters():
            p.requires_grad_(False)
        for m in norm_layers(module):
            m.eval()
    else:
        for p, req in zip(module.parameters(), mask):
            p.requires_grad_(req)


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of ``module.state_dict()`` (dtypes kept), safe to save while training continues."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
