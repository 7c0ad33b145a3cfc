"""Online prompt sampling (``sampler=adaptive``, ``sampler=curriculum``), end to end on the CPU with the tiny model."""

from __future__ import annotations

import json
import shutil

import pytest

from grpo_ext.errors import ConfigError
from grpo_ext.run.records import read_metrics
from grpo_ext.train import train
from support import FAST, compose_config


def test_a_run_whose_every_prompt_is_retired_stops_there_with_its_best_model(tmp_path, capsys):
    """Each group is solved in every completion or in none (the reward reads only the answer): one group each and
    every prompt is retired; the run stops at the step after the last, saying why, its final and best model kept."""
    cfg = compose_config(["task=arithmetic", "model=tiny", *FAST, "task.train_size=8", "trainer.max_steps=12",
                          "task.rewards=[{name: reward_fixtures.solves_even_answers}]", "sampler=adaptive",
                          "sampler.retire_after=1", "eval.during_training=true"])  # fmt: skip
    stopped = train(cfg, tmp_path)
    assert stopped is not None and "the sampler ended it (every prompt is retired" in stopped
    steps = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5]  # 4 batches of unseen prompts, 1 drawn before the last scored
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "stopped" and "every prompt is retired" in status["reason"]
    assert (tmp_path / "final_model" / "model.safetensors").is_file() and (tmp_path / "best.json").is_file()
    assert (tmp_path / "sampler.png").is_file()
    out = capsys.readouterr().out
    assert "the sampler ended it" in out
    histogram = [r for r in read_metrics(tmp_path) if "sampler/prompts_unseen" in r]
    assert histogram[0]["sampler/prompts_unseen"] == 8 and histogram[-1]["sampler/prompts_unseen"] == 0
    assert histogram[-1]["sampler/prompts_all_solved"] + histogram[-1]["sampler/prompts_none_solved"] == 8


def test_a_curriculum_starts_at_the_lowest_level_moves_up_when_it_is_passed_and_back_when_failed(tmp_path):
    cfg = compose_config(["task=arithmetic", "model=tiny", *FAST, "task.operand_digits=[1,2]", "trainer.max_steps=5",
                          "task.rewards=[{name: reward_fixtures.solves_level_one}]", "sampler=curriculum",
                          "sampler.window=2", "sampler.advance=0.9"])  # fmt: skip
    train(cfg, tmp_path)
    steps = [r for r in read_metrics(tmp_path) if "loss" in r]
    # batch 0 (2 groups at level 1, all solved) is scored at step 1; batch 2, drawn then, is the first at level 2;
    # its 2 groups fail (none solved: below sampler.retreat=0.2), and batch 4 is back at level 1
    assert [r["sampler/level"] for r in steps] == [1, 1, 2, 2, 1]
    assert [r["sampler/all_solved"] for r in steps] == [1, 1, 0, 0, 1]


def test_a_curriculum_on_a_task_without_levels_is_refused_before_the_model_loads(tmp_path):
    cfg = compose_config(["task=mathexpr", "model=tiny", *FAST, "sampler=curriculum"])
    with pytest.raises(ConfigError, match="sampler=curriculum needs the rows' levels, and task mathexpr's"):
        train(cfg, tmp_path)


@pytest.mark.slow
def test_a_sampled_run_resumed_from_a_checkpoint_draws_the_prompts_an_unbroken_run_draws(tmp_path):
    """Killed after its checkpoint at step 3 (everything after it removed), the run resumes with the sampler's state
    and draws, scores and trains steps 4 to 6 as the run that was never stopped: pass rates follow the sampled
    completions, so the draws after the checkpoint depend on every group before it."""
    overrides = ["task=arithmetic", "model=tiny", *FAST, "task.train_size=12", "trainer.max_steps=6",
                 "trainer.save_strategy=steps", "trainer.save_steps=3", "trainer.learning_rate=1e-3",
                 "task.rewards=[{name: reward_fixtures.solves_even_lengths}, {name: reward_fixtures.prefers_short}]",
                 "sampler=adaptive", "sampler.weight=0.2", "sampler.solved=0.75", "sampler.failed=0.25"]  # fmt: skip
    train(compose_config(overrides), tmp_path / "unbroken")
    shutil.copytree(tmp_path / "unbroken", tmp_path / "resumed", ignore=shutil.ignore_patterns("checkpoint-6"))
    shutil.rmtree(tmp_path / "resumed" / "final_model")
    (tmp_path / "resumed" / "status.json").unlink()
    train(compose_config(overrides), tmp_path / "resumed")
    one, two = (json.loads((tmp_path / name / "checkpoint-6" / "sampler.json").read_text())
                for name in ("unbroken", "resumed"))  # fmt: skip
    assert len(one["seen"]) == 12 and one == two
    keys = ("step", "loss", "reward", "sampler/all_solved", "sampler/unseen")
    first, second = ([{k: r.get(k) for k in keys} for r in read_metrics(tmp_path / name) if "loss" in r]
                     for name in ("unbroken", "resumed"))  # fmt: skip
    assert [r["step"] for r in second] == [1, 2, 3, 4, 5, 6] and first == second


def test_a_run_resumed_with_a_sampler_from_a_checkpoint_without_its_state_is_refused(tmp_path):
    overrides = ["task=arithmetic", "model=tiny", *FAST, "trainer.save_strategy=steps", "trainer.save_steps=2"]
    train(compose_config(overrides), tmp_path)
    with pytest.raises(ConfigError, match="sampler=adaptive: it holds no sampler.json"):
        train(compose_config([*overrides, "sampler=adaptive", f"resume={tmp_path / 'checkpoint-2'}"]), tmp_path)
