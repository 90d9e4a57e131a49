"""Derived DICOM series, the detections CSV and the CLI's output checks (issue #12, items 8 and 9).

- ``write_dicom_series(..., reference=...)``: SliceThickness of the source (not the spacing), the window of
  the source / the user's preset / the body part (never a fixed lung window), SourceImageSequence and
  ReferencedSeriesSequence per slice, DerivationDescription naming model and checkpoint;
- ``lidnet denoise`` / ``simulate`` refuse an unwritable ``--out`` before the inference; ``--series-uid`` in
  the message of a folder with several series;
- the detections CSV carries SOPInstanceUID, InstanceNumber and patient-coordinate mm and reads back.

The reference series are written with pydicom from scratch in ``tmp_path`` (tiny 8 x 8 slices).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from src_training import cli
from src_training.annotations import read_boxes_csv, read_boxes_table, write_boxes_csv
from src_training.annotations.box_csv import REFERENCE_COLUMNS, box_centres_mm
from src_training.errors import ConfigError, CTWriteError, OutputExistsError
from src_training.io import CTVolume, load_ct, write_dicom_series
from src_training.io.dicom_writer import check_dicom_series_output, series_window

STUDY = "1.2.826.0.1.3680043.8.498.1"


def _source_series(folder: Path, *, n=4, dz=2.397, thickness="2.5", window=None, body_part=None,
                   series_uid=None, desc="source", reverse_names=True) -> list[dict]:
    """A CT series written with pydicom (8 x 8 slices, z = 100 + k * dz mm). File names run against the
    slice order (IM_4 is the lowest slice) so that z order != name order. Returns per slice (z order)
    ``{"file", "sop", "z"}``."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    out = []
    for k in range(n):
        sop = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop
        ds.Modality = "CT"
        ds.PatientID = "P1"
        ds.PatientName = "TEST^PATIENT"
        ds.StudyInstanceUID = STUDY
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesDescription = desc
        ds.InstanceNumber = n - k  # against the position order too
        ds.ImagePositionPatient = [-20.0, -30.0, 100.0 + k * dz]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.8]
        if thickness is not None:
            ds.SliceThickness = thickness
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        if body_part is not None:
            ds.BodyPartExamined = body_part
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.PixelData = np.full((8, 8), 1024 + 10 * k, "<i2").tobytes()
        name = folder / f"IM_{(n - k) if reverse_names else k + 1}.dcm"
        ds.save_as(name, enforce_file_format=True)
        out.append({"file": name, "sop": sop, "z": 100.0 + k * dz})
    return out


def _loaded(folder: Path, slices: list[dict]) -> CTVolume:
    """load_ct of the folder, with the per-slice UIDs (contract 6) filled in when the loader does not give
    them yet (then from the files, in z order)."""
    vol = load_ct(folder)
    vol.metadata.setdefault("sop_instance_uids", [s["sop"] for s in slices])
    vol.metadata.setdefault("frame_numbers", None)
    return vol


def _read(files) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


# ------------------------------------------------------------------------------------------ derived tags
def test_slice_thickness_is_the_source_s_not_the_spacing(tmp_path):
    slices = _source_series(tmp_path / "src", dz=2.397, thickness="2.5")
    vol = _loaded(tmp_path / "src", slices)
    assert vol.spacing[0] == pytest.approx(2.397, abs=1e-4)
    files = write_dicom_series(vol.hu + 1, tmp_path / "den", spacing=vol.spacing, reference=vol,
                               series_description="denoised")
    for ds in _read(files):
        assert float(ds.SliceThickness) == pytest.approx(2.5)
        assert float(ds.SpacingBetweenSlices) == pytest.approx(2.397, abs=1e-4)
    back = load_ct(tmp_path / "den")
    assert back.spacing[0] == pytest.approx(2.397, abs=1e-4)  # positions still 2.397 apart
    # the loader's slice_thickness_mm wins over the tag; without either: the spacing
    ref = CTVolume(np.zeros((2, 4, 4), np.float32), (1.25, 0.5, 0.5),
                   metadata={"slice_thickness_mm": 1.0, "SliceThickness": 3.0, "StudyInstanceUID": STUDY})
    f = write_dicom_series(ref.hu, tmp_path / "a", spacing=ref.spacing, reference=ref, series_description="a")
    assert float(_read(f)[0].SliceThickness) == 1.0
    ref.metadata.pop("slice_thickness_mm")
    f = write_dicom_series(ref.hu, tmp_path / "b", spacing=ref.spacing, reference=ref, series_description="b")
    assert float(_read(f)[0].SliceThickness) == 3.0
    f = write_dicom_series(ref.hu, tmp_path / "c", spacing=ref.spacing, series_description="c")
    assert float(_read(f)[0].SliceThickness) == 1.25


