"""The task registry and the ``arithmetic`` task: deterministic splits, correct answers, clear errors."""

from __future__ import annotations

import pytest

from grpo_ext.rewards.arithmetic import ArithmeticShaping
from grpo_ext.tasks import TASKS, build_task, check_columns, get_task
from grpo_ext.tasks.arithmetic import evaluate
from support import compose_config


def arithmetic(*overrides: str):
    return build_task(compose_config(["task=arithmetic", *overrides]).task)


def test_splits_are_deterministic_and_disjoint():
    a, b = (
        arithmetic("task.train_size=500", "task.eval_size=100"),
        arithmetic("task.train_size=500", "task.eval_size=100"),
    )
    assert a.train["expression"] == b.train["expression"] and a.eval["expression"] == b.eval["expression"]
    assert len(a.train) == 500 and len(a.eval) == 100
    assert not set(a.train["expression"]) & set(a.eval["expression"])
    assert len(set(a.train["expression"])) == 500


def test_seed_changes_the_split_but_train_size_does_not_change_eval():
    base = arithmetic("task.train_size=100", "task.eval_size=50")
    assert (
        arithmetic("task.train_size=100", "task.eval_size=50", "task.seed=1").eval["expression"]
        != base.eval["expression"]
    )
    assert arithmetic("task.train_size=300", "task.eval_size=50").eval["expression"] == base.eval["expression"]


def test_answers_are_right_and_references_score_one():
    splits = arithmetic("task.train_size=300", "task.eval_size=50", "task.min_operand=-20", "task.max_operand=20")
    reward = ArithmeticShaping()
    for row in splits.train:
        a, op1, b, op2, c = row["expression"].replace("(", "").replace(")", "").split()
        assert int(row["answer"]) == evaluate(int(a), op1, int(b), op2, int(c))
        assert int(row["answer"]) == eval(row["expression"])  # the expression is valid Python with the same value
        assert reward.score(row["reference"], row["answer"])["reward"] == 1.0
    prompt = splits.train[0]["prompt"]
    assert prompt[-1]["role"] == "user" and splits.train[0]["expression"] in prompt[-1]["content"]


def test_worked_references_show_both_steps_and_score_one():
    plain = arithmetic("task.train_size=400", "task.eval_size=50", "task.min_operand=-9")
    mixed = arithmetic("task.train_size=400", "task.eval_size=50", "task.min_operand=-9", "task.worked_fraction=0.5")
    assert (
        mixed.train["expression"] == plain.train["expression"] and mixed.eval["expression"] == plain.eval["expression"]
    )
    worked = [row for row in mixed.train if row["reference"] != f"<answer>{row['answer']}</answer>"]
    assert 150 < len(worked) < 250  # about half of 400
    reward = ArithmeticShaping()
    for row in worked:
        first, second, answer_line = row["reference"].split("\n")
        a, op1, b = row["expression"].replace("(", "").replace(")", "").split()[:3]
        inner = evaluate(int(a), op1, int(b), "+", 0)
        assert first == f"{a} {op1} {b} = {inner}"
        assert second.startswith(f"{inner} ") and second.endswith(f" = {row['answer']}")
        assert answer_line == f"<answer>{row['answer']}</answer>"
        assert reward.score(row["reference"], row["answer"])["reward"] == 1.0
    every = arithmetic("task.train_size=50", "task.eval_size=5", "task.worked_fraction=1")
    assert all(ref.count("\n") == 2 for ref in every.train["reference"])


def test_system_prompt_and_operators():
    splits = arithmetic("task.train_size=20", "task.eval_size=5", "task.ops=[+]", "task.system_prompt='Be brief.'")
    assert splits.train[0]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert all("-" not in e and "*" not in e for e in splits.train["expression"])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.ops=[+,/]"], r"task.ops\[1\] is '/'; allowed"),
        (["task.ops=[]"], "task.ops must name at least one operator"),
        (["task.min_operand=5", "task.max_operand=1"], "task.min_operand"),
        (["task.train_size=0"], "task.train_size must be >= 1"),
        (["task.max_operand=1", "task.train_size=1000"], "allow only 72 distinct problems"),
        (["task.prompt_template='no placeholder'"], "must contain the placeholder"),
        (["task.worked_fraction=1.5"], r"task.worked_fraction must be in \[0, 1\], got 1.5"),
    ],
)
def test_bad_task_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        arithmetic(*overrides)


def test_registry_errors_list_the_names():
    assert "arithmetic" in TASKS
    with pytest.raises(
        ValueError,
        match=r"unknown task 'nope'; valid names: \['arithmetic', 'code_jsonl', 'fizzbuzz', 'gsm8k', 'math', "
        r"'mathexpr', 'mix', 'prompts', 'reasoning_gym'\]",
    ):
        get_task("nope")


def test_missing_reward_column_is_named():
    splits = arithmetic("task.train_size=10", "task.eval_size=5")
    with pytest.raises(ValueError, match="reads column 'answer', which the arithmetic train split lacks"):
        check_columns(splits.train.remove_columns("answer"), [ArithmeticShaping()], "arithmetic train split")
