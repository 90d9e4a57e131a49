"""Registry of trained checkpoints (denoiser / detector ``.pt`` files) and what is remembered between launches.

Session registry: the Train widget registers the checkpoints a background training run leaves in its run
folder; the Denoise, Detect and Compare widgets list them (besides any file the user picks) and refresh their
choices when :data:`events.changed` fires.

Remembered between launches (:func:`remembered`): the run folders and checkpoint files the user used
(registered, browsed) and the last checkpoint chosen per kind, in ``checkpoints.json`` of the user's config
folder (:func:`config_dir`: ``$LIDNET_CONFIG_DIR``, else the platform's, e.g.
``~/.config/napari-lidnet/``). The file is written atomically (temp file + ``os.replace``) and read
tolerantly: a damaged file is ignored with a warning, files and folders that no longer exist are dropped.

No Qt here: plain lists plus a :mod:`psygnal` signal, usable from tests and scripts.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from psygnal import Signal

from src_training.checkpoint import atomic_write_text

__all__ = [
    "CheckpointEntry", "CHECKPOINTS", "events", "register_checkpoint", "list_checkpoints", "clear",
    "CONFIG_ENV", "REMEMBERED_FILE", "MAX_REMEMBERED", "Remembered", "config_dir", "remembered_path", "remembered",
    "remember_run_dir", "remember_file", "remember_choice",
]

log = logging.getLogger(__name__)


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
    """Register a checkpoint file so that the Denoise / Detect widgets offer it (in this session, and
    remembered for the next launches: :func:`remember_file`).

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
    remember_file(p, kind)
    events.changed.emit(entry)
    return entry


def list_checkpoints(kind: str | None = None) -> list[CheckpointEntry]:
    """Return the registered checkpoints (newest last), optionally only those of one ``kind``,
    skipping files that have since been deleted."""
    return [e for e in CHECKPOINTS if (kind is None or e.kind == kind) and e.path.is_file()]


def clear() -> None:
    """Forget every checkpoint registered in this session (used by tests; the remembered list of
    :func:`remembered` is kept); emits ``changed`` with ``None``."""
    CHECKPOINTS.clear()
    events.changed.emit(None)


# ------------------------------------------------------------------------------ remembered between launches

#: Environment variable: the folder of napari-lidnet's user settings (tests point it at a temporary folder).
CONFIG_ENV = "LIDNET_CONFIG_DIR"

#: Name of the remembered-checkpoints file in :func:`config_dir`.
REMEMBERED_FILE = "checkpoints.json"

#: At most this many run folders and this many files per kind are remembered (most recently used kept).
MAX_REMEMBERED = 20

_FORMAT = 1
_LOCK = threading.RLock()
_WARNED: set[tuple[str, int]] = set()


def config_dir() -> Path:
    """napari-lidnet's user config folder: ``$LIDNET_CONFIG_DIR``, else the platform's user config folder
    for ``napari-lidnet`` (``platformdirs``; ``~/.config/napari-lidnet`` on Linux). Not created here."""
    env = os.environ.get(CONFIG_ENV, "").strip()
    if env:
        return Path(env).expanduser()
    try:
        from platformdirs import user_config_dir  # napari depends on platformdirs
    except ImportError:  # pragma: no cover - platformdirs is always there with napari
        return Path.home() / ".config" / "napari-lidnet"
    return Path(user_config_dir("napari-lidnet", appauthor=False))


def remembered_path() -> Path:
    """The remembered-checkpoints file, ``config_dir() / "checkpoints.json"``."""
    return config_dir() / REMEMBERED_FILE


