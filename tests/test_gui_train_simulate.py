"""Train presets, the training status line (seconds per step, time left), the loss plot's layout, and the
Simulate widget's input choice, N0 box, progress text and measured noise (issue #11, items 6 and 7).

The pace / ETA, progress-text, y-scale and legend tests need no Qt; the widget tests run under Xvfb
(``xvfb-run -a -s "-screen 0 1920x1080x24" ... pytest tests/test_gui_train_simulate.py``).
"""

from __future__ import annotations

import numpy as np
import pytest


# ------------------------------------------------------------------------------------ pace and ETA (no Qt)
def _fake_run(t2_s: float = 2.0, t3_s: float = 1.0, t2: int = 80, t3: int = 30, rounds: int = 3):
    """Progress events of a LIDnet run as ``progress.jsonl`` holds them: T2 steps cost ``t2_s`` s, T3 ``t3_s``."""
    total = rounds * (t2 + t3)
    events, g, el = [], 0, 0.0
    for r in range(1, rounds + 1):
        for phase, n, cost in (("T2", t2, t2_s), ("T3", t3, t3_s)):
            events.append(dict(event="phase_start", phase=phase, round=r, step=0, phase_steps=n, global_step=g,
                               total_steps=total, losses={}, elapsed_s=el))
            for k in range(1, n + 1):
                g += 1
                el += cost
                events.append(dict(event="step", phase=phase, round=r, step=k, phase_steps=n, global_step=g,
                                   total_steps=total, losses={"rec": 1.0}, elapsed_s=el))
    return events


def _upto(events, phase, rnd, step):
    i = next(i for i, e in enumerate(events)
             if e["event"] == "step" and (e["phase"], e["round"], e["step"]) == (phase, rnd, step))
    return events[: i + 1]


def test_pace_and_time_left_from_progress_events():
    from src_training.runs import run_pace

    events = _fake_run()
    assert run_pace([]) is None
    # one T2 step after its phase_start is enough for a pace; later phases are unknown yet: T2's pace
    p = run_pace(_upto(events, "T2", 1, 1))
    assert p.seconds_per_step == pytest.approx(2.0)
    assert p.remaining_s == pytest.approx((330 - 1) * 2.0)
    # in T3 of round 1 both paces are known: the rest is 20 T3 steps + 2 rounds of (80 x 2 s + 30 x 1 s)
    p = run_pace(_upto(events, "T3", 1, 10))
    assert (p.phase, p.round, p.step, p.phase_steps, p.global_step) == ("T3", 1, 10, 30, 90)
    assert p.seconds_per_step == pytest.approx(1.0)
    assert p.remaining_s == pytest.approx(20 * 1.0 + 2 * (80 * 2.0 + 30 * 1.0))
    # round 2, T2 step 60: 20 T2 steps + T3 + one more round
    p = run_pace(_upto(events, "T2", 2, 60))
    assert p.remaining_s == pytest.approx(20 * 2.0 + 30 * 1.0 + 80 * 2.0 + 30 * 1.0)
    assert p.text() == "T2 round 2: step 60/80 · 2.0 s/step · about 4 min left"
    assert run_pace(events).remaining_s == pytest.approx(0.0)


def test_pace_ignores_paused_time_and_other_events():
    from src_training.runs import run_pace

    events = _upto(_fake_run(t2_s=3.0), "T2", 1, 5)
    # a pause (elapsed_s excludes it) and a checkpoint between steps change nothing
    events += [dict(event="paused", phase="T2", round=1, step=5, phase_steps=80, global_step=5, total_steps=330,
                    elapsed_s=15.0),
               dict(event="checkpoint", phase="T2", round=1, step=5, phase_steps=80, global_step=5,
                    total_steps=330, elapsed_s=15.0),
               dict(event="step", phase="T2", round=1, step=6, phase_steps=80, global_step=6, total_steps=330,
                    elapsed_s=18.0)]
    p = run_pace(events)
    assert p.seconds_per_step == pytest.approx(3.0) and p.step == 6


