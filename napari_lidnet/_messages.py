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

The napari reader's own texts (what an opened folder or file holds, the series it skipped or could not
open) are built here too, beside the functions that show them (:func:`not_dicom_message`,
:func:`subfolder_hint`, :func:`series_text`, :func:`only_scouts_message`, :func:`failures_message`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


# --------------------------------------------------------------------------------------------------
# the napari reader's messages (napari_lidnet._reader): what an opened path holds, in a radiologist's words
# --------------------------------------------------------------------------------------------------
def listing(names: Sequence[str], n: int = 5) -> str:
    """``"a, b, c and 4 more"``: the first ``n`` of ``names`` (sorted) and how many others."""
    names = sorted(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def not_dicom_message(path: Path, kind: str) -> str:
    """A file with a DICOM name (``.dcm``...) that is not DICOM; ``kind`` says what it seems to be
    (``"a PNG picture"``, ``""`` when unknown)."""
    what = f"it seems to be {kind}" if kind else "it holds another kind of data, or is damaged"
    return (
        f"{path.name} is not a DICOM image: the file has a DICOM name ({path.suffix}) but {what}. "
        f"Open the DICOM files exported by the scanner or PACS (file: {path})."
    )


def subfolder_hint(found: Sequence[str]) -> str:
    """The core's words for a folder whose images are in sub-folders, ``"It has sub-folders (...); choose the
    one with the images."``, with the deeper folders holding them; ``found``: relative POSIX paths."""
    top = sorted({f.split("/", 1)[0] for f in found})
    deeper = [f for f in found if "/" in f]
    where = f" (the DICOM images are in {listing(deeper, 3)})" if deeper else ""
    return f"It has sub-folders ({listing(top)}); choose the one with the images{where}."


def series_text(info: Any) -> str:
    """A series (:class:`~src_training.io.SeriesInfo`) in a message: ``'<description>' (<n> images)``, or its
    SeriesInstanceUID when it has no description."""
    desc = (info.description or "").strip()
    return f"'{desc}' ({info.n_files} images)" if desc else f"{info.series_uid} ({info.n_files} images)"


def only_scouts_message(where: str, scouts: Sequence[Any], others: Sequence[Any]) -> str:
    """``where`` (a folder, or "The 5 selected DICOM files") holds nothing but localizer (scout) series
    (ImageType LOCALIZER) and maybe series that are not CT images (``others``)."""
    also = (" It also holds series that are not CT images: "
            + "; ".join(f"{s.modality or '?'} {series_text(s)}" for s in others) + ".") if others else ""
    return (f"{where} holds only localizer (scout) images: series " + "; ".join(series_text(s) for s in scouts)
            + ". A localizer is the flat planning view taken before the scan, not a CT volume; open the folder "
            f"or the files of the CT series itself.{also}")


def failures_message(failures: Sequence[tuple[str, str]], n_opened: int) -> str:
    """One message for everything one open could not read.

    Parameters
    ----------
    failures : sequence of (label, reason)
        ``label`` names what failed when the reason does not (``"the series 'x' (5 images) of the folder
        'f'"``), else ``""``; ``reason`` is the error's text (it names the file).
    n_opened : int
        How many volumes of the same open were read.

    Returns
    -------
    str
        One failure: ``"<Label> was not opened:\\n<reason>"`` (the toast's first line names the series; the
        reason alone without a label); several: a first line saying how many, then one line
        ``"- <label>: <reason>"`` each.
    """
    if len(failures) == 1:
        label, reason = failures[0]
        return f"{label[:1].upper()}{label[1:]} was not opened:\n{reason}" if label else reason
    opened = f"; {n_opened} volume(s) were opened" if n_opened else ""
    lines = [f"- {label}: {reason}" if label else f"- {reason}" for label, reason in failures]
    return f"{len(failures)} series or files could not be opened{opened}.\n" + "\n".join(lines)


__all__ = [
    "LIBRARY_HINTS", "failures_message", "listing", "not_dicom_message", "notify_error", "notify_info",
    "notify_warning", "only_scouts_message", "plain_words", "series_text", "subfolder_hint", "toast_text",
]
