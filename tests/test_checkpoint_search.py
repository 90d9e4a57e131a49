"""Checkpoint lists of the Denoise / Detect widgets: found in sub-folders as `lidnet demo` writes them, the kind
read from the file (never its name)."""

from __future__ import annotations

import torch

from napari_lidnet._widgets._checkpoints import find_checkpoints
from src_training.checkpoint import save_checkpoint
from src_training.checkpoint_files import DenoiserCheckpoint, DetectorCheckpoint, write_checkpoint


def test_find_checkpoints_reads_the_kind_and_searches_the_demo_layout(tmp_path):
    report = tmp_path / "lidnet-report"
    den = write_checkpoint(report / "checkpoints" / "lidnet" / "denoiser.pt",
                           DenoiserCheckpoint("cpce", {"w": torch.ones(1)}, method="lidnet"))
    (report / "checkpoints" / "lidnet").mkdir(parents=True, exist_ok=True)
    # a detector whose file name says "denoiser": listed as a detector only
    odd = write_checkpoint(report / "checkpoints" / "denoiser_copy.pt",
                           DetectorCheckpoint("faster_rcnn", "resnet18", {"w": torch.ones(1)}))
    save_checkpoint(report / "checkpoints" / "lidnet" / "trainer_state.pt", {"kind": "trainer_state", "step": 1})
    torch.save({"w": torch.ones(1)}, report / "bare.pt")  # not a napari-lidnet checkpoint
    (report / "broken.pt").write_bytes(b"not a torch file")
    cache = report / "ldct_cache"
    write_checkpoint(cache / "denoiser.pt", DenoiserCheckpoint("cpce", {"w": torch.ones(1)}))  # caches are skipped

    assert find_checkpoints("denoiser", [report]) == [den.resolve()]
    assert find_checkpoints("detector", [report]) == [odd.resolve()]
    assert set(find_checkpoints(None, [report])) == {den.resolve(), odd.resolve()}


# ------------------------------------------------------------------------------------ shipped catalogue
import json  # noqa: E402
import warnings  # noqa: E402

import pytest  # noqa: E402

from napari_lidnet import _registry  # noqa: E402
from src_training.protocol import JUDGE_FILE, WEIGHTS_DIR  # noqa: E402
from src_training.shipped import preferred_shipped, shipped_models, weights_dir  # noqa: E402


def _den(path, method="lidnet", **config):
    return write_checkpoint(path, DenoiserCheckpoint("cpce", {"w": torch.ones(1)}, dict(config), method, 7))


def test_shipped_catalogue_reads_the_kind_from_the_file_and_the_name_from_its_json(tmp_path, monkeypatch):
    w = tmp_path / "weights"
    # a denoiser named like a detector, with its recipe JSON
    _den(w / "detector.pt", image_size=256)
    (w / "detector.json").write_text(json.dumps({"display_name": "CPCE LIDnet (shipped, demo recipe)"}))
    _den(w / "b.pt", method="baseline")  # no JSON: a name made from the file
    write_checkpoint(w / "zz_frcnn.pt", DetectorCheckpoint("faster_rcnn", "resnet18", {"w": torch.ones(1)}, method="ndct"))
    write_checkpoint(w / JUDGE_FILE, DetectorCheckpoint("fcos", "resnet18", {"w": torch.ones(1)}, method="ndct"))
    (w / JUDGE_FILE.replace(".pt", ".json")).write_text("{ damaged")  # unreadable JSON: ignored
    save_checkpoint(w / "trainer_state.pt", {"kind": "trainer_state", "step": 1})
    torch.save({"w": torch.ones(1)}, w / "bare.pt")
    monkeypatch.setenv("LIDNET_WEIGHTS", str(w))

    assert weights_dir() == w
    dens = shipped_models("denoiser")
    assert [(m.path.name, m.name) for m in dens] == [("b.pt", "CPCE baseline (shipped)"),
                                                    ("detector.pt", "CPCE LIDnet (shipped, demo recipe)")]
    assert dens[1].short_name == "CPCE LIDnet (shipped)" and dens[1].image_size == 256 and dens[1].kind == "denoiser"
    dets = shipped_models("detector")
    assert [m.name for m in dets] == ["Faster R-CNN NDCT detector (shipped)", "FCOS judge (shipped, evaluation only)"]
    assert [m.is_judge for m in dets] == [False, True]
    assert preferred_shipped("denoiser").path.name == "detector.pt"  # the LIDnet one
    assert preferred_shipped("detector").path.name == "zz_frcnn.pt"  # never the judge by default
    assert len(shipped_models()) == 4


def test_the_real_weights_folder_lists_the_shipped_models_by_name(monkeypatch):
    monkeypatch.delenv("LIDNET_WEIGHTS", raising=False)
    assert weights_dir() == WEIGHTS_DIR
    assert [m.name for m in shipped_models("detector")] == [
        "Faster R-CNN NDCT detector (shipped)", "FCOS judge (shipped, evaluation only)"]
    assert [m.name for m in shipped_models("denoiser")] == [
        "CPCE baseline (shipped, demo recipe)", "CPCE LIDnet (shipped, demo recipe)"]
    assert preferred_shipped("denoiser").method == "lidnet"
    assert all(m.image_size == 256 for m in shipped_models())


# ------------------------------------------------------------------------------ remembered between launches
def test_remembered_list_round_trip_drops_missing_files_and_ignores_a_damaged_file(tmp_path, monkeypatch):
    cfg = tmp_path / "cfg"
    monkeypatch.setenv(_registry.CONFIG_ENV, str(cfg))
    run = tmp_path / "runs"
    run.mkdir()
    a, b = _den(run / "a" / "denoiser.pt"), _den(run / "b" / "denoiser.pt")
    _registry.remember_run_dir(run)
    _registry.remember_file(a, "denoiser")
    _registry.remember_file(b, "denoiser")
    _registry.remember_choice("denoiser", a)
    _registry.remember_file(tmp_path / "missing.pt", "denoiser")  # ignored
    assert sorted(p.name for p in cfg.iterdir()) == ["checkpoints.json"]  # no temp file left behind

    rec = _registry.remembered()  # what the next launch reads
    assert rec.run_dirs == [run.resolve()]
    assert rec.files == {"denoiser": [b.resolve(), a.resolve()]}  # most recent first
    assert rec.last == {"denoiser": a.resolve()}

    b.unlink()
    assert _registry.remembered().files == {"denoiser": [a.resolve()]}

    (cfg / "checkpoints.json").write_text('{"run_dirs": [')
    with pytest.warns(UserWarning, match="damaged"):
        assert _registry.remembered() == _registry.Remembered()
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        _registry.remember_choice("detector", a)  # rewritten whole; the same damage is not reported twice
    assert again == []
    assert _registry.remembered().last == {"detector": a.resolve()}


def test_registered_checkpoints_are_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv(_registry.CONFIG_ENV, str(tmp_path / "cfg"))
    ck = _den(tmp_path / "run" / "denoiser.pt")
    try:
        _registry.register_checkpoint(ck, "denoiser")
    finally:
        _registry.clear()
    assert _registry.list_checkpoints() == []
    assert _registry.remembered().files["denoiser"] == [ck.resolve()]


def test_default_config_folder_is_the_platform_one(monkeypatch):
    monkeypatch.delenv(_registry.CONFIG_ENV, raising=False)
    assert _registry.config_dir().name == "napari-lidnet"
    assert _registry.remembered_path().name == "checkpoints.json"
