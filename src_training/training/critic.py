"""The WGAN-GP critic of the adversarial training forms: :class:`CriticMixin`.

Owns the critic's construction and optimizer, its updates (Eq. 7 of Chen et al., ACM MM 2021: the WGAN loss
with gradient penalty, Gulrajani et al. 2017) and the adversarial term added to a denoiser loss (Eq. 5), for
every trainer that has a GAN form: LIDnet's ``form="gan"``, TOD-Net's ``form="gan"`` and the adversarial
published baseline losses (WGAN-VGG, DCSWGAN ...).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from src_training.losses import wgan_critic_loss, wgan_generator_loss
from src_training.models.critic import build_critic


class CriticMixin:
    """WGAN-GP critic machinery for a :class:`~src_training.training.engine.TrainerEngine` with a denoiser.

    Each denoiser step first makes ``config.critic_steps`` critic updates on the step's batch
    (:meth:`_critic_updates`: the denoised images recomputed without gradient, a fresh interpolation weight
    per image for the gradient penalty each time, loss :func:`~src_training.losses.wgan_critic_loss`, Eq. 7);
    then the denoiser loss gets ``lambda_adv * (-mean C(F(x)))`` with the critic frozen
    (:meth:`_with_adversarial`, Eq. 5). The critic is :class:`src_training.models.critic.Critic`
    (``(B,1,H,W)`` in [0, 1] -> ``(B,)`` scores) with Adam(``lr_critic``, betas (0.5, 0.9) as WGAN-VGG); both
    are saved in ``trainer_state.pt`` (``models["critic"]``, ``optimizers["critic"]``). Uses the engine's
    ``config``, ``device``, ``denoiser``, ``_optimizer_step`` and ``_register_aux``.
    """

    #: The critic (None until :meth:`_init_critic`: no adversarial term).
    critic: Optional[nn.Module] = None
    opt_critic: Optional[torch.optim.Optimizer] = None

    def _init_critic(self, critic: Optional[nn.Module] = None) -> None:
        """Use ``critic`` (default :func:`~src_training.models.critic.build_critic`) on the trainer's device, with
        its Adam optimizer, and register both in the trainer state."""
        self.critic = (critic if critic is not None else build_critic()).to(self.device)
        self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=self.config.lr_critic, betas=(0.5, 0.9))
        self._register_aux("critic", self.critic, self.opt_critic)

    def _critic_updates(self, ldct: torch.Tensor, ndct: torch.Tensor) -> dict[str, float]:
        """``config.critic_steps`` critic updates (Eq. 7) on ``ldct``/``ndct`` ``(B,1,H,W)`` in [0, 1].

        Returns
        -------
        dict str -> float
            The last update's ``critic`` (loss), ``gp`` (gradient penalty) and ``wdist`` (Wasserstein estimate).
        """
        self.critic.train(True)
        for p in self.critic.parameters():
            p.requires_grad_(True)
        with torch.no_grad():
            fake = self.denoiser(ldct)
        parts: dict[str, float] = {}
        for _ in range(self.config.critic_steps):
            loss, parts = wgan_critic_loss(self.critic, ndct, fake, lambda_gp=self.config.lambda_gp)
            self._optimizer_step(self.opt_critic, loss, self.critic)
        return parts

    def _with_adversarial(
        self, total: torch.Tensor, parts: dict[str, float], denoised: torch.Tensor, weight: float
    ) -> torch.Tensor:
        """``total + weight * (-mean C(F(x)))`` (Eq. 5) with the critic frozen; ``denoised`` = F(x)
        ``(B,1,H,W)`` with its graph. Adds ``adv`` to ``parts`` and updates ``parts["total"]``."""
        for p in self.critic.parameters():
            p.requires_grad_(False)
        adv = wgan_generator_loss(self.critic(denoised))
        total = total + float(weight) * adv
        parts["adv"] = float(adv.detach())
        parts["total"] = float(total.detach())
        return total
