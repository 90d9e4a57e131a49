"""Building blocks shared by the napari-lidnet widgets.

* :class:`LayerChooser` / :class:`LayerMultiChooser`: drop-downs of the viewer's layers of one type that
  follow the layer list (insert, remove, rename).
* :func:`device_chooser`: ``auto`` / ``cuda`` / ``cpu`` (``mps`` where available).
* :class:`CheckpointChooser`: the ``.pt`` files of known run folders and of the session's checkpoint
  registry (:mod:`napari_lidnet._registry`), plus a file browser.
* :class:`TaskRunner`: runs a widget's work (a generator yielding progress) in a napari thread worker with a
  progress bar, a Cancel button and error notifications; with the environment variable ``LIDNET_SYNC=1``
  it runs synchronously in the calling thread (as stardist-napari does), so tests can assert directly.

Work functions are generators: they ``yield (done, total, message)`` often (a worker's ``quit()`` takes
effect only at the next yield) and ``return`` their result; they must not touch napari layers (they run
in a worker thread). The result is handed to a callback in the GUI thread, which builds the layers.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterable
from pathlib import Path
from typing import Any

from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, Select

from .._layers import notify_error, notify_info

logger = logging.getLogger("napari_lidnet")

#: Environment variable: when "1"/"true"/"yes", widget work runs synchronously (tests, scripts).
SYNC_ENV = "LIDNET_SYNC"

#: Environment variable: extra folders (os.pathsep-separated) searched for checkpoints.
RUN_DIRS_ENV = "LIDNET_RUN_DIRS"

#: Folder names (relative to the working directory and the home folder) searched for run folders.
DEFAULT_RUN_DIR_NAMES = ("lidnet-report", "lidnet-runs", "runs")

_EXTRA_RUN_DIRS: list[Path] = []


def sync_mode() -> bool:
    """True when ``LIDNET_SYNC`` asks widgets to run their work synchronously (no thread)."""
    return os.environ.get(SYNC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


# --------------------------------------------------------------------------------------------------
# layer choosers
# --------------------------------------------------------------------------------------------------
class _LayerListMixin:
    """Keeps a magicgui categorical widget's choices in step with ``viewer.layers``."""

    _viewer: Any
    _layer_type: type

    def _layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        if self._viewer is None:
            return []
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, self._layer_type)]

    def _connect_layer_events(self) -> None:
        if self._viewer is None:
            return
        events = self._viewer.layers.events
        events.inserted.connect(self._on_inserted)
        events.removed.connect(self._refresh)
        events.moved.connect(self._refresh)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh)

    def _on_inserted(self, event: Any = None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None:
            layer.events.name.connect(self._refresh)
        self._refresh()

    def _refresh(self, event: Any = None) -> None:
        try:
            self.reset_choices()  # type: ignore[attr-defined]
        except RuntimeError:  # the Qt widget is gone (viewer closing)
            pass


class LayerChooser(_LayerListMixin, ComboBox):
    """Drop-down of the viewer's layers of one type (default image layers); ``.value`` is the layer or None.

    Parameters
    ----------
    viewer : napari.Viewer
    layer_type : type
        ``napari.layers.Image`` (default), ``napari.layers.Shapes``...
    label : str
        Label shown in the widget.
    """

    def __init__(self, viewer: Any, layer_type: type | None = None, label: str = "image", **kwargs: Any):
        if layer_type is None:
            from napari.layers import Image

            layer_type = Image
        self._viewer = viewer
        self._layer_type = layer_type
        kwargs.setdefault("nullable", True)
        super().__init__(label=label, choices=self._layer_choices, **kwargs)
        self._connect_layer_events()
        self._select_default()

    def _select_default(self) -> None:
        if self.value is None:
            choices = self._layer_choices()
            if choices:
                self.value = choices[-1][1]

    def _refresh(self, event: Any = None) -> None:
        super()._refresh(event)
        try:
            self._select_default()
        except RuntimeError:
            pass


class LayerMultiChooser(_LayerListMixin, Select):
    """List of the viewer's layers of one type, several selectable; ``.value`` is a list of layers."""

    def __init__(self, viewer: Any, layer_type: type | None = None, label: str = "layers", **kwargs: Any):
        if layer_type is None:
            from napari.layers import Image

            layer_type = Image
        self._viewer = viewer
        self._layer_type = layer_type
        super().__init__(label=label, choices=self._layer_choices, **kwargs)
        self._connect_layer_events()


# --------------------------------------------------------------------------------------------------
# device
# --------------------------------------------------------------------------------------------------
def layer_volume(data: Any, layer_name: str):
    """A CT image layer's data as a float32 ``(z, y, x)`` volume in HU (a 2-D slice becomes ``(1, y, x)``).

    Raises
    ------
    src_training.errors.LidnetError
        The layer is neither a slice nor a volume.
    """
    import numpy as np

    from src_training.errors import LidnetError

    vol = np.asarray(data, dtype=np.float32)
    if vol.ndim == 2:
        vol = vol[None]
    if vol.ndim != 3:
        raise LidnetError(f"Layer '{layer_name}' has {vol.ndim} dimensions; a CT slice or volume is needed.")
    return vol


def device_choices() -> list[str]:
    """``["auto", "cuda", "cpu"]`` (+ ``"mps"`` on Apple silicon)."""
    choices = ["auto", "cuda", "cpu"]
    try:
        import torch

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


# --------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------
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


def _matches_kind(path: Path, kind: str | None) -> bool:
    name = path.name.lower()
    if name.startswith("trainer_state"):
        return False
    if kind is None:
        return True
    other = {"denoiser": "detect", "detector": "denois"}.get(kind)
    return not (other and other in name)


def find_checkpoints(kind: str | None = None, dirs: Iterable[Path] | None = None) -> list[Path]:
    """``*.pt`` files in the known run folders and one level of sub-folders, newest first.

    Parameters
    ----------
    kind : "denoiser", "detector" or None
        Leaves out files whose name says they are of the other kind (``detector*.pt`` for ``"denoiser"``)
        and trainer states. Files are not opened.
    dirs : folders, optional
        Default :func:`known_run_dirs`.
    """
    found: dict[Path, float] = {}
    for d in dirs if dirs is not None else known_run_dirs():
        try:
            candidates = list(d.glob("*.pt")) + list(d.glob("*/*.pt"))
        except OSError:
            continue
        for p in candidates:
            if p.is_file() and _matches_kind(p, kind):
                try:
                    found[p.resolve()] = p.stat().st_mtime
                except OSError:
                    continue
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
        try:
            from .. import _registry

            _registry.events.changed.connect(self._on_registry_changed)
        except Exception:  # noqa: BLE001 - registry not there: files only
            pass
        self._select_first()

    def _choices(self, _widget: Any = None) -> list[tuple[str, Path]]:
        entries: list[tuple[str, Path]] = []
        seen: set[Path] = set()
        for p in reversed(self._browsed):
            if p.is_file() and p not in seen:
                entries.append((str(p), p))
                seen.add(p)
        try:
            from .. import _registry

            for e in reversed(_registry.list_checkpoints(self._kind)):
                if e.path not in seen:
                    entries.append((e.label, e.path))
                    seen.add(e.path)
        except Exception:  # noqa: BLE001
            pass
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


# --------------------------------------------------------------------------------------------------
# viewer close
# --------------------------------------------------------------------------------------------------
def on_window_close(window: Any, callback: Callable[[], Any]) -> bool:
    """Call ``callback()`` once when the top-level Qt ``window`` (napari's main window) closes.

    napari gives docked widgets no close notification (the main window is closed, then deleted later), so
    an event filter on the window watches its ``Close`` event. A programmatic close (``viewer.close()``,
    quitting) calls the callbacks right away; a close by the user (window button, Ctrl+Q), which napari may
    still cancel in a confirmation dialog, calls them on the next event-loop turn if the window is then gone
    or hidden. Several callbacks may be registered on one window; each runs once. Exceptions in a callback
    are logged, not raised.

    Parameters
    ----------
    window : QWidget
        The top-level window (``widget.native.window()`` / ``qwidget.window()``).
    callback : callable
        Called without arguments, in the GUI thread.

    Returns
    -------
    bool
        False when ``window`` is not a live QWidget (nothing registered).
    """
    from qtpy.QtCore import QEvent, QObject, QTimer
    from qtpy.QtWidgets import QWidget

    if not isinstance(window, QWidget):
        return False
    hook = getattr(window, "_lidnet_close_hook", None)
    if hook is None:
        callbacks: list[Callable[[], Any]] = []

        def fire() -> None:
            while callbacks:
                cb = callbacks.pop(0)
                try:
                    cb()
                except Exception:  # noqa: BLE001 - closing must go on
                    logger.exception("napari-lidnet: error while stopping work on viewer close")

        def check_later() -> None:
            try:
                closed = not window.isVisible()
            except RuntimeError:  # the window was already deleted
                closed = True
            if closed:
                fire()

        class _CloseHook(QObject):
            def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 - Qt API
                if event.type() == QEvent.Type.Close:
                    if event.spontaneous():
                        QTimer.singleShot(0, check_later)
                    else:
                        fire()
                return False

        hook = _CloseHook(window)
        hook.callbacks = callbacks  # type: ignore[attr-defined]
        window.installEventFilter(hook)
        window._lidnet_close_hook = hook
    if callback not in hook.callbacks:
        hook.callbacks.append(callback)
    return True


def wait_worker(worker: Any, timeout: float = 10.0) -> bool:
    """Block (without processing Qt events) until a napari thread worker's thread has finished its work.

    Returns False if it is still running after ``timeout`` seconds."""
    t0 = time.monotonic()
    while worker is not None and getattr(worker, "is_running", False):
        if time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.01)
    return True


