"""VGG19 perceptual loss of the baselines' published losses (WGAN-VGG: Yang et al., IEEE TMI 2018; CPCE:
Shan et al., IEEE TMI 2018), with a deterministic substitute when no ImageNet weights file is at hand.

VGG perceptual term
-------------------
``L_VGG = mean((phi(G(x)) - phi(y))^2)`` over all elements of VGG19's 16th conv layer output ``conv5_4``
(torchvision ``vgg19().features[:35]``, before its ReLU; Yang et al. 2018, Eq. for L_VGG, divides the
squared Frobenius norm by ``w h d``). A grayscale slice in [0, 1] is repeated to 3 channels and normalised
with the ImageNet mean/std ``(0.485, 0.456, 0.406)/(0.229, 0.224, 0.225)`` -- the input convention of
torchvision's ImageNet VGG19. Slices smaller than 16 px are replicate-padded to 16 (4 max-pools precede
conv5_4).

Weights: nothing downloads. Pass ``vgg_weights=`` a local torchvision ``vgg19`` state_dict (``.pth``,
loaded with ``torch.load(weights_only=True)``; the ImageNet file is ``vgg19-dcbb9e9d.pth``). Without one,
a DETERMINISTIC SUBSTITUTE is used: VGG19's convolutional layers with torchvision's own initialisation
(Kaiming-normal, fan-out, zero bias) drawn from a fixed seed (0), frozen. Why this substitute: (1) it
keeps the published architecture, feature depth and loss scale-free structure, so the code path is the
one a user with the real weights runs; (2) randomly initialised deep conv features still measure local
structure at many scales (random-feature perceptual losses are a known baseline, e.g. Ulyanov et al.'s deep
image prior; He, Wang & Hopcroft, NeurIPS 2016, on random-weight CNN features for texture/style); (3) it is
reproducible bit-for-bit across runs. It is NOT the ImageNet perceptual loss: results with it are not the
papers' numbers. A warning is logged, and ``description`` names the substitute.
"""

from __future__ import annotations

import copy
import functools
import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.vgg import cfgs, make_layers

from ..errors import CheckpointError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGG_SUBSTITUTE_SEED",
    "VGGPerceptual",
    "load_vgg19_features",
    "random_vgg19_features",
]

#: ImageNet normalisation of torchvision's VGG19 (RGB mean / std on the [0, 1] scale).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Seed of the deterministic random-VGG19 substitute used when no weights file is given.
VGG_SUBSTITUTE_SEED = 0
#: Layers of ``torchvision.models.vgg19().features`` up to and including conv5_4 (its 16th conv), no ReLU.
_VGG_CONV54 = 35
_VGG_MIN_SIZE = 16


def _vgg19_layers() -> nn.Sequential:
    return make_layers(cfgs["E"], batch_norm=False)[:_VGG_CONV54]


@functools.lru_cache(maxsize=1)
def _random_vgg19_cpu() -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(VGG_SUBSTITUTE_SEED)
        feats = _vgg19_layers()
        for m in feats.modules():  # torchvision VGG.__init__ initialisation of the conv layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
    return feats.eval().requires_grad_(False)


def random_vgg19_features() -> nn.Sequential:
    """The deterministic substitute for ImageNet VGG19: conv1_1..conv5_4 of VGG19, seeded init, frozen.

    Returns
    -------
    nn.Sequential
        ``torchvision`` VGG19 ``features[:35]`` (input ``(B, 3, H, W)``, output ``(B, 512, H/16, W/16)``),
        Kaiming-normal (fan-out) weights drawn with seed :data:`VGG_SUBSTITUTE_SEED`, zero biases, eval
        mode, ``requires_grad=False``. Identical on every call and machine (a fresh copy each call).
    """
    return copy.deepcopy(_random_vgg19_cpu())


