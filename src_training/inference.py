"""Applying trained checkpoints: denoise CT slices/volumes and detect lesions.

Checkpoint formats (``docs/architecture.md``): ``denoiser.pt`` ``{"kind": "denoiser", "model", "state_dict",
"config", "method", "step"}`` and ``detector.pt`` ``{"kind": "detector", "backbone", "state_dict", "config",
"step"}``, loaded only with ``torch.load(weights_only=True)`` (:func:`src_training.checkpoint.load_checkpoint`).

Input volumes are HU ``(z, y, x)`` or a single slice ``(y, x)``; they are clipped to the checkpoint's
``hu_range`` and scaled to [0, 1] for the networks (:func:`src_training.windowing.hu_to_unit`); denoised
output is converted back with :func:`~src_training.windowing.unit_to_hu`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint
from .device import auto_device
from .errors import CheckpointError, CTLoadError
from .windowing import DEFAULT_HU_RANGE, hu_to_unit, unit_to_hu


def _check_kind(ckpt: dict[str, Any], kind: str, path) -> None:
    found = ckpt.get("kind")
    if found != kind:
        hint = {
            "denoiser": "choose a denoiser.pt written by training",
            "detector": "choose a detector.pt written by training",
        }[kind]
        raise CheckpointError(
            f"{path} is a {found or 'unknown'} checkpoint, not a {kind} checkpoint; {hint}."
        )
    if "state_dict" not in ckpt or not isinstance(ckpt["state_dict"], dict):
        raise CheckpointError(f"{path} has no weights (state_dict); it is not a complete {kind} checkpoint.")


def load_denoiser(path: str | os.PathLike, device: str | torch.device = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """Load a ``denoiser.pt``.

    Parameters
    ----------
    path : path-like
    device : str or torch.device
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ...

    Returns
    -------
    (nn.Module, dict)
        The denoiser in eval mode on ``device``, and its training configuration dict (``hu_range`` etc.;
        ``"denoiser"`` is set to the architecture name and ``"method"``/``"step"`` copied from the file).

    Raises
    ------
    CheckpointError
        Missing/corrupt/unsafe file, wrong kind, unknown architecture or weights that do not fit it.
    ConfigError
        Unavailable device.
    """
    from .models.denoisers import build_denoiser

    dev = device if isinstance(device, torch.device) else auto_device(device)
    ckpt = load_checkpoint(path)
    _check_kind(ckpt, "denoiser", path)
    config = dict(ckpt.get("config") or {})
    name = ckpt.get("model") or config.get("denoiser")
    try:
        model = build_denoiser(str(name))
        model.load_state_dict(ckpt["state_dict"])
    except Exception as exc:  # noqa: BLE001 - ConfigError (unknown name) or RuntimeError (shapes)
        raise CheckpointError(f"{path}: cannot build denoiser '{name}' from these weights ({exc}).") from exc
    config.setdefault("hu_range", list(DEFAULT_HU_RANGE))
    config["denoiser"] = str(name)
    config["method"] = ckpt.get("method", config.get("method"))
    config["step"] = ckpt.get("step")
    return model.to(dev).eval(), config


def load_detector(path: str | os.PathLike, device: str | torch.device = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """Load a ``detector.pt``.

    Returns
    -------
    (LesionDetector, dict)
        The detector in eval mode on ``device`` and its configuration dict (``hu_range`` etc.;
        ``"detector_backbone"`` set from the file).

    Raises
    ------
    CheckpointError
        Missing/corrupt/unsafe file, wrong kind, or weights that do not fit the backbone.
    ConfigError
        Unavailable device.
    """
    from .models.detector import build_detector

    dev = device if isinstance(device, torch.device) else auto_device(device)
    ckpt = load_checkpoint(path)
    _check_kind(ckpt, "detector", path)
    config = dict(ckpt.get("config") or {})
    backbone = ckpt.get("backbone") or config.get("detector_backbone", "resnet50")
    hparams = ckpt.get("hparams") if isinstance(ckpt.get("hparams"), dict) else {}
    try:
        # build_detector reads the file again (weights_only) and applies its hparams (norm, anchors).
        detector = build_detector(str(backbone), int(hparams.get("num_classes", 2)), weights_path=path)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot build a '{backbone}' detector from these weights ({exc}).") from exc
    config.setdefault("hu_range", list(DEFAULT_HU_RANGE))
    config["detector_backbone"] = str(backbone)
    config["step"] = ckpt.get("step")
    return detector.to(dev).eval(), config


def _as_volume(hu: Any) -> tuple[np.ndarray, bool]:
    arr = np.asarray(hu)
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise CTLoadError(f"Expected a CT slice (y, x) or volume (z, y, x) in HU, got an array of shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.number):
        raise CTLoadError(f"Expected numeric HU values, got dtype {arr.dtype}.")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise CTLoadError("The CT contains NaN or infinite values; fix or reload the image before processing.")
    single = arr.ndim == 2
    return (arr[None] if single else arr), single


def _model_device(model: nn.Module, device) -> torch.device:
    if device is not None:
        return device if isinstance(device, torch.device) else auto_device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def denoise_slices(
    model: nn.Module,
    hu: np.ndarray,
    hu_range: Sequence[float] = DEFAULT_HU_RANGE,
    device: Optional[str | torch.device] = None,
    batch_size: int = 4,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Denoise slice batches, yielding progress.

    Parameters
    ----------
    model : nn.Module
        A denoiser, ``(B,1,H,W)`` [0, 1] -> same. Put in eval mode here.
    hu : ndarray (z, y, x) or (y, x), HU
    hu_range : (float, float)
        The model's HU range (from its checkpoint config).
    device : str or torch.device, optional
        Where to compute (default: the model's device). The model is moved there.
    batch_size : int
        Slices per forward pass.

    Yields
    ------
    (done, total, hu_batch)
        Slices done so far, total slices, and the denoised batch as float32 HU ``(b, y, x)`` (one slice
        ``(1, y, x)`` for 2-D input). Values are ``unit_to_hu`` of the output, so within ``hu_range``
        except where the network outputs > 1.

    Raises
    ------
    CTLoadError
        Input not 2-D/3-D numeric finite.
    ValueError
        ``batch_size < 1``.
    """
    vol, _ = _as_volume(hu)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = _model_device(model, device)
    model = model.to(dev).eval()
    total = int(vol.shape[0])
    hr = (float(hu_range[0]), float(hu_range[1]))
    done = 0
    with torch.inference_mode():
        for start in range(0, total, int(batch_size)):
            chunk = vol[start:start + int(batch_size)]
            x = torch.from_numpy(hu_to_unit(chunk, hr))[:, None].to(dev)
            y = model(x)[:, 0].float().cpu().numpy()
            done += chunk.shape[0]
            yield done, total, unit_to_hu(y, hr).astype(np.float32, copy=False)


