"""Atomic writes and safe checkpoint loading.

Every file napari-lidnet writes goes through a temporary file in the destination folder followed by
``os.replace``, so a reader (or a crash) never sees a half-written file. Checkpoints are plain dicts of
tensors, numbers, strings, lists and dicts, saved with ``torch.save`` and loaded only with
``torch.load(..., weights_only=True)``: a pickle that would run code is refused.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.utils.serialization.config  # noqa: F401 - torch.load imports it lazily; load it here, not under a worker's import lock

from .errors import CheckpointError

CHECKPOINT_FORMAT = "napari-lidnet/1"


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Context manager giving a binary file handle whose content replaces ``path`` atomically on success.

    The data go to a hidden temporary file ``.<name>.<random>.tmp`` in the destination folder; when the
    ``with`` block ends normally the file is flushed, fsynced, given normal permissions (``0o666 & ~umask``)
    and moved over ``path`` with ``os.replace`` (atomic on POSIX and Windows for the same file system). If
    the block raises (any exception, also ``KeyboardInterrupt``), the temporary file is deleted and ``path``
    keeps its old content. If the process is killed (SIGKILL, power loss) during the block, ``path`` also
    keeps its old content; only the hidden temporary file may remain (it is never read by napari-lidnet and
    may be deleted).

    Parameters
    ----------
    path : path-like
        Destination file. Its parent folder is created if needed.

    Yields
    ------
    BinaryIO
        The open temporary file (write with ``fh.write`` or e.g. ``torch.save(obj, fh)``).

    Raises
    ------
    OSError
        If the folder is not writable; the destination is then left untouched.

    Examples
    --------
    >>> with atomic_writer("out/model.pt") as fh:     # doctest: +SKIP
    ...     torch.save(state, fh)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
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


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    See :func:`atomic_writer` for what happens on failure or when the process is killed.

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
    with atomic_writer(path) as fh:
        fh.write(data)
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

    Raises
    ------
    OSError
        The folder is not writable (``path`` keeps its old content).
    """
    payload = dict(checkpoint)
    payload.setdefault("format", CHECKPOINT_FORMAT)
    path = Path(path)
    # streamed into the temporary file: no second in-memory copy of a large trainer state
    with atomic_writer(path) as fh:
        torch.save(payload, fh)
    return path


def _load_failure_message(path: Path, exc: BaseException) -> str:
    """User message for a failed ``torch.load(weights_only=True)``: unsafe content vs. damaged file.

    torch's own text advises retrying with ``weights_only=False``, which would run the file's code; it is
    not repeated to the user.
    """
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        what = re.search(r"(unsupported GLOBAL [\w.]+|Unsupported (?:operand|class) [\w.]+)", text)
        detail = f" ({what.group(1)})" if what else ""
        return (
            f"Refused to load checkpoint {path}: it contains Python objects that could run code when opened"
            f"{detail}, not plain weights. Nothing in it was executed. Use a denoiser.pt / detector.pt written "
            f"by napari-lidnet (or another weights-only file) from a source you trust."
        )
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    return (
        f"Cannot load checkpoint {path}: the file is damaged (e.g. an interrupted copy or download) or not a "
        f"PyTorch file ({type(exc).__name__}: {first}). Choose another file or copy it again."
    )


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
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported as a CheckpointError
        raise CheckpointError(_load_failure_message(path, exc)) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"Checkpoint {path} holds a {type(obj).__name__}, not a dict of weights.")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    return obj
