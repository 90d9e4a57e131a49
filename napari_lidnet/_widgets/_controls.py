"""Form controls shared by the widgets: the compute-device drop-down and the "current slice / whole volume"
scope drop-down (magicgui)."""

from __future__ import annotations

import torch
from magicgui.widgets import ComboBox

#: Choices of :func:`scope_chooser`.
SCOPES = ("current slice", "whole volume")


def device_choices() -> list[str]:
    """``["auto", "cuda", "cpu"]`` (+ ``"mps"`` on Apple silicon)."""
    choices = ["auto", "cuda", "cpu"]
    try:
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            choices.append("mps")
    except Exception:  # noqa: BLE001
        pass
    return choices


def device_chooser(label: str = "device") -> ComboBox:
    """Drop-down of compute devices (value passed to ``src_training.device.auto_device``)."""
    return ComboBox(
        label=label,
        choices=device_choices(),
        value="auto",
        tooltip="auto: CUDA GPU if available, else Apple MPS, else CPU",
    )


def scope_chooser(label: str = "apply to") -> ComboBox:
    """Drop-down ``current slice`` / ``whole volume``."""
    return ComboBox(label=label, choices=list(SCOPES), value="current slice")


__all__ = ["SCOPES", "device_chooser", "device_choices", "scope_chooser"]
