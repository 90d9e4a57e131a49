"""Result tables and comparison figures in the layout of the LIDnet paper.

* :func:`format_tables` / :func:`format_markdown_tables`: plain-text (aligned columns) or Markdown versions of
  LIDnet's Table 2 (lesion detection AP-50 / AP-75), Table 3 (ROI radiomics differences to NDCT and overall
  PSNR / SSIM / RMSE) and an extra table of the image metrics inside the lesion boxes.
  Source: Chen et al., "LIDnet", ACM MM 2021 (arXiv:2104.08845), Sec. 4, Tables 2 and 3.
* :func:`format_form_table`: LIDnet's Table 4 (CNN form, Eq. 8, vs GAN form, Eq. 5) with training time.
* :func:`save_ap_curve_figure`: LIDnet's Fig. 3, AP during training for each training strategy (PNG).
* :func:`save_comparison_figure`: one row NDCT | LDCT | baseline | LIDnet (any panels) in a CT display window,
  ground-truth lesion boxes and RPN proposals drawn on top, optional zoom row on the first lesion; PNG
  written atomically.

Matplotlib is used through ``matplotlib.figure.Figure`` and the Agg canvas only (no ``pyplot``), so nothing
leaks into a global figure state and it works headless and inside napari.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .checkpoint import atomic_write_bytes
from .evaluation.inputs import EvaluationError, _as_boxes
from .windowing import DEFAULT_HU_RANGE, WINDOWS, Window, window_limits

__all__ = ["format_tables", "format_markdown_tables", "format_form_table", "format_comparisons",
           "format_grad_shares", "save_comparison_figure",
           "save_ap_curve_figure", "GT_COLOR", "PROPOSAL_COLOR"]

#: Colour of ground-truth lesion boxes (yellow, solid) and of RPN proposals (cyan, dashed): distinct in hue,
#: brightness pattern and line style, readable on grey CT and for colour-blind readers.
GT_COLOR = "#ffd400"
PROPOSAL_COLOR = "#00d5ff"

NA = "n/a"

# --------------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------------
_G_RAD = "ROI radiomics: |f - f_NDCT|, lower is better"
_G_ALL = "Whole slice vs NDCT"
_G_ROI = "Inside lesion boxes vs NDCT"
_G_JUDGE = "Independent judge (FCOS)"
_G_OWN = "LIDnet's own NDCT detector"
#: short group prefixes for Markdown headers (Markdown has no spanning header cells)
_MD_PREFIX = {_G_RAD: "ROI radiomics diff.", _G_ALL: "", _G_ROI: "ROI", _G_JUDGE: "judge", _G_OWN: "own det."}
# (key, header, group, format, scale)
_T2 = [
    ("ap50", "AP-50 (%)", None, ".1f", 100.0),
    ("ap75", "AP-75 (%)", None, ".1f", 100.0),
]
_T2_JUDGED = [
    ("ap50", "AP-50 (%)", _G_JUDGE, ".1f", 100.0),
    ("ap75", "AP-75 (%)", _G_JUDGE, ".1f", 100.0),
    ("own_ap50", "AP-50 (%)", _G_OWN, ".1f", 100.0),
    ("own_ap75", "AP-75 (%)", _G_OWN, ".1f", 100.0),
]
_T3 = [
    ("glcm_correlation_diff", "Correlation", _G_RAD, ".4f", 1.0),
    ("glcm_homogeneity_diff", "Homogeneity", _G_RAD, ".4f", 1.0),
    ("glcm_energy_diff", "Energy", _G_RAD, ".4f", 1.0),
    ("psnr", "PSNR (dB)", _G_ALL, ".2f", 1.0),
    ("ssim", "SSIM", _G_ALL, ".4f", 1.0),
    ("rmse", "RMSE [0,1]", _G_ALL, ".4f", 1.0),
]
_T4 = [
    ("psnr_roi", "PSNR (dB)", _G_ROI, ".2f", 1.0),
    ("ssim_roi", "SSIM", _G_ROI, ".4f", 1.0),
    ("rmse_roi", "RMSE [0,1]", _G_ROI, ".4f", 1.0),
]


def _fmt(value: Any, spec: str, scale: float) -> str:
    """Format one table cell: missing / None / NaN -> 'n/a', +-inf -> 'inf' / '-inf'."""
    if value is None:
        return NA
    if hasattr(value, "item") and getattr(value, "size", 1) == 1:  # numpy / torch scalar
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if math.isnan(v):
        return NA
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return format(v * scale, spec)


def _methods(metrics: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(metrics, Mapping) or not isinstance(metrics.get("methods"), Mapping):
        raise EvaluationError(
            "metrics must be a dict with a 'methods' dict: {'methods': {'LDCT': {...}, 'LIDnet (RED-CNN)': {...}}}."
        )
    methods = metrics["methods"]
    if not methods:
        raise EvaluationError("metrics['methods'] is empty: nothing to report.")
    return methods


def _table_rows(methods, columns):
    cols = list(columns)
    headers = ["Method"] + [c[1] for c in cols]
    groups = [None] + [c[2] for c in cols]
    rows = []
    for name, m in methods.items():
        m = m or {}
        rows.append([str(name)] + [_cell(m, key, spec, scale) for key, _, _, spec, scale in cols])
    return headers, groups, rows


def _cell(m: Mapping[str, Any], key: str, spec: str, scale: float) -> str:
    """``value`` or, when ``m[key + "_ci"]`` holds finite ``low``/``high``, ``"value [low, high]"``."""
    text = _fmt(m.get(key), spec, scale)
    ci = m.get(key + "_ci")
    if isinstance(ci, Mapping) and text not in (NA, "inf", "-inf"):
        lo, hi = ci.get("low"), ci.get("high")
        if lo is not None and hi is not None and math.isfinite(float(lo)) and math.isfinite(float(hi)):
            text += f" [{_fmt(lo, spec, scale)}, {_fmt(hi, spec, scale)}]"
    return text


def _text_table(title: str, headers, groups, rows, notes: Sequence[str]) -> str:
    n = len(headers)
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) for i in range(n)]
    # widen columns so that each group label fits above its span
    spans: list[tuple[str | None, int, int]] = []
    i = 0
    while i < n:
        j = i
        while j + 1 < n and groups[j + 1] == groups[i] and groups[i] is not None:
            j += 1
        spans.append((groups[i], i, j))
        i = j + 1
    sep = " | "
    for label, a, b in spans:
        if label:
            have = sum(widths[a : b + 1]) + len(sep) * (b - a)
            extra = len(label) - have
            k = 0
            while extra > 0:  # spread the extra width over the span's columns
                widths[a + k % (b - a + 1)] += 1
                extra -= 1
                k += 1

    def line(cells):
        return sep.join(c.ljust(widths[0]) if k == 0 else c.rjust(widths[k]) for k, c in enumerate(cells)).rstrip()

    out = [title]
    if any(g for g in groups):
        parts = []
        for label, a, b in spans:
            w = sum(widths[a : b + 1]) + len(sep) * (b - a)
            parts.append((label or "").center(w))
        out.append(sep.join(parts).rstrip())
    out.append(line(headers))
    out.append("-+-".join("-" * w for w in widths))
    out.extend(line(r) for r in rows)
    out.extend(f"  {note}" for note in notes)
    return "\n".join(out)


def _md_table(title: str, headers, groups, rows, notes: Sequence[str]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")

    hdr = [esc(f"{_MD_PREFIX.get(g, g)} {h}".strip() if g else h) for h, g in zip(headers, groups)]
    out = [f"**{esc(title)}**", "", "| " + " | ".join(hdr) + " |"]
    out.append("|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|")
    out.extend("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)
    if notes:
        out.append("")
        out.extend(f"*{esc(n)}*  " for n in notes)
    return "\n".join(out)


def _interval_note(methods: Mapping[str, Mapping[str, Any]]) -> str | None:
    """What the ``[a, b]`` cells are, from the intervals' ``method`` (bootstrap over units, t over seeds)."""
    kinds = {ci.get("method") for m in methods.values() if isinstance(m, Mapping)
             for k, ci in m.items() if k.endswith("_ci") and isinstance(ci, Mapping)}
    if not kinds:
        return None
    parts = []
    if "t" in kinds:
        parts.append("trained rows: mean over training seeds with a Student-t 95 % interval over seeds")
    if "bootstrap" in kinds:
        parts.append("95 % percentile bootstrap interval over slices (AP, image metrics) or lesion boxes (radiomics)"
                     + (" for the untrained rows" if "t" in kinds else ""))
    return ("[a, b]: " + "; ".join(parts) + ". The slices are neighbours in one patient and the boxes are per slice, "
            "so these intervals show the sampling noise of this evaluation set, not the variation between patients.")


