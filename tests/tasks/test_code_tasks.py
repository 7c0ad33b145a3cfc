"""The code tasks: ``fizzbuzz`` (generated) and ``code_jsonl`` (a user's file), checked through the real sandbox."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from grpo_ext.rewards.python_exec import PythonExec, parse_tests
from grpo_ext.tasks import build_task
from grpo_ext.tasks.fizzbuzz_problems import (
    KIND_LEVELS,
    balanced_oracle,
    collatz_steps,
    fizzbuzz_oracle,
    flatten,
    is_palindrome,
    nth_prime,
    rle,
    to_roman,
)
from support import REPO, compose_config, needs_bwrap

FIXTURE = REPO / "tests" / "fixtures" / "code_problems.jsonl"


@pytest.fixture(scope="module")
def verifier():
    reward = PythonExec(timeout=3.0)
    yield reward
    reward.close()


def fizzbuzz_task(*overrides: str):
    return build_task(compose_config(["task=fizzbuzz", "model=tiny", *overrides]).task)


def test_oracles_on_known_values():
    assert [fizzbuzz_oracle([(3, "Fizz"), (5, "Buzz")])(n) for n in (1, 3, 5, 15)] == ["1", "Fizz", "Buzz", "FizzBuzz"]
    assert balanced_oracle("()[]")("([])") and not balanced_oracle("()[]")("([)]") and not balanced_oracle("()")("(")
    assert balanced_oracle("()[]{}")("a{b(1)}") and not balanced_oracle("()")(")(")
    assert (to_roman(1994), to_roman(3999), to_roman(4)) == ("MCMXCIV", "MMMCMXCIX", "IV")
    assert [nth_prime(n) for n in (1, 2, 3, 10)] == [2, 3, 5, 29]
    assert (rle("aaab"), rle(""), rle("abc")) == ("a3b1", "", "a1b1c1")
    assert (collatz_steps(1), collatz_steps(6), collatz_steps(27)) == (0, 8, 111)
    assert flatten([1, [2, [3, []]], 4]) == [1, 2, 3, 4]
    assert is_palindrome("A man, a plan, a canal: Panama") and not is_palindrome("ab")


def test_fizzbuzz_family_covers_every_kind_with_enough_tests():
    splits = fizzbuzz_task("task.train_size=600", "task.eval_size=100")
    kinds = Counter(splits.train["kind"]) + Counter(splits.eval["kind"])
    assert set(kinds) == set(KIND_LEVELS) and len(KIND_LEVELS) >= 13
    for row in splits.train.select(range(50)):
        _, tests = parse_tests(row["tests"], row["entry_point"])
        assert len(tests) >= 5
        assert f"`{row['entry_point']}(" in row["prompt"][-1]["content"]  # the prompt names the signature
    prompts = set(p[-1]["content"] + t for p, t in zip(splits.train["prompt"], splits.train["tests"], strict=True))
    assert not prompts & set(
        p[-1]["content"] + t for p, t in zip(splits.eval["prompt"], splits.eval["tests"], strict=True)
    )


def test_fizzbuzz_splits_are_deterministic_and_difficulty_filters():
    a = fizzbuzz_task("task.train_size=50", "task.eval_size=10")
    b = fizzbuzz_task("task.train_size=50", "task.eval_size=10")
    assert a.train["tests"] == b.train["tests"] and a.eval["prompt"] == b.eval["prompt"]
    easy = fizzbuzz_task("task.difficulty=1", "task.train_size=100", "task.eval_size=10")
    assert set(easy.train["level"]) <= {0, 1} and set(easy.train["kind"]) <= {
        k for k, v in KIND_LEVELS.items() if v == 1
    }
    only = fizzbuzz_task("task.kinds=[fizzbuzz]", "task.train_size=50", "task.eval_size=10")
    assert set(only.train["kind"]) == {"fizzbuzz"} and len(set(only.train["level"])) == 3


def test_fizzbuzz_rules_in_the_eval_split_are_never_trained_on():
    splits = fizzbuzz_task("task.kinds=[fizzbuzz]", "task.difficulty=2", "task.train_size=3000", "task.eval_size=300")
    held_out = {r["reference"] for r in splits.eval if r["level"] == 2}
    assert len(held_out) > 100  # with 2,520 rule sets, 3,000 draws would repeat most of these by chance
    assert not held_out & set(splits.train["reference"])
    assert {r["reference"] for r in splits.eval if r["level"] == 1} <= set(splits.train["reference"])  # one program


@needs_bwrap
def test_every_fizzbuzz_reference_scores_one_and_a_wrong_solution_does_not(verifier):
    splits = fizzbuzz_task("task.train_size=500", "task.eval_size=100")
    for split in (splits.train, splits.eval):
        results = verifier.score_batch(split["reference"], split["tests"], split["entry_point"])
        failing = [(row["kind"], r) for row, r in zip(split, results, strict=True) if r["reward"] != 1.0]
        assert not failing, failing[:3]
    wrong = [f"```python\ndef {e}(*args):\n    return None\n```" for e in splits.eval["entry_point"]]
    results = verifier.score_batch(wrong, splits.eval["tests"], splits.eval["entry_point"])
    assert all(r["reward"] < 1.0 for r in results)
    # an almost-right FizzBuzz (drops the combined case) loses the tests that need it
    classic = fizzbuzz_task("task.kinds=[fizzbuzz]", "task.difficulty=1", "task.train_size=5", "task.eval_size=1")
    almost = "def fizzbuzz(n):\n    return 'Fizz' if n % 3 == 0 else 'Buzz' if n % 5 == 0 else str(n)\n"
    assert verifier.score(almost, classic.train[0]["tests"], "fizzbuzz")["reward"] < 1.0


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["task.difficulty=4"], "task.difficulty must be 1, 2 or 3"),
        (["task.kinds=[fizbuzz]"], r"task.kinds\[0\] is 'fizbuzz'; valid kinds"),
        (["task.tests_per_problem=3"], "task.tests_per_problem must be >= 5"),
        (["task.kinds=[roman]", "task.difficulty=1"], "no problem kind"),
        (['task.prompt_template="{signature} {rules}"'], r"placeholders may be \{signature\}, \{description\}"),
        (['task.prompt_template="{description} {"'], "does not format"),
        (["task.flawed_fraction=1.5"], r"task.flawed_fraction must be in \[0, 1\], got 1.5"),
        (['task.prompt_template="{signature}"'], "must contain the placeholder {description}"),
    ],
)
def test_bad_fizzbuzz_config_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        fizzbuzz_task(*overrides)


def test_fizzbuzz_prompt_template_changes_only_the_prompt():
    default = fizzbuzz_task("task.train_size=20", "task.eval_size=5")
    text = default.train[0]["prompt"][-1]["content"]
    assert text.startswith("Write a Python function `") and text.endswith("in one ```python code block.")
    template = 'task.prompt_template="{call} -> {result}: {description}"'
    bare = fizzbuzz_task("task.train_size=20", "task.eval_size=5", template)
    for plain, short in zip(default.train, bare.train, strict=True):
        assert short["tests"] == plain["tests"] and short["reference"] == plain["reference"]
        example = plain["prompt"][-1]["content"].split("For example, ")[1].split(".\n")[0]
        call, result = example.split(" returns ")
        assert short["prompt"][-1]["content"].startswith(f"{call} -> {result}: ")
        assert short["prompt"][-1]["content"].split(": ", 1)[1] in plain["prompt"][-1]["content"]


@needs_bwrap
def test_flawed_fizzbuzz_references_fail_the_combined_case_and_leave_the_split_alone(verifier):
    kinds = "task.kinds=[fizzbuzz,digit_sum]"
    plain = fizzbuzz_task(kinds, "task.train_size=200", "task.eval_size=40")
    mixed = fizzbuzz_task(kinds, "task.train_size=200", "task.eval_size=40", "task.flawed_fraction=0.5")
    for a, b in ((plain.train, mixed.train), (plain.eval, mixed.eval)):
        assert a["prompt"] == b["prompt"] and a["tests"] == b["tests"]
    assert plain.eval["reference"] == mixed.eval["reference"]  # the eval split's references stay right
    flawed = [m for p, m in zip(plain.train, mixed.train, strict=True) if p["reference"] != m["reference"]]
    assert {row["kind"] for row in flawed} == {"fizzbuzz"}  # digit_sum has no flawed version
    assert 0.35 < len(flawed) / sum(row["kind"] == "fizzbuzz" for row in mixed.train) < 0.65
    references, tests = [r["reference"] for r in flawed], [r["tests"] for r in flawed]
    results = verifier.score_batch(references, tests, ["fizzbuzz"] * len(flawed))
    # every problem tests a multiple of all its divisors, which the first-match answer gets wrong
    assert all(0.0 < r["reward"] < 1.0 for r in results), results[:3]


def test_fizzbuzz_defaults_to_the_seed_model_unless_told():
    assert compose_config(["task=fizzbuzz"]).model.name == "qwen2.5-coder-0.5b-instruct"
    assert compose_config(["task=fizzbuzz", "model=tiny"]).model.name == "tiny"


def code_task(*overrides: str):
    return build_task(compose_config(["task=code_jsonl", f"task.path={FIXTURE}", *overrides]).task)


@needs_bwrap
def test_code_jsonl_loads_and_its_references_pass(verifier):
    splits = code_task("task.eval_size=2", "task.reference_column=solution")
    assert len(splits.train) == 4 and len(splits.eval) == 2
    for split in (splits.train, splits.eval):
        results = verifier.score_batch(split["reference"], split["tests"], split["entry_point"])
        assert [r["status"] for r in results] == ["ok"] * len(split)
    assert "```python code block" in splits.train[0]["prompt"][-1]["content"]
    assert code_task("task.eval_size=2", "task.train_size=1").train.num_rows == 1


def write_rows(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.mark.parametrize(
    "rows,message",
    [
        ([{"prompt": "p", "tests": [{"args": [1], "expected": 1}], "entry_point": "f"}] * 3
         + [{"prompt": "p", "tests": [{"args": [1]}], "entry_point": "f"}],
         r"row 4: column 'tests': tests\[0\] has neither"),
        ([{"prompt": "", "tests": [{"stdin": "", "stdout": ""}]}] * 4, "row 1: column 'prompt' must be a non-empty"),
        ([{"prompt": "p", "tests": [{"args": [], "expected": 1}]}] * 4, "row 1: column 'tests': function tests need"),
        ([{"question": "p", "tests": []}] * 4, "has no column 'prompt'"),
    ],
)  # fmt: skip
def test_code_jsonl_bad_rows_are_named(tmp_path, rows, message):
    path = write_rows(tmp_path / "bad.jsonl", rows)
    with pytest.raises(ValueError, match=message):
        build_task(compose_config(["task=code_jsonl", f"task.path={path}", "task.eval_size=1"]).task)


def test_code_jsonl_missing_file_and_unreachable_hub(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        code_task(f"task.path={tmp_path / 'absent.jsonl'}")
    with pytest.raises(ValueError, match="loading it from the Hub failed"):
        code_task("task.path=someone/no-such-dataset")


def test_code_jsonl_needs_a_path():
    cfg = compose_config(["task=code_jsonl"])
    assert "task.path" in OmegaConf.missing_keys(cfg)
