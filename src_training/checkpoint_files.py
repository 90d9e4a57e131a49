"""Model checkpoint files as typed records: one writer, one reader, one peek.

Three kinds of model file (``docs/architecture.md``, "Checkpoint files"), each a record class:

- :class:`DenoiserCheckpoint` -> ``denoiser.pt``:
  ``{"kind": "denoiser", "model": <registry key>, "state_dict", "config", "method", "step"}``;
- :class:`DetectorCheckpoint` -> ``detector.pt``:
  ``{"kind": "detector", "arch": "faster_rcnn"|"fcos", "backbone", "hparams", "state_dict", "config", "step"}``
  (+ ``"recipe"`` and ``"storage": "float16"`` for the shipped ones);
- :class:`SegmenterCheckpoint` -> ``segmenter.pt`` (TOD-Net's task network):
  ``{"kind": "segmenter", "model": "unet2d", "hparams", "state_dict", "config", "method", "step"}``.

:func:`write_checkpoint` is the only writer of these files (atomic, through
:func:`src_training.checkpoint.save_checkpoint`), :func:`read_checkpoint` the only reader (``torch.load`` with
``weights_only=True``; the kind and fields checked), and :func:`peek_checkpoint` tells what a file is -- kind,
network, method, step, training pixel size -- from the file itself, never from its name (memory-mapped: the
weights are not read). The resume state ``trainer_state.pt`` is the trainers' own format
(:mod:`src_training.training`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional, Union

import torch

from .checkpoint import load_checkpoint, save_checkpoint
from .errors import CheckpointError
from .windowing import DEFAULT_HU_RANGE

__all__ = ["CHECKPOINT_KINDS", "DenoiserCheckpoint", "DetectorCheckpoint", "SegmenterCheckpoint", "ModelCheckpoint",
           "CheckpointInfo", "write_checkpoint", "read_checkpoint", "peek_checkpoint"]

#: Kinds of file napari-lidnet writes (``"trainer_state"`` is the resume state, not a model file).
CHECKPOINT_KINDS = ("denoiser", "detector", "segmenter", "trainer_state")

_HINT = {
    "denoiser": "choose a denoiser.pt written by training",
    "detector": "choose a detector.pt written by training",
    "segmenter": "choose a segmenter.pt written by TOD-Net training",
}


def _common(d: dict[str, Any], path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Optional[int]]:
    sd = d.get("state_dict")
    if not isinstance(sd, dict):
        raise CheckpointError(f"{path} has no weights (state_dict); it is not a complete {d.get('kind')} checkpoint.")
    config = d.get("config") or {}
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: 'config' must be a dict, got {type(config).__name__}.")
    step = d.get("step")
    return sd, dict(config), (None if step is None else int(step))


@dataclass
class DenoiserCheckpoint:
    """A trained denoiser (``denoiser.pt``).

    Attributes
    ----------
    model : str
        Registry key of the network (:data:`src_training.models.denoisers.DENOISERS`: ``cpce``, ``redcnn``, ...).
    state_dict : dict str -> Tensor
        Weights of ``build_denoiser(model)``; input/output ``(B, 1, H, W)`` on the [0, 1] scale of ``config``'s
        ``hu_range``.
    config : dict
        The training configuration (:meth:`src_training.config.TrainConfig.to_dict`): ``hu_range``,
        ``image_size``, ``denoiser``, ...; may be empty for files made outside training.
    method : str or None
        ``"baseline"``, ``"lidnet"`` or ``"todnet"``.
    step : int or None
        Global training step of the weights.
    """

    kind: ClassVar[str] = "denoiser"
    model: str
    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    method: Optional[str] = None
    step: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """The file's dict (the layout in the module docstring)."""
        return {"kind": self.kind, "model": str(self.model), "state_dict": self.state_dict, "config": dict(self.config),
                "method": self.method, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Any = "checkpoint") -> "DenoiserCheckpoint":
        """Checked record from a loaded dict; ``model`` falls back to ``config["denoiser"]`` (older files).

        Raises
        ------
        CheckpointError
            No weights, or no network name.
        """
        sd, config, step = _common(d, path)
        name = d.get("model") or config.get("denoiser")
        if not name:
            raise CheckpointError(f"{path}: the denoiser checkpoint does not name its network ('model').")
        return cls(str(name), sd, config, d.get("method", config.get("method")), step)


