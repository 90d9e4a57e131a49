"""SSMS / SMGAN-2D generator, the structurally-sensitive multi-scale network (a LIDnet baseline).

Source: C. You et al., "Structurally-sensitive multi-scale deep neural network for low-dose CT
denoising", IEEE Access 6, 2018. The multi-scale part is the (2-D/3-D) discriminator; the generator is
the same 8-layer, 32-filter, 3x3 ReLU CNN as WGAN-VGG (:class:`~src_training.models.wganvgg.PlainCNN`;
the paper's 3-D generator uses 3x3x3 kernels, the 2-D form 3x3). A public PyTorch re-implementation of
SMGAN-2D was checked and matches. Parameters here: 56,097. Published loss: 0.84 (1 - SSIM) + 0.16 L1
(:mod:`src_training.losses.published`).
"""

from __future__ import annotations

from .wganvgg import PlainCNN

__all__ = ["SSMS"]


class SSMS(PlainCNN):
    """Structurally-sensitive multi-scale network (SMGAN generator, 2-D form), You et al., IEEE Access 6, 2018.

    Architecture: the same 8-layer CNN as :class:`WGANVGG` (``[conv 3x3, 32, ReLU] x 7 -> conv 3x3 -> 1``);
    the paper's 3-D version uses 3x3x3 kernels on a stack of slices, the 2-D form uses 3x3 kernels on one
    slice. "Multi-scale" in the paper refers to its discriminator, "structurally-sensitive" to the loss
    (SSIM + L1; see :func:`src_training.losses.published.published_loss`). The input shortcut ``x +`` is our
    addition.

    Parameters, shapes, errors: as :class:`WGANVGG`. Parameters with the defaults: 56,097.
    """

    _name = "SSMS"
