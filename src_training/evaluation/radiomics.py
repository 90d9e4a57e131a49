"""ROI radiomics: GLCM texture features inside a lesion box with pyradiomics (LIDnet Table 3, left part).

Reported as the absolute difference to the NDCT value (:func:`glcm_features`, :func:`radiomics_difference`);
lower is better.

References
----------
van Griethuysen et al., "Computational Radiomics System to Decode the Radiographic Phenotype", Cancer
Research 77(21):e104-e107, 2017 (pyradiomics). Feature definitions follow the IBSI: Zwanenburg et al.,
Radiology 295(2):328-338, 2020.
"""

from __future__ import annotations

import logging
import math
import threading
import warnings
from functools import lru_cache
from typing import Any, Iterable, Sequence

import numpy as np

from .inputs import EvaluationError, _as_2d, _as_boxes, box_pixel_slices

__all__ = ["GLCM_FEATURES", "GLCM_SETTINGS_NOTE", "glcm_features", "radiomics_difference"]

#: The three GLCM features of the paper's Table 3 -> pyradiomics feature keys.
#: Homogeneity is the inverse difference moment ``Idm`` ("homogeneity 2"; ``Id`` would be "homogeneity 1"),
#: energy is ``JointEnergy`` (sum of squared GLCM probabilities). See ``shared/reference/ct-conventions.md``.
GLCM_FEATURES: dict[str, str] = {
    "correlation": "original_glcm_Correlation",
    "homogeneity": "original_glcm_Idm",
    "energy": "original_glcm_JointEnergy",
}

#: Human-readable statement of the radiomics settings (for reports).
GLCM_SETTINGS_NOTE = (
    "pyradiomics {version}, original image, 2D GLCM in the slice plane (force2D, 4 in-plane angles averaged), "
    "distance 1 pixel, symmetrical GLCM, fixed bin width {bin_width:g} HU (pyradiomics' default), no resampling, "
    "no normalisation, ROI = the lesion box"
)

_OTHER_CLASSES = ("firstorder", "glcm", "glrlm", "glszm", "ngtdm", "gldm")


_RADIOMICS_LOCK = threading.Lock()


def _quiet_radiomics():
    import radiomics

    # pyradiomics logs INFO/DEBUG for every extraction and prints some messages through its own handler.
    radiomics.logger.setLevel(logging.WARNING)
    return radiomics


@lru_cache(maxsize=16)
def _extractor(bin_width: float, feature_classes: tuple[str, ...], glcm_names: tuple[str, ...]):
    """A RadiomicsFeatureExtractor for the given settings (built once per settings, cached).

    Only the GLCM features in ``glcm_names`` are enabled (all of them would also compute ``SumAverage``,
    which makes pyradiomics log a warning for every ROI); the other classes are enabled whole.
    """
    _quiet_radiomics()
    from radiomics import featureextractor

    extractor = featureextractor.RadiomicsFeatureExtractor(
        binWidth=float(bin_width),
        force2D=True,
        force2Ddimension=0,  # the single z slice: GLCM angles in the (y, x) plane only
        label=1,
        additionalInfo=False,  # no diagnostics_* keys
    )
    extractor.disableAllImageTypes()
    extractor.enableImageTypeByName("Original")
    extractor.disableAllFeatures()
    enabled: dict[str, list[str]] = {cls: [] for cls in feature_classes if cls != "glcm"}  # [] = whole class
    enabled["glcm"] = list(glcm_names)
    extractor.enableFeaturesByName(**enabled)
    return extractor


def _norm_classes(feature_classes: Iterable[str], extra_features: Iterable[str] | None) -> tuple[str, ...]:
    classes = {str(c).strip().lower() for c in feature_classes}
    classes.add("glcm")
    for key in extra_features or ():
        parts = str(key).split("_")
        if len(parts) < 3 or parts[0] != "original":
            raise EvaluationError(
                f"extra feature '{key}' is not a pyradiomics key like 'original_glcm_Id' or "
                "'original_firstorder_Mean'."
            )
        classes.add(parts[1].lower())
    unknown = sorted(classes - set(_OTHER_CLASSES))
    if unknown:
        raise EvaluationError(
            f"Unknown radiomics feature class(es) {unknown}; choose from {', '.join(_OTHER_CLASSES)}."
        )
    return tuple(sorted(classes))


