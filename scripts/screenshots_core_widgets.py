"""Screenshots of what a newcomer sees in ``lidnet gui``: napari with the sample chest CT lung2 and the
"LIDnet workbench" dock, one screenshot per tab, each run with the models that come with the plugin.

The viewer is opened exactly as ``lidnet gui`` opens it (:func:`napari_lidnet._launch.open_viewer`:
maximised window, the workbench docked on the right, samples lung2 NDCT + lesion boxes + LDCT N0=1000).
Then, on slice ``--slice`` (one with a lesion box), through the workbench's tabs:

=============== ================================================================================
start.png       the viewer as it opens, Start tab (open buttons, CT window, next-step hint)
simulate.png    Simulate tab, NDCT chosen, N0 = 1000 on the current slice, noise sigma in HU
denoise.png     Denoise tab: the LDCT denoised (whole volume) by the shipped CPCE baseline, then by
                the shipped CPCE LIDnet (shown)
detect.png      Detect tab: the shipped Faster R-CNN NDCT detector on the LIDnet output (current
                slice), boxes with their scores, RPN top-K, framed on the lesion box and detections
compare.png     Compare tab: LDCT / baseline / LIDnet vs NDCT, metrics table, side-by-side grid
radiomics.png   Radiomics tab after a measurement at the centre of the slice's first lesion box
train.png       Train tab showing its default preset (no training is started)
=============== ================================================================================

Each file is the whole window (``viewer.screenshot(canvas_only=False)``), downscaled to ``--width`` pixels
and saved as a 256-colour PNG. The models are the shipped files of ``src_training/weights`` (or
``$LIDNET_WEIGHTS``); the script stops with a message when one is missing. Widget work runs synchronously
(``LIDNET_SYNC=1``), remembered checkpoint choices go to a temporary ``LIDNET_CONFIG_DIR`` (the user's own
are neither read nor changed). A tab whose page is wider than the dock (it scrolls sideways, so part of
it is cut off in the screenshot) is reported with a ``note:`` line. On a fresh clone the sample LDCT is
simulated first (cached in ``sample_data/.cache``, or ``$LIDNET_CACHE_DIR``; a few minutes on a CPU, once).

Run under a virtual X server of the size of the screenshots (about 1 to 2 minutes on 2 CPU cores once the
LDCT is cached):

    OMP_NUM_THREADS=2 QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1920x1080x24" \\
        .venv/bin/python scripts/screenshots_core_widgets.py [--out docs/screenshots] [--slice 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("LIDNET_SYNC", "1")  # run the widgets' work synchronously: deterministic screenshots
os.environ.setdefault("LIDNET_CONFIG_DIR", tempfile.mkdtemp(prefix="lidnet-shots-config-"))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import napari_lidnet  # noqa: E402,F401  (crash guard before torch/torchvision; see its docstring)

#: The shipped models used, by the name the checkpoint lists show (src_training/weights/*.json).
LIDNET_DENOISER = "CPCE LIDnet (shipped, demo recipe)"
BASELINE_DENOISER = "CPCE baseline (shipped, demo recipe)"
DETECTOR = "Faster R-CNN NDCT detector (shipped)"


class ScreenshotError(RuntimeError):
    """Something the screenshots need is missing (shipped model, sample layer, workbench)."""


def _palette_image(im, colours: int = 32, saturation: int = 40):
    """``im`` (RGB) with a 256-entry palette: up to ``colours`` entries for the coloured pixels (boxes,
    detections, highlighted buttons: channel spread > ``saturation``), the rest for the greys (the CT and
    napari's dark theme). One palette for both would turn the thin coloured boxes grey on a noisy CT, or
    band the smooth greys of a denoised image."""
    import numpy as np
    from PIL import Image

    flat = np.asarray(im.convert("RGB")).reshape(-1, 3)
    spread = flat.max(axis=1).astype(np.int16) - flat.min(axis=1)
    palette: list[int] = []
    for pixels, n in ((flat[spread > saturation], colours), (flat[spread <= saturation], None)):
        n = 256 - len(palette) // 3 if n is None else n
        n = min(n, len(np.unique(pixels, axis=0))) if len(pixels) else 0
        if n:
            q = Image.fromarray(pixels[None]).quantize(colors=n, method=Image.Quantize.MEDIANCUT,
                                                       dither=Image.Dither.NONE)
            palette += q.getpalette()[: 3 * n]
    holder = Image.new("P", (1, 1))
    holder.putpalette(palette + [0] * (768 - len(palette)))
    return im.convert("RGB").quantize(palette=holder, dither=Image.Dither.NONE)


def _save(viewer, path: Path, width: int = 1400) -> Path:
    """Screenshot of the whole window, downscaled to ``width`` pixels, as a 256-colour PNG (about 100 to
    300 KB)."""
    from PIL import Image

    img = viewer.screenshot(canvas_only=False, flash=False)
    im = Image.fromarray(img[..., :3])
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im = _palette_image(im)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, optimize=True)
    print(f"{path}: {img.shape[1]}x{img.shape[0]} window, {path.stat().st_size / 1024:.0f} KB", flush=True)
    return path


def pump(seconds: float = 0.4) -> None:
    """Process Qt events for ``seconds`` (layout, repaint, queued callbacks)."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while True:
        QApplication.processEvents()
        if time.monotonic() >= end:
            break
        time.sleep(0.01)


def _check_shipped() -> None:
    """Stop with a clear message when a shipped model the screenshots use is missing."""
    from src_training.shipped import shipped_models, weights_dir

    names = {m.name for m in shipped_models()}
    missing = [n for n in (LIDNET_DENOISER, BASELINE_DENOISER, DETECTOR) if n not in names]
    if missing:
        raise ScreenshotError(
            f"The shipped model(s) {', '.join(repr(n) for n in missing)} are not in {weights_dir()} "
            f"(found: {', '.join(sorted(names)) or 'none'}). The screenshots show the shipped models; "
            "restore src_training/weights/ (git checkout) or point $LIDNET_WEIGHTS at a folder holding them."
        )


def _choose(chooser, name: str) -> None:
    """Select the entry called ``name`` in a :class:`CheckpointChooser`."""
    entry = next((e for e in chooser.entries if e.label == name), None)
    if entry is None:
        raise ScreenshotError(f"'{name}' is not offered by the checkpoint list "
                              f"(offered: {', '.join(e.label for e in chooser.entries)}).")
    chooser.combo.value = entry.path


def _workbench(viewer):
    from napari_lidnet._launch import PLUGIN, WORKBENCH

    key = f"{WORKBENCH} ({PLUGIN})"
    docks = viewer.window.dock_widgets
    if key not in docks:
        raise ScreenshotError(f"'lidnet gui' docked no '{WORKBENCH}' (docks: {', '.join(docks)}).")
    return docks[key]


def _layer(viewer, test, what: str):
    for lyr in viewer.layers:
        if test(lyr):
            return lyr
    raise ScreenshotError(f"No {what} layer in the viewer (layers: {', '.join(ly.name for ly in viewer.layers)}).")


def _show_only(viewer, *layers) -> None:
    """Show ``layers``, hide the others (by name: the widgets hold proxies of the viewer's layers)."""
    names = {getattr(x, "name", None) for x in layers if x is not None}
    for lyr in viewer.layers:
        lyr.visible = lyr.name in names


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


def _frame(viewer, world_points, margin: float = 0.6, max_zoom: float = 2.5) -> None:
    """Centre the (reset) view on the in-plane bounding box of ``world_points`` and zoom in so that it fills
    about ``1 - margin`` of the canvas, at most ``max_zoom`` times the whole-image view."""
    import numpy as np

    pts = np.asarray([np.asarray(p, dtype=float)[-2:] for p in world_points])
    if not len(pts):
        return
    cam = _camera(viewer)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = viewer.layers.extent.world[1][-2:] - viewer.layers.extent.world[0][-2:]
    fill = float(np.min(extent / np.maximum(hi - lo, 1e-6))) * (1 - margin)
    cam.center = tuple((lo + hi) / 2)
    cam.zoom = cam.zoom * min(max(fill, 1.0), max_zoom)


def _note_clipped_page(wb) -> None:
    """Print a note when the current tab's page is wider than the dock (it then scrolls sideways and its
    right-hand part is cut off in the screenshot): a layout defect of that page, not of this script."""
    from qtpy.QtWidgets import QScrollArea

    page = wb.tabs.currentWidget()
    area = page if isinstance(page, QScrollArea) else page.findChild(QScrollArea)
    bar = area.horizontalScrollBar() if area is not None else None
    if bar is not None and bar.isVisible() and bar.maximum() > 0:
        title = wb.tabs.tabText(wb.tabs.currentIndex())
        print(f"note: the {title} page is {bar.maximum()} px wider than the dock ({area.viewport().width()} px): "
              "it scrolls sideways, its right-hand part is cut off", flush=True)


def _go_to_slice(viewer, layer, z: int) -> None:
    viewer.dims.set_point(0, float(layer.data_to_world([z, 0, 0])[0]))


def main(argv: list[str] | None = None) -> int:
    """Build the screenshots; returns 0 (1 with a message when something they need is missing)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "screenshots"), help="folder of the PNG files")
    p.add_argument("--slice", type=int, default=10, help="slice of lung2 shown (one with a lesion box)")
    p.add_argument("--width", type=int, default=1400, help="width of the saved PNGs (pixels)")
    args = p.parse_args(argv)
    out = Path(args.out)
    t0 = time.monotonic()
    try:
        _check_shipped()
        _run(out, args.slice, args.width)
    except ScreenshotError as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 1
    print(f"done in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


def _run(out: Path, z: int, width: int) -> None:
    from napari_lidnet._boxes import boxes_on_slice
    from napari_lidnet._launch import open_viewer
    from napari_lidnet._reader import restore_reader_preference
    from napari_lidnet._sample_data import sample_ldct_pending

    def save(name: str) -> None:
        pump()
        _note_clipped_page(wb)
        _save(viewer, out / name, width)

    viewer = open_viewer(show=True)  # exactly what `lidnet gui` does
    try:
        t = time.monotonic()
        while sample_ldct_pending():  # cold cache without LIDNET_SYNC: simulated in the background
            pump(0.5)
        wb = _workbench(viewer)
        ndct = _layer(viewer, lambda ly: ly.name.endswith("NDCT") and ly._type_string == "image", "NDCT")
        boxes = _layer(viewer, lambda ly: (ly.metadata or {}).get("kind") == "reference boxes", "lesion boxes")
        ldct = _layer(viewer, lambda ly: "LDCT" in ly.name and ly._type_string == "image", "sample LDCT")
        print(f"viewer open with {', '.join(ly.name for ly in viewer.layers)} ({time.monotonic() - t:.0f} s)")
        _go_to_slice(viewer, ndct, z)
        pump()
        viewer.reset_view()

        # 1) the viewer as it opens: Start tab
        wb.show_step("Start")
        save("start.png")

        # 2) Simulate: NDCT chosen, current slice at N0 = 1000, noise sigma in the status line
        wb.show_step("Simulate")
        sim = wb.pages["Simulate"]
        if sim.image.value is not ndct:
            raise ScreenshotError(f"Simulate chose '{getattr(sim.image.value, 'name', None)}', not the NDCT.")
        sim.scope.value = "current slice"
        t = time.monotonic()
        sim.run()
        sim_layer = _layer(viewer, lambda ly: ly.name == f"LDCT N0={sim.n0_value:g} slice {z}", "simulated slice")
        print(f"simulate (1 slice): {time.monotonic() - t:.1f} s; {sim.status.value}")
        _show_only(viewer, ndct, sim_layer, boxes)
        viewer.layers.selection.active = sim_layer
        save("simulate.png")
        # the one-slice LDCT is not needed further: the later steps use the whole-volume sample LDCT
        viewer.layers.remove(sim_layer)

        # 3) Denoise the LDCT (whole volume) with the shipped baseline, then the shipped LIDnet
        wb.show_step("Denoise")
        den = wb.pages["Denoise"]
        den.image.value = ldct
        den.scope.value = "whole volume"
        denoised = {}
        for role, name in (("baseline", BASELINE_DENOISER), ("lidnet", LIDNET_DENOISER)):
            _choose(den.checkpoint, name)
            t = time.monotonic()
            den.run()
            denoised[role] = _layer(
                viewer, lambda ly, p=str(den.checkpoint.value): (ly.metadata or {}).get("checkpoint") == p
                and (ly.metadata or {}).get("denoised_from") == ldct.name, f"{role} output")
            print(f"denoise {role} (whole volume): {time.monotonic() - t:.1f} s; {den.status.value}")
        baseline, lidnet = denoised["baseline"], denoised["lidnet"]
        _show_only(viewer, lidnet, boxes)
        viewer.layers.selection.active = lidnet
        save("denoise.png")

        # 4) Detect on the LIDnet output (current slice) with the shipped NDCT Faster R-CNN
        wb.show_step("Detect")
        det = wb.pages["Detect"]
        det.image.value = lidnet
        _choose(det.checkpoint, DETECTOR)
        det.scope.value = "current slice"
        t = time.monotonic()
        det.run()
        print(f"detect (1 slice): {time.monotonic() - t:.1f} s; {det.status.value}")
        _show_only(viewer, lidnet, boxes, det.detections_layer, det.proposals_layer)
        viewer.layers.selection.active = det.detections_layer
        pump()
        viewer.reset_view()
        ref_boxes, _ = boxes_on_slice(boxes, ndct, z)
        _frame(viewer, [ndct.data_to_world([z, b[1] - 0.5, b[0] - 0.5]) for b in ref_boxes]
               + [ndct.data_to_world([z, b[3] - 0.5, b[2] - 0.5]) for b in ref_boxes]
               + [det.detections_layer.data_to_world(v) for sh in det.detections_layer.data for v in sh])
        save("detect.png")
        viewer.reset_view()

        # 5) Compare: LDCT / baseline / LIDnet vs NDCT, metrics on this slice, side by side
        wb.show_step("Compare")
        cmp = wb.pages["Compare"]
        cmp.set_layers(ldct=ldct, baseline=baseline, lidnet=lidnet, ndct=ndct, boxes=boxes)
        chosen = {k: getattr(v, "name", None) for k, v in cmp.chosen().items()}
        if None in chosen.values():
            raise ScreenshotError(f"Compare did not take every layer: {chosen}")
        t = time.monotonic()
        cmp.compute_btn.native.click()  # "Compute metrics", as a click does (synchronous with LIDNET_SYNC=1)
        if not cmp.results:
            raise ScreenshotError(f"Compare computed no metrics ({cmp.status.value}).")
        print(f"compare metrics: {time.monotonic() - t:.1f} s; columns {', '.join(cmp.results)}")
        _show_only(viewer, ldct, baseline, lidnet, ndct)
        cmp.side_btn.setChecked(True)  # side by side, as the button does
        pump()
        viewer.reset_view()
        save("compare.png")
        cmp.side_btn.setChecked(False)
        pump()

        # 6) Radiomics: a measurement at the centre of the slice's first lesion box
        wb.show_step("Radiomics")
        rad = wb.pages["Radiomics"]
        if not len(ref_boxes):
            raise ScreenshotError(f"Slice {z} of {ndct.name} has no lesion box; choose another --slice.")
        x0, y0, x1, y1 = (float(v) for v in ref_boxes[0])
        point = ndct.data_to_world([z, (y0 + y1) / 2 - 0.5, (x0 + x1) / 2 - 0.5])
        _show_only(viewer, ndct, boxes)
        t = time.monotonic()
        rad.measure_at(point)
        print(f"radiomics: {time.monotonic() - t:.1f} s; {len(rad.rows)} layer(s) measured")
        for lyr in viewer.layers:
            if lyr.name == "radiomics ROI" or lyr._type_string == "shapes" and "ROI" in lyr.name:
                lyr.visible = True
        viewer.layers.selection.active = ndct
        pump()
        viewer.reset_view()
        save("radiomics.png")

        # 7) Train: the form with its default preset (nothing is started)
        wb.show_step("Train")
        save("train.png")
    finally:
        viewer.close()
        restore_reader_preference()


if __name__ == "__main__":
    raise SystemExit(main())
