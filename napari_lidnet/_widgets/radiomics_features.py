"""The numbers of the ROI radiomics widget (Qt-free; the work runs in a worker thread): pyradiomics
features of each image layer's ROI via :func:`src_training.evaluation.glcm_features` (computed in HU on one
slice, pixel spacing in mm), and their absolute differences to a reference layer (the ROI radiomics metric
of the LIDnet paper, Table 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from src_training.errors import LidnetError
from src_training.evaluation import glcm_features

#: Optional pyradiomics classes offered besides GLCM.
EXTRA_CLASSES: tuple[str, ...] = ("firstorder", "glrlm", "glszm", "gldm", "ngtdm")
#: The GLCM features always shown (keys of glcm_features' result -> column label).
GLCM_COLUMNS: dict[str, str] = {
    "correlation": "Correlation",
    "homogeneity": "Idm (homog.)",
    "energy": "JointEnergy",
}


def short_name(key: str) -> str:
    """``original_firstorder_Mean`` -> ``firstorder Mean``; GLCM keys -> their column labels."""
    if key in GLCM_COLUMNS:
        return GLCM_COLUMNS[key]
    parts = key.split("_", 2)
    return f"{parts[1]} {parts[2]}" if len(parts) == 3 and parts[0] == "original" else key


#: pyradiomics names of the GLCM features (keys of glcm_features' result -> pyradiomics feature).
GLCM_PYRADIOMICS: dict[str, str] = {
    "correlation": "original_glcm_Correlation",
    "homogeneity": "original_glcm_Idm",
    "energy": "original_glcm_JointEnergy",
}

#: Words left out of layer titles in the table (the full name is the tooltip).
_TITLE_NOISE = ("denoised", "(shipped)", "output")


def feature_tooltip(key: str) -> str:
    """What a feature key is, for a tooltip: ``"homogeneity"`` -> ``"homogeneity: pyradiomics
    original_glcm_Idm"``; other keys (``original_firstorder_Mean``) are returned as they are."""
    return f"{key}: pyradiomics {GLCM_PYRADIOMICS[key]}" if key in GLCM_PYRADIOMICS else key


def short_layer_title(name: str) -> str:
    """A layer name shortened for a table title: "denoised", "(shipped)" and "output" left out
    (``"CPCE LIDnet (shipped) denoised"`` -> ``"CPCE LIDnet"``); the name itself when nothing is left."""
    words = [w for w in name.split() if w.lower() not in _TITLE_NOISE]
    return " ".join(words) or name


def radiomics_rows_work(items: Sequence[dict[str, Any]], feature_classes: Sequence[str], bin_width: float,
                        ref_name: str | None):
    """Progress generator computing the features of every layer's ROI (runs in a worker thread: arrays only).

    Parameters
    ----------
    items : sequence of dict
        One per image layer: ``layer`` (name), ``slice`` (index or None), ``box`` ((4,) x0, y0, x1, y1 in
        that layer's pixels, edges at pixel borders), ``image`` ((H, W) float32 HU: the layer's slice) and
        ``spacing_mm`` ((y, x) pixel size in mm); or ``error`` (the slice could not be read).
    feature_classes : sequence of str
        pyradiomics classes (``glcm`` + the ticked ones).
    bin_width : float
        Grey-level bin width (HU).
    ref_name : str or None
        Layer whose features the others are compared with.

    Yields
    ------
    (done, total, message)
        One step per layer.

    Returns
    -------
    list of dict
        The widget's :attr:`RadiomicsWidget.rows`: ``layer``, ``slice``, ``box`` (list), ``features`` (the
        :func:`src_training.evaluation.glcm_features` dict; empty on failure, then ``error`` holds the
        message: one layer failing does not hide the others) and ``diff`` (absolute difference to the
        reference layer's features; empty for the reference itself and when it has none).
    """
    rows: list[dict[str, Any]] = []
    total = max(len(items), 1)
    for i, it in enumerate(items):
        yield (i, total, f"pyradiomics: {it['layer']}")
        row: dict[str, Any] = {"layer": it["layer"], "slice": it["slice"], "box": np.asarray(it["box"]).tolist()}
        try:
            if it.get("error"):
                raise LidnetError(it["error"])
            row["features"] = glcm_features(
                it["image"],
                it["box"],
                spacing_mm=it["spacing_mm"],
                bin_width=float(bin_width),
                feature_classes=tuple(feature_classes),
            )
        except Exception as exc:  # noqa: BLE001 - one layer failing must not hide the others
            row["features"] = {}
            row["error"] = str(exc)
        rows.append(row)
    ref = next((r for r in rows if r["layer"] == ref_name and r["features"]), None)
    for r in rows:
        r["diff"] = {}
        if ref is not None and r is not ref and r["features"]:
            r["diff"] = {k: abs(v - ref["features"][k]) for k, v in r["features"].items() if k in ref["features"]}
    yield (total, total, "pyradiomics: done")
    return rows


__all__ = [
    "EXTRA_CLASSES",
    "GLCM_COLUMNS",
    "GLCM_PYRADIOMICS",
    "feature_tooltip",
    "radiomics_rows_work",
    "short_layer_title",
    "short_name",
]
