"""Tests of src_training.data (index, manifest, sources, streaming): series index, patient split, manifest sources, streaming slices."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pydicom
import pytest
import torch

from src_training.annotations import SliceAnnotations, write_boxes_table
from src_training.cli import main as cli_main
from src_training.config import TrainConfig
from src_training.data import CaseArrays, SliceDataset, expand_sources, load_source, prepare_case, prepare_cases
from src_training.data import (
    StreamingSliceDataset,
    build_manifest,
    index_dataset,
    read_manifest,
    scan_series,
    split_patients,
)
from src_training.errors import ConfigError
from src_training.io import volume_from_array, write_dicom_series, write_volume

SHAPE = (3, 32, 32)


def _hu(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hu = np.full(SHAPE, -800.0, np.float32)
    hu[:, 6:26, 6:26] = 40.0
    hu[:, 12:18, 14:20] = 150.0 + 10 * seed
    return hu + rng.normal(0, 5, SHAPE).astype(np.float32)


@pytest.fixture(scope="module")
def dicom_root(tmp_path_factory):
    """Five patients, P2 with two series (one in a nested folder), DICOM with PatientID."""
    root = tmp_path_factory.mktemp("dicom")
    series = [("P0", "p0/ct"), ("P1", "p1/ct"), ("P2", "p2/ct_a"), ("P2", "p2/deeper/ct_b"), ("P3", "p3/ct"),
              ("P4", "p4/ct")]
    uids = {}
    for n, (pid, rel) in enumerate(series):
        ref = volume_from_array(np.zeros(SHAPE, np.float32), (2.0, 0.8, 0.8), metadata={"PatientID": pid})
        files = write_dicom_series(_hu(n), root / rel, spacing=(2.0, 0.8, 0.8), reference=ref,
                                   series_description=rel, uid_entropy=f"ds-{n}")
        uids[rel] = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    per = {uids[rel]: SliceAnnotations() for _, rel in series}
    for n, (_, rel) in enumerate(series):
        per[uids[rel]].add(1, [[14, 12, 20, 18]], [1])
        if n % 2:
            per[uids[rel]].add(2, [[2, 3, 9, 10]], [1])
    write_boxes_table(per, root / "boxes_all.csv")
    return root, series, uids


def test_scan_and_patient_split_keeps_patients_together(dicom_root, tmp_path):
    root, series, uids = dicom_root
    recs = scan_series(root)
    assert sorted(r.series_path for r in recs) == sorted(rel for _, rel in series)
    assert {r.patient_id for r in recs} == {"P0", "P1", "P2", "P3", "P4"}
    assert all(r.shape == SHAPE and len(r.sop_uids) == SHAPE[0] for r in recs)
    m = build_manifest(root, root / "boxes_all.csv", val=0.2, test=0.2, seed=3)
    assert m["annotations"]["format"] == "csv"
    by_patient = {}
    for c in m["cases"]:
        by_patient.setdefault(c["patient_id"], set()).add(c["split"])
    assert all(len(s) == 1 for s in by_patient.values())  # never split across train/val/test
    assert sorted(s.pop() for s in by_patient.values()) == ["test", "train", "train", "train", "val"]
    # Deterministic; another seed may give another split but still patient-wise.
    assert build_manifest(root, root / "boxes_all.csv", val=0.2, test=0.2, seed=3)["cases"] == m["cases"]
    splits = {s: split_patients([f"P{i}" for i in range(20)], 0.25, 0.25, s) for s in range(4)}
    assert len({tuple(sorted(v.items())) for v in splits.values()}) > 1
    assert all(sorted(v.values()).count("test") == 5 for v in splits.values())
    case = next(c for c in m["cases"] if c["series_path"] == "p1/ct")
    assert case["boxes"] == [[1, 14.0, 12.0, 20.0, 18.0, 1], [2, 2.0, 3.0, 9.0, 10.0, 1]]
    with pytest.raises(ConfigError):
        split_patients(["a"], 0.6, 0.5)


def test_voc_and_coco_sources_attach_to_the_right_series_and_slice(dicom_root, tmp_path):
    root, series, uids = dicom_root
    recs = {r.series_path: r for r in scan_series(root)}
    r1, r3 = recs["p1/ct"], recs["p2/deeper/ct_b"]
    voc = tmp_path / "Annotation" / "P1"
    voc.mkdir(parents=True)
    (voc / f"{r1.sop_uids[2]}.xml").write_text(
        "<annotation><size><width>32</width><height>32</height></size><object><name>A</name><bndbox>"
        "<xmin>5</xmin><ymin>6</ymin><xmax>12</xmax><ymax>14</ymax></bndbox></object></annotation>")
    m = build_manifest(root, tmp_path / "Annotation")
    assert m["annotations"]["format"] == "voc"
    got = {c["series_path"]: c["boxes"] for c in m["cases"] if c["boxes"]}
    assert got == {"p1/ct": [[2, 4.0, 5.0, 12.0, 14.0, 1]]}
    coco = {"images": [{"id": 1, "file_name": f"{r3.sop_uids[0]}.png", "width": 32, "height": 32},
                       {"id": 2, "file_name": r1.file_names[1], "width": 32, "height": 32},
                       {"id": 3, "file_name": f"{uids['p3/ct']}/0002.png", "width": 32, "height": 32}],
            "categories": [{"id": 1, "name": "nodule"}],
            "annotations": [{"id": i, "image_id": i, "bbox": [1, 2, 3, 4], "category_id": 1} for i in (1, 2, 3)]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    m = build_manifest(root, tmp_path / "coco.json")
    got = {c["series_path"]: c["boxes"] for c in m["cases"] if c["boxes"]}
    assert got == {"p2/deeper/ct_b": [[0, 1.0, 2.0, 4.0, 6.0, 1]], "p1/ct": [[1, 1.0, 2.0, 4.0, 6.0, 1]],
                   "p3/ct": [[2, 1.0, 2.0, 4.0, 6.0, 1]]}
    with pytest.raises(ConfigError, match="match a series"):
        (tmp_path / "none.json").write_text(json.dumps(dict(coco, images=[{"id": 1, "file_name": "x.png"}],
                                                            annotations=[])))
        build_manifest(root, tmp_path / "none.json")
    with pytest.raises(ConfigError, match="patient_rule"):
        scan_series(root, patient_rule="regex:[0-9]+")


def test_manifest_train_data_through_prepare_cases_and_cli(dicom_root, tmp_path):
    root, series, uids = dicom_root
    out = tmp_path / "dataset.json"
    assert cli_main(["dataset", "index", str(root), "--annotations", str(root / "boxes_all.csv"),
                     "--out", str(out), "--val", "0.2", "--test", "0.2", "--seed", "3"]) == 0
    doc = read_manifest(out)
    assert json.loads(out.read_text()) == doc and not list(tmp_path.glob(".*tmp"))
    train_ids = [c["id"] for c in doc["cases"] if c["split"] == "train"]
    assert len({c["patient_id"] for c in doc["cases"] if c["split"] == "train"}) == 3
    srcs = expand_sources(["sample:lung1", f"manifest:{out}#train"])
    assert srcs[0] == "sample:lung1" and srcs[1:] == [f"manifest:{out}#case={i}" for i in train_ids]
    cfg = TrainConfig(train_data=[f"manifest:{out}#train"], n0=1e4, seed=0)
    cases = prepare_cases(cfg, cache_dir=tmp_path / "cache")
    assert len(cases) == len(train_ids)
    for case, cid in zip(cases, train_ids):
        c = next(c for c in doc["cases"] if c["id"] == cid)
        n = next(k for k, (_, rel) in enumerate(series) if rel == c["series_path"])
        np.testing.assert_allclose(case.ndct_hu, _hu(n), atol=0.51)  # DICOM stores whole HU
        np.testing.assert_array_equal(case.boxes[1], [[14, 12, 20, 18]])
        assert (2 in case.boxes) == bool(n % 2)
        assert case.ldct_hu.shape == SHAPE and not np.array_equal(case.ldct_hu, case.ndct_hu)
    # The other kinds of source still work next to a manifest (npz).
    np.savez(tmp_path / "c.npz", hu=_hu(9), spacing=np.array([2.0, 0.8, 0.8]), boxes=np.array([[0, 1, 1, 5, 5]]))
    assert len(prepare_cases(TrainConfig(train_data=[str(tmp_path / "c.npz"), f"manifest:{out}#val"], n0=1e4),
                             cache_dir=tmp_path / "cache")) == 1 + sum(c["split"] == "val" for c in doc["cases"])
    with pytest.raises(ConfigError, match="case 'nope'"):
        load_source(f"manifest:{out}#case=nope")
    with pytest.raises(ConfigError, match="train, val, test"):
        expand_sources([f"manifest:{out}#training"])
    # Data changed since indexing -> clear error.
    bad = dict(doc)
    bad["cases"] = [dict(doc["cases"][0], shape=[5, 32, 32])]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match="index' again"):
        load_source(f"manifest:{tmp_path / 'bad.json'}#all")


def test_volume_files_patient_rule_and_luna16(tmp_path):
    root = tmp_path / "luna"
    spacing, origin = (2.5, 0.7, 0.8), (-100.0, 20.0, -300.0)
    for n, name in enumerate(["subset0/1.2.840.1.mhd", "subset0/1.2.840.2.mha", "subset1/1.2.840.3.nii.gz"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".mhd"):
            name = name[:-4] + ".mha"  # .mhd cannot be written atomically; LUNA's .mhd reads the same way
        write_volume(_hu(n), root / name, spacing=spacing, origin=origin)
    # Nodule of 6 mm at voxel (x=16, y=15, z=1) of series 2.
    world = (origin[0] + 16 * 0.8, origin[1] + 15 * 0.7, origin[2] + 1 * 2.5)
    ann = tmp_path / "annotations.csv"
    ann.write_text("seriesuid,coordX,coordY,coordZ,diameter_mm\n"
                   f"1.2.840.2,{world[0]},{world[1]},{world[2]},6\n"
                   "9.9.9,0,0,0,5\n")
    with pytest.warns(UserWarning, match="1 annotation entries"):
        m = build_manifest(root, ann, val=0.0, test=0.34, seed=0)
    assert m["annotations"]["format"] == "luna16"
    assert sorted(c["patient_id"] for c in m["cases"]) == ["1.2.840.1", "1.2.840.2", "1.2.840.3"]
    c2 = next(c for c in m["cases"] if c["series_uid"] == "1.2.840.2")
    assert [r[0] for r in c2["boxes"]] == [0, 1, 2]  # |dz| = 2.5 mm < 3 mm radius
    r = 3.0
    np.testing.assert_allclose(c2["boxes"][1][1:5], [16.5 - r / 0.8, 15.5 - r / 0.7, 16.5 + r / 0.8, 15.5 + r / 0.7],
                               atol=1e-4)
    m2 = build_manifest(root, ann, val=0.0, test=0.5, seed=0, patient_rule="folder")
    assert sorted({c["patient_id"] for c in m2["cases"]}) == ["subset0", "subset1"]
    m3 = build_manifest(root, None, patient_rule=r"regex:(\d+)\.(?:mha|nii)")
    assert sorted(c["patient_id"] for c in m3["cases"]) == ["1", "2", "3"] and m3["annotations"]["format"] == "boxes.csv"


def test_streaming_dataset_equals_in_memory_and_holds_no_volume(dicom_root, tmp_path):
    root, series, uids = dicom_root
    out = index_dataset(root, tmp_path / "ds.json", root / "boxes_all.csv", val=0.2, test=0.2, seed=3)
    assert out["cases"]
    sources = [f"manifest:{tmp_path / 'ds.json'}#train"]
    kw = dict(n0=1e4, seed=2, image_size=24)
    ref = SliceDataset([prepare_case(s, **kw) for s in expand_sources(sources)], (-1000.0, 400.0), crop_size=16,
                       seed=2)
    ds = StreamingSliceDataset(sources, tmp_path / "slices", (-1000.0, 400.0), crop_size=16, **kw)
    n_train = sum(c["split"] == "train" for c in out["cases"])
    assert len(ds) == len(ref) == n_train * SHAPE[0] and ds.index == ref.index
    for item in [(i, e) for i in range(len(ds)) for e in (0, 1)] + [5]:
        a, b = ds[item], ref[item]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert torch.equal(a[2]["boxes"], b[2]["boxes"]) and torch.equal(a[2]["labels"], b[2]["labels"])
        assert a[0].shape == (1, 16, 16) and a[0].dtype == torch.float32
    # Caches are reused (same folders, not rewritten) and written atomically (no temp folder left).
    dirs = sorted((tmp_path / "slices").iterdir())
    mtimes = [d.stat().st_mtime_ns for d in dirs]
    ds2 = StreamingSliceDataset(sources, tmp_path / "slices", (-1000.0, 400.0), crop_size=16, **kw)
    assert sorted((tmp_path / "slices").iterdir()) == dirs and [d.stat().st_mtime_ns for d in dirs] == mtimes
    assert all(d.name.startswith("slices_") for d in dirs) and len(dirs) == n_train
    # Another N0 gets another cache.
    StreamingSliceDataset(expand_sources(sources)[:1], tmp_path / "slices", (-1000.0, 400.0), n0=2e4, seed=2, image_size=24)
    assert len(list((tmp_path / "slices").iterdir())) == n_train + 1
    # Bounded memory: no ndarray attribute bigger than one slice, and reading every item of a bigger case
    # allocates far less than its volume (an in-memory dataset holds NDCT + LDCT, two volumes).
    big = np.full((24, 64, 64), -700.0, np.float32)
    big[:, 10:50, 10:50] = 40.0
    np.savez(tmp_path / "big.npz", hu=big, spacing=np.array([2.0, 0.8, 0.8]), boxes=np.array([[3, 20, 20, 30, 30]]))
    ds2 = StreamingSliceDataset([str(tmp_path / "big.npz")], tmp_path / "slices", n0=1e4, seed=0)
    volume_bytes = big.nbytes

    def arrays(obj, depth=0):
        if isinstance(obj, np.ndarray):
            yield obj
        elif depth < 6 and isinstance(obj, dict):
            for v in obj.values():
                yield from arrays(v, depth + 1)
        elif depth < 6 and isinstance(obj, (list, tuple)):
            for v in obj:
                yield from arrays(v, depth + 1)
        elif depth < 6 and hasattr(obj, "__dict__"):  # e.g. CaseArrays of an in-memory dataset
            yield from arrays(vars(obj), depth + 1)

    assert max(a.nbytes for a in arrays(vars(ds2))) < 64 * 64 * 4
    in_memory = SliceDataset([CaseArrays("big", big, big.copy())])
    assert max(a.nbytes for a in arrays(vars(in_memory))) == volume_bytes  # the check sees held volumes
    tracemalloc.start()
    try:
        for i in range(len(ds2)):
            ds2[(i, 0)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < volume_bytes / 2  # measured ~0.13 MB for this 0.39 MB volume: two slices + [0, 1] copies
    # Trainers' data loader path: (index, epoch) batches through the collate function.
    from src_training.data import collate_slices

    batch = collate_slices([ds[(0, 3)], ds[(1, 3)]])
    assert batch[0].shape == (2, 1, 16, 16)
    cfg = TrainConfig(train_data=sources, n0=1e4, seed=2, image_size=24, crop_size=16, hu_range=(-1000.0, 400.0))
    ds3 = StreamingSliceDataset.from_config(cfg, tmp_path / "slices")
    assert torch.equal(ds3[(4, 1)][0], ref[(4, 1)][0])
