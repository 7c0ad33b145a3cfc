"""``task=reasoning_gym`` and the ``reasoning_gym`` reward: rows from reasoning-gym's generators, offline and seeded,
scored by each generator's own ``score_answer`` in worker processes."""

from __future__ import annotations

import json
import sys
from collections import Counter

import pytest

from grpo_ext.rewards import build_reward
from grpo_ext.rewards.reasoning_gym import extract_answer, score_entries
from grpo_ext.tasks import build_task, task_rewards
from support import compose_config

TWO = ["task=reasoning_gym", "task.datasets={basic_arithmetic: {weight: 1, max_terms: 3}, chain_sum: {weight: 3}}",
       "task.train_size=40", "task.eval_size=8"]  # fmt: skip


def test_rows_come_from_each_generator_by_weight_seeded_and_never_both_held_out_and_trained_on():
    splits = build_task(compose_config(TWO).task)
    assert Counter(splits.train["rg_dataset"]) == {"basic_arithmetic": 10, "chain_sum": 30}
    assert Counter(splits.eval["rg_dataset"]) == {"basic_arithmetic": 2, "chain_sum": 6}
    held_out = {json.loads(e)["question"] for e in splits.eval["rg_entry"]}
    assert not held_out & {json.loads(e)["question"] for e in splits.train["rg_entry"]}
    row = splits.train[0]
    system, user = row["prompt"]
    assert system["role"] == "system" and "<answer>answer here</answer>" in system["content"]
    assert user["content"] == json.loads(row["rg_entry"])["question"]
    assert row["reference"] == f"<answer>{row['answer']}</answer>"
    again = build_task(compose_config(TWO).task)
    assert again.train["rg_entry"] == splits.train["rg_entry"]  # deterministic from task.seed
    other = build_task(compose_config([*TWO, "task.seed=1"]).task)
    assert other.train["rg_entry"] != splits.train["rg_entry"]


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("task.datasets={nope: {}}", "task.datasets.nope: reasoning-gym has no generator 'nope'"),
        ("task.datasets={chain_sum: {max_termz: 3}}", "unexpected keyword argument 'max_termz'; its knobs: "),
        ("task.datasets={chain_sum: {weight: -1}}", "task.datasets.chain_sum.weight=-1: a weight must be a number"),
        ("task.datasets={chain_sum: {min_terms: 5, max_terms: 2}}", "task.datasets.chain_sum: reasoning-gym refused"),
        ("task.prompt=nope", "task.prompt='nope': reasoning-gym's prompts are"),
    ],
)
def test_settings_reasoning_gym_refuses_are_named(override, said):
    base = [o for o in TWO if not o.startswith("task.datasets")] + ["task.datasets={chain_sum: {}}"]
    with pytest.raises(ValueError, match=None) as refused:
        build_task(compose_config([*base, override]).task)
    assert said in str(refused.value), refused.value


def test_without_the_extra_the_task_and_the_reward_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "reasoning_gym", None)  # import reasoning_gym raises ImportError
    monkeypatch.setitem(sys.modules, "reasoning_gym.factory", None)
    with pytest.raises(ValueError, match=r"needs reasoning-gym: pip install 'grpo-ext\[reasoning_gym\]'"):
        build_task(compose_config(TWO).task)
    with pytest.raises(ValueError, match=r"the reasoning_gym reward needs reasoning-gym: pip install"):
        build_reward("reasoning_gym")


def test_a_completion_is_scored_by_its_generator_and_a_scorer_that_raises_scores_zero():
    splits = build_task(compose_config(TWO).task)
    entries = splits.eval["rg_entry"][:2]
    right = [f"Thinking... <answer>{json.loads(e)['answer']}</answer>" for e in entries]
    assert score_entries(right, entries) == [1.0, 1.0]
    assert score_entries(["<answer>nonsense</answer>", "no tags"], entries) == [0.0, 0.0]
    broken = json.dumps({"question": "q", "answer": "1", "metadata": {"source_dataset": "no_such_generator"}})
    assert score_entries(["<answer>1</answer>"], [broken]) == [0.0]  # the scorer's error: a wrong answer
    assert extract_answer("<answer>1</answer> then <answer> 2 </answer>") == "2"


@pytest.mark.slow
def test_the_reward_scores_in_worker_processes_and_a_scorer_past_its_deadline_gives_none():
    cfg = compose_config([*TWO, "task.rewards=[{name: reasoning_gym, params: {timeout: 5.0, workers: 1}}]"])
    splits = build_task(cfg.task)
    (reward,), _ = task_rewards(cfg.task)
    entries = splits.eval["rg_entry"][:3]
    try:
        completions = [f"<answer>{json.loads(e)['answer']}</answer>" for e in entries[:2]] + ["<answer>x</answer>"]
        assert reward(completions, rg_entry=entries) == [1.0, 1.0, 0.0]
        reward.timeout = 1e-6  # no scorer answers in a microsecond: each is past its deadline, its worker replaced
        assert reward(completions, rg_entry=entries) == [None, None, None]
    finally:
        reward.close()


def test_a_reasoning_gym_task_is_a_part_of_a_mixture():
    cfg = compose_config(["task=mix", "task.of={arithmetic: 1, reasoning_gym: 1}",
                          "task.parts.reasoning_gym.datasets={chain_sum: {}}", "task.parts.reasoning_gym.train_size=8",
                          "task.parts.reasoning_gym.eval_size=2", "task.parts.arithmetic.train_size=8",
                          "task.parts.arithmetic.eval_size=2"])  # fmt: skip
    splits = build_task(cfg.task)
    assert Counter(splits.train["task"]) == {"arithmetic": 8, "reasoning_gym": 8}
    rewards, _ = task_rewards(cfg.task)
    assert [r.__name__ for r in rewards] == ["arithmetic/arithmetic_shaping", "reasoning_gym/reasoning_gym"]
    for reward in rewards:
        getattr(reward, "close", lambda: None)()
