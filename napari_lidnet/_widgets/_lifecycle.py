"""What a widget does when the viewer closes: :func:`on_window_close` calls a widget's ``shutdown`` once
when napari's main window closes (running work is cancelled, a training run is asked to stop).

napari gives docked widgets no close notification, so this watches the top-level window's ``Close`` event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QObject, QTimer
from qtpy.QtWidgets import QWidget

logger = logging.getLogger("napari_lidnet")


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


__all__ = ["on_window_close"]
