"""Checkpoint choice lists of the Denoise, Detect and Compare widgets: where ``.pt`` files are looked for,
and the :class:`CheckpointChooser` drop-down (+ file browser) offering them.

The list holds, in this order (:func:`checkpoint_choices`):

1. the models that come with the plugin, by name (:func:`src_training.shipped.shipped_models`: e.g.
   "CPCE LIDnet (shipped, demo recipe)"; the independent judge is labelled "FCOS judge (shipped, evaluation
   only)" and listed last of them);
2. the user's checkpoints: those registered by the Train widget (:mod:`napari_lidnet._registry`), then those
   found in the run folders and their sub-folders (:func:`find_checkpoints`), newest first;
3. the files the user browsed to (this session's and the remembered ones).

The kind of every file is read from the file (:func:`src_training.checkpoint_files.peek_checkpoint`), never
from its name. Run folders, browsed files and the last choice per kind are remembered between launches
(:func:`napari_lidnet._registry.remembered`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, PushButton
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox

from src_training.checkpoint_files import CheckpointInfo, peek_checkpoint
from src_training.errors import LidnetError
from src_training.shipped import ShippedModel, preferred_shipped, shipped_models

from .. import _registry
from .._naming import denoiser_display_name

#: Environment variable: extra folders (os.pathsep-separated) searched for checkpoints.
RUN_DIRS_ENV = "LIDNET_RUN_DIRS"

#: Folder names (relative to the working directory and the home folder) searched for run folders.
DEFAULT_RUN_DIR_NAMES = ("lidnet-report", "lidnet-runs", "runs")

_EXTRA_RUN_DIRS: list[Path] = []


def register_run_dir(path: str | os.PathLike) -> None:
    """Add a folder to the places :class:`CheckpointChooser` searches for ``*.pt`` files (this session, and
    remembered for the next launches: :func:`napari_lidnet._registry.remember_run_dir`)."""
    p = Path(path).expanduser().resolve()
    if p not in _EXTRA_RUN_DIRS:
        _EXTRA_RUN_DIRS.append(p)
    _registry.remember_run_dir(p)


def known_run_dirs() -> list[Path]:
    """Folders searched for checkpoints: ``$LIDNET_RUN_DIRS``, folders added with :func:`register_run_dir`,
    the run folders remembered from earlier launches, and ``lidnet-report``, ``lidnet-runs``, ``runs`` in
    the working directory and the home folder (only those that exist)."""
    dirs: list[Path] = []
    env = os.environ.get(RUN_DIRS_ENV, "")
    dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p.strip())
    dirs.extend(_EXTRA_RUN_DIRS)
    dirs.extend(_registry.remembered().run_dirs)
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


_INFO_CACHE: dict[Path, tuple[tuple[int, int], CheckpointInfo | None]] = {}


def checkpoint_info(path: str | os.PathLike) -> CheckpointInfo | None:
    """What a checkpoint file is (:func:`src_training.checkpoint_files.peek_checkpoint`), or None for a file
    that is not a readable napari-lidnet checkpoint. Cached per file until its size or time stamp changes
    (the choosers re-scan the run folders often)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError:
        return None
    key = (st.st_mtime_ns, st.st_size)
    hit = _INFO_CACHE.get(p)
    if hit is not None and hit[0] == key:
        return hit[1]
    try:
        info: CheckpointInfo | None = peek_checkpoint(p)
    except LidnetError:
        info = None
    _INFO_CACHE[p] = (key, info)
    return info


def checkpoint_kind(path: Path) -> str | None:
    """The kind stored in a checkpoint file (``denoiser``, ``detector``, ``segmenter``, ``trainer_state``),
    or None for a file that is not a readable napari-lidnet checkpoint. Never guessed from the file name."""
    info = checkpoint_info(path)
    return info.kind if info is not None else None


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


@dataclass(frozen=True)
class CheckpointChoice:
    """One entry of a checkpoint list.

    Attributes
    ----------
    label : str
        Text shown in the drop-down (unique within a list).
    path : Path
        The ``.pt`` file (absolute).
    source : str
        ``"shipped"`` (comes with the plugin), ``"trained"`` (registered by the Train widget), ``"found"``
        (in a run folder) or ``"browsed"`` (picked by the user).
    name : str
        Short name for layer names (:func:`checkpoint_display_name`).
    tooltip : str
        Longer description (file, what it is, measured numbers of a shipped model).
    shipped : ShippedModel or None
        The catalogue entry of a shipped model.
    """

    label: str
    path: Path
    source: str
    name: str
    tooltip: str = ""
    shipped: ShippedModel | None = None


def _model_label(info: CheckpointInfo | None) -> str:
    """``"CPCE (LIDnet), step 330"`` / ``"faster_rcnn resnet18, step 40"`` / ``"unreadable"``."""
    if info is None:
        return "not a napari-lidnet checkpoint"
    if info.kind == "denoiser":
        what = denoiser_display_name(info.network, info.method)
    else:
        what = " ".join(b for b in (info.network.replace("_", " "), info.backbone, info.method) if b)
    return what + ("" if info.step is None else f", step {info.step}")