def _scale_note(metrics: Mapping[str, Any]) -> str:
    lo, hi = metrics.get("hu_range", DEFAULT_HU_RANGE)
    return (
        f"PSNR/SSIM/RMSE on the [0, 1] scale: HU clipped to [{float(lo):g}, {float(hi):g}] and scaled "
        f"(RMSE x {float(hi) - float(lo):g} = HU); SSIM: 7x7 uniform window (scikit-image)."
    )


def _sections(metrics: Mapping[str, Any]):
    methods = _methods(metrics)
    n_info = [f"{label}: {metrics[key]}" for key, label in (("n_images", "slices"), ("n_lesions", "lesion boxes"))
              if key in metrics]
    info = f" [{', '.join(n_info)}]" if n_info else ""
    radiomics_note = metrics.get(
        "radiomics_settings",
        "GLCM by pyradiomics in each lesion box (2D, bin width 25 HU); homogeneity = IDM, energy = joint "
        "energy; mean over boxes.",
    )
    judged = any(isinstance(m, Mapping) and "own_ap50" in m for m in methods.values())
    ci_note = _interval_note(methods)
    t2_notes = ["AP-50 / AP-75: average precision at IoU 0.5 / 0.75, in %."]
    if judged:
        t2_notes.append("Judge: an FCOS detector trained on NDCT that no LIDnet run ever saw. Own: the pretrained "
                        "Faster R-CNN LIDnet starts from and is trained against (biased towards LIDnet).")
    if ci_note:
        t2_notes.append(ci_note)
    return [
        (
            f"Table 2. Lesion detection on the denoised images (COCO AP, higher is better){info}",
            _table_rows(methods, _T2_JUDGED if judged else _T2),
            t2_notes,
        ),
        (
            "Table 3. ROI radiomics difference to NDCT and overall image quality",
            _table_rows(methods, _T3),
            [str(radiomics_note), _scale_note(metrics)],
        ),
        (
            "Table 3b. Image quality inside the lesion boxes (all boxes' pixels pooled; SSIM averaged per box)",
            _table_rows(methods, _T4),
            ["n/a: not computed (e.g. no lesion box)."],
        ),
    ]