@pytest.mark.parametrize("seconds,text", [(20, "under a minute"), (170, "about 3 min"), (4800, "about 1 h 20 min"),
                                          (3 * 86400, "about 3 days"), (float("nan"), "unknown")])
def test_format_duration(seconds, text):
    from src_training.runs import format_duration

    assert format_duration(seconds) == text


def test_simulate_progress_text():
    pytest.importorskip("magicgui")
    from napari_lidnet._widgets.simulate import progress_text

    assert progress_text(0, 20, 3.0) == "slice 1/20 …"
    assert progress_text(5, 20, 80.0) == "slice 5/20 · about 4 min left"  # 16 s per slice x 15 slices
    assert progress_text(20, 20, 300.0) == "slice 20/20 · finishing"


# ------------------------------------------------------------------------------------ loss plot (no Qt needed)
def _t2_series(n=60):
    xs = list(range(1, n + 1))
    base = dict(total=300.0, rec=290.0, roi=0.3, det=0.15, loss_classifier=0.05, loss_box_reg=0.04,
                loss_objectness=0.02, loss_rpn_box_reg=0.01)
    return {k: (xs, [v * (1 + 0.05 * np.sin(x)) for x in xs]) for k, v in base.items()}


@pytest.mark.parametrize("width", [420, 700])
def test_loss_legend_is_outside_the_axes(width):
    pytest.importorskip("qtpy")
    from napari_lidnet._widgets.loss_plot import build_loss_figure

    fig, ax, legend = build_loss_figure(_t2_series(), [("T2", 1, 0.0), ("T3", 1, 40.0)], 60, width, 320)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    lb, ab = legend.get_window_extent(r), ax.get_window_extent(r)
    assert lb.y1 <= ab.y0 or lb.x0 >= ab.x1, "the legend overlaps the plotting area"
    assert lb.x0 >= 0 and lb.x1 <= width and lb.y0 >= 0  # and it is inside the image
    assert [t.get_text() for t in legend.get_texts()].count("rpn_box_reg") == 1  # torchvision prefix dropped
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    assert ax.get_yscale() == "log" and "loss" in ax.get_ylabel() and "step" in ax.get_xlabel()


def test_loss_y_scale_follows_the_range():
    pytest.importorskip("qtpy")
    from napari_lidnet._widgets.loss_plot import choose_yscale

    assert choose_yscale([300.0, 0.1]) == "log"
    assert choose_yscale([300.0, 0.0, 0.01]) == "log"  # a zero box loss does not force a symlog axis
    assert choose_yscale([0.5, 0.2, 0.3]) == "linear"
    assert choose_yscale([-50.0, 0.1, 200.0]) == "symlog"
    assert choose_yscale([]) == "linear"


# ------------------------------------------------------------------------------------ Train widget (Qt)
@pytest.fixture
def train_form(make_napari_viewer, qtbot, monkeypatch):
    """A factory of Train widgets with the device detection replaced: ``make(device_type)``."""
    pytest.importorskip("pytestqt")
    import torch

    from napari_lidnet._widgets import train_form as tf
    from napari_lidnet._widgets.train import TrainWidget

    viewer = make_napari_viewer()

    def make(device_type: str):
        monkeypatch.setattr(tf, "auto_device", lambda pref="auto": torch.device(device_type))
        w = TrainWidget(viewer)
        qtbot.addWidget(w)
        return w

    return make


def test_preset_default_follows_the_device(train_form):
    from napari_lidnet._widgets.train_form import default_preset_name

    cpu = train_form("cpu")
    assert default_preset_name() == "CPU quick" and cpu.preset_name == "CPU quick"
    assert (cpu.denoiser_combo.currentText(), cpu.backbone_combo.currentText(), cpu.t1_spin.value(),
            cpu.t2_spin.value(), cpu.t3_spin.value(), cpu.rounds_spin.value(), cpu.size_spin.value(),
            cpu.crop_spin.value()) == ("cpce", "resnet18", 0, 80, 30, 3, 256, 128)
    assert "Estimated time: about" in cpu.preset_summary.text()
    gpu = train_form("cuda")
    assert gpu.preset_name == "paper"
    assert (gpu.denoiser_combo.currentText(), gpu.backbone_combo.currentText(), gpu.t1_spin.value(),
            gpu.t2_spin.value(), gpu.t3_spin.value(), gpu.batch_spin.value(), gpu.size_spin.value()) == (
        "redcnn", "resnet50", 4000, 4000, 2000, 8, 0)
    assert "GPU" in gpu.preset_summary.text()


