"""Automatic choice of the torch device (cuda > mps > cpu)."""

from __future__ import annotations

import torch

from .errors import ConfigError


def auto_device(preference: str = "auto") -> torch.device:
    """Return the torch device to compute on.

    Parameters
    ----------
    preference : str
        ``"auto"`` (CUDA if available, else Apple MPS, else CPU), or an explicit ``"cuda"``,
        ``"cuda:N"``, ``"mps"`` or ``"cpu"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ConfigError
        If an explicit device is asked for but is not available on this machine.
    """
    pref = (preference or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if pref.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"Device '{preference}' was asked for but no CUDA GPU is available; use 'auto' or 'cpu'.")
        return torch.device(pref)
    if pref == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("Device 'mps' was asked for but Apple MPS is not available; use 'auto' or 'cpu'.")
        return torch.device("mps")
    if pref == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"Unknown device '{preference}': choose auto, cuda, mps or cpu.")