def format_tables(metrics: Mapping[str, Any]) -> str:
    """Plain-text tables in the layout of LIDnet's Tables 2 and 3, plus an ROI image-quality table.

    Parameters
    ----------
    metrics : dict
        ``{"methods": {name: {...}}, ...}``. Method names are free text (e.g. ``"LDCT"``,
        ``"Baseline (RED-CNN)"``, ``"LIDnet (RED-CNN)"``), printed in the dict's order. Per method, any of:
        ``ap50``, ``ap75`` (fractions in [0, 1], printed in %), ``psnr`` (dB), ``ssim``, ``rmse`` ([0, 1]
        scale), ``psnr_roi``, ``ssim_roi``, ``rmse_roi``, ``glcm_correlation_diff``,
        ``glcm_homogeneity_diff``, ``glcm_energy_diff`` (mean absolute difference to NDCT). Missing keys,
        None and NaN print as ``n/a``. Optional top-level keys: ``hu_range`` (HU range behind the [0, 1]
        scale, default (-1024, 1024)), ``n_images``, ``n_lesions``, ``radiomics_settings`` (text).

    Returns
    -------
    str
        Tables separated by blank lines, aligned with spaces, units in the headers.

    Raises
    ------
    EvaluationError
        ``metrics`` has no non-empty ``methods`` dict.
    """
    return "\n\n".join(_text_table(t, *rows, notes) for t, rows, notes in _sections(metrics)) + "\n"


