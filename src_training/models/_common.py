"""Shared input checks of the 2-D denoisers (:mod:`.denoisers`, :mod:`.baselines`)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def _check_input(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} expects a (B, 1, H, W) tensor of [0, 1] CT slices, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} expects a floating-point tensor scaled to [0, 1], got dtype {x.dtype}")


def _pad_to_min(x: Tensor, min_size: int) -> tuple[Tensor, int, int]:
    """Replicate-pad ``x`` (bottom/right) so that H, W >= ``min_size``; returns (padded, H, W)."""
    h, w = x.shape[-2:]
    ph, pw = max(0, min_size - h), max(0, min_size - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, h, w
