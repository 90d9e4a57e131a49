"""2-D CT denoisers: RED-CNN and CPCE-2D here, and the registry :data:`DENOISERS` of every LIDnet baseline
(WGAN-VGG, MAP-NN, SSMS, Res-HLF, DCSCN/DCSWGAN are in :mod:`src_training.models.baselines`).

All networks take and return ``(B, 1, H, W)`` float32 tensors holding CT slices whose HU values were
clipped to the model range (``hu_range``, default ``(-1024, 1024)`` HU) and scaled to ``[0, 1]``
(see :func:`src_training.windowing.hu_to_unit`). The output has exactly the input's shape for any
``H, W`` (odd sizes included) and is *residual*: ``out = relu(x + f(x))`` where ``f`` is the
encoder-decoder. The last layer of ``f`` is zero-initialised by default, so a freshly built denoiser is
the identity on ``[0, 1]`` inputs (a safe start for LIDnet's collaborative training, where the detector
sees the denoised image from the first step). The output is >= 0 (final ReLU, as in both papers) and
is *not* clamped above 1; callers clip when converting back to HU.

Sources
-------
- RED-CNN: H. Chen et al., "Low-dose CT with a residual encoder-decoder convolutional neural network",
  IEEE TMI 36(12):2524-2535, 2017 (Fig. 1): 5 conv + 5 deconv layers, 96 filters, 5x5 kernels, stride 1,
  no padding, ReLU, three residual shortcuts (input -> output, conv2 -> deconv3, conv4 -> deconv1),
  added before the ReLU. Parameter count: 1,848,865 (paper: ~1.85 M).
- CPCE-2D: H. Shan et al., "3-D convolutional encoder-decoder network for low-dose CT via transfer
  learning from a 2-D trained network", IEEE TMI 37(6):1522-1534, 2018 (Fig. 2, CPCE-2D): 4 conv
  (32 filters, 3x3, no padding) + 4 deconv layers; three conveying paths concatenate the encoder maps
  conv3/conv2/conv1 with deconv1/deconv2/deconv3 and reduce them to 32 channels with 1x1 convolutions;
  the last deconvolution gives 1 channel. Layers have no bias (as in the authors' code). The paper's
  CPCE-2D has no input->output shortcut; we add one (the authors' ``CPCE_2D_shortcut`` variant) so that
  every denoiser here is residual. Parameter count: 62,016.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ._common import _check_input, _pad_to_min
from .baselines import DCSCN, MAPNN, SSMS, WGANVGG, ResHLF  # the other LIDnet baselines

__all__ = ["REDCNN", "CPCE", "WGANVGG", "MAPNN", "SSMS", "ResHLF", "DCSCN", "DENOISERS", "DISPLAY_NAMES",
           "display_name", "build_denoiser", "count_parameters"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``model``.

    Parameters
    ----------
    model : nn.Module
    trainable_only : bool
        Count only parameters with ``requires_grad=True``.

    Returns
    -------
    int
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class REDCNN(nn.Module):
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
    ValueError
        If the input is not a floating ``(B, 1, H, W)`` tensor.

    Notes
    -----
    Parameters with the defaults: 1,848,865 (the paper's ~1.85 M).
    """

    def __init__(self, filters: int = 96, kernel_size: int = 5, zero_init_last: bool = True):
        super().__init__()
        if filters < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"REDCNN needs filters >= 1 and an odd kernel_size, got {filters}, {kernel_size}")
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

    def forward(self, x: Tensor) -> Tensor:
        """Denoise ``x`` ``(B, 1, H, W)`` [0, 1] -> ``(B, 1, H, W)`` = ``relu(x + f(x))``."""
        _check_input(x, "REDCNN")
        xp, h, w = _pad_to_min(x, self.min_size)
        out = F.relu(xp + self.residual(xp))
        return out[..., :h, :w]


class CPCE(nn.Module):
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
    ValueError
        If the input is not a floating ``(B, 1, H, W)`` tensor.

    Notes
    -----
    Parameters with the defaults: 62,016.
    """

    def __init__(self, filters: int = 32, kernel_size: int = 3, zero_init_last: bool = True):
        super().__init__()
        if filters < 1 or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"CPCE needs filters >= 1 and an odd kernel_size, got {filters}, {kernel_size}")
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

    def forward(self, x: Tensor) -> Tensor:
        """Denoise ``x`` ``(B, 1, H, W)`` [0, 1] -> ``(B, 1, H, W)`` = ``relu(x + f(x))``."""
        _check_input(x, "CPCE")
        xp, h, w = _pad_to_min(x, self.min_size)
        out = F.relu(xp + self.residual(xp))
        return out[..., :h, :w]


DENOISERS: dict[str, type] = {
    "redcnn": REDCNN,
    "cpce": CPCE,
    "wganvgg": WGANVGG,
    "mapnn": MAPNN,
    "ssms": SSMS,
    "reshlf": ResHLF,
    "dcscn": DCSCN,
    "dcswgan": DCSCN,  # DCSCN generator trained as a WGAN-GP (same architecture, other published loss)
}
"""Registry of denoiser classes by lower-case name (the ``model`` field of ``denoiser.pt``). The published
training loss of each entry is :func:`src_training.baseline_losses.published_loss`."""

#: How each registry key is written in tables, layer names and reports (the one display-name table).
DISPLAY_NAMES: dict[str, str] = {"redcnn": "RED-CNN", "cpce": "CPCE", "wganvgg": "WGAN-VGG", "mapnn": "MAP-NN",
                                 "ssms": "SSMS", "reshlf": "Res-HLF", "dcscn": "DCSCN", "dcswgan": "DCSWGAN"}


def display_name(key: str) -> str:
    """Display name of a denoiser key (:data:`DISPLAY_NAMES`, else the class's ``display_name``, else the key)."""
    k = str(key).strip().lower()
    if k in DISPLAY_NAMES:
        return DISPLAY_NAMES[k]
    cls = DENOISERS.get(k)
    return str(getattr(cls, "display_name", None) or key)


def build_denoiser(name: str, **kwargs) -> nn.Module:
    """Build a denoiser by name.

    Parameters
    ----------
    name : str
        A key of :data:`DENOISERS` (case-insensitive): ``"redcnn"``, ``"cpce"``, ``"wganvgg"``, ``"mapnn"``,
        ``"ssms"``, ``"reshlf"``, ``"dcscn"``, ``"dcswgan"``.
    **kwargs
        Passed to the class (e.g. ``filters``, ``kernel_size``, ``zero_init_last``; see each class).

    Returns
    -------
    nn.Module
        A freshly initialised denoiser (identity on [0, 1] at init unless ``zero_init_last=False``).

    Raises
    ------
    ConfigError
        If ``name`` is unknown (the message lists the choices) or the keyword arguments are invalid.
    """
    key = str(name).strip().lower()
    if key not in DENOISERS:
        raise ConfigError(f"Unknown denoiser {name!r}; choose one of: {', '.join(sorted(DENOISERS))}.")
    try:
        return DENOISERS[key](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"Invalid options for denoiser {key!r}: {exc}") from exc
