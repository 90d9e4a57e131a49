"""Loss functions of napari-lidnet, one module per method.

- :mod:`.lidnet` -- LIDnet (Chen et al., ACM MM 2021, arXiv 2104.08845): reconstruction loss and Eq. 8
  (:func:`recon_loss`, :func:`detection_loss`, :func:`lidnet_generator_loss`), the ROI perceptual loss of
  Eq. 4 (:func:`roi_perceptual_loss`) and its global ablation (:func:`global_perceptual_loss`);
  :data:`REDUCTIONS` (``paper`` | ``normalised``).
- :mod:`.gan` -- LIDnet's GAN form, WGAN-GP (Eq. 5, Eq. 7): :func:`gradient_penalty`,
  :func:`wgan_critic_loss`, :func:`wgan_generator_loss`.
- :mod:`.todnet` -- TOD-Net (Zhang et al., MICCAI 2021): :func:`dice_loss`, :func:`todnet_loss`.
- :mod:`.published` -- the baselines' published losses (``published_loss``, ``PublishedLoss``,
  ``PUBLISHED_LOSSES``, ``ssim_loss``, ``sobel_edge_loss``; also importable as
  :mod:`src_training.baseline_losses`), with the VGG19 pieces in :mod:`.perceptual`. Not imported here (it
  loads torchmetrics and the denoiser registry): ``from src_training.losses.published import ...``.

Images are ``(B, 1, H, W)`` float32 on the [0, 1] scale; boxes ``xyxy`` float32 in input pixels.
"""

from .gan import gradient_penalty, wgan_critic_loss, wgan_generator_loss
from .lidnet import (
    REDUCTIONS,
    ROI_FEATURE_LEVELS,
    detection_loss,
    global_perceptual_loss,
    lidnet_generator_loss,
    recon_loss,
    roi_perceptual_loss,
)
from .todnet import dice_loss, todnet_loss

__all__ = [
    "REDUCTIONS",
    "ROI_FEATURE_LEVELS",
    "detection_loss",
    "dice_loss",
    "global_perceptual_loss",
    "gradient_penalty",
    "lidnet_generator_loss",
    "recon_loss",
    "roi_perceptual_loss",
    "todnet_loss",
    "wgan_critic_loss",
    "wgan_generator_loss",
]
