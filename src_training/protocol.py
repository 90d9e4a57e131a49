"""The evaluation protocol every experiment of the project shares (one owner for these choices).

Data (the bundled real chest CT, ``sample_data/``): ``lung1`` trains, ``lung2`` evaluates (split by patient,
never by slice). Both get synthetic nodules on their NATIVE 512 x 512 grid (:mod:`src_training.nodules`; the
two real tumours alone are too few), the low-dose scan is simulated there (:mod:`src_training.simulation`,
default clinical-like geometry), and only then are NDCT and LDCT resampled to :data:`IMAGE_SIZE` pixels, the
working size of the CPU budgets. The data seed (:data:`DATA_SEED`) is fixed: the evaluation set (its nodules,
its LDCT noise) is the same for every method and every training seed, so seeds vary only the training.

Detectors (``lidnet pretrain-detector``, :mod:`src_training.pretrain`), shipped in ``src_training/weights/``
with their recipe beside them:

* :data:`DETECTOR_FILE` -- Faster R-CNN, ResNet-18-FPN, trained on NDCT only: LIDnet's detector starts from
  it (as the paper's starts from a pre-trained ResNet-50), and it is the "NDCT detector" LIDnet trains
  against (so AP measured with it is labelled as LIDnet's own detector);
* :data:`JUDGE_FILE` -- FCOS, ResNet-18-FPN, another seed, NDCT only: the independent judge that scores
  Table 2; no LIDnet run ever sees it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .data.cases import CaseArrays, prepare_case
from .errors import LidnetError
from .inference import load_detector

__all__ = [
    "TRAIN_CASE",
    "EVAL_CASE",
    "IMAGE_SIZE",
    "TRAIN_NODULES",
    "EVAL_NODULES",
    "DATA_SEED",
    "WEIGHTS_DIR",
    "DETECTOR_FILE",
    "JUDGE_FILE",
    "shipped_weights",
    "eval_case",
    "Detectors",
    "load_detectors",
]

TRAIN_CASE = "lung1"
EVAL_CASE = "lung2"
#: Working size (pixels across the native field of view) after the native-resolution simulation: 256 px,
#: i.e. 1.14 mm (lung1) / 1.25 mm (lung2) pixels.
IMAGE_SIZE = 256
#: Synthetic nodules per slice of the training / evaluation case.
TRAIN_NODULES = 3
EVAL_NODULES = 3
#: Seed of the data (nodules, LDCT noise), independent of the training seed.
DATA_SEED = 0

#: Where the shipped weights live (``$LIDNET_WEIGHTS`` overrides, e.g. for weights trained on a GPU).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
DETECTOR_FILE = "detector_ndct_frcnn_r18.pt"
JUDGE_FILE = "judge_ndct_fcos_r18.pt"


def weights_dir() -> Path:
    """The folder of the shipped weights: ``$LIDNET_WEIGHTS`` when set, else :data:`WEIGHTS_DIR`."""
    return Path(os.environ.get("LIDNET_WEIGHTS") or WEIGHTS_DIR).expanduser()


def shipped_weights(name: str) -> Path:
    """Path of a shipped weights file (``DETECTOR_FILE`` or ``JUDGE_FILE``) in ``$LIDNET_WEIGHTS`` or
    :data:`WEIGHTS_DIR`.

    Raises
    ------
    LidnetError
        The file is missing (the message gives the command that rebuilds it).
    """
    path = weights_dir() / name
    if not path.is_file():
        arch = "fcos" if name == JUDGE_FILE else "faster_rcnn"
        raise LidnetError(
            f"The pretrained detector {path} is missing. Rebuild it with: lidnet pretrain-detector --arch {arch} "
            f"--out {path} (about an hour on 2 CPU cores; its recipe is in {path.with_suffix('.json').name})."
        )
    return path


def eval_case(*, n0: Optional[float], cache_dir=None, geometry=None, simulate: bool = True,
              nodules: int = EVAL_NODULES, image_size: Optional[int] = IMAGE_SIZE, max_slices: Optional[int] = None) -> CaseArrays:
    """The evaluation case: ``lung2`` with :data:`EVAL_NODULES` synthetic nodules per slice (seed
    :data:`DATA_SEED`), LDCT at ``n0`` simulated natively, resampled to ``image_size``.

    Returns
    -------
    src_training.data.cases.CaseArrays

    Raises
    ------
    LidnetError
        Missing sample data or a simulation error.
    """
    return prepare_case(f"sample:{EVAL_CASE}", n0=n0, seed=DATA_SEED, image_size=image_size,
                        synthetic_nodules_per_slice=nodules, cache_dir=cache_dir, geometry=geometry,
                        simulate=simulate, max_slices=max_slices)


@dataclass
class Detectors:
    """The shipped NDCT detectors (eval mode, on ``device``) and their files.

    Attributes
    ----------
    own : LesionDetector
        The pretrained Faster R-CNN: LIDnet's starting detector and the one it trains against.
    judge : FCOSLesionDetector
        The independent judge (never seen by any training run).
    own_path, judge_path : Path
    """

    own: Any
    judge: Any
    own_path: Path
    judge_path: Path


def load_detectors(device) -> Detectors:
    """Load both shipped detectors (:func:`shipped_weights`).

    Raises
    ------
    LidnetError
        A weights file is missing (with the command that rebuilds it) or damaged.
    """
    own_path, judge_path = shipped_weights(DETECTOR_FILE), shipped_weights(JUDGE_FILE)
    own, _ = load_detector(own_path, device=device)
    judge, _ = load_detector(judge_path, device=device)
    return Detectors(own, judge, own_path, judge_path)
