"""Glue to the imaging libraries shared by the readers and writers of :mod:`src_training.io`.

Owns how a SimpleITK / pydicom / GDCM failure is summarised in a user-facing message (:func:`_short`) and
how SimpleITK's console warnings are silenced while the project calls it (:class:`_QuietSitk`). Nothing
here raises; the callers wrap the summaries in :class:`~src_training.errors.CTLoadError` /
:class:`~src_training.errors.CTWriteError`.
"""

from __future__ import annotations

import SimpleITK as sitk


def _short(exc: BaseException, limit: int = 300) -> str:
    """One-line summary of a library exception (SimpleITK messages are many lines long).

    Returns ``"<ExceptionType>: <the useful line>"`` (the last ``Description:`` / ``itk::ERROR`` line when
    there is one, else the last non-empty line), cut to ``limit`` characters with ``...``.
    """
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # SimpleITK / ITK put the useful part on the last lines ("Description: ...").
    desc = [ln for ln in lines if ln.lower().startswith(("description", "itk::error"))]
    msg = desc[-1] if desc else (lines[-1] if lines else type(exc).__name__)
    msg = f"{type(exc).__name__}: {msg}"
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


class _QuietSitk:
    """Context manager silencing SimpleITK/GDCM warnings (restores the previous setting)."""

    def __enter__(self):
        self._prev = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        return self

    def __exit__(self, *exc):
        sitk.ProcessObject.SetGlobalWarningDisplay(self._prev)
        return False
