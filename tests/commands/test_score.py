"""``python -m grpo_ext.score``: scores in order, details included, malformed input refused with the line."""

from __future__ import annotations

import json

import pytest

from support import run_cli


def score(tmp_path, lines, *args, reward="arithmetic_shaping"):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return run_cli(["-m", "grpo_ext.score", reward, str(path), *args], cwd=tmp_path, timeout=120)


GOOD = [
    json.dumps({"completion": "<answer>14</answer>", "answer": "14"}),
    json.dumps({"completion": "<answer>15</answer>", "answer": "14", "extra": "ignored"}),
    json.dumps({"completion": [{"role": "assistant", "content": "no tags"}], "answer": "14"}),
    json.dumps({"completion": "<answer>1</answer>", "answer": "not a number"}),
]


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["--workers", "2"], ["--timeout", "30"]])
def test_scores_each_line_in_order(tmp_path, args):
    result = score(tmp_path, GOOD, *args)
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["reward"] for o in out] == [1.0, 0.4, 0.0, None]
    assert [o["status"] for o in out] == ["exact", "close", "no_answer", "bad_gold"]


@pytest.mark.slow
def test_reward_params_on_the_command_line(tmp_path):
    result = score(tmp_path, GOOD[:2], "--param", "tolerance=0", "--param", "format_reward=0.1")
    assert [json.loads(line)["reward"] for line in result.stdout.splitlines()] == [pytest.approx(0.9), 0.1]


@pytest.mark.parametrize(
    "bad_line,message",
    [
        ("{not json", "line 2: not valid JSON"),
        ('["a list"]', "line 2: expected a JSON object"),
        ('{"answer": "3"}', "line 2: missing column 'completion'"),
        ('{"completion": "<answer>3</answer>"}', "line 2: missing column 'answer'"),
        ('\n{"completion": "<answer>3</answer>"}', "line 3: missing column 'answer'"),  # blank lines count
    ],
)
def test_malformed_lines_exit_2_naming_line_and_column_with_no_scores(tmp_path, bad_line, message):
    result = score(tmp_path, [GOOD[0], bad_line, GOOD[1]])
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args,message",
    [
        (["--workers", "0"], "--workers must be >= 1"),
        (["--param", "tolerence=1"], "bad params for reward"),
        (["--param", "novalue"], "--param expects KEY=VALUE"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, args, message):
    result = score(tmp_path, GOOD, *args)
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


def test_unknown_reward_lists_the_valid_ones(tmp_path):
    result = score(tmp_path, GOOD, reward="nope")
    assert (
        result.returncode == 2
        and "valid names: ['arithmetic_shaping', 'math', 'python_exec', 'reasoning_gym']" in result.stderr
    )


def test_missing_file(tmp_path):
    result = run_cli(["-m", "grpo_ext.score", "arithmetic_shaping", str(tmp_path / "absent.jsonl")], cwd=tmp_path)
    assert result.returncode == 2 and "absent.jsonl" in result.stderr


@pytest.mark.slow
def test_stdin(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "grpo_ext.score", "arithmetic_shaping", "-"],
        input=GOOD[0] + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(result.stdout)["reward"] == 1.0


@pytest.mark.slow
def test_hanging_and_crashing_rewards_do_not_stop_the_run(tmp_path):
    lines = [json.dumps({"completion": c}) for c in ["ok", "hang", "ok2", "crash", "ok3"]]
    result = score(tmp_path, lines, "--timeout", "2", "--workers", "2", reward="reward_fixtures.hangs")
    statuses = [json.loads(line).get("status") for line in result.stdout.splitlines()]
    assert statuses == [None, "timeout", None, None, None]
    result = score(tmp_path, lines, "--timeout", "5", reward="reward_fixtures.crashes")
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o.get("status") for o in out] == [None, None, None, "crashed", None]
    assert [o["reward"] for o in out] == [1.0, 1.0, 1.0, None, 1.0]


def test_a_reward_that_raises_gives_null_with_the_error(tmp_path):
    result = score(tmp_path, [json.dumps({"completion": "x"})], reward="reward_fixtures.raises")
    out = json.loads(result.stdout)
    assert out == {"reward": None, "status": "error", "error": "RuntimeError: reward bug"}


@pytest.mark.slow
@pytest.mark.parametrize("args", [[], ["--workers", "2"]])
def test_a_reward_written_to_trl_s_contract_is_called_as_trl_calls_it(tmp_path, args):
    """``reads_trl_arguments`` takes prompts first and reads completion_ids, trainer_state, log_metric and
    log_extra; ``chat_only`` reads ``c[0]["content"]``. Both failed on every line, called with the completion alone
    and ``prompt`` as a column."""
    chat = [{"role": "user", "content": "What is 7 * 2?"}]
    lines = [json.dumps({"prompt": chat, "completion": "<answer>14</answer>"}), json.dumps({"completion": "plain"})]
    result = score(tmp_path, lines, *args, reward="reward_fixtures.chat_only")
    assert result.returncode == 0, result.stderr
    first, second = [json.loads(line) for line in result.stdout.splitlines()]
    assert first == {"reward": 0.19}  # len("<answer>14</answer>") / 100, read as a chat completion's content
    assert second["status"] == "error" and "TypeError" in second["error"]  # plain text after a plain prompt: as TRL
    with_ids = json.dumps({"prompt": chat, "completion": "<answer>14</answer>", "completion_ids": [1, 2, 3]})
    result = score(tmp_path, [with_ids], *args, reward="reward_fixtures.reads_trl_arguments")
    assert result.returncode == 0, result.stderr
    # step 0 + 3 tokens / 1000 + a chat prompt ending with the user's message / 10
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{"reward": pytest.approx(0.103)}]
