"""RED-CNN, the residual encoder-decoder CNN denoiser (one of the LIDnet baselines; the project's default).

Source: H. Chen et al., "Low-dose CT with a residual encoder-decoder convolutional neural network",
IEEE TMI 36(12):2524-2535, 2017 (Fig. 1): 5 conv + 5 deconv layers, 96 filters, 5x5 kernels, stride 1,
no padding, ReLU, three residual shortcuts (input -> output, conv2 -> deconv3, conv4 -> deconv1), added
before the ReLU. Parameter count: 1,848,865 (paper: ~1.85 M). Published loss: MSE
(:mod:`src_training.losses.published`). Conventions (shapes, [0, 1] scale, identity at init):
:mod:`src_training.models.base`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .base import ResidualDenoiser, check_odd_kernel

__all__ = ["REDCNN"]


class REDCNN(ResidualDenoiser):
    """Residual encoder-decoder CNN (RED-CNN), Chen et al., IEEE TMI 36(12), 2017.

    Architecture (Fig. 1 of the paper)::

        x -> conv1 -> conv2 -> conv3 -> conv4 -> conv5             (5x5 valid convs, ReLU after each)
          -> deconv1 (+ conv4 map) -> ReLU -> deconv2 -> ReLU -> deconv3 (+ conv2 map) -> ReLU
          -> deconv4 -> ReLU -> deconv5 (+ x) -> ReLU -> out

    Every layer has ``filters`` (96) channels except the 1-channel input and output; kernels are 5x5,
    stride 1, no padding, so each conv shrinks H and W by 4 and each transposed conv restores 4.
    Shortcuts are added before the ReLU, as in the paper.

    Parameters
    ----------
    filters : int
        Channels of the hidden layers (paper: 96).
    kernel_size : int
        Kernel size (paper: 5).
    zero_init_last : bool
        Zero-initialise the last transposed convolution so the untrained network is the identity
        (``relu(x)``, i.e. ``x`` for inputs in [0, 1]). The paper used random Gaussian init.

    Shapes
    ------
    input ``(B, 1, H, W)`` float32 in [0, 1]; output ``(B, 1, H, W)`` float32 >= 0 (the denoised slice
    on the same scale). Inputs smaller than ``5 * (kernel_size - 1) + 1`` pixels (21 by default) are
    replicate-padded internally and cropped back.

    Raises
    ------
    ConfigError
        ``filters < 1`` or an even/non-positive ``kernel_size`` (at construction).
    ValueError
        If the input is not a floating ``(B, 1, H, W)`` tensor (in ``forward``).

    Notes
    -----
    Parameters with the defaults: 1,848,865 (the paper's ~1.85 M).
    """

    def __init__(self, filters: int = 96, kernel_size: int = 5, zero_init_last: bool = True):
        super().__init__()
        check_odd_kernel("REDCNN", filters, kernel_size)
        k = kernel_size
        self.filters = filters
        self.kernel_size = k
        self.min_size = 5 * (k - 1) + 1
        self.conv1 = nn.Conv2d(1, filters, k)
        self.conv2 = nn.Conv2d(filters, filters, k)
        self.conv3 = nn.Conv2d(filters, filters, k)
        self.conv4 = nn.Conv2d(filters, filters, k)
        self.conv5 = nn.Conv2d(filters, filters, k)
        self.deconv1 = nn.ConvTranspose2d(filters, filters, k)
        self.deconv2 = nn.ConvTranspose2d(filters, filters, k)
        self.deconv3 = nn.ConvTranspose2d(filters, filters, k)
        self.deconv4 = nn.ConvTranspose2d(filters, filters, k)
        self.deconv5 = nn.ConvTranspose2d(filters, 1, k)
        if zero_init_last:
            nn.init.zeros_(self.deconv5.weight)
            nn.init.zeros_(self.deconv5.bias)

    def residual(self, x: Tensor) -> Tensor:
        """The encoder-decoder branch ``f(x)`` (before the input shortcut and the final ReLU).

        Input ``(B, 1, H, W)`` with H, W >= :attr:`min_size`; output ``(B, 1, H, W)``.
        """
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        res2 = out
        out = F.relu(self.conv3(out))
        out = F.relu(self.conv4(out))
        res4 = out
        out = F.relu(self.conv5(out))
        out = F.relu(self.deconv1(out) + res4)
        out = F.relu(self.deconv2(out))
        out = F.relu(self.deconv3(out) + res2)
        out = F.relu(self.deconv4(out))
        return self.deconv5(out)
