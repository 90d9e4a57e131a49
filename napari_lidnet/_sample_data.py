"""napari sample data: the bundled chest CT ``lung2`` (NDCT + lesion boxes) and its simulated low-dose
version (N0 = 1000, seed 0, as in the LIDnet paper's lung CT experiments).

The low-dose volume comes from the core's cached simulation
(:func:`src_training.simulation.cached_simulate_ldct`) in the cache folder the core's demo uses
(``<sample data>/.cache``), so the sample, the demo and the Train widget share one simulation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from src_training.sample import load_sample_case, sample_dir
from src_training.simulation import cached_simulate_ldct

from ._boxes import REFERENCE_BOX_COLOR, shapes_layer_data
from ._layers import image_layer_kwargs

#: Sample case shown by the sample-data menu.
SAMPLE_CASE = "lung2"
#: Incident flux and seed of the sample LDCT (LIDnet paper, lung CT: N0 = 1000).
SAMPLE_N0 = 1000.0
SAMPLE_SEED = 0


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


def sample_ndct() -> list[tuple]:
    """Sample ``lung2``: the normal-dose chest CT (image layer, lung window, HU, mm scale) and its lesion
    boxes (shapes layer of rectangles on their slices, green edges, no fill).

    Raises
    ------
    LidnetError
        The bundled sample data is missing (the message says how to rebuild it).
    """
    case = load_sample_case(SAMPLE_CASE)
    kwargs = image_layer_kwargs(case.ndct, name=f"{case.name} NDCT", window="lung")
    return [(case.ndct.hu, kwargs, "image"), _boxes_layer(case, kwargs)]


def sample_ldct() -> list[tuple]:
    """Sample ``lung2`` simulated at low dose (N0 = 1000, seed 0; cached): one image layer, lung window, with
    ``n0``, ``seed`` and the cache folder in its metadata.

    The first call simulates every slice (tens of seconds on a CPU); later calls read the cache.
    """
    case = load_sample_case(SAMPLE_CASE)
    vol = case.ndct
    cache = ldct_cache_dir()
    ldct = cached_simulate_ldct(vol.hu, vol.spacing[1], SAMPLE_N0, seed=SAMPLE_SEED, cache_dir=cache)
    kwargs = image_layer_kwargs(
        vol,
        name=f"{case.name} LDCT N0={SAMPLE_N0:g}",
        window="lung",
        extra_metadata={"n0": SAMPLE_N0, "seed": SAMPLE_SEED, "simulated_from": f"{case.name} NDCT",
                        "cache_dir": str(cache)},
    )
    return [(ldct, kwargs, "image")]