# --------------------------------------------------------------------------------------------------
# work runner
# --------------------------------------------------------------------------------------------------
class _Failed:
    """Wraps an exception raised by the work generator (returned instead of raised, so the worker's own
    error relay never shows a traceback)."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def _guarded(gen: Generator) -> Generator:
    try:
        result = yield from gen
    except Exception as exc:  # noqa: BLE001 - reported by TaskRunner through notify_error
        return _Failed(exc)
    return result


Work = Callable[[], Generator[Any, None, Any]]


class TaskRunner:
    """Run one widget's work at a time, with a progress bar, a Cancel button and error notifications.

    Parameters
    ----------
    name : str
        What the work is called in notifications and the napari activity dock, e.g. ``"Denoise"``.
    run_button : PushButton
        Disabled while the work runs.
    cancel_button : PushButton
        Enabled while the work runs; asks the worker to stop at its next ``yield``.
    progress_bar : ProgressBar
        Shows ``done / total`` of the last yielded progress.
    status : Label, optional
        Shows the last progress message / outcome.

    Notes
    -----
    ``start(work, on_result)``: ``work()`` returns a generator yielding ``(done, total, message)`` and
    returning a result; ``on_result(result)`` runs in the GUI thread and builds the layers. Exceptions in
    ``work`` or ``on_result`` become a notification (:func:`notify_error`); no layer is added then.
    """

    def __init__(
        self,
        name: str,
        run_button: PushButton,
        cancel_button: PushButton,
        progress_bar: ProgressBar,
        status: Label | None = None,
    ):
        self.name = name
        self.run_button = run_button
        self.cancel_button = cancel_button
        self.progress_bar = progress_bar
        self.status = status
        self.worker: Any = None
        self._pbar: Any = None
        self._running = False
        self._worker_alive = False
        self.last_error: BaseException | None = None
        self.last_result: Any = None
        self.cancelled = False
        #: True after :meth:`shutdown` (viewer closed): results are dropped, no layer is added.
        self.closed = False
        #: Set when the user presses Cancel; work functions may poll it (see :func:`call_with_progress`).
        self.cancel_event = threading.Event()
        self.cancel_button.enabled = False
        self.cancel_button.changed.connect(self.cancel)

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        """True while work is in progress (until the worker thread has fully finished)."""
        return self._running or self._worker_alive

    def _on_finished(self) -> None:
        self._worker_alive = False
        if self._running:  # neither returned nor aborted (should not happen): reset the controls
            self._end()

    def _set_status(self, text: str) -> None:
        if self.status is not None:
            try:
                self.status.value = text
            except RuntimeError:
                pass

    def _begin(self, desc: str) -> None:
        self._running = True
        self.cancelled = False
        self.cancel_event = threading.Event()
        self.last_error = None
        self.last_result = None
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress_bar.min = 0
        self.progress_bar.max = 0  # busy indicator until the first progress arrives
        self.progress_bar.value = 0
        self._set_status(f"{desc}...")
        try:
            from napari.utils import progress

            self._pbar = progress(total=0, desc=desc)
        except Exception:  # noqa: BLE001
            self._pbar = None

    def _end(self) -> None:
        self._running = False
        self.worker = None
        try:
            self.run_button.enabled = True
            self.cancel_button.enabled = False
        except RuntimeError:
            pass
        if self._pbar is not None:
            try:
                self._pbar.close()
            except Exception:  # noqa: BLE001
                pass
            self._pbar = None

    def _on_yield(self, item: Any) -> None:
        try:
            done, total, message = item
        except (TypeError, ValueError):
            return
        total = max(int(total), 1)
        done = min(max(int(done), 0), total)
        try:
            if self.progress_bar.max != total:
                self.progress_bar.max = total
            self.progress_bar.value = done
        except RuntimeError:
            pass
        if message:
            self._set_status(str(message))
        if self._pbar is not None:
            try:
                if self._pbar.total != total:
                    self._pbar.total = total
                self._pbar.n = done
                if message:
                    self._pbar.set_description(str(message))
                self._pbar.refresh()
            except Exception:  # noqa: BLE001
                pass

    def _on_return(self, result: Any, on_result: Callable[[Any], Any]) -> None:
        try:
            if self.closed:  # the viewer is gone: nothing to add a layer to
                return
            if isinstance(result, _Failed) and isinstance(result.exc, Cancelled):
                self.cancelled = True
                self._set_status(f"{self.name} cancelled")
                notify_info(f"{self.name} cancelled; nothing was added.")
                return
            if self.cancel_event.is_set():
                self.cancelled = True
                self._set_status(f"{self.name} cancelled")
                notify_info(f"{self.name} cancelled; nothing was added.")
                return
            if isinstance(result, _Failed):
                self.last_error = result.exc
                self._set_status(f"{self.name} failed")
                notify_error(result.exc, self.name)
                return
            try:
                on_result(result)
            except Exception as exc:  # noqa: BLE001
                self.last_error = exc
                self._set_status(f"{self.name} failed")
                notify_error(exc, self.name)
                return
            self.last_result = result
            try:
                self.progress_bar.value = self.progress_bar.max
            except RuntimeError:
                pass
        finally:
            self._end()

    def _on_abort(self) -> None:
        self.cancelled = True
        if not self.closed:
            self._set_status(f"{self.name} cancelled")
            notify_info(f"{self.name} cancelled; nothing was added.")
        self._end()

    # ------------------------------------------------------------------ API
    def start(self, work: Work, on_result: Callable[[Any], Any], desc: str | None = None) -> Any:
        """Start ``work`` (see class notes). Returns the worker (None in synchronous mode or when busy)."""
        if self._running:
            notify_info(f"{self.name} is already running; wait for it or press Cancel.")
            return None
        if self.closed:
            return None
        desc = desc or self.name
        self._begin(desc)
        try:
            gen = work()
        except Exception as exc:  # noqa: BLE001 - bad parameters detected before the work starts
            self._on_return(_Failed(exc), on_result)
            return None
        if sync_mode():
            guarded = _guarded(gen)
            while True:
                try:
                    item = next(guarded)
                except StopIteration as stop:
                    self._on_return(stop.value, on_result)
                    break
                self._on_yield(item)
            return None
        from napari.qt.threading import create_worker

        def _work() -> Generator:
            return (yield from _guarded(gen))

        worker = create_worker(_work, _start_thread=False)
        worker.yielded.connect(self._on_yield)
        worker.returned.connect(lambda result: self._on_return(result, on_result))
        worker.aborted.connect(self._on_abort)
        worker.finished.connect(self._on_finished)
        # safety net: an error outside the guarded generator (should not happen)
        worker.errored.connect(lambda exc: (self._set_status(f"{self.name} failed"), self._end()))
        self.worker = worker
        self._worker_alive = True
        worker.start()
        try:  # stop the work when the viewer window closes (see shutdown)
            on_window_close(self.run_button.native.window(), self.shutdown)
        except Exception:  # noqa: BLE001 - not docked in a Qt window: the caller shuts down
            pass
        return worker

    def cancel(self, *_: Any) -> None:
        """Ask the running worker to stop at its next progress step."""
        self.cancel_event.set()
        if self.worker is not None:
            self._set_status(f"cancelling {self.name}...")
            self.worker.quit()

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop for good (the viewer is closing): cancel the work, wait up to ``timeout`` seconds for its
        thread to finish and drop its result (no layer is added). Idempotent.

        Returns
        -------
        bool
            True when no worker thread of this runner is running any more.
        """
        self.closed = True
        self.cancel_event.set()
        worker = self.worker
        if worker is None:
            return True
        try:
            worker.quit()
        except RuntimeError:  # its Qt signals object is gone
            pass
        return wait_worker(worker, timeout)

    def wait(self, timeout: float = 60.0) -> bool:
        """Process Qt events until the work is done (for scripts/tests). Returns False on timeout."""
        from qtpy.QtWidgets import QApplication

        t0 = time.monotonic()
        while self.running:
            QApplication.processEvents()
            if time.monotonic() - t0 > timeout:
                return False
            time.sleep(0.005)
        QApplication.processEvents()
        return True


