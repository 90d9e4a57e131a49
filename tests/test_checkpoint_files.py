"""Typed checkpoint records: one writer, one reader, one peek that reads the kind from the file, not its name."""

from __future__ import annotations

import pickle

import pytest
import torch

from src_training.checkpoint_files import (DenoiserCheckpoint, DetectorCheckpoint, SegmenterCheckpoint,
                                           peek_checkpoint, read_checkpoint, write_checkpoint)
from src_training.errors import CheckpointError
from src_training.protocol import DETECTOR_FILE, JUDGE_FILE, shipped_weights


def test_records_round_trip(tmp_path):
    den = DenoiserCheckpoint("cpce", {"w": torch.arange(3.0)}, {"hu_range": [-1000, 1000], "image_size": 256},
                             "lidnet", 240)
    det = DetectorCheckpoint("fcos", "resnet18", {"w": torch.ones(2)}, {"fpn_channels": 128}, {}, 5)
    seg = SegmenterCheckpoint("unet2d", {"w": torch.zeros(1)}, {"width": 16}, {}, "todnet", 3)
    for rec, name in ((den, "a.pt"), (det, "b.pt"), (seg, "c.pt")):
        write_checkpoint(tmp_path / name, rec)
        back = read_checkpoint(tmp_path / name)
        assert type(back) is type(rec)
        assert back.to_dict().keys() == rec.to_dict().keys()
        for k, v in rec.state_dict.items():
            assert torch.equal(back.state_dict[k], v)
    back = read_checkpoint(tmp_path / "a.pt", "denoiser")
    assert (back.model, back.method, back.step, back.config["image_size"]) == ("cpce", "lidnet", 240, 256)


def test_peek_reads_the_kind_from_the_file_not_the_name(tmp_path):
    # a detector saved under a denoiser's file name is still a detector
    write_checkpoint(tmp_path / "denoiser.pt", DetectorCheckpoint("faster_rcnn", "resnet18", {"w": torch.ones(1)},
                                                                  config={"image_size": 256}, step=9))
    info = peek_checkpoint(tmp_path / "denoiser.pt")
    assert (info.kind, info.network, info.backbone, info.step, info.image_size) == ("detector", "faster_rcnn",
                                                                                      "resnet18", 9, 256)
    assert info.hu_range == (-1024.0, 1024.0) and not info.shipped
    with pytest.raises(CheckpointError, match="is a detector checkpoint, not a denoiser checkpoint"):
        read_checkpoint(tmp_path / "denoiser.pt", "denoiser")
    assert "detector faster_rcnn" in info.describe()


def test_peek_of_the_shipped_detectors():
    own, judge = peek_checkpoint(shipped_weights(DETECTOR_FILE)), peek_checkpoint(shipped_weights(JUDGE_FILE))
    assert (own.kind, own.network, own.shipped, own.method) == ("detector", "faster_rcnn", True, "ndct")
    assert (judge.kind, judge.network, judge.shipped) == ("detector", "fcos", True)


def test_refusals(tmp_path):
    with pytest.raises(TypeError):
        write_checkpoint(tmp_path / "x.pt", {"kind": "denoiser"})  # a dict is not a record
    torch.save({"kind": "denoiser", "state_dict": {"w": torch.ones(1)}}, tmp_path / "noname.pt")
    with pytest.raises(CheckpointError, match="does not name its network"):
        read_checkpoint(tmp_path / "noname.pt")
    torch.save({"w": torch.ones(1)}, tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="not a napari-lidnet checkpoint"):
        peek_checkpoint(tmp_path / "bare.pt")
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"kind": "denoiser", "x": print}))
    with pytest.raises(CheckpointError):
        peek_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="not found"):
        peek_checkpoint(tmp_path / "missing.pt")
