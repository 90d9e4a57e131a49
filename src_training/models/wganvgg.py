"""WGAN-VGG generator (a LIDnet baseline) and the plain 'same'-padded CNN it shares with SSMS.

Source: Q. Yang et al., "Low-dose CT image denoising using a generative adversarial network with
Wasserstein distance and perceptual loss", IEEE TMI 37(6), 2018: generator of 8 conv layers, 3x3, 32
filters in the 7 hidden layers, 1 in the last, ReLU. Parameters here: 56,097. The input shortcut is our
addition. Published loss: WGAN-GP + 0.1 x VGG19 perceptual (:mod:`src_training.losses.published`).
Conventions (shapes, [0, 1] scale, identity at init): :mod:`src_training.models.base`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .base import ResidualDenoiser, check_odd_kernel

__all__ = ["PlainCNN", "WGANVGG"]


class PlainCNN(ResidualDenoiser):
    """Plain stack of ``layers`` 'same'-padded convolutions with ReLU (the WGAN-VGG / SMGAN-2D generator).

    ``f(x)``: conv(1 -> filters) -> ReLU -> [conv(filters -> filters) -> ReLU] x (layers - 2) -> conv(filters -> 1).
    Output ``relu(x + f(x))`` (:class:`~src_training.models.base.ResidualDenoiser`). Zero padding
    (TensorFlow 'same', as in the original generators), bias on; any ``H, W >= 1``.

    Raises
    ------
    ConfigError
        Invalid ``filters``/``kernel_size`` or ``layers < 2``.
    """

    _name = "PlainCNN"

    def __init__(self, filters: int = 32, kernel_size: int = 3, layers: int = 8, zero_init_last: bool = True):
        super().__init__()
        check_odd_kernel(self._name, filters, kernel_size)
        if layers < 2:
            raise ConfigError(f"{self._name} needs layers >= 2, got {layers}")
        k, p = kernel_size, kernel_size // 2
        self.filters, self.kernel_size, self.layers = filters, k, layers
        convs = [nn.Conv2d(1, filters, k, padding=p)]
        convs += [nn.Conv2d(filters, filters, k, padding=p) for _ in range(layers - 2)]
        self.body = nn.ModuleList(convs)
        self.last = nn.Conv2d(filters, 1, k, padding=p)
        if zero_init_last:
            nn.init.zeros_(self.last.weight)
            nn.init.zeros_(self.last.bias)

    def residual(self, x: Tensor) -> Tensor:
        """``f(x)``: ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` (before the input shortcut and the final ReLU)."""
        out = x
        for conv in self.body:
            out = F.relu(conv(out))
        return self.last(out)


class WGANVGG(PlainCNN):
    """WGAN-VGG generator, Yang et al., IEEE TMI 37(6), 2018.

    Architecture::

        x -> [conv 3x3, 32, ReLU] x 7 -> conv 3x3 (-> 1) = f(x);   out = relu(x + f(x))

    'Same' zero padding, stride 1, biases. The paper's generator outputs ``relu(conv8(...))`` directly; the
    input shortcut ``x +`` is our addition (all denoisers here are residual and identity at init).
    Trained in the paper with WGAN-GP + 0.1 x VGG19 perceptual loss (see
    :func:`src_training.losses.published.published_loss`).

    Parameters
    ----------
    filters : int
        Channels of the hidden layers (paper: 32).
    kernel_size : int
        Odd kernel size (paper: 3).
    layers : int
        Number of conv layers including the last (paper: 8).
    zero_init_last : bool
        Zero-initialise the last conv (identity at initialisation).

    Shapes
    ------
    input ``(B, 1, H, W)`` float32 in [0, 1], any ``H, W >= 1``; output ``(B, 1, H, W)`` float32 >= 0.

    Raises
    ------
    ConfigError
        Invalid ``filters``/``kernel_size``/``layers``.
    ValueError
        If the input is not a floating ``(B, 1, H, W)`` tensor.

    Notes
    -----
    Parameters with the defaults: 56,097 (the paper gives no count).
    """

    _name = "WGANVGG"
