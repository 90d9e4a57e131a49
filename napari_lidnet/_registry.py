"""In-session registry of trained checkpoints (denoiser / detector ``.pt`` files).

The Train widget registers the checkpoints a background training run leaves in its run folder;
the Denoise and Detect widgets list them (besides any file the user picks) and refresh their choices when
:data:`events.changed` fires. The registry lives for the Python session only; the files themselves stay in
the run folders.

No Qt here: a plain list plus a :mod:`psygnal` signal, usable from tests and scripts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from psygnal import Signal

__all__ = ["CheckpointEntry", "CHECKPOINTS", "events", "register_checkpoint", "list_checkpoints", "clear"]


@dataclass(frozen=True)
class CheckpointEntry:
    """One registered checkpoint file.

    Attributes
    ----------
    path : pathlib.Path
        Absolute path of the ``.pt`` file (``denoiser.pt`` or ``detector.pt`` of a run folder).
    kind : str
        ``"denoiser"`` or ``"detector"``.
    label : str
        Short text shown in the widgets' choosers (e.g. ``"run_20261123_1012 / denoiser (lidnet, step 6)"``).
    info : dict
        Free metadata (method, step, model / backbone name, run folder).
    """

    path: Path
    kind: str
    label: str
    info: dict = field(default_factory=dict, compare=False, hash=False)


#: All checkpoints registered in this session, oldest first.
CHECKPOINTS: list[CheckpointEntry] = []


class _RegistryEvents:
    """Signals of the registry. ``changed`` is emitted with the :class:`CheckpointEntry` just added."""

    changed = Signal(object)


#: Connect to ``events.changed`` to be told when a checkpoint is registered.
events = _RegistryEvents()


def register_checkpoint(path: str | os.PathLike, kind: str, label: str | None = None, **info) -> CheckpointEntry:
    """Register a checkpoint file so that the Denoise / Detect widgets offer it.

    Parameters
    ----------
    path : path-like
        The ``.pt`` file; must exist.
    kind : str
        ``"denoiser"`` or ``"detector"``.
    label : str, optional
        Text for the choosers; default ``"<run folder name> / <file name>"``.
    **info
        Extra metadata stored in :attr:`CheckpointEntry.info`.

    Returns
    -------
    CheckpointEntry
        The entry (an already registered path of the same kind is replaced, keeping one entry per file).

    Raises
    ------
    ValueError
        Unknown ``kind``.
    FileNotFoundError
        The file does not exist.
    """
    if kind not in ("denoiser", "detector"):
        raise ValueError(f"Checkpoint kind must be 'denoiser' or 'detector', got {kind!r}.")
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise FileNotFoundError(f"Cannot register checkpoint {p}: the file does not exist.")
    entry = CheckpointEntry(path=p, kind=kind, label=label or f"{p.parent.name} / {p.name}", info=dict(info))
    CHECKPOINTS[:] = [e for e in CHECKPOINTS if not (e.path == p and e.kind == kind)]
    CHECKPOINTS.append(entry)
    events.changed.emit(entry)
    return entry


def list_checkpoints(kind: str | None = None) -> list[CheckpointEntry]:
    """Return the registered checkpoints (newest last), optionally only those of one ``kind``,
    skipping files that have since been deleted."""
    return [e for e in CHECKPOINTS if (kind is None or e.kind == kind) and e.path.is_file()]


def clear() -> None:
    """Forget every registered checkpoint (used by tests); emits ``changed`` with ``None``."""
    CHECKPOINTS.clear()
    events.changed.emit(None)
