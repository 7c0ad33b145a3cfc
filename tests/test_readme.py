"""Every README command that needs no GPU and no network runs, as written, and does what the README says.

The slow tier runs every command as written, and the first run (the commands the README says take minutes, a
comment with "min on 2 cores") must show learning. The default tier runs the others in a newcomer's order with
fewer training steps, which checks that each is composed right and that each finds what the one before it wrote.
"""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO, run_cli

README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    runs = ("python -m grpo_ext.", "python examples/")  # our entry points, and the examples' data writers
    return [line for line in lines if line.startswith(runs) and "# needs:" not in line]


COMMANDS = readme_commands()
LONG = "min on 2 cores"
# What makes a training command short: fewer SFT and GRPO steps.
SHORTER = {"grpo_ext.sft": ["sft.steps=4"], "grpo_ext.train": ["trainer.max_steps=2"]}


def test_the_readme_has_commands_to_run():
    assert len(COMMANDS) >= 5
    assert any("model=tiny" in c for c in COMMANDS)


def newcomer(tmp_path_factory, name: str):
    """One working directory for all the commands, run in the README's order, as a newcomer would."""
    workdir = tmp_path_factory.mktemp(name)
    (workdir / "examples").symlink_to(REPO / "examples")
    return workdir


@pytest.fixture(scope="module")
def newcomer_dir(tmp_path_factory):
    return newcomer(tmp_path_factory, "newcomer")


@pytest.fixture(scope="module")
def newcomer_dir_as_written(tmp_path_factory):
    return newcomer(tmp_path_factory, "as_written")


def run_readme_command(command: str, cwd, extra: list[str] = ()):
    argv = [*shlex.split(command.split("  #")[0]), *extra]
    result = run_cli(argv[1:], cwd=cwd, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not re.findall(r"^.*\w+Warning: .*$", result.stderr, flags=re.M)  # nothing a newcomer must puzzle over
    if "grpo_ext.train" in command and "--" not in command:
        steps = re.findall(r"max_steps=(\d+)", " ".join(argv)) or [r"\d+"]  # none given: the experiment's
        assert re.search(rf"^steps: {steps[-1]} ", result.stdout, flags=re.M), result.stdout
    return result


@pytest.mark.parametrize("command", [c for c in COMMANDS if LONG not in c])
def test_readme_command_runs_shortened(command, newcomer_dir):
    result = run_readme_command(command, newcomer_dir, SHORTER.get(command.split()[2], []))
    if "grpo_ext.summarize" in command:
        assert len(result.stdout.splitlines()) >= 5  # a header and four jobs


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if LONG not in c])
def test_readme_command_runs_as_written(command, newcomer_dir_as_written):
    result = run_readme_command(command, newcomer_dir_as_written)
    if "grpo_ext.summarize" in command:
        assert len(result.stdout.splitlines()) >= 5
    if "grpo_ext.train experiment=word_count_proof" in command:  # a reward of your own teaches, as the README says
        start = re.search(r"eval accuracy: ([\d.]+)% \(step 0\)", result.stdout)
        best = re.search(r"best eval accuracy: ([\d.]+)%", result.stdout)
        assert start and best and float(best.group(1)) - float(start.group(1)) >= 20, result.stdout


def test_readme_score_output_is_what_the_command_prints(tmp_path):
    shown = re.search(r"```\n(\{\"reward\".*?)```", README, flags=re.DOTALL).group(1)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    result = run_cli(
        ["-m", "grpo_ext.score", "arithmetic_shaping", "examples/arithmetic_completions.jsonl"], cwd=tmp_path
    )
    assert result.stdout == shown


@pytest.mark.slow
def test_the_first_run_shows_learning_as_the_readme_says(tmp_path):
    first = [c for c in COMMANDS if LONG in c]
    assert [c.split()[2] for c in first] == ["grpo_ext.sft", "grpo_ext.train"]
    sft, grpo = (run_readme_command(c, tmp_path) for c in first)
    start = re.search(r"SFT arithmetic: eval accuracy: 0.0% \(step 0\) -> ([\d.]+)% \(step 500\)", sft.stdout)
    assert start and 20 <= float(start.group(1)) <= 50, sft.stdout  # a middling warm start
    change = re.search(r"eval accuracy: ([\d.]+)% \(step 0\) -> ([\d.]+)% \(step 25\): \+([\d.]+) points", grpo.stdout)
    assert change and float(change.group(3)) >= 20, grpo.stdout
