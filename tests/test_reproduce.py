"""``lidnet reproduce --fast`` and ``lidnet study --fast`` end to end: tables over seeds with intervals,
paired LIDnet - baseline differences, Table 4, Fig. 3, the study grid."""

from __future__ import annotations

import json
import struct

import pytest
import torch

from src_training.cli import main
from src_training.errors import ConfigError
from src_training.reproduce import display_name, run_reproduction
from src_training.study import study_grid


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_reproduce_fast_over_two_seeds(tmp_path, capsys, shared_ldct_cache):
    out = tmp_path / "repro"
    rc = main(["reproduce", "--fast", "--out", str(out), "--denoisers", "cpce", "--gan-denoisers", "cpce",
               "--cache-dir", str(shared_ldct_cache), "--device", "cpu", "--seed", "3", "4"])
    assert rc == 0
    md = (out / "tables.md").read_text()
    for header in ("Table 2.", "Table 3.", "Table 4.", "Fig. 3", "Differences between methods", "photons per ray"):
        assert header in md, header
    assert "seeds 3, 4" in md
    metrics = json.loads((out / "metrics.json").read_text())
    rows = ["LDCT", "Baseline (CPCE)", "LIDnet (CPCE)", "NDCT"]
    assert list(metrics["methods"]) == rows
    lid = metrics["methods"]["LIDnet (CPCE)"]
    assert lid["n_seeds"] == 2 and len(lid["psnr_seeds"]) == 2 and lid["psnr_ci"]["method"] == "t"
    assert lid["psnr_ci"]["low"] <= lid["psnr"] <= lid["psnr_ci"]["high"]
    assert metrics["methods"]["LDCT"]["psnr_ci"]["method"] == "bootstrap"
    comp = metrics["comparisons"]["LIDnet - Baseline (CPCE)"]
    assert comp["psnr"]["diff"]["n"] == 2 and comp["psnr"]["reading"] in ("better", "worse", "no difference")
    assert sum(metrics["grad_shares"]["LIDnet (CPCE)"].values()) == pytest.approx(1.0)
    t4 = metrics["table4"]["rows"]
    assert set(t4) == {"LIDnet (CPCE), CNN form", "LIDnet (CPCE), GAN form"}
    assert t4["LIDnet (CPCE), GAN form"]["training_s"] > 0
    curves = metrics["fig3"]["curves"]
    assert set(curves) == {"collaborative", "simultaneous"} and curves["collaborative"][0]["step"] == 0
    assert _png_size(out / "fig3_ap_curve.png") == (640, 400)
    ckpt = torch.load(out / "checkpoints" / "cpce" / "s3" / "lidnet" / "denoiser.pt", weights_only=True)
    assert ckpt["method"] == "lidnet"


def test_reproduce_rejects_unknown_denoiser(tmp_path):
    with pytest.raises(ConfigError, match="Unknown denoiser.*'nope'.*redcnn"):
        run_reproduction(tmp_path / "r", denoisers=["nope"], fast=True, device="cpu")
    assert display_name("redcnn") == "RED-CNN" and display_name("cpce") == "CPCE"


def test_study_grid_and_fast_study(tmp_path, shared_ldct_cache):
    grid = study_grid()
    assert len(grid) == 10  # 2 reductions x (lambda_1 = 0 once + 0.5 and 5 with roi/global)
    assert sum(g["lambda_roi"] == 0 for g in grid) == 2
    from src_training.experiment import FAST_BUDGET
    from src_training.study import run_study

    res = run_study(tmp_path / "study", seeds=[0, 1], device="cpu", cache_dir=shared_ldct_cache,
                    budget=FAST_BUDGET, grid=study_grid(reductions=("paper",), lambdas=(0.0, 5.0),
                                                        perceptuals=("roi",)), log=lambda m: None)
    labels = [r["label"] for r in res["rows"]]
    assert labels == ["baseline (paper reduction)", "paper, lambda_1=0", "paper, lambda_1=5, roi"]
    row = res["rows"][2]
    assert row["vs_baseline"]["ap50"]["diff"]["n"] == 2 and sum(row["grad_shares"].values()) == pytest.approx(1.0)
    assert row["grad_shares"]["roi"] > 0 and res["rows"][1]["grad_shares"]["roi"] == 0
    md = (tmp_path / "study" / "study.md").read_text()
    assert "paper, lambda_1=5, roi" in md and "diff. to baseline" in md
    # two parts over disjoint reductions merge into one study (what `lidnet study` does with one process each)
    from src_training.errors import LidnetError
    from src_training.study import combine_studies

    other = {**res, "rows": [{**r, "label": r["label"].replace("paper", "normalised")} for r in res["rows"]],
             "timing_s": 5.0}
    both = combine_studies([res, other], tmp_path / "both", timing_s=7.0, log=lambda m: None)
    assert [r["label"] for r in both["rows"]] == labels + [lab.replace("paper", "normalised") for lab in labels]
    assert both["workers"] == 2 and both["part_timing_s"] == [res["timing_s"], 5.0]
    text = (tmp_path / "both" / "study.md").read_text()
    assert "normalised, lambda_1=5, roi" in text and "2 processes" in text
    with pytest.raises(LidnetError, match="seeds"):
        combine_studies([res, {**other, "seeds": [0]}], tmp_path / "bad", timing_s=1.0)


def test_parallel_study_reports_a_failed_part_with_its_log(tmp_path):
    """A worker that fails (here: an invalid N0, refused before any training) makes run_study_parallel raise a
    LidnetError that names the part and its log file and quotes the worker's error; a CPU picks one process
    per reduction, one reduction or a single process otherwise."""
    from src_training.errors import LidnetError
    from src_training.study import run_study_parallel, study_workers

    with pytest.raises(LidnetError) as err:
        run_study_parallel(tmp_path / "s", reductions=["paper"], seeds=[0], n0=-1.0, device="cpu", fast=True,
                           log=lambda m: None)
    msg = str(err.value)
    assert "study part 'paper' failed" in msg and str(tmp_path / "s" / "part_paper" / "log.txt") in msg
    assert "n0" in msg and not (tmp_path / "s" / "study.json").exists()
    assert study_workers("cpu", 1) == 1
    import os
    assert study_workers("cpu", 2) == (2 if (os.cpu_count() or 1) >= 2 else 1)