def format_markdown_tables(metrics: Mapping[str, Any]) -> str:
    """The same tables as :func:`format_tables`, as GitHub Markdown (group names prefixed to the headers)."""
    return "\n\n".join(_md_table(t, *rows, notes) for t, rows, notes in _sections(metrics)) + "\n"


def format_comparisons(comparisons: Mapping[str, Mapping[str, Any]], metrics_table: Sequence[Any],
                       markdown: bool = True, over_seeds: bool = False) -> str:
    """Paired differences of methods on the same units, one row per metric, one column pair per comparison.

    Parameters
    ----------
    comparisons : dict {title: {metric key: {"diff": Estimate dict, "verdict": str, "reading": str}}}
        E.g. ``{"LIDnet - Baseline": {...}}`` from :func:`src_training.evaluation.scoring.compare`.
    metrics_table : sequence of Metric
        :data:`src_training.evaluation.metrics.METRICS` (key, label, fmt, scale).
    markdown : bool
    over_seeds : bool
        The differences are per seed with a Student-t interval over seeds (``lidnet reproduce``), not a paired
        bootstrap over slices / lesions (``lidnet demo``).

    Returns
    -------
    str
    """
    titles = list(comparisons)
    headers = ["Metric"] + [h for t in titles for h in (f"{t}: difference [95 % CI]", "reading")]
    groups = [None] * len(headers)
    rows = []
    for m in metrics_table:
        row = [m.label]
        present = False
        for t in titles:
            c = comparisons[t].get(m.key)
            if not c:
                row += [NA, ""]
                continue
            present = True
            d = c["diff"]
            row.append(_cell({"v": d.get("value"), "v_ci": d}, "v", m.fmt, m.scale))
            row.append(str(c.get("reading", c.get("verdict", ""))))
        if present:
            rows.append(row)
    title = ("Differences between methods (paired per training seed, Student-t 95 % interval over seeds)" if over_seeds
             else "Differences between methods (paired bootstrap: the same slices / lesions resampled for both)")
    notes = ["'no difference': the 95 % interval of the difference contains 0.",
             "better/worse follow each metric's direction (AP, PSNR, SSIM: higher is better; radiomics "
             "differences, RMSE: lower is better)."]
    return _md_table(title, headers, groups, rows, notes) if markdown else _text_table(title, headers, groups, rows,
                                                                                          notes)


def format_grad_shares(shares: Mapping[str, Mapping[str, float]], markdown: bool = True) -> str:
    """Each loss term's mean share of the denoiser's gradient norm, per run (rows) and term (columns).

    Parameters
    ----------
    shares : dict {run label: {term: share in [0, 1]}}
    markdown : bool
    """
    terms: list[str] = []
    for d in shares.values():
        for k in d:
            if k not in terms:
                terms.append(k)
    headers = ["Run"] + [f"{t} (%)" for t in terms]
    rows = [[str(label)] + [_fmt(d.get(t), ".1f", 100.0) for t in terms] for label, d in shares.items()]
    title = "Share of the denoiser's gradient norm per loss term (mean over denoiser steps)"
    notes = ["share_t = ||grad of w_t L_t|| / sum over terms; rec = reconstruction, roi = lambda_1 x ROI perceptual "
             "(Eq. 4), det = lambda_2 x detection loss (Eq. 8)."]
    groups = [None] * len(headers)
    return _md_table(title, headers, groups, rows, notes) if markdown else _text_table(title, headers, groups, rows,
                                                                                          notes)


#: Table 4 columns: form, Table 2's AP columns, Table 3's whole-slice image metrics, training time.
_T_FORM = [("form", "Form", None, "", 1.0), *_T2, *_T3[3:], ("training_s", "Training time (s)", None, ".1f", 1.0)]


