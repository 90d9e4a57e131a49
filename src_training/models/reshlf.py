"""Res-HLF, "residual network trained with a hybrid loss function" (a LIDnet baseline).

The paper LIDnet cites under this name could NOT be retrieved when this was written; the structure here is
OUR stated reconstruction from the name (a residual CNN with identity-shortcut blocks, He et al., CVPR
2016, and a global input shortcut), not a verified copy of the paper's network. Parameters here: 592,065.
Published loss (our reading): MSE + (1 - SSIM) (:mod:`src_training.losses.published`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import ResidualDenoiser, check_odd_kernel

__all__ = ["ResBlock", "ResHLF"]


class ResBlock(nn.Module):
    """conv 3x3 -> ReLU -> conv 3x3, + identity, -> ReLU (He et al., CVPR 2016, Fig. 2), channels kept."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, k, padding=k // 2)
        self.conv2 = nn.Conv2d(c, c, k, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, c, H, W)`` -> ``(B, c, H, W)``."""
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ResHLF(ResidualDenoiser):
    """Residual network for LDCT denoising trained with a hybrid loss function (Res-HLF), as listed among
    the LIDnet baselines (Chen et al., ACM MM 2021).

    The source paper LIDnet cites for Res-HLF could not be retrieved while writing this; this class is OUR
    reconstruction from the name, NOT a verified copy: a residual CNN ::

        x -> conv 3x3 (-> 64), ReLU -> [residual block: conv-ReLU-conv + identity, ReLU] x 8
          -> conv 3x3 (-> 1) = f(x);   out = relu(x + f(x))

    and its "hybrid loss" is MSE + SSIM (see :func:`src_training.losses.published.published_loss`). Replace
    both once the paper is at hand.

    Parameters
    ----------
    filters : int
        Channels of the hidden layers (default 64).
    blocks : int
        Number of residual blocks (default 8).
    kernel_size : int
        Odd kernel size (default 3).
    zero_init_last : bool
        Zero-initialise the last conv (identity at initialisation).

    Shapes
    ------
    input ``(B, 1, H, W)`` float32 in [0, 1], any ``H, W >= 1``; output ``(B, 1, H, W)`` float32 >= 0.

    Raises
    ------
    ConfigError
        Invalid options. ValueError: input not a floating ``(B, 1, H, W)`` tensor.

    Notes
    -----
    Parameters with the defaults: 592,065.
    """

    def __init__(self, filters: int = 64, blocks: int = 8, kernel_size: int = 3, zero_init_last: bool = True):
        super().__init__()
        check_odd_kernel("ResHLF", filters, kernel_size)
        if blocks < 1:
            raise ConfigError(f"ResHLF needs blocks >= 1, got {blocks}")
        k = kernel_size
        self.head = nn.Conv2d(1, filters, k, padding=k // 2)
        self.blocks = nn.Sequential(*[ResBlock(filters, k) for _ in range(blocks)])
        self.tail = nn.Conv2d(filters, 1, k, padding=k // 2)
        if zero_init_last:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def residual(self, x: Tensor) -> Tensor:
        """``f(x)``: ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` (before the input shortcut and the final ReLU)."""
        return self.tail(self.blocks(F.relu(self.head(x))))
