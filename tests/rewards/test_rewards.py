"""The reward registry and ``arithmetic_shaping``: the seed's shaping, exact parsing, and no exception on junk."""

from __future__ import annotations

import asyncio
import inspect
import json
import pickle

import pytest

from grpo_ext.rewards import REWARDS, build_reward, build_rewards, reward_columns, score_results
from grpo_ext.rewards.arithmetic import ArithmeticShaping, extract_answer

reward = ArithmeticShaping()


@pytest.mark.parametrize(
    "completion,answer,expected,status",
    [
        ("<answer>14</answer>", "14", 1.0, "exact"),
        ("Thinking... (3 + 4) * 2 = 14. <answer> 14 </answer>", "14", 1.0, "exact"),
        ("<answer>15</answer>", "14", 0.4, "close"),
        ("<answer>13</answer>", "14", 0.4, "close"),
        ("<answer>16</answer>", "14", 0.2, "wrong"),
        ("<answer>-7</answer>", "-7", 1.0, "exact"),
        ("<answer>+7</answer>", "7", 1.0, "exact"),
        ("<answer>14.0</answer>", "14", 1.0, "exact"),
        ("<answer>13.5</answer>", "14", 0.4, "close"),
        ("14", "14", 0.0, "no_answer"),
        ("", "14", 0.0, "no_answer"),
        ("<answer>14</answer><answer>14</answer>", "14", 0.0, "multiple_answers"),
        ("<answer>14", "14", 0.0, "malformed_answer"),
        ("</answer>14<answer>", "14", 0.0, "malformed_answer"),
        ("<answer>fourteen</answer>", "14", 0.2, "not_a_number"),
        ("<answer>14 or 15</answer>", "14", 0.2, "not_a_number"),
        ("<answer>1e1</answer>", "10", 0.2, "not_a_number"),
        ("<answer>NaN</answer>", "14", 0.2, "not_a_number"),
        ("<answer>inf</answer>", "14", 0.2, "not_a_number"),
        ("<answer>\u0661\u0664</answer>", "14", 0.2, "not_a_number"),  # Arabic-Indic digits are not ASCII
        ("<answer>" + "9" * 5000 + "</answer>", "14", 0.2, "not_a_number"),
        ("<answer>" + "9" * 900 + "</answer>", "9" * 900, 1.0, "exact"),
        ("<answer>" + "9" * 900 + "</answer>", "1" + "0" * 900, 0.4, "close"),
    ],
)
def test_shaping(completion, answer, expected, status):
    result = reward.score(completion, answer)
    assert result["reward"] == pytest.approx(expected)
    assert result["status"] == status


@pytest.mark.parametrize(
    "junk",
    [
        "\x00\x01\xff" * 1000,
        "\ud800",
        "<answer>\u202e41</answer>",
        "🙂" * 10_000,
        "<answer>" * 10_000,
        "a" * 1_000_000,
    ],
)
def test_junk_completions_never_raise(junk):
    result = reward.score(junk, "14")
    assert result["reward"] in (0.0, 0.2)


@pytest.mark.parametrize("completion", [None, 42, [], [{}], [{"role": "assistant"}], {"content": 3}, b"<answer>1"])
def test_malformed_completion_objects_score_zero(completion):
    assert reward.score(completion, "1")["reward"] == 0.0


def test_chat_completions_use_the_last_message():
    chat = [{"role": "assistant", "content": "<answer>3</answer>"}]
    assert reward([chat, "<answer>3</answer>", "no"], answer=["3", "3", "3"]) == [1.0, 1.0, 0.0]


@pytest.mark.parametrize("gold", ["x", "", None, "1/2", True])
def test_unparseable_gold_gives_none_not_a_score(gold):
    assert reward.score("<answer>1</answer>", gold)["reward"] is None
    assert reward(["<answer>1</answer>"], answer=[gold]) == [None]


def test_missing_answer_column_gives_none():
    assert reward(["<answer>1</answer>", ""]) == [None, None]


def test_weights_are_parameters():
    custom = ArithmeticShaping(format_reward=0.0, close_reward=0.5, exact_reward=0.5, tolerance=2)
    assert custom.score("<answer>12</answer>", "14")["reward"] == 0.5
    assert custom.score("<answer>14</answer>", "14")["reward"] == 1.0


@pytest.mark.parametrize("bad", [{"format_reward": -1}, {"tolerance": "one"}, {"exact_reward": True}])
def test_bad_parameters_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        ArithmeticShaping(**bad)


def test_extract_answer_keeps_inner_text():
    assert extract_answer("x <answer> 5 </answer> y") == (" 5 ", "ok")


# One good and one bad completion per registered reward, with the columns it reads.
SAMPLES = {
    "arithmetic_shaping": (["<answer>1</answer>", "1"], {"answer": ["1", "1"]}),
    "math": ([r"\boxed{\sqrt{2}/2}", r"\boxed{0.707}"], {"answer": [r"\frac{1}{\sqrt2}"] * 2}),
    "python_exec": (
        ["def f(x):\n    return x\n", "def f(x):\n    return 0\n"],
        {"tests": [[{"args": [1], "expected": 1}]] * 2, "entry_point": ["f", "f"]},
    ),
    "reasoning_gym": (
        ["<answer>7</answer>", "<answer>8</answer>"],
        {
            "rg_entry": [
                json.dumps({"question": "3 + 4 =", "answer": "7", "metadata": {"source_dataset": "chain_sum"}})
            ]
            * 2
        },
    ),
}


