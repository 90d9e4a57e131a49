"""LIDnet's collaborative training: :class:`CollaborativeTrainer`.

Source: Chen et al., "Low-dose CT denoising with lesion-aware ...", ACM MM 2021, arXiv:2104.08845,
Algorithm 1 (collaborative training strategy) and Eq. 8:

1. **T1** detector steps on normal-dose images y (detection loss only).
2. ``rounds`` times:

   * **T2** denoiser steps with the detector frozen (weights and normalisation statistics), loss Eq. 8
     ``L = L_rec + lambda_1 L_roi + lambda_2 L_det`` on F(x): one backbone pass of the detector on F(x)
     gives both the detection loss (training behaviour) and the top-K proposals of the ROI perceptual
     loss (Eq. 4); ``T(y)`` is computed without gradient.
   * **T3** detector steps on denoised images F(x) with the denoiser frozen (no gradient through F).

Owns the LIDnet schedule and step (and its ablations: GAN form, simultaneous strategy, global / no
perceptual loss); the step engine, the detector update and the critic come from the sibling modules.
"""

from __future__ import annotations

import torch

from src_training.errors import LidnetError
from src_training.losses import (
    detection_loss,
    global_perceptual_loss,
    lidnet_generator_loss,
    recon_loss,
    roi_perceptual_loss,
)
from src_training.training.critic import CriticMixin
from src_training.training.detector import detector_update
from src_training.training.engine import TrainerEngine
from src_training.training.schedule import DENOISER, DETECTOR, Phase