def test_preset_values_reach_the_config_and_edits_make_it_custom(train_form, tmp_path):
    from src_training.experiment import DEMO_BUDGET
    from src_training.protocol import DETECTOR_FILE

    w = train_form("cpu")
    w.set_values(sample="lung1")
    cfg = w.build_config(tmp_path)
    demo = DEMO_BUDGET.config()
    for name in ("denoiser", "detector_backbone", "t1", "t2", "t3", "rounds", "batch_size", "crop_size",
                 "image_size", "lr_denoiser", "lesion_crop_fraction", "synthetic_nodules_per_slice", "data_seed"):
        assert getattr(cfg, name) == getattr(demo, name), name
    assert cfg.detector_weights.endswith(DETECTOR_FILE) and cfg.train_data == ["sample:lung1"]
    est = w.preset_summary.text()
    # an edit turns the choice into "custom"; the preset's other settings stay, the estimate follows the steps
    w.t2_spin.setValue(40)
    assert w.preset_name == "custom" and "custom (from CPU quick)" in w.preset_summary.text()
    assert w.preset_summary.text() != est and "Estimated time" in w.preset_summary.text()
    assert w.build_config(tmp_path).t2 == 40 and w.build_config(tmp_path).lesion_crop_fraction == 0.75
    # a backbone the shipped detector does not fit: no shipped weights, and the summary says so
    w.set_values(backbone="resnet50")
    assert w.build_config(tmp_path).detector_weights is None
    assert "starts untrained" in w.preset_summary.text() and "not estimated" in w.preset_summary.text()
    # choosing a preset again applies it whole and drops "custom"
    w.preset_combo.setCurrentText("paper")
    cfg = w.build_config(tmp_path)
    assert (cfg.denoiser, cfg.t1, cfg.t2, cfg.t3, cfg.batch_size, cfg.image_size, cfg.detector_weights,
            cfg.lesion_crop_fraction) == ("redcnn", 4000, 4000, 2000, 8, None, None, 0.0)
    assert [w.preset_combo.itemText(i) for i in range(w.preset_combo.count())] == ["CPU quick", "paper"]


def test_status_line_shows_pace_and_time_left(train_form):
    w = train_form("cpu")
    events = _upto(_fake_run(), "T2", 2, 60)
    w.state = "running"
    w._on_events((events, 0))
    text = w.status.text()
    assert "T2 round 2: step 60/80 · 2.0 s/step · about 4 min left" in text and "total 170/330" in text


# ------------------------------------------------------------------------------------ Simulate widget (Qt)
def _water_volume(nz: int = 2, n: int = 64) -> np.ndarray:
    """A water cylinder (40 HU) in air, (nz, n, n) float32 HU."""
    yy, xx = np.mgrid[:n, :n]
    disk = (yy - n / 2 + 0.5) ** 2 + (xx - n / 2 + 0.5) ** 2 < (0.4 * n) ** 2
    sl = np.where(disk, 40.0, -1000.0).astype(np.float32)
    return np.repeat(sl[None], nz, axis=0)


@pytest.fixture
def sim_viewer(make_napari_viewer):
    pytest.importorskip("pytestqt")
    viewer = make_napari_viewer()
    hu = _water_volume()
    ndct = viewer.add_image(hu, name="phantom NDCT", scale=(2.0, 0.7, 0.7), metadata={"spacing": (2.0, 0.7, 0.7)})
    return viewer, ndct


