"""Networks of napari-lidnet: 2-D CT denoisers (RED-CNN, CPCE-2D and the other LIDnet baselines: WGAN-VGG,
MAP-NN, SSMS, Res-HLF, DCSCN), the Faster R-CNN lesion detector, the FCOS judge, the WGAN critic and the
TOD-Net segmenter.

Module map: :mod:`.registry` (the denoiser table: key, display name, network, published loss), one module
per denoiser (:mod:`.redcnn`, :mod:`.cpce`, :mod:`.wganvgg`, :mod:`.ssms`, :mod:`.mapnn`, :mod:`.dcscn`,
:mod:`.reshlf`) with shared pieces in :mod:`.base`, :mod:`.denoisers` (re-exports of all of them);
:mod:`.detector` (``LesionDetector``, ``build_detector``), :mod:`.rpn` (top-K region proposal network,
``RPNOutput``), :mod:`.freezing` (``set_frozen``, ``eval_behaviour``), :mod:`.detector_weights` (weights-file
loading); :mod:`.fcos`, :mod:`.critic`, :mod:`.segmenter`.
"""

from .base import count_parameters
from .cpce import CPCE
from .dcscn import DCSCN
from .detector import (
    BACKBONES,
    DEFAULT_ANCHOR_SIZES,
    DEFAULT_ASPECT_RATIOS,
    IMAGE_MEAN,
    IMAGE_STD,
    NORMS,
    LesionDetector,
    RPNOutput,
    TopKRegionProposalNetwork,
    build_detector,
    eval_behaviour,
    set_frozen,
)
from .mapnn import MAPNN
from .redcnn import REDCNN
from .registry import DENOISER_SPECS, DENOISERS, DenoiserKey, DenoiserSpec, build_denoiser
from .reshlf import ResHLF
from .ssms import SSMS
from .wganvgg import WGANVGG

__all__ = [
    "BACKBONES",
    "CPCE",
    "DCSCN",
    "DEFAULT_ANCHOR_SIZES",
    "DEFAULT_ASPECT_RATIOS",
    "DENOISERS",
    "DENOISER_SPECS",
    "DenoiserKey",
    "DenoiserSpec",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "MAPNN",
    "NORMS",
    "REDCNN",
    "SSMS",
    "WGANVGG",
    "ResHLF",
    "LesionDetector",
    "RPNOutput",
    "TopKRegionProposalNetwork",
    "build_denoiser",
    "build_detector",
    "count_parameters",
    "eval_behaviour",
    "set_frozen",
]
