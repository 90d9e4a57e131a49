"""Small 2-D U-Net lesion segmenter: the segmentation downstream network of TOD-Net's task-oriented loss
(Zhang et al., "Task-Oriented Low-Dose CT Image Denoising", MICCAI 2021), trained with the Dice loss
(:func:`src_training.losses.dice_loss`) on masks derived from lesion boxes.

Architecture: U-Net (Ronneberger et al., MICCAI 2015) with ``depth`` down-sampling levels, two 3x3
convolution + batch norm + ReLU blocks per level, max-pool down, bilinear up + concatenation, 1x1
output conv (one logit channel). Input sizes that are not multiples of ``2**depth`` are padded by
reflection and the output cropped back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNet2D(nn.Module):
    """2-D U-Net: ``(B, 1, H, W)`` [0, 1] images -> ``(B, 1, H, W)`` lesion logits.

    Parameters
    ----------
    width : int
        Channels of the first level (doubled per level).
    depth : int
        Down-sampling steps (>= 1).

    Raises
    ------
    ConfigError
        If ``width`` or ``depth`` is not a positive integer.
    """

    def __init__(self, width: int = 16, depth: int = 3):
        super().__init__()
        for name, v in (("width", width), ("depth", depth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"U-Net {name} must be a positive integer, got {v!r}.")
        chans = [width * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(1, chans[0])] + [_block(chans[i], chans[i + 1]) for i in range(depth)])
        self.up = nn.ModuleList([_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
        self.out = nn.Conv2d(chans[0], 1, 1)
        self.hparams = {"width": width, "depth": depth}

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, 1, H, W)`` of ``x`` ``(B, 1, H, W)``."""
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"UNet2D expects (B, 1, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = 2 ** self.hparams["depth"]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for blk in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = blk(torch.cat([x, skip], 1))
        return self.out(x)[..., :h, :w]


def build_segmenter(width: int = 16, depth: int = 3) -> UNet2D:
    """The TOD-Net segmentation task network (:class:`UNet2D`)."""
    return UNet2D(width=width, depth=depth)


def boxes_to_masks(boxes: Sequence[Tensor], height: int, width: int, device=None) -> Tensor:
    """Lesion masks from boxes: the ellipse inscribed in each box (a lesion is round-ish; the box is its
    bounding rectangle), union over the boxes of an image.

    A pixel (centre ``(x + 0.5, y + 0.5)``) is inside the box ``(x0, y0, x1, y1)``'s ellipse when
    ``((px - cx) / rx)^2 + ((py - cy) / ry)^2 <= 1`` with ``c`` the box centre and ``r`` its half sides
    (pixels). A box smaller than a pixel marks at least the pixel holding its centre.

    Parameters
    ----------
    boxes : sequence of Tensor (n_i, 4) float
        Per image, ``xyxy`` boxes in pixels (``targets[i]["boxes"]``).
    height, width : int
        Mask size (pixels).
    device : torch.device, optional
        Device of the result (default: the boxes' device, else CPU).

    Returns
    -------
    Tensor (B, 1, height, width) float32 in {0, 1}
    """
    dev = device if device is not None else (boxes[0].device if len(boxes) else "cpu")
    ys = torch.arange(height, dtype=torch.float32, device=dev).view(-1, 1) + 0.5
    xs = torch.arange(width, dtype=torch.float32, device=dev).view(1, -1) + 0.5
    out = torch.zeros((len(boxes), 1, height, width), dtype=torch.float32, device=dev)
    for i, b in enumerate(boxes):
        for x0, y0, x1, y1 in b.detach().to(dev, torch.float32).reshape(-1, 4).tolist():
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            rx, ry = max((x1 - x0) / 2, 1e-6), max((y1 - y0) / 2, 1e-6)
            inside = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
            yi, xi = int(np.clip(np.floor(cy), 0, height - 1)), int(np.clip(np.floor(cx), 0, width - 1))
            inside[yi, xi] = True
            out[i, 0][inside] = 1.0
    return out


__all__ = ["UNet2D", "boxes_to_masks", "build_segmenter"]