def test_simulate_defaults_to_the_ndct_layer(sim_viewer):
    from napari_lidnet._widgets.simulate import SimulateWidget, ndct_rank

    viewer, ndct = sim_viewer
    hu = np.asarray(ndct.data)
    viewer.add_image(hu + 1, name="phantom denoised", metadata={"denoised_from": "phantom NDCT"})
    ldct = viewer.add_image(hu + 5, name="LDCT N0=1000", metadata={"simulated_from": "phantom NDCT", "n0": 1000.0})
    assert viewer.layers[-1] is ldct  # the low-dose layer is on top
    w = SimulateWidget(viewer)
    assert w.image.value is ndct
    # a widget docked before the layers exist also ends on the NDCT when an LDCT is added after it
    viewer2_layers = [ly for ly in viewer.layers]
    for ly in viewer2_layers:
        viewer.layers.remove(ly)
    w2 = SimulateWidget(viewer)
    assert w2.image.value is None
    viewer.add_image(hu, name="scan")  # a CT opened from disk, not named NDCT
    first = viewer.add_image(hu, name="phantom NDCT")
    viewer.add_image(hu + 5, name="phantom LDCT N0=1000", metadata={"n0": 1000.0})
    assert w2.image.value is first
    # the user's own choice is kept when layers come and go
    w2.image.value = viewer.layers["scan"]
    viewer.add_image(hu, name="another NDCT")
    assert w2.image.value is viewer.layers["scan"]
    assert ndct_rank("lung2 NDCT", {}) > ndct_rank("scan", {}) > ndct_rank("scan", {"simulated_from": "x"})
    assert ndct_rank("LDCT", {}) == ndct_rank("Baseline (CPCE) denoised", {}) == 0


def test_simulate_uses_the_typed_n0_exactly(sim_viewer, sync_mode, monkeypatch):
    from src_training import simulation

    from napari_lidnet._widgets.simulate import SimulateWidget

    viewer, ndct = sim_viewer
    seen = {}

    def fake(hu, pixel_mm, n0, *, seed, first_index=0, progress=None, **kw):
        seen.update(n0=n0, seed=seed, pixel_mm=pixel_mm)
        if progress is not None:
            progress(len(hu), len(hu))
        return np.asarray(hu, np.float32) + 1.0

    monkeypatch.setattr(simulation, "simulate_ldct", fake)
    w = SimulateWidget(viewer)
    w.n0.value = 3000
    assert w.n0_value == 3000.0 and "N0 = 3000 photons per ray" in w.info.value
    w.scope.value = "current slice"
    w.run()
    assert seen["n0"] == 3000.0 and viewer.layers[-1].metadata["n0"] == 3000.0
    assert viewer.layers[-1].name.startswith("LDCT N0=3000")
    # the slider moves the box in round steps; the box moves the slider
    w.n0_slider.value = 2475.0
    assert w.n0.value == 2500.0
    w.n0.value = 12345
    assert w.n0_value == 12345.0 and w.n0_slider.value == pytest.approx(12345.0, rel=0.02)


def test_simulate_shows_measured_noise_and_progress(sim_viewer, sync_mode):
    from src_training.simulation import soft_tissue_noise_sigma

    from napari_lidnet._widgets.simulate import SimulateWidget

    viewer, ndct = sim_viewer
    w = SimulateWidget(viewer)
    messages = []
    real = w.runner._on_yield
    w.runner._on_yield = lambda item: (messages.append(item[2]), real(item))
    w.n0.value = 2000
    w.scope.value = "whole volume"
    w.use_cache.value = False
    w.run()
    new = viewer.layers[-1]
    sigma = soft_tissue_noise_sigma(np.asarray(ndct.data), np.asarray(new.data))
    assert np.isfinite(sigma) and sigma > 1.0
    assert new.metadata["noise_sigma_hu"] == pytest.approx(sigma)
    assert f"σ {sigma:.1f} HU" in w.status.value
    assert messages[0].endswith("slice 1/2 …") and any("slice 2/2" in m for m in messages)
