"""The napari writers never overwrite saved data (DICOM series folder, NIfTI, boxes CSV); the core writers
replace a file only when asked (``overwrite=True`` / ``--overwrite``) and then atomically (a failed write
leaves the old one).

The core ``write_dicom_series`` refusal / ``overwrite=True`` is tested in tests/test_io.py and the napari DICOM
writer's refusal in tests/test_reader_writer.py; this file adds the suggested new name, NIfTI and CSV, the
``viewer.layers.save`` path and the core ``write_volume`` / ``write_boxes_csv`` contract.
"""

from __future__ import annotations

import numpy as np
import pytest

from src_training.errors import CTWriteError, LidnetError, OutputExistsError

pytest.importorskip("napari")


def _meta(shape=(2, 16, 16)):
    return {"name": "denoised", "scale": (2.0, 0.7, 0.7), "translate": (0.0, 0.0, 0.0), "metadata": {}}


def _hu(v=0.0):
    return np.full((2, 16, 16), v, np.float32)


def test_free_name_keeps_extension_and_skips_taken_names(tmp_path):
    from napari_lidnet._writer import free_name

    assert free_name(tmp_path / "ct.nii.gz") == tmp_path / "ct.nii.gz"
    (tmp_path / "ct.nii.gz").write_bytes(b"x")
    (tmp_path / "ct_2.nii.gz").write_bytes(b"x")
    assert free_name(tmp_path / "ct.nii.gz") == tmp_path / "ct_3.nii.gz"
    (tmp_path / "series").mkdir()
    assert free_name(tmp_path / "series") == tmp_path / "series_2"


def test_napari_dicom_writer_refuses_a_non_empty_folder_and_names_a_new_one(tmp_path):
    from napari_lidnet._writer import write_dicom_series

    first = write_dicom_series(str(tmp_path / "denoised.dcm"), _hu(10.0), _meta())
    folder = tmp_path / "denoised"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(OutputExistsError, match="denoised_2") as info:
        write_dicom_series(str(folder), _hu(-500.0), _meta())
    assert "nothing was written" in str(info.value)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before and len(first) == 2
    # the suggested name works; an existing EMPTY folder is used as is
    assert len(write_dicom_series(str(tmp_path / "denoised_2"), _hu(-500.0), _meta())) == 2
    (tmp_path / "empty").mkdir()
    assert len(write_dicom_series(str(tmp_path / "empty"), _hu(), _meta())) == 2


def test_napari_nifti_and_csv_writers_refuse_existing_files(tmp_path):
    from napari_lidnet._boxes import shapes_layer_data
    from napari_lidnet._writer import write_boxes_csv, write_nifti

    nii = write_nifti(str(tmp_path / "ct.nii.gz"), _hu(5.0), _meta())[0]
    old = open(nii, "rb").read()
    with pytest.raises(OutputExistsError, match="ct_2.nii.gz"):
        write_nifti(str(tmp_path / "ct.nii.gz"), _hu(99.0), _meta())
    with pytest.raises(OutputExistsError):
        write_nifti(str(tmp_path / "ct"), _hu(99.0), _meta())  # ".nii.gz" appended -> the same file
    assert open(nii, "rb").read() == old

    data, kw = shapes_layer_data({0: np.array([[2, 3, 8, 9]], np.float32)})
    csv1 = write_boxes_csv(str(tmp_path / "boxes.csv"), data, kw)[0]
    text = open(csv1).read()
    with pytest.raises(OutputExistsError, match="boxes_2.csv"):
        write_boxes_csv(str(tmp_path / "boxes"), [], kw)
    assert open(csv1).read() == text
    assert isinstance(OutputExistsError("x"), LidnetError)  # napari shows the message, no traceback


def test_viewer_save_never_overwrites(make_napari_viewer, lidnet_manifest, tmp_path):
    viewer = make_napari_viewer()
    viewer.add_image(_hu(1.0), **{k: v for k, v in _meta().items() if k != "metadata"})
    target = tmp_path / "ct.nii.gz"
    target.write_bytes(b"the radiologist's earlier export")
    with pytest.raises(Exception) as info:  # noqa: B017 - napari may wrap the writer's error
        viewer.layers.save(str(target), selected=False, plugin="napari-lidnet")
    assert "ct_2.nii.gz" in str(info.value) or isinstance(info.value, OutputExistsError)
    assert target.read_bytes() == b"the radiologist's earlier export"


def test_core_write_volume_failure_keeps_the_old_file(tmp_path):
    from src_training.io import write_volume

    p = write_volume(_hu(7.0), tmp_path / "v.nii.gz", spacing=(2.0, 0.7, 0.7))
    old = p.read_bytes()
    bad = _hu()
    bad[0, 0, 0] = np.nan
    with pytest.raises(CTWriteError):
        write_volume(bad, p, spacing=(2.0, 0.7, 0.7), overwrite=True)
    assert p.read_bytes() == old
    assert [q.name for q in tmp_path.iterdir()] == ["v.nii.gz"]  # no temporary file left


def test_core_file_writers_refuse_existing_files_unless_asked(tmp_path):
    from src_training.annotations import write_boxes_csv
    from src_training.io import write_volume

    p = write_volume(_hu(7.0), tmp_path / "v.nii.gz", spacing=(2.0, 0.7, 0.7))
    old = p.read_bytes()
    with pytest.raises(OutputExistsError, match="already exists"):
        write_volume(_hu(8.0), p, spacing=(2.0, 0.7, 0.7))
    assert p.read_bytes() == old
    write_volume(_hu(8.0), p, spacing=(2.0, 0.7, 0.7), overwrite=True)
    assert p.read_bytes() != old

    c = write_boxes_csv({0: np.array([[1, 1, 5, 5]], np.float32)}, tmp_path / "b.csv")
    text = c.read_text()
    with pytest.raises(OutputExistsError, match="already exists"):
        write_boxes_csv({1: np.array([[2, 2, 6, 6]], np.float32)}, c)
    assert c.read_text() == text
    write_boxes_csv({1: np.array([[2, 2, 6, 6]], np.float32)}, c, overwrite=True)
    assert c.read_text().splitlines()[1].startswith("1,")


def test_cli_refuses_an_existing_out_before_any_work(tmp_path, capsys):
    from src_training.cli import main

    src = tmp_path / "ct.nii.gz"
    from src_training.io import write_volume

    write_volume(_hu(0.0), src, spacing=(2.0, 0.7, 0.7))
    out = tmp_path / "ldct.nii.gz"
    out.write_bytes(b"earlier result")
    rc = main(["simulate", str(src), "--n0", "1e5", "--out", str(out)])
    assert rc != 0 and out.read_bytes() == b"earlier result"
    assert "already exists" in capsys.readouterr().err
    assert main(["simulate", str(src), "--n0", "1e5", "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes() != b"earlier result"
