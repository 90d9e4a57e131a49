"""``lidnet reproduce --fast`` end to end with two denoisers: Tables 2-4, metrics.json, Fig. 3 and checkpoints."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from src_training.cli import main
from src_training.errors import ConfigError
from src_training.reproduce import FAST_REPRO_BUDGET, ReproBudget, display_name, run_reproduction


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_reproduce_fast_writes_every_table_and_figure(tmp_path, capsys):
    out = tmp_path / "repro"
    rc = main(["reproduce", "--fast", "--out", str(out), "--denoisers", "cpce,redcnn", "--gan-denoisers", "cpce",
               "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--seed", "3"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Table 2" in printed and "NDCT detector" in printed  # tables and progress lines on stdout

    md = (out / "tables.md").read_text()
    for header in ("Table 2.", "Table 3.", "Table 4.", "Fig. 3"):
        assert header in md, header
    # The budget header states the sizes, steps, batch, N0, seed and hardware.
    b = FAST_REPRO_BUDGET
    assert f"images {b.image_size} x {b.image_size} px" in md and f"batch {b.batch_size}" in md
    assert f"T1 = {b.t1}" in md and "N0 = 1000" in md and "seeds 3" in md and "CPU" in md
    rows = ["LDCT", "Baseline (CPCE)", "LIDnet (CPCE)", "Baseline (RED-CNN)", "LIDnet (RED-CNN)", "NDCT"]
    table2 = md.split("Table 2.")[1].split("Table 3.")[0]
    table3 = md.split("Table 3.")[1].split("Table 3b.")[0]
    for row in rows:
        assert f"| {row} |" in table2 and f"| {row} |" in table3, row
    table4 = md.split("Table 4.")[1].split("Fig. 3")[0]
    assert "| LIDnet (CPCE), CNN form |" in table4

    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("methods", "per_seed", "table4", "fig3", "budget", "seeds", "timing_s", "environment"):
        assert key in metrics, key
    assert list(metrics["methods"]) == rows
    assert metrics["seeds"] == [3] and metrics["denoisers"] == ["cpce", "redcnn"]
    for name in rows[1:-1]:
        m = metrics["methods"][name]
        for key in ("ap50", "ap75", "psnr", "ssim", "rmse", "glcm_correlation_diff", "glcm_homogeneity_diff",
                    "glcm_energy_diff", "training_s"):
            assert key in m, (name, key)
        assert 0 < m["psnr"] < 100 and m["training_s"] > 0
        assert set(metrics["per_seed"][name]) == {"3"}
    t4 = metrics["table4"]["rows"]["LIDnet (CPCE), CNN form"]
    assert t4["training_s"] > 0 and t4["form"].startswith("CNN")
    # Fig. 3: AP-50 before training and after every step (curve_every = 1) of the collaborative run.
    collab = metrics["fig3"]["curves"]["collaborative"]
    total = b.rounds * (b.t2 + b.t3)
    assert [p["step"] for p in collab] == list(range(0, total + 1))
    assert _png_size(out / "fig3_ap_curve.png") == (640, 400)

    for rel in ("detector_ndct.pt", "cpce/baseline_s3/denoiser.pt", "cpce/lidnet_s3/denoiser.pt",
                "redcnn/lidnet_s3/denoiser.pt"):
        ckpt = torch.load(out / "checkpoints" / rel, map_location="cpu", weights_only=True)
        assert ckpt["kind"] in ("denoiser", "detector") and ckpt["state_dict"], rel
    assert torch.load(out / "checkpoints" / "cpce/lidnet_s3/denoiser.pt", weights_only=True)["method"] == "lidnet"


def test_reproduce_rejects_unknown_denoiser(tmp_path):
    with pytest.raises(ConfigError, match="Unknown denoiser.*'nope'.*redcnn"):
        run_reproduction(tmp_path / "r", denoisers=["nope"], fast=True, device="cpu")
    rc = main(["reproduce", "--fast", "--out", str(tmp_path / "r2"), "--denoisers", "cpce",
               "--gan-denoisers", "nope", "--device", "cpu"])
    assert rc == 2


def test_budget_step_scale_and_names():
    b = ReproBudget(**{**FAST_REPRO_BUDGET.__dict__, "t2": 10, "t3": 4, "step_scale": (("redcnn", 0.25),)})
    assert b.steps_for("redcnn") == (2, 1) and b.steps_for("cpce") == (10, 4)
    assert display_name("redcnn") == "RED-CNN" and display_name("cpce") == "CPCE"
