"""Tests of src_training.annotations: boxes from labels, CSV round trip, validation."""

from __future__ import annotations

import numpy as np
import pytest

from src_training.annotations import (
    boxes_from_label_slice,
    boxes_from_label_volume,
    read_boxes_csv,
    validate_boxes,
    write_boxes_csv,
)
from src_training.errors import LidnetError


def test_boxes_from_label_slice_two_components():
    lab = np.zeros((20, 30), dtype=np.uint8)
    lab[2:5, 3:7] = 1  # rows 2..4, cols 3..6
    lab[10, 20] = 1  # single pixel
    lab[11, 21] = 1  # diagonal neighbour: same 8-connected component
    boxes = boxes_from_label_slice(lab)
    assert boxes.dtype == np.float32 and boxes.shape == (2, 4)
    np.testing.assert_array_equal(boxes[0], [3, 2, 7, 5])
    np.testing.assert_array_equal(boxes[1], [20, 10, 22, 12])
    assert boxes_from_label_slice(np.zeros((4, 4))).shape == (0, 4)
    with pytest.raises(LidnetError):
        boxes_from_label_slice(np.zeros((2, 4, 4)))


def test_boxes_from_label_volume_only_lesion_slices():
    lab = np.zeros((5, 8, 8), dtype=np.uint8)
    lab[1, 0, 0] = 1
    lab[3, 6:8, 5:8] = 2
    out = boxes_from_label_volume(lab)
    assert sorted(out) == [1, 3]
    np.testing.assert_array_equal(out[1], [[0, 0, 1, 1]])
    np.testing.assert_array_equal(out[3], [[5, 6, 8, 8]])


def test_csv_round_trip(tmp_path):
    boxes = {0: np.array([[1, 2, 3.5, 4]], np.float32), 7: np.array([[0, 0, 10, 10], [5, 5, 6, 9]], np.float32),
             3: np.zeros((0, 4), np.float32)}
    p = write_boxes_csv(boxes, tmp_path / "b.csv")
    assert p.read_text().splitlines()[0] == "slice,x0,y0,x1,y1,label"
    back = read_boxes_csv(p, shape=(8, 16, 16))
    assert sorted(back) == [0, 7]
    for z in back:
        np.testing.assert_array_equal(back[z], boxes[z])
        assert back[z].dtype == np.float32
    # With labels and scores.
    write_boxes_csv({2: boxes[7]}, tmp_path / "s.csv", labels={2: [1, 1]}, scores={2: [0.9, 0.25]})
    b, lab, sc = read_boxes_csv(tmp_path / "s.csv", return_labels_scores=True)
    np.testing.assert_array_equal(lab[2], [1, 1])
    np.testing.assert_allclose(sc[2], [0.9, 0.25])
    # Empty dict: header only, reads back empty.
    write_boxes_csv({}, tmp_path / "e.csv")
    assert read_boxes_csv(tmp_path / "e.csv") == {}


@pytest.mark.parametrize(
    "text, match",
    [
        ("slice,x0,y0,x1\n0,1,2,3\n", "missing column"),
        ("slice,x0,y0,x1,y1,label\n0,1,2,abc,4,1\n", "line 2"),
        ("slice,x0,y0,x1,y1,label\n0,1,2,3,4,1\n1.5,1,2,3,4,1\n", "line 3"),
        ("slice,x0,y0,x1,y1,label\n0,5,2,3,4,1\n", "inverted"),
        ("slice,x0,y0,x1,y1,label\n0,1,2,300,4,1\n", "outside"),
        ("slice,x0,y0,x1,y1,label\n9,1,2,3,4,1\n", "outside the volume"),
        ("slice,x0,y0,x1,y1,label\n0,1,2,nan,4,1\n", "finite"),
    ],
)
def test_malformed_csv(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(LidnetError, match=match):
        read_boxes_csv(p, shape=(5, 32, 32))


def test_missing_csv_and_validate(tmp_path):
    with pytest.raises(LidnetError, match="not found"):
        read_boxes_csv(tmp_path / "none.csv")
    assert validate_boxes(np.array([[0, 0, 32, 32]]), (32, 32)).dtype == np.float32
    with pytest.raises(LidnetError, match="outside"):
        validate_boxes(np.array([[-1, 0, 3, 3]]), (32, 32))
    with pytest.raises(LidnetError):
        validate_boxes(np.zeros((2, 3)))
    with pytest.raises(LidnetError):
        write_boxes_csv({0: np.array([[3, 3, 1, 1]])}, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()