class CollaborativeTrainer(CriticMixin, TrainerEngine):
    """LIDnet's collaborative training, Algorithm 1 of Chen et al. (ACM MM 2021, arXiv:2104.08845).

    Schedule: T1 detector steps on NDCT, then ``config.rounds`` x (T2 denoiser steps with the frozen
    detector, loss Eq. 8; T3 detector steps on the frozen denoiser's output). ``rounds = 0`` trains only
    the detector on NDCT (see also :class:`~src_training.training.detector.DetectorTrainer`).

    Variants selected in the configuration:

    * ``form="gan"``: LIDnet's GAN form (Eq. 5): in T2, ``critic_steps`` WGAN-GP critic updates (Eq. 7)
      precede every denoiser step, whose loss is Eq. 8 plus ``lambda_adv * (-mean C(F(x)))`` (see
      :class:`~src_training.training.critic.CriticMixin`). Step losses add ``adv``, ``critic``, ``gp``,
      ``wdist``.
    * ``strategy="simultaneous"`` (ablation, Fig. 3): after T1, ``rounds`` phases ``joint`` of ``t2 + t3``
      steps (same total as Algorithm 1). Each joint step makes one denoiser update (Eq. 8, detector
      frozen) and then one detector update with the detection loss on the same batch's F(x) as computed
      before the denoiser update (detached); loss ``det_update``.
    * ``perceptual="global"`` / ``"none"``: the ``roi`` term is the global feature loss
      (:func:`~src_training.losses.global_perceptual_loss`) or dropped (reported as 0).

    Parameters
    ----------
    config : TrainConfig
    dataset : Dataset
        Items ``(ldct (1,H,W), ndct (1,H,W), target)`` float32 in [0, 1] as
        :class:`src_training.data.SliceDataset`; it is indexed with ``(index, epoch)`` tuples.
    denoiser, detector : nn.Module, optional
        Prebuilt networks (default: ``build_denoiser(config.denoiser)``,
        ``build_detector(config.detector_backbone, weights_path=config.detector_weights)``). The detector
        must follow the contract's ``LesionDetector`` API (``forward``, ``losses_and_rpn``, ``rpn_topk``).
    device : str or torch.device, optional
        Default: ``auto_device(config.device)``.
    run_dir : path-like, optional
        Where ``progress.jsonl``, checkpoints and STOP/PAUSE files live; None = nothing written.
    critic : nn.Module, optional
        Prebuilt critic for ``form="gan"`` (default :func:`src_training.models.critic.build_critic`).

    Optimizers: Adam(lr_denoiser) for the denoiser; Adam or SGD (``config.detector_optimizer``) with
    lr_detector for the detector; both keep their state across phases.

    Construction seeds python ``random``, numpy's global RNG and torch with ``config.seed`` (before
    building the networks). Data order and crops come from private generators
    (:class:`~src_training.training.batches.BatchStream`), so a run resumed from ``trainer_state.pt``
    continues bit-exactly on the CPU (on CUDA, kernels such as RoIAlign's backward use atomics and are not
    bit-reproducible).

    Raises
    ------
    ConfigError
        Invalid configuration, or a dataset whose ``hu_range`` differs from ``config.hu_range``.
    CheckpointError
        ``config.detector_weights`` cannot be loaded (when no detector is given).
    """

    method = "lidnet"
    uses_denoiser = True
    uses_detector = True

    def __init__(self, config, dataset, *, denoiser=None, detector=None, device=None, run_dir=None, critic=None):
        super().__init__(config, dataset, denoiser=denoiser, detector=detector, device=device, run_dir=run_dir)
        if self.config.form == "gan":
            self._init_critic(critic)

    def _schedule(self) -> list[Phase]:
        """T1, then per round T2 + T3 (Algorithm 1) or one ``joint`` phase of ``t2 + t3`` steps (simultaneous
        ablation: trains both networks, each step starting with the detector frozen)."""
        c = self.config
        phases = [Phase("T1", 0, c.t1, trains=(DETECTOR,))]
        for r in range(1, c.rounds + 1):
            if c.strategy == "simultaneous":
                phases.append(Phase("joint", r, c.t2 + c.t3, trains=(DENOISER, DETECTOR), unfrozen=(DENOISER,)))
            else:
                phases += [Phase("T2", r, c.t2, trains=(DENOISER,)), Phase("T3", r, c.t3, trains=(DETECTOR,))]
        return phases

    def _ndct_features(self, ndct: torch.Tensor):
        """Backbone/FPN features T(y) of the normal-dose batch ``(B,1,H,W)``, without gradient, in eval
        behaviour (identical to the frozen detector's training behaviour: its norm layers are in eval mode).

        Returns
        -------
        dict str -> Tensor
            FPN maps ``'0'...'pool'``, ``(B, 256, h, w)``, detached.
        """
        det = self.detector
        with torch.no_grad():
            det.eval()
            try:
                feats_fn = getattr(det, "features", None)
                if callable(feats_fn):
                    feats = feats_fn(ndct)
                else:
                    feats = det.rpn_topk(ndct, self.config.k_proposals).features
            finally:
                self._modes(True, False)
        return {k: v.detach() for k, v in feats.items()}

    def _denoiser_step(self, ldct, ndct, targets) -> tuple[dict[str, float], torch.Tensor]:
        """One denoiser update with the frozen detector: Eq. 8 (CNN form) or Eq. 5 (GAN form), terms reduced
        as ``config.loss_reduction`` says.

        Returns
        -------
        (dict str -> float, Tensor)
            The losses (``total, rec, roi, det``, the four detector losses; GAN: ``adv, critic, gp, wdist``)
            and F(x) ``(B,1,H,W)`` as computed before the update, detached.
        """
        c = self.config
        extra = self._critic_updates(ldct, ndct) if self.critic is not None else {}
        denoised = self.denoiser(ldct)
        loss_dict, rpn = self.detector.losses_and_rpn(denoised, targets, c.k_proposals)
        red = c.loss_reduction
        if c.perceptual == "none":
            perc, lam = denoised.new_zeros(()), 0.0
        else:
            feat_nd = self._ndct_features(ndct)
            if c.perceptual == "global":
                perc = global_perceptual_loss(rpn.features, feat_nd, reduction=red)
            else:
                perc = roi_perceptual_loss(rpn.features, feat_nd, rpn.proposals, rpn.image_sizes, reduction=red)
            lam = c.lambda_roi
        rec = recon_loss(denoised, ndct, reduction=red)
        det = detection_loss(loss_dict)
        total, parts = lidnet_generator_loss(rec, perc, det, lam, c.lambda_det)
        terms = {"rec": rec, "roi": float(lam) * perc, "det": float(c.lambda_det) * det}
        if self.critic is not None:
            total = self._with_adversarial(total, parts, denoised, c.lambda_adv)
            terms["adv"] = total - rec - terms["roi"] - terms["det"]
        self._optimizer_step(self.opt_denoiser, total, self.denoiser, terms=terms)
        parts.update({k: float(v.detach()) for k, v in loss_dict.items()})
        parts.update(extra)
        return parts, denoised.detach()

    def _train_step(self, phase: Phase, batch) -> dict[str, float]:
        ldct, ndct, targets = batch
        if phase.name == "T1":
            return detector_update(self, ndct, targets)
        if phase.name == "T3":
            with torch.no_grad():
                denoised = self.denoiser(ldct)
            return detector_update(self, denoised.detach(), targets)
        if phase.name == "T2":
            return self._denoiser_step(ldct, ndct, targets)[0]
        if phase.name == "joint":
            parts, denoised = self._denoiser_step(ldct, ndct, targets)
            self._modes(False, True)
            parts["det_update"] = detector_update(self, denoised, targets)["det"]
            return parts
        raise LidnetError(f"Unknown phase {phase.name}")  # pragma: no cover