@dataclass
class DetectorCheckpoint:
    """A trained lesion detector (``detector.pt``).

    Attributes
    ----------
    arch : str
        ``"faster_rcnn"`` (:class:`src_training.models.detector.LesionDetector`) or ``"fcos"`` (the judge,
        :class:`src_training.models.fcos.FCOSLesionDetector`).
    backbone : str
        ``resnet18`` / ``resnet34`` / ``resnet50``.
    state_dict : dict str -> Tensor
        Weights (float16 when ``storage == "float16"``; loaded into float32 models).
    hparams : dict
        Constructor options of the architecture (``representation_size``, ``fpn_channels``, sampling, ...).
    config : dict
        Training configuration (``hu_range``, ``image_size``, ...).
    step : int or None
    method : str or None
        ``"ndct"`` (trained on normal-dose images only), ``"lidnet"`` or ``"todnet"``.
    recipe : dict or None
        The pretraining recipe of a shipped detector (``lidnet pretrain-detector``).
    storage : str or None
        ``"float16"`` for the shipped files.
    """

    kind: ClassVar[str] = "detector"
    arch: str
    backbone: str
    state_dict: dict[str, torch.Tensor]
    hparams: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    step: Optional[int] = None
    method: Optional[str] = None
    recipe: Optional[dict[str, Any]] = None
    storage: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        """The file's dict (optional ``recipe`` / ``storage`` only when set)."""
        d = {"kind": self.kind, "arch": str(self.arch), "backbone": str(self.backbone), "hparams": dict(self.hparams),
             "state_dict": self.state_dict, "config": dict(self.config), "step": self.step, "method": self.method}
        if self.recipe is not None:
            d["recipe"] = dict(self.recipe)
        if self.storage is not None:
            d["storage"] = str(self.storage)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Any = "checkpoint") -> "DetectorCheckpoint":
        """Checked record; ``arch`` defaults to ``faster_rcnn`` and ``backbone`` to ``config["detector_backbone"]``
        or ``resnet50`` (older files).

        Raises
        ------
        CheckpointError
            No weights, or an unknown architecture.
        """
        sd, config, step = _common(d, path)
        hparams = d.get("hparams") if isinstance(d.get("hparams"), dict) else {}
        arch = str(d.get("arch") or hparams.get("arch") or "faster_rcnn")
        if arch not in ("faster_rcnn", "fcos"):
            raise CheckpointError(f"{path}: unknown detector architecture '{arch}' (faster_rcnn or fcos).")
        backbone = str(d.get("backbone") or hparams.get("backbone") or config.get("detector_backbone", "resnet50"))
        return cls(arch, backbone, sd, dict(hparams), config, step, d.get("method"), d.get("recipe"), d.get("storage"))


@dataclass
class SegmenterCheckpoint:
    """TOD-Net's task network (``segmenter.pt``): :class:`src_training.models.segmenter.UNet2D`.

    Attributes
    ----------
    model : str
        ``"unet2d"``.
    state_dict : dict str -> Tensor
    hparams : dict
        Constructor options (``width``, ``depth``).
    config : dict
    method : str or None
        ``"todnet"``.
    step : int or None
    """

    kind: ClassVar[str] = "segmenter"
    model: str
    state_dict: dict[str, torch.Tensor]
    hparams: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    method: Optional[str] = None
    step: Optional[int] = None

    def to_dict(self) -> dict[str, Any]:
        """The file's dict."""
        return {"kind": self.kind, "model": str(self.model), "hparams": dict(self.hparams), "state_dict": self.state_dict,
                "config": dict(self.config), "method": self.method, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: Any = "checkpoint") -> "SegmenterCheckpoint":
        """Checked record.

        Raises
        ------
        CheckpointError
            No weights.
        """
        sd, config, step = _common(d, path)
        hparams = d.get("hparams") if isinstance(d.get("hparams"), dict) else {}
        return cls(str(d.get("model") or "unet2d"), sd, dict(hparams), config, d.get("method"), step)


ModelCheckpoint = Union[DenoiserCheckpoint, DetectorCheckpoint, SegmenterCheckpoint]
_RECORDS = {c.kind: c for c in (DenoiserCheckpoint, DetectorCheckpoint, SegmenterCheckpoint)}


def write_checkpoint(path: str | os.PathLike, record: ModelCheckpoint) -> Path:
    """Write a model checkpoint atomically (the one writer of ``denoiser.pt`` / ``detector.pt`` /
    ``segmenter.pt``; temp file + ``os.replace``, :func:`src_training.checkpoint.save_checkpoint`).

    Raises
    ------
    TypeError
        ``record`` is not one of the record classes.
    OSError
        The folder cannot be written.
    """
    if not isinstance(record, tuple(_RECORDS.values())):
        raise TypeError(f"write_checkpoint takes a checkpoint record, got {type(record).__name__}.")
    return save_checkpoint(path, record.to_dict())


