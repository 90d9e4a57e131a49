"""WGAN-GP critic of LIDnet's GAN form (Chen et al., ACM MM 2021, arXiv:2104.08845, Eq. 5 and Eq. 7).

Architecture after the discriminator of WGAN-VGG (Yang et al., "Low-dose CT image denoising using a
generative adversarial network with Wasserstein distance and perceptual loss", IEEE TMI 37(6), 2018,
Fig. 2): six 3x3 convolutions with 64, 64, 128, 128, 256, 256 filters and strides 1, 2, 1, 2, 1, 2, each
followed by a leaky ReLU (slope 0.2), then a fully connected layer of 1024 units, a leaky ReLU and one
output. WGAN-VGG's first fully connected layer sees a fixed 64 x 64 patch; here a global average pooling
precedes it, so the critic is fully convolutional up to the pooling and takes slices of any size.
No batch normalisation (the gradient penalty is per sample; Gulrajani et al. 2017, Sec. 4).
"""

from __future__ import annotations

from torch import Tensor, nn

from ..errors import ConfigError

#: (filters multiplier of ``width``, stride) of WGAN-VGG's six convolutions.
_LAYERS = ((1, 1), (1, 2), (2, 1), (2, 2), (4, 1), (4, 2))


class Critic(nn.Module):
    """WGAN-VGG-style critic C: ``(B, 1, H, W)`` images on the [0, 1] scale -> ``(B,)`` real-valued scores.

    Parameters
    ----------
    in_channels : int
        Image channels (1 for CT).
    width : int
        Filters of the first convolution (WGAN-VGG: 64); the layers use 1, 1, 2, 2, 4, 4 times it.
    fc_units : int
        Units of the hidden fully connected layer (WGAN-VGG: 1024).

    Raises
    ------
    ConfigError
        If a size is not a positive integer.
    """

    def __init__(self, in_channels: int = 1, width: int = 64, fc_units: int = 1024):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("width", width), ("fc_units", fc_units)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"Critic {name} must be a positive integer, got {v!r}.")
        layers: list[nn.Module] = []
        c_in = in_channels
        for mult, stride in _LAYERS:
            c_out = width * mult
            layers += [nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Linear(c_in, fc_units), nn.LeakyReLU(0.2, inplace=True), nn.Linear(fc_units, 1))
        self.hparams = {"in_channels": in_channels, "width": width, "fc_units": fc_units}

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``(B,)`` float32 of images ``(B, C, H, W)`` (any H, W >= 1).

        Raises
        ------
        ValueError
            If ``x`` is not 4-D with ``in_channels`` channels.
        """
        if x.dim() != 4 or x.shape[1] != self.hparams["in_channels"]:
            raise ValueError(f"Critic expects (B, {self.hparams['in_channels']}, H, W), got {tuple(x.shape)}")
        return self.head(self.pool(self.features(x)).flatten(1)).squeeze(1)


def build_critic(width: int = 64, fc_units: int = 1024) -> Critic:
    """The critic of LIDnet's GAN form (WGAN-VGG sizes by default; see :class:`Critic`)."""
    return Critic(1, width=width, fc_units=fc_units)


__all__ = ["Critic", "build_critic"]
