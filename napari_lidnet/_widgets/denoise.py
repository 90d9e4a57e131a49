"""Denoise widget: apply a trained denoiser checkpoint (baseline or LIDnet) to the current slice or the
whole volume of a CT layer.

The architecture name and the HU range come from the checkpoint (its config); the architecture chosen in
the widget is checked against it. Every computation is a call into :mod:`src_training.inference`.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, SpinBox
from qtpy.QtCore import QCoreApplication
from superqt.utils import ensure_main_thread

from src_training import inference
from src_training.checkpoint import load_checkpoint
from src_training.errors import CheckpointError, ConfigError, LidnetError
from src_training.models.denoisers import DENOISERS
from src_training.windowing import DEFAULT_HU_RANGE

from .._layers import current_slice_index, derived_image_kwargs, layer_volume
from .._messages import notify_warning
from .._naming import denoiser_display_name
from ._checkpoints import CheckpointChooser
from ._controls import device_chooser, scope_chooser
from ._layer_choice import LayerChooser
from ._tasks import Cancelled, TaskRunner, run_controls


class InferenceMessages:
    """Shows the core's inference messages (out-of-memory fallbacks: batch halved, moved to the CPU) to the
    user: a napari warning notification and the widget's status line.

    An instance is the ``on_message`` callable of :func:`src_training.inference.denoise_slices` /
    :func:`~src_training.inference.detect_slices`. The core calls it in the worker thread; the
    notification and the label update are run in the Qt GUI thread (``superqt.utils.ensure_main_thread``:
    queued to the GUI thread from a worker, immediate when already there, e.g. with ``LIDNET_SYNC=1``).

    Parameters
    ----------
    context : str
        Prefix of the notification, e.g. ``"Denoise"``.
    status : magicgui Label, optional
        The widget's status line; shows the latest message.

    Attributes
    ----------
    messages : list of str
        Every message received (any thread), in order.

    Notes
    -----
    Creating one adds a ``warnings`` filter ignoring
    :class:`src_training.inference.InferenceMemoryWarning`: inside ``napari.run()`` napari turns Python
    warnings into notifications, which would show each message a second time (and only the first time per
    session). The core still logs every message (logger ``src_training.inference``).
    """

    def __init__(self, context: str, status: Any = None):
        self.context = context
        self.status = status
        self.messages: list[str] = []
        self._lock = threading.Lock()
        try:  # out-of-memory messages are long: wrap the status label instead of widening the dock
            status.native.setWordWrap(True)
        except Exception:  # noqa: BLE001 - no label, or not a Qt label
            pass
        warnings.filterwarnings("ignore", category=inference.InferenceMemoryWarning)

    @property
    def last(self) -> str | None:
        """The latest message, or None."""
        with self._lock:
            return self.messages[-1] if self.messages else None

    def __call__(self, message: str) -> None:
        """Record ``message`` and show it in the GUI thread (callable from any thread; never raises)."""
        message = str(message)
        with self._lock:
            self.messages.append(message)
        try:
            if QCoreApplication.instance() is None:
                self._show(message)
            else:
                ensure_main_thread(self._show)(message)
        except Exception:  # noqa: BLE001 - a message must never stop the computation; the core logged it
            pass

    def _show(self, message: str) -> None:
        """GUI thread: warning notification + status line."""
        notify_warning(f"{self.context}: {message}")  # never raises; the core's log has the message too
        if self.status is not None:
            try:
                self.status.value = message
            except RuntimeError:  # the widget is gone
                pass


def with_note(text: str, messages: InferenceMessages | None) -> str:
    """``text`` followed by the latest inference message, if any (keeps a fallback visible in the status
    line while progress messages keep arriving)."""
    last = messages.last if messages is not None else None
    return f"{text} ({last})" if last else text


def denoiser_choices() -> list[tuple[str, str]]:
    """``(display name, key)`` of every model in ``src_training.models.denoisers.DENOISERS``."""
    return [(denoiser_display_name(k), k) for k in DENOISERS]


def peek_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a denoiser checkpoint's description without building the model.

    Returns
    -------
    dict
        ``model`` (architecture key), ``method`` ("baseline"/"lidnet"/None), ``step``, ``hu_range``.

    Raises
    ------
    CheckpointError
        Unreadable file or not a denoiser checkpoint.
    """
    ckpt = load_checkpoint(path)
    if ckpt.get("kind") != "denoiser":
        raise CheckpointError(
            f"{path} is a {ckpt.get('kind') or 'unknown'} checkpoint, not a denoiser; choose a denoiser.pt."
        )
    config = dict(ckpt.get("config") or {})
    return {
        "model": str(ckpt.get("model") or config.get("denoiser") or ""),
        "method": ckpt.get("method", config.get("method")),
        "step": ckpt.get("step"),
        "hu_range": tuple(float(v) for v in config.get("hu_range", DEFAULT_HU_RANGE)),
    }