class Cancelled(Exception):
    """Raised inside a progress callback to stop a core function when the user pressed Cancel."""


def call_with_progress(
    fn: Callable[..., Any],
    cancel_event: threading.Event,
    message: str = "",
    poll_s: float = 0.1,
) -> Generator[tuple[int, int, str], None, Any]:
    """Run a blocking core call that reports progress through a callback, as a progress generator.

    ``fn(progress)`` is called in a helper thread with ``progress(done, total)`` (the core's callback
    convention, e.g. :func:`src_training.simulation.simulate_ldct`); this generator yields
    ``(done, total, message)`` as they arrive (and at least every ``poll_s`` seconds, so a worker's
    ``quit()`` is seen) and returns ``fn``'s result. When ``cancel_event`` is set, or the generator is
    closed, the callback raises :class:`Cancelled` at the next step so the core call stops.

    Raises
    ------
    Whatever ``fn`` raises (Cancelled when cancelled).
    """
    q: queue.Queue = queue.Queue()
    result: dict[str, Any] = {}
    stop = threading.Event()

    def progress(done: int, total: int) -> None:
        if stop.is_set() or cancel_event.is_set():
            raise Cancelled("cancelled by the user")
        q.put((int(done), int(total)))

    def target() -> None:
        try:
            result["value"] = fn(progress)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the generator
            result["error"] = exc
        finally:
            q.put(None)

    thread = threading.Thread(target=target, name="lidnet-core-call", daemon=True)
    thread.start()
    last = (0, 1)
    try:
        while True:
            try:
                item = q.get(timeout=poll_s)
            except queue.Empty:
                yield (last[0], last[1], message)
                continue
            if item is None:
                break
            last = item
            yield (item[0], item[1], message)
    finally:
        stop.set()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result.get("value")


def run_controls(run_text: str = "Run") -> tuple[PushButton, PushButton, ProgressBar, Label]:
    """The usual Run / Cancel buttons, progress bar and status line of a widget."""
    run = PushButton(text=run_text)
    cancel = PushButton(text="Cancel")
    bar = ProgressBar(label="progress", min=0, max=1, value=0)
    status = Label(value="")
    return run, cancel, bar, status


SCOPES = ("current slice", "whole volume")


def scope_chooser(label: str = "apply to") -> ComboBox:
    """Drop-down ``current slice`` / ``whole volume``."""
    return ComboBox(label=label, choices=list(SCOPES), value="current slice")


__all__ = [
    "Cancelled",
    "CheckpointChooser",
    "call_with_progress",
    "on_window_close",
    "wait_worker",
    "LayerChooser",
    "LayerMultiChooser",
    "RUN_DIRS_ENV",
    "SCOPES",
    "SYNC_ENV",
    "TaskRunner",
    "device_chooser",
    "device_choices",
    "find_checkpoints",
    "known_run_dirs",
    "register_run_dir",
    "run_controls",
    "scope_chooser",
    "sync_mode",
]
