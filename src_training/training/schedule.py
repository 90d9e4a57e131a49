"""The step schedule of a training run: phases that declare what they train, and the learning-rate schedule.

Owns :class:`Phase` (name, round, number of steps, and which networks it updates / leaves trainable), the
two network roles a phase can name (:data:`DENOISER`, :data:`DETECTOR`), each network's progress through a
schedule (:func:`network_progress`) and the learning-rate multiplier of ``config.lr_schedule`` /
``config.warmup_steps`` (:func:`lr_factor`). A trainer lists its phases; the step engine
(:mod:`src_training.training.engine`) reads only these declarations, never a phase's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

#: The denoiser F (LDCT -> NDCT estimate).
DENOISER = "denoiser"
#: The downstream (task) network: LIDnet's detector, or TOD-Net's frozen detector / U-Net segmenter.
DETECTOR = "detector"
#: The roles a :class:`Phase` can name, in the order of :meth:`Phase.modes`.
ROLES = (DENOISER, DETECTOR)


@dataclass(frozen=True)
class Phase:
    """One phase of a schedule (Algorithm 1 of Chen et al., ACM MM 2021: T1, then T2/T3 per round).

    Attributes
    ----------
    name : str
        Event name (:data:`~src_training.training.events.PHASES`).
    round : int
        0 for T1 / baseline / detector-only phases, 1..rounds for T2 / T3 / joint.
    steps : int
        Optimisation steps of the phase (a phase of 0 steps is dropped from the schedule).
    trains : tuple of str
        Roles (:data:`ROLES`) the phase's steps update; the learning-rate schedule of a network counts the
        phases that train it (:func:`network_progress`).
    unfrozen : tuple of str, optional
        Roles trainable when a step begins (the others are frozen: no gradient, norm layers keep their
        statistics); default ``trains``. A step may switch later (the simultaneous ablation's ``joint`` step
        starts with the denoiser only, then updates the detector).

    Raises
    ------
    ValueError
        A role outside :data:`ROLES`.
    """

    name: str
    round: int
    steps: int
    trains: tuple[str, ...] = ()
    unfrozen: Optional[tuple[str, ...]] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "trains", tuple(self.trains))
        object.__setattr__(self, "unfrozen", tuple(self.trains if self.unfrozen is None else self.unfrozen))
        bad = [r for r in self.trains + self.unfrozen if r not in ROLES]
        if bad:
            raise ValueError(f"Phase {self.name}: unknown network role(s) {bad}; use {', '.join(ROLES)}.")

    @property
    def modes(self) -> tuple[bool, bool]:
        """``(train_denoiser, train_detector)`` at the start of each step."""
        return DENOISER in self.unfrozen, DETECTOR in self.unfrozen

    @property
    def detector_only(self) -> bool:
        """True when only the detector is trainable at the start of a step (T1, T3): a trainer with both
        networks draws these phases' batches from the detector's own stream."""
        return self.modes == (False, True)

    def key(self) -> list:
        """``[name, round, steps]``: how ``trainer_state.pt`` records the phase (compared on resume)."""
        return [self.name, self.round, self.steps]


def network_progress(schedule: Sequence[Phase], phase_index: int, phase_step: int, role: str) -> tuple[int, int]:
    """Steps already made and steps in all of the network ``role`` over ``schedule``.

    Counts the phases whose :attr:`Phase.trains` names ``role``: those before ``phase_index`` in full, the
    current one up to ``phase_step`` completed steps.

    Returns
    -------
    (int, int)
        ``(done, total)`` steps.
    """
    done = total = 0
    for i, ph in enumerate(schedule):
        if role not in ph.trains:
            continue
        total += ph.steps
        if i < phase_index:
            done += ph.steps
        elif i == phase_index:
            done += phase_step
    return done, total


def lr_factor(done: int, total: int, warmup_steps: int, lr_schedule: str) -> float:
    """Multiplier of a network's base learning rate for its next step.

    Linear warm-up ``(done + 1) / warmup_steps`` over the first ``warmup_steps`` steps, then 1
    (``lr_schedule="constant"``) or a half cosine from 1 to 0 over the remaining ``total - warmup_steps``
    steps (``"cosine"``, SGDR without restarts, Loshchilov & Hutter 2017).

    Parameters
    ----------
    done, total : int
        The network's completed and total steps (:func:`network_progress`).
    warmup_steps : int
        ``config.warmup_steps`` (0 = no warm-up).
    lr_schedule : str
        ``config.lr_schedule``: ``"constant"`` or ``"cosine"``.

    Returns
    -------
    float
        In [0, 1].
    """
    warm = int(warmup_steps)
    f = min(1.0, (done + 1) / warm) if warm > 0 else 1.0
    if lr_schedule == "cosine" and total > warm:
        prog = min(1.0, max(0.0, (done - warm) / max(1, total - warm)))
        f *= 0.5 * (1.0 + np.cos(np.pi * prog)) if done >= warm else 1.0
    return float(f)
