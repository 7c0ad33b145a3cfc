"""``rewards.parts``: in a mixture, each part's reward scores its own rows and ``None`` elsewhere, under a name of its
part's, and each part's training reward is logged."""

from __future__ import annotations

import asyncio
import pickle

from grpo_ext.rewards import build_rewards, score_results
from grpo_ext.rewards.arithmetic import ArithmeticShaping
from grpo_ext.rewards.guard import guard, is_async_reward
from grpo_ext.rewards.parts import Ledger, for_part

COMPLETIONS = ["<answer>3</answer>", "<answer>9</answer>", "anything", "<answer>5</answer>"]
KWARGS = {"task": ["a", "a", "b", "a"], "answer": ["3", "4", None, "5"], "completion_ids": [[1], [2], [3], [4]]}


def test_a_part_s_reward_scores_its_rows_and_leaves_the_others_none():
    reward = for_part(ArithmeticShaping(), "a")
    assert reward.__name__ == "a/arithmetic_shaping"
    assert reward(COMPLETIONS, **KWARGS) == [1.0, 0.2, None, 1.0]  # row 2 is b's, whose answer is None
    assert reward.columns == ("answer",) and reward.rows_of == "a"
    assert pickle.loads(pickle.dumps(reward))(COMPLETIONS, **KWARGS) == [1.0, 0.2, None, 1.0]


def test_two_parts_with_one_reward_and_other_params_get_their_own_names():
    (one, other), _ = build_rewards([{"name": "arithmetic_shaping"}, {"name": "arithmetic_shaping",
                                                                     "params": {"tolerance": 0}}])  # fmt: skip
    assert {for_part(one, "easy").__name__, for_part(other, "hard").__name__} == {
        "easy/arithmetic_shaping", "hard/arithmetic_shaping"
    }  # fmt: skip


def test_each_part_s_training_reward_is_logged_once_its_rewards_have_scored_the_batch():
    logged = []
    ledger = Ledger("a", rewards=2)
    first = for_part(ArithmeticShaping(), "a", weight=1.0, ledger=ledger)
    second = for_part(lambda completions, **kw: [0.5] * len(completions), "a", weight=2.0, ledger=ledger)
    kwargs = {**KWARGS, "log_metric": lambda name, value: logged.append((name, value))}
    first(COMPLETIONS, **kwargs)
    assert logged == []  # not until the part's other reward has scored the batch
    second(COMPLETIONS, **kwargs)
    assert logged == [("a/reward", (1.0 + 0.2 + 1.0) / 3 + 2.0 * 0.5)]
    # TRL hands every reward of a batch the same completion_ids list, and the next batch another
    next_batch, third_batch = [[9]] * 4, [[8]] * 4
    first(COMPLETIONS, **{**kwargs, "completion_ids": next_batch})
    second(COMPLETIONS, **{**kwargs, "completion_ids": third_batch})
    assert len(logged) == 1  # halves of two batches are not one batch
    first(COMPLETIONS, **{**kwargs, "completion_ids": third_batch})
    assert logged[1] == ("a/reward", (1.0 + 0.2 + 1.0) / 3 + 2.0 * 0.5)


def test_an_async_reward_stays_async_and_is_guarded_as_one():
    async def halves(completions, **kwargs):
        return [0.5] * len(completions)

    reward = for_part(halves, "b")
    assert is_async_reward(reward)
    assert asyncio.run(reward(COMPLETIONS, **KWARGS)) == [None, None, 0.5, None]
    guarded = guard(reward, 0.1)
    assert asyncio.run(guarded(COMPLETIONS, **KWARGS)) == [None, None, 0.5, None]


def test_outside_training_a_part_s_reward_scores_its_rows_only():
    """``score_results`` (the evaluations, ``grpo_ext.difficulty``) calls the part's reward, never the wrapped one's
    batch scorer, which would score every part's rows."""
    results = score_results(for_part(ArithmeticShaping(), "a"), COMPLETIONS, KWARGS)
    assert [r["reward"] for r in results] == [1.0, 0.2, None, 1.0]


def test_a_reward_in_worker_processes_reports_its_failures_at_its_rows():
    class InWorkers:
        __name__ = "slow"

        def score_each(self, completions, kwargs):
            return [0.0] * (len(completions) - 1) + [None], [(len(completions) - 1, "timed out")]

    reward = for_part(InWorkers(), "a")
    values, errors = reward.score_each(COMPLETIONS, KWARGS)
    assert values == [0.0, 0.0, None, None] and errors == [(3, "timed out")]
