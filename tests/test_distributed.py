"""Tests of multi-process training (src_training.distributed + the torchrun path of src_training.training).

Two CPU processes with gloo, launched as ``python -m torch.distributed.run --standalone --nproc_per_node=2``
(the same launcher as ``torchrun``): this file itself is the worker script (``--worker OUT``) for the
trainer-level test, and ``-m src_training train`` is launched for the CLI test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------------------- in-process


def test_single_process_helpers_are_no_ops(monkeypatch):
    from src_training import distributed as D

    for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert not D.launched_by_torchrun()
    ctx = D.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main, ctx.device.type) == (0, 1, False, True, "cpu")
    assert D.is_main_process() and D.broadcast_object({"a": 1}) == {"a": 1} and D.all_gather_object(3) == [3]
    assert D.any_flags(True, False) == (True, False)
    assert D.mean_values({"x": 2.0}) == {"x": 2.0}
    lin = torch.nn.Linear(2, 1)
    lin(torch.ones(1, 2)).sum().backward()
    g = lin.weight.grad.clone()
    assert D.average_gradients_(lin) is False and torch.equal(lin.weight.grad, g)
    assert D.average_gradients_(lin, local_nonfinite=True) is True
    D.barrier()


@pytest.mark.parametrize("n,bs,ws", [(10, 2, 2), (11, 2, 3), (9, 4, 2), (1, 1, 2), (5, 8, 2)])
def test_batch_stream_shards_are_disjoint_and_equal(n, bs, ws):
    from src_training.training import _BatchStream

    ds = list(range(n))
    streams = [_BatchStream(ds, bs, seed=3, rank=r, world_size=ws) for r in range(ws)]
    assert len({s.batches_per_epoch for s in streams}) == 1
    for epoch in range(3):
        shards = [[i for b in s._batches(epoch) for i, _ in b] for s in streams]
        assert len({len(s._batches(epoch)) for s in streams}) == 1
        assert all(len(b) == min(bs, s.n_local) for s in streams for b in s._batches(epoch))
        flat = [i for sh in shards for i in sh]
        if n >= ws:
            assert len(flat) == len(set(flat)), "ranks share slices in one epoch"
        assert set(flat) <= set(range(n))
    # world_size 1 is the single-process stream, unchanged
    one = _BatchStream(ds, bs, seed=3)
    assert one._batches(1) == _BatchStream(ds, bs, seed=3, rank=0, world_size=1)._batches(1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3 * 7919 + 1 * 104729 + 17)).tolist()
    assert [i for b in one._batches(1) for i, _ in b] == (perm[: n - n % bs] if n >= bs else perm)


def test_batch_stream_refuses_another_world_size():
    from src_training.errors import CheckpointError
    from src_training.training import _BatchStream

    state = _BatchStream(list(range(8)), 2, seed=0, rank=1, world_size=2).state_dict()
    assert state["world_size"] == 2
    with pytest.raises(CheckpointError, match="same number of processes"):
        _BatchStream(list(range(8)), 2, seed=0).load_state_dict(state)


def test_amp_config_field():
    from src_training.config import TrainConfig
    from src_training.errors import ConfigError
    from src_training.training import _amp_dtype

    assert TrainConfig().amp is False
    assert TrainConfig.from_dict({"amp": True}).amp is True
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"amp": "yes"})
    assert _amp_dtype(torch.device("cpu"), True) is None  # fp32 on the CPU


# ----------------------------------------------------------------------------------------- 2 processes


def _launch(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _write_npz_config(out: Path) -> Path:
    """A 2-slice 48-px CT (.npz with boxes) and a baseline config training on it; returns the config path."""
    size = 48
    hu = np.full((2, size, size), -800.0, np.float32)
    hu[:, 6:42, 6:42] = 30.0
    hu[:, 14:24, 16:28] = 120.0
    src = out / "case.npz"
    np.savez(src, hu=hu, spacing=np.array([2.0, 0.7, 0.7]),
             boxes=np.array([[0, 16, 14, 28, 24], [1, 16, 14, 28, 24]], np.float32))
    cfg = dict(denoiser="cpce", baseline_steps=2, batch_size=1, device="cpu", checkpoint_every=0,
               train_data=[str(src)], n0=1e4, lr_denoiser=1e-3)
    (out / "config.json").write_text(json.dumps(cfg))
    return out / "config.json"


def _worker(out: Path) -> None:
    """Runs in each of the 2 processes: a full LIDnet run (T1, T2, T3), then a run stopped by rank 1 alone
    mid-T2 and resumed from trainer_state.pt; saves this rank's weights, events and data shard. Then
    ``run_training`` (the ``lidnet train`` path) of ``out/config.json`` into ``out/cli_run``, where a STOP
    file waits (the CLI test resumes it)."""
    torch.set_num_threads(1)
    from test_training import make_case, small_denoiser, small_detector, tiny_config

    from src_training.config import TrainConfig
    from src_training.data import SliceDataset
    from src_training.distributed import get_context, shutdown_distributed
    from src_training.training import CollaborativeTrainer, run_training

    ds = SliceDataset([make_case(n_slices=4, size=64)], crop_size=48, seed=0)
    cfg = tiny_config(t1=1, t2=2, t3=1, batch_size=1, checkpoint_every=0)

    def trainer(run_dir):
        torch.manual_seed(123)  # the prebuilt networks start equal in the full and the stopped run
        return CollaborativeTrainer(cfg, ds, denoiser=small_denoiser(), detector=small_detector(), run_dir=run_dir)

    def weights(t):
        return {f"den.{k}": v for k, v in t.denoiser.state_dict().items()} | {
            f"det.{k}": v for k, v in t.detector.state_dict().items()}

    full = trainer(out / "full")
    rank = get_context().rank
    full_events = [(e.event, e.phase, e.step, e.global_step) for e in full.train_all()]
    part = trainer(out / "part")
    part_events = []
    for ev in part.run():
        part_events.append((ev.event, ev.phase, ev.step, ev.global_step))
        if ev.event == "step" and ev.global_step == 2 and rank == 1:  # mid T2; only rank 1 asks
            part.request_stop()
    resumed = trainer(out / "part")
    resumed.resume(out / "part" / "trainer_state.pt")
    rest_events = [(e.event, e.phase, e.step, e.global_step) for e in resumed.train_all()]
    torch.save({
        "world_size": get_context().world_size,
        "full": weights(full), "resumed": weights(resumed),
        "full_events": full_events, "part_events": part_events, "rest_events": rest_events,
        "shard": [i for b in full._stream._batches(0) for i, _ in b],
    }, out / f"rank{rank}.pt")
    run_training(TrainConfig.load_json(out / "config.json"), out / "cli_run", method="baseline", verbose=False)
    shutdown_distributed()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """One launch of :func:`_worker` in 2 processes (gloo); returns its output folder."""
    out = tmp_path_factory.mktemp("dist")
    _write_npz_config(out)
    (out / "cli_run").mkdir()
    (out / "cli_run" / "STOP").touch()
    _launch([str(Path(__file__).resolve()), "--worker", str(out)], cwd=ROOT)
    return out


def test_two_processes_train_identical_replicas_and_resume(two_process_run):
    tmp_path = two_process_run
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world_size"] == r1["world_size"] == 2
    # each rank trained on its own half of the slices
    assert sorted(r0["shard"] + r1["shard"]) == [0, 1, 2, 3] and not set(r0["shard"]) & set(r1["shard"])
    # lockstep: same phases/steps on both ranks; the stop asked by rank 1 stopped both at step 2
    assert r0["full_events"] == r1["full_events"]
    assert [e[:2] for e in r0["full_events"] if e[0] == "phase_start"] == [
        ("phase_start", "T1"), ("phase_start", "T2"), ("phase_start", "T3")]
    assert r0["part_events"] == r1["part_events"] and r0["part_events"][-1][::3] == ("stopped", 2)
    assert r0["rest_events"] == r1["rest_events"] and r0["rest_events"][-1][0] == "done"
    # gradients (and BatchNorm statistics) averaged: identical weights on both ranks, and they moved
    keys = r0["full"].keys()
    assert keys == r1["full"].keys()
    for k in keys:
        assert torch.equal(r0["full"][k], r1["full"][k]), f"{k} differs between the ranks"
    from test_training import small_denoiser

    assert any(not torch.equal(r0["full"][f"den.{k}"], v) for k, v in small_denoiser().state_dict().items())
    # resume under 2 processes continues exactly
    for k in keys:
        assert torch.equal(r0["resumed"][k], r0["full"][k]), f"{k}: resumed run differs from the full run"
        assert torch.equal(r1["resumed"][k], r1["full"][k])
    # only rank 0 wrote progress.jsonl (one line per rank-0 event) and the checkpoints
    lines = [json.loads(x) for x in (tmp_path / "full" / "progress.jsonl").read_text().splitlines()]
    assert [(x["event"], x["phase"], x["step"], x["global_step"]) for x in lines] == [
        tuple(e) for e in r0["full_events"]]
    part_lines = [json.loads(x)["event"] for x in (tmp_path / "part" / "progress.jsonl").read_text().splitlines()]
    assert part_lines.count("stopped") == 1 and part_lines.count("done") == 1
    state = torch.load(tmp_path / "part" / "trainer_state.pt", weights_only=True)
    assert state["data"]["world_size"] == 2 and len(state["rng_ranks"]) == 2
    den = torch.load(tmp_path / "full" / "denoiser.pt", weights_only=True)
    assert all(torch.equal(den["state_dict"][k], r0["full"][f"den.{k}"]) for k in den["state_dict"])


def test_cli_under_torchrun_stop_file_and_resume(two_process_run):
    """``run_training`` under 2 processes stopped at step 0 by a STOP file present at the start (state
    saved, STOP removed); ``torchrun -m src_training train --resume`` under 2 processes then trains to the
    end. The MAE baseline keeps this CPU-fast; the LIDnet phases are the test above."""
    out = two_process_run
    run = out / "cli_run"
    assert not (run / "STOP").exists()
    events = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["phase_start", "stopped"] and events[-1]["global_step"] == 0
    _launch(["-m", "src_training", "train", "--config", str(out / "config.json"), "--out", str(run),
             "--method", "baseline", "--resume", str(run / "trainer_state.pt")], cwd=out)
    events = [json.loads(x) for x in (run / "progress.jsonl").read_text().splitlines()]
    assert [(e["event"], e["global_step"]) for e in events] == [
        ("phase_start", 0), ("stopped", 0), ("phase_start", 0), ("step", 1), ("step", 2), ("done", 2)]
    assert "resumed" in events[2]["message"]
    assert torch.load(run / "denoiser.pt", weights_only=True)["step"] == 2
    assert torch.load(run / "trainer_state.pt", weights_only=True)["data"]["world_size"] == 2


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
