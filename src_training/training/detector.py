"""Detector training: the detector update of Algorithm 1's T1/T3 phases, and the NDCT-only detector.

Owns :func:`detector_update` (one optimizer step of the detector with the Faster R-CNN detection loss, used
by LIDnet's T1 and T3 phases and by :class:`DetectorTrainer`), :class:`DetectorTrainer` (phase T1 of
Algorithm 1 of Chen et al., ACM MM 2021, on its own: the evaluation's "detector trained on NDCT") and
:func:`train_detector`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from src_training.config import TrainConfig
from src_training.losses import detection_loss
from src_training.training.engine import TrainerEngine
from src_training.training.schedule import DETECTOR, Phase


def detector_update(trainer: TrainerEngine, images: torch.Tensor, targets) -> dict[str, float]:
    """One detector step: losses of ``trainer.detector`` (training behaviour) on ``images``, then
    ``trainer.opt_detector`` updates it with their sum (:func:`~src_training.losses.detection_loss`).

    Parameters
    ----------
    trainer : TrainerEngine
        A trainer with a detector following the ``LesionDetector`` contract (``forward(images, targets)`` ->
        loss dict).
    images : Tensor
        ``(B,1,H,W)`` float32 in [0, 1]: NDCT y (T1) or denoised F(x) without gradient (T3).
    targets : list of dict
        ``boxes (n,4) float32 xyxy pixels``, ``labels (n,) int64`` per image.

    Returns
    -------
    dict str -> float
        ``det`` (the summed detection loss) and the four detector losses (``loss_classifier``,
        ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``).

    Raises
    ------
    LidnetError
        The loss is not finite (training diverged).
    """
    loss_dict = trainer.detector(images, targets)
    loss = detection_loss(loss_dict)
    trainer._optimizer_step(trainer.opt_detector, loss, trainer.detector)
    out = {"det": float(loss.detach())}
    out.update({k: float(v.detach()) for k, v in loss_dict.items()})
    return out


class DetectorTrainer(TrainerEngine):
    """A detector trained on normal-dose images only (phase T1 of Algorithm 1 on its own, ``config.t1``
    steps, detection loss): the evaluation's "detector trained on NDCT". Writes ``detector.pt``
    (``method = "ndct"``) and no denoiser.

    Parameters
    ----------
    config, dataset, detector, device, run_dir
        As :class:`~src_training.training.engine.TrainerEngine` (and
        :class:`~src_training.training.lidnet.CollaborativeTrainer`).
    denoiser : ignored
        Accepted so that every trainer of ``TRAINERS`` takes the same arguments.

    Raises
    ------
    ConfigError
        Invalid configuration or dataset.
    CheckpointError
        ``config.detector_weights`` cannot be loaded (when no detector is given).
    """

    method = "detector"
    detector_method = "ndct"
    uses_denoiser = False
    uses_detector = True

    def __init__(self, config, dataset, *, denoiser=None, detector=None, device=None, run_dir=None):
        super().__init__(config, dataset, detector=detector, device=device, run_dir=run_dir)

    def _schedule(self) -> list[Phase]:
        return [Phase("T1", 0, self.config.t1, trains=(DETECTOR,))]

    def _train_step(self, phase: Phase, batch) -> dict[str, float]:
        _, ndct, targets = batch
        return detector_update(self, ndct, targets)


def train_detector(
    config: TrainConfig, dataset: Dataset, *, detector=None, device=None, run_dir=None
) -> nn.Module:
    """Train a detector on NDCT for ``config.t1`` steps (Algorithm 1, T1) and return it.

    With ``run_dir`` the usual ``progress.jsonl``/``detector.pt``/``trainer_state.pt`` are written.
    Raises what :meth:`DetectorTrainer.run` raises.
    """
    trainer = DetectorTrainer(config, dataset, detector=detector, device=device, run_dir=run_dir)
    for _ in trainer.run():
        pass
    return trainer.detector
