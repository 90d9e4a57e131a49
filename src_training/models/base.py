"""Shared pieces of the 2-D denoisers: input checks, padding, parameter count and the residual base class.

Every denoiser of :mod:`src_training.models` (one module per network: :mod:`.redcnn`, :mod:`.cpce`,
:mod:`.wganvgg`, :mod:`.ssms`, :mod:`.mapnn`, :mod:`.dcscn`, :mod:`.reshlf`; the table of all of them is
:mod:`.registry`) follows one convention:

- input and output are ``(B, 1, H, W)`` float32 tensors of CT slices whose HU values were clipped to the
  model range (``hu_range``, default ``(-1024, 1024)`` HU) and scaled to ``[0, 1]``
  (:func:`src_training.windowing.hu_to_unit`);
- the output has exactly the input's shape for any ``H, W`` (odd sizes included); networks with valid
  (unpadded) convolutions replicate-pad inputs smaller than their ``min_size`` and crop back;
- the network is *residual*, ``out = relu(x + f(x))`` with ``f = residual``, and the last layer of ``f`` is
  zero-initialised by default, so a freshly built denoiser is the identity on ``[0, 1]`` inputs (a safe
  start for LIDnet's collaborative training, where the detector sees the denoised image from the first
  step). The output is >= 0 and is *not* clamped above 1 (MAP-NN's cascade is, as its authors'); callers
  clip when converting back to HU.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["ResidualDenoiser", "check_input", "check_odd_kernel", "count_parameters", "pad_to_min"]


def check_input(x: Tensor, name: str) -> None:
    """Check that ``x`` is a floating ``(B, 1, H, W)`` tensor (CT slices on the [0, 1] scale).

    Raises
    ------
    ValueError
        Not a tensor, not 4-D with one channel, or not floating point (``name`` is in the message).
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects a (B, 1, H, W) tensor of [0, 1] CT slices, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} expects a floating-point tensor scaled to [0, 1], got dtype {x.dtype}")


def pad_to_min(x: Tensor, min_size: int) -> tuple[Tensor, int, int]:
    """Replicate-pad ``x`` ``(B, C, H, W)`` at the bottom/right so that H, W >= ``min_size`` pixels.

    Returns ``(padded, H, W)`` with the original ``H, W`` (crop with ``out[..., :H, :W]``); ``x`` itself
    when no padding is needed.
    """
    h, w = x.shape[-2:]
    ph, pw = max(0, min_size - h), max(0, min_size - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, h, w


def check_odd_kernel(name: str, filters: int, kernel_size: int) -> None:
    """Raise :class:`~src_training.errors.ConfigError` unless ``filters >= 1`` and ``kernel_size`` is odd, >= 1."""
    if filters < 1 or kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"{name} needs filters >= 1 and an odd kernel_size, got {filters}, {kernel_size}")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model`` (only those with ``requires_grad=True`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class ResidualDenoiser(nn.Module):
    """Base class of the residual denoisers: ``forward(x) = relu(x + residual(x))``, same shape as ``x``.

    Subclasses implement :meth:`residual` (``f(x)``, ``(B, 1, H, W) -> (B, 1, H, W)`` for H, W >=
    :attr:`min_size`) and set :attr:`min_size` (pixels; 1 for 'same'-padded networks). The base class adds
    the input check, the replicate padding of small inputs and the crop back. It holds no parameters (the
    state-dict keys are the subclass's).

    Raises (``forward``)
    --------------------
    ValueError
        If the input is not a floating ``(B, 1, H, W)`` tensor.
    """

    #: Smallest H, W (pixels) :meth:`residual` accepts; smaller inputs are replicate-padded in ``forward``.
    min_size: int = 1

    def residual(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``f(x)``: ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` (before the input shortcut and the final ReLU)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Denoise ``x`` ``(B, 1, H, W)`` float32 [0, 1] -> ``(B, 1, H, W)`` = ``relu(x + f(x))`` (>= 0)."""
        check_input(x, type(self).__name__)
        xp, h, w = pad_to_min(x, self.min_size)
        out = F.relu(xp + self.residual(xp))
        return out[..., :h, :w]
