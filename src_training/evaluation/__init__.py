"""Evaluation of napari-lidnet: the three kinds of numbers the LIDnet paper reports, and the protocol that
scores a method with confidence intervals.

(Chen et al., "LIDnet: Lesion-aware image denoising...", ACM MM 2021, arXiv:2104.08845, Sec. 4.)

- :mod:`~src_training.evaluation.image`: image quality (Table 3, right): :func:`psnr`, :func:`ssim`,
  :func:`rmse` and their composition :func:`image_metrics` (whole slice and lesion boxes, [0, 1] scale).
- :mod:`~src_training.evaluation.radiomics`: ROI radiomics (Table 3, left): pyradiomics GLCM correlation,
  homogeneity (Idm), energy inside a lesion box (:func:`glcm_features`, :func:`radiomics_difference`).
- :mod:`~src_training.evaluation.detection`: lesion detection (Table 2): COCO AP-50 / AP-75
  (:func:`detection_ap`, torchmetrics + faster-coco-eval).
- :mod:`~src_training.evaluation.metrics`: :data:`METRICS`, the one table of reported numbers.
- :mod:`~src_training.evaluation.scoring`: :func:`score_volume`, :func:`summarize` (95 % bootstrap intervals),
  :func:`compare` (paired differences and their reading).
- :mod:`~src_training.evaluation.inputs`: :class:`EvaluationError` and the checks of inputs and boxes.
"""

from .detection import detection_ap
from .image import image_metrics, psnr, rmse, ssim
from .inputs import EvaluationError, box_pixel_slices
from .metrics import AP_SOURCES, METRIC_BY_KEY, METRICS, Metric, metric
from .radiomics import GLCM_FEATURES, GLCM_SETTINGS_NOTE, glcm_features, radiomics_difference
from .scoring import (MethodScores, NDCTFeatures, compare, comparison_dict, pct, run_detections, score_volume,
                      summarize, synthetic_boxes, verdict_text)

__all__ = [
    "EvaluationError", "GLCM_FEATURES", "GLCM_SETTINGS_NOTE", "box_pixel_slices", "image_metrics", "psnr", "ssim",
    "rmse", "glcm_features", "radiomics_difference", "detection_ap", "Metric", "METRICS", "METRIC_BY_KEY",
    "AP_SOURCES", "metric", "MethodScores", "NDCTFeatures", "score_volume", "run_detections", "synthetic_boxes",
    "summarize", "compare", "comparison_dict", "verdict_text", "pct",
]
