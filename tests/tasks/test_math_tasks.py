"""The math tasks: ``mathexpr`` (generated, exact answers) and ``gsm8k``/``math`` (local files here; the Hub path is
the same code with a dataset name), each checked through the real ``math`` grader."""

from __future__ import annotations

import json
import re
from fractions import Fraction

import pytest

from grpo_ext.rewards.math_grader import MathGrader
from grpo_ext.tasks import build_task
from support import REPO, compose_config

GSM8K = REPO / "tests" / "fixtures" / "gsm8k_sample.jsonl"
MATH = REPO / "tests" / "fixtures" / "math_sample.jsonl"


@pytest.fixture(scope="module")
def grader():
    built = MathGrader()
    yield built
    built.close()


def task(name: str, *overrides: str):
    return build_task(compose_config([f"task={name}", "model=tiny", *overrides]).task)


def exact(expression: str) -> Fraction:
    """The expression's value computed independently of the generator: integers become Fractions, then Python."""
    return eval(re.sub(r"\d+", lambda m: f"Fraction({m.group(0)})", expression), {"Fraction": Fraction, "abs": abs})


def test_mathexpr_answers_are_exact_and_references_score_one(grader):
    splits = task("mathexpr", "task.train_size=300", "task.eval_size=50")
    for split in (splits.train, splits.eval):
        for expression, answer in zip(split["expression"], split["answer"], strict=True):
            assert Fraction(answer) == exact(expression), expression
            assert "/" not in answer or Fraction(answer).denominator != 1
        assert {r["reward"] for r in grader.score_batch(list(split["reference"]), list(split["answer"]))} == {1.0}
    assert any("abs(" in e for e in splits.train["expression"]) and any("/" in a for a in splits.train["answer"])
    assert "\\boxed{}" in splits.train[0]["prompt"][-1]["content"]


def test_mathexpr_splits_are_deterministic_disjoint_and_shaped_by_the_knobs():
    first, again = (
        task("mathexpr", "task.train_size=200", "task.eval_size=20"),
        task("mathexpr", "task.train_size=200", "task.eval_size=20"),
    )
    assert first.train["expression"] == again.train["expression"]
    assert not set(first.train["expression"]) & set(first.eval["expression"])
    small = task("mathexpr", "task.train_size=80", "task.eval_size=10", "task.max_depth=1", "task.max_digits=1",
                 "task.ops=[+]", "task.neg_prob=0", "task.abs_prob=0")  # fmt: skip
    assert all(re.fullmatch(r"\d \+ \d", e) for e in small.train["expression"])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.max_digits=0"], "task.max_digits must be >= 1"),
        (["task.ops=[+,mod]"], r"task.ops\[1\] is 'mod'; allowed"),
        (["task.neg_prob=1.5"], r"task.neg_prob must be in \[0, 1\]"),
        (["task.max_depth=9"], "task.max_depth must be <= 6"),
        (
            ["task.max_depth=1", "task.max_digits=1", "task.ops=[+]", "task.neg_prob=0", "task.abs_prob=0"],
            "distinct expressions",
        ),
        (["task.prompt_template=Solve"], "placeholder {expression}"),
    ],
)
def test_bad_mathexpr_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        task("mathexpr", *overrides)


def test_a_gold_only_math_verify_reads_is_kept_and_graded(tmp_path, grader):
    rows = [{"problem": f"Name segment {n}.", "solution": "", "answer": r"\overline{AB}"} for n in range(4)]
    path = tmp_path / "segments.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    splits = task("math", f"task.path={path}", "task.eval_size=1")
    assert len(splits.train) + len(splits.eval) == 4
    assert grader.score(r"\boxed{\overline{AB}}", r"\overline{AB}")["reward"] == 1.0
    assert grader.score(r"\boxed{\overline{AC}}", r"\overline{AB}")["reward"] == 0.0


@pytest.mark.parametrize("name,fixture,rows", [("gsm8k", GSM8K, 12), ("math", MATH, 12)])
def test_local_datasets_load_and_references_score_one(grader, name, fixture, rows):
    splits = task(name, f"task.path={fixture}", "task.eval_size=3")
    assert len(splits.train) + len(splits.eval) == rows
    for split in (splits.train, splits.eval):
        assert {r["reward"] for r in grader.score_batch(list(split["reference"]), list(split["answer"]))} == {1.0}
        assert all("\\boxed{}" in prompt[-1]["content"] for prompt in split["prompt"])
    assert task(name, f"task.path={fixture}", "task.eval_size=3", "task.train_size=2").train.num_rows == 2


