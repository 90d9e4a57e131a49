"""DCSCN, deep CNN with skip connection and network in network (the LIDnet baselines DCSCN and DCSWGAN).

Source: J. Yamanaka, S. Kuwashima, T. Kurita, "Fast and accurate image super resolution by deep CNN with
skip connection and network in network", ICONIP 2017, as applied to low-dose CT by C. You et al.
("Low-dose CT via deep CNN with skip connection and network-in-network", Proc. SPIE 11113, 2019 -- the
LDCT adaptation's text was not available when this was written; the architecture follows Yamanaka et al.
and their code, github.com/jiny2001/dcscn-super-resolution). 12 feature-extraction 3x3 conv layers whose
filter counts decay from 196 to 48 (gamma 1.5: 196,166,148,133,120,108,97,86,76,66,57,48), PReLU, all
outputs concatenated (1,301 channels) -> network-in-network reconstruction A1 (1x1, 64) || B1 (1x1, 32)
-> B2 (3x3, 32) -> concat (96) -> 3x3 conv to 1 channel, + input skip. No up-sampling layer (scale 1:
denoising). Parameters here: 1,422,782 (incl. 1,429 PReLU slopes). Published losses: L1 (DCSCN),
L1 + WGAN-GP (DCSWGAN) (:mod:`src_training.losses.published`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .base import ResidualDenoiser

__all__ = ["DCSCN", "dcscn_filters"]


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


class DCSCN(ResidualDenoiser):
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
