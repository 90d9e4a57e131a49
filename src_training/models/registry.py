"""The denoiser registry: one row per method (key, display name, network, published loss, source).

LIDnet (Chen et al., ACM MM 2021, arXiv 2104.08845) is a training scheme applied to existing denoisers; its
experiments compare each baseline trained with its own published loss against its LIDnet version. This
table is the one place that names every method: :data:`DENOISER_SPECS` (a :class:`DenoiserSpec` per
:class:`DenoiserKey`). Everything else is derived from it:

- :data:`DENOISERS` (key -> network class; the ``model`` field of ``denoiser.pt``) and
  :func:`build_denoiser`;
- :data:`DISPLAY_NAMES` and :func:`display_name` (how a key is written in tables, layer names, reports);
- the published loss of each method: ``spec.published_loss`` is a key of
  :data:`src_training.losses.published.PUBLISHED_LOSSES` (the loss module reads this table, never the
  reverse, so the networks do not import the losses).

Layout after ldct-benchmark (``ldctbench.hub.methods.Methods`` enum + one module per method): one module
per network (:mod:`.redcnn`, :mod:`.cpce`, :mod:`.wganvgg`, :mod:`.mapnn`, :mod:`.ssms`, :mod:`.reshlf`,
:mod:`.dcscn`), shared pieces in :mod:`.base`. Input/output conventions of every network: :mod:`.base`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

from torch import nn

from ..errors import ConfigError
from .cpce import CPCE
from .dcscn import DCSCN
from .mapnn import MAPNN
from .redcnn import REDCNN
from .reshlf import ResHLF
from .ssms import SSMS
from .wganvgg import WGANVGG

__all__ = [
    "DenoiserKey",
    "DenoiserSpec",
    "DENOISER_SPECS",
    "DENOISERS",
    "DISPLAY_NAMES",
    "KEY_ALIASES",
    "denoiser_spec",
    "display_name",
    "build_denoiser",
]


class DenoiserKey(str, Enum):
    """Registry keys (lower case; ``DenoiserKey.REDCNN == "redcnn"``), the ``model`` field of ``denoiser.pt``."""

    REDCNN = "redcnn"
    CPCE = "cpce"
    WGANVGG = "wganvgg"
    MAPNN = "mapnn"
    SSMS = "ssms"
    RESHLF = "reshlf"
    DCSCN = "dcscn"
    DCSWGAN = "dcswgan"


@dataclass(frozen=True)
class DenoiserSpec:
    """One method of the registry.

    Attributes
    ----------
    key : str
        Lower-case registry key (a :class:`DenoiserKey` value).
    display_name : str
        How the method is written in tables, layer names and reports (e.g. ``"RED-CNN"``).
    network : callable
        Constructor (the network class) called as ``network(**kwargs)``; returns an ``nn.Module`` mapping
        ``(B, 1, H, W)`` float32 [0, 1] slices to the same shape (see :mod:`src_training.models.base`).
    published_loss : str
        Key of the method's published training loss in
        :data:`src_training.losses.published.PUBLISHED_LOSSES`.
    source : str
        The paper of the network (short citation).
    """

    key: str
    display_name: str
    network: Callable[..., nn.Module]
    published_loss: str
    source: str


#: The registry, in display order (the Denoise widget lists the methods in this order).
DENOISER_SPECS: dict[str, DenoiserSpec] = {
    s.key: s
    for s in (
        DenoiserSpec(DenoiserKey.REDCNN.value, "RED-CNN", REDCNN, "redcnn", "Chen et al., IEEE TMI 2017"),
        DenoiserSpec(DenoiserKey.CPCE.value, "CPCE", CPCE, "cpce", "Shan et al., IEEE TMI 2018 (CPCE-2D)"),
        DenoiserSpec(DenoiserKey.WGANVGG.value, "WGAN-VGG", WGANVGG, "wganvgg", "Yang et al., IEEE TMI 2018"),
        DenoiserSpec(DenoiserKey.MAPNN.value, "MAP-NN", MAPNN, "mapnn", "Shan et al., Nat. Mach. Intell. 2019"),
        DenoiserSpec(DenoiserKey.SSMS.value, "SSMS", SSMS, "ssms", "You et al., IEEE Access 2018 (SMGAN-2D)"),
        DenoiserSpec(DenoiserKey.RESHLF.value, "Res-HLF", ResHLF, "reshlf",
                     "Res-HLF (source paper not retrieved; our reconstruction)"),
        DenoiserSpec(DenoiserKey.DCSCN.value, "DCSCN", DCSCN, "dcscn",
                     "Yamanaka et al., ICONIP 2017; You et al., SPIE 2019"),
        # the DCSCN generator trained as a WGAN-GP: same architecture, other published loss
        DenoiserSpec(DenoiserKey.DCSWGAN.value, "DCSWGAN", DCSCN, "dcswgan", "You et al., SPIE 2019"),
    )
}

#: Key -> network class (the ``model`` field of ``denoiser.pt``), derived from :data:`DENOISER_SPECS`.
DENOISERS: dict[str, type] = {k: s.network for k, s in DENOISER_SPECS.items()}

#: Key -> display name (the one display-name table), derived from :data:`DENOISER_SPECS`.
DISPLAY_NAMES: dict[str, str] = {k: s.display_name for k, s in DENOISER_SPECS.items()}

#: Spellings of keys seen in older files (after lower-casing and removing ``-``), for :func:`display_name`.
KEY_ALIASES: dict[str, str] = {"red_cnn": "redcnn", "cpce2d": "cpce"}


def _normalise(key: object) -> str:
    """Lower-case, stripped key (a :class:`DenoiserKey` gives its value)."""
    return str(key.value if isinstance(key, Enum) else key).strip().lower()


def denoiser_spec(name: str | DenoiserKey) -> DenoiserSpec:
    """The :class:`DenoiserSpec` of a registry key (case-insensitive; a :class:`DenoiserKey` works too).

    Raises
    ------
    ConfigError
        Unknown ``name`` (the message lists the choices).
    """
    key = _normalise(name)
    if key not in DENOISER_SPECS:
        raise ConfigError(f"Unknown denoiser {name!r}; choose one of: {', '.join(sorted(DENOISER_SPECS))}.")
    return DENOISER_SPECS[key]


def display_name(key: str | DenoiserKey) -> str:
    """Display name of a denoiser key, e.g. ``"redcnn" -> "RED-CNN"``.

    Case-insensitive; ``-`` is ignored and the old spellings of :data:`KEY_ALIASES` are accepted
    (``"red_cnn"``, ``"cpce2d"``). Unknown keys: the network class's ``display_name`` attribute if the key
    names one, else the key itself (never raises).
    """
    k = _normalise(key).replace("-", "")
    k = KEY_ALIASES.get(k, k)
    if k in DISPLAY_NAMES:
        return DISPLAY_NAMES[k]
    cls = DENOISERS.get(k)
    return str(getattr(cls, "display_name", None) or key)


def build_denoiser(name: str | DenoiserKey, **kwargs) -> nn.Module:
    """Build a denoiser by registry key.

    Parameters
    ----------
    name : str or DenoiserKey
        A key of :data:`DENOISERS` (case-insensitive): ``"redcnn"``, ``"cpce"``, ``"wganvgg"``, ``"mapnn"``,
        ``"ssms"``, ``"reshlf"``, ``"dcscn"``, ``"dcswgan"``.
    **kwargs
        Passed to the network (e.g. ``filters``, ``kernel_size``, ``zero_init_last``; see each class).

    Returns
    -------
    nn.Module
        A freshly initialised denoiser, on the CPU, ``(B, 1, H, W)`` float32 [0, 1] -> same shape; the
        identity on [0, 1] at init unless ``zero_init_last=False``.

    Raises
    ------
    ConfigError
        If ``name`` is unknown (the message lists the choices) or the keyword arguments are invalid.
    """
    spec = denoiser_spec(name)
    try:
        return spec.network(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"Invalid options for denoiser {spec.key!r}: {exc}") from exc