def call(reward, completions, columns):
    result = reward(completions, **columns)
    return asyncio.run(result) if inspect.isawaitable(result) else result


def test_every_registered_reward_pickles_and_is_named_by_its_key():
    assert set(SAMPLES) == set(REWARDS)
    for name, factory in REWARDS.items():
        built = factory()
        assert built.__name__ == name
        clone = pickle.loads(pickle.dumps(built))
        assert call(clone, *SAMPLES[name]) == call(built, *SAMPLES[name]) == [1.0, 0.0]
        for reward in (built, clone):
            getattr(reward, "close", lambda: None)()


def test_unknown_reward_lists_valid_names():
    with pytest.raises(
        ValueError,
        match=r"unknown reward 'nope'; valid names: \['arithmetic_shaping', 'math', 'python_exec', 'reasoning_gym'\]",
    ):
        build_reward("nope")


def test_unknown_parameter_is_reported_with_the_accepted_ones():
    with pytest.raises(ValueError, match="bad params for reward 'arithmetic_shaping'.*tolerance"):
        build_reward("arithmetic_shaping", {"tolerence": 2})


def test_dotted_path_rewards():
    assert build_reward("reward_fixtures.prefers_short")(["ab"]) == [-0.2]
    assert build_reward("reward_fixtures.Scaled", {"factor": 2.0})(["ab"]) == [4.0]
    with pytest.raises(ValueError, match="takes no params"):
        build_reward("reward_fixtures.prefers_short", {"x": 1})
    with pytest.raises(ValueError, match="cannot import"):
        build_reward("no_such_module.fn")
    with pytest.raises(ValueError, match="has no attribute"):
        build_reward("reward_fixtures.nope")


def test_a_user_reward_without_kwargs_is_refused_and_its_columns_come_from_its_parameters():
    with pytest.raises(ValueError) as err:
        build_reward("reward_fixtures.without_kwargs")
    assert str(err.value) == (
        "reward 'reward_fixtures.without_kwargs' takes (completions, words), but TRL calls it with the keyword "
        "arguments prompts, completion_ids, trainer_state, log_extra, log_metric and one per dataset column: add "
        "**kwargs to its parameters"
    )
    assert reward_columns(build_reward("reward_fixtures.reads_words")) == ("words",)  # scale has a default
    assert reward_columns(build_reward("reward_fixtures.prefers_short")) == ()
    assert reward_columns(build_reward("reward_fixtures.Scaled")) == ()  # a callable object: its __call__
    assert reward_columns(build_reward("arithmetic_shaping")) == ("answer",)  # declared


def test_build_rewards_names_the_entry():
    funcs, weights = build_rewards([{"name": "arithmetic_shaping", "weight": 2.0, "params": {}}])
    assert weights == [2.0] and funcs[0].__name__ == "arithmetic_shaping"
    with pytest.raises(ValueError, match=r"task.rewards\[1\]: unknown reward 'typo'"):
        build_rewards([{"name": "arithmetic_shaping"}, {"name": "typo"}])
    with pytest.raises(ValueError, match="task.rewards is empty"):
        build_rewards([])


class _Scores:
    """A reward with a ``score`` method (sync or async), as the CLI, evaluation and inference call it."""

    def __init__(self, asynchronous: bool) -> None:
        self.asynchronous = asynchronous

    def score(self, completion, answer, **_):
        result = {"reward": float(completion == answer), "status": "checked"}
        if not self.asynchronous:
            return result

        async def later():
            return result

        return later()


class _Batches:
    """A reward that scores batches itself and declares the columns it reads."""

    columns = ("answer",)
    optional_columns = ("hint",)

    def score_batch(self, completions, answer, **optional):
        return [{"reward": float(c == a), "seen": sorted(optional)} for c, a in zip(completions, answer, strict=True)]


async def _async_plain(completions, answer, **_):
    return [float(c == a) for c, a in zip(completions, answer, strict=True)]


@pytest.mark.parametrize(
    "reward,expected",
    [
        (_Scores(asynchronous=False), [{"reward": 1.0, "status": "checked"}, {"reward": 0.0, "status": "checked"}]),
        (_Scores(asynchronous=True), [{"reward": 1.0, "status": "checked"}, {"reward": 0.0, "status": "checked"}]),
        (_Batches(), [{"reward": 1.0, "seen": ["hint"]}, {"reward": 0.0, "seen": ["hint"]}]),
        (_async_plain, [{"reward": 1.0}, {"reward": 0.0}]),
        (lambda completions, **_: [len(c) / 10 for c in completions], [{"reward": 0.2}, {"reward": 0.2}]),
    ],
    ids=["score", "async score", "score_batch", "async function", "function"],
)
def test_score_results_takes_each_kind_of_reward(reward, expected):
    # _Batches gets its declared columns only ("other" is dropped); the others get every column.
    columns = {"answer": ["12", "13"], "hint": ["a", "b"]}
    if isinstance(reward, _Batches):
        columns["other"] = [1, 2]
    assert score_results(reward, ["12", "14"], columns) == expected
