"""MAP-NN, the modularized adaptive processing neural network (a LIDnet baseline).

Source: H. Shan et al., "Competitive performance of a modularized deep neural network compared to
commercial algorithms for low-dose CT image reconstruction", Nature Machine Intelligence 1:269-276, 2019.
Checked against the authors' code (github.com/hmshan/MAP-NN, ``models.py``): every module is a CPCE-2D
(:class:`~src_training.models.cpce.CPCE`) with an input shortcut ``x <- clip(relu(x + module(x)), 0, 1)``;
the modules SHARE their weights (the same variable names are reused under ``tf.AUTO_REUSE``). The code's
default depth is 5 modules; we default to 3 (the depth used for the LIDnet comparison per this project's
brief; the paper lets the depth vary). Parameters: 62,016 whatever the depth (shared). Published loss:
WGAN-GP + 50 MSE + 50 Sobel edge loss (:mod:`src_training.losses.published`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import check_input, pad_to_min
from .cpce import CPCE

__all__ = ["MAPNN"]


class MAPNN(nn.Module):
    """Modularized adaptive processing neural network (MAP-NN), Shan et al., Nature Machine Intelligence 1, 2019.

    Architecture (authors' code, ``models.py``)::

        x_0 = x;  x_t = clip(relu(x_{t-1} + CPCE(x_{t-1})), 0, 1),  t = 1..modules;  out = x_T

    where ``CPCE`` is the conveying-path encoder-decoder of :class:`~src_training.models.cpce.CPCE`
    (4 conv + 4 deconv, 32 filters, 3x3, valid padding, no bias, three 1x1 conveying-path convs). The
    modules share ONE set of weights, as in the authors' code. The clip to [0, 1] after every module is
    the authors'.

    Parameters
    ----------
    modules : int
        Number of (weight-shared) modules, >= 1 (default 3; the authors' code uses 5).
    filters, kernel_size : int
        Of the CPCE module (paper: 32, 3).
    zero_init_last : bool
        Zero-initialise the module's last deconvolution: every module, hence the network, is then the
        identity on [0, 1] inputs.

    Shapes
    ------
    input ``(B, 1, H, W)`` float32 in [0, 1]; output ``(B, 1, H, W)`` float32 in [0, 1]. Inputs smaller
    than 9 pixels are replicate-padded internally and cropped back.

    Raises
    ------
    ConfigError
        ``modules < 1`` or invalid module options.
    ValueError
        If the input is not a floating ``(B, 1, H, W)`` tensor.

    Notes
    -----
    Parameters with the defaults: 62,016 for any number of modules (shared weights).
    ``residual(x)`` returns the total correction ``G(x) - x``, so ``relu(x + residual(x)) == G(x)``.
    """

    def __init__(self, modules: int = 3, filters: int = 32, kernel_size: int = 3, zero_init_last: bool = True):
        super().__init__()
        if int(modules) < 1:
            raise ConfigError(f"MAPNN needs modules >= 1, got {modules}")
        self.n_modules = int(modules)
        self.module = CPCE(filters=filters, kernel_size=kernel_size, zero_init_last=zero_init_last)
        self.min_size = self.module.min_size

    def _cascade(self, x: Tensor) -> Tensor:
        xp, h, w = pad_to_min(x, self.min_size)
        for _ in range(self.n_modules):
            xp = torch.clamp(F.relu(xp + self.module.residual(xp)), 0.0, 1.0)
        return xp[..., :h, :w]

    def residual(self, x: Tensor) -> Tensor:
        """Total correction ``G(x) - x`` of the module cascade, ``(B, 1, H, W)`` -> ``(B, 1, H, W)``."""
        return self._cascade(x) - x

    def forward(self, x: Tensor) -> Tensor:
        """Denoise ``x`` ``(B, 1, H, W)`` [0, 1] -> ``(B, 1, H, W)`` in [0, 1] (``modules`` shared CPCE steps)."""
        check_input(x, "MAPNN")
        return self._cascade(x)
