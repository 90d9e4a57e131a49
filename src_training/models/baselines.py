"""2-D baseline denoisers of the LIDnet paper (Chen et al., ACM MM 2021, arXiv:2104.08845,
experiments) besides RED-CNN and CPCE (those live in :mod:`src_training.models.denoisers`).

Every network follows the conventions of :mod:`src_training.models.denoisers`: input and output are
``(B, 1, H, W)`` float32 CT slices on the [0, 1] scale (HU clipped to ``hu_range`` and scaled), the output
has exactly the input's shape for any ``H, W`` (odd sizes included), and the network is *residual*,
``out = relu(x + f(x))``, with the last layer of ``f`` zero-initialised by default so that a freshly built
model is the identity on [0, 1] inputs. Every class has ``residual(x) -> f(x)``. Where a published network
has no input->output shortcut we add one (stated in each class docstring); the published loss of every
model is in :mod:`src_training.baseline_losses`.

Sources (what was checked, and how)
-----------------------------------
- WGAN-VGG: Q. Yang et al., "Low-dose CT image denoising using a generative adversarial network with
  Wasserstein distance and perceptual loss", IEEE TMI 37(6), 2018: generator of 8 conv
  layers, 3x3, 32 filters in the 7 hidden layers, 1 in the last, ReLU. Parameters here: 56,097.
- SSMS / SMGAN-2D: C. You et al., "Structurally-sensitive multi-scale deep neural network for low-dose CT
  denoising", IEEE Access 6, 2018. The multi-scale part is the (2-D/3-D) discriminator; the
  generator is the same 8-layer, 32-filter, 3x3 ReLU CNN as WGAN-VGG (the paper's 3-D generator uses
  3x3x3 kernels; the 2-D form uses 3x3). A public PyTorch re-implementation of SMGAN-2D was checked and
  matches. Parameters here: 56,097.
- MAP-NN: H. Shan et al., "Competitive performance of a modularized deep neural network compared to
  commercial algorithms for low-dose CT image reconstruction", Nature Machine Intelligence 1:269-276,
  2019. Checked against the authors' code (github.com/hmshan/MAP-NN, ``models.py``): every module is a
  CPCE-2D (4 conv + 4 deconv, 32 filters, 3x3, no bias, three conveying paths with 1x1 convs) with an
  input shortcut ``x <- clip(relu(x + module(x)), 0, 1)``; the modules SHARE their weights (the same
  variable names are reused under ``tf.AUTO_REUSE``). The code's default depth is 5 modules; we default to
  3 (the depth used for the LIDnet comparison per this project's brief; the paper lets the depth vary).
  Parameters: 62,016 whatever the depth (shared).
- DCSCN: J. Yamanaka, S. Kuwashima, T. Kurita, "Fast and accurate image super resolution by deep CNN with
  skip connection and network in network", ICONIP 2017, as applied to low-dose CT by C. You et al.
  ("Low-dose CT via deep CNN with skip connection and network-in-network", Proc. SPIE 11113, 2019 -- the
  LDCT adaptation's text was not available here; the architecture follows Yamanaka et al. and their code,
  github.com/jiny2001/dcscn-super-resolution). 12 feature-extraction 3x3 conv layers whose filter counts
  decay from 196 to 48 (gamma 1.5: 196,166,148,133,120,108,97,86,76,66,57,48), PReLU, all outputs
  concatenated (1,301 channels) -> network-in-network reconstruction A1 (1x1, 64) || B1 (1x1, 32) -> B2
  (3x3, 32) -> concat (96) -> 3x3 conv to 1 channel, + input skip. No up-sampling layer (scale 1:
  denoising). Parameters here: 1,422,782 (incl. 1,429 PReLU slopes).
- Res-HLF: "residual network trained with a hybrid loss function". The paper LIDnet cites under this name
  could NOT be retrieved here; the structure below is OUR stated reconstruction from the name (a residual
  CNN with identity-shortcut blocks and a global input shortcut), not a verified copy of the paper's
  network. Parameters here: 592,065.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

from ._common import _check_input, _pad_to_min

__all__ = ["WGANVGG", "SSMS", "MAPNN", "DCSCN", "ResHLF", "dcscn_filters"]


def _check_odd_kernel(name: str, filters: int, kernel_size: int) -> None:
    if filters < 1 or kernel_size < 1 or kernel_size % 2 == 0:
        raise ConfigError(f"{name} needs filters >= 1 and an odd kernel_size, got {filters}, {kernel_size}")


class _PlainCNN(nn.Module):
    """Plain stack of ``layers`` 'same'-padded convolutions with ReLU (the WGAN-VGG / SMGAN-2D generator).

    ``f(x)``: conv(1 -> filters) -> ReLU -> [conv(filters -> filters) -> ReLU] x (layers - 2) -> conv(filters -> 1).
    Output ``relu(x + f(x))``. Zero padding (TensorFlow 'same', as in the original generators), bias on.
    """

    _name = "PlainCNN"

    def __init__(self, filters: int = 32, kernel_size: int = 3, layers: int = 8, zero_init_last: bool = True):
        super().__init__()
        _check_odd_kernel(self._name, filters, kernel_size)
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

    def forward(self, x: Tensor) -> Tensor:
        """Denoise ``x`` ``(B, 1, H, W)`` [0, 1] -> ``(B, 1, H, W)`` = ``relu(x + f(x))`` (>= 0)."""
        _check_input(x, self._name)
        return F.relu(x + self.residual(x))


class WGANVGG(_PlainCNN):
    """WGAN-VGG generator, Yang et al., IEEE TMI 37(6), 2018.

    Architecture::

        x -> [conv 3x3, 32, ReLU] x 7 -> conv 3x3 (-> 1) = f(x);   out = relu(x + f(x))

    'Same' zero padding, stride 1, biases. The paper's generator outputs ``relu(conv8(...))`` directly; the
    input shortcut ``x +`` is our addition (all denoisers here are residual and identity at init).
    Trained in the paper with WGAN-GP + 0.1 x VGG19 perceptual loss (see
    :func:`src_training.baseline_losses.published_loss`).

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


