"""TOD-Net's task-oriented denoiser training: :class:`TODNetTrainer`.

Source: Zhang et al., "Task-Oriented Low-Dose CT Image Denoising", MICCAI 2021. Owns TOD-Net's schedule
(optional T1 of the downstream network on NDCT, then T2 of the denoiser against the frozen downstream
network), its loss ``L = L_rec + lambda_task * L_task`` (:func:`~src_training.losses.todnet_loss`), the U-Net
segmenter variant and its ``segmenter.pt``, and loading a pretrained downstream network (``task_weights``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from src_training.checkpoint import load_checkpoint
from src_training.checkpoint_files import SegmenterCheckpoint, write_checkpoint
from src_training.errors import CheckpointError, LidnetError
from src_training.losses import detection_loss, dice_loss, recon_loss, todnet_loss
from src_training.models.detector import build_detector
from src_training.models.segmenter import boxes_to_masks, build_segmenter
from src_training.training.critic import CriticMixin
from src_training.training.engine import TrainerEngine
from src_training.training.events import SEGMENTER_FILE
from src_training.training.networks import cpu_state_dict
from src_training.training.schedule import DENOISER, DETECTOR, Phase


class TODNetTrainer(CriticMixin, TrainerEngine):
    """TOD-Net's task-oriented training (Zhang et al., "Task-Oriented Low-Dose CT Image Denoising", MICCAI
    2021): a FROZEN downstream network guides the denoiser, ``L = L_rec + lambda_task * L_task``
    (:func:`~src_training.losses.todnet_loss`; with ``form="gan"`` plus the WGAN-GP term as TOD-Net).

    ``config.task_network``:

    * ``"detector"``: the Faster R-CNN; ``L_task`` = its detection loss on F(x) (frozen, norm layers in
      eval mode, as LIDnet's T2).
    * ``"segmentation"``: a small 2-D U-Net (:mod:`src_training.models.segmenter`); ``L_task`` = Dice
      loss (:func:`~src_training.losses.dice_loss`) of its logits on F(x) against lesion masks made in
      the trainer from the target boxes: the ellipse inscribed in each box
      (:func:`~src_training.models.segmenter.boxes_to_masks`). Frozen in eval mode.

    Schedule: with ``config.task_weights`` (a ``detector.pt`` or ``segmenter.pt``) the downstream network
    is loaded and the run is one phase T2 (round 1) of ``effective_baseline_steps`` denoiser steps (the
    baseline's budget); without, a phase T1 first trains it on NDCT for ``t1`` steps (detector: Adam/SGD
    as LIDnet's T1; U-Net: Adam(lr_detector), Dice loss). Writes ``denoiser.pt`` (``method =
    "todnet"``) and the downstream network (``detector.pt`` or ``segmenter.pt``). Parameters as
    :class:`~src_training.training.lidnet.CollaborativeTrainer`, plus ``segmenter`` (a prebuilt U-Net,
    ``(B,1,H,W)`` -> logits ``(B,1,H,W)``). Step losses: T1 ``task`` (plus the four detector losses);
    T2 ``total, rec, task`` (plus the detector losses; GAN: ``adv, critic, gp, wdist``).

    Raises
    ------
    CheckpointError
        ``task_weights`` missing, corrupt or of the wrong kind/architecture.
    ConfigError
        Invalid configuration or dataset.
    """

    method = "todnet"
    uses_denoiser = True
    uses_detector = True

    def __init__(self, config, dataset, *, denoiser=None, detector=None, segmenter=None, device=None,
                 run_dir=None, critic=None):
        task = str(getattr(config, "task_network", "detector")).strip().lower()
        weights = getattr(config, "task_weights", None)
        #: True: the downstream network is the detector; False: the U-Net segmenter.
        self.uses_detector = task == "detector"
        if self.uses_detector and detector is None and weights is not None:
            detector = build_detector(getattr(config, "detector_backbone", "resnet50"), weights_path=weights)
            weights = None  # loaded
        super().__init__(config, dataset, denoiser=denoiser, detector=detector, device=device, run_dir=run_dir)
        if self.config.form == "gan":
            self._init_critic(critic)
        self.segmenter: Optional[nn.Module] = None
        if not self.uses_detector:
            self.segmenter = (segmenter if segmenter is not None else build_segmenter()).to(self.device)
            self.opt_segmenter = torch.optim.Adam(self.segmenter.parameters(), lr=self.config.lr_detector)
            self._register_aux("segmenter", self.segmenter, self.opt_segmenter)
        if weights is not None:
            self._load_task_weights(weights)

    def _load_task_weights(self, path: str) -> None:
        """Load the U-Net (or detector) weights of ``path`` (a ``segmenter.pt`` / ``detector.pt``).

        Raises
        ------
        CheckpointError
            Missing, refused or corrupt file, another kind, or weights that do not fit.
        """
        ckpt = load_checkpoint(path)
        kind = "detector" if self.uses_detector else "segmenter"
        net = self.detector if self.uses_detector else self.segmenter
        sd = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
        if ckpt.get("kind") != kind or not isinstance(sd, dict):
            raise CheckpointError(
                f"task_weights {path} is not a {kind} checkpoint (kind={ckpt.get('kind')!r}); give the {kind}.pt of "
                f"a training run or leave task_weights empty to train the {kind} on NDCT first."
            )
        try:
            net.load_state_dict(sd)
        except (RuntimeError, ValueError) as exc:
            raise CheckpointError(f"task_weights {path} does not fit this {kind} ({exc}).") from exc

    def _schedule(self) -> list[Phase]:
        """[T1 (the downstream network on NDCT; only without ``task_weights``)], T2 (the denoiser, round 1)."""
        c = self.config
        phases = [] if c.task_weights is not None else [Phase("T1", 0, c.t1, trains=(DETECTOR,))]
        return phases + [Phase("T2", 1, c.effective_baseline_steps, trains=(DENOISER,))]

    def _modes(self, train_denoiser: bool, train_detector: bool) -> None:
        """As the engine's, and the U-Net follows ``train_detector`` (train behaviour and gradients)."""
        super()._modes(train_denoiser, train_detector)
        if self.segmenter is not None:
            self.segmenter.train(train_detector)
            for p in self.segmenter.parameters():
                p.requires_grad_(train_detector)

    def _task_loss(self, images: torch.Tensor, targets) -> tuple[torch.Tensor, dict[str, float]]:
        """``L_task`` of ``images`` ``(B,1,H,W)`` in [0, 1]: the detection loss (and its four parts) or the Dice
        loss of the U-Net's logits against the boxes' inscribed ellipses (no parts)."""
        if self.segmenter is None:
            loss_dict = self.detector(images, targets)
            return detection_loss(loss_dict), {k: float(v.detach()) for k, v in loss_dict.items()}
        masks = boxes_to_masks([t["boxes"] for t in targets], images.shape[-2], images.shape[-1], images.device)
        return dice_loss(self.segmenter(images), masks), {}

    def _train_step(self, phase: Phase, batch) -> dict[str, float]:
        ldct, ndct, targets = batch
        if phase.name == "T1":
            loss, parts = self._task_loss(ndct, targets)
            opt, net = (self.opt_detector, self.detector) if self.segmenter is None else (self.opt_segmenter,
                                                                                         self.segmenter)
            self._optimizer_step(opt, loss, net)
            return {"task": float(loss.detach()), **parts}
        extra = self._critic_updates(ldct, ndct) if self.critic is not None else {}
        denoised = self.denoiser(ldct)
        task, task_parts = self._task_loss(denoised, targets)
        rec = recon_loss(denoised, ndct, reduction=self.config.loss_reduction)
        total, parts = todnet_loss(rec, task, self.config.lambda_task)
        terms = {"rec": rec, "task": float(self.config.lambda_task) * task}
        if self.critic is not None:
            total = self._with_adversarial(total, parts, denoised, self.config.lambda_adv)
            terms["adv"] = total - rec - terms["task"]
        self._optimizer_step(self.opt_denoiser, total, self.denoiser, terms=terms)
        parts.update(task_parts)
        parts.update(extra)
        return parts

    def segmenter_checkpoint(self) -> SegmenterCheckpoint:
        """``segmenter.pt``: ``{"kind": "segmenter", "model": "unet2d", "hparams", "state_dict", "config",
        "method": "todnet", "step"}`` (loadable as ``task_weights``).

        Raises
        ------
        LidnetError
            The run uses the detector, not a segmenter.
        """
        if self.segmenter is None:
            raise LidnetError("This TOD-Net run uses the detector, not a segmenter.")
        return SegmenterCheckpoint(model="unet2d", state_dict=cpu_state_dict(self.segmenter),
                                   hparams=dict(getattr(self.segmenter, "hparams", {})), config=self.config.to_dict(),
                                   method="todnet", step=int(self.global_step))

    def save_models(self, run_dir: Optional[str | os.PathLike] = None) -> list[Path]:
        """``denoiser.pt`` and the downstream network (``detector.pt`` or ``segmenter.pt``), atomically."""
        paths = super().save_models(run_dir)
        if self.segmenter is not None:
            out = Path(run_dir) if run_dir is not None else self.run_dir
            paths.append(write_checkpoint(out / SEGMENTER_FILE, self.segmenter_checkpoint()))
        return paths
