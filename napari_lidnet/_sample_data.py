"""napari sample data: the bundled chest CT ``lung2`` (NDCT + lesion boxes) and its simulated low-dose
version (N0 = 1000, seed 0, as in the LIDnet paper's lung CT experiments).

The low-dose volume comes from the core's cached simulation
(:func:`src_training.simulation.cached_simulate_ldct`) in the cache folder the core's demo uses
(``<sample data>/.cache``), so the sample, the demo and the Train widget share one simulation.

Start-up never simulates in the GUI thread: when the cache does not hold the low-dose volume yet (a fresh
clone), :func:`sample_ldct` returns at once with a placeholder and simulates in a napari thread worker, with
a progress bar (slices done, time left) in napari's activity dock; the image layer replaces the placeholder
when the simulation is done (a few minutes on a CPU, once: later openings read the cache).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import napari
import numpy as np
from napari.layers import Layer
from napari.utils import progress as napari_progress

from src_training.sample import load_sample_case, sample_dir
from src_training.simulation import cached_simulate_ldct
from src_training.simulation.cache import read_cached_ldct

from ._boxes import REFERENCE_BOX_COLOR, shapes_layer_data
from ._layer_order import keep_annotations_on_top
from ._layers import image_layer_kwargs
from ._messages import notify_error, notify_info
from ._widgets._lifecycle import on_window_close
from ._widgets._tasks import Cancelled, call_with_progress, start_worker, sync_mode

logger = logging.getLogger("napari_lidnet")

#: Sample case shown by the sample-data menu.
SAMPLE_CASE = "lung2"
#: Incident flux and seed of the sample LDCT (LIDnet paper, lung CT: N0 = 1000).
SAMPLE_N0 = 1000.0
SAMPLE_SEED = 0
#: Slices simulated together in the background (the result does not depend on it; smaller = finer progress).
SIMULATION_BATCH_SLICES = 2
#: ``metadata["lidnet_pending"]`` of the placeholder layer shown while the sample LDCT is simulated.
PENDING_KEY = "lidnet_pending"
PENDING_VALUE = "sample_ldct"


def ldct_cache_dir() -> Path:
    """Folder of the core's simulation cache: ``$LIDNET_CACHE_DIR`` if set, else the folder the core's demo
    uses by default (``<sample data folder>/.cache``, see ``src_training.demo.run_demo``)."""
    env = os.environ.get("LIDNET_CACHE_DIR")
    if env:
        return Path(env)
    return sample_dir() / ".cache"


def _boxes_layer(case: Any, image_kwargs: dict[str, Any]) -> tuple:
    data, kwargs = shapes_layer_data(
        case.boxes,
        name=f"{case.name} lesion boxes",
        like=image_kwargs,
        edge_color=REFERENCE_BOX_COLOR,
        edge_width=2.0,
        features={"label": [1] * sum(len(b) for b in case.boxes.values())},
        metadata={"kind": "reference boxes", "case": case.name},
    )
    return (data, kwargs, "shapes")


def _current_viewer() -> Any:
    try:
        return napari.current_viewer()
    except Exception:  # noqa: BLE001 - no napari application: a script
        return None


def sample_ndct() -> list[tuple]:
    """Sample ``lung2``: the normal-dose chest CT (image layer, lung window, HU, mm scale) and its lesion
    boxes (shapes layer of rectangles on their slices, green edges, no fill).

    In the current napari viewer (if any) the annotation layers are kept above the images from now on
    (:func:`napari_lidnet._layer_order.keep_annotations_on_top`), so a low-dose or denoised image added later
    does not hide the boxes.

    Raises
    ------
    LidnetError
        The bundled sample data is missing (the message says how to rebuild it).
    """
    case = load_sample_case(SAMPLE_CASE)
    kwargs = image_layer_kwargs(case.ndct, name=f"{case.name} NDCT", window="lung")
    keep_annotations_on_top(_current_viewer())
    return [(case.ndct.hu, kwargs, "image"), _boxes_layer(case, kwargs)]


# --------------------------------------------------------------------------------------------------
# the low-dose sample: from the cache, or simulated in the background
# --------------------------------------------------------------------------------------------------
def _ldct_layer_kwargs(case: Any, cache: Path) -> dict[str, Any]:
    return image_layer_kwargs(
        case.ndct,
        name=f"{case.name} LDCT N0={SAMPLE_N0:g}",
        window="lung",
        extra_metadata={"n0": SAMPLE_N0, "seed": SAMPLE_SEED, "simulated_from": f"{case.name} NDCT",
                        "cache_dir": str(cache)},
    )


def _placeholder(kwargs: dict[str, Any]) -> tuple:
    """An empty points layer (no point, nothing drawn, offered by no widget) standing for the LDCT while it
    is simulated; its name says so. Replaced by the image layer when the simulation is done."""
    meta = {
        "name": f"{kwargs['name']} (simulating, see progress)",
        "ndim": 3,
        "scale": kwargs.get("scale"),
        "rotate": kwargs.get("rotate"),
        "translate": kwargs.get("translate"),
        "metadata": {PENDING_KEY: PENDING_VALUE, "kind": "placeholder"},
    }
    return (np.empty((0, 3), dtype=np.float32), {k: v for k, v in meta.items() if v is not None}, "points")


def _duration(seconds: float) -> str:
    """Plain-words duration: "12 s", "4 min", "1 h 05 min"."""
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{max(1, int(round(s)))} s"
    if s < 3600:
        return f"{int(round(s / 60))} min"
    return f"{int(s // 3600)} h {int(round((s % 3600) / 60)):02d} min"


class _LdctJob:
    """The one background simulation of the sample LDCT (state shared by its GUI-thread callbacks)."""

    def __init__(self, layer_name: str, kwargs: dict[str, Any], total: int, cache: Path):
        self.layer_name = layer_name
        self.kwargs = kwargs
        self.total = max(1, int(total))
        self.cache = cache
        self.cancel = threading.Event()
        self.viewers: list[weakref.ref] = []
        self.worker: Any = None
        self.pbar: Any = None
        self.t0 = time.monotonic()
        self.done = 0
        self.t_done = self.t0

    # ------------------------------------------------------------------ viewers
    def add_viewer(self, viewer: Any) -> None:
        if viewer is None or any(ref() is viewer for ref in self.viewers):
            return
        self.viewers.append(weakref.ref(viewer))
        try:
            on_window_close(viewer.window._qt_window, lambda: self.drop_viewer(viewer))  # noqa: SLF001
        except Exception:  # noqa: BLE001 - a viewer without a Qt window: nothing to watch
            pass

    def drop_viewer(self, viewer: Any) -> None:
        """The viewer closed: stop adding to it; no viewer left: stop the simulation."""
        self.viewers = [ref for ref in self.viewers if ref() is not None and ref() is not viewer]
        if not self.viewers:
            self.cancel.set()

    def live_viewers(self) -> list[Any]:
        return [v for v in (ref() for ref in self.viewers) if v is not None]

    # ------------------------------------------------------------------ progress
    def progress_text(self) -> str:
        """``"slice 3/20, about 4 min left"`` (time left from the mean time per slice so far)."""
        head = f"slice {self.done}/{self.total}"
        if self.done <= 0:
            return f"{head}, estimating the time left"
        if self.done >= self.total:
            return f"{head}, saving"
        per_slice = (self.t_done - self.t0) / self.done
        left = per_slice * (self.total - self.done) - (time.monotonic() - self.t_done)
        return f"{head}, about {_duration(left)} left"

    def description(self) -> str:
        """The progress bar's text, e.g. ``"Simulating sample LDCT N0=1000: slice 3/20, about 4 min left"``."""
        return f"Simulating sample LDCT N0={SAMPLE_N0:g}: {self.progress_text()}"

    def on_progress(self, item: Any) -> None:
        try:
            done, total, _ = item
        except (TypeError, ValueError):
            return
        if int(done) != self.done:
            self.done = min(max(int(done), 0), self.total)
            self.t_done = time.monotonic()
        if total and int(total) != self.total:
            self.total = max(1, int(total))
        if self.pbar is not None:
            try:
                if self.pbar.total != self.total:
                    self.pbar.total = self.total
                self.pbar.n = self.done
                self.pbar.set_description(self.description())
                self.pbar.refresh()
            except Exception:  # noqa: BLE001 - the bar is a comfort
                pass

    def close_bar(self) -> None:
        if self.pbar is not None:
            try:
                self.pbar.close()
            except Exception:  # noqa: BLE001
                pass
            self.pbar = None


