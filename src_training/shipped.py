"""The catalogue of models that come with the package (``src_training/weights/``, or ``$LIDNET_WEIGHTS``).

Every ``*.pt`` file of the weights folder is one :class:`ShippedModel`: what it is (kind, network, method,
training size) is read from the file itself (:func:`src_training.checkpoint_files.peek_checkpoint`, never
from its name); how it is shown comes from the ``.json`` recipe beside it:

* ``display_name`` (e.g. ``"CPCE LIDnet (shipped, demo recipe)"``), else a name made from the file's
  network and method (``"Faster R-CNN NDCT detector (shipped)"``);
* ``role``: ``"judge"`` for the independent judge of the evaluation protocol (also when the file is
  :data:`src_training.protocol.JUDGE_FILE`), which is labelled ``"FCOS judge (shipped, evaluation only)"``;
* ``measured``: the numbers the recipe's run measured (shown as a one-line summary).

The folder is the evaluation protocol's (:data:`src_training.protocol.WEIGHTS_DIR`, overridden by
``$LIDNET_WEIGHTS`` as :func:`src_training.protocol.shipped_weights` does). No Qt here: the plugin's
checkpoint choosers and the command line list the same catalogue.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .checkpoint_files import peek_checkpoint
from .errors import LidnetError
from .models.registry import display_name as denoiser_name
from .protocol import JUDGE_FILE, weights_dir

log = logging.getLogger(__name__)

__all__ = ["WEIGHTS_ENV", "ShippedModel", "weights_dir", "shipped_models", "preferred_shipped"]

#: Environment variable naming another weights folder (e.g. detectors retrained on a GPU).
WEIGHTS_ENV = "LIDNET_WEIGHTS"

_ARCH_NAMES = {"faster_rcnn": "Faster R-CNN", "fcos": "FCOS", "unet2d": "U-Net"}
_METHOD_NAMES = {"lidnet": "LIDnet", "baseline": "baseline", "todnet": "TOD-Net", "ndct": "NDCT"}


@dataclass(frozen=True)
class ShippedModel:
    """One model file of the weights folder.

    Attributes
    ----------
    path : Path
        The ``.pt`` file (absolute).
    kind : str
        ``"denoiser"``, ``"detector"`` or ``"segmenter"``, read from the file.
    network : str
        Denoiser registry key (``"cpce"``), detector architecture (``"faster_rcnn"``, ``"fcos"``) or ``"unet2d"``.
    method : str or None
        ``"baseline"`` / ``"lidnet"`` (denoisers), ``"ndct"`` (detectors trained on normal-dose CT only).
    name : str
        Display name, e.g. ``"CPCE LIDnet (shipped, demo recipe)"`` or ``"FCOS judge (shipped, evaluation only)"``.
    short_name : str
        Name for layer names, e.g. ``"CPCE LIDnet (shipped)"``.
    role : str
        ``"judge"`` (the evaluation protocol's independent detector: for scoring, not for reading) or ``"model"``.
    image_size : int or None
        Slice size in pixels the network was trained at (None: native size).
    step : int or None
        Training step of the weights.
    summary : str
        One line of what the recipe's run measured (may be empty).
    meta : dict
        The ``.json`` beside the file (empty when there is none or it is unreadable).
    """

    path: Path
    kind: str
    network: str
    method: Optional[str]
    name: str
    short_name: str
    role: str = "model"
    image_size: Optional[int] = None
    step: Optional[int] = None
    summary: str = ""
    meta: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def is_judge(self) -> bool:
        """True for the independent judge (evaluation only)."""
        return self.role == "judge"


def _read_meta(pt: Path) -> dict[str, Any]:
    js = pt.with_suffix(".json")
    if not js.is_file():
        return {}
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("Ignoring %s: it is not readable JSON (%s).", js, exc)
        return {}
    return meta if isinstance(meta, dict) else {}


def _default_name(kind: str, network: str, method: Optional[str], judge: bool) -> str:
    if kind == "denoiser":
        label = denoiser_name(network)
        m = _METHOD_NAMES.get(str(method).lower(), str(method)) if method else ""
        return f"{label} {m}".strip() + " (shipped)"
    arch = _ARCH_NAMES.get(network, network)
    if judge:
        return f"{arch} judge (shipped, evaluation only)"
    if kind == "detector":
        what = "NDCT detector" if str(method).lower() == "ndct" else "detector"
        return f"{arch} {what} (shipped)"
    return f"{arch} {kind} (shipped)"


def _summary(kind: str, meta: dict[str, Any]) -> str:
    m = meta.get("measured")
    if not isinstance(m, dict):
        return ""
    bits = []
    if "psnr_db" in m:
        bits.append(f"PSNR {float(m['psnr_db']):.2f} dB")
    if "judge_ap50_percent" in m:
        bits.append(f"judge AP-50 {float(m['judge_ap50_percent']):.1f} %")
    case = str(m.get("on") or "").split(" ", 1)[0].strip(",;")
    if bits and case:
        bits[-1] += f" on {case}"
    lesions = m.get("eval_all_lesions")
    if isinstance(lesions, dict) and "ap50" in lesions:
        bits.append(f"AP-50 {100 * float(lesions['ap50']):.1f} % on the lung2 NDCT")
    return ", ".join(bits)


def _model(pt: Path) -> Optional[ShippedModel]:
    try:
        info = peek_checkpoint(pt)
    except LidnetError as exc:
        log.warning("Ignoring %s in the weights folder: %s", pt, exc)
        return None
    if info.kind == "trainer_state":
        return None
    meta = _read_meta(pt)
    judge = str(meta.get("role", "")).lower() == "judge" or pt.name == JUDGE_FILE
    name = str(meta.get("display_name") or _default_name(info.kind, info.network, info.method, judge))
    short = str(meta.get("short_name") or (name.split(" (", 1)[0] + " (shipped)"))
    return ShippedModel(pt.resolve(), info.kind, info.network, info.method, name, short,
                        "judge" if judge else "model", info.image_size, info.step, _summary(info.kind, meta), meta)


def shipped_models(kind: Optional[str] = None, root: Optional[str | os.PathLike] = None) -> list[ShippedModel]:
    """The models of the weights folder, models before the judge, then by name.

    Parameters
    ----------
    kind : "denoiser", "detector", "segmenter" or None
        Keep only files of this kind (as stored in the file); None keeps every model file.
    root : path-like, optional
        The folder (default :func:`weights_dir`).

    Returns
    -------
    list of ShippedModel
        Empty when the folder is missing. Files that are not readable napari-lidnet model checkpoints are
        skipped with a log message (logger ``src_training.shipped``), never raised.
    """
    folder = Path(root).expanduser() if root is not None else weights_dir()
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix in (".pt", ".pth") and p.is_file())
    except OSError:
        return []
    out = [m for m in (_model(p) for p in files) if m is not None and (kind is None or m.kind == kind)]
    return sorted(out, key=lambda m: (m.is_judge, m.name.casefold()))


def preferred_shipped(kind: str, root: Optional[str | os.PathLike] = None) -> Optional[ShippedModel]:
    """The shipped model offered first for ``kind``: the LIDnet denoiser for ``"denoiser"`` (else the first
    denoiser), the first detector that is not the judge for ``"detector"``; None when there is none."""
    models = [m for m in shipped_models(kind, root) if not m.is_judge]
    if kind == "denoiser":
        lidnet = [m for m in models if str(m.method).lower() == "lidnet"]
        models = lidnet or models
    return models[0] if models else None
