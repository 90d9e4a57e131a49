"""Applying trained checkpoints: denoise CT slices/volumes and detect lesions.

Checkpoint formats (``docs/architecture.md``): ``denoiser.pt`` ``{"kind": "denoiser", "model", "state_dict",
"config", "method", "step"}`` and ``detector.pt`` ``{"kind": "detector", "backbone", "state_dict", "config",
"step"}``, read as typed records by :func:`src_training.checkpoint_files.read_checkpoint` (``torch.load(weights_only=True)``).

Input volumes are HU ``(z, y, x)`` or a single slice ``(y, x)``; they are clipped to the checkpoint's
``hu_range`` and scaled to [0, 1] for the networks (:func:`src_training.windowing.hu_to_unit`); denoised
output is converted back with :func:`~src_training.windowing.unit_to_hu`.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint_files import read_checkpoint
from .device import auto_device
from .errors import CheckpointError, CTLoadError, LidnetError
from .models.denoisers import build_denoiser
from .models.detector import build_detector
from .models.fcos import build_fcos_detector
from .windowing import DEFAULT_HU_RANGE, hu_to_unit, unit_to_hu

log = logging.getLogger(__name__)


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
    dev = device if isinstance(device, torch.device) else auto_device(device)
    rec = read_checkpoint(path, "denoiser")
    config = dict(rec.config)
    name = rec.model
    try:
        model = build_denoiser(str(name))
        model.load_state_dict(rec.state_dict)
    except Exception as exc:  # noqa: BLE001 - ConfigError (unknown name) or RuntimeError (shapes)
        raise CheckpointError(f"{path}: cannot build denoiser '{name}' from these weights ({exc}).") from exc
    config.setdefault("hu_range", list(DEFAULT_HU_RANGE))
    config["denoiser"] = str(name)
    config["method"] = rec.method
    config["step"] = rec.step
    return model.to(dev).eval(), config


def load_detector(path: str | os.PathLike, device: str | torch.device = "auto") -> tuple[nn.Module, dict[str, Any]]:
    """Load a ``detector.pt``.

    Returns
    -------
    (LesionDetector or FCOSLesionDetector, dict)
        The detector in eval mode on ``device`` (the architecture from the file's ``arch``: ``faster_rcnn``,
        the default, or ``fcos``, the judge) and its configuration dict (``hu_range`` etc.;
        ``"detector_backbone"`` and ``"arch"`` set from the file). fp16-stored weights are loaded into the
        float32 model.

    Raises
    ------
    CheckpointError
        Missing/corrupt/unsafe file, wrong kind, or weights that do not fit the backbone.
    ConfigError
        Unavailable device.
    """
    dev = device if isinstance(device, torch.device) else auto_device(device)
    rec = read_checkpoint(path, "detector")
    config = dict(rec.config)
    backbone, hparams, arch = rec.backbone, rec.hparams, rec.arch
    if arch == "fcos":
        try:
            opts = {k: v for k, v in hparams.items() if k not in ("arch", "backbone", "num_classes")}
            detector = build_fcos_detector(str(backbone), int(hparams.get("num_classes", 2)), **opts)
            detector.load_state_dict(rec.state_dict)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{path}: cannot build an FCOS '{backbone}' detector from these weights ({exc}).") from exc
    else:  # faster_rcnn (read_checkpoint refuses any other architecture)
        try:
            # build_detector reads the file again (weights_only) and applies its hparams (norm, anchors).
            detector = build_detector(str(backbone), int(hparams.get("num_classes", 2)), weights_path=path)
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise CheckpointError(f"{path}: cannot build a '{backbone}' detector from these weights ({exc}).") from exc
    config.setdefault("hu_range", list(DEFAULT_HU_RANGE))
    config["detector_backbone"] = str(backbone)
    config["step"] = rec.step
    config["arch"] = arch
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


# ============================================================================ fast inference path

PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "fp16")
"""Compute precisions of :func:`prepare_denoiser` (``fp32`` default; ``bf16``/``fp16`` via ``torch.autocast``)."""

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_FAST_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple[tuple, nn.Module]]]" = weakref.WeakKeyDictionary()


class InferenceMemoryError(LidnetError, MemoryError):
    """Out of memory even with one slice per batch on the CPU (close other programs or crop the volume)."""


class InferenceMemoryWarning(RuntimeWarning):
    """Issued when denoising/detection ran out of memory and continued with a smaller batch or on the CPU."""


def _is_oom(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU out-of-memory errors (``torch.OutOfMemoryError``, MPS and allocator RuntimeErrors)."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return any(s in msg for s in ("out of memory", "can't allocate memory", "not enough memory"))
    return False


def _free_device_memory(dev: torch.device) -> None:
    try:
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        elif dev.type == "mps":
            torch.mps.empty_cache()
    except Exception:  # noqa: BLE001 - best effort
        pass


def _notify(message: str, on_message: Optional[Callable[[str], None]]) -> None:
    log.warning(message)
    warnings.warn(message, InferenceMemoryWarning, stacklevel=3)
    if on_message is not None:
        on_message(message)


def _deconv_as_conv(d: nn.ConvTranspose2d) -> Optional[nn.Conv2d]:
    """An ``nn.Conv2d`` computing exactly what the stride-1 transposed convolution ``d`` computes.

    A stride-1, dilation-1, ungrouped transposed convolution with padding ``p`` equals a convolution with
    padding ``k - 1 - p`` and the kernel flipped and in/out channels swapped. Returns None for other
    configurations. (oneDNN's direct convolution is markedly faster than its deconvolution on CPU.)
    """
    if (
        tuple(d.stride) != (1, 1) or d.groups != 1 or tuple(d.dilation) != (1, 1)
        or tuple(d.output_padding) != (0, 0) or d.padding_mode != "zeros"
    ):
        return None
    k = tuple(d.kernel_size)
    pad = (k[0] - 1 - d.padding[0], k[1] - 1 - d.padding[1])
    if min(pad) < 0:
        return None
    conv = nn.Conv2d(d.in_channels, d.out_channels, k, padding=pad, bias=d.bias is not None)
    conv = conv.to(device=d.weight.device, dtype=d.weight.dtype)
    with torch.no_grad():
        conv.weight.copy_(d.weight.flip(-1, -2).transpose(0, 1))
        if d.bias is not None:
            conv.bias.copy_(d.bias)
    return conv


def _swap_deconvs(module: nn.Module) -> int:
    n = 0
    for name, child in module.named_children():
        conv = _deconv_as_conv(child) if type(child) is nn.ConvTranspose2d else None
        if conv is not None:
            setattr(module, name, conv)
            n += 1
        else:
            n += _swap_deconvs(child)
    return n


class _FastDenoiser(nn.Module):
    """Inference copy of a denoiser: frozen weights, deconvs as convs, channels_last, optional autocast."""

    def __init__(self, net: nn.Module, precision: str, channels_last: bool, device: torch.device):
        super().__init__()
        self.net = net
        self.precision = precision
        self.channels_last = channels_last
        self.device_type = device.type
        self.applied: list[str] = []

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - (B,1,H,W) [0,1] -> (B,1,H,W) float32
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.precision in _AUTOCAST_DTYPES:
            with torch.autocast(self.device_type, dtype=_AUTOCAST_DTYPES[self.precision]):
                y = self.net(x)
        else:
            y = self.net(x)
        return y.float().contiguous()


def _weights_signature(model: nn.Module) -> tuple:
    return tuple((t.data_ptr(), t._version, t.device.type) for t in model.state_dict().values())


def prepare_denoiser(
    model: nn.Module,
    device: Optional[str | torch.device] = None,
    *,
    precision: str = "fp32",
    compile: bool = False,
    channels_last: bool = True,
    example: Optional[Tensor] = None,
) -> nn.Module:
    """An inference-optimised copy of a denoiser (the fast path of :func:`denoise_slices`).

    Optimisations (each measured in ``benchmarks/bench.py``, see ``docs/benchmarks.md``):
    weights frozen (no autograd), stride-1 ``nn.ConvTranspose2d`` layers rewritten as the equivalent
    ``nn.Conv2d`` (exact up to float rounding; oneDNN convolutions are faster than deconvolutions),
    channels_last memory format, optional ``torch.autocast`` (``bf16``/``fp16``) and optional
    ``torch.compile`` (needs a C++ compiler on CPU; not used by default: the compile time is longer than a
    typical volume's run time). The user's ``model`` is not modified. The copy is cached per model and
    rebuilt when the model's weights change (e.g. by further training).

    If an optimisation fails, or the copy's output on ``example`` differs from the plain model's by more
    than 1e-3 (fp32) / 2e-2 (bf16/fp16) in [0, 1] units, the optimisation is dropped with a log message
    (logger ``src_training.inference``) and the plain model is returned.

    Parameters
    ----------
    model : nn.Module
        A denoiser ``(B, 1, H, W)`` [0, 1] -> same shape.
    device : str or torch.device, optional
        Where it will run (default: the model's device).
    precision : str
        ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` (:data:`PRECISIONS`).
    compile : bool
        Also ``torch.compile`` the copy.
    channels_last : bool
        Use the channels_last memory format.
    example : Tensor, optional
        ``(b, 1, h, w)`` [0, 1] input used to check the copy against the plain model (keep it small).

    Returns
    -------
    nn.Module
        Eval-mode module ``(B, 1, H, W)`` float32 [0, 1] -> ``(B, 1, H, W)`` float32, on ``device``.

    Raises
    ------
    ValueError
        Unknown ``precision``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = _model_device(model, device)
    key = (str(dev), precision, bool(compile), bool(channels_last))
    signature = _weights_signature(model)
    per_model = _FAST_CACHE.setdefault(model, {})
    cached = per_model.get(key)
    if cached is not None and cached[0] == signature:
        return model.to(dev).eval() if cached[1] is None else cached[1]
    applied: list[str] = []
    try:
        net = copy.deepcopy(model).to(dev).eval()
        for p in net.parameters():
            p.requires_grad_(False)
        n = _swap_deconvs(net)
        if n:
            applied.append(f"{n} deconv->conv")
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            applied.append("channels_last")
        fast: nn.Module = _FastDenoiser(net, precision, channels_last, dev).eval()
        if precision != "fp32":
            applied.append(f"autocast {precision}")
        if compile:
            try:
                fast = torch.compile(fast)
                applied.append("torch.compile")
            except Exception as exc:  # noqa: BLE001 - optional
                log.info("torch.compile unavailable (%s); running without it.", exc)
        if example is not None:
            ex = example.to(dev)
            was_training = model.training
            try:
                with torch.inference_mode():
                    ref = model.eval()(ex).float()
                    got = fast(ex)
            finally:
                model.train(was_training)
            tol = 1e-3 if precision == "fp32" else 2e-2
            if got.shape != ref.shape or not torch.allclose(got, ref, atol=tol, rtol=0):
                err = (got - ref).abs().max().item() if got.shape == ref.shape else float("nan")
                raise RuntimeError(f"optimised copy differs from the plain model (max |diff| {err:.2e})")
    except Exception as exc:  # noqa: BLE001 - fall back to the plain model, logged
        if _is_oom(exc):
            raise  # the caller's out-of-memory handling retries with fewer slices
        log.warning("Fast inference path unavailable for %s (%s); using the plain model.", type(model).__name__, exc)
        per_model[key] = (signature, None)  # no strong reference to the model from its own cache entry
        return model.to(dev).eval()
    try:
        fast.applied = applied
    except Exception:  # noqa: BLE001 - compiled wrappers may refuse attributes
        pass
    log.info("Denoiser inference path for %s on %s: %s", type(model).__name__, dev, ", ".join(applied) or "plain")
    per_model[key] = (signature, fast)
    return fast


def _to_device(x: Tensor, dev: torch.device) -> Tensor:
    if dev.type == "cuda":
        return x.pin_memory().to(dev, non_blocking=True)
    return x.to(dev)


def _oom_batches(
    total: int,
    batch_size: int,
    dev: torch.device,
    run: Callable[[int, int, torch.device], Any],
    on_message: Optional[Callable[[str], None]],
    what: str,
    on_cpu_fallback: Optional[Callable[[], None]] = None,
) -> Iterator[tuple[int, int, Any]]:
    """Run ``run(start, stop, device)`` over ``range(total)`` in batches, surviving out-of-memory errors.

    On an out-of-memory error the same slices are retried with the batch size halved, down to 1; at 1 on
    a GPU/MPS device the work moves to the CPU (``on_cpu_fallback`` is called first); at 1 on the CPU
    :class:`InferenceMemoryError` is raised. Every change is logged, warned (:class:`InferenceMemoryWarning`)
    and passed to ``on_message``. Yields ``(start, stop, result)``.
    """
    bs = int(batch_size)
    start = 0
    while start < total:
        stop = min(total, start + bs)
        try:
            result = run(start, stop, dev)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory errors are handled
            if not _is_oom(exc):
                raise
            _free_device_memory(dev)
            if stop - start > 1:
                bs = max(1, (stop - start) // 2)
                _notify(
                    f"Not enough memory on {dev} for {what} {stop - start} slices at a time; "
                    f"continuing with {bs} slice(s) at a time (slower, same result).",
                    on_message,
                )
                continue
            if dev.type != "cpu":
                _notify(
                    f"Not enough memory on {dev} for {what} even one slice; continuing on the CPU "
                    "(much slower, same result). Close other GPU programs or crop the volume to use the GPU.",
                    on_message,
                )
                dev = torch.device("cpu")
                bs = int(batch_size)  # host memory is usually larger: start again from the requested size
                if on_cpu_fallback is not None:
                    on_cpu_fallback()
                continue
            raise InferenceMemoryError(
                f"Not enough memory for {what} one slice on the CPU ({exc}). Close other "
                "programs, or crop/downsample the image before processing."
            ) from exc
        yield start, stop, result
        start = stop


def denoise_slices(
    model: nn.Module,
    hu: np.ndarray,
    hu_range: Sequence[float] = DEFAULT_HU_RANGE,
    device: Optional[str | torch.device] = None,
    batch_size: int = 4,
    *,
    fast: bool = True,
    precision: str = "fp32",
    on_message: Optional[Callable[[str], None]] = None,
    image_size: Optional[int] = None,
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
        Slices per forward pass (halved automatically when memory runs out, see below).
    fast : bool
        Use the optimised inference copy from :func:`prepare_denoiser` (default; falls back to the plain
        model, logged, when an optimisation is unavailable). ``False`` forces plain eager fp32 PyTorch.
        Both give the same shapes and dtypes; values agree to ~1e-6 in [0, 1] units in fp32.
    precision : str
        ``"fp32"`` (default), ``"bf16"`` or ``"fp16"`` autocast for the fast path (see ``docs/benchmarks.md``
        for the measured PSNR change; on CPUs without bf16 instructions it is slower).
    on_message : callable(str), optional
        Receives user-readable messages (out-of-memory fallbacks); they are also logged and issued as
        :class:`InferenceMemoryWarning`.
    image_size : int, optional
        The slice size in pixels the network was trained at (its checkpoint's ``config["image_size"]``,
        pixels across the field of view). Slices of another size are resampled to ``image_size x
        image_size`` (bilinear, anti-aliased, on the [0, 1] scale), denoised there and resampled back to
        their own grid, as training resampled its slices (:func:`src_training.data.cases.resample_slices`).
        None (default) or the same size: the network runs on the input grid.

    Yields
    ------
    (done, total, hu_batch)
        Slices done so far, total slices, and the denoised batch as float32 HU ``(b, y, x)`` (one slice
        ``(1, y, x)`` for 2-D input). Values are ``unit_to_hu`` of the output, so within ``hu_range``
        except where the network outputs > 1.

    Out of memory
    -------------
    On ``torch.OutOfMemoryError`` (or the MPS/CPU equivalents) the batch is retried with half as many
    slices, down to 1, then on the CPU (the model is moved back afterwards).

    Raises
    ------
    CTLoadError
        Input not 2-D/3-D numeric finite.
    ValueError
        ``batch_size < 1`` or unknown ``precision``.
    InferenceMemoryError
        Out of memory with one slice on the CPU.
    """
    vol, _ = _as_volume(hu)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = _model_device(model, device)
    model = model.to(dev).eval()
    home = dev
    total = int(vol.shape[0])
    hr = (float(hu_range[0]), float(hu_range[1]))
    nets: dict[str, nn.Module] = {}

    def net_for(d: torch.device) -> nn.Module:
        key = str(d)
        if key not in nets:
            if fast:
                probe = torch.from_numpy(hu_to_unit(vol[:1, :64, :64], hr))[:, None]
                nets[key] = prepare_denoiser(model, d, precision=precision, example=probe)
            else:
                nets[key] = model
        return nets[key]

    grid = vol.shape[1:]
    work = None if image_size is None or tuple(grid) == (int(image_size),) * 2 else (int(image_size),) * 2

    def run(start: int, stop: int, d: torch.device) -> np.ndarray:
        x = _to_device(torch.from_numpy(hu_to_unit(vol[start:stop], hr))[:, None], d)
        if work is None:
            return net_for(d)(x)[:, 0].float().cpu().numpy()
        y = net_for(d)(F.interpolate(x, size=work, mode="bilinear", align_corners=False, antialias=True))
        y = F.interpolate(y.float(), size=tuple(grid), mode="bilinear", align_corners=False, antialias=True)
        return y[:, 0].cpu().numpy()

    def to_cpu() -> None:
        model.to("cpu")

    try:
        with torch.inference_mode():
            for start, stop, y in _oom_batches(total, batch_size, dev, run, on_message, "denoising", to_cpu):
                yield stop, total, unit_to_hu(y, hr).astype(np.float32, copy=False)
    finally:
        if home.type != "cpu" and next(model.parameters(), torch.empty(0, device=home)).device != home:
            try:
                model.to(home)
            except Exception as exc:  # noqa: BLE001 - leave it on the CPU
                log.warning("Could not move the denoiser back to %s (%s); it stays on the CPU.", home, exc)


def denoise_volume(
    model: nn.Module,
    hu: np.ndarray,
    hu_range: Sequence[float] = DEFAULT_HU_RANGE,
    device: Optional[str | torch.device] = None,
    batch_size: int = 4,
    progress=None,
    *,
    fast: bool = True,
    precision: str = "fp32",
    on_message: Optional[Callable[[str], None]] = None,
    image_size: Optional[int] = None,
) -> np.ndarray:
    """Denoise a whole volume or slice (see :func:`denoise_slices` for ``fast``, ``precision``,
    ``on_message``, ``image_size`` (resampling to the network's training size and back) and the
    out-of-memory fallback).

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
    for done, total, batch in denoise_slices(
        model, vol, hu_range, device=device, batch_size=batch_size, fast=fast, precision=precision,
        on_message=on_message, image_size=image_size,
    ):
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
    on_message: Optional[Callable[[str], None]] = None,
) -> Iterator[dict[str, Any]]:
    """Detect lesions slice by slice.

    One backbone pass per batch gives both the detections and the top-K RPN proposals
    (:meth:`LesionDetector.detect_and_rpn`; detectors without it use ``detect`` + ``rpn_topk``).

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
        Slices per pass; halved on out-of-memory errors down to 1, then the CPU is used (as in
        :func:`denoise_slices`).
    on_message : callable(str), optional
        Receives user-readable out-of-memory messages (also logged and warned).

    Yields
    ------
    dict
        Per slice, in order: ``slice`` (int), ``done``/``total`` (progress), ``boxes`` float32 (n, 4) xyxy
        pixels, ``scores`` float32 (n,), ``labels`` int64 (n,), ``proposals`` float32 (K, 4) and
        ``objectness`` float32 (K,) (the top-K RPN proposals, sorted by objectness; empty (0, 4) / (0,) for a
        detector without an RPN, such as the FCOS judge).

    Raises
    ------
    CTLoadError
        Bad input array. ``IndexError`` for a slice index outside the volume.
    InferenceMemoryError
        Out of memory with one slice on the CPU.
    """
    vol, _ = _as_volume(hu)
    dev = _model_device(detector, device)
    detector = detector.to(dev).eval()
    home = dev
    hr = (float(hu_range[0]), float(hu_range[1]))
    idx = list(range(vol.shape[0])) if slices is None else [int(s) for s in slices]
    for s in idx:
        if not 0 <= s < vol.shape[0]:
            raise IndexError(f"Slice {s} is outside the volume of {vol.shape[0]} slices.")
    total = len(idx)
    fused = callable(getattr(detector, "detect_and_rpn", None))
    has_rpn = callable(getattr(detector, "rpn_topk", None))

    def run(start: int, stop: int, d: torch.device):
        x = _to_device(torch.from_numpy(hu_to_unit(vol[idx[start:stop]], hr))[:, None], d)
        rpn = None
        if fused:
            dets, rpn = detector.detect_and_rpn(x, int(k), float(score_thresh))
        else:
            dets = detector.detect(x, score_thresh=float(score_thresh))
            if has_rpn:
                rpn = detector.rpn_topk(x, int(k))
        empty4, empty = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        return [
            {
                "boxes": dets[j]["boxes"].detach().float().cpu().numpy().reshape(-1, 4),
                "scores": dets[j]["scores"].detach().float().cpu().numpy().reshape(-1),
                "labels": dets[j]["labels"].detach().cpu().numpy().astype(np.int64).reshape(-1),
                "proposals": rpn.proposals[j].detach().float().cpu().numpy().reshape(-1, 4) if rpn else empty4,
                "objectness": rpn.objectness[j].detach().float().cpu().numpy().reshape(-1) if rpn else empty,
            }
            for j in range(stop - start)
        ]

    def to_cpu() -> None:
        detector.to("cpu")

    done = 0
    try:
        with torch.inference_mode():
            for start, stop, results in _oom_batches(
                total, max(1, int(batch_size)), dev, run, on_message, "lesion detection on", to_cpu
            ):
                for j, res in enumerate(results):
                    done += 1
                    yield {"slice": idx[start + j], "done": done, "total": total, **res}
    finally:
        if home.type != "cpu" and next(detector.parameters(), torch.empty(0, device=home)).device != home:
            try:
                detector.to(home)
            except Exception as exc:  # noqa: BLE001
                log.warning("Could not move the detector back to %s (%s); it stays on the CPU.", home, exc)
