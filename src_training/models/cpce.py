"""CPCE-2D, the conveying-path convolutional encoder-decoder (a LIDnet baseline; also MAP-NN's module).

Source: H. Shan et al., "3-D convolutional encoder-decoder network for low-dose CT via transfer learning
from a 2-D trained network", IEEE TMI 37(6):1522-1534, 2018 (Fig. 2, CPCE-2D): 4 conv (32 filters, 3x3,
no padding) + 4 deconv layers; three conveying paths concatenate the encoder maps conv3/conv2/conv1 with
deconv1/deconv2/deconv3 and reduce them to 32 channels with 1x1 convolutions; the last deconvolution gives
1 channel. Layers have no bias (as in the authors' code). The paper's CPCE-2D has no input->output
shortcut; we add one (the authors' ``CPCE_2D_shortcut`` variant) so that every denoiser here is residual.
Parameter count: 62,016. Published loss: WGAN-GP + 0.1 x VGG19 perceptual
(:mod:`src_training.losses.published`). Conventions: :mod:`src_training.models.base`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import ResidualDenoiser, check_odd_kernel

__all__ = ["CPCE"]


class CPCE(ResidualDenoiser):
    """Conveying-path convolutional encoder-decoder, 2-D version (CPCE-2D), Shan et al., IEEE TMI 37(6), 2018.

    Architecture (Fig. 2 of the paper, layer naming of the authors' code)::

        x -> conv1 -> conv2 -> conv3 -> conv4              (3x3 valid convs, ReLU after each)
          -> deconv1 -> cat(conv3 map) -> ReLU -> 1x1 conv (-> 32) -> ReLU
          -> deconv2 -> cat(conv2 map) -> ReLU -> 1x1 conv (-> 32) -> ReLU
          -> deconv3 -> cat(conv1 map) -> ReLU -> 1x1 conv (-> 32) -> ReLU
          -> deconv4 (-> 1 channel) (+ x) -> ReLU -> out

    No biases (as in the authors' implementation). The input shortcut ``+ x`` is our addition (the
    authors' ``CPCE_2D_shortcut`` variant; the paper's CPCE-2D ends with ``relu(deconv4)``).

    Parameters
    ----------
    filters : int
        Channels of the hidden layers (paper: 32).
    kernel_size : int
        Kernel size of the (de)convolutions (paper: 3).
    zero_init_last : bool
        Zero-initialise the last transposed convolution (identity at initialisation).

    Shapes
    ------
    input ``(B, 1, H, W)`` float32 in [0, 1]; output ``(B, 1, H, W)`` float32 >= 0. Inputs smaller than
    ``4 * (kernel_size - 1) + 1`` (9) pixels are replicate-padded internally and cropped back.

    Raises
    ------
    ConfigError
        ``filters < 1`` or an even/non-positive ``kernel_size`` (at construction).
    ValueError
        If the input is not a floating ``(B, 1, H, W)`` tensor (in ``forward``).

    Notes
    -----
    Parameters with the defaults: 62,016.
    """

    def __init__(self, filters: int = 32, kernel_size: int = 3, zero_init_last: bool = True):
        super().__init__()
        check_odd_kernel("CPCE", filters, kernel_size)
        k, c = kernel_size, filters
        self.filters = filters
        self.kernel_size = k
        self.min_size = 4 * (k - 1) + 1
        self.conv1 = nn.Conv2d(1, c, k, bias=False)
        self.conv2 = nn.Conv2d(c, c, k, bias=False)
        self.conv3 = nn.Conv2d(c, c, k, bias=False)
        self.conv4 = nn.Conv2d(c, c, k, bias=False)
        self.deconv1 = nn.ConvTranspose2d(c, c, k, bias=False)
        self.path1 = nn.Conv2d(2 * c, c, 1, bias=False)  # conveying path conv3 -> deconv1
        self.deconv2 = nn.ConvTranspose2d(c, c, k, bias=False)
        self.path2 = nn.Conv2d(2 * c, c, 1, bias=False)  # conveying path conv2 -> deconv2
        self.deconv3 = nn.ConvTranspose2d(c, c, k, bias=False)
        self.path3 = nn.Conv2d(2 * c, c, 1, bias=False)  # conveying path conv1 -> deconv3
        self.deconv4 = nn.ConvTranspose2d(c, 1, k, bias=False)
        if zero_init_last:
            nn.init.zeros_(self.deconv4.weight)

    def residual(self, x: Tensor) -> Tensor:
        """The encoder-decoder branch ``f(x)`` (before the input shortcut and the final ReLU).

        Input ``(B, 1, H, W)`` with H, W >= :attr:`min_size`; output ``(B, 1, H, W)``.
        """
        e1 = F.relu(self.conv1(x))
        e2 = F.relu(self.conv2(e1))
        e3 = F.relu(self.conv3(e2))
        e4 = F.relu(self.conv4(e3))
        d = F.relu(torch.cat([e3, self.deconv1(e4)], dim=1))
        d = F.relu(self.path1(d))
        d = F.relu(torch.cat([e2, self.deconv2(d)], dim=1))
        d = F.relu(self.path2(d))
        d = F.relu(torch.cat([e1, self.deconv3(d)], dim=1))
        d = F.relu(self.path3(d))
        return self.deconv4(d)
