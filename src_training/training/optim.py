"""One optimizer update of any network of a trainer, and mixed precision.

Owns the order of an update (divergence check, ``zero_grad``, backward or per-term gradients, gradient
averaging over torchrun ranks, loss-scale handling, clipping, step: :func:`optimizer_step`) and the
mixed-precision policy of ``config.amp`` (:func:`amp_dtype`, :class:`MixedPrecision`: autocast dtype and one
``GradScaler`` per optimizer). The trainers reach it through
:meth:`src_training.training.engine.TrainerEngine._optimizer_step`.

Multi-process: the gradients of the updated network's trainable parameters (and the running statistics of its
BatchNorm layers in training mode) are averaged with one explicit, flattened all-reduce
(:func:`src_training.distributed.average_gradients_`) rather than by wrapping the networks in
DistributedDataParallel, because DDP cannot express LIDnet's paths: the frozen detector is called through
``losses_and_rpn``/``rpn_topk`` (not ``forward``), networks are frozen and unfrozen per phase (DDP fixes its
synchronised parameters at wrap time), the WGAN-GP critic needs ``autograd.grad`` (double backward,
unsupported by DDP) and is called several times per step, and checkpoints keep the bare modules. Every rank
updates the same network at the same step (lockstep schedule), so the collectives match. The divergence check
is agreed too: a non-finite loss on any rank stops every rank.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import nn

from src_training import distributed as _dist
from src_training.config import TrainConfig
from src_training.errors import LidnetError
from src_training.gradients import term_gradients


def amp_dtype(device: torch.device, enabled: bool) -> Optional[torch.dtype]:
    """Autocast dtype of mixed-precision training (``config.amp``).

    Returns
    -------
    torch.dtype or None
        ``torch.bfloat16`` on a CUDA GPU that supports it (no loss scaling needed), else ``torch.float16``
        (with a GradScaler); None (fp32) when disabled or the device is not CUDA.
    """
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class MixedPrecision:
    """Autocast context and loss scalers of one trainer (``config.amp`` on CUDA; inert otherwise).

    Parameters
    ----------
    device : torch.device
        The training device.
    enabled : bool
        ``config.amp``.
    """

    def __init__(self, device: torch.device, enabled: bool):
        self.device = device
        #: Autocast dtype (:func:`amp_dtype`); None = fp32.
        self.dtype = amp_dtype(device, enabled)
        self._scalers: dict[int, Any] = {}

    def autocast(self):
        """``torch.autocast`` context of a training step with AMP; a null context otherwise."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self, opt: torch.optim.Optimizer):
        """The GradScaler of ``opt`` with fp16 autocast (one per optimizer, so several optimizers may step in
        one training step); None otherwise (fp32, or bf16 which needs no loss scaling)."""
        if self.dtype != torch.float16:
            return None
        key = id(opt)
        if key not in self._scalers:
            self._scalers[key] = torch.amp.GradScaler("cuda")
        return self._scalers[key]


def diverged_error(loss: torch.Tensor, step: int, config: TrainConfig, rank: Optional[int] = None) -> LidnetError:
    """The error of a run whose ``loss`` became NaN/inf at ``step`` (1-based global step; ``rank`` under
    torchrun), telling what to change (learning rates, optimizer, clipping) and to resume."""
    where = f" on rank {rank}" if rank is not None else ""
    return LidnetError(
        f"Training diverged at step {step} (loss = {float(loss.detach())}{where}). Lower the learning rate "
        f"(lr_detector {config.lr_detector:g}, lr_denoiser {config.lr_denoiser:g}), try "
        f"detector_optimizer 'sgd' or set grad_clip_norm, then resume from the last checkpoint."
    )


def optimizer_step(
    opt: torch.optim.Optimizer,
    loss: torch.Tensor,
    module: nn.Module,
    *,
    precision: MixedPrecision,
    distributed: bool,
    grad_clip_norm: Optional[float],
    diverged: Callable[[torch.Tensor], Exception],
    terms: Optional[dict[str, torch.Tensor]] = None,
    measure_shares: bool = False,
    on_shares: Optional[Callable[[dict[str, float]], None]] = None,
) -> None:
    """Back-propagate ``loss`` and update ``module``'s trainable parameters with ``opt``.

    Order: divergence check, ``zero_grad``, backward (loss scaled by the optimizer's GradScaler with fp16
    AMP), gradient averaging over the ranks when ``distributed``
    (:func:`src_training.distributed.average_gradients_`), unscale, clipping to ``grad_clip_norm`` (L2 norm
    over the trainable parameters), step (skipped by the scaler when fp16 gradients overflowed).

    Parameters
    ----------
    opt : Optimizer
    loss : Tensor
        Scalar loss (any float dtype).
    module : nn.Module
        The network ``opt`` updates.
    precision : MixedPrecision
    distributed : bool
        Under torchrun (every rank must call this for the same module at the same step).
    grad_clip_norm : float or None
    diverged : callable
        ``diverged(loss) -> Exception`` raised for a non-finite loss.
    terms : dict str -> Tensor, optional
        The weighted loss terms whose sum is ``loss`` (denoiser steps).
    measure_shares : bool
        With more than one term: back-propagate the terms one by one
        (:func:`src_training.gradients.term_gradients`); the gradients are then their sum (as
        ``loss.backward()``) and each term's share of the gradient norm is passed to ``on_shares``.
    on_shares : callable, optional
        ``on_shares(shares)`` receives the new gradient shares (dict term -> share, sum 1) before the update
        is applied: the measured ones, or ``{term: 1.0}`` for a single term; not called otherwise.

    Raises
    ------
    Exception
        ``diverged(loss)`` when the loss is NaN/inf (on any rank when ``distributed``).
    """
    local_bad = not bool(torch.isfinite(loss.detach()))
    if local_bad and not distributed:
        raise diverged(loss)
    opt.zero_grad(set_to_none=True)
    scaler = precision.scaler(opt)
    if terms is not None and len(terms) > 1 and measure_shares:
        params = [p for p in module.parameters() if p.requires_grad]
        scaled = {k: (scaler.scale(v) if scaler is not None else v) for k, v in terms.items()}
        tg = term_gradients(scaled, params)
        for p, g in zip(params, tg.total):
            p.grad = None if g is None else g.detach()
        if on_shares is not None:
            on_shares(tg.shares)
    else:
        if terms is not None and len(terms) == 1 and on_shares is not None:
            on_shares({next(iter(terms)): 1.0})
        (scaler.scale(loss) if scaler is not None else loss).backward()
    if distributed and _dist.average_gradients_(module, local_nonfinite=local_bad):
        raise diverged(loss)
    if scaler is not None:
        scaler.unscale_(opt)
    if grad_clip_norm is not None:
        nn.utils.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], grad_clip_norm)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
