"""Networks of napari-lidnet: 2-D CT denoisers (RED-CNN, CPCE-2D) and the Faster R-CNN lesion detector.

See :mod:`src_training.models.denoisers` and :mod:`src_training.models.detector`.
"""

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
    "DEFAULT_ANCHOR_SIZES",
    "DEFAULT_ASPECT_RATIOS",
    "DENOISERS",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "NORMS",
    "REDCNN",
    "LesionDetector",
    "RPNOutput",
    "build_denoiser",
    "build_detector",
    "count_parameters",
    "set_frozen",
]
