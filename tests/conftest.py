"""Shared fixtures of the napari-lidnet tests.

Nothing here imports napari or Qt at import time (the core's tests run without a GUI). GUI tests run
under a virtual X server: ``xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m pytest ...``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "napari_lidnet" / "napari.yaml"

#: Crop of the sample case lung2 used by the fast widget tests: 4 slices (4..7) x 64 x 64 around the tumour.
TINY_Z = (4, 8)
TINY_Y = (330, 394)
TINY_X = (320, 384)


@pytest.fixture(autouse=True)
def _private_user_config(tmp_path_factory, monkeypatch):
    """Every test gets its own user-config folder (``$LIDNET_CONFIG_DIR``: remembered checkpoints and run
    folders), so no test reads or writes the real home folder's settings."""
    monkeypatch.setenv("LIDNET_CONFIG_DIR", str(tmp_path_factory.mktemp("lidnet_config")))


@pytest.fixture(scope="session")
def lidnet_manifest():
    """The plugin's npe2 manifest, registered with npe2's plugin manager (needed when the package is used
    from a source checkout without ``pip install -e``)."""
    pytest.importorskip("npe2")
    from npe2 import PluginManager, PluginManifest

    mf = PluginManifest.from_file(MANIFEST)
    pm = PluginManager.instance()
    if _has_manifest(pm, mf.name):
        return pm.get_manifest(mf.name)
    pm.register(mf)
    return mf


def _has_manifest(pm, name: str) -> bool:
    try:
        pm.get_manifest(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="session")
def tiny_ct():
    """A small real CT: lung2 slices 4..7, 64 x 64 pixels around the tumour (CTVolume, HU, spacing mm) and
    its boxes clipped to the crop (dict slice -> (n, 4) xyxy pixels)."""
    from src_training.io import CTVolume
    from src_training.sample import load_sample_case

    case = load_sample_case("lung2")
    z0, z1 = TINY_Z
    y0, y1 = TINY_Y
    x0, x1 = TINY_X
    hu = np.ascontiguousarray(case.ndct.hu[z0:z1, y0:y1, x0:x1], dtype=np.float32)
    sp = case.ndct.spacing
    o = np.asarray(case.ndct.origin, dtype=float)
    origin = tuple(float(v) for v in o + np.array([x0 * sp[2], y0 * sp[1], z0 * sp[0]]))
    vol = CTVolume(hu=hu, spacing=sp, origin=origin, direction=case.ndct.direction,
                   metadata=dict(case.ndct.metadata), source="")
    boxes = {}
    for z, b in case.boxes.items():
        if z0 <= z < z1:
            bb = np.asarray(b, dtype=np.float32).copy()
            bb[:, [0, 2]] = np.clip(bb[:, [0, 2]] - x0, 0, x1 - x0)
            bb[:, [1, 3]] = np.clip(bb[:, [1, 3]] - y0, 0, y1 - y0)
            bb = bb[(bb[:, 2] > bb[:, 0]) & (bb[:, 3] > bb[:, 1])]
            if len(bb):
                boxes[z - z0] = bb
    return vol, boxes


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Untrained tiny checkpoints written with the core's ``save_checkpoint``: ``denoiser`` (CPCE, method
    lidnet), ``redcnn`` (RED-CNN, baseline) and ``detector`` (ResNet-18 Faster R-CNN). Returns a dict of paths."""
    import torch

    from src_training.checkpoint import save_checkpoint
    from src_training.models.denoisers import build_denoiser
    from src_training.models.detector import build_detector

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    cfg = {"hu_range": [-1024.0, 1024.0]}
    paths = {}
    cpce = build_denoiser("cpce")
    paths["denoiser"] = save_checkpoint(d / "denoiser.pt", {
        "kind": "denoiser", "model": "cpce", "state_dict": cpce.state_dict(),
        "config": dict(cfg, denoiser="cpce"), "method": "lidnet", "step": 0})
    red = build_denoiser("redcnn")
    paths["redcnn"] = save_checkpoint(d / "redcnn_baseline.pt", {
        "kind": "denoiser", "model": "redcnn", "state_dict": red.state_dict(),
        "config": dict(cfg, denoiser="redcnn"), "method": "baseline", "step": 0})
    det = build_detector("resnet18")
    ckpt = {"kind": "detector", "backbone": "resnet18", "state_dict": det.state_dict(),
            "config": dict(cfg, detector_backbone="resnet18"), "step": 0}
    hp = getattr(det, "hparams", None)
    if isinstance(hp, dict):
        ckpt["hparams"] = hp
    paths["detector"] = save_checkpoint(d / "detector.pt", ckpt)
    return paths


@pytest.fixture
def sync_mode(monkeypatch):
    """Run widget work synchronously (``LIDNET_SYNC=1``)."""
    monkeypatch.setenv("LIDNET_SYNC", "1")
    yield


@pytest.fixture
def notifications():
    """List of napari notifications dispatched during the test (napari's notification manager records)."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)

    class _View:
        def __call__(self):
            return notification_manager.records[start:]

        def errors(self):
            return [n for n in self() if str(getattr(n.severity, "value", n.severity)).lower() == "error"]

    return _View()


@pytest.fixture(scope="session")
def shared_ldct_cache(tmp_path_factory):
    """One simulation cache for every experiment test of the session (demo, reproduce, study): the fast
    budget's 4 native slices per case are simulated once."""
    return tmp_path_factory.mktemp("ldct_cache")
