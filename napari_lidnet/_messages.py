"""How napari-lidnet tells the user something: napari notifications, never a traceback dialog.

Every widget, the reader, the sample data and ``lidnet gui`` report through these three functions, so a
failure reads the same wherever it happens. No Qt import; napari's notification manager is looked up when a
message is shown (when napari is not importable, the ``napari_lidnet`` logger still has the message).

Messages are in plain words: :func:`plain_words` removes what the libraries underneath add for programmers
(pydicom's "Use force=True to force reading.", exception class names such as ``InvalidDicomError:``).
Messages are shown whole: napari 0.9's toast shows only the first line of a notification (elided) until
the user clicks its chevron or double-clicks it, which expands it to the whole, word-wrapped text; so
:func:`toast_text` puts the first sentence alone on the first line (what is wrong, in short) and the rest
(file names, what to do) below it. Error notifications are plain ``Notification`` objects (not napari's
``ErrorNotification``), so the toast has no "View Traceback" button.
"""

from __future__ import annotations

import logging
import re

from src_training.errors import LidnetError

logger = logging.getLogger("napari_lidnet")

#: Hints written by libraries for programmers, removed from user messages (case-insensitive regular
#: expressions; each removes the whole sentence it matches).
LIBRARY_HINTS: tuple[str, ...] = (
    r"[^.;]*\bforce\s*=\s*True\b[^.;]*[.;]?",  # pydicom: "Use force=True to force reading."
    r"[^.;]*\bset(?:ting)? the keyword\b[^.;]*[.;]?",
    r"[^.;]*\bsee the (?:traceback|stack trace)\b[^.;]*[.;]?",
)
# "InvalidDicomError: ", "zipfile.BadZipFile: ", "RuntimeError: " inside a message (the type tag only)
_EXC_TAG = re.compile(r"\b(?:[a-z_][a-z0-9_]*\.)*[A-Z][A-Za-z0-9]*(?:Error|Exception|BadZipFile|Warning): ")
# the end of the first sentence: ". " / "! " / "? " / ": " followed by more text (not inside "e.g. ", "1.5")
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<![0-9])([.!?])\s+(?=\S)")


def plain_words(message: str) -> str:
    """``message`` without the libraries' hints for programmers (see :data:`LIBRARY_HINTS`) and without
    exception class names (``"InvalidDicomError: "``); doubled full stops and spaces left behind are tidied.

    Parameters
    ----------
    message : str
        A message for the user, e.g. a :class:`~src_training.errors.LidnetError`'s text.

    Returns
    -------
    str
        The same message in plain words (unchanged when there was nothing to remove).
    """
    text = str(message)
    for pattern in LIBRARY_HINTS:
        text = re.sub(pattern, " ", text, flags=re.IGNORECASE)
    text = _EXC_TAG.sub("", text)
    text = re.sub(r"\s+([.,;:])", r"\1", text)  # " ." left by a removed sentence
    text = re.sub(r"\.(?:\s*\.)+", ".", text)  # ".." / ". ." -> "."
    text = re.sub(r":\s*\.", ".", text)  # "...header: ." -> "...header."
    text = re.sub(r"[ \t]{2,}", " ", text)
    return text.strip()


def toast_text(message: str) -> str:
    """Lay out ``message`` for a napari toast: the first sentence on the first line, the rest below it.

    napari's toast shows the first line (elided to its width) and expands to the whole text when clicked;
    with the first sentence alone on that line the user reads what happened at a glance, and the details
    (paths, what to do) are one click away. Messages of one sentence, or already laid out on several
    lines, are returned unchanged.

    Parameters
    ----------
    message : str

    Returns
    -------
    str
        ``"<first sentence>\\n<rest>"``; the text itself is not changed, only one space becomes a line break.
    """
    text = str(message)
    if "\n" in text:
        return text
    m = _SENTENCE_END.search(text)
    if m is None:
        return text
    return text[: m.end(1)] + "\n" + text[m.end():]


def notify_error(exc: BaseException | str, context: str = "") -> str:
    """Show a failure to the user as a napari error notification.

    Parameters
    ----------
    exc : BaseException or str
        The error. A :class:`src_training.errors.LidnetError` carries a message meant for the user and is
        shown as is (a plain string is treated as one); any other exception is logged with its traceback
        (logger ``napari_lidnet``) and shown as ``"<context>: unexpected error <Type>: <message> (details in
        the log)"``. The message is put in plain words (:func:`plain_words`: no library hints such as
        "Use force=True") and laid out for napari's toast (:func:`toast_text`: first sentence on the first
        line).
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
        message = toast_text(plain_words(f"{prefix}{exc}"))
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
    """Show an information notification in napari (only logged, at INFO, when napari is not available).

    The text is put in plain words and laid out for the toast as in :func:`notify_error`.
    """
    message = toast_text(plain_words(message))
    logger.info("napari-lidnet: %s", message)
    try:
        from napari.utils.notifications import show_info

        show_info(message)
    except Exception:  # noqa: BLE001
        pass


def notify_warning(message: str) -> None:
    """Show a warning notification in napari (e.g. an inference fallback: batch halved, moved to the CPU).

    Nothing is logged here: the warnings shown this way come from the core, which logs them itself. Never
    raises (napari absent or its notification system down: the message is dropped). The text is put in plain
    words and laid out for the toast as in :func:`notify_error`.
    """
    message = toast_text(plain_words(message))
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except Exception:  # noqa: BLE001
        pass


__all__ = ["LIBRARY_HINTS", "notify_error", "notify_info", "notify_warning", "plain_words", "toast_text"]
