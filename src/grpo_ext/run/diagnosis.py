"""Diagnoses of a run that went wrong, as data: which checkpoints are sound after a divergence or a fall in held-out
accuracy, and why a stretch of steps had no learning signal. The monitors render them into messages; the decisions
are made, and tested, here."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from grpo_ext.run import checkpoints
from grpo_ext.run.rundir import RunDir

SAME_REWARD = 1e-6  # mean rewards closer than this count as the same


@dataclass(frozen=True)
class DivergedCheckpoints:
    """The complete checkpoints of a run that diverged at ``step``, by what they hold.

    Attributes:
        suspect: saved after the last step logged as finite and before the divergence: they may hold NaN weights.
        started_from: the one holding the weights the diverged step started from (step - 1, logged as finite).
            Resumed, it takes the same step again (same weights, and the same batch, since a checkpoint restores the
            random state), whatever the learning rate.
        sound: saved before both, oldest first: resumed with smaller updates, they take another path.
    """

    suspect: list[Path]
    started_from: Path | None
    sound: list[Path]


def diverged_checkpoints(run_dir: Path | RunDir, step: int, last_finite: int) -> DivergedCheckpoints:
    """Sort ``run_dir``'s complete checkpoints for a divergence at ``step``, the last finite logged step being
    ``last_finite``."""
    found = checkpoints.complete(run_dir)
    steps = {p: checkpoints.checkpoint_step(p) or 0 for p in found}
    return DivergedCheckpoints(
        suspect=[p for p in found if last_finite < steps[p] < step],
        started_from=next((p for p in found if steps[p] == step - 1 <= last_finite), None),
        sound=[p for p in found if steps[p] <= last_finite and steps[p] < step - 1],
    )


def saved_by(run_dir: Path | RunDir, step: int) -> list[Path]:
    """The complete checkpoints saved at ``step`` or before it (the one of a best evaluation, or earlier), oldest
    first: where a run that got worse after ``step`` goes on from."""
    return [p for p in checkpoints.complete(run_dir) if (checkpoints.checkpoint_step(p) or 0) <= step]


def saved_before(run_dir: Path | RunDir, step: int) -> list[Path]:
    """The checkpoints (complete or not) of steps before ``step``, oldest first."""
    return [p for p in checkpoints.checkpoints(run_dir) if (checkpoints.checkpoint_step(p) or 0) < step]


class NoSignal(enum.Enum):
    """Why every group of a stretch of steps scored alike (GRPO's advantage 0 everywhere)."""

    COLLAPSED = "collapsed"  # every completion scored the same, below the run's best mean reward: a collapse
    ALIKE = "alike"  # every completion scored the same: never what the reward pays for, or mastered
    SPLIT = "split"  # the groups differ from each other: each prompt is always or never solved


def why_no_signal(reward: float, spread: float, best: float | None) -> NoSignal:
    """The kind of a step without signal, from its mean ``reward``, the ``spread`` of its rewards (TRL's
    ``reward_std``) and the best mean reward logged before it (``None``: none)."""
    if spread == 0 and best is not None and best > reward + SAME_REWARD:
        return NoSignal.COLLAPSED
    return NoSignal.ALIKE if spread == 0 else NoSignal.SPLIT
