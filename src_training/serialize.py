"""Plain-JSON conversion of result dicts (one helper for every report writer)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["jsonable"]


def jsonable(obj):
    """Replace non-finite floats by None, numpy scalars/arrays by Python values and dataclasses by dicts
    (strict JSON, ``json.dumps(..., allow_nan=False)`` safe)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
