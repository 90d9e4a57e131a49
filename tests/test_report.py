"""Tests of src_training.report: text/Markdown tables and the comparison figure."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from src_training.evaluation import EvaluationError
from src_training.report import (
    GT_COLOR,
    PROPOSAL_COLOR,
    _window_label,
    format_markdown_tables,
    format_tables,
    save_comparison_figure,
)


def _metrics():
    def m(ap50, ap75, psnr, ssim, rmse, c, h, e):
        return {
            "ap50": ap50, "ap75": ap75, "psnr": psnr, "ssim": ssim, "rmse": rmse,
            "psnr_roi": psnr - 1.0, "ssim_roi": ssim - 0.01, "rmse_roi": rmse + 0.001,
            "glcm_correlation_diff": c, "glcm_homogeneity_diff": h, "glcm_energy_diff": e,
        }

    return {
        "methods": {
            "LDCT": m(0.512, float("nan"), 28.123, 0.7012, 0.0391, 0.1234, 0.2345, 0.0345),
            "Baseline (RED-CNN)": m(0.634, 0.301, 33.456, 0.9123, 0.0212, 0.0456, 0.0567, 0.0123),
            "LIDnet (RED-CNN)": m(0.701, 0.355, 33.789, 0.9145, 0.0208, 0.0321, 0.0432, 0.0101),
        },
        "n_images": 12,
        "n_lesions": 15,
    }


def test_format_tables_contents():
    text = format_tables(_metrics())
    for name in ("LDCT", "Baseline (RED-CNN)", "LIDnet (RED-CNN)"):
        assert text.count(name) == 3  # one row in each of the three tables
    for s in ("AP-50 (%)", "AP-75 (%)", "PSNR (dB)", "SSIM", "RMSE [0,1]", "Correlation", "Homogeneity", "Energy"):
        assert s in text
    for number in ("51.2", "63.4", "30.1", "70.1", "35.5", "28.12", "33.79", "0.9145", "0.0208", "0.1234", "0.0101",
                   "32.79", "0.9045", "0.0218"):
        assert number in text
    assert "n/a" in text  # the NaN AP-75 of LDCT
    assert "nan" not in text.lower().replace("n/a", "")
    # aligned columns: every row of a table has its separators at the same positions
    table2 = text.split("\n\n")[0].splitlines()
    rows = [ln for ln in table2 if ln.startswith(("Method", "LDCT", "Baseline", "LIDnet"))]
    assert len({tuple(i for i, ch in enumerate(r) if ch == "|") for r in rows}) == 1


def test_format_tables_missing_values_and_errors():
    text = format_tables({"methods": {"LDCT": {"psnr": float("inf")}, "X": {}}})
    assert "inf" in text and "n/a" in text and "X" in text
    with pytest.raises(EvaluationError):
        format_tables({})
    with pytest.raises(EvaluationError):
        format_tables({"methods": {}})


def test_format_markdown_tables():
    md = format_markdown_tables(_metrics())
    assert md.count("|:---|") == 3
    for name in ("LDCT", "Baseline (RED-CNN)", "LIDnet (RED-CNN)"):
        assert f"| {name} |" in md
    assert "51.2" in md and "n/a" in md


def test_window_label():
    assert _window_label("lung") == "lung window W1500/L-600 HU"
    assert _window_label((1500, -600)) == "lung window W1500/L-600 HU"
    assert _window_label((1000, 0)) == "window W1000/L0 HU"


def _phantom(h=96, w=128):
    yy, xx = np.mgrid[:h, :w]
    img = np.full((h, w), -1000.0, np.float32)
    body = ((yy - h / 2) / (h * 0.45)) ** 2 + ((xx - w / 2) / (w * 0.45)) ** 2 < 1
    img[body] = 40.0
    lung = ((yy - h / 2) / (h * 0.3)) ** 2 + ((xx - w / 2) / (w * 0.35)) ** 2 < 1
    img[lung] = -850.0
    img[40:52, 60:74] = 30.0  # "lesion"
    return img


def _rgb(hex_color):
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)])


def _has_colour(arr, hex_color, tol=40):
    return bool(np.any(np.abs(arr[..., :3].astype(int) - _rgb(hex_color)).sum(-1) < tol))


def test_save_comparison_figure(tmp_path):
    nd = _phantom()
    rng = np.random.default_rng(0)
    ld = nd + rng.normal(0, 60, nd.shape).astype(np.float32)
    panels = [("NDCT", nd), ("LDCT", ld), ("Baseline", nd), ("LIDnet", nd)]
    boxes = np.array([[60, 40, 74, 52]], np.float32)
    out = save_comparison_figure(
        tmp_path / "cmp.png", panels, window="lung", boxes=boxes,
        proposals={"LIDnet": np.array([[58, 38, 76, 55], [10, 10, 30, 30]], np.float32)}, title="test",
    )
    assert out == tmp_path / "cmp.png"
    with Image.open(out) as im:
        im.load()
        assert im.format == "PNG"
        width, height = im.size
        arr = np.asarray(im.convert("RGB"))
    assert width == round(4 * 3.2 * 150)
    # two rows: overview (aspect 96/128) + square zoom, plus title / legend margins
    assert int((3.2 * 0.75 + 3.2) * 150) < height < int((3.2 * 0.75 + 3.2 + 1.2) * 150)
    assert _has_colour(arr, GT_COLOR) and _has_colour(arr, PROPOSAL_COLOR)
    assert [p.name for p in tmp_path.iterdir()] == ["cmp.png"]  # no temp file left behind


def test_save_comparison_figure_single_row_and_no_pyplot_state(tmp_path):
    import sys

    nd = _phantom()
    out = save_comparison_figure(tmp_path / "a.png", [("NDCT", nd), ("LDCT", nd)], window=(400, 40), crop=(10, 5, 120, 90))
    with Image.open(out) as im:
        width, height = im.size
    assert width == round(2 * 3.2 * 150)
    assert int(3.2 * 85 / 110 * 150) < height < int((3.2 * 85 / 110 + 1.0) * 150)  # one row, cropped aspect
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_save_comparison_figure_errors(tmp_path):
    nd = _phantom()
    with pytest.raises(EvaluationError):
        save_comparison_figure(tmp_path / "x.png", [])
    with pytest.raises(EvaluationError):
        save_comparison_figure(tmp_path / "x.png", [("a", nd), ("b", nd[:-1])])
    with pytest.raises(EvaluationError):
        save_comparison_figure(tmp_path / "x.png", [("a", nd)], proposals={"b": [[0, 0, 2, 2]]})
    with pytest.raises(ValueError):
        save_comparison_figure(tmp_path / "x.png", [("a", nd)], window="nonsense")
    assert not (tmp_path / "x.png").exists()
