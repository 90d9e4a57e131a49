"""Open napari as a user would, load the sample, dock the CT window / Simulate / Denoise / Detect widgets,
run them, and save screenshots of the whole window into docs/screenshots/.

Run under a virtual X server (see tests/ and ../shared/reference/install-notes.md):

    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python scripts/screenshots_core_widgets.py \
        [--denoiser RUN/denoiser.pt] [--detector RUN/detector.pt] [--out docs/screenshots]

Without checkpoints, untrained tiny ones are created in a temporary folder (then the denoised image and
detections are meaningless; the screenshots still show the layout).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("LIDNET_SYNC", "1")  # run the widgets' work synchronously: deterministic screenshots

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import napari_lidnet  # noqa: E402,F401  (crash guard before torch/torchvision; see its docstring)


def _ensure_plugin() -> None:
    from npe2 import PluginManager, PluginManifest

    pm = PluginManager.instance()
    pm.discover()
    try:
        pm.get_manifest("napari-lidnet")
    except KeyError:
        pm.register(PluginManifest.from_file(ROOT / "napari_lidnet" / "napari.yaml"))


def _untrained(tmp: Path) -> tuple[Path, Path]:
    from src_training.checkpoint import save_checkpoint
    from src_training.models.denoisers import build_denoiser
    from src_training.models.detector import build_detector

    den = build_denoiser("redcnn")
    d = save_checkpoint(tmp / "denoiser.pt", {"kind": "denoiser", "model": "redcnn", "state_dict": den.state_dict(),
                                               "config": {"hu_range": [-1024.0, 1024.0]}, "method": "lidnet",
                                               "step": 0})
    det = build_detector("resnet18")
    k = save_checkpoint(tmp / "detector.pt", {"kind": "detector", "backbone": "resnet18",
                                              "state_dict": det.state_dict(), "hparams": det.hparams,
                                              "config": {"hu_range": [-1024.0, 1024.0]}, "step": 0})
    return d, k


def _save(viewer, path: Path, width: int = 1400) -> Path:
    from PIL import Image

    img = viewer.screenshot(canvas_only=False, flash=False)
    im = Image.fromarray(img[..., :3])
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im = im.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, optimize=True)
    print(f"{path}: {path.stat().st_size / 1024:.0f} KB")
    return path


def main(argv: list[str] | None = None) -> int:
    """Build the screenshots; returns 0."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--denoiser", default=None)
    p.add_argument("--detector", default=None)
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    p.add_argument("--slice", type=int, default=10)
    args = p.parse_args(argv)
    out = Path(args.out)

    import napari
    from qtpy.QtWidgets import QApplication

    _ensure_plugin()
    tmp = Path(tempfile.mkdtemp(prefix="lidnet-shots-"))
    den_ckpt, det_ckpt = args.denoiser, args.detector
    if den_ckpt is None or det_ckpt is None:
        d, k = _untrained(tmp)
        den_ckpt = den_ckpt or d
        det_ckpt = det_ckpt or k

    viewer = napari.Viewer(show=True, title="napari-lidnet")
    viewer.window._qt_window.resize(1800, 1050)
    viewer.open_sample("napari-lidnet", "lung2_ndct")
    viewer.open_sample("napari-lidnet", "lung2_ldct")
    ndct, boxes, ldct = viewer.layers[0], viewer.layers[1], viewer.layers[2]
    z_world = ndct.translate[0] + args.slice * ndct.scale[0]
    viewer.dims.set_point(0, z_world)

    def pump(n: int = 30) -> None:
        for _ in range(n):
            QApplication.processEvents()

    # 1) CT window + Simulate on the NDCT
    _, win = viewer.window.add_plugin_dock_widget("napari-lidnet", "CT window")
    _, sim = viewer.window.add_plugin_dock_widget("napari-lidnet", "Simulate low dose")
    sim.image.value = ndct
    sim.scope.value = "current slice"
    sim.run()
    win.layers.value = [ndct, ldct, viewer.layers[-1]]
    win.preset.value = "lung"
    ldct.visible = False
    viewer.layers[-1].visible = False
    viewer.layers.selection.active = boxes
    pump()
    viewer.reset_view()
    pump()
    _save(viewer, out / "window_simulate.png")

    # 2) Denoise the LDCT (current slice), grid view LDCT | denoised
    for lyr in list(viewer.layers):
        lyr.visible = False
    _, den = viewer.window.add_plugin_dock_widget("napari-lidnet", "Denoise")
    den.image.value = ldct
    den.checkpoint.set_path(den_ckpt)
    den.device.value = "auto"
    den.scope.value = "current slice"
    den.run()
    denoised = viewer.layers[-1]
    viewer.layers.selection.active = denoised
    ldct.visible = True
    denoised.visible = True
    viewer.grid.enabled = True
    viewer.grid.stride = 1
    pump()
    viewer.reset_view()
    pump()
    _save(viewer, out / "denoise.png")
    viewer.grid.enabled = False

    # 3) Detect on the denoised volume: detections + RPN top-K
    _, det = viewer.window.add_plugin_dock_widget("napari-lidnet", "Detect lesions")
    det.image.value = denoised
    det.checkpoint.set_path(det_ckpt)
    det.scope.value = "current slice"
    det.top_k.value = 3
    det.run()
    scores = sorted((float(x) for r in det.raw_results for x in r["scores"]), reverse=True)
    det.score_thresh.value = round(scores[min(4, len(scores) - 1)], 2) if scores else 0.5  # ~5 best boxes
    for lyr in viewer.layers:
        lyr.visible = lyr in (denoised, boxes, det.detections_layer, det.proposals_layer)
    viewer.layers.move(viewer.layers.index(boxes), len(viewer.layers) - 1)
    pump()
    viewer.reset_view()
    # zoom on the tumour: centre of its reference box on this slice
    b = [s for s in boxes.data if int(round(s[0, 0])) == args.slice]
    if b:
        c = boxes.data_to_world(b[0].mean(axis=0))
        viewer.camera.center = tuple(c[1:])
        viewer.camera.zoom = viewer.camera.zoom * 1.6
    pump()
    _save(viewer, out / "detect.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
