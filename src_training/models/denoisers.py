"""2-D CT denoisers: the registry and every network, re-exported from one place.

The registry (:data:`DENOISERS`, :func:`build_denoiser`, :data:`DISPLAY_NAMES`, :func:`display_name`, the
typed table :data:`~src_training.models.registry.DENOISER_SPECS`) lives in :mod:`src_training.models.registry`;
each network in its own module (:mod:`.redcnn`, :mod:`.cpce`, :mod:`.wganvgg`, :mod:`.mapnn`, :mod:`.ssms`,
:mod:`.reshlf`, :mod:`.dcscn`); the conventions every network follows (``(B, 1, H, W)`` float32 [0, 1] in
and out, same shape for any ``H, W``, residual ``relu(x + f(x))``, identity at init, ``model.residual(x)``)
in :mod:`src_training.models.base`. This module keeps ``from src_training.models.denoisers import X``
working for all of them.
"""

from __future__ import annotations

from .base import count_parameters
from .cpce import CPCE
from .dcscn import DCSCN
from .mapnn import MAPNN
from .redcnn import REDCNN
from .registry import DENOISER_SPECS, DENOISERS, DISPLAY_NAMES, DenoiserKey, DenoiserSpec, build_denoiser, display_name
from .reshlf import ResHLF
from .ssms import SSMS
from .wganvgg import WGANVGG

__all__ = ["REDCNN", "CPCE", "WGANVGG", "MAPNN", "SSMS", "ResHLF", "DCSCN", "DENOISERS", "DENOISER_SPECS",
           "DISPLAY_NAMES", "DenoiserKey", "DenoiserSpec", "display_name", "build_denoiser", "count_parameters"]
