"""How napari-lidnet names denoisers in layer names, DICOM series descriptions and status lines.

``denoiser_display_name("redcnn", "lidnet") -> "RED-CNN (LIDnet)"``. The display names come from the core's
denoiser registry (:data:`src_training.models.denoisers.DISPLAY_NAMES`); importing it loads torch, which is
why this is not part of :mod:`napari_lidnet._layers` (the reader imports that one and stays light).
"""

from __future__ import annotations

from src_training.models.denoisers import DISPLAY_NAMES

#: Spellings of model keys seen in older checkpoint files, on top of the core's keys.
LEGACY_NAMES = {"red_cnn": "RED-CNN", "cpce2d": "CPCE"}

#: How a training method is written after the model name.
METHOD_LABELS = {"lidnet": "LIDnet", "baseline": "baseline"}


def denoiser_display_name(model_name: str, method: str | None = None) -> str:
    """Human name of a denoiser for layer names, e.g. ``("redcnn", "lidnet") -> "RED-CNN (LIDnet)"``.

    Parameters
    ----------
    model_name : str
        A key of ``src_training.models.denoisers.DENOISERS`` (case and ``-`` ignored); an unknown name is
        returned as given.
    method : str, optional
        ``"lidnet"``, ``"baseline"`` or any other training method (shown as given), in brackets.
    """
    key = str(model_name).strip().lower().replace("-", "")
    base = {**DISPLAY_NAMES, **LEGACY_NAMES}.get(key, str(model_name))
    if method:
        m = str(method).strip().lower()
        return f"{base} ({METHOD_LABELS.get(m, str(method))})"
    return base


__all__ = ["LEGACY_NAMES", "METHOD_LABELS", "denoiser_display_name"]
