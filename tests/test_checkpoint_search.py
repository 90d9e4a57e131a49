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