def glcm_features(
    image_hu: Any,
    box: Sequence[float],
    *,
    spacing_mm: tuple[float, float] = (1.0, 1.0),
    bin_width: float = 25.0,
    feature_classes: Sequence[str] = ("glcm",),
    extra_features: Iterable[str] | None = None,
) -> dict[str, float]:
    """GLCM texture features (pyradiomics) of one lesion box of a CT slice.

    Settings (the same for every image so differences are comparable): pyradiomics ``Original`` image, a
    fixed bin width of ``bin_width`` HU (25 HU is pyradiomics' default), no resampling, no normalisation,
    GLCM at distance 1 pixel, symmetrical, computed in the slice plane (the slice is passed as a one-slice
    3D image with ``force2D=True, force2Ddimension=0``, so the 4 in-plane angles are averaged; passing a
    *2D* SimpleITK image with ``force2D=True`` would silently keep only one angle). ROI = the pixels covered
    by the box. Sources: LIDnet Sec. 4 / Table 3 (ROI radiomics); van Griethuysen et al., Cancer Research
    77(21):e104, 2017 (pyradiomics); Zwanenburg et al., Radiology 2020 (IBSI definitions).

    Parameters
    ----------
    image_hu : ndarray or tensor, (H, W), float
        The slice in HU (not the [0, 1] scale: the bin width is in HU).
    box : (4,) float
        ``x0, y0, x1, y1`` in pixels (edges at pixel borders), clipped to the image.
    spacing_mm : (float, float)
        Pixel spacing ``(row/y, column/x)`` in mm (architecture convention). Stored on the image; the GLCM
        itself counts neighbours in pixels, so it does not change these features.
    bin_width : float
        Grey-level bin width in HU.
    feature_classes : sequence of str
        pyradiomics classes to compute; ``glcm`` is always included. Others: ``firstorder``, ``glrlm``,
        ``glszm``, ``ngtdm``, ``gldm``.
    extra_features : iterable of str, optional
        Further pyradiomics keys to return, e.g. ``"original_glcm_Id"``; their classes are enabled.

    Returns
    -------
    dict[str, float]
        ``correlation`` (``original_glcm_Correlation``; pyradiomics returns 1 for a flat ROI, where the
        correlation is undefined), ``homogeneity`` (``original_glcm_Idm``), ``energy``
        (``original_glcm_JointEnergy``), plus every ``original_<class>_*`` feature of the requested classes
        other than glcm, plus the ``extra_features`` keys.

    Raises
    ------
    EvaluationError (a LidnetError and ValueError)
        Image not 2D / NaN, box malformed, outside the image or smaller than 2x2 pixels after clipping
        (pyradiomics' minimum ROI), unknown feature class, or pyradiomics refusing the ROI.
    """
    img = _as_2d("image_hu", image_hu)
    b = _as_boxes("box", box)
    if b.shape[0] != 1:
        raise EvaluationError(f"glcm_features takes one box, got {b.shape[0]}.")
    sl = box_pixel_slices(b[0], img.shape)
    if sl is None:
        raise EvaluationError(f"The box {b[0].tolist()} lies outside the {img.shape[1]}x{img.shape[0]} image.")
    h, w = sl[0].stop - sl[0].start, sl[1].stop - sl[1].start
    if h < 2 or w < 2:
        raise EvaluationError(
            f"The box {b[0].tolist()} covers {w}x{h} pixel(s) inside the image; GLCM features need a region of "
            "at least 2x2 pixels."
        )
    bw = float(bin_width)
    if not (math.isfinite(bw) and bw > 0):
        raise EvaluationError(f"bin_width must be a positive number of HU, got {bin_width}.")
    classes = _norm_classes(feature_classes, extra_features)
    sy, sx = (float(v) for v in spacing_mm)
    if not (sy > 0 and sx > 0):
        raise EvaluationError(f"spacing_mm must be positive (row, column) spacings in mm, got {spacing_mm}.")

    radiomics = _quiet_radiomics()
    import SimpleITK as sitk

    mask = np.zeros((1,) + img.shape, dtype=np.uint8)
    mask[(0,) + sl] = 1
    s_img = sitk.GetImageFromArray(img[None].astype(np.float32))  # (z=1, y, x) -> SimpleITK (x, y, z)
    s_msk = sitk.GetImageFromArray(mask)
    for s in (s_img, s_msk):
        s.SetSpacing((sx, sy, 1.0))
    glcm_names = {key.split("_", 2)[2] for key in GLCM_FEATURES.values()}
    glcm_names |= {str(k).split("_", 2)[2] for k in extra_features or () if str(k).split("_")[1].lower() == "glcm"}
    extractor = _extractor(bw, classes, tuple(sorted(glcm_names)))
    try:
        with _RADIOMICS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # flat ROIs: 0/0 handled by pyradiomics
            result = extractor.execute(s_img, s_msk, label=1)
    except ValueError as exc:
        raise EvaluationError(f"pyradiomics refused the box {b[0].tolist()}: {exc}") from exc

    out: dict[str, float] = {name: float(result[key]) for name, key in GLCM_FEATURES.items()}
    for key, val in result.items():
        if not key.startswith("original_"):
            continue
        cls = key.split("_")[1]
        if cls != "glcm":
            out[key] = float(val)
    for key in extra_features or ():
        if key not in result:
            raise EvaluationError(
                f"pyradiomics {radiomics.__version__} has no feature '{key}'. Names look like "
                "'original_glcm_Id'."
            )
        out[key] = float(result[key])
    return out


