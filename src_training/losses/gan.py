"""Losses of LIDnet's GAN form (Chen et al., ACM MM 2021, arXiv:2104.08845, Eq. 5 and Eq. 7): WGAN-GP.

* :func:`gradient_penalty` -- the gradient penalty of Gulrajani et al., "Improved training of Wasserstein
  GANs", NeurIPS 2017 (Eq. 3), ``lambda = 10`` as in the paper's appendix.
* :func:`wgan_critic_loss` -- the critic's loss, Eq. 7.
* :func:`wgan_generator_loss` -- the denoiser's adversarial term of Eq. 5.

Also the adversarial part of the baselines' published losses (WGAN-VGG, CPCE, MAP-NN, DCSWGAN; see
:mod:`src_training.losses.published`). Images are ``(B, 1, H, W)`` float32 on the [0, 1] scale.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["gradient_penalty", "wgan_critic_loss", "wgan_generator_loss"]


def gradient_penalty(
    critic: torch.nn.Module,
    real: Tensor,
    fake: Tensor,
    generator: torch.Generator | None = None,
    *,
    lambda_gp: float = 10.0,
) -> Tensor:
    """WGAN-GP gradient penalty (Gulrajani et al., NeurIPS 2017, Eq. 3; the penalty of LIDnet's Eq. 7).

    ``x_hat = eps * real + (1 - eps) * fake`` with one ``eps ~ U(0, 1)`` per image, and

    ``GP = lambda_gp * mean_i (||grad_x C(x_hat_i)||_2 - 1)^2``.

    For a linear critic ``C(x) = <w, x>`` the gradient is ``w`` everywhere, so ``GP = lambda_gp *
    (||w|| - 1)^2`` exactly.

    Parameters
    ----------
    critic : nn.Module
        Maps ``(B, C, H, W)`` to ``(B,)`` or ``(B, 1)`` scores.
    real : Tensor (B, C, H, W)
        NDCT images y ([0, 1] scale). Treated as constants (detached).
    fake : Tensor (B, C, H, W)
        Denoised images F(x), same shape. Treated as constants (detached).
    generator : torch.Generator, optional
        Source of ``eps`` (default: torch's global RNG, which the trainers save for exact resumption).
    lambda_gp : float >= 0
        The penalty weight (paper: 10).

    Returns
    -------
    Tensor, scalar
        The penalty, with a graph to the critic's parameters (``create_graph=True``).

    Raises
    ------
    ValueError
        If ``real`` and ``fake`` differ in shape.
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: shapes differ, real {tuple(real.shape)} vs fake {tuple(fake.shape)}")
    b = real.shape[0]
    eps = torch.rand((b,) + (1,) * (real.dim() - 1), generator=generator, dtype=real.dtype, device="cpu")
    eps = eps.to(real.device)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.reshape(b, -1).norm(2, dim=1)
    return float(lambda_gp) * ((norms - 1.0) ** 2).mean()


def wgan_critic_loss(
    critic: torch.nn.Module,
    real: Tensor,
    fake: Tensor,
    *,
    lambda_gp: float = 10.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Critic loss of WGAN-GP, LIDnet's Eq. 7: ``L_C = E[C(F(x))] - E[C(y)] + GP``.

    Parameters
    ----------
    critic : nn.Module
        ``(B, 1, H, W) -> (B,)`` scores.
    real, fake : Tensor (B, 1, H, W), [0, 1]
        NDCT y and denoised F(x) (detached: the denoiser is not updated by this loss).
    lambda_gp : float
        Gradient-penalty weight (paper: 10).
    generator : torch.Generator, optional
        RNG of the interpolation weights (see :func:`gradient_penalty`).

    Returns
    -------
    (Tensor, dict)
        The loss (to minimise over the critic) and floats ``{"critic", "gp", "wdist"}`` where ``wdist =
        E[C(y)] - E[C(F(x))]`` is the critic's estimate of the Wasserstein-1 distance.
    """
    s_real = critic(real.detach()).reshape(-1).mean()
    s_fake = critic(fake.detach()).reshape(-1).mean()
    gp = gradient_penalty(critic, real, fake, generator, lambda_gp=lambda_gp)
    loss = s_fake - s_real + gp
    return loss, {"critic": float(loss.detach()), "gp": float(gp.detach()), "wdist": float((s_real - s_fake).detach())}


def wgan_generator_loss(scores_fake: Tensor) -> Tensor:
    """Adversarial term of the denoiser (generator) in LIDnet's GAN form (Eq. 5): ``-E[C(F(x))]``.

    Parameters
    ----------
    scores_fake : Tensor (B,) or (B, 1)
        Critic scores of the denoised batch, with a graph to the denoiser.

    Returns
    -------
    Tensor, scalar
        ``-mean(scores_fake)`` (unweighted; the trainer multiplies by ``lambda_adv``).
    """
    return -scores_fake.reshape(-1).mean()
