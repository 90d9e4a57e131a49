"""The main job's ``--fast`` path end to end (4 slices per case, a few steps): every file of the report, the
intervals, the gradient shares, the measured noise, and identical metrics for the same seed."""

from __future__ import annotations

import json

import pytest
import torch

from src_training.cli import main


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory, shared_ldct_cache):
    out = []
    for i in range(2):
        d = tmp_path_factory.mktemp(f"demo{i}")
        rc = main(["demo", "--fast", "--out", str(d / "report"), "--cache-dir", str(shared_ldct_cache),
                   "--device", "cpu", "--seed", "0"])
        assert rc == 0
        out.append(d / "report")
    return out


def test_demo_fast_writes_every_report_file(demo_runs, capsys):
    out = demo_runs[0]
    for name in ("metrics.json", "tables.txt", "tables.md", "comparison.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    methods = metrics["methods"]
    assert set(methods) == {"LDCT", "Baseline (CPCE)", "LIDnet (CPCE)"}
    for m in methods.values():
        for key in ("psnr", "ssim", "rmse", "psnr_roi", "glcm_correlation_diff", "ap50", "ap75", "own_ap50"):
            assert key in m and key + "_ci" in m, key
        assert 0 < m["psnr"] < 100 and m["psnr_ci"]["low"] <= m["psnr"] <= m["psnr_ci"]["high"]
        assert -1 <= m["ssim"] <= 1
    # LIDnet - Baseline: paired differences with a reading for every metric
    comp = metrics["comparisons"]["LIDnet - Baseline"]
    assert {c["reading"] for c in comp.values()} <= {"better", "worse", "no difference"}
    assert comp["psnr"]["diff"]["low"] <= comp["psnr"]["diff"]["value"] <= comp["psnr"]["diff"]["high"]
    # gradient shares of Eq. 8's terms, per round, summing to 1
    shares = metrics["grad_shares"]["lidnet_mean"]
    assert set(shares) == {"rec", "roi", "det"} and sum(shares.values()) == pytest.approx(1.0)
    assert set(metrics["grad_shares"]["lidnet_by_round"]) == {"1", "2"}
    # the low dose in HU, and the independent judge on record
    noise = metrics["noise"]
    assert noise["eval_native_sigma_hu"] > 0 and noise["eval_sigma_hu"] > 0 and "1000 views" in noise["geometry"]
    assert metrics["detectors"]["judge"]["arch"] == "fcos" and metrics["detectors"]["own"]["arch"] == "faster_rcnn"
    assert metrics["n_real_lesions"] > 0 and metrics["n_lesions"] >= metrics["n_real_lesions"]
    text = (out / "tables.txt").read_text()
    for s in ("Table 2", "Table 3", "Independent judge (FCOS)", "Differences between methods", "Share of the "
              "denoiser's gradient norm", "photons per ray", "HU"):
        assert s in text, s
    # Checkpoints: atomic files that load with weights_only=True.
    for rel in ("lidnet/denoiser.pt", "lidnet/detector.pt", "baseline/denoiser.pt"):
        ckpt = torch.load(out / "checkpoints" / rel, map_location="cpu", weights_only=True)
        assert ckpt["kind"] in ("denoiser", "detector") and ckpt["state_dict"]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # LIDnet did something the baseline did not: other weights from the same start, and the ROI / detection
    # terms carry part of its gradient while the baseline's is the reconstruction term alone
    lid = torch.load(out / "checkpoints/lidnet/denoiser.pt", map_location="cpu", weights_only=True)["state_dict"]
    base = torch.load(out / "checkpoints/baseline/denoiser.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert lid.keys() == base.keys() and any(not torch.equal(lid[k], base[k]) for k in lid)
    assert shares["roi"] > 0 and shares["det"] > 0
    assert set(metrics["grad_shares"]["baseline_mean"]) <= {"rec"}


def test_demo_same_seed_same_metrics(demo_runs):
    a, b = (json.loads((d / "metrics.json").read_text()) for d in demo_runs)
    assert a["methods"] == b["methods"]
    assert a["comparisons"] == b["comparisons"]
    assert a["grad_shares"] == b["grad_shares"]


def test_demo_unknown_denoiser_is_a_clear_error(tmp_path, capsys):
    rc = main(["demo", "--fast", "--out", str(tmp_path / "r"), "--denoiser", "nope", "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "Unknown denoiser 'nope'" in err and "redcnn" in err
