"""Simulate-low-dose widget: Poisson low-dose simulation of the chosen CT at incident flux N0.

Every computation is a call into :mod:`src_training.simulation` (counts ``N0 exp(-p)`` per ray, Poisson
noise, Hann-windowed FBP, stated geometry: 1000 views, 1 mm bins). After a run the status line shows the
measured soft-tissue noise sigma in HU (also in the new layer's metadata, ``noise_sigma_hu``). Slice ``k`` of a volume always uses the random stream
``(seed, k)``, so the current slice alone gives the same values as the whole-volume run.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, Container, Label, LogSlider, SpinBox

from src_training import simulation
from src_training.errors import SimulationError

from .._layers import current_slice_index, derived_image_kwargs, layer_spacing
from .._sample_data import ldct_cache_dir
from ._controls import scope_chooser
from ._layer_choice import LayerChooser
from ._tasks import TaskRunner, call_with_progress, run_controls

N0_MIN, N0_MAX, N0_DEFAULT = 500.0, 100000.0, 1000.0


def nice_n0(value: float) -> float:
    """Round a log-slider value to 2 significant digits (995.6 -> 1000, 12345 -> 12000), so runs are
    named and reproduced with round photon counts."""
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

    yield (0, int(hu.shape[0]), msg)
    result = yield from call_with_progress(fn, cancel_event, msg)
    return np.asarray(result, dtype=np.float32)


class SimulateWidget(Container):
    """Simulate a low-dose scan of the chosen CT layer at incident flux N0 (log slider 500-100000).

    The result is a new image layer ``"LDCT N0=<N0>"`` (``" slice <k>"`` when only the current slice is
    simulated, placed on that slice) with the source's scale, translate, window and metadata (+ ``n0``,
    ``seed``). The work runs in a thread worker with a progress bar and Cancel.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    """

    def __init__(self, napari_viewer: Any):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = LayerChooser(napari_viewer, label="NDCT image")
        self.n0 = LogSlider(label="N0 (photons)", min=N0_MIN, max=N0_MAX, value=N0_DEFAULT)
        try:  # the slider's own readout shows its internal (log) position: hide it, self.info shows N0
            self.n0._widget._mgui_set_readout_visibility(False)
        except Exception:  # noqa: BLE001 - another backend: keep its readout
            pass
        self.n0.tooltip = ("Incident photons per ray (detector bin and view); LIDnet: 1000 (lung CT), 3000 (chest PE-CT). "
                           "Scanner: parallel beam, 1000 views, 1 mm bins, Hann-windowed FBP.")
        self.seed = SpinBox(label="seed", min=0, max=2**31 - 1, value=0)
        self.scope = scope_chooser()
        self.use_cache = CheckBox(label="cache whole-volume results", value=True)
        self.run_btn, self.cancel_btn, self.progress, self.status = run_controls("Simulate")
        self.info = Label(value="")
        self.extend([self.image, self.n0, self.info, self.seed, self.scope, self.use_cache,
                     self.run_btn, self.cancel_btn, self.progress, self.status])
        self.runner = TaskRunner("Simulate low dose", self.run_btn, self.cancel_btn, self.progress, self.status)
        self.run_btn.changed.connect(self.run)
        self.n0.changed.connect(self._show_n0)
        self._show_n0()

    @property
    def n0_value(self) -> float:
        """The incident flux used: the slider's value rounded to 2 significant digits."""
        return nice_n0(self.n0.value)

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
                f"soft-tissue noise sigma {sigma:.0f} HU"
            self.status.value = f"added '{name}': {noise}"

        return runner.start(work, add, desc=f"Simulate LDCT N0={n0:g}")
