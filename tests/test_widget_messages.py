"""Out-of-memory fallbacks of the Denoise and Detect widgets reach the user (issue #6).

The network call is patched to raise ``torch.OutOfMemoryError`` for batches of more than one slice (or
always), so the real fallback of :mod:`src_training.inference` runs: the batch is halved, each change is
shown as a napari warning notification and in the widget's status line (from the GUI thread even when the
work runs in a thread worker), and out-of-memory with one slice on the CPU ends as a readable error
notification (``InferenceMemoryError``), not a traceback. Tiny untrained checkpoints on a 4 x 64 x 64 crop of
the sample CT. Run under Xvfb (``xvfb-run -a -s "-screen 0 1920x1080x24"``).
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
torch = pytest.importorskip("torch")

from napari_lidnet._layers import image_layer_kwargs  # noqa: E402


@pytest.fixture
def viewer_ct(make_napari_viewer, tiny_ct):
    """Viewer with the tiny 4-slice CT as an image layer."""
    vol, _ = tiny_ct
    viewer = make_napari_viewer()
    layer = viewer.add_image(vol.hu, **image_layer_kwargs(vol, name="LDCT"))
    return viewer, layer


def _oom(n: int) -> Exception:
    return torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {n} GiB (simulated)")


class _OomAbove(torch.nn.Module):
    """Wraps a denoiser; raises ``torch.OutOfMemoryError`` for batches larger than ``limit`` slices and
    records every batch size it was called with (and the calling thread)."""

    def __init__(self, net, limit: int, calls: list, threads: set):
        super().__init__()
        self.net = net
        self.limit = limit
        self.calls = calls
        self.threads = threads

    def forward(self, x):
        self.calls.append(int(x.shape[0]))
        self.threads.add(threading.get_ident())
        if x.shape[0] > self.limit:
            raise _oom(x.shape[0])
        return self.net(x)


def _patch_denoiser(monkeypatch, limit: int):
    """Make the denoising network (the fast path's copy) run out of memory above ``limit`` slices."""
    import src_training.inference as inference

    calls: list[int] = []
    threads: set[int] = set()

    def fake_prepare(model, device=None, **_kw):
        return _OomAbove(model, limit, calls, threads)

    monkeypatch.setattr(inference, "prepare_denoiser", fake_prepare)
    return calls, threads


def _patch_detector(monkeypatch, limit: int):
    """Make the detector's fused pass run out of memory above ``limit`` slices."""
    import src_training.inference as inference

    real_load = inference.load_detector
    calls: list[int] = []

    def fake_load(path, device="auto"):
        det, cfg = real_load(path, device=device)
        real = det.detect_and_rpn

        def detect_and_rpn(x, k, score_thresh):
            calls.append(int(x.shape[0]))
            if x.shape[0] > limit:
                raise _oom(x.shape[0])
            return real(x, k, score_thresh)

        det.detect_and_rpn = detect_and_rpn
        return det, cfg

    monkeypatch.setattr(inference, "load_detector", fake_load)
    return calls


def _warnings(notifications):
    return [str(n.message) for n in notifications() if str(getattr(n.severity, "value", n.severity)).lower() == "warning"]


def _denoise_widget(viewer, layer, ckpt):
    from napari_lidnet._widgets.denoise import DenoiseWidget

    w = DenoiseWidget(viewer)
    w.image.value = layer
    w.checkpoint.set_path(ckpt)
    w.device.value = "cpu"
    w.scope.value = "whole volume"
    w.batch_size.value = 4
    return w


# ------------------------------------------------------------------------------------------- denoise
def test_denoise_oom_halves_batch_and_tells_user(viewer_ct, tiny_checkpoints, sync_mode, notifications, monkeypatch):
    from napari.utils.notifications import notification_manager
    from src_training.inference import denoise_volume, load_denoiser

    viewer, layer = viewer_ct
    calls, _ = _patch_denoiser(monkeypatch, limit=1)
    w = _denoise_widget(viewer, layer, tiny_checkpoints["denoiser"])
    n = len(viewer.layers)
    with notification_manager:  # napari's hooks as in `napari.run()`: Python warnings become notifications
        w.run()

    assert calls == [4, 2, 1, 1, 1, 1]  # 4 -> OOM, 2 -> OOM, then one slice at a time
    assert len(viewer.layers) == n + 1, [str(x.message) for x in notifications.errors()]
    warns = _warnings(notifications)
    assert len(warns) == 2, warns  # once each: the core's Python warning is not shown a second time
    assert warns[0].startswith("Denoise: Not enough memory on cpu for denoising 4 slices at a time")
    assert "continuing with 2 slice(s)" in warns[0]
    assert "continuing with 1 slice(s)" in warns[1]
    assert w.messages.messages == [m.removeprefix("Denoise: ") for m in warns]
    status = str(w.status.value)
    assert status.startswith("added 'LDCT · CPCE (LIDnet)") and "continuing with 1 slice(s)" in status
    assert not notifications.errors()
    # same result as the plain model on the whole volume
    model, cfg = load_denoiser(tiny_checkpoints["denoiser"], device="cpu")
    ref = denoise_volume(model, np.asarray(layer.data), tuple(cfg["hu_range"]), fast=False)
    assert np.allclose(viewer.layers[-1].data, ref, atol=1e-3)


def test_denoise_oom_message_crosses_to_gui_thread(viewer_ct, tiny_checkpoints, notifications, monkeypatch, qtbot):
    """With a real thread worker the model runs in another thread; the notification and the status line are
    still produced in the GUI thread."""
    from napari.utils.notifications import notification_manager

    from napari_lidnet._widgets.denoise import InferenceMessages

    monkeypatch.delenv("LIDNET_SYNC", raising=False)
    label_threads: list[int] = []
    real_show = InferenceMessages._show

    def show(self, message):  # the GUI side of the relay: notification + status line
        label_threads.append(threading.get_ident())
        real_show(self, message)

    monkeypatch.setattr(InferenceMessages, "_show", show)
    viewer, layer = viewer_ct
    _, model_threads = _patch_denoiser(monkeypatch, limit=2)
    seen: list[tuple[str, int]] = []

    def record(notification):
        seen.append((str(notification.message), threading.get_ident()))

    notification_manager.notification_ready.connect(record)
    try:
        w = _denoise_widget(viewer, layer, tiny_checkpoints["denoiser"])
        worker = w.run()
        assert worker is not None
        qtbot.waitUntil(lambda: not w.runner.running, timeout=120_000)
    finally:
        notification_manager.notification_ready.disconnect(record)

    main = threading.get_ident()
    assert model_threads and main not in model_threads  # the network really ran in the worker thread
    oom = [(m, t) for m, t in seen if "Not enough memory" in m]
    assert len(oom) == 1, seen
    assert "continuing with 2 slice(s)" in oom[0][0]
    assert oom[0][1] == main
    assert _warnings(notifications) == [oom[0][0]]
    assert label_threads == [main]
    assert "continuing with 2 slice(s)" in str(w.status.value)
    assert viewer.layers[-1].name == f"LDCT · {w.checkpoint.model_name}"


def test_denoise_out_of_memory_on_cpu_is_a_readable_error(viewer_ct, tiny_checkpoints, sync_mode, notifications,
                                                          monkeypatch):
    from src_training.inference import InferenceMemoryError

    viewer, layer = viewer_ct
    calls, _ = _patch_denoiser(monkeypatch, limit=0)  # even one slice does not fit
    w = _denoise_widget(viewer, layer, tiny_checkpoints["denoiser"])
    n = len(viewer.layers)
    w.run()

    assert calls == [4, 2, 1]
    assert len(viewer.layers) == n
    assert isinstance(w.runner.last_error, InferenceMemoryError)
    errors = [str(e.message) for e in notifications.errors()]
    assert len(errors) == 1, errors
    msg = errors[0]
    assert msg.startswith("Denoise: Not enough memory for denoising one slice on the CPU")
    assert "Close other programs" in msg
    assert "unexpected error" not in msg and "Traceback" not in msg
    assert len(_warnings(notifications)) == 2  # the two halvings before giving up
    assert str(w.status.value) == "Denoise failed"


# ------------------------------------------------------------------------------------------- detect
def _detect_widget(viewer, layer, ckpt, batch):
    from napari_lidnet._widgets.detect import DetectWidget

    w = DetectWidget(viewer)
    w.image.value = layer
    w.checkpoint.set_path(ckpt)
    w.device.value = "cpu"
    w.scope.value = "whole volume"
    w.score_thresh.value = 0.0
    w.batch_size.value = batch
    return w


def test_detect_oom_halves_batch_and_tells_user(viewer_ct, tiny_checkpoints, sync_mode, notifications, monkeypatch):
    viewer, layer = viewer_ct
    ref = _detect_widget(viewer, layer, tiny_checkpoints["detector"], batch=1)
    ref.run()
    assert not _warnings(notifications)

    calls = _patch_detector(monkeypatch, limit=1)
    w = _detect_widget(viewer, layer, tiny_checkpoints["detector"], batch=4)
    w.run()

    assert calls == [4, 2, 1, 1, 1, 1]
    warns = _warnings(notifications)
    assert len(warns) == 2, warns
    assert warns[0].startswith("Detect lesions: Not enough memory on cpu for lesion detection on 4 slices")
    assert "continuing with 1 slice(s)" in warns[1]
    assert "continuing with 1 slice(s)" in str(w.status.value)
    assert not notifications.errors()
    assert [r["slice"] for r in w.raw_results] == [0, 1, 2, 3]
    for a, b in zip(w.raw_results, ref.raw_results):
        np.testing.assert_allclose(a["objectness"], b["objectness"], atol=1e-4)
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)


def test_detect_out_of_memory_on_cpu_is_a_readable_error(viewer_ct, tiny_checkpoints, sync_mode, notifications,
                                                         monkeypatch):
    from src_training.inference import InferenceMemoryError

    viewer, layer = viewer_ct
    calls = _patch_detector(monkeypatch, limit=0)
    w = _detect_widget(viewer, layer, tiny_checkpoints["detector"], batch=1)
    n = len(viewer.layers)
    w.run()

    assert calls == [1]
    assert len(viewer.layers) == n and w.raw_results is None
    assert isinstance(w.runner.last_error, InferenceMemoryError)
    errors = [str(e.message) for e in notifications.errors()]
    assert len(errors) == 1, errors
    assert errors[0].startswith("Detect lesions: Not enough memory for lesion detection on one slice on the CPU")
    assert "unexpected error" not in errors[0] and "Traceback" not in errors[0]
