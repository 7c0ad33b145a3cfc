"""``python -m grpo_ext.difficulty``: which prompts of a task's train split give GRPO a signal, measured by sampling
groups as training would, and the rows with one written for ``task=prompts``."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

from grpo_ext.difficulty import _total, summary
from grpo_ext.run.records import read_metrics
from grpo_ext.tasks import build_task
from grpo_ext.train import train
from support import FAST, TESTS, compose_config, run_cli

REWARD = "task.rewards=[{name: reward_fixtures.varies_on_odd_answers}]"
MEASURE = ["task=arithmetic", "model=tiny", "hardware=cpu", "logger=none", "task.train_size=24", "task.eval_size=8"]


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """One real run of the command (a random model; a reward that gives a signal exactly on odd answers)."""
    out = tmp_path_factory.mktemp("difficulty")
    command = ["-m", "grpo_ext.difficulty", *MEASURE, "trainer.num_generations=4", "eval.batch_size=8", REWARD,
               f"hydra.run.dir={out}"]  # fmt: skip
    result = run_cli(command, out)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


@pytest.mark.slow
def test_each_prompt_s_group_is_sampled_and_scored_and_the_ones_with_a_signal_are_kept(measured):
    out, stdout = measured
    rows = read_lines(out / "difficulty.jsonl")
    train_rows = build_task(compose_config(MEASURE).task).train.to_list()
    assert [{k: r[k] for k in train_rows[0]} for r in rows] == train_rows  # every row, as the task gave it
    odd = [int(r["answer"]) % 2 == 1 for r in rows]
    assert [r["signal"] for r in rows] == odd and 0 < sum(odd) < len(rows)
    assert all(r["pass_rate"] == 0.0 for r in rows)  # this reward's full score, 1.0, is never reached
    assert all((r["reward_mean"] > 0) == o for r, o in zip(rows, odd, strict=True))
    kept = read_lines(out / "with_signal.jsonl")
    assert kept == [row for row, o in zip(train_rows, odd, strict=True) if o]
    assert len(read_lines(out / "eval.jsonl")) == 8
    assert (
        f"{sum(odd)} of 24 prompts ({sum(odd) / 24:.1%}) give GRPO a signal (the rewards of their 4 completions "
        f"differ); {24 - sum(odd)} score alike: 0 solved every time, {24 - sum(odd)} never, 0 alike otherwise"
    ) in stdout
    assert "pass rate (first reward in full): 0/4: 24  1/4: 0  2/4: 0  3/4: 0  4/4: 0" in stdout


def test_the_printed_command_trains_on_the_prompts_with_a_signal(measured, tmp_path):
    out, stdout = measured
    line = next(line for line in stdout.splitlines() if line.startswith("train on the prompts with a signal: "))
    command = shlex.split(line.split(": ", 1)[1])
    assert command[:3] == ["python", "-m", "grpo_ext.train"]
    cfg = compose_config([*command[3:], *FAST])
    assert cfg.task.name == "prompts" and cfg.task.rewards[0].name == "reward_fixtures.varies_on_odd_answers"
    assert (cfg.model.name, cfg.task.max_completion_length) == ("tiny", 32)
    splits = build_task(cfg.task)
    assert len(splits.train) == len(read_lines(out / "with_signal.jsonl")) and len(splits.eval) == 8
    train(cfg, tmp_path)
    assert [r["frac_reward_zero_std"] for r in read_metrics(tmp_path) if "loss" in r] == [0.0, 0.0]  # each has one


@pytest.mark.slow
def test_a_task_where_nothing_differs_says_so_instead_of_a_command(tmp_path):
    """A random model never writes <answer>: arithmetic_shaping gives 0 to every completion."""
    command = ["-m", "grpo_ext.difficulty", *MEASURE, "task.train_size=4", "trainer.num_generations=2",
               f"hydra.run.dir={tmp_path}"]  # fmt: skip
    result = run_cli(command, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "0 of 4 prompts (0.0%) give GRPO a signal" in result.stdout
    assert "no prompt gives a signal: a warm start on the task's references (grpo_ext.sft)" in result.stdout
    assert (tmp_path / "with_signal.jsonl").read_text() == ""


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.temperature=0", "config error: trainer.temperature=0.0 is not allowed"),
        ("task.rewards=[{name: nope}]", "config error: task.rewards[0]: unknown reward 'nope'"),
        ("task.rewards=[{name: python_exec}]", "task error: reward 'python_exec' reads column 'tests'"),
    ],
)
@pytest.mark.slow
def test_bad_settings_are_named_before_a_model_loads(override, message, tmp_path):
    result = run_cli(["-m", "grpo_ext.difficulty", *MEASURE, override, f"hydra.run.dir={tmp_path}"], tmp_path)
    assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "difficulty.jsonl").exists()


def test_a_group_s_total_is_the_weighted_sum_training_uses_and_the_summary_counts_each_kind():
    assert _total([1.0, None, 0.5], [1.0, 3.0, 2.0]) == 2.0  # a reward that gave None is left out, as TRL does
    assert _total([None, None], [1.0, 1.0]) is None
    rows = [
        {"pass_rate": 1.0, "signal": False},
        {"pass_rate": 0.0, "signal": False},
        {"pass_rate": 0.5, "signal": False},  # two halves scoring alike: a reward that pays for something else
        {"pass_rate": 0.5, "signal": True},
    ]
    assert summary(rows, 2) == (
        "1 of 4 prompts (25.0%) give GRPO a signal (the rewards of their 2 completions differ); 3 score alike: 1 "
        "solved every time, 1 never, 1 alike otherwise\npass rate (first reward in full): 0/2: 1  1/2: 2  2/2: 1"
    )


@pytest.mark.slow
def test_a_measurement_cut_short_goes_on_where_it_stopped_and_gives_the_same_figures(measured, tmp_path):
    """A kill mid-way leaves the figures measured so far and the settings; the same command into the same directory
    measures only the rest (each batch has its own seed: the figures of an unbroken run), and once finished, run
    again, it prints its result without measuring anything."""
    out, stdout = measured
    complete = read_lines(out / "difficulty.jsonl")
    figures = [{key: row[key] for key in ("pass_rate", "reward_mean", "signal")} for row in complete]
    (tmp_path / "difficulty.settings.json").write_text((out / "difficulty.settings.json").read_text())
    kept = "".join(json.dumps(f) + "\n" for f in figures[:9])
    (tmp_path / "difficulty.partial.jsonl").write_text(kept + '{"pass_rate": 0.2')  # the line the kill cut short
    command = ["-m", "grpo_ext.difficulty", *MEASURE, "trainer.num_generations=4", "eval.batch_size=8", REWARD,
               f"hydra.run.dir={tmp_path}"]  # fmt: skip
    result = run_cli(command, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # two prompts a batch: row 8 (the ninth) is measured again with its batch's seed
    assert "continuing" in result.stdout and "8 of 24 prompts measured already" in result.stdout
    assert read_lines(tmp_path / "difficulty.jsonl") == complete
    assert not (tmp_path / "difficulty.partial.jsonl").exists()
    assert printed(result.stdout) == printed(stdout.replace(str(out), str(tmp_path)))

    again = run_cli(command, tmp_path)
    assert again.returncode == 0 and printed(again.stdout) == printed(result.stdout)
    assert "every prompt's figures with these settings: nothing left to measure" in again.stdout
    assert "Loading weights" not in again.stderr


def printed(stdout):
    """What the command prints, without the log's lines (Hydra logs to standard output too)."""
    return [line for line in stdout.splitlines() if not line.startswith("[")]


