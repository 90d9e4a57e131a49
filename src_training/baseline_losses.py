"""Published training losses of the LIDnet baseline denoisers (in the experiments of Chen et al., ACM MM
2021, arXiv:2104.08845, each baseline is trained with its own paper's loss).

:func:`published_loss` returns a :class:`PublishedLoss` for every key of
:data:`src_training.models.denoisers.DENOISERS`. Its :meth:`PublishedLoss.content_loss` is the
non-adversarial part of the generator objective; when ``adversarial`` is True the published training adds a
WGAN-GP critic and the generator term ``lambda_adv * (-mean(critic(G(x))))`` (the critic and its gradient
penalty are the trainer's job, not this module's).

All images are ``(B, 1, H, W)`` float32 on the [0, 1] scale (HU clipped to ``hu_range`` and scaled).

Per model (weights relative to each other; ``lambda_adv`` relative to the content loss)
------------------------------------------------------------------------------------------
- ``redcnn``: MSE (Chen et al., IEEE TMI 2017). Not adversarial.
- ``wganvgg``: WGAN-GP + 0.1 x VGG19 perceptual loss (Yang et al., IEEE TMI 2018, overall objective
  ``min_G max_D L_WGAN + lambda_1 L_VGG``, ``lambda_1 = 0.1``). ``lambda_adv = 1``.
- ``cpce``: WGAN-GP + 0.1 x VGG19 perceptual (Shan et al., IEEE TMI 2018, same objective as WGAN-VGG).
- ``mapnn``: WGAN-GP + 50 x MSE + 50 x edge-incoherence (Sobel) loss, ``lambda_adv = 1``. Taken from the
  authors' code (github.com/hmshan/MAP-NN, ``MAP_NN_training.py``: ``gen_cost + 50 * mse_cost + 50 *
  edge_cost``; ``edge_cost`` = MSE between the Sobel gradients of output and target). That code has NO VGG
  term, so none is used here.
- ``ssms``: structurally-sensitive loss ``0.84 * (1 - SSIM) + 0.16 * L1`` (You et al., IEEE Access 2018;
  the SSIM/L1 mix; the weight 0.84 is the value of Zhao et al., IEEE TCI 2017, on which that loss builds --
  not re-checked against the paper's text here). The paper also trains adversarially (SMGAN); the LIDnet
  "SSMS" baseline is taken here as the non-adversarial network.
- ``reshlf``: hybrid ``MSE + (1 - SSIM)`` (equal weights). The Res-HLF paper could not be retrieved: this
  is OUR stated reading of "hybrid loss function", to be replaced once the paper is at hand.
- ``dcscn``: L1 (mean absolute error). Not adversarial.
- ``dcswgan``: L1 + WGAN-GP, ``lambda_adv = 1e-3`` (our choice, the SRGAN weighting of Ledig et al. 2017;
  the DCSWGAN weighting was not available).

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
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import CheckpointError, ConfigError

__all__ = [
    "PublishedLoss",
    "published_loss",
    "VGGPerceptual",
    "load_vgg19_features",
    "random_vgg19_features",
    "ssim_loss",
    "sobel_edge_loss",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "VGG_SUBSTITUTE_SEED",
]

log = logging.getLogger(__name__)

#: ImageNet normalisation of torchvision's VGG19 (RGB mean / std on the [0, 1] scale).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Seed of the deterministic random-VGG19 substitute used when no weights file is given.
VGG_SUBSTITUTE_SEED = 0
#: Layers of ``torchvision.models.vgg19().features`` up to and including conv5_4 (its 16th conv), no ReLU.
_VGG_CONV54 = 35
_VGG_MIN_SIZE = 16


def _vgg19_layers() -> nn.Sequential:
    from torchvision.models.vgg import cfgs, make_layers

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
        with torch.no_grad():
            target = self.features(self.to_vgg_input(ndct))
        return F.mse_loss(self.features(self.to_vgg_input(denoised)), target)


def ssim_loss(denoised: Tensor, ndct: Tensor) -> Tensor:
    """``1 - SSIM`` (Wang et al., IEEE TIP 2004), differentiable, via torchmetrics.

    Gaussian window 11 x 11, sigma 1.5, ``data_range = 1`` ([0, 1] scale), K1 = 0.01, K2 = 0.03; on slices
    smaller than 11 px the window shrinks to the largest odd size that fits (sigma scaled with it).

    Shapes: ``(B, 1, H, W)`` float32 each; returns a scalar tensor in [0, 2].
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    k = min(11, min(denoised.shape[-2:]))
    k = k if k % 2 == 1 else k - 1
    if k < 3:
        raise ValueError(f"SSIM loss needs slices of at least 3 x 3 pixels, got {tuple(denoised.shape[-2:])}")
    ssim = structural_similarity_index_measure(
        denoised, ndct, gaussian_kernel=True, sigma=1.5 * k / 11, kernel_size=k, data_range=1.0
    )
    return 1.0 - ssim


