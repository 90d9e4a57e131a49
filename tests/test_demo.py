"""The main job's ``--fast`` path end to end (tiny budget): every file of the report is written."""

from __future__ import annotations

import json

import torch

from src_training.cli import main


def test_demo_fast_writes_every_report_file(tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["demo", "--fast", "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    assert rc == 0
    for name in ("metrics.json", "tables.txt", "tables.md", "comparison.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    methods = metrics["methods"]
    assert set(methods) == {"LDCT", "Baseline (CPCE)", "LIDnet (CPCE)"}
    for m in methods.values():
        for key in ("psnr", "ssim", "rmse", "psnr_roi", "glcm_correlation_diff", "ap50", "ap75"):
            assert key in m
        assert m["psnr"] is not None and 0 < m["psnr"] < 100
        assert m["ssim"] is not None and -1 <= m["ssim"] <= 1
    assert metrics["n_real_lesions"] > 0 and metrics["n_lesions"] >= metrics["n_real_lesions"]
    printed = capsys.readouterr().out
    assert "Table 2" in printed and "Table 3" in printed and "LIDnet (CPCE)" in printed
    # Checkpoints: atomic files that load with weights_only=True.
    for rel in ("lidnet/denoiser.pt", "lidnet/detector.pt", "baseline/denoiser.pt", "detector_ndct.pt"):
        ckpt = torch.load(out / "checkpoints" / rel, map_location="cpu", weights_only=True)
        assert ckpt["kind"] in ("denoiser", "detector") and ckpt["state_dict"]
    # The figure is a real PNG.
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_unknown_denoiser_is_a_clear_error(tmp_path, capsys):
    rc = main(["demo", "--fast", "--out", str(tmp_path / "r"), "--denoiser", "nope", "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Unknown denoiser 'nope'" in err and "redcnn" in err