@pytest.mark.slow
def test_other_settings_in_the_same_directory_are_refused_naming_what_differs(measured):
    out, _ = measured
    before = (out / "difficulty.jsonl").read_text()
    changed = ["trainer.temperature=0.5", "task.train_size=20"]
    result = run_cli(["-m", "grpo_ext.difficulty", *MEASURE, "trainer.num_generations=4", "eval.batch_size=8",
                      REWARD, *changed, f"hydra.run.dir={out}"], out)  # fmt: skip
    assert result.returncode == 1, result.stderr[-2000:]
    assert (
        f"config error: {out} holds a measurement with other settings (rows: 24 -> 20; temperature: 1.0 -> 0.5; the "
        "prompts differ): measure into another directory (hydra.run.dir), or remove difficulty.settings.json and "
        "difficulty.partial.jsonl there to start this one anew"
    ) in result.stderr
    assert (out / "difficulty.jsonl").read_text() == before


@pytest.mark.slow
def test_a_model_changed_under_the_same_name_is_another_measurement(tmp_path):
    """The tiny model built with another depth, then a saved model trained further in place: each is refused as a
    continuation of the measurement made with the model before it."""
    command = ["-m", "grpo_ext.difficulty", *MEASURE, "trainer.num_generations=2", "eval.batch_size=8", REWARD,
               "task.train_size=8", f"hydra.run.dir={tmp_path / 'tiny'}"]  # fmt: skip
    assert run_cli(command, tmp_path).returncode == 0
    deeper = run_cli([*command, "model.architecture.num_hidden_layers=3"], tmp_path)
    assert deeper.returncode == 1
    assert "holds a measurement with other settings (the model's files differ)" in deeper.stderr, deeper.stderr[-2000:]

    from safetensors.torch import load_file, save_file

    from grpo_ext.backends.models import resolve

    saved = tmp_path / "saved"
    shutil.copytree(resolve(compose_config(["model=tiny"]).model), saved)
    on_saved = [*command[:-1], f"model.path={saved}", f"hydra.run.dir={tmp_path / 'saved_run'}"]
    assert run_cli(on_saved, tmp_path).returncode == 0
    weights = load_file(saved / "model.safetensors")
    save_file({name: tensor + 0.01 for name, tensor in weights.items()}, saved / "model.safetensors")  # "trained"
    again = run_cli(on_saved, tmp_path)
    assert again.returncode == 1 and "(the model's files differ)" in again.stderr, again.stderr[-2000:]


@pytest.mark.slow
def test_ctrl_c_keeps_what_was_measured_and_names_the_command_that_goes_on(tmp_path):
    command = [sys.executable, "-m", "grpo_ext.difficulty", *MEASURE, "task.train_size=2000", "eval.batch_size=4",
               "trainer.num_generations=2", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    partial = tmp_path / "difficulty.partial.jsonl"
    deadline = time.monotonic() + 120
    while not (partial.exists() and partial.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 1, stderr[-3000:]
    lines = partial.read_text().splitlines()
    assert 2 <= len(lines) < 2000 and all(json.loads(line)["signal"] is False for line in lines)
    assert "stopped; the figures measured so far are kept, and this goes on from there: python -m " in stderr
    said = stderr.split("goes on from there: ")[-1].strip()
    given = command[3:-1]
    assert shlex.split(said) == ["python", "-m", "grpo_ext.difficulty", *given, f"hydra.run.dir={tmp_path}"]