def _wrong_kind(path, found, kind: str) -> CheckpointError:
    return CheckpointError(f"{path} is a {found or 'unknown'} checkpoint, not a {kind} checkpoint; {_HINT[kind]}.")


def read_checkpoint(path: str | os.PathLike, kind: Optional[str] = None,
                    map_location: str | torch.device = "cpu") -> ModelCheckpoint:
    """Load a model checkpoint as its record (``torch.load(..., weights_only=True)``).

    Parameters
    ----------
    path : path-like
    kind : str, optional
        ``"denoiser"``, ``"detector"`` or ``"segmenter"``: refuse any other kind. None accepts the three.
    map_location : str or torch.device

    Raises
    ------
    CheckpointError
        Missing, damaged or code-carrying file (:func:`src_training.checkpoint.load_checkpoint`), another kind
        than asked, or incomplete fields.
    """
    d = load_checkpoint(path, map_location=map_location)
    found = d.get("kind")
    if kind is not None and found != kind:
        raise _wrong_kind(path, found, kind)
    if found not in _RECORDS:
        raise CheckpointError(f"{path} is a {found or 'unknown'} file, not a denoiser, detector or segmenter "
                              f"checkpoint.")
    return _RECORDS[found].from_dict(d, path)


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file is, read from the file (:func:`peek_checkpoint`).

    Attributes
    ----------
    path : Path
    kind : str
        ``denoiser`` | ``detector`` | ``segmenter`` | ``trainer_state``.
    network : str
        Denoiser registry key (``cpce``), detector architecture (``faster_rcnn`` / ``fcos``) or ``unet2d``;
        ``""`` for a trainer state.
    backbone : str or None
        Detector backbone.
    method : str or None
        ``baseline`` / ``lidnet`` / ``todnet`` (denoisers, segmenters).
    step : int or None
    hu_range : (lo, hi) HU
        The range the network's [0, 1] input maps to (default ``(-1024, 1024)``).
    image_size : int or None
        Slice size in pixels the network was trained at (``config["image_size"]``; None = native size).
    shipped : bool
        A file the project ships (has a pretraining ``recipe``).
    """

    path: Path
    kind: str
    network: str
    backbone: Optional[str] = None
    method: Optional[str] = None
    step: Optional[int] = None
    hu_range: tuple[float, float] = DEFAULT_HU_RANGE
    image_size: Optional[int] = None
    shipped: bool = False

    def describe(self) -> str:
        """A short label, e.g. ``"denoiser cpce (lidnet, step 240)"``."""
        bits = [b for b in (self.method, self.backbone, None if self.step is None else f"step {self.step}") if b]
        return f"{self.kind} {self.network}".strip() + (f" ({', '.join(bits)})" if bits else "")


def peek_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Read what a checkpoint is without building a network (memory-mapped ``weights_only`` load: the
    weights are not read into memory).

    Raises
    ------
    CheckpointError
        Missing, damaged, code-carrying, or not a napari-lidnet checkpoint (no ``kind``).
    """
    p = Path(path)
    d = None
    if p.is_file():
        try:
            d = torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # noqa: BLE001 - not a zip-format file: the full reader gives the precise message
            d = None
    if d is None:
        d = load_checkpoint(p)
    if not isinstance(d, dict) or d.get("kind") not in CHECKPOINT_KINDS:
        raise CheckpointError(f"{p} is not a napari-lidnet checkpoint (no 'kind' among {', '.join(CHECKPOINT_KINDS)}).")
    kind = d["kind"]
    config = d.get("config") if isinstance(d.get("config"), dict) else {}
    hr = config.get("hu_range") or DEFAULT_HU_RANGE
    size = config.get("image_size")
    if kind == "detector":
        rec = DetectorCheckpoint.from_dict(d, p)
        return CheckpointInfo(p, kind, rec.arch, rec.backbone, rec.method, rec.step, (float(hr[0]), float(hr[1])),
                              None if size is None else int(size), rec.recipe is not None)
    if kind in ("denoiser", "segmenter"):
        rec = _RECORDS[kind].from_dict(d, p)
        return CheckpointInfo(p, kind, rec.model, None, rec.method, rec.step, (float(hr[0]), float(hr[1])),
                              None if size is None else int(size))
    step = d.get("step")
    return CheckpointInfo(p, kind, "", None, None, None if step is None else int(step), (float(hr[0]), float(hr[1])),
                          None if size is None else int(size))
