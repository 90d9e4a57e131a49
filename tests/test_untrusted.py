"""Untrusted files: a checkpoint whose pickle would run code is refused everywhere it can be opened, without
running the payload; a static scan keeps eval/exec, os.system, shell=True and unsafe unpickling out of the
source tree.

Run the widget test under Xvfb: ``xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m pytest ...``.
"""

from __future__ import annotations

import ast
import builtins
import os
import pickle
from pathlib import Path

import pytest
import torch

from src_training.checkpoint import load_checkpoint
from src_training.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("src_training", "napari_lidnet")


# ----------------------------------------------------------------------------------------- crafted files


class _SystemPayload:
    """Unpickling this calls ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _ExecPayload:
    """Unpickling this calls ``exec(...)``, which creates MARKER."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _evil_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Checkpoints that look like napari-lidnet files but carry a payload (torch zip format and raw pickle)."""
    files = {}
    sd = {"w": torch.ones(2)}
    files["denoiser_system.pt"] = folder / "denoiser_system.pt"
    torch.save({"kind": "denoiser", "model": "cpce", "state_dict": sd, "config": {"hu_range": [-1024, 1024]},
                "method": "lidnet", "step": 1, "x": _SystemPayload(marker)}, files["denoiser_system.pt"])
    files["detector_exec.pt"] = folder / "detector_exec.pt"
    torch.save({"kind": "detector", "backbone": "resnet18", "state_dict": sd, "step": 1,
                "hparams": _ExecPayload(marker)}, files["detector_exec.pt"])
    files["raw_pickle.pt"] = folder / "raw_pickle.pt"
    files["raw_pickle.pt"].write_bytes(pickle.dumps({"kind": "denoiser", "state_dict": _SystemPayload(marker)}))
    return files


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    folder = tmp_path / "downloads"
    folder.mkdir()
    return _evil_files(folder, marker), marker


def test_the_crafted_payloads_are_live(tmp_path):
    """Sanity check of the test itself: an unsafe ``torch.load`` of these files does run the payload."""
    for name in ("denoiser_system.pt", "detector_exec.pt"):
        marker = tmp_path / f"ran_{name}"
        files = _evil_files(tmp_path, marker)
        torch.load(files[name], weights_only=False)
        assert marker.exists()


def test_load_checkpoint_refuses_code_without_running_it(evil):
    files, marker = evil
    for name, path in files.items():
        with pytest.raises(CheckpointError, match="Refused to load checkpoint") as info:
            load_checkpoint(path)
        msg = str(info.value)
        assert str(path) in msg and "Nothing in it was executed" in msg
        assert "weights_only=False" not in msg  # torch's unsafe advice is not passed on
        assert not marker.exists(), f"payload ran while loading {name}"
    assert "posix.system" in str(pytest.raises(CheckpointError, load_checkpoint, files["denoiser_system.pt"]).value)


def test_inference_loaders_and_detector_builder_refuse(evil):
    from src_training.inference import load_denoiser, load_detector
    from src_training.models.detector import build_detector

    files, marker = evil
    for path in files.values():
        with pytest.raises(CheckpointError, match="Refused"):
            load_denoiser(path, device="cpu")
        with pytest.raises(CheckpointError, match="Refused"):
            load_detector(path, device="cpu")
    with pytest.raises(CheckpointError, match="Refused"):
        build_detector("resnet18", weights_path=files["detector_exec.pt"])  # config.detector_weights path
    assert not marker.exists()


def test_trainer_resume_refuses(evil, tmp_path):
    from src_training.checkpoint import save_checkpoint
    from src_training.training import _TrainerBase

    files, marker = evil
    # resume() loads the state first; the refusal comes before any network is touched
    trainer = object.__new__(_TrainerBase)
    with pytest.raises(CheckpointError, match="Refused"):
        _TrainerBase.resume(trainer, files["raw_pickle.pt"])
    assert not marker.exists()
    # a safe file is accepted by the same path up to the kind check
    ok = save_checkpoint(tmp_path / "x.pt", {"kind": "denoiser", "state_dict": {"w": torch.ones(1)}})
    with pytest.raises(CheckpointError, match="not a trainer state"):
        _TrainerBase.resume(trainer, ok)


