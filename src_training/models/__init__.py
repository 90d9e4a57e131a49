"""Networks of napari-lidnet: 2-D CT denoisers (RED-CNN, CPCE-2D and the other LIDnet baselines: WGAN-VGG,
MAP-NN, SSMS, Res-HLF, DCSCN) and the Faster R-CNN lesion detector.

See :mod:`src_training.models.denoisers`, :mod:`src_training.models.baselines` and
:mod:`src_training.models.detector`.
"""

from .baselines import DCSCN, MAPNN, SSMS, WGANVGG, ResHLF
from .denoisers import CPCE, DENOISERS, REDCNN, build_denoiser, count_parameters
from .detector import (
    BACKBONES,
    DEFAULT_ANCHOR_SIZES,
    DEFAULT_ASPECT_RATIOS,
    IMAGE_MEAN,
    IMAGE_STD,
    NORMS,
    LesionDetector,
    RPNOutput,
    build_detector,
    set_frozen,
)

__all__ = [
    "BACKBONES",
    "CPCE",
    "DCSCN",
    "DEFAULT_ANCHOR_SIZES",
    "DEFAULT_ASPECT_RATIOS",
    "DENOISERS",
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
    "build_denoiser",
    "build_detector",
    "count_parameters",
    "set_frozen",
]
