"""A radiologist's first minutes in the viewer (issue #11): the samples open at once on an empty cache (the
low-dose CT is simulated in a worker, never in the GUI thread), annotations stay above the images, and
reading problems come as the plugin's own plain messages.

Run under a virtual X server:
``xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python -m pytest tests/test_gui_startup.py``.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")

from src_training.sample import SampleCase  # noqa: E402

import napari_lidnet._sample_data as sd  # noqa: E402
from napari_lidnet._layer_order import keep_annotations_on_top  # noqa: E402
from napari_lidnet._reader import (  # noqa: E402
    FOLDER_PATTERN,
    NO_LAYERS,
    PLUGIN_NAME,
    napari_get_reader,
    prefer_plugin_reader,
    restore_reader_preference,
    read_ct,
)

PLUGIN = "napari-lidnet"


# ------------------------------------------------------------------------------------------- helpers
@pytest.fixture
def tiny_sample(tiny_ct, tmp_path, monkeypatch):
    """The samples on the tiny lung2 crop (4 x 64 x 64) with an empty simulation cache; the simulation is
    wrapped to record the thread it runs in and to wait for ``release`` (so a test can act while it runs)."""
    vol, boxes = tiny_ct
    monkeypatch.setattr(sd, "load_sample_case",
                        lambda name: SampleCase(name, vol, np.zeros(vol.hu.shape, np.uint8), boxes))
    monkeypatch.setenv("LIDNET_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LIDNET_SYNC", raising=False)
    monkeypatch.setattr(sd, "_JOB", None)  # no job left over by another test
    real = sd.cached_simulate_ldct

    class Rec:
        threads: list[threading.Thread] = []
        release = threading.Event()
        error: Exception | None = None

        @staticmethod
        def simulate(*args, **kwargs):
            Rec.threads.append(threading.current_thread())
            assert Rec.release.wait(60), "the test never released the simulation"
            if Rec.error is not None:
                raise Rec.error
            return real(*args, **kwargs)

    Rec.threads, Rec.release, Rec.error = [], threading.Event(), None
    monkeypatch.setattr(sd, "cached_simulate_ldct", Rec.simulate)
    yield Rec
    Rec.release.set()


def _wait_done(qtbot):
    qtbot.waitUntil(lambda: not sd.sample_ldct_pending(), timeout=60_000)


def _kinds(viewer):
    return [type(layer).__name__ for layer in viewer.layers]


def _keeper_connections(viewer) -> int:
    return sum(1 for cb in viewer.layers.events.inserted.callbacks
               if isinstance(cb, tuple) and cb[1] == "on_inserted" and "_Keeper" in repr(cb[0]))


def _assert_annotations_on_top(viewer):
    kinds = _kinds(viewer)
    images = [i for i, k in enumerate(kinds) if k == "Image"]
    notes = [i for i, k in enumerate(kinds) if k in ("Shapes", "Points")]
    assert not images or not notes or min(notes) > max(images), kinds


# ------------------------------------------------------------------------------------------- start-up
def test_samples_open_at_once_and_simulate_in_a_worker(make_napari_viewer, lidnet_manifest, tiny_sample,
                                                        qtbot, notifications):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "lung2_ndct")
    added = viewer.open_sample(PLUGIN, "lung2_ldct")  # empty cache: returns before simulating
    assert sd.sample_ldct_pending()
    assert [layer.metadata.get("lidnet_pending") for layer in added] == ["sample_ldct"]
    assert "lung2 LDCT N0=1000" not in [layer.name for layer in viewer.layers]
    assert sd._JOB.description() == "Simulating sample LDCT N0=1000: slice 0/4, estimating the time left"
    # opened again while it runs: no second simulation, still one placeholder
    viewer.open_sample(PLUGIN, "lung2_ldct")
    assert sum(1 for layer in viewer.layers if layer.metadata.get("lidnet_pending")) == 1
    _assert_annotations_on_top(viewer)

    tiny_sample.release.set()
    _wait_done(qtbot)
    names = [layer.name for layer in viewer.layers]
    assert "lung2 LDCT N0=1000" in names, names
    assert not any(layer.metadata.get("lidnet_pending") for layer in viewer.layers)
    ldct = viewer.layers["lung2 LDCT N0=1000"]
    assert ldct.data.shape == viewer.layers["lung2 NDCT"].data.shape
    assert not np.array_equal(ldct.data, viewer.layers["lung2 NDCT"].data)  # noise was added
    assert ldct.metadata["n0"] == 1000.0 and ldct.metadata["seed"] == 0
    # the simulation ran once, never in the GUI thread
    assert len(tiny_sample.threads) == 1
    assert tiny_sample.threads[0] is not threading.main_thread()
    _assert_annotations_on_top(viewer)  # the LDCT came last, below the lesion boxes
    assert any("is ready" in str(n.message) for n in notifications())
    assert not notifications.errors()

    # cached now: the next opening returns the image at once, without simulating
    again = viewer.open_sample(PLUGIN, "lung2_ldct")
    assert not sd.sample_ldct_pending() and len(tiny_sample.threads) == 1
    assert type(again[0]).__name__ == "Image" and np.array_equal(again[0].data, ldct.data)
    _assert_annotations_on_top(viewer)


def test_simulation_failure_is_a_plain_message(make_napari_viewer, lidnet_manifest, tiny_sample, qtbot,
                                               notifications):
    from src_training.errors import SimulationError

    viewer = make_napari_viewer()
    tiny_sample.error = SimulationError("The CT is larger than the scanner's field of view.")
    viewer.open_sample(PLUGIN, "lung2_ldct")
    tiny_sample.release.set()
    _wait_done(qtbot)
    assert len(viewer.layers) == 0  # the placeholder is gone, nothing else added
    [err] = [str(n.message) for n in notifications.errors()]
    assert err.startswith("Sample low-dose CT: The CT is larger than the scanner's field of view.")
    assert "Traceback" not in err and "SimulationError" not in err


# ------------------------------------------------------------------------------------------- layer order
def test_annotations_stay_above_images(make_napari_viewer):
    viewer = make_napari_viewer()
    img = np.zeros((4, 16, 16), np.float32)
    viewer.add_image(img, name="NDCT")
    viewer.add_shapes([np.array([[0, 2, 2], [0, 2, 8], [0, 8, 8], [0, 8, 2]])], shape_type="rectangle",
                      name="boxes")
    viewer.add_points(np.array([[0, 4, 4]]), name="ROI")
    viewer.add_image(img, name="LDCT")  # before: the new image would cover the boxes
    keep_annotations_on_top(viewer)
    keep_annotations_on_top(viewer)  # idempotent: one connection
    assert _keeper_connections(viewer) == 1
    assert [layer.name for layer in viewer.layers] == ["NDCT", "LDCT", "boxes", "ROI"]

    viewer.layers.selection.active = viewer.layers["boxes"]
    viewer.add_image(img, name="denoised")  # an image added last goes below the annotations
    assert [layer.name for layer in viewer.layers] == ["NDCT", "LDCT", "denoised", "boxes", "ROI"]
    assert viewer.layers.selection.active is viewer.layers["denoised"]  # napari selects the new layer
    viewer.layers.selection.active = viewer.layers["ROI"]
    viewer.add_labels(np.zeros((4, 16, 16), np.uint8), name="mask")  # not an image: left where it is
    viewer.layers.selection.active = viewer.layers["boxes"]
    viewer.layers.move(viewer.layers.index("boxes"), 0)  # the user may still move a layer by hand...
    assert viewer.layers[0].name == "boxes"
    viewer.add_image(img, name="simulated")  # ...until the next image comes
    names = [layer.name for layer in viewer.layers]
    # boxes and ROI go just above the top image, in their order; the labels layer keeps its place among the rest
    assert names == ["NDCT", "LDCT", "denoised", "mask", "simulated", "boxes", "ROI"], names
    assert viewer.layers.selection.active is viewer.layers["simulated"]
    _assert_annotations_on_top(viewer)


def test_progress_text_counts_slices_and_time_left(monkeypatch, tmp_path):
    clock = [100.0]
    monkeypatch.setattr(sd.time, "monotonic", lambda: clock[0])
    job = sd._LdctJob("lung2 LDCT N0=1000", {}, 20, tmp_path)
    assert job.progress_text() == "slice 0/20, estimating the time left"
    clock[0] = 136.0
    job.on_progress((2, 20, ""))  # 2 slices in 36 s: 18 s per slice, 18 to go
    assert job.description() == "Simulating sample LDCT N0=1000: slice 2/20, about 5 min left"
    clock[0] = 256.0  # two minutes later, no new slice yet: the estimate counts down
    job.on_progress((2, 20, ""))
    assert job.progress_text() == "slice 2/20, about 3 min left"
    clock[0] = 442.0
    job.on_progress((19, 20, ""))
    assert job.progress_text() == "slice 19/20, about 18 s left"
    job.on_progress((20, 20, ""))
    assert job.progress_text() == "slice 20/20, saving"


def test_layer_order_through_a_plugin_viewer_proxy(make_napari_viewer):
    from napari.utils._proxies import PublicOnlyProxy

    viewer = make_napari_viewer()
    keep_annotations_on_top(PublicOnlyProxy(viewer))  # what a dock widget is given
    keep_annotations_on_top(viewer)  # the same viewer: still one connection
    assert _keeper_connections(viewer) == 1
    viewer.add_shapes(name="boxes")
    viewer.add_image(np.zeros((8, 8), np.float32), name="CT")
    assert [layer.name for layer in viewer.layers] == ["CT", "boxes"]


def test_reorder_keeps_the_selection(make_napari_viewer):
    viewer = make_napari_viewer()
    img = np.zeros((8, 8), np.float32)
    viewer.add_shapes(name="boxes")
    viewer.add_image(img, name="CT")
    viewer.layers.selection = {viewer.layers["CT"], viewer.layers["boxes"]}
    keep_annotations_on_top(viewer)  # once immediately
    assert [layer.name for layer in viewer.layers] == ["CT", "boxes"]
    assert set(viewer.layers.selection) == {viewer.layers["CT"], viewer.layers["boxes"]}


# ------------------------------------------------------------------------------------------- reading
def _open_message(viewer, path, notifications):
    n = len(notifications.errors())
    assert napari_get_reader(str(path)) is read_ct
    assert viewer.open(str(path), plugin=PLUGIN) == []
    assert len(viewer.layers) == 0
    errors = [str(e.message) for e in notifications.errors()[n:]]
    assert len(errors) == 1, errors
    msg = errors[0]
    assert msg.startswith("Open CT: ")
    for leak in ("force=True", "Traceback", "Error:", "pydicom"):
        assert leak not in msg, msg
    return msg


def test_empty_and_non_ct_folders_give_plugin_messages(make_napari_viewer, lidnet_manifest, tmp_path,
                                                       notifications):
    viewer = make_napari_viewer()
    empty = tmp_path / "empty study"
    empty.mkdir()
    msg = _open_message(viewer, empty, notifications)
    assert "'empty study' is empty" in msg and str(empty) in msg
    assert msg.split("\n")[0] == "Open CT: The folder 'empty study' is empty."  # the toast's first line

    pics = tmp_path / "pictures"
    pics.mkdir()
    (pics / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    msg = _open_message(viewer, pics, notifications)
    assert "'pictures' holds no CT images" in msg and "a.png" in msg and str(pics) in msg

    (tmp_path / "cells.zarr").mkdir()
    assert napari_get_reader(str(tmp_path / "cells.zarr")) is None  # a zarr store is not ours

    vols = tmp_path / "volumes"
    vols.mkdir()
    (vols / "ct.nii.gz").write_bytes(b"")
    msg = _open_message(viewer, vols, notifications)
    assert "ct.nii.gz" in msg and "Open one of these files" in msg


def test_non_dicom_dcm_file_gives_plugin_message(make_napari_viewer, lidnet_manifest, tmp_path, notifications):
    viewer = make_napari_viewer()
    fake = tmp_path / "report.dcm"
    fake.write_text("Findings: 8 mm nodule, right upper lobe.\n")
    msg = _open_message(viewer, fake, notifications)
    assert msg.startswith("Open CT: report.dcm is not a DICOM image")
    assert "a text file" in msg and str(fake) in msg
    # in a folder: the core's message, in plain words
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "IM_1.dcm").write_bytes(np.random.default_rng(0).bytes(3000))
    msg = _open_message(viewer, folder, notifications)
    assert "IM_1.dcm" in msg and "not a readable DICOM file" in msg


def test_plain_words_and_toast_layout():
    from napari_lidnet._messages import plain_words, toast_text

    core = ("/x/IM_1.dcm is not a readable DICOM file (corrupt, truncated or another format): InvalidDicomError: "
            "File is missing DICOM File Meta Information header or the 'DICM' prefix is missing from the header. "
            "Use force=True to force reading.. Remove it from the folder or re-export the series.")
    text = plain_words(core)
    assert "force" not in text and "InvalidDicomError" not in text and ".." not in text
    assert text.endswith("from the header. Remove it from the folder or re-export the series.")
    laid = toast_text("Denoise: Not enough memory (2.5 GB needed). Close other programs, e.g. a browser.")
    assert laid == "Denoise: Not enough memory (2.5 GB needed).\nClose other programs, e.g. a browser."
    assert toast_text("Denoise: file x.pt is corrupt") == "Denoise: file x.pt is corrupt"


def test_prefer_plugin_reader(monkeypatch, tmp_path):
    import napari.settings as napari_settings
    from napari.plugins.utils import get_preferred_reader
    from napari.settings import NapariSettings

    settings = NapariSettings(config_path=None)  # never the user's settings file
    settings.plugins.extension2reader = {"*.nrrd": "other-plugin"}
    monkeypatch.setattr(napari_settings, "_SETTINGS", settings)
    prefer_plugin_reader()
    table = settings.plugins.extension2reader
    assert table["*.nrrd"] == "other-plugin"  # the user's choice is kept
    for pattern in ("*.dcm", "*.DCM", "*.ima", "*.IMA", "*.nii", "*.nii.gz", "*.mha", "*.mhd", FOLDER_PATTERN):
        assert table[pattern] == PLUGIN_NAME
    folder = tmp_path / "study"
    folder.mkdir()
    assert get_preferred_reader(str(folder)) == PLUGIN_NAME  # how napari looks a folder up
    assert get_preferred_reader(str(tmp_path / "ct.nii.gz")) == PLUGIN_NAME
    assert get_preferred_reader(str(tmp_path / "IM_0001.DCM")) == PLUGIN_NAME
    assert get_preferred_reader(str(tmp_path / "x.nrrd")) == "other-plugin"
    assert get_preferred_reader(str(tmp_path / "photo.png")) is None
    assert prefer_plugin_reader() == ()  # again: nothing changes
    assert settings.plugins.extension2reader == table
    settings.plugins.extension2reader = {**table, "*.png": "napari"}  # the user's change during the session
    restore_reader_preference()  # what lidnet gui does at exit: only the session's patterns go
    assert settings.plugins.extension2reader == {"*.nrrd": "other-plugin", "*.png": "napari"}


def test_prefer_plugin_reader_does_not_save(monkeypatch, tmp_path):
    import napari.settings as napari_settings
    from napari.settings import NapariSettings

    cfg = tmp_path / "settings.yaml"
    settings = NapariSettings(config_path=cfg)
    monkeypatch.setattr(napari_settings, "_SETTINGS", settings)
    before = cfg.read_text() if cfg.exists() else ""
    assert FOLDER_PATTERN in prefer_plugin_reader()
    after = cfg.read_text() if cfg.exists() else ""
    assert FOLDER_PATTERN not in after and after == before  # the session's preference is not saved
    restore_reader_preference()
    assert FOLDER_PATTERN not in settings.plugins.extension2reader


def test_reader_returns_nothing_to_add_on_failure(tmp_path, notifications):
    empty = tmp_path / "e"
    empty.mkdir()
    assert read_ct(str(empty)) == NO_LAYERS
    assert "'e' is empty" in str(notifications.errors()[-1].message)


def test_read_cached_ldct_never_simulates(tmp_path, monkeypatch):
    import src_training.simulation.cache as cache_mod
    from src_training.simulation.cache import cached_simulate_ldct, read_cached_ldct

    hu = np.full((2, 32, 32), -1000.0, np.float32)
    hu[:, 8:24, 8:24] = 40.0
    assert read_cached_ldct(hu, 1.0, 1000.0, seed=0, cache_dir=tmp_path) is None
    first = cached_simulate_ldct(hu, 1.0, 1000.0, seed=0, cache_dir=tmp_path, n_views=90)
    monkeypatch.setattr(cache_mod, "simulate_ldct", lambda *a, **k: pytest.fail("simulated"))
    assert np.array_equal(read_cached_ldct(hu, 1.0, 1000.0, seed=0, cache_dir=tmp_path, n_views=90), first)
    assert read_cached_ldct(hu, 1.0, 1000.0, seed=1, cache_dir=tmp_path, n_views=90) is None  # another key
    [path] = tmp_path.glob("ldct_*.npz")
    path.write_bytes(b"damaged")
    assert read_cached_ldct(hu, 1.0, 1000.0, seed=0, cache_dir=tmp_path, n_views=90) is None
