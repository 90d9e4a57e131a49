"""Tests of the annotation format readers of src_training.annotations (VOC, CSV table, COCO, LUNA16)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pydicom
import pytest

from src_training.annotations import (
    SliceAnnotations,
    clip_boxes_to_image,
    read_boxes_table,
    read_coco_json,
    read_luna16_csv,
    read_voc_annotations,
    read_voc_xml,
    table_rows_to_annotations,
    world_spheres_to_boxes,
    write_boxes_csv,
    write_boxes_table,
)
from src_training.errors import LidnetError
from src_training.io import load_ct, write_dicom_series, write_volume

VOC_TEMPLATE = """<annotation>
  <folder>A0001</folder><filename>{name}</filename>
  <size><width>{w}</width><height>{h}</height><depth>1</depth></size>
{objects}</annotation>
"""
VOC_OBJECT = """  <object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>
"""


def _voc(path, objects, w=32, h=32):
    """Write a Lung-PET-CT-Dx-style VOC file; objects = [(name, x0, y0, x1, y1) in border pixels]."""
    text = "".join(
        VOC_OBJECT.format(name=n, xmin=int(x0) + 1, ymin=int(y0) + 1, xmax=int(x1), ymax=int(y1))
        for n, x0, y0, x1, y1 in objects
    )
    path.write_text(VOC_TEMPLATE.format(name=path.stem, w=w, h=h, objects=text))
    return path


def _assert_same(ann: SliceAnnotations, expected: dict[int, list]):
    assert sorted(ann.boxes) == sorted(expected)
    for z, rows in expected.items():
        np.testing.assert_allclose(ann.boxes[z], np.asarray([r[:4] for r in rows], np.float32), atol=1e-5)
        np.testing.assert_array_equal(ann.labels[z], [r[4] for r in rows])
        assert ann.boxes[z].dtype == np.float32 and ann.labels[z].dtype == np.int64


@pytest.fixture()
def dicom_series(tmp_path):
    hu = np.full((4, 32, 32), -900.0, np.float32)
    files = write_dicom_series(hu, tmp_path / "ct", spacing=(2.0, 0.8, 0.8), series_description="t",
                               uid_entropy="voc-test")
    sop = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    return tmp_path / "ct", sop


def test_voc_round_trip_by_sop_uid(tmp_path, dicom_series):
    folder, sop = dicom_series
    ann_dir = tmp_path / "Annotation" / "A0001"
    ann_dir.mkdir(parents=True)
    expected = {1: [[3, 4, 10, 12, 2]], 3: [[0, 0, 5, 6, 3], [20, 21, 32, 32, 2]]}
    _voc(ann_dir / f"{sop[1]}.xml", [("A", 3, 4, 10, 12)])
    _voc(ann_dir / f"{sop[3]}.xml", [("B", 0, 0, 5, 6), ("A", 20, 21, 32, 32)])
    _voc(ann_dir / "1.2.3.999.xml", [("A", 1, 1, 2, 2)])  # another series: ignored
    ann = read_voc_annotations(tmp_path / "Annotation", sop, (4, 32, 32), label_map={"A": 2, "B": 3})
    _assert_same(ann, expected)
    # Default: every class is a lesion (label 1); z order is that of load_ct (file k is slice k).
    ann1 = read_voc_annotations(tmp_path / "Annotation", sop, load_ct(folder).hu.shape)
    assert all(np.all(v == 1) for v in ann1.labels.values()) and sorted(ann1.boxes) == [1, 3]
    # LabelImg-style 0-based reading shifts the top-left corner by one pixel.
    b0, names, size = read_voc_xml(ann_dir / f"{sop[1]}.xml", one_based=False)
    np.testing.assert_array_equal(b0, [[4, 5, 10, 12]]) and names == ["A"] and size == (32, 32)
    with pytest.raises(LidnetError, match="class 'B'"):
        read_voc_annotations(ann_dir, sop, (4, 32, 32), label_map={"A": 1})


def test_voc_outside_refused_partial_clipped_and_entities_refused(tmp_path, dicom_series):
    _, sop = dicom_series
    f = _voc(tmp_path / f"{sop[0]}.xml", [("A", 40, 2, 50, 8)], w=32, h=32)
    with pytest.raises(LidnetError, match=rf"{sop[0]}\.xml.*\(40\.0, 2\.0, 50\.0, 8\.0\).*outside"):
        read_voc_annotations([f], sop, (4, 32, 32))
    _voc(f, [("A", 28, 2, 36, 8)])
    with pytest.warns(UserWarning, match="clipped"):
        ann = read_voc_annotations([f], sop, (4, 32, 32))
    np.testing.assert_array_equal(ann.boxes[0], [[28, 2, 32, 8]])
    _voc(f, [("A", 1, 1, 5, 5)], w=64, h=64)
    with pytest.raises(LidnetError, match="another series"):
        read_voc_annotations([f], sop, (4, 32, 32))
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xxxxxxxx"><!ENTITY y "&x;&x;&x;&x;">]>'
                    "<annotation><object><name>&y;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax>"
                    "<ymax>3</ymax></bndbox></object></annotation>")
    with pytest.raises(LidnetError, match="bomb.xml"):
        read_voc_xml(bomb)
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object><name>A</name><bndbox><xmin>a</xmin></bndbox></object></annotation>")
    with pytest.raises(LidnetError, match="object 1"):
        read_voc_xml(bad)


def test_csv_table_round_trip_and_legacy_boxes_csv(tmp_path):
    per = {
        "1.2.3": SliceAnnotations(),
        "1.2.4": SliceAnnotations(),
    }
    per["1.2.3"].add(0, [[1, 2, 3.5, 4]], [1])
    per["1.2.3"].add(2, [[0, 0, 10, 10], [5, 5, 6, 9]], [1, 2])
    per["1.2.4"].add(1, [[7, 8, 9, 10]], [1])
    p = write_boxes_table(per, tmp_path / "t.csv")
    assert p.read_text().splitlines()[0] == "series_uid,slice,x0,y0,x1,y1,label"
    kind, rows = read_boxes_table(p)
    assert kind == "series" and sorted(rows) == ["1.2.3", "1.2.4"]
    for key in per:
        back = table_rows_to_annotations(rows[key], (3, 16, 16), str(p))
        _assert_same(back, {z: [[*b, lab] for b, lab in zip(per[key].boxes[z], per[key].labels[z])]
                            for z in per[key].boxes})
    # The project's boxes.csv (no series column) reads through the same reader.
    legacy = write_boxes_csv({4: np.array([[1, 1, 5, 6]], np.float32)}, tmp_path / "boxes.csv")
    kind, rows = read_boxes_table(legacy)
    assert kind is None
    _assert_same(table_rows_to_annotations(rows[""], (5, 8, 8), "x"), {4: [[1, 1, 5, 6, 1]]})
    # Header aliases, a file column, class names through a label map, any column order.
    (tmp_path / "alias.csv").write_text("label,file,ymin,xmin,ymax,xmax,slice\nnodule,a/b.nii.gz,1,2,3,4,0\n")
    kind, rows = read_boxes_table(tmp_path / "alias.csv", label_map={"nodule": 1})
    assert kind == "file"
    _assert_same(table_rows_to_annotations(rows["a/b.nii.gz"], (1, 8, 8), "x"), {0: [[2, 1, 4, 3, 1]]})
    with pytest.raises(LidnetError, match="line 2: slice 9 is outside"):
        table_rows_to_annotations([(9, [1, 1, 2, 2], 1, 2)], (3, 8, 8), "f.csv")
    (tmp_path / "nocol.csv").write_text("slice,x0,y0\n0,1,2\n")
    with pytest.raises(LidnetError, match="missing column"):
        read_boxes_table(tmp_path / "nocol.csv")


def test_coco_round_trip_xywh_to_xyxy(tmp_path):
    expected = {"s1/0002.png": [[3, 4, 10, 12, 2]], "s1/0005.png": [[0.5, 1.5, 6.5, 9.0, 1], [20, 21, 31, 30, 2]]}
    doc = {
        "images": [{"id": 1, "file_name": "s1/0002.png", "width": 32, "height": 32},
                   {"id": 7, "file_name": "s1/0005.png", "width": 32, "height": 32},
                   {"id": 9, "file_name": "s1/0006.png", "width": 32, "height": 32}],
        "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [3, 4, 7, 8], "category_id": 2},
            {"id": 2, "image_id": 7, "bbox": [0.5, 1.5, 6, 7.5], "category_id": 1},
            {"id": 3, "image_id": 7, "bbox": [20, 21, 11, 9], "category_id": 2},
        ],
    }
    p = tmp_path / "coco.json"
    p.write_text(json.dumps(doc))
    out = read_coco_json(p, label_map={"benign": 1, "malignant": 2})
    assert sorted(out) == ["s1/0002.png", "s1/0005.png", "s1/0006.png"]
    for name, rows in expected.items():
        b, lab, size = out[name]
        np.testing.assert_allclose(b, np.asarray([r[:4] for r in rows], np.float32))
        np.testing.assert_array_equal(lab, [r[4] for r in rows])
        assert size == (32, 32) and b.dtype == np.float32
    assert out["s1/0006.png"][0].shape == (0, 4)
    assert set(np.concatenate([out[n][1] for n in expected]).tolist()) == {1, 2}
    assert np.all(read_coco_json(p)["s1/0005.png"][1] == 1)  # default: every category is a lesion
    doc["annotations"].append({"id": 4, "image_id": 3, "bbox": [1, 1, 2, 2], "category_id": 1})
    p.write_text(json.dumps(doc))
    with pytest.raises(LidnetError, match="annotation 4"):
        read_coco_json(p)


def test_luna16_world_mm_to_boxes_nontrivial_geometry(tmp_path):
    spacing = (2.5, 0.7, 0.8)  # (z, y, x) mm
    origin = (-100.3, 50.2, -300.0)  # (x, y, z) mm
    direction = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # x and y axes flipped
    shape = (8, 40, 48)
    i, j, k = 10, 12, 3  # voxel (column, row, slice) of the nodule centre
    world = (origin[0] - i * spacing[2], origin[1] - j * spacing[1], origin[2] + k * spacing[0])
    csv = tmp_path / "annotations.csv"
    csv.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n"
                   f"1.3.6.1,{world[0]},{world[1]},{world[2]},6.0\n"
                   f"1.3.6.2,0,0,0,5\n")
    nod = read_luna16_csv(csv)
    assert sorted(nod) == ["1.3.6.1", "1.3.6.2"]
    ann = world_spheres_to_boxes(nod["1.3.6.1"], shape, spacing, origin, direction, where=str(csv))
    # |k - 3| * 2.5 mm < 3 mm: slices 2, 3, 4; cross-section radius 3 mm at k=3, sqrt(9 - 6.25) mm at 2 and 4.
    assert sorted(ann.boxes) == [2, 3, 4]
    for kk, r in ((3, 3.0), (2, np.sqrt(9 - 6.25)), (4, np.sqrt(9 - 6.25))):
        hx, hy = r / 0.8, r / 0.7
        np.testing.assert_allclose(ann.boxes[kk], [[10.5 - hx, 12.5 - hy, 10.5 + hx, 12.5 + hy]], atol=1e-4)
        assert ann.labels[kk].tolist() == [1]
    # Same geometry through a real file: the box centre is the voxel that holds the nodule in load_ct's array.
    hu = np.full(shape, -1000.0, np.float32)
    hu[k, j, i] = 500.0
    write_volume(hu, tmp_path / "1.3.6.1.mha", spacing=spacing, origin=origin, direction=direction)
    vol = load_ct(tmp_path / "1.3.6.1.mha")
    ann2 = world_spheres_to_boxes(nod["1.3.6.1"], vol.hu.shape, vol.spacing, vol.origin, vol.direction)
    b = ann2.boxes[3][0]
    cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
    assert vol.hu[3, cy, cx] == 500.0
    with pytest.raises(LidnetError, match="meets no slice"):
        world_spheres_to_boxes(np.array([[0.0, 0.0, 500.0, 4.0]]), shape, spacing, origin, direction)
    (tmp_path / "bad.csv").write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\nx,1,2,3,0\n")
    with pytest.raises(LidnetError, match="line 2"):
        read_luna16_csv(tmp_path / "bad.csv")


def test_luna16_sphere_at_border_is_clipped_with_warning():
    shape, spacing = (3, 10, 10), (1.0, 1.0, 1.0)
    with pytest.warns(UserWarning, match="clipped"):
        ann = world_spheres_to_boxes(np.array([[0.0, 5.0, 1.0, 4.0]]), shape, spacing, (0, 0, 0),
                                     (1, 0, 0, 0, 1, 0, 0, 0, 1))
    np.testing.assert_allclose(ann.boxes[1], [[0, 3.5, 2.5, 7.5]])


def test_clip_boxes_to_image_rules():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b, lab = clip_boxes_to_image([[1, 1, 4, 4]], (8, 8), "f")
    np.testing.assert_array_equal(b, [[1, 1, 4, 4]]) and lab.tolist() == [1]
    with pytest.raises(LidnetError, match="f: box"):
        clip_boxes_to_image([[-5, 1, 0, 4]], (8, 8), "f")
    with pytest.raises(LidnetError, match="empty or inverted"):
        clip_boxes_to_image([[3, 1, 2, 4]], (8, 8), "f")