def test_widgets_refuse_the_checkpoint_with_a_notification(make_napari_viewer, evil, notifications, sync_mode):
    pytest.importorskip("napari")
    import numpy as np

    from napari_lidnet._widgets.denoise import DenoiseWidget
    from napari_lidnet._widgets.detect import DetectWidget

    files, marker = evil
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 32, 32), np.float32), name="LDCT")
    n_layers = len(viewer.layers)

    den = DenoiseWidget(viewer)
    den.checkpoint.value = files["denoiser_system.pt"]
    assert den.ckpt_info.value.startswith("unreadable: Refused")  # shown as soon as it is chosen
    den.run()
    det = DetectWidget(viewer)
    det.checkpoint.value = files["detector_exec.pt"]
    det.run()

    assert len(viewer.layers) == n_layers  # nothing added
    errors = [str(n.message) for n in notifications.errors()]
    assert any(m.startswith("Denoise: Refused to load checkpoint") for m in errors), errors
    assert any(m.startswith("Detect lesions: Refused to load checkpoint") for m in errors), errors
    assert isinstance(den.runner.last_error, CheckpointError) and isinstance(det.runner.last_error, CheckpointError)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------- static scan

SUBPROCESS_FUNCS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""  # e.g. model.to(dev).eval(): a method of a computed object
    parts.append(node.id)
    return ".".join(reversed(parts))


def _kw(call: ast.Call, name: str):
    return next((k.value for k in call.keywords if k.arg == name), None)


def scan_source(text: str, filename: str = "<src>") -> list[str]:
    """Unsafe calls in Python source: eval/exec, os.system/popen, subprocess with a shell or a command
    string, pickle loads, torch.load without weights_only=True, numpy loads with allow_pickle=True."""
    problems = []
    tree = ast.parse(text, filename)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        where = f"{filename}:{node.lineno}"
        if name in ("eval", "exec", "builtins.eval", "builtins.exec", "compile", "__import__"):
            problems.append(f"{where}: {name}()")
        elif name in ("os.system", "os.popen") or name.startswith(("os.spawn", "os.exec")):
            problems.append(f"{where}: {name}()")
        elif name.startswith("subprocess.") and name.split(".")[-1] in SUBPROCESS_FUNCS or name in SUBPROCESS_FUNCS - {"run", "call"}:
            shell = _kw(node, "shell")
            if shell is not None and not (isinstance(shell, ast.Constant) and shell.value is False):
                problems.append(f"{where}: {name}(shell=...)")
            args = node.args[0] if node.args else _kw(node, "args")
            if isinstance(args, (ast.Constant, ast.JoinedStr, ast.BinOp)) or name.endswith(("getoutput", "getstatusoutput")):
                problems.append(f"{where}: {name}() with a command string (shell-style)")
        elif name in ("pickle.load", "pickle.loads", "cPickle.load", "dill.load", "joblib.load", "pickle.Unpickler"):
            problems.append(f"{where}: {name}()")
        elif name == "torch.load":
            wo = _kw(node, "weights_only")
            if not (isinstance(wo, ast.Constant) and wo.value is True):
                problems.append(f"{where}: torch.load without weights_only=True")
        elif name in ("np.load", "numpy.load"):
            ap = _kw(node, "allow_pickle")
            if ap is not None and not (isinstance(ap, ast.Constant) and ap.value is False):
                problems.append(f"{where}: {name}(allow_pickle=...)")
    return problems


def test_scanner_finds_unsafe_calls():
    bad = """
import os, subprocess, pickle, torch, numpy as np
eval(user_text)
exec(code)
os.system("rm -rf " + path)
subprocess.run(f"lidnet train {cfg}", shell=True)
subprocess.Popen("ls " + folder)
subprocess.check_output(["ls"], shell=flag)
pickle.loads(blob)
torch.load(path)
torch.load(path, weights_only=False)
np.load(path, allow_pickle=True)
"""
    found = scan_source(bad)
    assert len(found) == 11, found
    good = """
import subprocess, torch, numpy as np
model.eval()
model.to(dev).eval()
subprocess.Popen([sys.executable, "-m", "src_training", "train", "--config", str(cfg)], shell=False)
torch.load(path, map_location="cpu", weights_only=True)
np.load(path)
"""
    assert scan_source(good) == []


def test_source_tree_has_no_eval_exec_shell_or_unsafe_unpickling():
    files = [p for d in SOURCE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(files) > 20
    problems = []
    for p in files:
        problems += scan_source(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    assert problems == [], "\n".join(problems)
