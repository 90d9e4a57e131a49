"""Global random-number state of a training process: seeding, capture and restore.

Owns the one place where python ``random``, numpy's global RNG and torch's generators (CPU, every CUDA
device, Apple MPS) are seeded (:func:`seed_everything`), captured as tensors and plain numbers that
``torch.load(..., weights_only=True)`` can read back (:func:`rng_state`, saved in ``trainer_state.pt``) and
restored (:func:`set_rng_state`), so a resumed run continues with the same random stream (RPN/ROI
sampling, interpolation weights of the gradient penalty). Data order and crops do not use these global
generators (see :mod:`src_training.training.batches`).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global RNG (``seed mod 2**32``) and torch (CPU and all CUDA devices)
    with the integer ``seed``."""
    random.seed(int(seed))
    np.random.seed(int(seed) % (2**32))
    torch.manual_seed(int(seed))


def rng_state() -> dict[str, Any]:
    """The RNG states of this process, loadable with ``weights_only=True``.

    Returns
    -------
    dict
        ``torch``: uint8 CPU state tensor; ``numpy``: ``name``, ``keys`` (int64 tensor (624,)), ``pos``,
        ``has_gauss``, ``cached_gaussian``; ``python``: ``version``, ``state`` (int64 tensor (625,)),
        ``gauss_next``; ``cuda`` (list of uint8 tensors, when CUDA is initialised) and ``mps`` (when
        available).
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": torch.tensor(py_state[1], dtype=torch.int64),
            "gauss_next": None if py_state[2] is None else float(py_state[2]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        try:
            state["mps"] = torch.mps.get_rng_state()
        except Exception:  # noqa: BLE001 - MPS RNG not initialised
            pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured. CUDA states are skipped when the GPU count differs, the MPS
    state when MPS is not available.

    Raises
    ------
    KeyError
        ``state`` lacks the ``torch``, ``numpy`` or ``python`` entry.
    """
    torch.set_rng_state(state["torch"].cpu().to(torch.uint8))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]), float(n["cached_gaussian"]))
    )
    p = state["python"]
    random.setstate((int(p["version"]), tuple(int(v) for v in p["state"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all([s.cpu().to(torch.uint8) for s in state["cuda"]])
        except Exception:  # noqa: BLE001 - different GPU count: keep the current states
            pass
    if "mps" in state and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        try:
            torch.mps.set_rng_state(state["mps"].cpu().to(torch.uint8))
        except Exception:  # noqa: BLE001
            pass
