"""Checkpoint choice lists of the Denoise and Detect widgets: where ``.pt`` files are looked for, and the
:class:`CheckpointChooser` drop-down (+ file browser) offering them.

The list holds the session registry's checkpoints (:mod:`napari_lidnet._registry`, filled by the Train
widget), the checkpoints found in the known run folders and their sub-folders (the kind read from each
file, never its name) and the files the user browsed to.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, PushButton

from src_training.checkpoint_files import peek_checkpoint
from src_training.errors import LidnetError

from .. import _registry

#: Environment variable: extra folders (os.pathsep-separated) searched for checkpoints.
RUN_DIRS_ENV = "LIDNET_RUN_DIRS"

#: Folder names (relative to the working directory and the home folder) searched for run folders.
DEFAULT_RUN_DIR_NAMES = ("lidnet-report", "lidnet-runs", "runs")

_EXTRA_RUN_DIRS: list[Path] = []


def register_run_dir(path: str | os.PathLike) -> None:
    """Add a folder to the places :class:`CheckpointChooser` searches for ``*.pt`` files (session only)."""
    p = Path(path).expanduser().resolve()
    if p not in _EXTRA_RUN_DIRS:
        _EXTRA_RUN_DIRS.append(p)


def known_run_dirs() -> list[Path]:
    """Folders searched for checkpoints: ``$LIDNET_RUN_DIRS``, folders added with :func:`register_run_dir`,
    and ``lidnet-report``, ``lidnet-runs``, ``runs`` in the working directory and the home folder."""
    dirs: list[Path] = []
    env = os.environ.get(RUN_DIRS_ENV, "")
    dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p.strip())
    dirs.extend(_EXTRA_RUN_DIRS)
    for base in (Path.cwd(), Path.home()):
        dirs.extend(base / n for n in DEFAULT_RUN_DIR_NAMES)
    out: list[Path] = []
    for d in dirs:
        try:
            d = d.resolve()
        except OSError:
            continue
        if d not in out and d.is_dir():
            out.append(d)
    return out


#: How deep below a run folder checkpoints are looked for (``lidnet-report/checkpoints/lidnet/denoiser.pt``
#: is 3 levels down, as ``lidnet demo --out lidnet-report`` writes it).
MAX_DEPTH = 4

#: Folders never searched (simulation caches, hidden folders).
_SKIP_DIRS = ("ldct_cache", ".cache", "__pycache__")


def checkpoint_kind(path: Path) -> str | None:
    """The kind stored in a checkpoint file (:func:`src_training.checkpoint_files.peek_checkpoint`:
    ``denoiser``, ``detector``, ``segmenter``, ``trainer_state``), or None for a file that is not a readable
    napari-lidnet checkpoint. Never guessed from the file name."""
    try:
        return peek_checkpoint(path).kind
    except LidnetError:
        return None


def _pt_files(root: Path, max_depth: int = MAX_DEPTH):
    """``*.pt`` / ``*.pth`` files under ``root`` down to ``max_depth`` folder levels (skipping caches)."""
    base = len(root.parts)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if len(here.parts) - base >= max_depth:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for f in filenames:
            if f.endswith((".pt", ".pth")):
                yield here / f


def find_checkpoints(kind: str | None = None, dirs: Iterable[Path] | None = None) -> list[Path]:
    """Checkpoint files in the known run folders and their sub-folders (down to :data:`MAX_DEPTH` levels),
    newest first.

    Parameters
    ----------
    kind : "denoiser", "detector" or None
        Keep only files whose stored kind is this one (read from the file, :func:`checkpoint_kind`); None
        keeps every model checkpoint. Trainer states and files that are not napari-lidnet checkpoints are
        never listed.
    dirs : folders, optional
        Default :func:`known_run_dirs`.
    """
    found: dict[Path, float] = {}
    for d in dirs if dirs is not None else known_run_dirs():
        try:
            candidates = list(_pt_files(Path(d)))
        except OSError:
            continue
        for p in candidates:
            try:
                rp = p.resolve()
                if rp in found or not rp.is_file():
                    continue
                mtime = rp.stat().st_mtime
            except OSError:
                continue
            found_kind = checkpoint_kind(rp)
            if found_kind in (None, "trainer_state") or (kind is not None and found_kind != kind):
                continue
            found[rp] = mtime
    return sorted(found, key=lambda p: -found[p])


class CheckpointChooser(Container):
    """Choose a checkpoint: a drop-down of known ``.pt`` files + a file browser; ``.value`` is a Path or None.

    The drop-down lists the session registry's checkpoints of ``kind`` (from the Train widget) and the
    ``*.pt`` files of :func:`known_run_dirs`; a browsed file is added to it and selected. It refreshes when
    the registry changes.
    """

    def __init__(self, kind: str, label: str = "checkpoint"):
        super().__init__(labels=True)
        self._kind = kind
        self._browsed: list[Path] = []
        self.combo = ComboBox(label=label, choices=self._choices, nullable=True)
        self.browse = FileEdit(label="browse", mode="r", filter="PyTorch checkpoint (*.pt *.pth)")
        self.refresh_btn = PushButton(text="refresh list")
        self.extend([self.combo, self.browse, self.refresh_btn])
        self.margins = (0, 0, 0, 0)
        self.browse.changed.connect(self._on_browse)
        self.refresh_btn.changed.connect(self.refresh)
        _registry.events.changed.connect(self._on_registry_changed)
        self._select_first()

    def _choices(self, _widget: Any = None) -> list[tuple[str, Path]]:
        entries: list[tuple[str, Path]] = []
        seen: set[Path] = set()
        for p in reversed(self._browsed):
            if p.is_file() and p not in seen:
                entries.append((str(p), p))
                seen.add(p)
        for e in reversed(_registry.list_checkpoints(self._kind)):
            if e.path not in seen:
                entries.append((e.label, e.path))
                seen.add(e.path)
        for p in find_checkpoints(self._kind):
            if p not in seen:
                try:
                    label = str(p.relative_to(Path.cwd()))
                except ValueError:
                    label = str(p)
                entries.append((label, p))
                seen.add(p)
        return entries

    def _select_first(self) -> None:
        if self.combo.value is None:
            ch = self._choices()
            if ch:
                self.combo.value = ch[0][1]

    def _on_registry_changed(self, entry: Any = None) -> None:
        try:
            self.refresh()
            if entry is not None and getattr(entry, "kind", None) == self._kind:
                self.combo.value = entry.path
        except RuntimeError:
            pass

    def _on_browse(self, value: Any = None) -> None:
        p = Path(self.browse.value) if self.browse.value else None
        if p is not None and p.is_file():
            self.set_path(p)

    def refresh(self, *_: Any) -> None:
        """Re-scan the run folders and the registry."""
        self.combo.reset_choices()
        self._select_first()

    def set_path(self, path: str | os.PathLike) -> None:
        """Add ``path`` to the list (if needed) and select it."""
        p = Path(path).expanduser().resolve()
        if p not in self._browsed:
            self._browsed.append(p)
        self.combo.reset_choices()
        self.combo.value = p

    @property
    def value(self) -> Path | None:  # type: ignore[override]
        """The chosen checkpoint file, or None."""
        v = self.combo.value
        return Path(v) if v is not None else None

    @value.setter
    def value(self, path: Any) -> None:
        if path is None:
            self.combo.value = None
        else:
            self.set_path(path)


__all__ = [
    "DEFAULT_RUN_DIR_NAMES",
    "RUN_DIRS_ENV",
    "CheckpointChooser",
    "find_checkpoints",
    "known_run_dirs",
    "register_run_dir",
]
