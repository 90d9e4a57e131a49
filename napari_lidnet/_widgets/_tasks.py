"""How a napari-lidnet widget runs its work: off the GUI thread, one run at a time, with progress, Cancel
and error notifications.

* :class:`TaskRunner`: runs a widget's work (a generator yielding progress) in a napari thread worker with a
  progress bar, a Cancel button and error notifications; with the environment variable ``LIDNET_SYNC=1``
  it runs synchronously in the calling thread (as stardist-napari does), so tests can assert directly.
  Every widget that computes something on demand (Simulate, Denoise, Detect, Compare, ROI radiomics) uses
  it; :func:`run_controls` makes its Run / Cancel buttons, progress bar and status line.
* :func:`call_with_progress`: a blocking core call with a ``progress(done, total)`` callback as a progress
  generator (cancellable at the next callback).
* :func:`start_worker`: the one place a napari thread worker is created and wired (the TaskRunner, the
  Train widget's progress watcher and its loss-plot renderer use it).

Work functions are generators: they ``yield (done, total, message)`` often (a worker's ``quit()`` takes
effect only at the next yield) and ``return`` their result; they must not touch napari layers (they run
in a worker thread). The result is handed to a callback in the GUI thread, which builds the layers.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

from magicgui.widgets import Label, ProgressBar, PushButton
from napari.qt.threading import create_worker
from napari.utils import progress as napari_progress
from qtpy.QtWidgets import QApplication

from .._messages import notify_error, notify_info
from ._lifecycle import on_window_close

#: Environment variable: when "1"/"true"/"yes", widget work runs synchronously (tests, scripts).
SYNC_ENV = "LIDNET_SYNC"


def sync_mode() -> bool:
    """True when ``LIDNET_SYNC`` asks widgets to run their work synchronously (no thread)."""
    return os.environ.get(SYNC_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def start_worker(
    fn: Callable[..., Any],
    *args: Any,
    yielded: Callable[[Any], Any] | None = None,
    returned: Callable[[Any], Any] | None = None,
    errored: Callable[[BaseException], Any] | None = None,
    finished: Callable[[], Any] | None = None,
    aborted: Callable[[], Any] | None = None,
) -> Any:
    """Run ``fn(*args)`` in a napari thread worker (a generator function gives a ``GeneratorWorker``).

    The callbacks are connected before the thread starts, so no signal is missed; they run in the GUI
    thread. Returns the started worker.
    """
    worker = create_worker(fn, *args, _start_thread=False)
    for signal, slot in (("yielded", yielded), ("returned", returned), ("errored", errored),
                         ("finished", finished), ("aborted", aborted)):
        if slot is not None:
            getattr(worker, signal).connect(slot)
    worker.start()
    return worker


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
    run_button : PushButton or None
        Disabled while the work runs (None: the work is started otherwise, e.g. by a click in the viewer).
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
        run_button: PushButton | None,
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
        if self.run_button is not None:
            self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress_bar.min = 0
        self.progress_bar.max = 0  # busy indicator until the first progress arrives
        self.progress_bar.value = 0
        self._set_status(f"{desc}...")
        try:
            self._pbar = napari_progress(total=0, desc=desc)
        except Exception:  # noqa: BLE001
            self._pbar = None

    def _end(self) -> None:
        self._running = False
        self.worker = None
        try:
            if self.run_button is not None:
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

        def _work() -> Generator:
            return (yield from _guarded(gen))

        self._worker_alive = True  # before the thread starts (its signals arrive through the event loop)
        self.worker = worker = start_worker(
            _work,
            yielded=self._on_yield,
            returned=lambda result: self._on_return(result, on_result),
            aborted=self._on_abort,
            finished=self._on_finished,
            # safety net: an error outside the guarded generator (should not happen)
            errored=lambda exc: (self._set_status(f"{self.name} failed"), self._end()),
        )
        try:  # stop the work when the viewer window closes (see shutdown)
            on_window_close((self.run_button or self.cancel_button).native.window(), self.shutdown)
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



__all__ = [
    "Cancelled",
    "SYNC_ENV",
    "TaskRunner",
    "call_with_progress",
    "run_controls",
    "start_worker",
    "sync_mode",
    "wait_worker",
]
