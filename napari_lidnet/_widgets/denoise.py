"""Denoise widget: apply a denoiser checkpoint (a shipped one, or baseline / LIDnet from training) to the
current slice or the whole volume of a CT layer.

The architecture, the HU range and the training slice size come from the checkpoint; the architecture
drop-down follows the checkpoint and is checked against it only when the user changed it. A slice of
another size than the network's training size is resampled to it and back (the status line and the layer
metadata say so). Every computation is a call into :mod:`src_training.inference`.
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
from src_training.checkpoint_files import peek_checkpoint as peek_file
from src_training.errors import CheckpointError, ConfigError, LidnetError
from src_training.models.denoisers import DENOISERS

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
    """Read a denoiser checkpoint's description without building the model (memory-mapped:
    :func:`src_training.checkpoint_files.peek_checkpoint`).

    Returns
    -------
    dict
        ``model`` (architecture key), ``method`` ("baseline"/"lidnet"/None), ``step``, ``hu_range`` (HU),
        ``image_size`` (training slice size in pixels, or None).

    Raises
    ------
    CheckpointError
        Unreadable file or not a denoiser checkpoint.
    """
    info = peek_file(path)
    if info.kind != "denoiser":
        raise CheckpointError(f"{path} is a {info.kind} checkpoint, not a denoiser; choose a denoiser checkpoint.")
    return {"model": info.network, "method": info.method, "step": info.step, "hu_range": tuple(info.hu_range),
            "image_size": info.image_size}


def denoised_layer_name(source: str, model: str, z: int | None = None) -> str:
    """Name of a denoised layer: the source layer's name and the model's, e.g.
    ``"lung2 LDCT N0=1000 · CPCE LIDnet (shipped)"`` (``" · slice 7"`` added for one slice ``z``)."""
    name = f"{source} · {model}" if model else f"{source} · denoised"
    return name if z is None else f"{name} · slice {int(z)}"


def resampling_note(config: dict[str, Any]) -> str:
    """``"denoised at 256 × 256 px (the model's training size), resampled back to 512 × 512 px"`` when
    :func:`denoise_work` resampled, else ``""``."""
    r = config.get("resampled")
    if not r:
        return ""
    (h, w), (sh, sw) = r["from"], r["to"]
    return f"denoised at {sh} × {sw} px (the model's training size), resampled back to {h} × {w} px"


def denoise_work(
    checkpoint: str | Path,
    expected_model: str | None,
    hu: np.ndarray,
    device: str,
    batch_size: int = 4,
    cancel_event: Any = None,
    on_message: Callable[[str], None] | None = None,
    *,
    resample: bool = True,
):
    """Progress generator: load the denoiser and denoise ``hu`` (runs in a worker thread).

    Parameters
    ----------
    checkpoint : path
        ``denoiser.pt``.
    expected_model : str or None
        Architecture chosen by the user (key of ``DENOISERS``); must match the checkpoint's. None: the
        checkpoint's architecture, whatever it is.
    hu : ndarray float32 (z, y, x) HU
    device : "auto", "cuda", "cpu", "mps"
    batch_size : int
    cancel_event : threading.Event, optional
        Stops after the current batch when set.
    on_message : callable(str), optional
        Receives the out-of-memory fallback messages of :func:`src_training.inference.denoise_slices`
        (called in this thread; e.g. an :class:`InferenceMessages`). The progress messages repeat the
        latest one.
    resample : bool
        When the checkpoint records its training slice size (``config["image_size"]``, pixels) and the
        slices of ``hu`` have another size, denoise them at the training size and resample back
        (:func:`src_training.inference.denoise_slices`, ``image_size``). False: run on the input grid.

    Yields
    ------
    (done, total, message)

    Returns
    -------
    (ndarray float32 (z, y, x) HU, dict config)
        Same shape as ``hu``. ``config`` has ``denoiser`` (name), ``method``, ``step``, ``hu_range``,
        ``image_size`` and ``resampled``: ``{"from": [y, x], "to": [S, S]}`` pixels, or None.

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
    size = config.get("image_size")
    grid = [int(v) for v in np.shape(hu)[-2:]]
    work = int(size) if resample and size and grid != [int(size)] * 2 else None
    config["resampled"] = {"from": grid, "to": [work, work]} if work else None
    at = f" at {work} × {work} px" if work else ""
    out = np.empty(hu.shape, dtype=np.float32)
    start = 0
    notes: list[str] = []

    def relay(message: str) -> None:
        notes.append(message)
        if on_message is not None:
            on_message(message)

    for done, tot, batch in inference.denoise_slices(model, hu, hu_range, batch_size=int(batch_size),
                                                     on_message=relay, image_size=work):
        out[start:done] = batch
        start = done
        text = f"denoising slice {done}/{tot}{at}"
        yield (done, tot, f"{text} ({notes[-1]})" if notes else text)
        if cancel_event is not None and cancel_event.is_set():
            raise Cancelled("cancelled by the user")
    return out, config


