"""How napari-lidnet tells the user something: napari notifications, never a traceback dialog.

Every widget, the reader, the sample data and ``lidnet gui`` report through these three functions, so a
failure reads the same wherever it happens. No Qt import; napari's notification manager is looked up when a
message is shown (when napari is not importable, the ``napari_lidnet`` logger still has the message).
"""

from __future__ import annotations

import logging

from src_training.errors import LidnetError

logger = logging.getLogger("napari_lidnet")


def notify_error(exc: BaseException | str, context: str = "") -> str:
    """Show a failure to the user as a napari error notification.

    Parameters
    ----------
    exc : BaseException or str
        The error. A :class:`src_training.errors.LidnetError` carries a message meant for the user and is
        shown as is (a plain string is treated as one); any other exception is logged with its traceback
        (logger ``napari_lidnet``) and shown as ``"<context>: unexpected error <Type>: <message> (details in
        the log)"``.
    context : str
        What was being done, e.g. ``"Denoise"``; prefixed to the message as ``"Denoise: ..."``.

    Returns
    -------
    str
        The message that was shown (handy for tests and status lines).
    """
    if not isinstance(exc, BaseException):
        exc = LidnetError(str(exc))
    prefix = f"{context}: " if context else ""
    if isinstance(exc, LidnetError):
        message = f"{prefix}{exc}"
        logger.info("napari-lidnet: %s", message)
    else:
        message = f"{prefix}unexpected error {type(exc).__name__}: {exc} (details in the log)"
        logger.error("napari-lidnet: %s", message, exc_info=(type(exc), exc, exc.__traceback__))
    try:
        from napari.utils.notifications import show_error

        show_error(message)
    except Exception:  # noqa: BLE001 - napari missing or notification system down: the log has it
        logger.error("%s", message)
    return message


def notify_info(message: str) -> None:
    """Show an information notification in napari (only logged, at INFO, when napari is not available)."""
    logger.info("napari-lidnet: %s", message)
    try:
        from napari.utils.notifications import show_info

        show_info(message)
    except Exception:  # noqa: BLE001
        pass


def notify_warning(message: str) -> None:
    """Show a warning notification in napari (e.g. an inference fallback: batch halved, moved to the CPU).

    Nothing is logged here: the warnings shown this way come from the core, which logs them itself. Never
    raises (napari absent or its notification system down: the message is dropped).
    """
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except Exception:  # noqa: BLE001
        pass


__all__ = ["notify_error", "notify_info", "notify_warning"]
