"""A reward that raises on one completion costs that completion its reward, not the run; bad rows stop the run
before training with the row and the column named."""

from __future__ import annotations

import asyncio
import logging
import pickle

import pytest
from datasets import Dataset
from test_rewards import SAMPLES
from trl.trainer.utils import is_async_callable

from grpo_ext.errors import GrpoExtError
from grpo_ext.rewards import REWARDS, build_reward
from grpo_ext.rewards.arithmetic import ArithmeticShaping
from grpo_ext.rewards.guard import RewardFailureError, guard
from grpo_ext.run.records import read_metrics
from grpo_ext.tasks import check_columns
from grpo_ext.train import train
from support import FAST, compose_config


def test_a_failing_completion_gets_none_and_is_logged(caplog):
    logged = {}
    reward = guard(build_reward("reward_fixtures.fails_on_some"), max_failure_rate=0.5)
    with caplog.at_level(logging.ERROR):
        values = reward(["a", "has q", "b"], answer=["1", "2", "3"], log_metric=logged.__setitem__)
    assert values == [1.0, None, 1.0]
    assert logged == {"rewards/fails_on_some/errors": 1.0}
    assert "has q" in caplog.text and "q is not allowed" in caplog.text
    assert reward.__name__ == "fails_on_some" and reward.failures == 1


def test_too_many_failures_stop_with_the_first_traceback():
    reward = guard(build_reward("reward_fixtures.always_fails"), max_failure_rate=0.1)
    with pytest.raises(RewardFailureError, match="failed on 4 of 4 completions(.|\n)*this reward is broken"):
        reward(["a", "b", "c", "d"])


def test_wrong_number_of_values_scores_each_completion_alone_and_says_so_once(caplog):
    reward = guard(lambda completions, **kw: [1.0], max_failure_rate=1.0)
    with caplog.at_level(logging.WARNING):
        assert reward(["a", "b"]) == [1.0, 1.0]  # one by one, each call returns its one value
        assert reward(["c", "d", "e"]) == [1.0, 1.0, 1.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "reward <lambda> failed on a batch of 2 completions (ValueError: returned 1 values for 2 completions) but "
        "not on any of them alone; each completion of such a batch is scored alone, which is slower: check the reward"
    ]


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("reward_fixtures.returns_strings", "returned str '1.0': a reward returns numbers, or None where it does not"),
        ("reward_fixtures.returns_inf", "returned inf: a reward must be finite (None where it does not apply)"),
    ],
)
def test_values_torch_cannot_train_on_are_failures_naming_the_value(name, message):
    reward = guard(build_reward(name), max_failure_rate=0.1)
    with pytest.raises(RewardFailureError, match="failed on 2 of 2 completions") as err:
        reward(["a", "b"])
    assert message in str(err.value)


def test_numbers_of_any_kind_and_none_pass():
    import numpy as np
    import torch

    values = [1, 0.5, True, np.float32(0.25), torch.tensor(0.75), None, float("nan")]
    assert guard(lambda completions, **kw: values, max_failure_rate=0.0)(list("abcdefg")) == values


def test_guard_keeps_async_rewards_async_and_the_rest_of_the_reward():
    reward = guard(REWARDS["python_exec"](workers=1), 0.1)
    try:
        assert is_async_callable(reward) and reward.columns == ("tests",)
        completions, columns = SAMPLES["python_exec"]
        assert asyncio.run(reward(completions, **columns)) == [1.0, 0.0]
    finally:
        reward.close()
    sync = guard(ArithmeticShaping(), 0.1)
    assert not is_async_callable(sync) and sync.columns == ("answer",)
    clone = pickle.loads(pickle.dumps(sync))
    assert clone(["<answer>1</answer>"], answer=["1"]) == [1.0]


JUNK = ["", "\x00\x01\xfe\xff" * 2000, "🙂" * 20_000, "a" * 2_000_000, "<answer>" * 5000, "```python\n" * 3000]


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_every_builtin_reward_returns_numbers_or_none_on_junk(name):
    reward = REWARDS[name]()
    _, columns = SAMPLES[name]
    one = {key: [value[0]] * len(JUNK) for key, value in columns.items()}
    try:
        values = reward(JUNK, **one)
        values = asyncio.run(values) if asyncio.iscoroutine(values) else values
    finally:
        getattr(reward, "close", lambda: None)()
    assert len(values) == len(JUNK)
    assert all(v is None or isinstance(v, float) for v in values)


def test_a_column_a_user_reward_requires_is_named_before_training(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(f'{{"prompt": "p{i}", "word": {i}}}\n' for i in range(8)))
    cfg = compose_config(
        ["task=prompts", f"task.path={rows}", "task.rewards=[{name: reward_fixtures.reads_words}]", "model=tiny",
         *FAST, "task.eval_size=2"]
    )  # fmt: skip
    with pytest.raises(GrpoExtError) as stop:
        train(cfg, tmp_path / "run")
    assert stop.value.report() == (
        "task error: reward 'reads_words' reads column 'words', which the prompts train split lacks (its columns: "
        "['prompt', 'word', 'reference'])"
    )


def test_a_row_without_a_value_is_named_before_training():
    data = Dataset.from_dict({"prompt": ["a", "b", "c"], "answer": ["1", None, "3"]})
    with pytest.raises(ValueError, match="row 1 of the demo split has no value in column 'answer'"):
        check_columns(data, [ArithmeticShaping()], "demo split")


def test_training_goes_on_past_a_reward_that_raises(tmp_path):
    rewards = "task.rewards=[{name: reward_fixtures.prefers_short}, {name: reward_fixtures.fails_on_some}]"
    cfg = compose_config(["task=arithmetic", "model=tiny", *FAST, rewards, "reward_failure_limit=1.0",
                          "trainer.max_completion_length=64"])  # fmt: skip
    train(cfg, tmp_path)
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [1, 2]
    assert sum(r["rewards/fails_on_some/errors"] for r in records) > 0  # random text has some q's


def test_a_reward_that_always_fails_stops_the_run_with_its_error(tmp_path):
    rewards = "task.rewards=[{name: arithmetic_shaping}, {name: reward_fixtures.always_fails}]"
    cfg = compose_config(["task=arithmetic", "model=tiny", *FAST, rewards])
    with pytest.raises(GrpoExtError) as info:
        train(cfg, tmp_path)
    assert "always_fails failed on" in info.value.report() and "this reward is broken" in info.value.report()


def test_trl_s_warning_about_completions_no_reward_scored_shows_once_a_run(tmp_path, caplog):
    """With one reward that skips every other completion, TRL warns at every step, with the row; we show it once."""
    rewards = "task.rewards=[{name: reward_fixtures.every_other}]"
    cfg = compose_config(["task=arithmetic", "model=tiny", *FAST, rewards, "trainer.max_steps=3"])
    with caplog.at_level(logging.WARNING, logger="trl"):
        train(cfg, tmp_path)
    shown = [r for r in caplog.records if "All reward functions returned None" in r.getMessage()]
    assert len(shown) == 1 and "the only time this run shows it" in shown[0].getMessage()
    assert [r["step"] for r in read_metrics(tmp_path) if "reward" in r] == [1, 2, 3]
    assert logging.getLogger("trl.trainer.grpo_trainer").filters == []  # the run's filter goes with it
