"""``run.diagnosis``: which checkpoints are sound after a divergence or a fall, and why a stretch had no signal,
decided on checkpoint directories written here (complete or not), without training."""

from __future__ import annotations

import json

import pytest

from grpo_ext.run import diagnosis
from grpo_ext.run.diagnosis import NoSignal, why_no_signal


def checkpoints_at(run_dir, complete: list[int], incomplete: tuple[int, ...] = ()) -> None:
    """Checkpoint directories as the Trainer leaves them: complete ones with their ``trainer_state.json``."""
    for step in complete:
        (run_dir / f"checkpoint-{step}").mkdir()
        (run_dir / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    for step in incomplete:
        (run_dir / f"checkpoint-{step}").mkdir()


def names(paths) -> list[str]:
    return [p.name for p in paths]


def test_a_divergence_sorts_the_checkpoints_into_suspect_started_from_and_sound(tmp_path):
    """Diverged at step 6, the last step logged as finite 4: checkpoint-5, saved after it, is suspect and so not the
    start of step 6 either; 1-3 are sound; checkpoint-4, never finished, is none of them."""
    checkpoints_at(tmp_path, [1, 2, 3, 5], incomplete=(4,))
    found = diagnosis.diverged_checkpoints(tmp_path, step=6, last_finite=4)
    assert names(found.suspect) == ["checkpoint-5"]
    assert found.started_from is None  # checkpoint-5 is after the last finite step: not a sound start
    assert names(found.sound) == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]


def test_the_checkpoint_a_diverged_step_started_from_is_not_sound(tmp_path):
    """Diverged at step 4 with every step before it finite: checkpoint-3 holds the weights step 4 started from
    (resumed, it takes the same step again), so the newest sound one is checkpoint-2."""
    checkpoints_at(tmp_path, [1, 2, 3])
    found = diagnosis.diverged_checkpoints(tmp_path, step=4, last_finite=3)
    assert found.suspect == []
    assert found.started_from is not None and found.started_from.name == "checkpoint-3"
    assert names(found.sound) == ["checkpoint-1", "checkpoint-2"]


def test_no_checkpoint_is_sound_before_the_first(tmp_path):
    found = diagnosis.diverged_checkpoints(tmp_path, step=2, last_finite=1)
    assert found == diagnosis.DivergedCheckpoints([], None, [])


def test_where_a_run_that_got_worse_goes_on_from(tmp_path):
    checkpoints_at(tmp_path, [10, 20, 30], incomplete=(15,))
    assert names(diagnosis.saved_by(tmp_path, 20)) == ["checkpoint-10", "checkpoint-20"]
    assert diagnosis.saved_by(tmp_path, 5) == []
    assert names(diagnosis.saved_before(tmp_path, 20)) == ["checkpoint-10", "checkpoint-15"]  # complete or not


@pytest.mark.parametrize(
    ("reward", "spread", "best", "kind"),
    [
        (0.0, 0.0, 0.581, NoSignal.COLLAPSED),  # every completion alike, below a better mean reward before
        (0.0, 0.0, None, NoSignal.ALIKE),  # alike from the start: never what the reward pays for
        (1.0, 0.0, 1.0, NoSignal.ALIKE),  # alike at the best: mastered
        (0.5, 0.0, 0.5 + 1e-9, NoSignal.ALIKE),  # within the margin of the same reward
        (0.5, 0.4, 0.9, NoSignal.SPLIT),  # the groups differ: each prompt always or never solved
    ],
)
def test_why_a_stretch_had_no_learning_signal(reward, spread, best, kind):
    assert why_no_signal(reward, spread, best) is kind