#: The running background simulation (None when none runs). Only touched in the GUI thread.
_JOB: _LdctJob | None = None


class _Failure:
    """An exception of the background simulation, returned (not raised) so napari shows no traceback."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def sample_ldct_pending() -> bool:
    """True while the sample LDCT is being simulated in the background (see :func:`sample_ldct`)."""
    return _JOB is not None


def _remove_placeholders(viewer: Any) -> int | None:
    """Remove the placeholder layers from ``viewer``; returns the index of the first one (None if none)."""
    index = None
    for i in reversed(range(len(viewer.layers))):
        layer = viewer.layers[i]
        if (getattr(layer, "metadata", None) or {}).get(PENDING_KEY) == PENDING_VALUE:
            viewer.layers.pop(i)
            index = i
    return index


def _simulation_work(hu: np.ndarray, pixel_mm: float, cache: Path, cancel: threading.Event):
    """Worker generator: yields ``(done, total, "")`` while the core simulates (in a helper thread) and
    returns the LDCT (float32 HU, shape of ``hu``) or a :class:`_Failure`."""
    def simulate(progress):
        return cached_simulate_ldct(hu, pixel_mm, SAMPLE_N0, seed=SAMPLE_SEED, cache_dir=cache,
                                    batch_slices=SIMULATION_BATCH_SLICES, progress=progress)

    try:
        return (yield from call_with_progress(simulate, cancel, poll_s=0.5))
    except BaseException as exc:  # noqa: BLE001 - reported in the GUI thread through notify_error
        return _Failure(exc)


def _on_simulated(job: _LdctJob, result: Any) -> None:
    """GUI thread: replace the placeholders by the LDCT layer in every viewer that asked for it."""
    global _JOB
    if _JOB is job:
        _JOB = None
    job.close_bar()
    viewers = job.live_viewers()
    if isinstance(result, _Failure) or result is None:
        for viewer in viewers:
            _remove_placeholders(viewer)
        exc = result.exc if isinstance(result, _Failure) else RuntimeError("the simulation returned nothing")
        if isinstance(exc, Cancelled) or job.cancel.is_set():
            logger.info("napari-lidnet: sample LDCT simulation stopped (viewer closed)")
            return
        notify_error(exc, "Sample low-dose CT")
        return
    added = 0
    for viewer in viewers:
        index = _remove_placeholders(viewer)
        layer = Layer.create(result, dict(job.kwargs), "image")
        if index is None:
            viewer.layers.append(layer)
        else:
            viewer.layers.insert(index, layer)
        added += 1
    if added:
        notify_info(
            f"The sample low-dose CT '{job.layer_name}' is ready: simulated in "
            f"{_duration(time.monotonic() - job.t0)}. It is saved in {job.cache}, so it opens at once next time."
        )


def _start_job(case: Any, kwargs: dict[str, Any], cache: Path, viewer: Any) -> _LdctJob:
    global _JOB
    vol = case.ndct
    job = _LdctJob(kwargs["name"], kwargs, vol.hu.shape[0] if vol.hu.ndim == 3 else 1, cache)
    job.add_viewer(viewer)
    try:
        job.pbar = napari_progress(total=job.total, desc=job.description())
    except Exception:  # noqa: BLE001 - no progress bar: the simulation still runs
        job.pbar = None
    _JOB = job
    try:
        job.worker = start_worker(
            _simulation_work, vol.hu, float(vol.spacing[1]), cache, job.cancel,
            yielded=job.on_progress,
            returned=lambda result: _on_simulated(job, result),
            # safety net: an error outside the guarded generator (should not happen)
            errored=lambda exc: _on_simulated(job, _Failure(exc)),
        )
    except Exception:
        _JOB = None
        job.close_bar()
        raise
    notify_info(
        f"Simulating the sample's low-dose CT (N0={SAMPLE_N0:g}, {job.total} slices) in the background. "
        "The first time this takes a few minutes on a CPU; the progress and the time left are shown in "
        f"napari's activity panel (bottom right). The layer '{job.layer_name}' appears when it is ready; "
        "you can work meanwhile."
    )
    return job


def sample_ldct() -> list[tuple]:
    """Sample ``lung2`` simulated at low dose (N0 = 1000, seed 0): one image layer, lung window, with
    ``n0``, ``seed`` and the cache folder in its metadata; never simulated in the GUI thread.

    Returns
    -------
    list of layer-data tuples
        * the cache holds the simulation (every opening after the first): ``[(ldct, kwargs, "image")]`` with
          ``ldct`` float32 HU of shape (z, y, x), returned at once;
        * not cached, called in napari's GUI thread with a current viewer: ``[(empty (0, 3) array, kwargs,
          "points")]``, a placeholder layer (no point; ``metadata["lidnet_pending"] == "sample_ldct"``,
          named "... (simulating, see progress)"), returned at once. The simulation runs in a napari thread
          worker with a progress bar (slices done, time left); when it is done, the image layer takes the
          placeholder's place in the viewer (GUI thread) and a notification says so. A failure is shown as a
          notification (no traceback) and the placeholder is removed. napari 0.9 refuses a sample that
          returns no layer (``[]`` or ``[(None,)]`` raise "did not return any valid layer data tuples"),
          hence the placeholder. Opening the sample again while it runs starts no second simulation (the
          placeholder is re-added, the layer goes to every viewer that asked for it);
          :func:`sample_ldct_pending` is True meanwhile. Closing the viewer stops the simulation.
        * not cached, and no viewer, another thread, or ``LIDNET_SYNC=1`` (scripts, tests): simulated in the
          calling thread (tens of seconds per slice on a CPU), then ``[(ldct, kwargs, "image")]``.

    Raises
    ------
    LidnetError
        The bundled sample data is missing (the message says how to rebuild it); in the calling-thread case
        also a simulation failure (:class:`~src_training.errors.SimulationError`).
    """
    case = load_sample_case(SAMPLE_CASE)
    vol = case.ndct
    cache = ldct_cache_dir()
    kwargs = _ldct_layer_kwargs(case, cache)
    viewer = _current_viewer()
    keep_annotations_on_top(viewer)
    cached = read_cached_ldct(vol.hu, vol.spacing[1], SAMPLE_N0, seed=SAMPLE_SEED, cache_dir=cache)
    if cached is not None:
        return [(cached, kwargs, "image")]
    in_gui = viewer is not None and threading.current_thread() is threading.main_thread() and not sync_mode()
    if not in_gui:
        ldct = cached_simulate_ldct(vol.hu, vol.spacing[1], SAMPLE_N0, seed=SAMPLE_SEED, cache_dir=cache)
        return [(ldct, kwargs, "image")]
    job = _JOB
    if job is None:
        _start_job(case, kwargs, cache, viewer)
    else:
        _remove_placeholders(viewer)  # napari adds the returned one: one placeholder per viewer
        job.add_viewer(viewer)
        notify_info(f"The sample low-dose CT is still being simulated ({job.progress_text()}). "
                    f"The layer '{job.layer_name}' appears when it is ready.")
    return [_placeholder(kwargs)]


__all__ = ["SAMPLE_CASE", "SAMPLE_N0", "SAMPLE_SEED", "ldct_cache_dir", "sample_ldct", "sample_ldct_pending",
           "sample_ndct"]