class DenoiseWidget(Container):
    """Denoise the chosen CT layer with a denoiser checkpoint (every model of ``DENOISERS``).

    The checkpoint list (:class:`CheckpointChooser`) starts with the models that come with the plugin; the
    shipped LIDnet CPCE is chosen by default (or the checkpoint chosen last time). The model drop-down
    follows the checkpoint; it is checked against the checkpoint only when the user changed it. Result: a
    new image layer named after the source and the model, e.g. ``"lung2 LDCT N0=1000 · CPCE LIDnet
    (shipped)"``, with the source's scale, translate and window; its metadata records model, method,
    checkpoint, step, HU range and any resampling to the model's training size. Running the same
    checkpoint on the same layer again updates that layer instead of adding a copy.

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
        try:
            self.ckpt_info.native.setWordWrap(True)
        except Exception:  # noqa: BLE001 - not a Qt label
            pass
        self.runner = TaskRunner("Denoise", self.run_btn, self.cancel_btn, self.progress, self.status)
        #: Messages of the last run (out-of-memory fallbacks), see :class:`InferenceMessages`.
        self.messages = InferenceMessages("Denoise", self.status)
        #: True once the user picked an architecture by hand (then checked against the checkpoint).
        self.model_chosen = False
        self._setting_model = False
        self.run_btn.changed.connect(self.run)
        self.model.changed.connect(self._on_model)
        self.checkpoint.combo.changed.connect(self._on_checkpoint)
        self._on_checkpoint()

    def _on_model(self, *_: Any) -> None:
        if not self._setting_model:
            self.model_chosen = True

    def _on_checkpoint(self, *_: Any) -> None:
        self.model_chosen = False
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
            self._setting_model = True
            try:
                self.model.value = info["model"]
            finally:
                self._setting_model = False
        lo, hi = info["hu_range"]
        size = f", trained at {info['image_size']} px" if info.get("image_size") else ""
        self.ckpt_info.value = (
            f"{denoiser_display_name(info['model'], info['method'])}, step {info['step']}, "
            f"HU [{lo:g}, {hi:g}]{size}"
        )

    def run(self, *_: Any) -> Any:
        """Start denoising (thread worker; synchronous with ``LIDNET_SYNC=1``)."""
        layer = self.image.value
        ckpt = self.checkpoint.value
        ckpt_name = self.checkpoint.model_name
        expected = self.model.value if self.model_chosen else None
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
                raise CheckpointError("Choose a denoiser checkpoint (a shipped model or the denoiser.pt of a "
                                      "training run) first.")
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
            label = ckpt_name or denoiser_display_name(model_name, method)
            name = denoised_layer_name(layer.name, label, None if whole else z0)
            note = resampling_note(config)
            kwargs = derived_image_kwargs(
                layer,
                name=name,
                z_offset=z0,
                hu_range=tuple(config["hu_range"]),
                extra_metadata={
                    "model": model_name,
                    "method": method,
                    "checkpoint": str(ckpt),
                    "checkpoint_name": label,
                    "step": config.get("step"),
                    "device": device,
                    "denoised_from": layer.name,
                    "model_image_size": config.get("image_size"),
                    "resampled": config.get("resampled"),
                    "resampling": note or "none (the slices have the model's training size)",
                },
            )
            if np.asarray(layer.data).ndim == 2:
                out = out[0]
            old = self._same_result(name, layer.name, str(ckpt), out.shape)
            if old is not None:  # same image, same checkpoint, same scope: update instead of "… [1]"
                old.data = out
                old.metadata = kwargs["metadata"]
                verb = "updated"
            else:
                self.viewer.add_image(out, **kwargs)
                verb = "added"
            self.status.value = with_note(f"{verb} '{name}'" + (f"; {note}" if note else ""), messages)

        return runner.start(work, add, desc="Denoise")

    def _same_result(self, name: str, source: str, ckpt: str, shape: tuple) -> Any:
        """The layer a previous identical run added (same name, source, checkpoint and shape), or None."""
        for ly in self.viewer.layers:
            md = getattr(ly, "metadata", None) or {}
            if (ly.name == name and md.get("denoised_from") == source and md.get("checkpoint") == ckpt
                    and tuple(np.shape(ly.data)) == tuple(shape)):
                return ly
        return None
