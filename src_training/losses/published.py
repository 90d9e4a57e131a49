"""Published training losses of the LIDnet baseline denoisers (in the experiments of Chen et al., ACM MM
2021, arXiv:2104.08845, each baseline is trained with its own paper's loss).

:func:`published_loss` returns a :class:`PublishedLoss` for every key of the denoiser registry
(:data:`src_training.models.registry.DENOISER_SPECS`; each row names its loss in :data:`PUBLISHED_LOSSES`).
Its :meth:`PublishedLoss.content_loss` is the non-adversarial part of the generator objective; when
``adversarial`` is True the published training adds a WGAN-GP critic and the generator term
``lambda_adv * (-mean(critic(G(x))))`` (the critic and its gradient penalty are the trainer's job, with
:mod:`src_training.losses.gan`, not this module's).

All images are ``(B, 1, H, W)`` float32 on the [0, 1] scale (HU clipped to ``hu_range`` and scaled).

Per model (weights relative to each other; ``lambda_adv`` relative to the content loss)
------------------------------------------------------------------------------------------
- ``redcnn``: MSE (Chen et al., IEEE TMI 2017). Not adversarial.
- ``wganvgg``: WGAN-GP + 0.1 x VGG19 perceptual loss (Yang et al., IEEE TMI 2018, overall objective
  ``min_G max_D L_WGAN + lambda_1 L_VGG``, ``lambda_1 = 0.1``). ``lambda_adv = 1``.
- ``cpce``: WGAN-GP + 0.1 x VGG19 perceptual (Shan et al., IEEE TMI 2018, same objective as WGAN-VGG).
- ``mapnn``: WGAN-GP + 50 x MSE + 50 x edge-incoherence (Sobel) loss, ``lambda_adv = 1``. Taken from the
  authors' code (github.com/hmshan/MAP-NN, ``MAP_NN_training.py``: ``gen_cost + 50 * mse_cost + 50 *
  edge_cost``; ``edge_cost`` = MSE between the Sobel gradients of output and target). That code has NO VGG
  term, so none is used here.
- ``ssms``: structurally-sensitive loss ``0.84 * (1 - SSIM) + 0.16 * L1`` (You et al., IEEE Access 2018;
  the SSIM/L1 mix; the weight 0.84 is the value of Zhao et al., IEEE TCI 2017, on which that loss builds --
  not re-checked against the paper's text here). The paper also trains adversarially (SMGAN); the LIDnet
  "SSMS" baseline is taken here as the non-adversarial network.
- ``reshlf``: hybrid ``MSE + (1 - SSIM)`` (equal weights). The Res-HLF paper could not be retrieved: this
  is OUR stated reading of "hybrid loss function", to be replaced once the paper is at hand.
- ``dcscn``: L1 (mean absolute error). Not adversarial.
- ``dcswgan``: L1 + WGAN-GP, ``lambda_adv = 1e-3`` (our choice, the SRGAN weighting of Ledig et al. 2017;
  the DCSWGAN weighting was not available).

VGG perceptual term: :mod:`src_training.losses.perceptual` (VGG19 conv5_4, ImageNet weights from a local
file or a seeded random-VGG19 substitute, named in ``description``; nothing downloads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from ..device import auto_device
from ..errors import ConfigError
from ..models.registry import denoiser_spec
from .perceptual import VGG_SUBSTITUTE_SEED, VGGPerceptual, load_vgg19_features, random_vgg19_features

__all__ = [
    "PUBLISHED_LOSSES",
    "PublishedLoss",
    "PublishedLossRecipe",
    "published_loss",
    "sobel_edge_loss",
    "ssim_loss",
]

log = logging.getLogger(__name__)


def ssim_loss(denoised: Tensor, ndct: Tensor) -> Tensor:
    """``1 - SSIM`` (Wang et al., IEEE TIP 2004), differentiable, via torchmetrics.

    Gaussian window 11 x 11, sigma 1.5, ``data_range = 1`` ([0, 1] scale), K1 = 0.01, K2 = 0.03; on slices
    smaller than 11 px the window shrinks to the largest odd size that fits (sigma scaled with it).

    Shapes: ``(B, 1, H, W)`` float32 each; returns a scalar tensor in [0, 2].
    """
    k = min(11, min(denoised.shape[-2:]))
    k = k if k % 2 == 1 else k - 1
    if k < 3:
        raise ValueError(f"SSIM loss needs slices of at least 3 x 3 pixels, got {tuple(denoised.shape[-2:])}")
    ssim = structural_similarity_index_measure(
        denoised, ndct, gaussian_kernel=True, sigma=1.5 * k / 11, kernel_size=k, data_range=1.0
    )
    return 1.0 - ssim


def sobel_edge_loss(denoised: Tensor, ndct: Tensor) -> Tensor:
    """Edge-incoherence loss of MAP-NN (Shan et al. 2019; authors' code ``edge_cost``).

    ``mean((S(denoised) - S(ndct))^2)`` over both Sobel directions, ``S`` = 3x3 Sobel filters
    ``[[-1,-2,-1],[0,0,0],[1,2,1]]`` and its transpose, reflect padding (as ``tf.image.sobel_edges``).

    Shapes: ``(B, 1, H, W)`` float32 each (H, W >= 2); returns a scalar tensor.
    """
    ky = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]], dtype=denoised.dtype,
                      device=denoised.device)
    kernel = torch.stack([ky, ky.t()]).unsqueeze(1)  # (2, 1, 3, 3)

    def grad(x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel)

    return F.mse_loss(grad(denoised), grad(ndct))


def _term_mse(loss: PublishedLoss, d: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(d, y)


def _term_l1(loss: PublishedLoss, d: Tensor, y: Tensor) -> Tensor:
    return F.l1_loss(d, y)


def _term_vgg(loss: PublishedLoss, d: Tensor, y: Tensor) -> Tensor:
    if loss.perceptual is None:
        raise ConfigError(f"The {loss.model!r} loss has a VGG term but no VGG network was built.")
    return loss.perceptual(d, y)


_TERMS: dict[str, Callable[[PublishedLoss, Tensor, Tensor], Tensor]] = {
    "mse": _term_mse,
    "l1": _term_l1,
    "ssim": lambda loss, d, y: ssim_loss(d, y),
    "edge": lambda loss, d, y: sobel_edge_loss(d, y),
    "vgg": _term_vgg,
}


@dataclass(frozen=True)
class PublishedLoss:
    """The published training loss of one baseline denoiser.

    Attributes
    ----------
    model : str
        Key of the denoiser registry (:data:`src_training.models.registry.DENOISERS`).
    description : str
        Human-readable formula with its source, naming the VGG weights used (ImageNet file or substitute).
    adversarial : bool
        True when the published training uses a WGAN(-GP) critic (WGAN-VGG, CPCE, MAP-NN, DCSWGAN).
    lambda_adv : float
        Weight of the generator's adversarial term ``-mean(critic(G(x)))`` relative to
        :meth:`content_loss` (0.0 when not adversarial).
    weights : tuple of (str, float)
        The content terms and their weights; term names: ``mse``, ``l1``, ``ssim`` (= 1 - SSIM), ``edge``
        (Sobel MSE), ``vgg`` (VGG19 conv5_4 MSE).
    perceptual : VGGPerceptual or None
        The frozen VGG network when a ``vgg`` term is present.
    """

    model: str
    description: str
    adversarial: bool
    lambda_adv: float
    weights: tuple[tuple[str, float], ...] = ()
    perceptual: VGGPerceptual | None = field(default=None, repr=False, compare=False)

    def content_loss(self, denoised: Tensor, ndct: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Non-adversarial part of the published generator loss.

        Parameters
        ----------
        denoised : Tensor (B, 1, H, W) float32, [0, 1]
            Denoiser output G(x) (keeps its autograd graph).
        ndct : Tensor (B, 1, H, W) float32, [0, 1]
            Normal-dose target y.

        Returns
        -------
        (Tensor, dict)
            The weighted sum (scalar, differentiable w.r.t. ``denoised``) and the unweighted value of each
            term by name plus ``"content"`` (the weighted sum), as floats.

        Raises
        ------
        ValueError
            Shapes differ or are not ``(B, 1, H, W)``.
        """
        if denoised.shape != ndct.shape or denoised.dim() != 4 or denoised.shape[1] != 1:
            raise ValueError(f"{self.model} loss: expected two (B, 1, H, W) tensors of the same shape, got "
                             f"{tuple(denoised.shape)} and {tuple(ndct.shape)}")
        total: Tensor | None = None
        parts: dict[str, float] = {}
        for name, w in self.weights:
            value = _TERMS[name](self, denoised, ndct)
            parts[name] = float(value.detach())
            total = w * value if total is None else total + w * value
        assert total is not None
        parts["content"] = float(total.detach())
        return total, parts

    def to(self, device: torch.device | str) -> PublishedLoss:
        """Move the VGG network (if any) to ``device``; returns ``self``."""
        if self.perceptual is not None:
            self.perceptual.to(device)
        return self


@dataclass(frozen=True)
class PublishedLossRecipe:
    """What a published loss is made of (see the module docstring for every entry and its source).

    Attributes
    ----------
    adversarial : bool
        The published training adds a WGAN-GP critic.
    lambda_adv : float
        Weight of the generator's adversarial term relative to the content loss (0.0 when not adversarial).
    weights : tuple of (str, float)
        Content terms (``mse``, ``l1``, ``ssim``, ``edge``, ``vgg``) and their weights.
    description : str
        Formula and source (the VGG weights' origin is appended by :func:`published_loss`).
    """

    adversarial: bool
    lambda_adv: float
    weights: tuple[tuple[str, float], ...]
    description: str


#: Published loss of every method, by the key in the denoiser registry's ``DenoiserSpec.published_loss``
#: (:data:`src_training.models.registry.DENOISER_SPECS`).
PUBLISHED_LOSSES: dict[str, PublishedLossRecipe] = {
    "redcnn": PublishedLossRecipe(False, 0.0, (("mse", 1.0),), "MSE (Chen et al., IEEE TMI 2017, RED-CNN)"),
    "wganvgg": PublishedLossRecipe(
        True, 1.0, (("vgg", 0.1),),
        "WGAN-GP + 0.1 * VGG19 conv5_4 perceptual (Yang et al., IEEE TMI 2018, lambda_1 = 0.1)"),
    "cpce": PublishedLossRecipe(
        True, 1.0, (("vgg", 0.1),),
        "WGAN-GP + 0.1 * VGG19 conv5_4 perceptual (Shan et al., IEEE TMI 2018, CPCE-2D)"),
    "mapnn": PublishedLossRecipe(
        True, 1.0, (("mse", 50.0), ("edge", 50.0)),
        "WGAN-GP + 50 * MSE + 50 * Sobel edge-incoherence MSE (Shan et al., Nat. Mach. Intell. 2019; "
        "weights from the authors' MAP_NN_training.py, which has no VGG term)"),
    "ssms": PublishedLossRecipe(
        False, 0.0, (("ssim", 0.84), ("l1", 0.16)),
        "0.84 * (1 - SSIM) + 0.16 * L1 structurally-sensitive loss (You et al., IEEE Access 2018; "
        "weight 0.84 after Zhao et al. 2017, not re-checked; SMGAN's adversarial term not used)"),
    "reshlf": PublishedLossRecipe(
        False, 0.0, (("mse", 1.0), ("ssim", 1.0)),
        "MSE + (1 - SSIM) hybrid loss (Res-HLF; source paper not retrieved: OUR reading, unverified)"),
    "dcscn": PublishedLossRecipe(False, 0.0, (("l1", 1.0),), "L1 / MAE (DCSCN for LDCT, You et al., SPIE 2019)"),
    "dcswgan": PublishedLossRecipe(
        True, 1e-3, (("l1", 1.0),),
        "WGAN-GP (lambda_adv = 1e-3, our choice after SRGAN; not from the DCSWGAN paper) + L1 "
        "(DCSCN generator, You et al., SPIE 2019)"),
}


def published_loss(model: str, *, vgg_weights: str | os.PathLike | None = None, device=None) -> PublishedLoss:
    """The published training loss of a baseline denoiser (see the module docstring for every model).

    Parameters
    ----------
    model : str
        A key of the denoiser registry (:data:`src_training.models.registry.DENOISERS`, case-insensitive).
    vgg_weights : str or PathLike, optional
        Local torchvision ``vgg19`` state_dict for the VGG perceptual term (WGAN-VGG, CPCE). Without it the
        seeded random-VGG19 substitute is used and a warning is logged. Ignored by models without a VGG term.
    device : torch.device, str or None
        Where the VGG network goes (``None`` or ``"auto"``: cuda > mps > cpu).

    Returns
    -------
    PublishedLoss

    Raises
    ------
    ConfigError
        Unknown ``model``.
    CheckpointError
        ``vgg_weights`` is missing or not a torchvision VGG19 state_dict.
    """
    spec = denoiser_spec(model)
    key = spec.key
    recipe = PUBLISHED_LOSSES.get(spec.published_loss)
    if recipe is None:
        raise ConfigError(f"No published loss {spec.published_loss!r} is recorded for denoiser {key!r}; add it to "
                          "PUBLISHED_LOSSES in src_training/losses/published.py.")
    adversarial, lambda_adv, weights, description = (recipe.adversarial, recipe.lambda_adv, recipe.weights,
                                                     recipe.description)
    perceptual = None
    if any(name == "vgg" for name, _ in weights):
        if vgg_weights is not None:
            feats = load_vgg19_features(vgg_weights)
            source = f"VGG19 weights from {os.fspath(vgg_weights)!r}"
        else:
            feats = random_vgg19_features()
            source = (f"SUBSTITUTE: random-init VGG19 (seed {VGG_SUBSTITUTE_SEED}), not ImageNet weights -- no "
                      "vgg_weights file given")
            log.warning("%s: no VGG19 weights file given; the perceptual loss uses a seeded random-init VGG19 "
                        "substitute, so training does not reproduce the published loss.", key)
        dev = device if isinstance(device, torch.device) else auto_device("auto" if device is None else str(device))
        perceptual = VGGPerceptual(feats, source).to(dev)
        description = f"{description}; {source}"
    return PublishedLoss(key, description, adversarial, lambda_adv, weights, perceptual)