def denoise_work(
    checkpoint: str | Path,
    expected_model: str | None,
    hu: np.ndarray,
    device: str,
    batch_size: int = 4,
    cancel_event: Any = None,
    on_message: Callable[[str], None] | None = None,
):
    """Progress generator: load the denoiser and denoise ``hu`` (runs in a worker thread).

    Parameters
    ----------
    checkpoint : path
        ``denoiser.pt``.
    expected_model : str or None
        Architecture chosen by the user (key of ``DENOISERS``); must match the checkpoint's.
    hu : ndarray float32 (z, y, x) HU
    device : "auto", "cuda", "cpu", "mps"
    batch_size : int
    cancel_event : threading.Event, optional
        Stops after the current batch when set.
    on_message : callable(str), optional
        Receives the out-of-memory fallback messages of :func:`src_training.inference.denoise_slices`
        (called in this thread; e.g. an :class:`InferenceMessages`). The progress messages repeat the
        latest one.

    Yields
    ------
    (done, total, message)

    Returns
    -------
    (ndarray float32 (z, y, x) HU, dict config)
        ``config`` has ``denoiser`` (name), ``method``, ``step``, ``hu_range``.

    Raises
    ------
    ConfigError
        The checkpoint holds another architecture than ``expected_model``, or bad device.
    CheckpointError
        Unreadable / wrong checkpoint.
    src_training.inference.InferenceMemoryError
        Out of memory even with one slice on the CPU.
    Cancelled
        ``cancel_event`` was set (checked after each batch).
    """
    total = int(hu.shape[0])
    yield (0, total, "loading the denoiser")
    model, config = inference.load_denoiser(checkpoint, device=device)
    name = str(config.get("denoiser", ""))
    if expected_model and name.lower() != str(expected_model).lower():
        raise ConfigError(
            f"The checkpoint {Path(checkpoint).name} holds a {denoiser_display_name(name)} model, but "
            f"{denoiser_display_name(expected_model)} is selected. Choose {denoiser_display_name(name)} as the model "
            "or pick a checkpoint of the selected model."
        )
    hu_range = tuple(float(v) for v in config["hu_range"])
    out = np.empty(hu.shape, dtype=np.float32)
    start = 0
    notes: list[str] = []

    def relay(message: str) -> None:
        notes.append(message)
        if on_message is not None:
            on_message(message)

    for done, tot, batch in inference.denoise_slices(model, hu, hu_range, batch_size=int(batch_size), on_message=relay):
        out[start:done] = batch
        start = done
        text = f"denoising slice {done}/{tot}"
        yield (done, tot, f"{text} ({notes[-1]})" if notes else text)
        if cancel_event is not None and cancel_event.is_set():
            raise Cancelled("cancelled by the user")
    return out, config


