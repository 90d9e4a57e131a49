"""Tests of src_training.config, src_training.data and src_training.training (LIDnet Algorithm 1)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from src_training.config import TrainConfig
from src_training.data import CaseArrays, SliceDataset, collate_slices, crop_boxes, prepare_case, resample_slices
from src_training.errors import CheckpointError, ConfigError, LidnetError
from src_training.training import (
    BaselineTrainer,
    CollaborativeTrainer,
    DetectorTrainer,
    ProgressEvent,
    read_progress,
    run_training,
)

EVENT_KEYS = {"event", "phase", "round", "step", "phase_steps", "global_step", "total_steps", "losses",
              "elapsed_s", "checkpoint", "message", "grad_shares"}


# ----------------------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: on a shared 2-core runner, two OpenMP threads are much slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_detector():
    """resnet18 Faster R-CNN with small samplers and a small box head (CPU-fast; tests only)."""
    from src_training.models.detector import build_detector

    det = build_detector(
        "resnet18",
        rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50,
        rpn_pre_nms_top_n_test=100, rpn_post_nms_top_n_test=50,
        rpn_batch_size_per_image=64, box_batch_size_per_image=16,
    )
    det.model.roi_heads.box_head = TwoMLPHead(256 * 7 * 7, 64)
    det.model.roi_heads.box_predictor = FastRCNNPredictor(64, 2)
    return det


def small_denoiser():
    from src_training.models.denoisers import build_denoiser

    # not zero-initialised, so T2 updates show in every layer
    return build_denoiser("cpce", filters=8, zero_init_last=False)


def make_case(n_slices: int = 4, size: int = 64, seed: int = 0) -> CaseArrays:
    rng = np.random.default_rng(seed)
    nd = np.full((n_slices, size, size), -800.0, np.float32)
    nd[:, 8:56, 8:56] = 30.0
    boxes = {}
    for z in range(0, n_slices, 2):  # lesions on every other slice; the others are negatives
        nd[z, 20:32, 24:38] = 120.0
        boxes[z] = np.array([[24, 20, 38, 32]], np.float32)
    ld = nd + rng.normal(0, 60, nd.shape).astype(np.float32)
    return CaseArrays("synthetic", nd, ld, boxes, (2.0, 0.7, 0.7))


def tiny_config(**kw) -> TrainConfig:
    base = dict(denoiser="cpce", detector_backbone="resnet18", t1=2, t2=2, t3=2, rounds=1, batch_size=2,
                lr_detector=1e-4, lr_denoiser=1e-3, seed=0, device="cpu", checkpoint_every=0)
    base.update(kw)
    return TrainConfig(**base)


def snapshot(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def stop_from_another_thread(trainer, timeout: float = 60.0) -> None:
    """Call ``trainer.request_stop()`` from another thread and return once it has run.

    Event-based: the caller (the loop consuming ``trainer.run()``) blocks until the other thread signals that
    the stop is requested, so the trainer sees it before its next step whatever the scheduling. ``timeout``
    is only a safety net against a hang.
    """
    requested = threading.Event()

    def stop():
        trainer.request_stop()
        requested.set()

    threading.Thread(target=stop, daemon=True).start()
    assert requested.wait(timeout), "request_stop() did not return in another thread"


# ----------------------------------------------------------------------------------------- config


def test_config_defaults_are_the_papers():
    c = TrainConfig()
    assert (c.denoiser, c.detector_backbone, c.k_proposals) == ("redcnn", "resnet50", 5)
    assert (c.lambda_roi, c.lambda_det, c.t1, c.t2, c.t3, c.rounds, c.batch_size) == (5.0, 5.0, 4000, 4000, 2000, 1, 8)
    assert (c.lr_denoiser, c.lr_detector, c.detector_optimizer, c.n0) == (1e-4, 1e-4, "adam", 1000.0)
    assert c.effective_baseline_steps == 4000
    assert TrainConfig(t2=10, rounds=3).effective_baseline_steps == 30
    assert TrainConfig(baseline_steps=7).effective_baseline_steps == 7


def test_config_json_round_trip(tmp_path):
    c = tiny_config(train_data=["sample:lung1"], hu_range=(-1000, 400), image_size=128, crop_size=64)
    path = c.save_json(tmp_path / "config.json")
    c2 = TrainConfig.load_json(path)
    assert c2 == c.validate()
    assert c2.hu_range == (-1000.0, 400.0)
    assert TrainConfig.from_json(c.to_json()) == c2


@pytest.mark.parametrize(
    "data",
    [
        {"unknown_knob": 1},
        {"t1": -1},
        {"batch_size": 0},
        {"batch_size": 2.5},
        {"hu_range": [100, -100]},
        {"denoiser": "unet"},
        {"detector_optimizer": "rmsprop"},
        {"lr_detector": 0},
        {"device": "tpu"},
        {"train_data": "sample:lung1"},
        {"lambda_roi": float("nan")},
    ],
)
def test_config_rejects_bad_values(data):
    with pytest.raises(ConfigError):
        TrainConfig.from_dict(data)


def test_config_bad_json_file(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{not json")
    with pytest.raises(ConfigError):
        TrainConfig.load_json(p)
    with pytest.raises(ConfigError):
        TrainConfig.load_json(tmp_path / "missing.json")


# ----------------------------------------------------------------------------------------- data


def test_slice_dataset_items_and_collate():
    case = make_case()
    ds = SliceDataset([case])
    assert len(ds) == 4  # slices without lesions are included
    ld, nd, t = ds[0]
    assert ld.shape == nd.shape == (1, 64, 64) and ld.dtype == torch.float32
    assert 0.0 <= float(nd.min()) and float(nd.max()) <= 1.0
    assert t["boxes"].shape == (1, 4) and t["labels"].tolist() == [1]
    assert ds[1][2]["boxes"].shape == (0, 4) and ds[1][2]["labels"].dtype == torch.int64
    ldb, ndb, targets = collate_slices([ds[0], ds[1]])
    assert ldb.shape == (2, 1, 64, 64) and len(targets) == 2


def test_random_crops_are_deterministic_and_keep_boxes_inside():
    ds = SliceDataset([make_case()], crop_size=32, seed=3)
    for epoch in range(4):
        a, b = ds[(0, epoch)], ds[(0, epoch)]
        assert torch.equal(a[0], b[0]) and a[0].shape == (1, 32, 32)
        boxes = a[2]["boxes"]
        if len(boxes):
            assert float(boxes.min()) >= 0 and float(boxes.max()) <= 32
            assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())


def test_crop_boxes_keeps_mostly_inside_boxes_clipped():
    boxes = np.array([[10, 10, 20, 20], [28, 0, 40, 10], [50, 50, 60, 60]], np.float32)
    out = crop_boxes(boxes, 0, 0, 32, 32, min_fraction=0.5)
    # box 2: only 4/12 of its width inside -> dropped; box 3 outside -> dropped
    np.testing.assert_array_equal(out, [[10, 10, 20, 20]])
    out = crop_boxes(boxes, 0, 0, 32, 32, min_fraction=0.3)
    np.testing.assert_array_equal(out, [[10, 10, 20, 20], [28, 0, 32, 10]])


def test_resample_scales_boxes_and_spacing():
    hu = np.zeros((2, 64, 32), np.float32)
    out, boxes, spacing = resample_slices(hu, {1: np.array([[4, 8, 12, 16]], np.float32)}, (2.0, 0.5, 1.0), 16)
    assert out.shape == (2, 16, 16)
    np.testing.assert_allclose(boxes[1], [[2, 2, 6, 4]])
    assert spacing == pytest.approx((2.0, 2.0, 2.0))


def test_prepare_case_from_npz_simulates_and_caches(tmp_path):
    case = make_case(n_slices=2, size=48)
    rows = np.array([[0, 24, 20, 38, 32]], np.float32)
    src = tmp_path / "case.npz"
    np.savez(src, hu=case.ndct_hu, spacing=np.array([2.0, 0.7, 0.7]), boxes=rows)
    a = prepare_case(str(src), n0=1e4, seed=1, image_size=32, cache_dir=tmp_path / "cache")
    assert a.ldct_hu.shape == a.ndct_hu.shape == (2, 32, 32)
    assert not np.allclose(a.ldct_hu, a.ndct_hu)
    assert list(a.boxes) == [0] and a.boxes[0].shape == (1, 4)
    b = prepare_case(str(src), n0=1e4, seed=1, image_size=32, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(a.ldct_hu, b.ldct_hu)
    with pytest.raises(ConfigError):
        prepare_case(str(tmp_path / "nothing.nii.gz"))


# ----------------------------------------------------------------------------------------- trainer


@pytest.fixture(scope="module")
def lidnet_run(tmp_path_factory):
    """One tiny LIDnet run (2 steps per phase) with snapshots of both networks at each phase start."""
    run_dir = tmp_path_factory.mktemp("lidnet_run")
    cfg = tiny_config(checkpoint_every=3)
    torch.manual_seed(0)
    trainer = CollaborativeTrainer(cfg, SliceDataset([make_case()]), denoiser=small_denoiser(),
                                   detector=small_detector(), run_dir=run_dir)
    events, snaps = [], {}
    for ev in trainer.run():
        events.append(ev)
        if ev.event in ("phase_start", "done"):
            snaps[ev.phase if ev.event == "phase_start" else "end"] = (
                snapshot(trainer.denoiser), snapshot(trainer.detector))
    return trainer, events, snaps, run_dir


def test_phases_and_events_in_order(lidnet_run):
    _, events, _, _ = lidnet_run
    seq = [(e.event, e.phase, e.step) for e in events if e.event != "checkpoint"]
    assert seq == [
        ("phase_start", "T1", 0), ("step", "T1", 1), ("step", "T1", 2),
        ("phase_start", "T2", 0), ("step", "T2", 1), ("step", "T2", 2),
        ("phase_start", "T3", 0), ("step", "T3", 1), ("step", "T3", 2),
        ("done", "T3", 2),
    ]
    steps = [e for e in events if e.event == "step"]
    assert [e.global_step for e in steps] == list(range(1, 7))
    assert all(e.total_steps == 6 and e.phase_steps == 2 for e in steps)
    assert [e.round for e in steps] == [0, 0, 1, 1, 1, 1]
    t2 = [e for e in steps if e.phase == "T2"][0].losses
    assert {"total", "rec", "roi", "det"} <= set(t2) and t2["roi"] > 0
    assert t2["total"] == pytest.approx(t2["rec"] + 5 * t2["roi"] + 5 * t2["det"], rel=1e-4)
    assert [e.global_step for e in events if e.event == "checkpoint"] == [3, 6]


def test_frozen_network_unchanged_in_the_other_phase(lidnet_run):
    _, _, snaps, _ = lidnet_run
    den_t2, det_t2 = snaps["T2"]
    den_t3, det_t3 = snaps["T3"]
    den_end, det_end = snaps["end"]
    assert same(det_t2, det_t3), "detector weights or buffers changed during T2"
    assert same(den_t3, den_end), "denoiser changed during T3"
    assert not same(den_t2, den_t3), "denoiser did not train in T2"
    assert not same(det_t3, det_end), "detector did not train in T3"
    assert not same(snaps["T1"][1], det_t2), "detector did not train in T1"
    assert same(snaps["T1"][0], den_t2), "denoiser changed during T1"


def test_progress_file_and_checkpoints(lidnet_run):
    _, events, _, run_dir = lidnet_run
    lines = (run_dir / "progress.jsonl").read_text().splitlines()
    parsed = [json.loads(line) for line in lines]
    assert len(parsed) == len(events)
    assert all(set(p) == EVENT_KEYS for p in parsed)
    assert parsed[-1]["event"] == "done"
    for name, kind in (("denoiser.pt", "denoiser"), ("detector.pt", "detector")):
        ck = torch.load(run_dir / name, weights_only=True)
        assert ck["kind"] == kind and ck["step"] == 6 and ck["config"]["t2"] == 2
    den = torch.load(run_dir / "denoiser.pt", weights_only=True)
    assert den["method"] == "lidnet" and den["model"] == "cpce"
    assert torch.load(run_dir / "detector.pt", weights_only=True)["backbone"] == "resnet18"
    state = torch.load(run_dir / "trainer_state.pt", weights_only=True)
    assert state["kind"] == "trainer_state" and state["global_step"] == 6


def test_read_progress_tolerates_partial_lines(tmp_path):
    p = tmp_path / "progress.jsonl"
    assert read_progress(p) == ([], 0)
    ev = ProgressEvent(event="step", phase="T1", step=1, losses={"det": 1.0})
    p.write_text(ev.to_json() + "\n" + '{"event": "st')
    events, off = read_progress(p)
    assert [e["event"] for e in events] == ["step"] and off == len(ev.to_json()) + 1
    with open(p, "a") as fh:
        fh.write('ep"}\n')
    events, off2 = read_progress(p, off)
    assert events == [{"event": "step"}] and off2 == p.stat().st_size
    assert read_progress(p, off2) == ([], off2)
    p.write_text("")  # a new run replaced the file
    assert read_progress(p, off2) == ([], 0)
    assert json.loads(ProgressEvent("step", "T2", losses={"x": float("nan")}).to_json())["losses"]["x"] is None


def _resume_config(**kw):
    return tiny_config(t1=1, t2=2, t3=1, **kw)


def test_stop_and_resume_reach_the_same_weights(tmp_path):
    ds = SliceDataset([make_case()], crop_size=48, seed=0)

    def trainer(run_dir):
        torch.manual_seed(123)  # the trainer reseeds from config.seed; this must not matter
        return CollaborativeTrainer(_resume_config(), ds, denoiser=small_denoiser(), detector=small_detector(),
                                    run_dir=run_dir)

    full = trainer(tmp_path / "full")
    full.train_all()

    part = trainer(tmp_path / "part")
    events = []
    for ev in part.run():
        events.append(ev)
        if ev.event == "step" and ev.global_step == 2:  # mid T2
            stop_from_another_thread(part)
    assert events[-1].event == "stopped" and events[-1].global_step == 2
    state_path = tmp_path / "part" / "trainer_state.pt"
    state = torch.load(state_path, weights_only=True)
    assert (state["phase_index"], state["phase_step"], state["global_step"]) == (1, 1, 2)
    assert torch.load(tmp_path / "part" / "denoiser.pt", weights_only=True)["step"] == 2

    resumed = trainer(tmp_path / "part")
    resumed.resume(state_path)
    rest = resumed.train_all()
    assert rest[0].event == "phase_start" and rest[0].phase == "T2" and "resumed" in rest[0].message
    assert [e.global_step for e in rest if e.event == "step"] == [3, 4]
    assert rest[-1].event == "done"
    assert same(snapshot(full.denoiser), snapshot(resumed.denoiser))
    assert same(snapshot(full.detector), snapshot(resumed.detector))
    lines = [json.loads(x) for x in (tmp_path / "part" / "progress.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines].count("stopped") == 1 and lines[-1]["event"] == "done"

    # a state cannot be resumed with another configuration or method
    other = CollaborativeTrainer(_resume_config(lambda_roi=1.0), ds, denoiser=small_denoiser(),
                                 detector=small_detector())
    with pytest.raises(ConfigError):
        other.resume(state_path)
    base = BaselineTrainer(_resume_config(), ds, denoiser=small_denoiser())
    with pytest.raises(CheckpointError):
        base.resume(state_path)


def test_baseline_stop_file_pause_file_and_resume(tmp_path):
    ds = SliceDataset([make_case()])
    cfg = tiny_config(baseline_steps=4)
    t = BaselineTrainer(cfg, ds, denoiser=small_denoiser(), run_dir=tmp_path)
    (tmp_path / "PAUSE").touch()
    gen = t.run()
    assert next(gen).event == "phase_start"
    ev = next(gen)
    assert ev.event == "paused"
    (tmp_path / "PAUSE").unlink()
    ev = next(gen)
    assert (ev.event, ev.phase, ev.global_step) == ("step", "baseline", 1)
    (tmp_path / "STOP").touch()
    rest = list(gen)
    assert [e.event for e in rest] == ["stopped"]
    assert not (tmp_path / "STOP").exists()
    den = torch.load(tmp_path / "denoiser.pt", weights_only=True)
    assert den["method"] == "baseline" and den["step"] == 1
    assert not (tmp_path / "detector.pt").exists()

    t2 = BaselineTrainer(cfg, ds, denoiser=small_denoiser(), run_dir=tmp_path)
    t2.resume(tmp_path / "trainer_state.pt")
    evs = t2.train_all()
    assert [e.global_step for e in evs if e.event == "step"] == [2, 3, 4]
    assert evs[-1].event == "done"
    assert torch.load(tmp_path / "denoiser.pt", weights_only=True)["step"] == 4


def test_detector_trainer_writes_only_the_detector(tmp_path):
    t = DetectorTrainer(tiny_config(t1=1), SliceDataset([make_case()]), detector=small_detector(), run_dir=tmp_path)
    evs = t.train_all()
    assert [(e.event, e.phase) for e in evs] == [("phase_start", "T1"), ("step", "T1"), ("done", "T1")]
    ck = torch.load(tmp_path / "detector.pt", weights_only=True)
    assert ck["kind"] == "detector" and ck["method"] == "ndct"
    assert not (tmp_path / "denoiser.pt").exists()


def test_divergence_is_reported_as_error_event(tmp_path):
    t = BaselineTrainer(tiny_config(baseline_steps=2), SliceDataset([make_case()]), denoiser=small_denoiser(),
                        run_dir=tmp_path)
    with torch.no_grad():
        next(t.denoiser.parameters()).fill_(float("nan"))
    with pytest.raises(LidnetError, match="diverged"):
        t.train_all()
    last = json.loads((tmp_path / "progress.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "error" and "diverged" in last["message"]


def test_run_training_baseline_from_npz(tmp_path):
    case = make_case(n_slices=2, size=48)
    src = tmp_path / "case.npz"
    np.savez(src, hu=case.ndct_hu, spacing=np.array([2.0, 0.7, 0.7]),
             boxes=np.array([[0, 24, 20, 38, 32]], np.float32))
    cfg = tiny_config(denoiser="cpce", baseline_steps=2, train_data=[str(src)], n0=1e4,
                      cache_dir=str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    assert run_training(cfg, run_dir, method="baseline", verbose=False) == 0
    assert TrainConfig.load_json(run_dir / "config.json") == cfg
    events, _ = read_progress(run_dir / "progress.jsonl")
    assert events[0]["event"] == "phase_start" and events[-1]["event"] == "done"
    assert torch.load(run_dir / "denoiser.pt", weights_only=True)["method"] == "baseline"
    with pytest.raises(ConfigError):
        run_training(cfg, run_dir, method="baseline", overwrite=False, verbose=False)

    bad = tiny_config(train_data=[str(tmp_path / "missing.npz")])
    with pytest.raises(ConfigError):
        run_training(bad, tmp_path / "bad", method="baseline", verbose=False)
    events, _ = read_progress(tmp_path / "bad" / "progress.jsonl")
    assert events[-1]["event"] == "error" and "missing.npz" in events[-1]["message"]


def test_run_training_streaming_equals_in_memory(tmp_path):
    """config.streaming trains from memory-mapped slice caches and gives the same weights as in memory."""
    case = make_case(n_slices=3, size=48)
    src = tmp_path / "case.npz"
    np.savez(src, hu=case.ndct_hu, spacing=np.array([2.0, 0.7, 0.7]),
             boxes=np.array([[0, 24, 20, 38, 32]], np.float32))
    weights = {}
    for streaming in (False, True):
        cfg = tiny_config(denoiser="cpce", baseline_steps=3, train_data=[str(src)], n0=1e4, crop_size=32,
                          cache_dir=str(tmp_path / f"cache{int(streaming)}"), streaming=streaming)
        run_dir = tmp_path / f"run{int(streaming)}"
        assert run_training(cfg, run_dir, method="baseline", verbose=False) == 0
        weights[streaming] = torch.load(run_dir / "denoiser.pt", weights_only=True)["state_dict"]
    assert any((tmp_path / "cache1").glob("slices_*/ndct.npy"))
    for k, v in weights[False].items():
        assert torch.equal(v, weights[True][k]), k