def sobel_edge_loss(denoised: Tensor, ndct: Tensor) -> Tensor:
    """Edge-incoherence loss of MAP-NN (Shan et al. 2019; authors' code ``edge_cost``).

    ``mean((S(denoised) - S(ndct))^2)`` over both Sobel directions, ``S`` = 3x3 Sobel filters
    ``[[-1,-2,-1],[0,0,0],[1,2,1]]`` and its transpose, reflect padding (as ``tf.image.sobel_edges``).

    Shapes: ``(B, 1, H, W)`` float32 each (H, W >= 2); returns a scalar tensor.
    """
    ky = torch.tensor([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]], dtype=denoised.dtype,
                      device=denoised.device)
    kernel = torch.stack([ky, ky.t()]).unsqueeze(1)  # (2, 1, 3, 3)

    def grad(x: Tensor) -> Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), kernel)

    return F.mse_loss(grad(denoised), grad(ndct))


def _term_mse(loss: PublishedLoss, d: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(d, y)


def _term_l1(loss: PublishedLoss, d: Tensor, y: Tensor) -> Tensor:
    return F.l1_loss(d, y)


def _term_vgg(loss: PublishedLoss, d: Tensor, y: Tensor) -> Tensor:
    if loss.perceptual is None:
        raise ConfigError(f"The {loss.model!r} loss has a VGG term but no VGG network was built.")
    return loss.perceptual(d, y)


_TERMS: dict[str, Callable[[PublishedLoss, Tensor, Tensor], Tensor]] = {
    "mse": _term_mse,
    "l1": _term_l1,
    "ssim": lambda loss, d, y: ssim_loss(d, y),
    "edge": lambda loss, d, y: sobel_edge_loss(d, y),
    "vgg": _term_vgg,
}


@dataclass(frozen=True)
class PublishedLoss:
    """The published training loss of one baseline denoiser.

    Attributes
    ----------
    model : str
        Key of ``DENOISERS``.
    description : str
        Human-readable formula with its source, naming the VGG weights used (ImageNet file or substitute).
    adversarial : bool
        True when the published training uses a WGAN(-GP) critic (WGAN-VGG, CPCE, MAP-NN, DCSWGAN).
    lambda_adv : float
        Weight of the generator's adversarial term ``-mean(critic(G(x)))`` relative to
        :meth:`content_loss` (0.0 when not adversarial).
    weights : tuple of (str, float)
        The content terms and their weights; term names: ``mse``, ``l1``, ``ssim`` (= 1 - SSIM), ``edge``
        (Sobel MSE), ``vgg`` (VGG19 conv5_4 MSE).
    perceptual : VGGPerceptual or None
        The frozen VGG network when a ``vgg`` term is present.
    """

    model: str
    description: str
    adversarial: bool
    lambda_adv: float
    weights: tuple[tuple[str, float], ...] = ()
    perceptual: VGGPerceptual | None = field(default=None, repr=False, compare=False)

    def content_loss(self, denoised: Tensor, ndct: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Non-adversarial part of the published generator loss.

        Parameters
        ----------
        denoised : Tensor (B, 1, H, W) float32, [0, 1]
            Denoiser output G(x) (keeps its autograd graph).
        ndct : Tensor (B, 1, H, W) float32, [0, 1]
            Normal-dose target y.

        Returns
        -------
        (Tensor, dict)
            The weighted sum (scalar, differentiable w.r.t. ``denoised``) and the unweighted value of each
            term by name plus ``"content"`` (the weighted sum), as floats.

        Raises
        ------
        ValueError
            Shapes differ or are not ``(B, 1, H, W)``.
        """
        if denoised.shape != ndct.shape or denoised.dim() != 4 or denoised.shape[1] != 1:
            raise ValueError(f"{self.model} loss: expected two (B, 1, H, W) tensors of the same shape, got "
                             f"{tuple(denoised.shape)} and {tuple(ndct.shape)}")
        total: Tensor | None = None
        parts: dict[str, float] = {}
        for name, w in self.weights:
            value = _TERMS[name](self, denoised, ndct)
            parts[name] = float(value.detach())
            total = w * value if total is None else total + w * value
        assert total is not None
        parts["content"] = float(total.detach())
        return total, parts

    def to(self, device: torch.device | str) -> PublishedLoss:
        """Move the VGG network (if any) to ``device``; returns ``self``."""
        if self.perceptual is not None:
            self.perceptual.to(device)
        return self


# model -> (adversarial, lambda_adv, weights, description without the VGG source)
_SPECS: dict[str, tuple[bool, float, tuple[tuple[str, float], ...], str]] = {
    "redcnn": (False, 0.0, (("mse", 1.0),), "MSE (Chen et al., IEEE TMI 2017, RED-CNN)"),
    "wganvgg": (True, 1.0, (("vgg", 0.1),),
                "WGAN-GP + 0.1 * VGG19 conv5_4 perceptual (Yang et al., IEEE TMI 2018, lambda_1 = 0.1)"),
    "cpce": (True, 1.0, (("vgg", 0.1),),
             "WGAN-GP + 0.1 * VGG19 conv5_4 perceptual (Shan et al., IEEE TMI 2018, CPCE-2D)"),
    "mapnn": (True, 1.0, (("mse", 50.0), ("edge", 50.0)),
              "WGAN-GP + 50 * MSE + 50 * Sobel edge-incoherence MSE (Shan et al., Nat. Mach. Intell. 2019; "
              "weights from the authors' MAP_NN_training.py, which has no VGG term)"),
    "ssms": (False, 0.0, (("ssim", 0.84), ("l1", 0.16)),
             "0.84 * (1 - SSIM) + 0.16 * L1 structurally-sensitive loss (You et al., IEEE Access 2018; "
             "weight 0.84 after Zhao et al. 2017, not re-checked; SMGAN's adversarial term not used)"),
    "reshlf": (False, 0.0, (("mse", 1.0), ("ssim", 1.0)),
               "MSE + (1 - SSIM) hybrid loss (Res-HLF; source paper not retrieved: OUR reading, unverified)"),
    "dcscn": (False, 0.0, (("l1", 1.0),), "L1 / MAE (DCSCN for LDCT, You et al., SPIE 2019)"),
    "dcswgan": (True, 1e-3, (("l1", 1.0),),
                "WGAN-GP (lambda_adv = 1e-3, our choice after SRGAN; not from the DCSWGAN paper) + L1 "
                "(DCSCN generator, You et al., SPIE 2019)"),
}


def published_loss(model: str, *, vgg_weights: str | os.PathLike | None = None, device=None) -> PublishedLoss:
    """The published training loss of a baseline denoiser (see the module docstring for every model).

    Parameters
    ----------
    model : str
        A key of ``DENOISERS`` (case-insensitive).
    vgg_weights : str or PathLike, optional
        Local torchvision ``vgg19`` state_dict for the VGG perceptual term (WGAN-VGG, CPCE). Without it the
        seeded random-VGG19 substitute is used and a warning is logged. Ignored by models without a VGG term.
    device : torch.device, str or None
        Where the VGG network goes (``None`` or ``"auto"``: cuda > mps > cpu).

    Returns
    -------
    PublishedLoss

    Raises
    ------
    ConfigError
        Unknown ``model``.
    CheckpointError
        ``vgg_weights`` is missing or not a torchvision VGG19 state_dict.
    """
    from .models.denoisers import DENOISERS

    key = str(model).strip().lower()
    if key not in DENOISERS:
        raise ConfigError(f"Unknown denoiser {model!r}; choose one of: {', '.join(sorted(DENOISERS))}.")
    if key not in _SPECS:
        raise ConfigError(f"No published loss is recorded for denoiser {key!r}; add it to baseline_losses._SPECS.")
    adversarial, lambda_adv, weights, description = _SPECS[key]
    perceptual = None
    if any(name == "vgg" for name, _ in weights):
        if vgg_weights is not None:
            feats = load_vgg19_features(vgg_weights)
            source = f"VGG19 weights from {os.fspath(vgg_weights)!r}"
        else:
            feats = random_vgg19_features()
            source = (f"SUBSTITUTE: random-init VGG19 (seed {VGG_SUBSTITUTE_SEED}), not ImageNet weights -- no "
                      "vgg_weights file given")
            log.warning("%s: no VGG19 weights file given; the perceptual loss uses a seeded random-init VGG19 "
                        "substitute, so training does not reproduce the published loss.", key)
        from .device import auto_device

        dev = device if isinstance(device, torch.device) else auto_device("auto" if device is None else str(device))
        perceptual = VGGPerceptual(feats, source).to(dev)
        description = f"{description}; {source}"
    return PublishedLoss(key, description, adversarial, lambda_adv, weights, perceptual)
