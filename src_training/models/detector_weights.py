"""Loading weights files into the lesion detector: torchvision, ImageNet ResNet and napari-lidnet files.

Used by :func:`src_training.models.detector.build_detector` (which reads the file with
:func:`src_training.checkpoint.load_checkpoint`, ``weights_only=True``; nothing downloads). The helpers
inspect a state dict (prefix, backbone, norm layers) and load it with checks whose messages say what the
file holds and what to choose instead.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import CheckpointError

__all__ = ["guess_backbone", "infer_norm", "load_weights_into", "strip_prefix"]


def strip_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """``sd`` without a ``module.`` (DataParallel) or ``model.`` (:class:`LesionDetector`) prefix common to all keys."""
    for prefix in ("module.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def guess_backbone(sd: dict[str, Tensor], prefix: str) -> str:
    """Name of the ResNet whose weights ``sd`` holds under ``prefix`` (for error messages; never raises)."""
    keys = [k[len(prefix):] for k in sd if k.startswith(prefix)]
    if not keys:
        return "unknown"
    bottleneck = any(k.startswith("layer1.0.conv3.") for k in keys)
    n_layer3 = len({k.split(".")[1] for k in keys if k.startswith("layer3.")})
    if bottleneck:
        return {6: "resnet50", 23: "resnet101", 36: "resnet152"}.get(n_layer3, "a bottleneck ResNet")
    return {2: "resnet18", 6: "resnet34"}.get(n_layer3, "a basic-block ResNet")


def infer_norm(sd: dict[str, Tensor]) -> str:
    """Norm of the network that saved ``sd``: ``num_batches_tracked`` -> ``"batch"``, running statistics only
    -> ``"frozen"`` (torchvision's FrozenBatchNorm2d), neither -> ``"group"``."""
    if any(k.endswith("num_batches_tracked") for k in sd):
        return "batch"
    if any(k.endswith("running_mean") for k in sd):
        return "frozen"
    return "group"


def load_weights_into(
    target: nn.Module, sd: dict[str, Tensor], path: Path, what: str, guess: str, allow_new_predictor: bool
) -> None:
    """Load ``sd`` into ``target`` after checking names and shapes (``num_batches_tracked`` optional).

    Parameters
    ----------
    target : nn.Module
        The torchvision ``FasterRCNN`` of a :class:`LesionDetector`, or its ResNet body.
    sd : dict[str, Tensor]
        State dict (prefix stripped).
    path : Path
        The file, for messages.
    what : str
        What ``target`` is, for messages (e.g. ``"a resnet18 Faster R-CNN detector"``).
    guess : str
        :func:`guess_backbone` of the file, for messages.
    allow_new_predictor : bool
        A box predictor made for another number of classes is dropped (re-initialised) with a warning
        instead of an error (torchvision COCO files).

    Raises
    ------
    CheckpointError
        Missing, unexpected or differently shaped weights (the message lists examples and the file's
        backbone), or tensors of unexpected dtypes.
    """
    expected = {k: v for k, v in target.state_dict().items() if not k.endswith("num_batches_tracked")}
    given = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & given.keys() if tuple(expected[k].shape) != tuple(given[k].shape))
    if allow_new_predictor and wrong and all(k.startswith("roi_heads.box_predictor.") for k in wrong):
        warnings.warn(
            f"{path}: the box predictor has {given['roi_heads.box_predictor.cls_score.weight'].shape[0]} classes; "
            f"it is re-initialised for {expected['roi_heads.box_predictor.cls_score.weight'].shape[0]}.",
            stacklevel=3,
        )
        for k in wrong:
            given.pop(k)
        wrong = []
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} weights missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected weights (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(
                f"{len(wrong)} with other shapes (e.g. {wrong[0]}: file {tuple(given[wrong[0]].shape)}, "
                f"model {tuple(expected[wrong[0]].shape)})"
            )
        raise CheckpointError(
            f"Weights file {path} does not fit {what}: {'; '.join(parts)}. The file looks like it was saved for "
            f"backbone {guess}. Choose the backbone the file was trained with, or another weights file."
        )
    if any(isinstance(v, Tensor) and not v.is_floating_point() and v.dtype != torch.int64 for v in given.values()):
        raise CheckpointError(f"Weights file {path} holds tensors of unexpected types; it is not a detector file.")
    result = target.load_state_dict(given, strict=False)
    left = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    left += [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if left:  # pragma: no cover - the pre-check above covers these
        raise CheckpointError(f"Weights file {path} does not fit {what}: {left[:5]}")
