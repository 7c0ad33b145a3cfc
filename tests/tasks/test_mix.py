"""``task=mix``: several tasks in one run. The syntax on the command line and its refusals, the rows of each part,
the weighted order of the training rows, and each part's evaluation; real composition, real task builds."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from datasets import Dataset

from grpo_ext.config.validate import expand_mixture
from grpo_ext.errors import ConfigError
from grpo_ext.tasks import build_task, check_columns, mix, task_rewards
from support import compose_config

SMALL = ["task.parts.arithmetic.train_size=40", "task.parts.arithmetic.eval_size=6"]
TWO = ["task=mix", "task.of={arithmetic: 3, fizzbuzz: 1}", "task.parts.fizzbuzz.kinds=[fizzbuzz]", *SMALL,
       "task.parts.fizzbuzz.train_size=12", "task.parts.fizzbuzz.eval_size=4"]  # fmt: skip


def test_the_mixture_is_composed_from_the_command_line_in_either_form():
    both = [
        compose_config(TWO).task,
        compose_config(
            [
                "task=mix",
                "task.of.arithmetic=3",
                "task.of.fizzbuzz=1",
                *TWO[3:],
                "task.parts.fizzbuzz.kinds=[fizzbuzz]",
            ]
        ).task,  # fmt: skip
    ]
    for node in both:
        assert dict(node.of) == {"arithmetic": 3, "fizzbuzz": 1}
        found = mix.parts(node)
        assert [(p.label, p.weight, p.config.name) for p in found] == [("arithmetic", 3.0, "arithmetic"),
                                                                        ("fizzbuzz", 1.0, "fizzbuzz")]  # fmt: skip
        fizzbuzz = found[1].config
        assert list(fizzbuzz.kinds) == ["fizzbuzz"] and fizzbuzz.tests_per_problem == 7  # its task's own config
        assert fizzbuzz.rewards[0].name == "python_exec" and fizzbuzz.max_completion_length == 384


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        (["task.of={arithmetic: 1, nope: 1}"], "task.of names 'nope', which is not a task"),
        (["task.of={arithmetic: -1, fizzbuzz: 1}"], "task.of.arithmetic=-1: a part's weight must be a number >= 0"),
        (["task.of={arithmetic: 0, fizzbuzz: 0}"], "at least one part needs a weight > 0"),
        (["task.of={arithmetic: 1}", "task.parts.fizzbuzz.kinds=[fizzbuzz]"],
         "task.parts.fizzbuzz sets a part that is not in the mixture: task.of names ['arithmetic']"),
        (["task.of={arithmetic: 1}", "task.parts.arithmetic.max_operandd=5"],
         "task.parts.arithmetic: Key 'max_operandd'"),
        (["task.of={arithmetic: 1, other: 1}", "task.parts.other.name=mix"],
         "task.of names 'other', which is not a task"),
        (["task.of={arithmetic: 1, own: 1}", "task.parts.own.name=prompts"],
         "these keys need a value, on the command line (KEY=VALUE): task.parts.own.path"),
        ([], "task.of must name the parts of the mixture"),
    ],
)  # fmt: skip
def test_a_mixture_that_cannot_run_is_refused_naming_the_key(overrides, said, tmp_path):
    cfg = compose_config(["task=mix", "model=tiny", "hardware=cpu", "logger=none", *overrides])
    with pytest.raises(ConfigError) as refused:
        from grpo_ext.config import validate
        from grpo_ext.run.rundir import RunDir

        validate.grpo_run(cfg, RunDir(tmp_path))
    assert said in str(refused.value), refused.value
    assert refused.value.report().startswith("config error: ")


def test_two_parts_of_one_task_with_other_settings_are_told_apart():
    cfg = compose_config(["task=mix", "task.of={easy: 1, hard: 1}", "task.parts.easy.name=arithmetic",
                          "task.parts.hard.name=arithmetic", "task.parts.hard.min_operand=10",
                          "task.parts.hard.max_operand=99", "task.parts.easy.train_size=20",
                          "task.parts.hard.train_size=20", "task.parts.easy.eval_size=4",
                          "task.parts.hard.eval_size=4"])  # fmt: skip
    splits = build_task(cfg.task)
    assert Counter(splits.train["task"]) == {"easy": 20, "hard": 20}
    hard = [r["expression"] for r in splits.train if r["task"] == "hard"]
    assert all(any(len(n) == 2 for n in e.replace("(", " ").replace(")", " ").split() if n.isdigit()) for e in hard)
    rewards, weights = task_rewards(cfg.task)
    assert [r.__name__ for r in rewards] == ["easy/arithmetic_shaping", "hard/arithmetic_shaping"]
    assert weights == [1.0, 1.0]


def test_every_row_carries_its_part_and_the_columns_of_both(tmp_path):
    cfg = compose_config(TWO)
    splits = build_task(cfg.task)
    assert Counter(splits.train["task"]) == {"arithmetic": 40, "fizzbuzz": 12}
    assert Counter(splits.eval["task"]) == {"arithmetic": 6, "fizzbuzz": 4}
    row = next(r for r in splits.train if r["task"] == "fizzbuzz")
    assert row["answer"] is None and json.loads(row["tests"]) and row["entry_point"] == "fizzbuzz"
    rewards, _ = task_rewards(cfg.task)
    check_columns(splits.train, rewards, "train split")  # each reward's columns on its own rows only
    for reward in rewards:
        getattr(reward, "close", lambda: None)()


def test_a_column_two_parts_hold_in_other_kinds_is_named(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"p{i}", "answer": i}) + "\n" for i in range(8)))
    cfg = compose_config(["task=mix", "task.of={arithmetic: 1, own: 1}", *SMALL, "task.parts.own.name=prompts",
                          f"task.parts.own.path={rows}", "task.parts.own.eval_size=2",
                          "task.parts.own.rewards=[{name: arithmetic_shaping}]"])  # fmt: skip
    with pytest.raises(ValueError, match="the parts arithmetic and own both have a column 'answer', of str and float"):
        build_task(cfg.task)


def test_the_training_order_follows_the_weights_batch_by_batch_and_over_the_run():
    dataset = Dataset.from_list([{"task": "a", "i": i} for i in range(30)] + [{"task": "b", "i": i} for i in range(7)])
    order = mix.weighted_order(dataset, {"a": 3.0, "b": 1.0}, per_batch=6, batches=10, seed=1)
    parts = order["task"]
    assert len(parts) == 60 and Counter(parts) == {"a": 45, "b": 15}  # exactly 3:1 over the run
    for batch in range(10):
        assert Counter(parts[batch * 6 : (batch + 1) * 6])["b"] in (1, 2)  # 1.5 a batch: within one row of it
    b_rows = [r["i"] for r in order if r["task"] == "b"]
    assert sorted(b_rows[:7]) == list(range(7))  # every row of a part before any comes again
    again = mix.weighted_order(dataset, {"a": 3.0, "b": 1.0}, per_batch=6, batches=10, seed=1)
    assert again["i"] == order["i"] and again["task"] == parts  # deterministic from the seed
    assert mix.weighted_order(dataset, {"a": 3.0, "b": 1.0}, 6, 10, seed=2)["i"] != order["i"]
    assert Counter(mix.weighted_order(dataset, {"a": 1.0, "b": 0.0}, 6, 2, seed=1)["task"]) == {"a": 12}


def test_a_mixture_of_one_weighted_part_keeps_the_task_s_order():
    cfg = compose_config(["task=mix", "task.of={arithmetic: 1, fizzbuzz: 0}", *TWO[2:]])
    dataset = Dataset.from_list([{"task": "arithmetic", "i": i} for i in range(5)])
    assert mix.scheduled(dataset, cfg.task, per_batch=2, batches=4, seed=0) is dataset


def test_a_part_of_weight_0_is_checked_and_left_out_of_the_run():
    cfg = compose_config(["task=mix", "task.of={arithmetic: 1, fizzbuzz: 0}", *TWO[2:]])
    assert [part.label for part in mix.parts(cfg.task)] == ["arithmetic"]
    splits = build_task(cfg.task)
    assert set(splits.train["task"]) == {"arithmetic"} and set(splits.eval["task"]) == {"arithmetic"}
    rewards, _ = task_rewards(cfg.task)
    assert {reward.rows_of for reward in rewards} == {"arithmetic"}
    expand_mixture(cfg)
    assert cfg.task.max_completion_length == 32  # arithmetic's: fizzbuzz's 384 is not asked for
    with pytest.raises(ValueError, match="task.parts.fizzbuzz: Key 'kindz'"):
        mix.parts(
            compose_config(["task=mix", "task.of={arithmetic: 1, fizzbuzz: 0}", "task.parts.fizzbuzz.kindz=[]"]).task
        )


def test_the_run_records_each_part_whole_and_the_longest_completion_length():
    cfg = compose_config(TWO)
    expand_mixture(cfg)
    assert cfg.task.max_completion_length == 384  # fizzbuzz's, the longest
    assert cfg.task.parts.arithmetic.max_operand == 9 and cfg.task.parts.fizzbuzz.rewards[0].name == "python_exec"
    assert mix.expanded(cfg.task)["parts"] == mix.expanded(compose_config(TWO).task)["parts"]  # expanding twice


def test_each_part_is_evaluated_on_its_own_rows_with_its_first_reward():
    """Evaluations of a mixture: a part's figures under its name, and the means weighted as the parts."""
    from grpo_ext.monitor import heldout

    cfg = compose_config([*TWO, "eval.size=3"])
    splits = build_task(cfg.task)
    rewards, _ = task_rewards(cfg.task)
    rows = heldout.first_rows(splits.eval, 3)
    assert Counter(rows["task"]) == {"arithmetic": 3, "fizzbuzz": 3}
    scorers = heldout.scorers(rewards)
    assert [r.__name__ for r in scorers] == ["arithmetic/arithmetic_shaping", "fizzbuzz/python_exec"]
    answers = {"arithmetic": "<answer>{}</answer>", "fizzbuzz": "no code"}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        from grpo_ext.backends.generation import Completion

        texts = [next(answers[r["task"]].format(r["answer"]) for r in rows if r["prompt"] == p) for p in prompts]
        return [[Completion(t, [1])] for t in texts]

    heldout.generate, real = fake_generate, heldout.generate
    try:
        report = heldout.run_eval(None, None, rows, heldout.scoring(rewards), cfg)
    finally:
        heldout.generate = real
        for reward in rewards:
            getattr(reward, "close", lambda: None)()
    metrics = report["metrics"]
    assert metrics["arithmetic/accuracy"] == 1.0 and metrics["fizzbuzz/accuracy"] == 0.0
    assert metrics["accuracy"] == pytest.approx(0.75)  # weighted 3:1
    assert metrics["n"] == 6 and {e["task"] for e in report["examples"]} == {"arithmetic", "fizzbuzz"}