def format_form_table(table4: Mapping[str, Any], markdown: bool = True) -> str:
    """LIDnet's Table 4: CNN form (Eq. 8) against GAN form (Eq. 5, WGAN-GP critic) of each denoiser.

    Parameters
    ----------
    table4 : dict
        ``{"rows": {name: {...}}, "note": str}``; per row any of ``form`` (text), ``ap50``, ``ap75``
        (fractions in [0, 1], printed in %), ``psnr`` (dB), ``ssim``, ``rmse`` ([0, 1] scale) and
        ``training_s`` (measured wall-clock training time in seconds). Missing / None / NaN print as ``n/a``.
    markdown : bool
        GitHub Markdown (default) or aligned plain text.

    Returns
    -------
    str
        The table; when ``rows`` is empty, the title and a line saying why (``note``).

    Raises
    ------
    EvaluationError
        ``table4`` is not a dict with a ``rows`` dict.

    Source: Chen et al., ACM MM 2021 (arXiv:2104.08845), Sec. 4, Table 4.
    """
    if not isinstance(table4, Mapping) or not isinstance(table4.get("rows"), Mapping):
        raise EvaluationError("table4 must be a dict with a 'rows' dict: {'rows': {'LIDnet (RED-CNN), CNN form': {...}}}.")
    title = "Table 4. LIDnet in CNN form (Eq. 8) and GAN form (Eq. 5, WGAN-GP critic): quality and training time"
    notes = ["AP with the detector trained on NDCT; PSNR/SSIM/RMSE whole slice vs NDCT; training time = measured "
             "wall clock of the denoiser/detector rounds (T1 shared, not included)."]
    if table4.get("note"):
        notes.append(str(table4["note"]))
    rows = table4["rows"]
    if not rows:
        return "\n".join([f"**{title}**" if markdown else title, "", "No row: " + " ".join(notes[1:] or
                                                                                      ["no denoiser selected."])])
    tab = _table_rows(rows, _T_FORM)
    return _md_table(title, *tab, notes) if markdown else _text_table(title, *tab, notes)


