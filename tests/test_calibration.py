"""Score-threshold calibration (src_training/evaluation/calibration.py) on hand-made detections with a known
answer, and where a checkpoint's threshold is read from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from src_training.evaluation.calibration import (DEFAULT_SCORE_THRESHOLD, f1_score_threshold, stored_score_threshold,
                                                 threshold_stats)
from src_training.evaluation.inputs import EvaluationError

A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]


def _case():
    """Two slices, three lesions. Sorted by score: 0.9 hit (A), 0.8 hit (C), 0.75 duplicate of C (a false
    alarm: C is taken), 0.7 false alarm, 0.6 hit (B shifted by one pixel, IoU 0.68), 0.3 and 0.2 false
    alarms. F1 over the cuts: 0.50, 0.80, 0.67, 0.57, 0.75, 0.67, 0.60 -> best: keep the top two."""
    preds = [
        {"boxes": np.array([A, [21, 21, 31, 31], [50, 50, 60, 60], [40, 0, 48, 8]], np.float32),
         "scores": np.array([0.9, 0.6, 0.7, 0.3], np.float32)},
        {"boxes": np.array([C, [0, 0, 10, 11], [30, 30, 40, 40]], np.float32),
         "scores": np.array([0.8, 0.75, 0.2], np.float32)},
    ]
    targets = [{"boxes": np.array([A, B], np.float32)}, {"boxes": np.array([C], np.float32)}]
    return preds, targets


def test_max_f1_threshold_of_a_hand_made_case():
    preds, targets = _case()
    best = f1_score_threshold(preds, targets, iou_threshold=0.5)
    # a duplicate counted as a hit would give F1 = 1 at 0.75; counting B's shifted box as a miss 0.8 at 0.80
    assert best.value == pytest.approx(0.80)
    assert best.f1 == pytest.approx(0.8)
    assert best.precision == pytest.approx(1.0) and best.recall == pytest.approx(2 / 3)
    assert (best.n_kept, best.n_true, best.n_lesions, best.n_images) == (2, 2, 3, 2)
    # at the old fixed 0.5: five kept, three hits
    old = threshold_stats(preds, targets, DEFAULT_SCORE_THRESHOLD)
    assert (old.n_kept, old.n_true) == (5, 3)
    assert old.f1 == pytest.approx(0.75) and old.precision == pytest.approx(0.6) and old.recall == pytest.approx(1.0)


def test_the_iou_threshold_decides_what_a_hit_is():
    preds, targets = _case()
    strict = threshold_stats(preds, targets, 0.5, iou_threshold=0.9)  # B's shifted box (IoU 0.68) misses
    assert (strict.n_kept, strict.n_true) == (5, 2)


def test_threshold_sits_between_the_kept_and_the_next_score():
    preds = [{"boxes": np.array([A, [40, 40, 50, 50]], np.float32), "scores": np.array([0.805, 0.801], np.float32)}]
    targets = [{"boxes": np.array([A], np.float32)}]
    best = f1_score_threshold(preds, targets)
    assert 0.801 < best.value <= 0.805  # 0.80 would keep the false alarm
    assert best.n_kept == 1 and best.f1 == pytest.approx(1.0)


def test_ignore_regions_are_neither_hits_nor_false_alarms():
    preds = [{"boxes": np.array([A, B], np.float32), "scores": np.array([0.9, 0.95], np.float32)}]
    with_ignore = [{"boxes": np.array([A], np.float32), "ignore": np.array([B], np.float32)}]
    best = f1_score_threshold(preds, with_ignore)
    assert best.n_kept == 1 and best.precision == pytest.approx(1.0) and best.value < 0.9
    without = f1_score_threshold(preds, [{"boxes": np.array([A], np.float32)}])
    assert without.n_kept == 2 and without.f1 == pytest.approx(2 / 3)


def test_uncalibratable_cases_raise():
    preds, _ = _case()
    with pytest.raises(EvaluationError, match="no lesion"):
        f1_score_threshold(preds, [{"boxes": np.zeros((0, 4))}, {"boxes": np.zeros((0, 4))}])
    with pytest.raises(EvaluationError, match="No detection matches"):
        f1_score_threshold(preds, [{"boxes": np.array([[200, 200, 210, 210]])}, {"boxes": np.zeros((0, 4))}])
    with pytest.raises(EvaluationError, match="one prediction per image"):
        f1_score_threshold(preds[:1], [{"boxes": np.zeros((0, 4))}] * 2)
    with pytest.raises(EvaluationError, match="3 boxes but 2 scores"):
        f1_score_threshold([{"boxes": np.zeros((3, 4)), "scores": np.zeros(2)}], [{"boxes": np.array([A])}])


def test_stored_threshold_from_the_json_beside_the_file(tmp_path):
    pt = tmp_path / "det.pt"
    pt.write_bytes(b"not read when the record answers")
    assert stored_score_threshold(pt) is None  # no record, unreadable file: no threshold, no error
    rec = {"file": "det.pt", "score_threshold": {"value": 0.37, "case": "lung1", "f1": 0.9}}
    (tmp_path / "det.json").write_text(json.dumps(rec))
    st = stored_score_threshold(pt)
    assert st.value == pytest.approx(0.37) and st.source == "calibrated on lung1" and st.record["f1"] == 0.9
    for bad in ({"file": "other.pt", "score_threshold": 0.2}, {"score_threshold": 1.5}, {"score_threshold": "x"}):
        (tmp_path / "det.json").write_text(json.dumps(bad))
        assert stored_score_threshold(pt) is None


def test_stored_threshold_from_a_checkpoint_config(tmp_path):
    from src_training.checkpoint import save_checkpoint

    pt = save_checkpoint(tmp_path / "detector.pt", {"kind": "detector", "state_dict": {},
                                                    "config": {"score_threshold": 0.42}})
    st = stored_score_threshold(pt)
    assert st.value == pytest.approx(0.42) and st.source == "from the checkpoint"


def test_shipped_detectors_carry_their_calibration():
    from src_training.protocol import DETECTOR_FILE, JUDGE_FILE, TRAIN_CASE, WEIGHTS_DIR

    for name in (DETECTOR_FILE, JUDGE_FILE):
        st = stored_score_threshold(WEIGHTS_DIR / name)
        assert st is not None and 0.05 <= st.value <= 0.99, name
        assert st.record["case"] == TRAIN_CASE and "lung2" not in st.record["method"]
        assert st.record["f1"] >= st.record["at_0_5"]["f1"]  # the calibrated point is at least as good as 0.5


def test_calibration_recipe_runs_the_shipped_detector_on_the_calibration_case():
    from src_training.pretrain import CALIBRATION_METHOD, calibrate_score_threshold
    from src_training.protocol import DETECTOR_FILE, TRAIN_CASE, WEIGHTS_DIR

    entry = calibrate_score_threshold(WEIGHTS_DIR / DETECTOR_FILE, device="cpu", max_slices=2)
    assert entry["case"] == TRAIN_CASE and entry["method"] == CALIBRATION_METHOD and entry["n_slices"] == 2
    assert entry["n_lesions"] >= 6 and 0.0 < entry["value"] <= 1.0  # 3 synthetic nodules a slice (+ the tumour)
    assert entry["f1"] >= entry["at_0_5"]["f1"] and entry["f1"] > 0.5
