"""Training loops of napari-lidnet: LIDnet's collaborative training, the baselines, the NDCT detector and
TOD-Net, with the run-folder protocol the GUI watches.

Source: Chen et al., "Low-dose CT denoising with lesion-aware ...", ACM MM 2021, arXiv:2104.08845,
Algorithm 1 (collaborative training: T1 detector on NDCT; per round T2 denoiser with the frozen detector,
loss Eq. 8, and T3 detector on the frozen denoiser's output).

Every trainer is a generator of :class:`ProgressEvent` (``run()``), writes one JSON line per event to
``RUN_DIR/progress.jsonl``, honours ``RUN_DIR/STOP`` / ``RUN_DIR/PAUSE`` and ``request_stop()``, and saves
atomically: ``trainer_state.pt`` (exact resumption), ``denoiser.pt`` and/or ``detector.pt`` (formats in
``docs/architecture.md``).

One concept per module (each imports its siblings directly, never this package):

========================  =====================================================================================
``events``                run-folder protocol: file names, :class:`ProgressEvent`, :func:`read_progress`,
                          STOP / PAUSE files (shared with the napari Train widget)
``rng``                   seeding, capture and restore of the global RNG states
``batches``               batch order: the endless, resumable, shardable :class:`BatchStream`
``schedule``              :class:`Phase` (each declares which networks it trains), learning-rate schedule
``networks``              default denoiser/detector, their optimizers, freezing, CPU weight copies
``optim``                 one optimizer update (AMP, gradient averaging, clipping, gradient shares)
``checkpoints``           ``denoiser.pt`` / ``detector.pt`` dicts, ``trainer_state.pt`` save and resume
``engine``                :class:`TrainerEngine`: the step loop every trainer runs on
``critic``                :class:`CriticMixin`: the WGAN-GP critic (Eq. 5, Eq. 7)
``detector``              the detector update (T1/T3), :class:`DetectorTrainer`, :func:`train_detector`
``lidnet``                :class:`CollaborativeTrainer` (Algorithm 1 and its ablations)
``baseline``              :class:`BaselineTrainer` (MAE or the published loss)
``todnet``                :class:`TODNetTrainer` (Zhang et al., MICCAI 2021)
``run``                   ``lidnet train``: :data:`TRAINERS`, data preparation, signals (:func:`run_training`)
========================  =====================================================================================

This ``__init__`` only re-exports the public names (and the private ones older code and tests import).
"""

from __future__ import annotations

from src_training.training.baseline import BaselineTrainer
from src_training.training.batches import BatchStream
from src_training.training.checkpoints import RESUME_FREE_KEYS
from src_training.training.critic import CriticMixin
from src_training.training.detector import DetectorTrainer, detector_update, train_detector
from src_training.training.engine import TrainerEngine
from src_training.training.events import (
    CONFIG_FILE,
    DENOISER_FILE,
    DETECTOR_FILE,
    EVENT_TYPES,
    PAUSE_FILE,
    PHASES,
    PROGRESS_FILE,
    SEGMENTER_FILE,
    STATE_FILE,
    STOP_FILE,
    ProgressEvent,
    ProgressWriter,
    append_event,
    pause_file_exists,
    read_progress,
    remove_stop_file,
    stop_file_exists,
)
from src_training.training.lidnet import CollaborativeTrainer
from src_training.training.networks import cpu_state_dict, norm_layers
from src_training.training.optim import MixedPrecision, amp_dtype
from src_training.training.rng import rng_state, seed_everything, set_rng_state
from src_training.training.run import TRAINERS, prepare_dataset, print_event, run_training
from src_training.training.schedule import DENOISER, DETECTOR, Phase
from src_training.training.todnet import TODNetTrainer

# Names of the single-module training.py, kept for code and tests that import them.
_TrainerBase = TrainerEngine
_CriticMixin = CriticMixin
_BatchStream = BatchStream
_Phase = Phase
_amp_dtype = amp_dtype
_rng_state = rng_state
_set_rng_state = set_rng_state
_cpu_state_dict = cpu_state_dict
_norm_layers = norm_layers
_RESUME_FREE_KEYS = RESUME_FREE_KEYS
_prepare_dataset = prepare_dataset
_append_event = append_event
_print_event = print_event

__all__ = [
    "BaselineTrainer",
    "BatchStream",
    "CONFIG_FILE",
    "CollaborativeTrainer",
    "CriticMixin",
    "DENOISER",
    "DENOISER_FILE",
    "DETECTOR",
    "DETECTOR_FILE",
    "DetectorTrainer",
    "EVENT_TYPES",
    "MixedPrecision",
    "PAUSE_FILE",
    "PHASES",
    "PROGRESS_FILE",
    "Phase",
    "ProgressEvent",
    "ProgressWriter",
    "RESUME_FREE_KEYS",
    "SEGMENTER_FILE",
    "STATE_FILE",
    "STOP_FILE",
    "TODNetTrainer",
    "TRAINERS",
    "TrainerEngine",
    "amp_dtype",
    "append_event",
    "cpu_state_dict",
    "detector_update",
    "norm_layers",
    "pause_file_exists",
    "prepare_dataset",
    "print_event",
    "read_progress",
    "remove_stop_file",
    "rng_state",
    "run_training",
    "seed_everything",
    "set_rng_state",
    "stop_file_exists",
    "train_detector",
]