def save_ap_curve_figure(path: str | os.PathLike, curves: Mapping[str, Sequence[tuple[float, Any]]], *,
                         title: str | None = None, xlabel: str = "training step", ylabel: str = "AP-50 (%)",
                         scale: float = 100.0, dpi: int = 100, size_in: tuple[float, float] = (6.4, 4.0)) -> Path:
    """Save LIDnet's Fig. 3: AP during training, one line per training strategy (PNG, atomic write).

    Parameters
    ----------
    path : path-like
        Destination PNG.
    curves : dict {label: [(step, ap), ...]}
        AP as fractions in [0, 1] (multiplied by ``scale`` for the y axis); None / NaN points are skipped
        (no lesion, nothing detected). An empty dict gives axes with a "no data" note.
    title, xlabel, ylabel : str
        Figure texts (axes are always labelled).
    scale : float
        Multiplier of the AP values (100 = percent).
    dpi : int
    size_in : (float, float)
        Figure size in inches; the PNG is ``size_in * dpi`` pixels (default 640 x 400).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    EvaluationError
        A curve that is not a sequence of (step, value) pairs.

    Source: Chen et al., ACM MM 2021 (arXiv:2104.08845), Fig. 3 (collaborative vs simultaneous training).
    """
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=size_in, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    markers = "osD^v<>"
    styles = ("-", "--", "-.", ":")
    plotted = 0
    top = 0.0
    for i, (label, pts) in enumerate(curves.items()):
        xs, ys = [], []
        try:
            for step, val in pts:
                v = None if val is None else float(val)
                if v is not None and math.isfinite(v):
                    xs.append(float(step))
                    ys.append(v * scale)
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"curve '{label}' must be a list of (step, AP) pairs.") from exc
        if xs:
            ax.plot(xs, ys, marker=markers[i % len(markers)], linestyle=styles[i % len(styles)], markersize=5,
                    linewidth=1.5, label=str(label))
            plotted += 1
            top = max(top, max(ys))
    if plotted:
        ax.legend(loc="best", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no AP value (no data)", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, max(top * 1.1, 0.05 * scale))  # AP >= 0; a flat zero curve stays visible
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title("\n".join(textwrap.wrap(title, 90)), fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------------------------------------
# figure
# --------------------------------------------------------------------------------------------------------
def _window_label(window: Window) -> str:
    lo, hi = window_limits(window)
    w, level = hi - lo, (hi + lo) / 2.0
    name = None
    if isinstance(window, str):
        name = window.strip().lower().replace("-", "_").replace(" ", "_")
    else:
        for key, (pw, pl) in WINDOWS.items():
            if math.isclose(pw, w) and math.isclose(pl, level):
                name = key
                break
    prefix = f"{name.replace('_', ' ')} window " if name else "window "
    return f"{prefix}W{w:g}/L{level:g} HU"


def _box_array(name: str, boxes: Any) -> np.ndarray:
    """Boxes to draw: the evaluation's validation, degenerate boxes allowed (drawn as lines)."""
    return _as_boxes(name, boxes, require_positive=False)


def _draw_boxes(ax, boxes: np.ndarray, color: str, style: str, lw: float) -> None:
    from matplotlib.patches import Rectangle

    for x0, y0, x1, y1 in boxes:
        # pixel c covers [c, c+1) in box coordinates but is centred on c in imshow coordinates
        ax.add_patch(
            Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=color, linestyle=style,
                      linewidth=lw)
        )


def save_comparison_figure(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, Any]],
    *,
    window: Window = "lung",
    boxes: Any = None,
    proposals: Mapping[str, Any] | None = None,
    title: str | None = None,
    crop: Sequence[float] | None = None,
    zoom: bool = True,
    zoom_margin: float = 1.0,
    dpi: int = 150,
    panel_size_in: float = 3.2,
) -> Path:
    """Save a side-by-side comparison figure (PNG) of CT slices, e.g. NDCT | LDCT | baseline | LIDnet.

    Parameters
    ----------
    path : path-like
        Destination PNG (written atomically: rendered to memory, then temp file + ``os.replace``).
    panels : list of (title, ndarray (H, W) float, HU)
        The slices, left to right, all of the same shape.
    window : str or (width, level)
        CT display window in HU (preset name from :data:`src_training.windowing.WINDOWS` or ``(W, L)``),
        stated in the figure, e.g. "lung window W1500/L-600 HU". Grey scale, black = low HU.
    boxes : (n, 4) xyxy pixel boxes, optional
        Ground-truth lesion boxes, drawn on every panel (yellow, solid).
    proposals : dict {panel title: (k, 4) xyxy pixel boxes}, optional
        Top-K RPN proposals, drawn only on the panel of that title (cyan, dashed). Unknown titles raise.
    title : str, optional
        Figure title.
    crop : (x0, y0, x1, y1) pixels, optional
        Region shown in the first row (e.g. the body); default the whole slice.
    zoom : bool
        Add a second row zoomed on the first ground-truth box (only when ``boxes`` has one).
    zoom_margin : float
        Context around the box in the zoom row, as a multiple of the box size per side (at least 16 px).
    dpi : int
        Resolution; the image is ``n_panels * panel_size_in * dpi`` pixels wide.
    panel_size_in : float
        Width of one panel in inches (its height follows the aspect of the region shown).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    EvaluationError
        No panel, a panel not 2D, panels of different shapes, malformed boxes / crop, proposals for an unknown
        panel.
    ConfigError
        Unknown window preset.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not panels:
        raise EvaluationError("save_comparison_figure needs at least one (title, image) panel.")
    imgs: list[tuple[str, np.ndarray]] = []
    for i, item in enumerate(panels):
        try:
            name, img = item
        except (TypeError, ValueError) as exc:
            raise EvaluationError(f"panel {i} must be a (title, image) pair.") from exc
        if hasattr(img, "detach"):
            img = img.detach().cpu().numpy()
        a = np.asarray(img, dtype=np.float32)
        while a.ndim > 2 and a.shape[0] == 1:
            a = a[0]
        if a.ndim != 2:
            raise EvaluationError(f"panel '{name}' must be a 2D slice (H, W) in HU, got shape {np.shape(img)}.")
        imgs.append((str(name), a))
    shape = imgs[0][1].shape
    for name, a in imgs:
        if a.shape != shape:
            raise EvaluationError(f"All panels must have the same shape; '{name}' is {a.shape}, not {shape}.")
    h, w = shape
    lo, hi = window_limits(window)
    gt = _box_array("boxes", boxes)
    props: dict[str, np.ndarray] = {}
    titles = [n for n, _ in imgs]
    for key, val in (proposals or {}).items():
        if key not in titles:
            raise EvaluationError(f"proposals given for panel '{key}', but the panels are {titles}.")
        props[key] = _box_array(f"proposals['{key}']", val)

    if crop is None:
        cx0, cy0, cx1, cy1 = 0.0, 0.0, float(w), float(h)
    else:
        c = _box_array("crop", crop)
        if c.shape[0] != 1:
            raise EvaluationError("crop must be one (x0, y0, x1, y1) box.")
        cx0, cy0 = max(0.0, c[0, 0]), max(0.0, c[0, 1])
        cx1, cy1 = min(float(w), c[0, 2]), min(float(h), c[0, 3])
        if cx1 <= cx0 or cy1 <= cy0:
            raise EvaluationError(f"crop {c[0].tolist()} does not overlap the {w}x{h} slice.")

    zoom_box = None
    if zoom and gt.shape[0]:
        x0, y0, x1, y1 = gt[0]
        mx = max(16.0, zoom_margin * (x1 - x0))
        my = max(16.0, zoom_margin * (y1 - y0))
        # square-ish zoom region so the zoom panels have the same aspect as the main ones
        half = max((x1 - x0) / 2 + mx, (y1 - y0) / 2 + my)
        xc, yc = (x0 + x1) / 2, (y0 + y1) / 2
        zx0, zx1 = max(0.0, xc - half), min(float(w), xc + half)
        zy0, zy1 = max(0.0, yc - half), min(float(h), yc + half)
        zoom_box = (zx0, zy0, zx1, zy1)

    n = len(imgs)
    nrows = 2 if zoom_box else 1
    fig_w = n * panel_size_in
    # row heights follow the shown regions' aspect so that the images fill the panels
    aspect_main = (cy1 - cy0) / (cx1 - cx0)
    row_h = [panel_size_in * aspect_main]
    if zoom_box:
        row_h.append(panel_size_in * (zoom_box[3] - zoom_box[1]) / (zoom_box[2] - zoom_box[0]))
    fig_h = sum(row_h) + 0.75 + (0.3 if title else 0.0)
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, layout="constrained", facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, n, squeeze=False, gridspec_kw={"height_ratios": row_h})

    regions = [(cx0, cy0, cx1, cy1)] + ([zoom_box] if zoom_box else [])
    for row, (rx0, ry0, rx1, ry1) in enumerate(regions):
        for col, (name, a) in enumerate(imgs):
            ax = axes[row][col]
            ax.imshow(
                a,
                cmap="gray",
                vmin=lo,
                vmax=hi,
                interpolation="nearest" if row else "antialiased",
            )
            ax.set_xlim(rx0 - 0.5, rx1 - 0.5)
            ax.set_ylim(ry1 - 0.5, ry0 - 0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            lw = 1.6 if row else 1.2
            if name in props:
                _draw_boxes(ax, props[name], PROPOSAL_COLOR, "--", lw)
            _draw_boxes(ax, gt, GT_COLOR, "-", lw)
            if row == 0:
                ax.set_title(name, fontsize=11)
            elif col == 0:
                ax.set_ylabel("zoom on lesion 1", fontsize=9)

    handles = []
    if gt.shape[0]:
        handles.append(Line2D([], [], color=GT_COLOR, linestyle="-", linewidth=2, label="ground-truth lesion"))
    if any(v.shape[0] for v in props.values()):
        k = max(v.shape[0] for v in props.values())
        handles.append(
            Line2D([], [], color=PROPOSAL_COLOR, linestyle="--", linewidth=2, label=f"top-{k} RPN proposals")
        )
    if handles:
        leg = fig.legend(handles=handles, loc="outside lower right", ncols=len(handles), fontsize=9,
                         frameon=False)
        leg.set_in_layout(True)
    fig.text(0.01, 0.01, f"Display: {_window_label(window)}", fontsize=9, ha="left", va="bottom")
    if title:
        fig.suptitle(title, fontsize=12)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return atomic_write_bytes(path, buf.getvalue())
