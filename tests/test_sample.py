"""Tests of src_training.sample: the bundled cases and the synthetic nodules."""

from __future__ import annotations

import numpy as np
import pytest

from src_training.annotations import boxes_from_label_volume
from src_training.errors import LidnetError
from src_training.sample import (
    insert_synthetic_nodules,
    load_sample_case,
    lung_mask_2d,
    sample_case_names,
)


@pytest.fixture(scope="module")
def lung1():
    return load_sample_case("lung1")


def test_sample_cases_present():
    assert sample_case_names() == ["lung1", "lung2"]


@pytest.mark.parametrize("name, n_lesion_slices", [("lung1", 3), ("lung2", 11)])
def test_sample_case_boxes_agree_with_label(name, n_lesion_slices):
    case = load_sample_case(name)
    assert case.label.dtype == np.uint8 and case.label.shape == case.ndct.hu.shape == (20, 512, 512)
    assert case.ndct.metadata["Modality"] == "CT"
    assert len(case.boxes) == n_lesion_slices
    from_label = boxes_from_label_volume(case.label)
    assert sorted(from_label) == sorted(case.boxes)
    for z, b in case.boxes.items():
        np.testing.assert_array_equal(b, from_label[z])
        # The lesion is soft tissue (not air) in the CT.
        assert np.median(case.ndct.hu[z][case.label[z] > 0]) > -300


def test_missing_case_names_folder(tmp_path, monkeypatch):
    with pytest.raises(LidnetError, match="nope"):
        load_sample_case("nope")
    monkeypatch.setenv("LIDNET_SAMPLE_DATA", str(tmp_path))
    assert sample_case_names() == []
    with pytest.raises(LidnetError, match=str(tmp_path)):
        load_sample_case("lung1")


def test_synthetic_nodules_in_lung(lung1):
    z = 9
    hu = lung1.ndct.hu[z]
    real = lung1.boxes[z]
    new, boxes = insert_synthetic_nodules(hu, lung1.ndct.spacing[1:], np.random.default_rng(0), 5, (6.0, 14.0), avoid_boxes=real,
                                          solid_fraction=1.0)
    assert new.dtype == np.float32 and new.shape == hu.shape
    assert boxes.dtype == np.float32 and boxes.shape == (5, 4)
    lung = lung_mask_2d(hu)
    changed = np.abs(new - hu) > 50
    covered = np.zeros_like(changed)
    for x0, y0, x1, y1 in boxes.astype(int):
        assert x1 > x0 and y1 > y0
        # Fully inside the lung: the nodule's pixels and a 1 px ring around them lie in the lung mask.
        from scipy.ndimage import binary_dilation

        own = np.zeros_like(lung)
        own[y0:y1, x0:x1] = np.abs(new - hu)[y0:y1, x0:x1] > 50
        assert lung[binary_dilation(own)].all()
        # Soft-tissue density inside, lung air in the original.
        core = new[(y0 + y1) // 2 - 1 : (y0 + y1) // 2 + 2, (x0 + x1) // 2 - 1 : (x0 + x1) // 2 + 2]
        assert -40 < core.mean() < 120 and hu[y0:y1, x0:x1].mean() < -500
        # No overlap with the real lesion.
        rx0, ry0, rx1, ry1 = real[0]
        assert x1 <= rx0 or x0 >= rx1 or y1 <= ry0 or y0 >= ry1
        covered[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = True
    # The boxes enclose the nodules: every strongly changed pixel is within a box (2 px soft-edge tolerance).
    assert changed.any() and not (changed & ~covered).any()
    # Deterministic for a given generator; diameter within range (6-14 mm at 0.57 mm/pixel).
    new2, boxes2 = insert_synthetic_nodules(hu, lung1.ndct.spacing[1:], np.random.default_rng(0), 5, (6.0, 14.0), avoid_boxes=real,
                                          solid_fraction=1.0)
    np.testing.assert_array_equal(boxes, boxes2)
    np.testing.assert_array_equal(new, new2)
    sizes_mm = (boxes[:, 2:] - boxes[:, :2]) * lung1.ndct.spacing[1]
    assert sizes_mm.min() > 3.5 and sizes_mm.max() < 17


def test_synthetic_nodules_no_room():
    body = np.full((64, 64), 40.0, dtype=np.float32)  # soft tissue only, no lung
    new, boxes = insert_synthetic_nodules(body, 0.7, np.random.default_rng(0), 3)
    assert boxes.shape == (0, 4)
    np.testing.assert_array_equal(new, body)
    with pytest.raises(LidnetError):
        insert_synthetic_nodules(np.zeros((2, 4, 4)), 0.7, 0, 1)


def test_large_synthetic_nodules_stay_in_lung_and_precomputed_distance_is_equivalent(lung1):
    """Default diameters (6-24 mm): every pixel the nodules change lies in the lung mask, and passing the
    precomputed lung-distance map gives the same result as computing it inside."""
    from src_training.nodules import DEFAULT_DIAMETER_MM, lung_distance_map

    hu = lung1.ndct.hu[12]
    new, boxes = insert_synthetic_nodules(hu, lung1.ndct.spacing[1:], np.random.default_rng(3), 4)
    assert len(boxes) >= 2
    changed = np.abs(new - hu) > 20
    assert changed.any() and lung_mask_2d(hu)[changed].all()
    sizes_mm = (boxes[:, 2:] - boxes[:, :2]).mean(axis=1) * lung1.ndct.spacing[1]
    assert sizes_mm.min() > 0.6 * DEFAULT_DIAMETER_MM[0] and sizes_mm.max() < 1.3 * DEFAULT_DIAMETER_MM[1]
    new2, boxes2 = insert_synthetic_nodules(hu, lung1.ndct.spacing[1:], np.random.default_rng(3), 4,
                                            lung_distance=lung_distance_map(hu))
    np.testing.assert_array_equal(new, new2)
    np.testing.assert_array_equal(boxes, boxes2)
    # solid and subsolid (ground-glass) nodules: cores at soft-tissue and at ground-glass attenuation
    new3, boxes3 = insert_synthetic_nodules(hu, lung1.ndct.spacing[1:], np.random.default_rng(5), 6, (10.0, 20.0))
    cores = [float(new3[(y0 + y1) // 2 - 1:(y0 + y1) // 2 + 2, (x0 + x1) // 2 - 1:(x0 + x1) // 2 + 2].mean())
             for x0, y0, x1, y1 in boxes3.astype(int)]
    assert any(c > -100 for c in cores) and any(-750 < c < -200 for c in cores), cores
    with pytest.raises(LidnetError):
        insert_synthetic_nodules(hu, 0.6, 0, 1, solid_fraction=1.5)