def _short_path(p: Path) -> str:
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        try:
            return "~/" + str(p.relative_to(Path.home()))
        except ValueError:
            return str(p)


def checkpoint_display_name(path: str | os.PathLike | None) -> str:
    """The name a result layer carries for the model in ``path``: a shipped model's short name
    (``"CPCE LIDnet (shipped)"``), else the model and its file (``"CPCE (LIDnet) · lidnet/denoiser.pt,
    step 330"``); ``""`` for None."""
    if path is None:
        return ""
    p = Path(path).expanduser().resolve()
    for m in shipped_models():
        if m.path == p:
            return m.short_name
    info = checkpoint_info(p)
    where = f"{p.parent.name}/{p.name}" if p.parent.name else p.name
    if info is None:
        return where
    what = denoiser_display_name(info.network, info.method) if info.kind == "denoiser" else _model_label(info).split(",")[0]
    return f"{what} · {where}" + ("" if info.step is None else f", step {info.step}")


def shipped_for(path: str | os.PathLike | None) -> ShippedModel | None:
    """The shipped catalogue entry of ``path``, or None for a user checkpoint."""
    if path is None:
        return None
    p = Path(path).expanduser().resolve()
    return next((m for m in shipped_models() if m.path == p), None)


def checkpoint_choices(kind: str, browsed: Iterable[Path] = ()) -> list[CheckpointChoice]:
    """The checkpoint list of a chooser of ``kind`` (order in the module docstring), one entry per file.

    Parameters
    ----------
    kind : "denoiser" or "detector"
    browsed : paths
        Files browsed to in this session, most recent last (listed whatever their kind: choosing one gives
        the widget's clear message when it is the wrong kind). Remembered browsed files of ``kind`` follow.
    """
    out: list[CheckpointChoice] = []
    seen: set[Path] = set()
    labels: set[str] = set()

    def add(label: str, p: Path, source: str, name: str, tip: str, shipped: ShippedModel | None = None) -> None:
        if p in seen:
            return
        base, i = label, 2
        while label in labels:
            label, i = f"{base} [{i}]", i + 1
        seen.add(p)
        labels.add(label)
        out.append(CheckpointChoice(label, p, source, name, tip, shipped))

    for m in shipped_models(kind):
        tip = f"{m.name}\n{m.path}" + (f"\nmeasured: {m.summary}" if m.summary else "")
        if m.is_judge:
            tip += "\nThe evaluation protocol's independent judge: use it to score, not to read."
        add(m.name, m.path, "shipped", m.short_name, tip, m)
    for e in reversed(_registry.list_checkpoints(kind)):
        add(e.label, e.path, "trained", checkpoint_display_name(e.path), f"trained in this session\n{e.path}")
    for p in find_checkpoints(kind):
        info = checkpoint_info(p)
        add(f"{_short_path(p)} · {_model_label(info)}", p, "found", checkpoint_display_name(p), str(p))
    user = [Path(b).expanduser().resolve() for b in reversed(list(browsed))]
    for p in user + _registry.remembered().files.get(kind, []):
        if p.is_file():
            info = checkpoint_info(p)
            add(f"{_short_path(p)} · {_model_label(info)}", p, "browsed", checkpoint_display_name(p), str(p))
    return out