def test_window_from_source_then_preset_never_a_fixed_lung_window(tmp_path):
    slices = _source_series(tmp_path / "src", window=(["40", "-600"], ["400", "1500"]), body_part="CHEST")
    vol = _loaded(tmp_path / "src", slices)
    ds = _read(write_dicom_series(vol.hu, tmp_path / "d1", spacing=vol.spacing, reference=vol,
                                  series_description="x"))[0]
    assert (float(ds.WindowWidth), float(ds.WindowCenter)) == (400.0, 40.0)  # first value of the source's
    assert ds.WindowCenterWidthExplanation == "AS SOURCE"
    # the user's preset wins: a name or (W, L)
    ds = _read(write_dicom_series(vol.hu, tmp_path / "d2", spacing=vol.spacing, reference=vol,
                                  series_description="x", window="bone"))[0]
    assert (float(ds.WindowWidth), float(ds.WindowCenter), ds.WindowCenterWidthExplanation) == (1800, 400, "BONE")
    ds = _read(write_dicom_series(vol.hu, tmp_path / "d3", spacing=vol.spacing, reference=vol,
                                  series_description="x", window=(350.0, 50.0), window_explanation="my preset"))[0]
    assert (float(ds.WindowWidth), float(ds.WindowCenter), ds.WindowCenterWidthExplanation) == (350, 50, "MY PRESET")
    with pytest.raises(ConfigError):
        series_window("no such window")


def test_head_ct_without_window_gets_brain_not_lung(tmp_path):
    slices = _source_series(tmp_path / "head", body_part="HEAD")
    vol = _loaded(tmp_path / "head", slices)
    assert "WindowCenter" not in vol.metadata
    ds = _read(write_dicom_series(vol.hu, tmp_path / "d", spacing=vol.spacing, reference=vol,
                                  series_description="x"))[0]
    assert (float(ds.WindowWidth), float(ds.WindowCenter)) == (80.0, 40.0)
    assert ds.WindowCenterWidthExplanation == "BRAIN"
    # unknown body part, no reference: the neutral soft-tissue window
    assert series_window(None, {"BodyPartExamined": "EXTREMITY"}) == (400.0, 40.0, "SOFT TISSUE")
    ds = _read(write_dicom_series(vol.hu, tmp_path / "n", spacing=vol.spacing, series_description="x"))[0]
    assert (float(ds.WindowWidth), float(ds.WindowCenter)) == (400.0, 40.0)
    assert series_window(None, {"BodyPartExamined": "CHEST"})[:2] == (1500.0, -600.0)


