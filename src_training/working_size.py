"""The working size of a trained network: the slice size (pixels, square) it was trained and evaluated at
(``config["image_size"]``: 256 for the shipped models, whose training slices were resampled from 512 px),
and detection at that size on slices of another size.

A network run at another scale sees lesions and vessels at sizes it never learned: on the sample lung2 the
shipped Faster R-CNN run on the native 512 px LDCT middle slice keeps 22 boxes >= 0.5 (on vessels), at its
256 px working size 3. Denoising at the working size is :func:`src_training.inference.denoise_slices`'s
``image_size``; the napari Detect widget and ``lidnet detect`` use :func:`detect_at_size`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import numpy as np

from . import inference
from .data.cases import resample_slices

__all__ = ["RESAMPLE_CHUNK", "working_size", "detect_at_size"]

#: Slices resampled at a time to the detector's working size (bounds the memory of a whole-volume run).
RESAMPLE_CHUNK = 32


def working_size(config: dict[str, Any]) -> int | None:
    """The slice size (pixels, square) a detector was trained and evaluated at: its configuration's
    ``image_size`` (256 for the shipped detectors), or None when it worked on native slices."""
    size = config.get("image_size") if isinstance(config, dict) else None
    try:
        size = int(size) if size is not None else None
    except (TypeError, ValueError):
        return None
    return size if size and size > 0 else None


def detect_at_size(detector: Any, hu: np.ndarray, idx: Sequence[int], size: int, hu_range: tuple[float, float],
                   k: int, score_thresh: float, batch_size: int = 1,
                   on_message: Optional[Callable[[str], None]] = None) -> Iterator[dict[str, Any]]:
    """Detections of slices ``idx`` of ``hu`` resampled to ``size`` x ``size`` (bilinear, anti-aliased, as
    :func:`src_training.data.cases.resample_slices` prepares the training and evaluation slices).

    Parameters
    ----------
    detector : LesionDetector or FCOSLesionDetector
        In eval mode (:func:`src_training.inference.load_detector`).
    hu : ndarray (z, H, W), HU (float32 or anything numpy can convert; a lazy array is read slice-wise)
    idx : sequence of int
        The slices to run, in ``[0, z)``.
    size : int
        The working size in pixels (:func:`working_size`).
    hu_range, k, score_thresh, batch_size, on_message
        As :func:`src_training.inference.detect_slices`.

    Yields
    ------
    dict
        :func:`src_training.inference.detect_slices`'s dicts with ``slice`` the index in ``hu``, ``done`` /
        ``total`` counted over ``idx``, and ``boxes`` / ``proposals`` (n, 4) float32 xyxy mapped back to the
        (H, W) pixels, clipped to the image.

    Raises
    ------
    src_training.inference.InferenceMemoryError
        Out of memory even with one slice on the CPU.
    """
    h, w = int(hu.shape[-2]), int(hu.shape[-1])
    scale = np.array([w / size, h / size, w / size, h / size], dtype=np.float32)
    limit = np.array([w, h, w, h], dtype=np.float32)
    total = len(idx)
    for start in range(0, total, RESAMPLE_CHUNK):
        part = idx[start:start + RESAMPLE_CHUNK]
        small, _, _ = resample_slices(np.asarray(hu[part], dtype=np.float32), {}, (1.0, 1.0, 1.0), size)
        for res in inference.detect_slices(detector, small, hu_range, k=k, score_thresh=score_thresh,
                                           batch_size=batch_size, on_message=on_message):
            res = dict(res)
            res["slice"] = int(part[int(res["slice"])])
            res["done"], res["total"] = start + int(res["done"]), total
            for key in ("boxes", "proposals"):
                b = np.asarray(res[key], dtype=np.float32).reshape(-1, 4) * scale
                res[key] = np.clip(b, 0.0, limit)
            yield res