def denoise_volume(
    model: nn.Module,
    hu: np.ndarray,
    hu_range: Sequence[float] = DEFAULT_HU_RANGE,
    device: Optional[str | torch.device] = None,
    batch_size: int = 4,
    progress=None,
) -> np.ndarray:
    """Denoise a whole volume or slice (see :func:`denoise_slices`).

    Parameters
    ----------
    progress : callable(done, total), optional
        Called after each batch.

    Returns
    -------
    ndarray float32, same shape as ``hu`` ((z, y, x) or (y, x)), HU.
    """
    vol, single = _as_volume(hu)
    out = np.empty_like(vol, dtype=np.float32)
    start = 0
    for done, total, batch in denoise_slices(model, vol, hu_range, device=device, batch_size=batch_size):
        out[start:done] = batch
        start = done
        if progress is not None:
            progress(done, total)
    return out[0] if single else out


def detect_slices(
    detector: nn.Module,
    hu: np.ndarray,
    hu_range: Sequence[float] = DEFAULT_HU_RANGE,
    *,
    k: int = 5,
    score_thresh: float = 0.05,
    device: Optional[str | torch.device] = None,
    slices: Optional[Sequence[int]] = None,
    batch_size: int = 4,
) -> Iterator[dict[str, Any]]:
    """Detect lesions slice by slice.

    Parameters
    ----------
    detector : LesionDetector
        (contract API: ``detect(images, score_thresh)``, ``rpn_topk(images, k)``).
    hu : ndarray (z, y, x) or (y, x), HU
    hu_range : (float, float)
        The detector's HU range.
    k : int
        Top-K RPN proposals reported per slice (as in the ROI perceptual loss, Eq. 4).
    score_thresh : float in [0, 1]
        Minimum detection score.
    device : optional, default the detector's device.
    slices : sequence of int, optional
        Slice indices to process (default all).
    batch_size : int

    Yields
    ------
    dict
        Per slice, in order: ``slice`` (int), ``done``/``total`` (progress), ``boxes`` float32 (n, 4) xyxy
        pixels, ``scores`` float32 (n,), ``labels`` int64 (n,), ``proposals`` float32 (K, 4) and
        ``objectness`` float32 (K,) (the top-K RPN proposals, sorted by objectness).

    Raises
    ------
    CTLoadError
        Bad input array. ``IndexError`` for a slice index outside the volume.
    """
    vol, _ = _as_volume(hu)
    dev = _model_device(detector, device)
    detector = detector.to(dev).eval()
    hr = (float(hu_range[0]), float(hu_range[1]))
    idx = list(range(vol.shape[0])) if slices is None else [int(s) for s in slices]
    for s in idx:
        if not 0 <= s < vol.shape[0]:
            raise IndexError(f"Slice {s} is outside the volume of {vol.shape[0]} slices.")
    total = len(idx)
    done = 0
    with torch.inference_mode():
        for start in range(0, total, max(1, int(batch_size))):
            sel = idx[start:start + max(1, int(batch_size))]
            x = torch.from_numpy(hu_to_unit(vol[sel], hr))[:, None].to(dev)
            dets = detector.detect(x, score_thresh=float(score_thresh))
            rpn = detector.rpn_topk(x, int(k))
            for j, s in enumerate(sel):
                d = dets[j]
                done += 1
                yield {
                    "slice": int(s),
                    "done": done,
                    "total": total,
                    "boxes": d["boxes"].detach().float().cpu().numpy().reshape(-1, 4),
                    "scores": d["scores"].detach().float().cpu().numpy().reshape(-1),
                    "labels": d["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1),
                    "proposals": rpn.proposals[j].detach().float().cpu().numpy().reshape(-1, 4),
                    "objectness": rpn.objectness[j].detach().float().cpu().numpy().reshape(-1),
                }
