"""Pretraining of the NDCT lesion detectors the project ships (``lidnet pretrain-detector``).

LIDnet (Chen et al., ACM MM 2021) fine-tunes a Faster R-CNN whose ResNet-50 was pre-trained, and scores
Table 2 with "a detector pre-trained on NDCT". Nothing may be downloaded here, so the project trains its own
detectors on normal-dose CT and ships them (``src_training/weights/``, fp16, loadable with
``torch.load(weights_only=True)``), each with its recipe, seed, data and measured AP in a JSON file beside it:

* ``--arch faster_rcnn`` (seed 0): Faster R-CNN, ResNet-18-FPN, box head of width 256: LIDnet's detector
  starts from it.
* ``--arch fcos`` (seed 1): FCOS, ResNet-18-FPN (128 channels): the independent judge of Table 2.

Training data: the NDCT of the training case only (``lung1``, :mod:`src_training.protocol`), as
:class:`FreshNoduleCrops`: every item is a fresh crop with FRESH synthetic nodules (0 to ``max_nodules``,
:mod:`src_training.nodules`) inserted on the native 512 x 512 grid and then resampled to the working scale,
exactly as the evaluation case is made. Augmentations: scale jitter (x0.8-1.25 of the working pixel size),
horizontal flip, crops centred on the lung (most), on the real nodule, or anywhere (negatives: mediastinum,
body wall, couch). Evaluation: AP-50 / AP-75 on the whole NDCT slices of ``lung2`` with its fixed synthetic
nodules and the real tumour, with 95 % bootstrap intervals over slices; measured once, with the fp16 weights
as shipped, after the fixed number of steps (no checkpoint is selected on the evaluation case).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .checkpoint import atomic_write_text
from .checkpoint_files import write_checkpoint
from .config import TrainConfig
from .data.slices import crop_boxes
from .device import auto_device
from .errors import ConfigError, LidnetError, OutputExistsError
from .data.cases import prepare_case
from .evaluation.calibration import f1_score_threshold, threshold_stats
from .evaluation.detection import detection_ap as library_ap
from .evaluation.scoring import synthetic_boxes
from .inference import detect_slices, load_detector
from .models.detector import FRCNN_SAMPLING, build_detector
from .models.fcos import build_fcos_detector
from .nodules import DEFAULT_DIAMETER_MM, insert_synthetic_nodules, lung_distance_map
from .protocol import DATA_SEED, EVAL_CASE, IMAGE_SIZE, TRAIN_CASE, TRAIN_NODULES, eval_case
from .sample import load_sample_case
from .serialize import jsonable
from .statistics import bootstrap_ap, match_detections
from .training import STATE_FILE, DetectorTrainer
from .windowing import DEFAULT_HU_RANGE, hu_to_unit

__all__ = ["PretrainRecipe", "RECIPES", "FreshNoduleCrops", "build_pretrain_detector", "detector_ap",
           "run_pretraining", "fp16_state_dict", "CALIBRATION_METHOD", "calibrate_score_threshold",
           "record_score_threshold"]



@dataclass(frozen=True)
class PretrainRecipe:
    """Everything that defines a shipped detector (written into its JSON).

    Attributes
    ----------
    arch : str
        ``"faster_rcnn"`` or ``"fcos"``.
    backbone : str
        ResNet depth (``"resnet18"``).
    seed : int
        Initialisation, data order, crops and nodules.
    steps, batch_size, crop_size : int
        Optimiser steps, crops per step, crop side in working pixels.
    lr, warmup_steps : float, int
        Adam learning rate (peak), linear warm-up; half-cosine decay to 0 over ``steps``.
    max_nodules : int
        Fresh synthetic nodules per crop: uniform in 0..max_nodules.
    scale_jitter : float
        Working pixel size multiplied by a log-uniform factor in [1/(1+s), 1+s].
    p_real, p_anywhere : float
        Probabilities of a crop centred on a real lesion / anywhere in the slice (else on the lung).
    representation_size : int
        Faster R-CNN box-head width.
    fpn_channels : int
        FCOS FPN/head channels.
    items_per_epoch : int
        Dataset length (the sampler's epoch; items are fresh every epoch anyway).
    """

    arch: str = "faster_rcnn"
    backbone: str = "resnet18"
    seed: int = 0
    steps: int = 1200
    batch_size: int = 8
    crop_size: int = 128
    lr: float = 2e-4
    warmup_steps: int = 100
    max_nodules: int = 4
    scale_jitter: float = 0.25
    p_real: float = 0.15
    p_anywhere: float = 0.2
    representation_size: int = 256
    fpn_channels: int = 128
    items_per_epoch: int = 160

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)


#: The recipes of the two shipped detectors.
RECIPES = {
    "faster_rcnn": PretrainRecipe(arch="faster_rcnn", seed=0),
    "fcos": PretrainRecipe(arch="fcos", seed=1),
}


class FreshNoduleCrops(Dataset):
    """Crops of normal-dose slices with fresh synthetic nodules in every item (detector pretraining).

    Parameters
    ----------
    volumes : sequence of (hu, spacing, real_boxes)
        Native NDCT volumes ``(z, y, x)`` float32 HU, their spacing ``(z, y, x)`` mm and real lesion boxes
        ``{slice: (n, 4) xyxy native pixels}``.
    image_size : int
        Working size: a native slice of width W is seen at W / image_size times its pixel size.
    crop_size : int
        Side of the returned crops, working pixels.
    hu_range : (float, float)
        HU range scaled to [0, 1].
    max_nodules, diameter_mm, scale_jitter, p_real, p_anywhere
        See :class:`PretrainRecipe`; ``diameter_mm`` as :func:`src_training.nodules.insert_synthetic_nodules`.
    seed : int
    items_per_epoch : int

    Items
    -----
    ``dataset[(i, epoch)]`` (or ``dataset[i]``, epoch 0) -> ``(ndct, ndct, target)``: the NDCT crop twice
    (``(1, crop, crop)`` float32 [0, 1]; the trainers' batches are (LDCT, NDCT, target) and the detector's T1
    phase reads the NDCT) and ``{"boxes": (n, 4) float32 xyxy crop pixels, "labels": (n,) int64}``. Deterministic
    in ``(seed, epoch, i)``.

    Raises
    ------
    ConfigError
        No volume, or a bad size.
    """

    def __init__(self, volumes: Sequence[tuple[np.ndarray, Sequence[float], dict]], *, image_size: int,
                 crop_size: int, hu_range: tuple[float, float] = DEFAULT_HU_RANGE, max_nodules: int = 3,
                 diameter_mm: Optional[Sequence[float]] = None, scale_jitter: float = 0.25, p_real: float = 0.15,
                 p_anywhere: float = 0.2, seed: int = 0, items_per_epoch: int = 160):
        if not volumes:
            raise ConfigError("FreshNoduleCrops needs at least one NDCT volume.")
        if int(image_size) < 8 or int(crop_size) < 8:
            raise ConfigError(f"image_size and crop_size must be >= 8 pixels, got {image_size}, {crop_size}.")
        self.hu_range = (float(hu_range[0]), float(hu_range[1]))
        self.image_size, self.crop_size = int(image_size), int(crop_size)
        self.max_nodules = int(max_nodules)
        self.diameter_mm = tuple(diameter_mm) if diameter_mm is not None else DEFAULT_DIAMETER_MM
        self.scale_jitter, self.p_real, self.p_anywhere = float(scale_jitter), float(p_real), float(p_anywhere)
        self.seed, self.items = int(seed), int(items_per_epoch)
        self.volumes = []
        for hu, spacing, boxes in volumes:
            hu = np.asarray(hu, dtype=np.float32)
            dist = np.stack([lung_distance_map(hu[z]) for z in range(hu.shape[0])])
            lung_px = [np.argwhere(dist[z] >= 3.0) for z in range(hu.shape[0])]
            self.volumes.append({"hu": hu, "spacing": tuple(float(s) for s in spacing), "dist": dist,
                                 "lung": lung_px,
                                 "boxes": {int(k): np.asarray(v, np.float32).reshape(-1, 4) for k, v in boxes.items()}})

    def __len__(self) -> int:
        return self.items

    def __getitem__(self, item):
        i, epoch = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (int(item), 0)
        rng = np.random.default_rng([self.seed, epoch, i, 4242])
        v = self.volumes[int(rng.integers(len(self.volumes)))]
        hu_vol = v["hu"]
        z = int(rng.integers(hu_vol.shape[0]))
        h, w = hu_vol.shape[1:]
        s = 1.0 + self.scale_jitter
        factor = (w / self.image_size) * math.exp(rng.uniform(-math.log(s), math.log(s)))
        c = int(min(round(self.crop_size * factor), h, w))
        real = v["boxes"].get(z, np.zeros((0, 4), np.float32))
        u = rng.random()
        if u < self.p_real and len(real):
            b = real[int(rng.integers(len(real)))]
            cy = 0.5 * (b[1] + b[3]) + rng.uniform(-0.25, 0.25) * c
            cx = 0.5 * (b[0] + b[2]) + rng.uniform(-0.25, 0.25) * c
        elif u < self.p_real + self.p_anywhere or not len(v["lung"][z]):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        else:
            cy, cx = v["lung"][z][int(rng.integers(len(v["lung"][z])))] + 0.5
        y0 = int(np.clip(round(cy - c / 2), 0, h - c))
        x0 = int(np.clip(round(cx - c / 2), 0, w - c))
        crop = hu_vol[z, y0:y0 + c, x0:x0 + c]
        boxes = crop_boxes(real, x0, y0, c, c, 0.5)
        n = int(rng.integers(0, self.max_nodules + 1))
        crop, new = insert_synthetic_nodules(crop, v["spacing"][1:], rng, n, self.diameter_mm, avoid_boxes=boxes,
                                             lung_distance=v["dist"][z, y0:y0 + c, x0:x0 + c])
        boxes = np.concatenate([boxes, new]).astype(np.float32)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
            boxes = boxes[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], np.float32) + np.array([c, 0, c, 0], np.float32)
        t = torch.from_numpy(np.ascontiguousarray(crop, dtype=np.float32))[None, None]
        out = F.interpolate(t, size=(self.crop_size, self.crop_size), mode="bilinear", align_corners=False,
                            antialias=self.crop_size < c)[0]
        boxes = boxes * (self.crop_size / c)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1.0) & ((boxes[:, 3] - boxes[:, 1]) >= 1.0)
        boxes = boxes[keep]
        img = torch.from_numpy(hu_to_unit(out.numpy(), self.hu_range))
        target = {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.ones(int(keep.sum()), dtype=torch.int64)}
        return img, img, target


def build_pretrain_detector(recipe: PretrainRecipe):
    """A randomly initialised detector of ``recipe`` (Faster R-CNN with :data:`FRCNN_SAMPLING`, or FCOS).

    Raises
    ------
    ConfigError
        Unknown architecture or backbone.
    """
    if recipe.arch == "faster_rcnn":
        return build_detector(recipe.backbone, representation_size=recipe.representation_size, **FRCNN_SAMPLING)
    if recipe.arch == "fcos":
        return build_fcos_detector(recipe.backbone, fpn_channels=recipe.fpn_channels)
    raise ConfigError(f"Unknown detector architecture {recipe.arch!r}; choose faster_rcnn or fcos.")


def fp16_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating-point tensors stored as float16 (integers, e.g. BatchNorm counters, unchanged). Loading into a
    float32 model converts back (``load_state_dict`` copies with dtype conversion)."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in state.items()}


def detector_ap(detector, case, *, boxes: Optional[dict] = None, images_hu: Optional[np.ndarray] = None,
                hu_range=DEFAULT_HU_RANGE, seed: int = 0) -> dict[str, Any]:
    """AP-50 / AP-75 of a detector on whole slices, with 95 % bootstrap intervals over slices.

    Parameters
    ----------
    detector : LesionDetector or FCOSLesionDetector
    case : src_training.data.CaseArrays
        Ground truth ``case.boxes`` (or ``boxes``) and, by default, its NDCT as the images.
    boxes : dict, optional
        Other ground truth ``{slice: (n, 4)}``; with ``case.real_boxes`` the synthetic nodules become ignore
        regions (detecting them is neither a hit nor a false positive).
    images_hu : ndarray (z, y, x), optional
        Images to detect on (default ``case.ndct_hu``).
    hu_range : (float, float)
    seed : int
        Bootstrap seed.

    Returns
    -------
    dict
        ``ap50``, ``ap75`` (library values, :func:`src_training.evaluation.detection_ap`), ``ap50_ci``,
        ``ap75_ci`` (:class:`src_training.statistics.Estimate` dicts), ``n_slices``, ``n_lesions``, and
        ``matches`` (the per-slice :class:`~src_training.statistics.SliceMatches`, for paired comparisons;
        not JSON).
    """
    vol = case.ndct_hu if images_hu is None else images_hu
    gt = case.boxes if boxes is None else boxes
    real_only = boxes is case.real_boxes
    preds, targets = [], []
    for res in detect_slices(detector, vol, hu_range, k=1, score_thresh=0.0):
        preds.append({"boxes": res["boxes"], "scores": res["scores"], "labels": res["labels"]})
        g = np.asarray(gt.get(res["slice"], np.zeros((0, 4))), np.float32).reshape(-1, 4)
        t = {"boxes": g, "labels": np.ones(len(g), np.int64)}
        if real_only:  # the synthetic nodules are ignore regions when the real tumour is scored
            t["ignore"] = synthetic_boxes(case, res["slice"])
        targets.append(t)
    lib = library_ap(preds, targets)
    matches = match_detections(preds, targets)
    return {
        "ap50": lib["ap50"], "ap75": lib["ap75"],
        "ap50_ci": bootstrap_ap(matches, 0.5, seed=seed).to_dict(),
        "ap75_ci": bootstrap_ap(matches, 0.75, seed=seed).to_dict(),
        "n_slices": len(targets), "n_lesions": int(sum(len(t["boxes"]) for t in targets)),
        "matches": matches,
    }


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def measure_detector_file(path: str | Path, device="cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """AP of a detector file as shipped (loaded back with ``weights_only=True``) on the evaluation case's NDCT:
    all lesions, and the real tumour alone (synthetic nodules as ignore regions). Returns the two
    :func:`detector_ap` dicts without their ``matches``."""
    det, _ = load_detector(path, device=device)
    evalc = eval_case(n0=None, simulate=False)
    ap_all = detector_ap(det, evalc)
    ap_real = detector_ap(det, evalc, boxes=evalc.real_boxes)
    for d in (ap_all, ap_real):
        d.pop("matches")
    return ap_all, ap_real


def remeasure(path: str | Path, device="cpu", note: str = "") -> dict[str, Any]:
    """Measure a shipped file again (:func:`measure_detector_file`, :func:`calibrate_score_threshold`) and
    rewrite the ``measured`` and ``score_threshold`` blocks of its JSON record (the file's sha256 must match
    the record's); ``note`` says why (kept in ``remeasured``).

    Raises
    ------
    LidnetError
        No JSON record beside the file, or the weights do not match it.
    """
    path = Path(path)
    meta = path.with_suffix(".json")
    if not meta.is_file():
        raise LidnetError(f"{meta} is missing: only a file written by lidnet pretrain-detector can be re-measured.")
    record = json.loads(meta.read_text(encoding="utf-8"))
    if record.get("sha256") != _sha256(path):
        raise LidnetError(f"{path} does not match its record {meta} (sha256 differs); retrain or restore it.")
    ap_all, ap_real = measure_detector_file(path, device=device)
    record["measured"] = {"eval_all_lesions": ap_all, "eval_real_tumour": ap_real}
    record["score_threshold"] = calibrate_score_threshold(path, device=device)
    record["remeasured"] = {"date": time.strftime("%Y-%m-%d"), "note": note}
    atomic_write_text(meta, json.dumps(jsonable(record), indent=2) + "\n")
    return record


#: How the shipped detectors' default score threshold is chosen (written into their JSON record).
CALIBRATION_METHOD = f"max F1 at IoU 0.5 on {TRAIN_CASE} NDCT (calibration case)"


def calibrate_score_threshold(path: str | Path, device="cpu", *, max_slices: Optional[int] = None) -> dict[str, Any]:
    """The default score threshold of a detector file: max F1 at IoU 0.5 on the calibration case.

    The calibration case is the training case :data:`~src_training.protocol.TRAIN_CASE` (``lung1``) as the
    protocol prepares it for LIDnet's training (NDCT only, :data:`~src_training.protocol.TRAIN_NODULES`
    synthetic nodules per slice with :data:`~src_training.protocol.DATA_SEED`, whole slices at
    :data:`~src_training.protocol.IMAGE_SIZE` px, plus the real tumour); the evaluation case ``lung2`` is never
    used to choose it. The detector runs as :func:`detector_ap` runs it (every detection, score >= 0), then
    :func:`src_training.evaluation.calibration.f1_score_threshold` picks the threshold.

    Parameters
    ----------
    path : path-like
        A detector file (loaded with ``weights_only=True``, as shipped).
    device : str or torch.device
    max_slices : int, optional
        Only this many slices of the case (tests).

    Returns
    -------
    dict
        ``value`` (the threshold in [0, 1]), ``method``, ``case``, ``iou``, ``f1``, ``precision``, ``recall``,
        ``n_kept``, ``n_true``, ``n_lesions``, ``n_slices``, ``at_0_5`` (the same numbers at the old fixed
        0.5 default), ``measured`` (date), JSON-ready.

    Raises
    ------
    LidnetError
        Missing sample data, an unreadable file, or a detector that matches no lesion (EvaluationError).
    """
    det, config = load_detector(path, device=device)
    hu_range = tuple(float(v) for v in config.get("hu_range", DEFAULT_HU_RANGE))
    case = prepare_case(f"sample:{TRAIN_CASE}", n0=None, seed=DATA_SEED, image_size=IMAGE_SIZE,
                        synthetic_nodules_per_slice=TRAIN_NODULES, simulate=False, max_slices=max_slices)
    preds, targets = [], []
    for res in detect_slices(det, case.ndct_hu, hu_range, k=1, score_thresh=0.0):
        preds.append({"boxes": res["boxes"], "scores": res["scores"]})
        targets.append({"boxes": np.asarray(case.boxes.get(res["slice"], np.zeros((0, 4))), np.float32).reshape(-1, 4)})
    best = f1_score_threshold(preds, targets, iou_threshold=0.5)
    old = threshold_stats(preds, targets, 0.5, iou_threshold=0.5)
    return {
        "value": best.value, "method": CALIBRATION_METHOD, "case": TRAIN_CASE, "iou": best.iou_threshold,
        "f1": round(best.f1, 4), "precision": round(best.precision, 4), "recall": round(best.recall, 4),
        "n_kept": best.n_kept, "n_true": best.n_true, "n_lesions": best.n_lesions, "n_slices": best.n_images,
        "at_0_5": {"f1": round(old.f1, 4), "precision": round(old.precision, 4), "recall": round(old.recall, 4),
                   "n_kept": old.n_kept},
        "measured": time.strftime("%Y-%m-%d"),
    }


def record_score_threshold(path: str | Path, device="cpu") -> dict[str, Any]:
    """Calibrate a shipped detector file (:func:`calibrate_score_threshold`) and write the result into the
    ``score_threshold`` entry of its JSON record (atomic; the weights file is never touched). The Detect
    widget's threshold defaults to it.

    Returns
    -------
    dict
        The ``score_threshold`` entry.

    Raises
    ------
    LidnetError
        No JSON record beside the file, the weights do not match it (sha256), or the calibration fails.
    """
    path = Path(path)
    meta = path.with_suffix(".json")
    if not meta.is_file():
        raise LidnetError(f"{meta} is missing: only a file written by lidnet pretrain-detector can be calibrated.")
    record = json.loads(meta.read_text(encoding="utf-8"))
    if record.get("sha256") != _sha256(path):
        raise LidnetError(f"{path} does not match its record {meta} (sha256 differs); retrain or restore it.")
    entry = calibrate_score_threshold(path, device=device)
    record["score_threshold"] = entry
    atomic_write_text(meta, json.dumps(jsonable(record), indent=2) + "\n")
    return entry


def run_pretraining(recipe: PretrainRecipe, out: str | Path, *, run_dir: Optional[str | Path] = None,
                    device: str = "auto", cache_dir: Optional[str | Path] = None, overwrite: bool = False,
                    resume: bool = True, log: Optional[Callable[[str], None]] = None,
                    command: str = "") -> dict[str, Any]:
    """Train a detector of ``recipe`` on the training case's NDCT and write the shipped files.

    Writes ``out`` (fp16 ``detector.pt``: ``kind, arch, backbone, hparams, state_dict, config, method="ndct",
    step, recipe, storage="float16"``) and ``out`` with suffix ``.json`` (recipe, command, data, seed, measured
    AP with intervals, the calibrated default score threshold (:func:`calibrate_score_threshold`), sha256,
    wall time, machine). Training runs through
    :class:`src_training.training.DetectorTrainer` in ``run_dir`` (default ``<out>.run/``: progress.jsonl,
    STOP/PAUSE, ``trainer_state.pt``; an interrupted run resumes from it when ``resume``).

    Parameters
    ----------
    recipe : PretrainRecipe
    out : path-like
        The weights file to write.
    run_dir : path-like, optional
    device : str
        ``auto`` (cuda > mps > cpu), ``cpu``, ``cuda``...
    cache_dir : path-like, optional
        Unused by the NDCT-only data; kept for the evaluation case's loader.
    overwrite : bool
        Replace an existing ``out`` (default: refuse).
    resume : bool
        Continue an interrupted run found in ``run_dir``.
    log : callable(str), optional
        Progress lines (default stderr).
    command : str
        The command line, recorded in the JSON.

    Returns
    -------
    dict
        The JSON record.

    Raises
    ------
    OutputExistsError
        ``out`` exists and ``overwrite`` is False.
    LidnetError
        Missing sample data, training failure.
    """
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it.")
    run_dir = Path(run_dir) if run_dir is not None else out.with_name(out.name + ".run")
    dev = auto_device(device)
    t_start = time.perf_counter()
    train = load_sample_case(TRAIN_CASE)
    data = FreshNoduleCrops([(train.ndct.hu, train.ndct.spacing, train.boxes)], image_size=IMAGE_SIZE,
                            crop_size=recipe.crop_size, max_nodules=recipe.max_nodules,
                            scale_jitter=recipe.scale_jitter, p_real=recipe.p_real, p_anywhere=recipe.p_anywhere,
                            seed=recipe.seed, items_per_epoch=recipe.items_per_epoch)
    torch.manual_seed(recipe.seed)
    detector = build_pretrain_detector(recipe)
    config = TrainConfig(detector_backbone=recipe.backbone, t1=recipe.steps, t2=0, t3=0, rounds=0,
                         batch_size=recipe.batch_size, lr_detector=recipe.lr, detector_optimizer="adam",
                         lr_schedule="cosine", warmup_steps=recipe.warmup_steps, seed=recipe.seed, device=str(dev),
                         checkpoint_every=250, log_every=10, train_data=[f"sample:{TRAIN_CASE}"],
                         image_size=IMAGE_SIZE, crop_size=recipe.crop_size)
    trainer = DetectorTrainer(config, data, detector=detector, device=dev, run_dir=run_dir)
    state = run_dir / STATE_FILE
    if resume and state.is_file():
        trainer.resume(state)
        log(f"  resuming {state} at step {trainer.global_step}/{trainer.total_steps}")
    log(f"pretrain-detector: {recipe.arch} {recipe.backbone} on {TRAIN_CASE} NDCT (fresh synthetic nodules), "
        f"{recipe.steps} steps x {recipe.batch_size} crops of {recipe.crop_size} px, {dev}, seed {recipe.seed}")
    last = time.perf_counter()
    for ev in trainer.run():
        now = time.perf_counter()
        if ev.event == "step" and (now - last > 60 or ev.step == ev.phase_steps):
            last = now
            rate = ev.elapsed_s / max(1, ev.global_step)
            log(f"  step {ev.global_step}/{ev.total_steps} det={ev.losses.get('det', float('nan')):.3f} "
                f"[{ev.elapsed_s:.0f} s, {rate:.2f} s/step, ETA {rate * (ev.total_steps - ev.global_step) / 60:.0f} min]")
        elif ev.event in ("stopped", "error"):
            log(f"  {ev.event}: {ev.message}")
            if ev.event == "stopped":
                return {"stopped": True, "step": ev.global_step}
    t_train = time.perf_counter() - t_start
    rec = trainer.detector_checkpoint()
    rec.state_dict = fp16_state_dict(rec.state_dict)
    rec.hparams = dict(getattr(trainer.detector, "hparams", {}))
    rec.recipe, rec.storage, rec.method = recipe.to_dict(), "float16", "ndct"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_checkpoint(out, rec)
    ap_all, ap_real = measure_detector_file(out, device=dev)
    record = {
        "file": out.name,
        "sha256": _sha256(out),
        "size_bytes": out.stat().st_size,
        "arch": recipe.arch,
        "backbone": recipe.backbone,
        "hparams": rec.hparams,
        "recipe": recipe.to_dict(),
        "sampling": FRCNN_SAMPLING if recipe.arch == "faster_rcnn" else {},
        "command": command or f"lidnet pretrain-detector --arch {recipe.arch} --out {out}",
        "data": {"train": f"{TRAIN_CASE} NDCT (sample_data/, 20 slices), fresh synthetic nodules every item",
                 "eval": f"{EVAL_CASE} NDCT, whole slices at {IMAGE_SIZE} px, synthetic nodules (data seed "
                         f"{DATA_SEED}) + the real tumour", "image_size": IMAGE_SIZE},
        "measured": {"eval_all_lesions": ap_all, "eval_real_tumour": ap_real},
        "score_threshold": calibrate_score_threshold(out, device=dev),
        "train_seconds": round(t_train, 1),
        "machine": {"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
                    "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()},
        "date": time.strftime("%Y-%m-%d"),
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(jsonable(record), indent=2) + "\n")
    log(f"  wrote {out} ({out.stat().st_size / 1e6:.1f} MB); {EVAL_CASE} NDCT AP-50 "
        f"{100 * ap_all['ap50']:.1f} % [{100 * ap_all['ap50_ci']['low']:.1f}, {100 * ap_all['ap50_ci']['high']:.1f}], "
        f"AP-75 {100 * ap_all['ap75']:.1f} % ({ap_all['n_lesions']} lesions, {ap_all['n_slices']} slices)")
    return record
