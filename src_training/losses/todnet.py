"""Task losses of TOD-Net (Zhang et al., "Task-Oriented Low-Dose CT Image Denoising", MICCAI 2021), the
task-oriented comparison method: a frozen downstream network's loss on the denoised image.

* :func:`dice_loss` -- soft Dice of the segmentation downstream network (V-Net's Dice, Milletari et al. 2016).
* :func:`todnet_loss` -- ``L = L_rec + lambda_task * L_task``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError

__all__ = ["dice_loss", "todnet_loss"]


def dice_loss(logits: Tensor, masks: Tensor, eps: float = 1.0) -> Tensor:
    """Soft Dice loss of a binary segmentation (Milletari et al., V-Net, 3DV 2016, Eq. 1), the task loss
    of the segmentation downstream network of TOD-Net (Zhang et al., MICCAI 2021).

    ``L = 1 - mean_i (2 sum(p_i m_i) + eps) / (sum p_i + sum m_i + eps)``, ``p = sigmoid(logits)``,
    per image i (an image without lesion and an empty prediction scores Dice 1).

    Parameters
    ----------
    logits : Tensor (B, 1, H, W)
        Segmenter output before the sigmoid.
    masks : Tensor (B, 1, H, W), {0, 1} float
        Lesion masks.
    eps : float
        Smoothing constant (pixels).

    Returns
    -------
    Tensor, scalar in [0, 1]

    Raises
    ------
    ValueError
        If the shapes differ.
    """
    if logits.shape != masks.shape:
        raise ValueError(f"dice_loss: shapes differ, logits {tuple(logits.shape)} vs masks {tuple(masks.shape)}")
    p = torch.sigmoid(logits).flatten(1)
    m = masks.to(p.dtype).flatten(1)
    dice = (2.0 * (p * m).sum(1) + eps) / (p.sum(1) + m.sum(1) + eps)
    return 1.0 - dice.mean()


def todnet_loss(recon: Tensor, task: Tensor, lambda_task: float) -> tuple[Tensor, dict[str, float]]:
    """Task-oriented denoiser loss of TOD-Net (Zhang et al., "Task-Oriented Low-Dose CT Image Denoising",
    MICCAI 2021): ``L = L_rec + lambda_task * L_task`` with ``L_task`` the loss of a frozen downstream
    network on F(x). (TOD-Net adds this term to WGAN and VGG-perceptual terms; here it is added to the
    project's MAE reconstruction loss so the comparison with LIDnet's Eq. 8 changes one thing.)

    Parameters
    ----------
    recon, task : Tensor, scalar
        :func:`recon_loss` and the task loss (:func:`detection_loss` or :func:`dice_loss`).
    lambda_task : float >= 0

    Returns
    -------
    (Tensor, dict)
        Total with graph and floats ``{"total", "rec", "task"}``.

    Raises
    ------
    ConfigError
        If ``lambda_task`` is negative or not finite.
    """
    if not (float(lambda_task) >= 0.0 and float(lambda_task) < float("inf")):
        raise ConfigError(f"lambda_task must be a finite number >= 0, got {lambda_task}.")
    total = recon + float(lambda_task) * task
    return total, {"total": float(total.detach()), "rec": float(recon.detach()), "task": float(task.detach())}