def radiomics_difference(
    image_hu: Any,
    reference_hu: Any,
    boxes: Any,
    **glcm_kwargs: Any,
) -> dict[str, Any]:
    """Mean absolute difference of the GLCM features between an image and its NDCT reference over lesion boxes.

    This is the ROI radiomics metric of LIDnet's Table 3 (|feature(denoised) - feature(NDCT)|, lower is
    better), averaged over boxes.

    Parameters
    ----------
    image_hu, reference_hu : (H, W) float, HU
        Denoised (or low-dose) slice and normal-dose reference slice, same shape.
    boxes : (n, 4) xyxy pixel boxes
        Lesion boxes of the slice. Boxes covering fewer than 2x2 pixels inside the image are skipped (listed in
        ``skipped``), so one tiny lesion does not abort an evaluation.
    **glcm_kwargs
        Passed to :func:`glcm_features` (``spacing_mm``, ``bin_width``).

    Returns
    -------
    dict
        ``glcm_correlation_diff``, ``glcm_homogeneity_diff``, ``glcm_energy_diff`` (float, mean over scored
        boxes; NaN if no box could be scored), ``n_boxes`` (int, boxes scored), ``skipped`` (list of boxes
        too small), ``per_box`` (list of dicts with ``box``, ``image``, ``reference`` and ``diff`` feature
        dicts keyed correlation/homogeneity/energy).

    Raises
    ------
    EvaluationError
        Shapes differ, NaN, malformed boxes.
    """
    img = _as_2d("image_hu", image_hu)
    ref = _as_2d("reference_hu", reference_hu)
    if img.shape != ref.shape:
        raise EvaluationError(f"image and reference must have the same shape, got {img.shape} and {ref.shape}.")
    b = _as_boxes("boxes", boxes)
    per_box: list[dict[str, Any]] = []
    skipped: list[list[float]] = []
    for box in b:
        sl = box_pixel_slices(box, img.shape)
        if sl is None or sl[0].stop - sl[0].start < 2 or sl[1].stop - sl[1].start < 2:
            skipped.append([float(v) for v in box])
            continue
        fi = glcm_features(img, box, **glcm_kwargs)
        fr = glcm_features(ref, box, **glcm_kwargs)
        per_box.append(
            {
                "box": [float(v) for v in box],
                "image": {k: fi[k] for k in GLCM_FEATURES},
                "reference": {k: fr[k] for k in GLCM_FEATURES},
                "diff": {k: abs(fi[k] - fr[k]) for k in GLCM_FEATURES},
            }
        )
    out: dict[str, Any] = {}
    for k in GLCM_FEATURES:
        vals = [pb["diff"][k] for pb in per_box if math.isfinite(pb["diff"][k])]
        out[f"glcm_{k}_diff"] = float(np.mean(vals)) if vals else float("nan")
    out["n_boxes"] = len(per_box)
    out["skipped"] = skipped
    out["per_box"] = per_box
    return out


