"""The baseline denoiser trained without the detector: :class:`BaselineTrainer`.

Owns the baseline's schedule (one phase ``baseline`` of ``config.effective_baseline_steps`` steps, the denoiser
budget of LIDnet, Chen et al. ACM MM 2021) and step: the reconstruction loss alone (the first term of Eq. 8) or
the network's own published loss (:mod:`src_training.baseline_losses`, with the WGAN-GP critic of
:mod:`~src_training.training.critic` when that loss is adversarial).
"""

from __future__ import annotations

from src_training import baseline_losses
from src_training.losses import recon_loss
from src_training.training.critic import CriticMixin
from src_training.training.engine import TrainerEngine
from src_training.training.schedule import DENOISER, Phase


class BaselineTrainer(CriticMixin, TrainerEngine):
    """The baseline denoiser: the same network trained without the detector for
    ``config.effective_baseline_steps`` steps (default ``t2 * rounds``, the denoiser budget of LIDnet).

    ``config.baseline_loss``: ``"mae"`` (default) = the reconstruction loss only (first term of Eq. 8, reduced
    as ``config.loss_reduction``; this project's control, not the paper's protocol, which trained each baseline
    with its published loss); ``"published"`` = the network's own published loss from
    :func:`src_training.baseline_losses.published_loss` (``content_loss`` plus, when the published method
    is adversarial, ``lambda_adv`` of that method times the WGAN-GP term of
    :class:`~src_training.training.critic.CriticMixin`). Step losses: ``rec`` (MAE) always; with ``published``
    also ``total``, ``content``, the content loss's parts and, if adversarial, ``adv, critic, gp, wdist``.

    Same events, STOP/PAUSE, checkpoints and resume as :class:`~src_training.training.lidnet.CollaborativeTrainer`;
    writes ``denoiser.pt`` with ``method = "baseline"``. Parameters as
    :class:`~src_training.training.lidnet.CollaborativeTrainer` (``detector`` is ignored; ``critic`` is used when
    the published loss is adversarial).

    Raises
    ------
    ConfigError
        Invalid configuration or dataset.
    CheckpointError
        ``baseline_loss="published"`` with a ``vgg_weights`` file that is missing or not a torchvision VGG19
        state_dict (:func:`~src_training.baseline_losses.published_loss`).
    """

    method = "baseline"
    uses_denoiser = True
    uses_detector = False

    def __init__(self, config, dataset, *, denoiser=None, detector=None, device=None, run_dir=None, critic=None):
        super().__init__(config, dataset, denoiser=denoiser, device=device, run_dir=run_dir)
        #: The published loss (``baseline_loss="published"``), else None (MAE).
        self.published = None
        if self.config.baseline_loss == "published":
            self.published = baseline_losses.published_loss(self.config.denoiser, vgg_weights=self.config.vgg_weights,
                                                            device=self.device)
            if self.published.adversarial:
                self._init_critic(critic)

    def _schedule(self) -> list[Phase]:
        return [Phase("baseline", 0, self.config.effective_baseline_steps, trains=(DENOISER,))]

    def _train_step(self, phase: Phase, batch) -> dict[str, float]:
        ldct, ndct, _ = batch
        if self.published is None:
            denoised = self.denoiser(ldct)
            loss = recon_loss(denoised, ndct, reduction=self.config.loss_reduction)
            self._optimizer_step(self.opt_denoiser, loss, self.denoiser, terms={"rec": loss})
            return {"rec": float(loss.detach())}
        extra = self._critic_updates(ldct, ndct) if self.critic is not None else {}
        denoised = self.denoiser(ldct)
        content, cparts = self.published.content_loss(denoised, ndct)
        parts = {"total": float(content.detach()), "content": float(content.detach())}
        parts.update({str(k): float(v) for k, v in cparts.items()})
        total = content
        terms = {"content": content}
        if self.critic is not None:
            total = self._with_adversarial(total, parts, denoised, self.published.lambda_adv)
            terms["adv"] = total - content
        self._optimizer_step(self.opt_denoiser, total, self.denoiser, terms=terms)
        parts["rec"] = float(recon_loss(denoised.detach(), ndct))  # per-pixel MAE, for monitoring only
        parts.update(extra)
        return parts