def test_gsm8k_keeps_the_gold_as_stored_and_parquet_loads(tmp_path, grader):
    from datasets import Dataset

    rows = [json.loads(line) for line in GSM8K.read_text().splitlines()]
    parquet = tmp_path / "gsm8k.parquet"
    Dataset.from_list(rows).to_parquet(str(parquet))
    splits = task("gsm8k", f"task.path={parquet}", "task.eval_size=2")
    assert all("####" in answer for answer in splits.train["answer"])
    assert grader.score(r"so \boxed{12}", "He has 12 left.\n#### 12")["reward"] == 1.0


def test_unreadable_gold_is_dropped_with_a_warning_or_refused(caplog):
    splits = task("math", f"task.path={MATH}", "task.eval_size=3")
    assert r"\segment{AB}" not in [*splits.train["answer"], *splits.eval["answer"]]
    assert "dropped 1 rows" in caplog.text and "row 10" in caplog.text
    with pytest.raises(ValueError, match=r"row 10: the grader cannot read the gold answer '\\\\segment\{AB\}'"):
        task("math", f"task.path={MATH}", "task.eval_size=3", "task.drop_unreadable_gold=false")


@pytest.mark.parametrize(
    "rows,overrides,message",
    [
        ([{"question": "q", "answer": "#### 1"}] * 3 + [{"question": " ", "answer": "#### 2"}], [],
         "row 4: column 'question' must be a non-empty string"),
        ([{"question": "q", "answer": None}] * 4, [], "row 1: column 'answer' must be a non-empty"),
        ([{"problem": "q", "answer": "1"}] * 4, [], "task.question_column='question' is not a column"),
        ([{"question": "q", "answer": "1"}] * 4, ["task.solution_column=steps"], "task.solution_column='steps'"),
        ([{"question": "q", "answer": "1"}] * 2, ["task.eval_size=2"], "2 usable rows, not more than"),
    ],
)  # fmt: skip
def test_bad_rows_and_columns_are_named(tmp_path, rows, overrides, message):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(ValueError, match=message):
        task("gsm8k", f"task.path={path}", "task.eval_size=1", *overrides)


def test_hub_names_fail_fast_without_network_and_defaults_pick_models(tmp_path):
    with pytest.raises(ValueError, match="loading it from the Hub failed"):
        task("gsm8k")
    assert compose_config(["task=gsm8k"]).model.name == "qwen2.5-0.5b-instruct"
    assert compose_config(["task=math"]).model.name == "qwen2.5-math-1.5b"
    assert compose_config(["task=mathexpr"]).model.name == "tiny"


def test_mathexpr_trains_two_steps_with_the_math_reward(tmp_path):
    from grpo_ext.run.records import read_metrics
    from grpo_ext.train import train
    from support import FAST

    train(compose_config(["task=mathexpr", "model=tiny", *FAST, "task.train_size=64", "task.eval_size=8"]), tmp_path)
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2] and all("rewards/math/mean" in m for m in metrics)


def test_data_as_published_is_read_through_a_column_mapping(tmp_path, grader):
    """NuminaMath's layout (``problem``, ``solution`` with the answer boxed, no answer column) and a plain table of
    questions and answers, each read by naming its columns (``task.columns``), with no conversion by hand."""
    numina = tmp_path / "numina.jsonl"
    lines = [{"problem": f"What is {n} + {n}?", "solution": f"Twice {n}: $\\boxed{{{2 * n}}}$."} for n in range(10)]
    numina.write_text("".join(json.dumps(line) + "\n" for line in lines))
    mapping = "task.columns={question: problem, answer: solution}"
    splits = task("math", f"task.path={numina}", "task.eval_size=2", mapping)
    row = splits.train[0]
    assert row["prompt"][-1]["content"].startswith("What is ") and "\\boxed{" in row["answer"]
    assert grader.score(row["reference"], row["answer"])["reward"] == 1.0  # the gold read from the boxed solution
    assert grader.score("\\boxed{-1}", row["answer"])["reward"] == 0.0
    table = tmp_path / "table.csv"
    table.write_text("q,a\n" + "".join(f"How many is {n}?,{n}\n" for n in range(6)))
    plain = task("gsm8k", f"task.path={table}", "task.eval_size=2", "task.columns.question=q", "task.columns.answer=a")
    assert plain.train[0]["prompt"][-1]["content"].startswith("How many is") and plain.train[0]["answer"].isdigit()


def test_a_column_mapping_that_does_not_fit_the_data_is_named_with_its_columns(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"problem": "1 + 1?", "solution": "\\boxed{2}"}) + "\n")
    with pytest.raises(ValueError, match=r"task.columns.question='question_text' is not a column of the data; its "
                       r"columns: \['problem', 'solution'\]"):  # fmt: skip
        task("math", f"task.path={rows}", "task.columns={question: question_text, answer: solution}")
    with pytest.raises(ValueError, match=r"task.columns names \['hint'\], which this task does not read; it reads "
                       r"\['question', 'answer', 'solution'\]"):  # fmt: skip
        task("math", f"task.path={rows}", "task.columns={hint: problem}")