class DenoiseWidget(Container):
    """Denoise the chosen CT layer with a trained denoiser (every model of ``DENOISERS``).

    Pick the checkpoint (a run folder's ``denoiser.pt``, a checkpoint registered by the Train widget, or
    browse); the model drop-down follows the checkpoint and is validated against it. Result: a new image
    layer such as ``"RED-CNN (LIDnet) denoised"`` with the source's scale, translate and window; its
    metadata records model, method, checkpoint, step and HU range.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = LayerChooser(napari_viewer, label="LDCT image")
        self.model = ComboBox(label="model", choices=denoiser_choices())
        self.checkpoint = CheckpointChooser("denoiser", label="checkpoint")
        self.ckpt_info = Label(value="")
        self.device = device_chooser()
        self.scope = scope_chooser()
        self.batch_size = SpinBox(label="batch size", min=1, max=64, value=4)
        self.run_btn, self.cancel_btn, self.progress, self.status = run_controls("Denoise")
        self.extend([
                self.image,
                self.checkpoint,
                self.ckpt_info,
                self.model,
                self.device,
                self.scope,
                self.batch_size,
                self.run_btn,
                self.cancel_btn,
                self.progress,
                self.status,
            ])
        self.runner = TaskRunner("Denoise", self.run_btn, self.cancel_btn, self.progress, self.status)
        #: Messages of the last run (out-of-memory fallbacks), see :class:`InferenceMessages`.
        self.messages = InferenceMessages("Denoise", self.status)
        self.run_btn.changed.connect(self.run)
        self.checkpoint.combo.changed.connect(self._on_checkpoint)
        self._on_checkpoint()

    def _on_checkpoint(self, *_: Any) -> None:
        path = self.checkpoint.value
        if path is None:
            self.ckpt_info.value = "no checkpoint chosen"
            return
        try:
            info = peek_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - shown in the label; Run reports it as a notification
            self.ckpt_info.value = f"unreadable: {str(exc)[:80]}"
            return
        keys = [k for _, k in denoiser_choices()]
        if info["model"] in keys:
            self.model.value = info["model"]
        lo, hi = info["hu_range"]
        self.ckpt_info.value = (
            f"{denoiser_display_name(info['model'], info['method'])}, step {info['step']}, HU [{lo:g}, {hi:g}]"
        )

    def run(self, *_: Any) -> Any:
        """Start denoising (thread worker; synchronous with ``LIDNET_SYNC=1``)."""
        layer = self.image.value
        ckpt = self.checkpoint.value
        expected = self.model.value
        device = self.device.value
        whole = self.scope.value == "whole volume"
        batch = int(self.batch_size.value)
        z_cur = current_slice_index(self.viewer, layer) if layer is not None else 0
        layer_data = layer.data if layer is not None else None
        runner = self.runner
        messages = self.messages = InferenceMessages("Denoise", self.status)

        def work():
            if layer is None:
                raise LidnetError("Choose the image layer to denoise.")
            if ckpt is None:
                raise CheckpointError("Choose a denoiser checkpoint (denoiser.pt of a training run) first.")
            data = layer_volume(layer_data, layer.name)
            z0 = 0 if whole else z_cur
            hu = data if whole else data[z0 : z0 + 1]
            out, config = yield from denoise_work(
                ckpt, expected, hu, device, batch, runner.cancel_event, on_message=messages
            )
            return z0, out, config

        def add(result: Any) -> None:
            z0, out, config = result
            model_name = str(config.get("denoiser"))
            method = config.get("method")
            name = f"{denoiser_display_name(model_name, method)} denoised" + ("" if whole else f" slice {z0}")
            kwargs = derived_image_kwargs(
                layer,
                name=name,
                z_offset=z0,
                hu_range=tuple(config["hu_range"]),
                extra_metadata={
                    "model": model_name,
                    "method": method,
                    "checkpoint": str(ckpt),
                    "step": config.get("step"),
                    "device": device,
                    "denoised_from": layer.name,
                },
            )
            if np.asarray(layer.data).ndim == 2:
                out = out[0]
            self.viewer.add_image(out, **kwargs)
            self.status.value = with_note(f"added '{name}'", messages)

        return runner.start(work, add, desc="Denoise")
