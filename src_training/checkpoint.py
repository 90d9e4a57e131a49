"""Atomic writes and safe checkpoint loading.

Every file napari-lidnet writes goes through a temporary file in the destination folder followed by
``os.replace``, so a reader (or a crash) never sees a half-written file. Checkpoints are plain dicts of
tensors, numbers, strings, lists and dicts, saved with ``torch.save`` and loaded only with
``torch.load(..., weights_only=True)``: a pickle that would run code is refused.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

CHECKPOINT_FORMAT = "napari-lidnet/1"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    Parameters
    ----------
    path : path-like
        Destination file. Its parent folder is created if needed.
    data : bytes
        Content.

    Returns
    -------
    pathlib.Path
        The destination path.

    Raises
    ------
    OSError
        If the folder is not writable; the destination is then left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions a normal open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode(encoding))


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Save a checkpoint dict atomically with ``torch.save``.

    Parameters
    ----------
    path : path-like
        Destination ``.pt`` file.
    checkpoint : dict
        Only tensors, numbers, strings, bools, None, lists, tuples and dicts of those (what
        ``torch.load(weights_only=True)`` accepts). The key ``"format"`` is set to
        :data:`CHECKPOINT_FORMAT`.

    Returns
    -------
    pathlib.Path
    """
    payload = dict(checkpoint)
    payload.setdefault("format", CHECKPOINT_FORMAT)
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a napari-lidnet checkpoint safely (``torch.load(weights_only=True)``).

    Parameters
    ----------
    path : path-like
        A ``.pt`` file written by :func:`save_checkpoint` (or a plain state dict file).
    map_location : str or torch.device
        Where tensors are placed (default CPU).

    Returns
    -------
    dict
        The checkpoint. A bare state dict (tensors only) is returned as ``{"state_dict": ...}``.

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, not a torch file, or contains objects that would need
        arbitrary code to unpickle (refused without running them).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported the same way
        raise CheckpointError(
            f"Cannot load checkpoint {path}: it is corrupt, not a PyTorch file, or contains objects that are "
            f"not plain weights (refused for safety; only weights_only=True files are accepted). Detail: {exc}"
        ) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(obj).__name__}, not a dict of weights.")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    return obj
