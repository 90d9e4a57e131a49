"""Training-mode helpers shared by the detectors (and used on the denoisers): freezing and eval behaviour.

LIDnet (Chen et al., ACM MM 2021, arXiv 2104.08845) trains the denoiser and the detector in turns: in phase
T2 the denoiser learns through a FROZEN detector whose losses are still computed with training behaviour.
:func:`set_frozen` freezes a network (no parameter updates, normalisation statistics kept);
:func:`eval_behaviour` and :func:`training_flag` switch the behaviour of a module for one ``with`` block
without the side effects of ``train()``/``eval()``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["NORM_TYPES", "eval_behaviour", "set_frozen", "set_norms_eval", "training_flag"]

#: Normalisation layer types whose statistics :func:`set_frozen` protects (BatchNorm/InstanceNorm, GroupNorm,
#: LayerNorm, torchvision's FrozenBatchNorm2d).
NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, FrozenBatchNorm2d)


@contextlib.contextmanager
def training_flag(module: nn.Module, mode: bool) -> Iterator[None]:
    """Context manager: set ``training`` of ``module`` and of every submodule to ``mode`` for the block, then
    restore each flag (without calling ``train()``, so subclasses' ``train`` overrides do not run)."""
    saved = [(m, m.training) for m in module.modules()]
    for m, _ in saved:
        m.training = mode
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def eval_behaviour(module: nn.Module):
    """Context manager: every submodule of ``module`` in eval behaviour for the ``with`` block, the training
    flags restored after (unlike ``module.eval()``, which would leave them off)."""
    return training_flag(module, False)


def set_norms_eval(module: nn.Module) -> None:
    """Put every normalisation layer (:data:`NORM_TYPES`) of ``module`` in eval mode (running stats fixed)."""
    for m in module.modules():
        if isinstance(m, NORM_TYPES):
            m.training = False


def set_frozen(module: nn.Module, frozen: bool) -> None:
    """Freeze or unfreeze a module (the detector or the denoiser) for collaborative training.

    Frozen: every parameter gets ``requires_grad=False`` and every normalisation layer is put in eval
    mode, so running statistics (BatchNorm ``running_mean``/``running_var``/``num_batches_tracked``) no
    longer change. Gradients still flow *through* the module to its inputs (LIDnet's T2 phase trains the
    denoiser through a frozen detector whose losses are computed in training mode). A
    :class:`~src_training.models.detector.LesionDetector` remembers the flag: a later ``train()`` keeps the
    norm layers of a frozen detector (or of any frozen submodule of it) in eval mode. For other module
    types, call ``set_frozen`` again after ``train()`` if they have norm layers (the denoisers here have
    none).

    Unfreezing restores ``requires_grad`` to what it was when the detector was built (layers that
    torchvision keeps frozen with ``trainable_layers < 5`` stay frozen: the module's ``_base_trainable``
    set of parameter names; for other modules all parameters become trainable) and lets the norm layers
    follow ``module.training`` again.

    Parameters
    ----------
    module : nn.Module
    frozen : bool
    """
    module._frozen = bool(frozen)
    base = getattr(module, "_base_trainable", None)
    for name, p in module.named_parameters():
        p.requires_grad_(False if frozen else (base is None or name in base))
    if frozen:
        set_norms_eval(module)
    else:
        for m in module.modules():
            if m is not module and getattr(m, "_frozen", False):
                m._frozen = False
        for m in module.modules():
            if isinstance(m, NORM_TYPES):
                m.training = module.training