class CheckpointChooser(Container):
    """Choose a checkpoint: a drop-down of known ``.pt`` files + a file browser; ``.value`` is a Path or None.

    The drop-down lists :func:`checkpoint_choices` (shipped models by name first). Selected at start: the
    checkpoint last chosen in a chooser of this kind (remembered between launches) when it is still listed,
    else ``default``, else the preferred shipped model (:func:`src_training.shipped.preferred_shipped`: the
    LIDnet denoiser, the NDCT detector rather than the judge), else the first entry. A choice made by the
    user (drop-down or browser) is remembered; a browsed file of this kind is remembered too. The list
    refreshes when the registry changes (a training run saved a checkpoint) and with "refresh list"; the
    disk is not re-scanned on napari's layer events.

    Parameters
    ----------
    kind : "denoiser" or "detector"
    label : str
        Label of the drop-down.
    default : path-like, optional
        Preferred first choice when nothing was remembered.
    """

    def __init__(self, kind: str, label: str = "checkpoint", default: str | os.PathLike | None = None):
        super().__init__(labels=True)
        self._kind = kind
        self._browsed: list[Path] = []
        self._entries: list[CheckpointChoice] = []
        self._quiet = 0
        self.combo = ComboBox(label=label, choices=self._choices, nullable=True)
        self.browse = FileEdit(label="browse", mode="r", filter="PyTorch checkpoint (*.pt *.pth)")
        self.refresh_btn = PushButton(text="refresh list")
        self.extend([self.combo, self.browse, self.refresh_btn])
        self.margins = (0, 0, 0, 0)
        _compact(self.combo)
        self.browse.changed.connect(self._on_browse)
        self.refresh_btn.changed.connect(self.refresh)
        self.combo.changed.connect(self._on_user_choice)
        _registry.events.changed.connect(self._on_registry_changed)
        self._scan()
        rem = _registry.remembered().last.get(kind)
        pref = preferred_shipped(kind)
        for cand in (rem, default, pref.path if pref is not None else None):
            p = Path(cand).expanduser().resolve() if cand is not None else None
            if p is not None and any(e.path == p for e in self._entries):
                self._select(p)
                break
        else:
            self._select_first()

    # ---------------------------------------------------------------- list
    def _choices(self, _widget: Any = None) -> list[tuple[str, Path]]:
        return [(e.label, e.path) for e in self._entries]

    def _scan(self) -> None:
        """Re-read the catalogue, the registry and the run folders; update the drop-down."""
        self._entries = checkpoint_choices(self._kind, self._browsed)
        current = self.combo.value
        self._quiet += 1
        try:
            self.combo.reset_choices()
            if current is not None and current in self.combo.choices:
                self.combo.value = current
        finally:
            self._quiet -= 1
        _set_tooltips(self.combo, self._entries)

    def _select(self, path: Path | None) -> None:
        self._quiet += 1
        try:
            self.combo.value = path
        finally:
            self._quiet -= 1

    def _select_first(self) -> None:
        if self.combo.value is None and self._entries:
            self._select(self._entries[0].path)

    @property
    def entries(self) -> list[CheckpointChoice]:
        """The listed checkpoints, in order."""
        return list(self._entries)

    @property
    def entry(self) -> CheckpointChoice | None:
        """The entry of the chosen checkpoint, or None."""
        v = self.value
        return next((e for e in self._entries if e.path == v), None) if v is not None else None

    @property
    def model_name(self) -> str:
        """Short name of the chosen checkpoint for layer names (:func:`checkpoint_display_name`); ``""``
        when none is chosen."""
        e = self.entry
        return e.name if e is not None else checkpoint_display_name(self.value)

    # ---------------------------------------------------------------- events
    def _on_user_choice(self, value: Any = None) -> None:
        if self._quiet:
            return
        try:
            _registry.remember_choice(self._kind, self.value)
        except Exception:  # noqa: BLE001 - remembering must never break a choice (the registry warned)
            pass

    def _on_registry_changed(self, entry: Any = None) -> None:
        try:
            self._scan()
            if entry is not None and getattr(entry, "kind", None) == self._kind:
                self._select(entry.path)
            else:
                self._select_first()
        except RuntimeError:  # the widget is gone
            pass

    def _on_browse(self, value: Any = None) -> None:
        p = Path(self.browse.value) if self.browse.value else None
        if p is not None and p.is_file():
            self.set_path(p)

    def refresh(self, *_: Any) -> None:
        """Re-scan the weights folder, the run folders and the registry."""
        self._scan()
        self._select_first()

    def reset_choices(self, *_: Any) -> None:
        """napari calls this on every layer change: keep the list (no disk scan), refresh the labels."""
        self._quiet += 1
        try:
            super().reset_choices()
        finally:
            self._quiet -= 1

    def set_path(self, path: str | os.PathLike) -> None:
        """Add ``path`` to the list (if needed), select it and remember the choice (and the file, when it
        is a checkpoint of this chooser's kind)."""
        p = Path(path).expanduser().resolve()
        if p not in self._browsed:
            self._browsed.append(p)
        if checkpoint_kind(p) == self._kind:
            _registry.remember_file(p, self._kind)
        self._scan()
        self._select(p)
        _registry.remember_choice(self._kind, p)

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


def _compact(combo: ComboBox) -> None:
    """Keep long checkpoint names from widening the dock: the drop-down shows ~28 characters, its popup the
    whole names."""
    try:
        q = combo.native
        q.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        q.setMinimumContentsLength(28)
        q.view().setTextElideMode(Qt.TextElideMode.ElideNone)
    except Exception:  # noqa: BLE001 - not a Qt backend
        pass


def _set_tooltips(combo: ComboBox, entries: list[CheckpointChoice]) -> None:
    """Per-item tooltips (file, description) on the Qt drop-down."""
    try:
        q = combo.native
        tips = {e.label: e.tooltip for e in entries}
        for i in range(q.count()):
            tip = tips.get(q.itemText(i))
            if tip:
                q.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
    except Exception:  # noqa: BLE001 - not a Qt backend
        pass


__all__ = [
    "DEFAULT_RUN_DIR_NAMES",
    "RUN_DIRS_ENV",
    "CheckpointChoice",
    "CheckpointChooser",
    "checkpoint_choices",
    "checkpoint_display_name",
    "checkpoint_info",
    "checkpoint_kind",
    "find_checkpoints",
    "known_run_dirs",
    "register_run_dir",
    "shipped_for",
]
