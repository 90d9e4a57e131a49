"""Simulate-low-dose widget: Poisson low-dose simulation of the chosen CT at incident flux N0.

Every computation is a call into :mod:`src_training.simulation` (counts ``N0 exp(-p)`` per ray, Poisson
noise, Hann-windowed FBP, stated geometry: 1000 views, 1 mm bins). The input defaults to a normal-dose
layer (:func:`ndct_rank`: never a simulated or denoised one while an NDCT is open); N0 is typed in a number
box (used exactly) or set with the log slider beside it; progress says the slice and the time left
(:func:`progress_text`). After a run the status line shows the measured soft-tissue noise sigma in HU (also
in the new layer's metadata, ``noise_sigma_hu``). Slice ``k`` of a volume always uses the random stream
``(seed, k)``, so the current slice alone gives the same values as the whole-volume run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, LogSlider, SpinBox

from src_training import simulation
from src_training.errors import SimulationError
from src_training.runs import format_duration

from .._layers import current_slice_index, derived_image_kwargs, layer_spacing
from .._sample_data import ldct_cache_dir
from ._controls import scope_chooser
from ._layer_choice import LayerChooser
from ._tasks import TaskRunner, call_with_progress, run_controls

#: Range and default of N0, incident photons per ray (detector bin and view).
N0_MIN, N0_MAX, N0_DEFAULT = 100.0, 1e6, 1000.0

#: Metadata keys of layers computed by the plugin from another layer (simulated, denoised, ...).
DERIVED_KEYS = ("simulated_from", "denoised_from", "derived_from", "n0")
#: Name fragments of low-dose or processed images.
_NOT_NDCT_WORDS = ("ldct", "low dose", "low-dose", "lowdose", "n0=", "denoised", "simulated", "quarter")


def ndct_rank(name: str, metadata: Mapping[str, Any] | None) -> int:
    """How much an image layer looks like a normal-dose CT, the Simulate input (higher = better).

    2: named NDCT (or "normal dose" / "full dose") and not made from another layer; 1: neither named nor
    marked low-dose, simulated or denoised (e.g. a CT opened from disk); 0: low-dose, simulated or denoised
    (metadata ``simulated_from``, ``denoised_from``, ``derived_from`` or ``n0``, or such a name).
    """
    md = metadata or {}
    low = name.lower()
    if any(md.get(k) is not None for k in DERIVED_KEYS) or any(w in low for w in _NOT_NDCT_WORDS):
        return 0
    if "ndct" in low or "normal dose" in low or "normal-dose" in low or "full dose" in low:
        return 2
    return 1


def progress_text(done: int, total: int, elapsed_s: float, unit: str = "slice") -> str:
    """Progress in words: ``"slice 5/20 · about 4 min left"`` (time left from the pace so far; before the
    first slice is done: ``"slice 1/20 …"``).

    Parameters
    ----------
    done, total : int
        Slices finished and in all.
    elapsed_s : float
        Seconds since the work started.
    unit : str
        What is counted.
    """
    total = max(int(total), 1)
    done = min(max(int(done), 0), total)
    if done == 0:
        return f"{unit} 1/{total} …"
    if done >= total:
        return f"{unit} {total}/{total} · finishing"
    left = elapsed_s / done * (total - done)
    return f"{unit} {done}/{total} · {format_duration(left)} left"


def nice_n0(value: float) -> float:
    """Round a log-slider value to 2 significant digits (995.6 -> 1000, 12345 -> 12000): where the slider
    puts the N0 box (a typed value is used exactly)."""
    v = float(value)
    if v <= 0:
        return v
    digits = 1 - int(np.floor(np.log10(v)))
    return float(round(v, digits))


def simulate_work(
    hu: np.ndarray,
    pixel_spacing_mm: float,
    n0: float,
    seed: int,
    *,
    first_index: int = 0,
    cache_dir: Any = None,
    cancel_event: Any = None,
):
    """Progress generator of a low-dose simulation (runs in a worker thread).

    Parameters
    ----------
    hu : ndarray float32 (z, y, x) HU
        Slices to simulate (one slice: shape (1, y, x)).
    pixel_spacing_mm : float
        In-plane pixel size (mm).
    n0 : float
        Incident photons per detector bin (lower = noisier; LIDnet lung CT: 1000).
    seed : int
        Base seed; slice ``first_index + i`` uses stream ``(seed, first_index + i)``.
    first_index : int
        Index of ``hu[0]`` in the full volume.
    cache_dir : path, optional
        Use the core's on-disk cache (:func:`cached_simulate_ldct`).
    cancel_event : threading.Event, optional
        Stops at the next slice when set.

    Yields
    ------
    (done, total, message)
        ``message`` e.g. ``"simulating N0=3000: slice 8/20 · about 2 min left"`` (:func:`progress_text`).

    Returns
    -------
    ndarray float32, same shape as ``hu``: low-dose HU.

    Raises
    ------
    Cancelled
        ``cancel_event`` was set (the core call stops at its next slice).
    SimulationError
        Bad input (from :mod:`src_training.simulation`).
    """
    cancel_event = cancel_event or threading.Event()
    hu = np.asarray(hu, dtype=np.float32)
    msg = f"simulating N0={n0:g}"
    if cache_dir is not None and first_index == 0:

        def fn(progress):
            return simulation.cached_simulate_ldct(
                hu, pixel_spacing_mm, n0, seed=seed, cache_dir=cache_dir, progress=progress
            )

    else:

        def fn(progress):
            return simulation.simulate_ldct(
                hu, pixel_spacing_mm, n0, seed=seed, first_index=first_index, progress=progress
            )

    total = int(hu.shape[0])
    t0 = time.monotonic()
    yield (0, total, f"{msg}: {progress_text(0, total, 0.0)}")
    inner = call_with_progress(fn, cancel_event, msg)
    try:
        while True:
            done, _n, _m = next(inner)  # the core counts the same slices (total = hu.shape[0])
            yield (done, total, f"{msg}: {progress_text(done, total, time.monotonic() - t0)}")
    except StopIteration as stop:
        result = stop.value
    finally:
        inner.close()  # closed early (Cancel, viewer closed): the core call stops at its next slice
    return np.asarray(result, dtype=np.float32)


class NDCTLayerChooser(LayerChooser):
    """Image-layer drop-down that chooses a normal-dose CT by itself (:func:`ndct_rank`): the best-ranked
    layer, the topmost among equals, until the user picks one. A simulated or denoised layer is never the
    automatic choice while an NDCT-looking layer is open."""

    def __init__(self, viewer: Any, label: str = "NDCT image", **kwargs: Any):
        self._auto = True
        self._setting = False
        super().__init__(viewer, label=label, **kwargs)
        self.changed.connect(self._on_user_change)

    def _refresh(self) -> None:
        self._setting = True  # a change made by the layer list, not by the user
        try:
            self.reset_choices()
        finally:
            self._setting = False
        self._select_default()

    def _on_user_change(self, *_: Any) -> None:
        if not self._setting:
            self._auto = self.value is None  # the user chose a layer: keep it

    def _select_default(self) -> None:
        choices = self._layer_choices()
        if not choices:
            return
        if not self._auto and self.value is not None:
            return
        best = max(reversed(choices), key=lambda c: ndct_rank(c[0], getattr(c[1], "metadata", None)))[1]
        if self.value is not best:
            self._setting = True
            try:
                self.value = best
            finally:
                self._setting = False


class SimulateWidget(Container):
    """Simulate a low-dose scan of the chosen CT layer at incident flux N0.

    N0 (photons per ray, 100 to 1e6) is typed in a number box and used exactly; the log slider below moves
    it in round steps (2 significant digits). The result is a new image layer ``"LDCT N0=<N0>"``
    (``" slice <k>"`` when only the current slice is simulated, placed on that slice) with the source's
    scale, translate, window and metadata (+ ``n0``, ``seed``, ``simulated_from``, ``noise_sigma_hu``). The
    work runs in a thread worker with a progress bar (slice, time left) and Cancel.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = NDCTLayerChooser(napari_viewer, label="NDCT image")
        tip = ("Incident photons per ray (detector bin and view); LIDnet: 1000 (lung CT), 3000 (chest PE-CT). "
               "Scanner: parallel beam, 1000 views, 1 mm bins, Hann-windowed FBP.")
        self.n0 = FloatSpinBox(label="N0 (photons per ray)", min=N0_MIN, max=N0_MAX, step=100.0,
                               value=N0_DEFAULT, tooltip=tip)
        try:
            self.n0.native.setDecimals(0)
        except Exception:  # noqa: BLE001 - another backend
            pass
        self.n0_slider = LogSlider(label="", min=N0_MIN, max=N0_MAX, value=N0_DEFAULT, tooltip=tip,
                                   max_pos=1000)  # 0.9 % steps over 4 decades
        try:  # the slider's own readout shows its internal (log) position: hide it, the box shows N0
            self.n0_slider._widget._mgui_set_readout_visibility(False)
        except Exception:  # noqa: BLE001 - another backend: keep its readout
            pass
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.scope = scope_chooser()
        self.use_cache = CheckBox(label="cache whole-volume results", value=True)
        self.run_btn, self.cancel_btn, self.progress, self.status = run_controls("Simulate")
        self.info = Label(value="")
        for line in (self.info, self.status):  # long texts (N0 meaning, sigma result) wrap in a narrow dock
            try:
                line.native.setWordWrap(True)
            except Exception:  # noqa: BLE001 - another backend
                pass
        self.extend([self.image, self.n0, self.n0_slider, self.info, self.seed, self.scope, self.use_cache,
                     self.run_btn, self.cancel_btn, self.progress, self.status])
        self.runner = TaskRunner("Simulate low dose", self.run_btn, self.cancel_btn, self.progress, self.status)
        self.run_btn.changed.connect(self.run)
        self._syncing = False
        self.n0.changed.connect(self._on_n0_typed)
        self.n0_slider.changed.connect(self._on_n0_slid)
        self._show_n0()

    @property
    def n0_value(self) -> float:
        """The incident flux used: the number box's value, exactly as typed."""
        return float(self.n0.value)

    def _on_n0_typed(self, *_: Any) -> None:
        if not self._syncing:
            self._syncing = True
            try:
                self.n0_slider.value = min(max(self.n0_value, N0_MIN), N0_MAX)
            finally:
                self._syncing = False
        self._show_n0()

    def _on_n0_slid(self, *_: Any) -> None:
        if self._syncing:
            return
        self._syncing = True
        try:
            self.n0.value = min(max(nice_n0(self.n0_slider.value), N0_MIN), N0_MAX)
        finally:
            self._syncing = False
        self._show_n0()

    def _show_n0(self, *_: Any) -> None:
        g = simulation.DEFAULT_GEOMETRY
        self.info.value = (f"N0 = {self.n0_value:g} photons per ray (lower N0 = lower dose = more noise); "
                           f"{g.n_views} views, {g.bin_mm:g} mm bins, FBP {g.filter_name}")

    def run(self, *_: Any) -> Any:
        """Start the simulation (thread worker; synchronous with ``LIDNET_SYNC=1``)."""
        layer = self.image.value
        n0 = self.n0_value
        seed = int(self.seed.value)
        whole = self.scope.value == "whole volume"
        runner = self.runner

        state: dict[str, Any] = {
            "data": layer.data if layer is not None else None,
            "spacing": layer_spacing(layer) if layer is not None else None,
        }

        def work():
            if layer is None:
                raise SimulationError("Choose an image layer (the normal-dose CT) to simulate.")
            data = np.asarray(state["data"], dtype=np.float32)
            if data.ndim == 2:
                data = data[None]
            if data.ndim != 3:
                raise SimulationError(f"Layer '{layer.name}' has {data.ndim} dimensions; a CT slice or volume is needed.")
            spacing = state["spacing"]
            if whole:
                z0, hu = 0, data
            else:
                z0 = state["z"]
                hu = data[z0 : z0 + 1]
            cache = None
            if whole and self.use_cache.value:
                cache = ldct_cache_dir()
            result = yield from simulate_work(
                hu, spacing[1], n0, seed, first_index=z0, cache_dir=cache, cancel_event=runner.cancel_event
            )
            return z0, result, simulation.soft_tissue_noise_sigma(hu, result)

        # read the viewer state in the GUI thread
        state["z"] = current_slice_index(self.viewer, layer) if layer is not None else 0

        def add(result: Any) -> None:
            z0, ldct, sigma = result
            name = f"LDCT N0={n0:g}" + ("" if whole else f" slice {z0}")
            kwargs = derived_image_kwargs(
                layer,
                name=name,
                z_offset=z0,
                extra_metadata={"n0": n0, "seed": seed, "simulated_from": layer.name,
                                "noise_sigma_hu": sigma, "geometry": simulation.DEFAULT_GEOMETRY.describe()},
            )
            if np.asarray(layer.data).ndim == 2:
                ldct = ldct[0]
            self.viewer.add_image(ldct, **kwargs)
            noise = "no uniform soft tissue to measure the noise in" if sigma != sigma else \
                f"soft-tissue noise σ {sigma:.1f} HU (low dose minus '{layer.name}')"
            self.status.value = f"added '{name}': {noise}"

        return runner.start(work, add, desc=f"Simulate LDCT N0={n0:g}")
