"""Denoise widget: apply a trained denoiser checkpoint (baseline or LIDnet) to the current slice or the
whole volume of a CT layer.

The architecture name and the HU range come from the checkpoint (its config); the architecture chosen in
the widget is checked against it. Every computation is a call into :mod:`src_training.inference`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, SpinBox

from .._layers import current_slice_index, denoiser_display_name, derived_image_kwargs
from ._common import (
    CheckpointChooser,
    LayerChooser,
    TaskRunner,
    device_chooser,
    layer_volume,
    run_controls,
    scope_chooser,
)


def denoiser_choices() -> list[tuple[str, str]]:
    """``(display name, key)`` of every model in ``src_training.models.denoisers.DENOISERS``."""
    from src_training.models.denoisers import DENOISERS

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
    from src_training.checkpoint import load_checkpoint
    from src_training.errors import CheckpointError
    from src_training.windowing import DEFAULT_HU_RANGE

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
    """
    from src_training.errors import ConfigError
    from src_training.inference import denoise_slices, load_denoiser

    from ._common import Cancelled

    total = int(hu.shape[0])
    yield (0, total, "loading the denoiser")
    model, config = load_denoiser(checkpoint, device=device)
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
    for done, tot, batch in denoise_slices(model, hu, hu_range, batch_size=int(batch_size)):
        out[start:done] = batch
        start = done
        yield (done, tot, f"denoising slice {done}/{tot}")
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
        from src_training.errors import CheckpointError, LidnetError

        layer = self.image.value
        ckpt = self.checkpoint.value
        expected = self.model.value
        device = self.device.value
        whole = self.scope.value == "whole volume"
        batch = int(self.batch_size.value)
        z_cur = current_slice_index(self.viewer, layer) if layer is not None else 0
        layer_data = layer.data if layer is not None else None
        runner = self.runner

        def work():
            if layer is None:
                raise LidnetError("Choose the image layer to denoise.")
            if ckpt is None:
                raise CheckpointError("Choose a denoiser checkpoint (denoiser.pt of a training run) first.")
            data = layer_volume(layer_data, layer.name)
            z0 = 0 if whole else z_cur
            hu = data if whole else data[z0 : z0 + 1]
            out, config = yield from denoise_work(ckpt, expected, hu, device, batch, runner.cancel_event)
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
            self.status.value = f"added '{name}'"

        return runner.start(work, add, desc="Denoise")