@dataclass
class Remembered:
    """What :func:`remembered` read back from ``checkpoints.json`` (only paths that still exist).

    Attributes
    ----------
    run_dirs : list of Path
        Run folders the user used (searched for checkpoints), most recent first.
    files : dict kind -> list of Path
        Checkpoint files the user registered or browsed to, per kind (``"denoiser"``, ``"detector"``), most
        recent first.
    last : dict kind -> Path
        The checkpoint last chosen in a chooser of that kind.
    """

    run_dirs: list[Path] = field(default_factory=list)
    files: dict[str, list[Path]] = field(default_factory=dict)
    last: dict[str, Path] = field(default_factory=dict)

    def to_json(self) -> str:
        """The file's text: ``{"format": 1, "run_dirs": [...], "files": {kind: [...]}, "last": {kind: path}}``."""
        return json.dumps({
            "format": _FORMAT,
            "run_dirs": [str(p) for p in self.run_dirs],
            "files": {k: [str(p) for p in v] for k, v in self.files.items()},
            "last": {k: str(p) for k, p in self.last.items()},
        }, indent=2)


def _paths(value: Any, want_dir: bool) -> list[Path]:
    out: list[Path] = []
    for v in value if isinstance(value, list) else []:
        if not isinstance(v, str) or not v:
            continue
        p = Path(v)
        if (p.is_dir() if want_dir else p.is_file()) and p not in out:
            out.append(p)
    return out[:MAX_REMEMBERED]


def remembered() -> Remembered:
    """Read the remembered run folders, files and last choices (missing paths dropped).

    Never raises: a missing file gives an empty record; a damaged or unreadable one is ignored with a
    ``UserWarning`` (and rewritten at the next change).
    """
    path = remembered_path()
    with _LOCK:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Remembered()
        except (OSError, UnicodeDecodeError) as exc:
            _warn(f"Could not read the list of remembered checkpoints {path} ({exc}); starting with an empty list.")
            return Remembered()
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            key = (str(path), hash(text))
            if key not in _WARNED:  # once per damaged content, not at every read of one widget's set-up
                _WARNED.add(key)
                _warn(f"The list of remembered checkpoints {path} is damaged and was ignored ({exc}); "
                      "it will be rewritten the next time a checkpoint is chosen.")
            return Remembered()
    files = data.get("files") if isinstance(data.get("files"), dict) else {}
    last_raw = data.get("last") if isinstance(data.get("last"), dict) else {}
    last = {str(k): Path(v) for k, v in last_raw.items() if isinstance(v, str) and v and Path(v).is_file()}
    kept = {str(k): _paths(v, False) for k, v in files.items()}
    return Remembered(_paths(data.get("run_dirs"), True), {k: v for k, v in kept.items() if v}, last)


def _warn(message: str) -> None:
    log.warning(message)
    warnings.warn(message, UserWarning, stacklevel=3)


def _update(change) -> None:
    """Read, apply ``change(record)``, write back atomically; a failed write only warns."""
    with _LOCK:
        rec = remembered()
        before = rec.to_json()
        change(rec)
        text = rec.to_json()
        if text == before and remembered_path().is_file():
            return
        try:
            remembered_path().parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(remembered_path(), text)
        except OSError as exc:
            _warn(f"Could not save the list of remembered checkpoints in {remembered_path()} ({exc}); "
                  "your choices are kept for this session only.")


def _front(items: list[Path], p: Path) -> list[Path]:
    return ([p] + [q for q in items if q != p])[:MAX_REMEMBERED]


def remember_run_dir(path: str | os.PathLike) -> None:
    """Remember a run folder (searched for checkpoints at the next launches). A missing folder is ignored."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        _update(lambda rec: setattr(rec, "run_dirs", _front(rec.run_dirs, p)))


def remember_file(path: str | os.PathLike, kind: str) -> None:
    """Remember a checkpoint file of ``kind`` (``"denoiser"``, ``"detector"``). A missing file is ignored."""
    p = Path(path).expanduser().resolve()
    if p.is_file():
        _update(lambda rec: rec.files.__setitem__(str(kind), _front(rec.files.get(str(kind), []), p)))


def remember_choice(kind: str, path: str | os.PathLike | None) -> None:
    """Remember the checkpoint last chosen for ``kind`` (None forgets it)."""
    if path is None:
        _update(lambda rec: rec.last.pop(str(kind), None))
        return
    p = Path(path).expanduser().resolve()
    if p.is_file():
        _update(lambda rec: rec.last.__setitem__(str(kind), p))