def test_source_image_and_referenced_series_sequences_in_z_order(tmp_path):
    series_uid = generate_uid()
    slices = _source_series(tmp_path / "src", n=5, series_uid=series_uid)
    vol = _loaded(tmp_path / "src", slices)
    files = write_dicom_series(vol.hu, tmp_path / "den", spacing=vol.spacing, reference=vol,
                               series_description="denoised", derivation_description="RED-CNN, denoiser.pt")
    headers = _read(files)
    for k, ds in enumerate(headers):
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(slices[k]["z"], abs=1e-3)
        src = ds.SourceImageSequence
        assert len(src) == 1
        assert src[0].ReferencedSOPInstanceUID == slices[k]["sop"]  # the slice at the same position
        assert src[0].ReferencedSOPClassUID == CTImageStorage
        assert "ReferencedFrameNumber" not in src[0]
        assert src[0].PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        ref_series = ds.ReferencedSeriesSequence
        assert len(ref_series) == 1 and ref_series[0].SeriesInstanceUID == series_uid
        assert ref_series[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == slices[k]["sop"]
        assert ds.StudyInstanceUID == STUDY and ds.SeriesInstanceUID != series_uid
        assert ds.FrameOfReferenceUID == vol.metadata["FrameOfReferenceUID"]
        assert ds.DerivationDescription == "napari-lidnet: RED-CNN, denoiser.pt"
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    # a multi-frame source: the frame numbers are referenced
    mf = CTVolume(np.zeros((3, 4, 4), np.float32), (1.0, 0.5, 0.5), metadata={
        "StudyInstanceUID": STUDY, "SeriesInstanceUID": "1.2.3", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2.1",
        "sop_instance_uids": ["1.2.3.9"] * 3, "frame_numbers": [3, 2, 1]})
    heads = _read(write_dicom_series(mf.hu, tmp_path / "mf", spacing=mf.spacing, reference=mf,
                                     series_description="x"))
    assert [int(h.SourceImageSequence[0].ReferencedFrameNumber) for h in heads] == [3, 2, 1]
    assert heads[0].SourceImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1"
    # slice counts differ (no offset given): no guessed references
    part = _read(write_dicom_series(vol.hu[:2], tmp_path / "part", spacing=vol.spacing, reference=vol,
                                    series_description="x"))
    assert all("SourceImageSequence" not in h for h in part)
    # a result covering slices 2..3 of the source, with its offset
    part = _read(write_dicom_series(vol.hu[2:4], tmp_path / "part2", spacing=vol.spacing, reference=vol,
                                    series_description="x", reference_z_offset=2))
    assert [h.SourceImageSequence[0].ReferencedSOPInstanceUID for h in part] == [slices[2]["sop"], slices[3]["sop"]]


def test_check_dicom_series_output_writes_nothing_and_names_the_problem(tmp_path):
    vol = CTVolume(np.zeros((2, 4, 4), np.float32), (1.0, 0.5, 0.5), metadata={"StudyInstanceUID": STUDY})
    check_dicom_series_output(vol.hu, tmp_path / "new", spacing=vol.spacing, reference=vol, series_description="x")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="full"):
        check_dicom_series_output(vol.hu, tmp_path / "full", spacing=vol.spacing, series_description="x")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(CTWriteError, match="afile is a file, not a folder"):
        check_dicom_series_output(vol.hu, tmp_path / "afile" / "out", spacing=vol.spacing, series_description="x")
    bad = CTVolume(vol.hu, (1.0, 0.5, 0.5), metadata={"StudyInstanceUID": STUDY, "StudyDate": 20240101},
                   source="/data/ct_enhanced.dcm")
    with pytest.raises(CTWriteError, match="ct_enhanced.dcm.*StudyDate"):
        check_dicom_series_output(vol.hu, tmp_path / "o", spacing=bad.spacing, reference=bad, series_description="x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "full"]


# ------------------------------------------------------------------------------------------ CLI
class _Model:
    """Stands in for a denoiser (the CLI's inference function is patched)."""


def _patch_denoiser(monkeypatch, fail_if_called: bool):
    config = {"denoiser": "redcnn", "method": "lidnet", "step": 1200, "hu_range": [-1024.0, 1024.0]}
    monkeypatch.setattr(cli, "load_denoiser", lambda path, device="auto": (_Model(), dict(config)))

    def fake_denoise(model, hu, hu_range, **kw):
        if fail_if_called:
            raise AssertionError("the inference ran although the output cannot be written")
        return hu + 5.0

    monkeypatch.setattr(cli, "denoise_volume", fake_denoise)


def test_cli_denoise_writes_derived_series_naming_model_and_checkpoint(tmp_path, monkeypatch, capsys):
    slices = _source_series(tmp_path / "src", window=("-600", "1500"))
    _patch_denoiser(monkeypatch, fail_if_called=False)
    monkeypatch.setattr(cli, "load_ct", lambda path, series_uid=None: _loaded(Path(path), slices))
    ckpt = tmp_path / "my_redcnn.pt"
    rc = cli.main(["denoise", str(tmp_path / "src"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "den")])
    assert rc == 0, capsys.readouterr().err
    heads = _read(sorted((tmp_path / "den").iterdir()))
    text = heads[0].DerivationDescription
    assert "RED-CNN" in text and "my_redcnn.pt" in text and "step 1200" in text
    assert (float(heads[0].WindowWidth), float(heads[0].WindowCenter)) == (1500.0, -600.0)
    assert [h.SourceImageSequence[0].ReferencedSOPInstanceUID for h in heads] == [s["sop"] for s in slices]
    # --window: the user's preset
    rc = cli.main(["denoise", str(tmp_path / "src"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "den2"),
                   "--window", "350,50"])
    assert rc == 0
    ds = _read(sorted((tmp_path / "den2").iterdir()))[0]
    assert (float(ds.WindowWidth), float(ds.WindowCenter)) == (350.0, 50.0)


def test_cli_denoise_refuses_an_unwritable_output_before_the_inference(tmp_path, monkeypatch, capsys):
    slices = _source_series(tmp_path / "src")
    _patch_denoiser(monkeypatch, fail_if_called=True)
    ckpt = str(tmp_path / "d.pt")
    # an existing output without --overwrite
    out = tmp_path / "den"
    out.mkdir()
    (out / "IM_00001.dcm").write_bytes(b"earlier result")
    rc = cli.main(["denoise", str(tmp_path / "src"), "--checkpoint", ckpt, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "already exists" in err and "--overwrite" in err
    assert (out / "IM_00001.dcm").read_bytes() == b"earlier result"
    # with --overwrite, but the folder holds other files
    (out / "notes.txt").write_text("keep")
    rc = cli.main(["denoise", str(tmp_path / "src"), "--checkpoint", ckpt, "--out", str(out), "--overwrite"])
    assert rc == 2 and "notes.txt" in capsys.readouterr().err
    # an ending that cannot hold the result
    for name in ("den.png", "den.mhd", "den.dcm"):
        rc = cli.main(["denoise", str(tmp_path / "src"), "--checkpoint", ckpt, "--out", str(tmp_path / name)])
        assert rc == 2 and name in capsys.readouterr().err
    # a file in the way of the destination folder
    (tmp_path / "blocker").write_text("x")
    rc = cli.main(["denoise", str(tmp_path / "src"), "--checkpoint", ckpt, "--out", str(tmp_path / "blocker" / "d")])
    assert rc == 2 and "is a file, not a folder" in capsys.readouterr().err
    # an unknown window preset
    rc = cli.main(["denoise", str(tmp_path / "src"), "--checkpoint", ckpt, "--out", str(tmp_path / "w"),
                   "--window", "lungs"])
    assert rc == 2 and "lungs" in capsys.readouterr().err
    # an input whose geometry a derived series cannot carry (e.g. a negative z spacing), NIfTI or DICOM out
    bad = _loaded(tmp_path / "src", slices)
    bad.spacing = (-bad.spacing[0], bad.spacing[1], bad.spacing[2])
    monkeypatch.setattr(cli, "load_ct", lambda path, series_uid=None: bad)
    for out_name in ("d_bad", "d_bad.nii.gz"):
        rc = cli.main(["denoise", str(tmp_path / "src"), "--checkpoint", ckpt, "--out", str(tmp_path / out_name)])
        err = capsys.readouterr().err
        assert rc == 2 and "spacing" in err and "nothing was computed" in err and str(tmp_path / "src") in err
        assert not (tmp_path / out_name).exists()


def test_cli_simulate_refuses_before_simulating_and_writes_dicom(tmp_path, monkeypatch, capsys):
    slices = _source_series(tmp_path / "src", body_part="HEAD")

    def no_simulation(*a, **k):
        raise AssertionError("simulated although the output cannot be written")

    monkeypatch.setattr(cli, "simulate_ldct", no_simulation)
    rc = cli.main(["simulate", str(tmp_path / "src"), "--n0", "1e5", "--out", str(tmp_path / "ldct.png")])
    assert rc == 2 and "ldct.png" in capsys.readouterr().err
    monkeypatch.setattr(cli, "simulate_ldct", lambda hu, *a, **k: hu + 1.0)
    monkeypatch.setattr(cli, "load_ct", lambda path, series_uid=None: _loaded(Path(path), slices))
    rc = cli.main(["simulate", str(tmp_path / "src"), "--n0", "1e5", "--seed", "3", "--out", str(tmp_path / "ldct")])
    assert rc == 0, capsys.readouterr().err
    ds = _read(sorted((tmp_path / "ldct").iterdir()))[0]
    assert "N0 100000" in ds.DerivationDescription and "seed 3" in ds.DerivationDescription
    assert (float(ds.WindowWidth), float(ds.WindowCenter)) == (80.0, 40.0)  # head CT: brain window
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == slices[0]["sop"]


def test_cli_several_series_names_the_series_uid_option(tmp_path, monkeypatch, capsys):
    a, b = generate_uid(), generate_uid()
    _source_series(tmp_path / "both", n=2, series_uid=a, desc="first")
    for s in _source_series(tmp_path / "other", n=2, series_uid=b, desc="second"):
        s["file"].rename(tmp_path / "both" / f"b_{s['file'].name}")
    _patch_denoiser(monkeypatch, fail_if_called=True)
    rc = cli.main(["denoise", str(tmp_path / "both"), "--checkpoint", str(tmp_path / "d.pt"),
                   "--out", str(tmp_path / "den")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--series-uid" in err and "series_uid=" not in err
    assert a in err and b in err and str(tmp_path / "both") in err


# ------------------------------------------------------------------------------------------ detections CSV
def _oblique_reference() -> CTVolume:
    c, s = np.cos(0.3), np.sin(0.3)
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    return CTVolume(np.zeros((3, 16, 16), np.float32), (2.5, 0.5, 0.8), origin=(10.0, -20.0, 30.0),
                    direction=direction, metadata={"sop_instance_uids": ["1.2.3.1", "1.2.3.2", "1.2.3.3"],
                                                   "instance_numbers": [30, 20, 10], "frame_numbers": None})


def test_detections_csv_columns_and_patient_mm(tmp_path):
    ref = _oblique_reference()
    boxes = {1: np.array([[2, 4, 6, 8], [0, 0, 1, 1]], np.float32), 2: np.array([[10, 10, 12, 14]], np.float32)}
    scores = {1: [0.9, 0.6], 2: [0.75]}
    path = write_boxes_csv(boxes, tmp_path / "det.csv", scores=scores, reference=ref)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["slice", "x0", "y0", "x1", "y1", "label", "score", *REFERENCE_COLUMNS]
    assert [r["sop_instance_uid"] for r in rows] == ["1.2.3.2", "1.2.3.2", "1.2.3.3"]
    assert [r["instance_number"] for r in rows] == ["20", "20", "10"]
    assert all(r["frame_number"] == "" for r in rows)
    # box (2, 4)-(6, 8) on slice 1: centre voxel column 3.5, row 5.5 -> origin + D (3.5*0.8, 5.5*0.5, 1*2.5)
    c, s = np.cos(0.3), np.sin(0.3)
    i, j = 3.5 * 0.8, 5.5 * 0.5
    expected = (10.0 + c * i - s * j, -20.0 + s * i + c * j, 30.0 + 2.5)
    got = tuple(float(rows[0][k]) for k in ("center_x_mm", "center_y_mm", "center_z_mm"))
    assert got == pytest.approx(expected, abs=1e-3)
    # one-pixel box at column 0 / row 0: its centre is the origin (in-plane)
    assert (float(rows[1]["center_x_mm"]), float(rows[1]["center_y_mm"])) == pytest.approx((10.0, -20.0), abs=1e-3)
    assert box_centres_mm(np.array([[0, 0, 1, 1]]), 0, ref.spacing, ref.origin, ref.direction)[0] == \
        pytest.approx((10.0, -20.0, 30.0))
    # a source that is not DICOM: empty identifier cells, the mm are still given
    nifti = CTVolume(ref.hu, ref.spacing, ref.origin, ref.direction, metadata={"format": "nifti"})
    rows = list(csv.DictReader(write_boxes_csv(boxes, tmp_path / "n.csv", reference=nifti).open()))
    assert rows[0]["sop_instance_uid"] == "" and rows[0]["instance_number"] == ""
    assert float(rows[0]["center_z_mm"]) == pytest.approx(32.5)


def test_detections_csv_reads_back(tmp_path):
    ref = _oblique_reference()
    boxes = {0: np.array([[1.5, 2, 5, 6.25]], np.float32), 2: np.array([[3, 3, 9, 9], [0, 1, 2, 3]], np.float32)}
    labels = {0: [1], 2: [1, 2]}
    scores = {0: [0.5], 2: [0.875, 0.25]}
    path = write_boxes_csv(boxes, tmp_path / "det.csv", labels=labels, scores=scores, reference=ref)
    back, lab, sc = read_boxes_csv(path, shape=ref.hu.shape, return_labels_scores=True)
    assert sorted(back) == [0, 2]
    for z in boxes:
        np.testing.assert_allclose(back[z], boxes[z])
        np.testing.assert_array_equal(lab[z], labels[z])
        np.testing.assert_allclose(sc[z], scores[z])
    kind, rows = read_boxes_table(path)
    assert kind is None and [r[0] for r in rows[""]] == [0, 2, 2]
    np.testing.assert_allclose(rows[""][1][1], [3, 3, 9, 9])


def test_cli_detect_writes_uids_and_mm(tmp_path, monkeypatch, capsys):
    slices = _source_series(tmp_path / "src", n=3)
    monkeypatch.setattr(cli, "load_detector", lambda path, device="auto": (object(), {"hu_range": [-1024, 1024]}))
    monkeypatch.setattr(cli, "detect_slices", lambda det, hu, hu_range, k, score_thresh: iter([
        {"slice": 2, "boxes": np.array([[1, 1, 3, 3]], np.float32), "scores": np.array([0.8], np.float32)}]))
    monkeypatch.setattr(cli, "load_ct", lambda path, series_uid=None: _loaded(Path(path), slices))
    rc = cli.main(["detect", str(tmp_path / "src"), "--checkpoint", "x.pt", "--out", str(tmp_path / "b.csv")])
    assert rc == 0, capsys.readouterr().err
    row = next(csv.DictReader((tmp_path / "b.csv").open()))
    assert row["slice"] == "2" and row["sop_instance_uid"] == slices[2]["sop"]
    # centre of pixels 1..2: column 1.5 -> x = -20 + 1.5 * 0.8, row 1.5 -> y = -30 + 1.5 * 0.7
    assert float(row["center_x_mm"]) == pytest.approx(-20 + 1.5 * 0.8, abs=1e-3)
    assert float(row["center_y_mm"]) == pytest.approx(-30 + 1.5 * 0.7, abs=1e-3)
    assert float(row["center_z_mm"]) == pytest.approx(slices[2]["z"], abs=1e-3)


# ------------------------------------------------------------------------------------------ plugin writers
def test_plugin_writers_pass_window_model_and_checkpoint(tmp_path):
    pytest.importorskip("napari")
    from napari_lidnet import _layers
    from napari_lidnet._writer import derivation_description, layer_window, write_dicom_series as plugin_write

    slices = _source_series(tmp_path / "src", body_part="HEAD")
    vol = _loaded(tmp_path / "src", slices)
    kw = _layers.image_layer_kwargs(vol, extra_metadata={"model": "redcnn", "method": "lidnet",
                                                         "checkpoint": "/runs/a/denoiser.pt", "step": 7})
    assert "RED-CNN" in derivation_description(kw) and "denoiser.pt" in derivation_description(kw)
    kw["contrast_limits"] = (-100.0, 300.0)  # the user dragged the contrast: W 400, L 100
    assert layer_window(kw) == ((400.0, 100.0), "CUSTOM")
    files = plugin_write(str(tmp_path / "out.dcm"), vol.hu + 2, kw)
    heads = _read(files)
    assert (float(heads[0].WindowWidth), float(heads[0].WindowCenter)) == (400.0, 100.0)
    assert "denoiser.pt" in heads[0].DerivationDescription and "RED-CNN" in heads[0].DerivationDescription
    assert [h.SourceImageSequence[0].ReferencedSOPInstanceUID for h in heads] == [s["sop"] for s in slices]


def test_plugin_boxes_csv_uses_the_source_layer(make_napari_viewer, lidnet_manifest, tmp_path):
    from napari_lidnet import _layers
    from napari_lidnet._boxes import shapes_layer_data
    from napari_lidnet._writer import write_boxes_csv as plugin_boxes

    slices = _source_series(tmp_path / "src", n=3)
    vol = _loaded(tmp_path / "src", slices)
    viewer = make_napari_viewer()
    image = viewer.add_image(vol.hu, **_layers.image_layer_kwargs(vol, name="CT"))
    data, kw = shapes_layer_data({1: np.array([[2, 2, 4, 6]], np.float32)}, like=image,
                                 metadata={"kind": "detections", "source": image.name})
    shapes = viewer.add_shapes(data, **kw)
    out = plugin_boxes(str(tmp_path / "boxes.csv"), shapes.data, shapes.as_layer_data_tuple()[1])
    row = next(csv.DictReader(open(out[0])))
    assert row["slice"] == "1" and row["sop_instance_uid"] == slices[1]["sop"]
    assert float(row["center_z_mm"]) == pytest.approx(slices[1]["z"], abs=1e-3)
    assert float(row["center_x_mm"]) == pytest.approx(-20 + 2.5 * 0.8, abs=1e-3)
    back = read_boxes_csv(out[0])
    np.testing.assert_allclose(back[1], [[2, 2, 4, 6]])