class SSMS(_PlainCNN):
    """Structurally-sensitive multi-scale network (SMGAN generator, 2-D form), You et al., IEEE Access 6, 2018.

    Architecture: the same 8-layer CNN as :class:`WGANVGG` (``[conv 3x3, 32, ReLU] x 7 -> conv 3x3 -> 1``);
    the paper's 3-D version uses 3x3x3 kernels on a stack of slices, the 2-D form uses 3x3 kernels on one
    slice. "Multi-scale" in the paper refers to its discriminator, "structurally-sensitive" to the loss
    (SSIM + L1; see :func:`src_training.baseline_losses.published_loss`). The input shortcut ``x +`` is our
    addition.

    Parameters, shapes, errors: as :class:`WGANVGG`. Parameters with the defaults: 56,097.
    """

    _name = "SSMS"


class MAPNN(nn.Module):
    """Modularized adaptive processing neural network (MAP-NN), Shan et al., Nature Machine Intelligence 1, 2019.

    Architecture (authors' code, ``models.py``)::

        x_0 = x;  x_t = clip(relu(x_{t-1} + CPCE(x_{t-1})), 0, 1),  t = 1..modules;  out = x_T

    where ``CPCE`` is the conveying-path encoder-decoder of :class:`~src_training.models.denoisers.CPCE`
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
        from .denoisers import CPCE  # deferred: denoisers imports this module to build its registry

        self.n_modules = int(modules)
        self.module = CPCE(filters=filters, kernel_size=kernel_size, zero_init_last=zero_init_last)
        self.min_size = self.module.min_size

    def _cascade(self, x: Tensor) -> Tensor:
        xp, h, w = _pad_to_min(x, self.min_size)
        for _ in range(self.n_modules):
            xp = torch.clamp(F.relu(xp + self.module.residual(xp)), 0.0, 1.0)
        return xp[..., :h, :w]

    def residual(self, x: Tensor) -> Tensor:
        """Total correction ``G(x) - x`` of the module cascade, ``(B, 1, H, W)`` -> ``(B, 1, H, W)``."""
        return self._cascade(x) - x

    def forward(self, x: Tensor) -> Tensor:
        """Denoise ``x`` ``(B, 1, H, W)`` [0, 1] -> ``(B, 1, H, W)`` in [0, 1] (``modules`` shared CPCE steps)."""
        _check_input(x, "MAPNN")
        return self._cascade(x)


def dcscn_filters(layers: int = 12, first: int = 196, last: int = 48, gamma: float = 1.5) -> list[int]:
    """Filter counts of DCSCN's feature-extraction layers (Yamanaka et al. 2017 and their code).

    Layer 0 has ``first`` filters; layer ``i > 0`` has ``int((first - last) * (1 - (i / (layers - 1)) ** (1 /
    gamma)) + last)``. Defaults give ``[196, 166, 148, 133, 120, 108, 97, 86, 76, 66, 57, 48]``.

    Raises
    ------
    ConfigError
        ``layers < 2``, ``first < last`` or ``last < 1`` or ``gamma <= 0``.
    """
    if layers < 2 or last < 1 or first < last or gamma <= 0:
        raise ConfigError(f"DCSCN filter schedule needs layers >= 2, first >= last >= 1, gamma > 0; got "
                          f"{layers}, {first}, {last}, {gamma}")
    out = [int(first)]
    for i in range(1, layers):
        y = (i / float(layers - 1)) ** (1.0 / gamma)
        out.append(int((first - last) * (1 - y) + last))
    return out


class DCSCN(nn.Module):
    """Deep CNN with skip connection and network in network (DCSCN), Yamanaka et al., ICONIP 2017; applied
    to low-dose CT by You et al., SPIE 11113, 2019 (scale 1, no up-sampling).

    Architecture (Yamanaka et al.; layer names of their code)::

        x -> CNN1 .. CNN12 (3x3 'same', PReLU; 196 -> 48 filters, see dcscn_filters)
          -> concat(all 12 outputs) (1,301 ch)
          -> A1: 1x1 -> 64, PReLU                       \\
          -> B1: 1x1 -> 32, PReLU -> B2: 3x3 -> 32, PReLU  -> concat (96 ch)
          -> R: 3x3 conv -> 1 channel = f(x);   out = relu(x + f(x))

    The skip ``x +`` is the paper's (bicubic-upsampled input at scale 1 is the input itself); the final
    ReLU keeps outputs >= 0 like every denoiser here. Dropout (the paper trains with keep rate 0.8 after
    every layer) is off by default so that training-mode outputs are deterministic; pass ``dropout=0.2``
    for the paper's setting. PReLU slopes start at 0.1 (authors' code).

    Parameters
    ----------
    layers, first_filters, last_filters, gamma :
        Feature-extraction schedule (paper: 12, 196, 48, 1.5).
    nin_a, nin_b : int
        Filters of the network-in-network branches A1 and B1/B2 (paper: 64, 32).
    dropout : float
        Dropout probability after every hidden layer during training (0 = off; paper: 0.2).
    zero_init_last : bool
        Zero-initialise the reconstruction conv (identity at initialisation).

    Shapes
    ------
    input ``(B, 1, H, W)`` float32 in [0, 1], any ``H, W >= 1``; output ``(B, 1, H, W)`` float32 >= 0.

    Raises
    ------
    ConfigError
        Invalid schedule, filter counts or dropout.
    ValueError
        If the input is not a floating ``(B, 1, H, W)`` tensor.

    Notes
    -----
    Parameters with the defaults: 1,422,782.
    """

    def __init__(
        self,
        layers: int = 12,
        first_filters: int = 196,
        last_filters: int = 48,
        gamma: float = 1.5,
        nin_a: int = 64,
        nin_b: int = 32,
        dropout: float = 0.0,
        zero_init_last: bool = True,
    ):
        super().__init__()
        if nin_a < 1 or nin_b < 1 or not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"DCSCN needs nin_a, nin_b >= 1 and 0 <= dropout < 1, got {nin_a}, {nin_b}, {dropout}")
        self.filters = dcscn_filters(layers, first_filters, last_filters, gamma)
        chans, cin = [], 1
        for c in self.filters:
            chans.append(nn.Sequential(nn.Conv2d(cin, c, 3, padding=1), nn.PReLU(c, init=0.1)))
            cin = c
        self.features = nn.ModuleList(chans)
        total = sum(self.filters)
        self.a1 = nn.Sequential(nn.Conv2d(total, nin_a, 1), nn.PReLU(nin_a, init=0.1))
        self.b1 = nn.Sequential(nn.Conv2d(total, nin_b, 1), nn.PReLU(nin_b, init=0.1))
        self.b2 = nn.Sequential(nn.Conv2d(nin_b, nin_b, 3, padding=1), nn.PReLU(nin_b, init=0.1))
        self.reconstruct = nn.Conv2d(nin_a + nin_b, 1, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(float(dropout)) if dropout > 0 else nn.Identity()
        if zero_init_last:
            nn.init.zeros_(self.reconstruct.weight)

    def residual(self, x: Tensor) -> Tensor:
        """``f(x)``: ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` (before the input skip and the final ReLU)."""
        maps, out = [], x
        for layer in self.features:
            out = self.dropout(layer(out))
            maps.append(out)
        cat = torch.cat(maps, dim=1)
        a = self.dropout(self.a1(cat))
        b = self.dropout(self.b2(self.dropout(self.b1(cat))))
        return self.reconstruct(torch.cat([a, b], dim=1))

    def forward(self, x: Tensor) -> Tensor:
        """Denoise ``x`` ``(B, 1, H, W)`` [0, 1] -> ``(B, 1, H, W)`` = ``relu(x + f(x))``."""
        _check_input(x, "DCSCN")
        return F.relu(x + self.residual(x))


class _ResBlock(nn.Module):
    """conv 3x3 -> ReLU -> conv 3x3, + identity, -> ReLU (He et al., CVPR 2016, Fig. 2), channels kept."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, k, padding=k // 2)
        self.conv2 = nn.Conv2d(c, c, k, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class ResHLF(nn.Module):
    """Residual network for LDCT denoising trained with a hybrid loss function (Res-HLF), as listed among
    the LIDnet baselines (Chen et al., ACM MM 2021).

    The source paper LIDnet cites for Res-HLF could not be retrieved while writing this; this class is OUR
    reconstruction from the name, NOT a verified copy: a residual CNN ::

        x -> conv 3x3 (-> 64), ReLU -> [residual block: conv-ReLU-conv + identity, ReLU] x 8
          -> conv 3x3 (-> 1) = f(x);   out = relu(x + f(x))

    and its "hybrid loss" is MSE + SSIM (see :func:`src_training.baseline_losses.published_loss`). Replace
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
        _check_odd_kernel("ResHLF", filters, kernel_size)
        if blocks < 1:
            raise ConfigError(f"ResHLF needs blocks >= 1, got {blocks}")
        k = kernel_size
        self.head = nn.Conv2d(1, filters, k, padding=k // 2)
        self.blocks = nn.Sequential(*[_ResBlock(filters, k) for _ in range(blocks)])
        self.tail = nn.Conv2d(filters, 1, k, padding=k // 2)
        if zero_init_last:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)

    def residual(self, x: Tensor) -> Tensor:
        """``f(x)``: ``(B, 1, H, W)`` -> ``(B, 1, H, W)`` (before the input shortcut and the final ReLU)."""
        return self.tail(self.blocks(F.relu(self.head(x))))

    def forward(self, x: Tensor) -> Tensor:
        """Denoise ``x`` ``(B, 1, H, W)`` [0, 1] -> ``(B, 1, H, W)`` = ``relu(x + f(x))``."""
        _check_input(x, "ResHLF")
        return F.relu(x + self.residual(x))