def load_vgg19_features(path: str | os.PathLike) -> nn.Sequential:
    """Load VGG19 conv1_1..conv5_4 from a local torchvision ``vgg19`` state_dict file.

    Parameters
    ----------
    path : str or PathLike
        A file written by ``torch.save(torchvision.models.vgg19(...).state_dict(), path)`` (e.g. the ImageNet
        ``vgg19-dcbb9e9d.pth``). Keys ``features.<i>.weight/bias`` are used (a features-only state_dict with
        keys ``<i>.weight`` is accepted too); classifier keys are ignored. Loaded with
        ``torch.load(weights_only=True)``.

    Returns
    -------
    nn.Sequential
        ``features[:35]``, eval mode, ``requires_grad=False``, on the CPU.

    Raises
    ------
    CheckpointError
        The file is missing, unreadable, not a state_dict, or not a VGG19 (missing keys, wrong shapes --
        e.g. a VGG16 or VGG19-BN file).
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise CheckpointError(f"VGG19 weights file not found: {p!r}. Give the path of a torchvision vgg19 "
                              "state_dict (.pth), or leave it empty to use the seeded random-VGG19 substitute.")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, not a torch file, or needs unsafe unpickling
        raise CheckpointError(f"Cannot read VGG19 weights {p!r} as a torch state_dict (weights_only=True): "
                              f"{exc}. Use the torchvision vgg19 .pth file.") from exc
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{p!r} is not a state_dict of tensors (got {type(state).__name__}); expected "
                              "torchvision.models.vgg19().state_dict().")
    prefix = "features." if any(str(k).startswith("features.") for k in state) else ""
    feats = _vgg19_layers()
    wanted = feats.state_dict()
    sub = {k: state.get(prefix + k) for k in wanted}
    missing = [prefix + k for k, v in sub.items() if v is None]
    bad = [f"{prefix + k} {tuple(v.shape)} != {tuple(wanted[k].shape)}"
           for k, v in sub.items() if v is not None and v.shape != wanted[k].shape]
    if missing or bad:
        what = (f"missing {missing[:4]}" if missing else "") + (f" wrong shapes {bad[:3]}" if bad else "")
        raise CheckpointError(f"{p!r} is not a torchvision VGG19 state_dict ({what.strip()}). VGG16, "
                              "VGG19-BN or other networks cannot be used for the VGG19 perceptual loss.")
    feats.load_state_dict({k: v.float() for k, v in sub.items()}, strict=True)
    return feats.eval().requires_grad_(False)


class VGGPerceptual(nn.Module):
    """VGG19 conv5_4 perceptual loss (Yang et al., IEEE TMI 2018, L_VGG; also used by CPCE, Shan et al. 2018).

    ``forward(denoised, ndct) = mean((phi(denoised) - phi(ndct))^2)``, ``phi`` = VGG19 ``features[:35]``
    applied to the slice repeated to 3 channels and ImageNet-normalised. ``phi(ndct)`` is computed without
    gradient. The network is frozen (no parameter receives gradients).

    Parameters
    ----------
    features : nn.Sequential
        From :func:`load_vgg19_features` or :func:`random_vgg19_features`.
    source : str
        Human-readable origin of the weights (goes into loss descriptions).

    Shapes
    ------
    ``denoised``, ``ndct``: ``(B, 1, H, W)`` float32 in [0, 1]; returns a scalar tensor.
    """

    def __init__(self, features: nn.Sequential, source: str):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.source = source
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGPerceptual:  # the feature extractor always stays in eval mode
        super().train(mode)
        self.features.eval()
        return self

    def to_vgg_input(self, x: Tensor) -> Tensor:
        """``(B, 1, H, W)`` [0, 1] -> ``(B, 3, H', W')`` ImageNet-normalised (H', W' >= 16, replicate-padded)."""
        h, w = x.shape[-2:]
        ph, pw = max(0, _VGG_MIN_SIZE - h), max(0, _VGG_MIN_SIZE - w)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return (x.expand(-1, 3, -1, -1) - self.mean) / self.std

    def forward(self, denoised: Tensor, ndct: Tensor) -> Tensor:
        """``mean((phi(denoised) - phi(ndct))^2)``, scalar; gradient w.r.t. ``denoised`` only."""
        with torch.no_grad():
            target = self.features(self.to_vgg_input(ndct))
        return F.mse_loss(self.features(self.to_vgg_input(denoised)), target)
