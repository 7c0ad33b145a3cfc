"""Every README command that needs no GPU and no network runs, as written, and does what the README says."""

from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO, run_cli

README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line.startswith("python -m grpo_ext.") and "# needs:" not in line]


COMMANDS = readme_commands()


def test_the_readme_has_commands_to_run():
    assert len(COMMANDS) >= 5
    assert any("model=tiny" in c for c in COMMANDS)


@pytest.fixture(scope="module")
def newcomer_dir(tmp_path_factory):
    """One working directory for all the commands, run in the README's order, as a newcomer would."""
    workdir = tmp_path_factory.mktemp("newcomer")
    (workdir / "examples").symlink_to(REPO / "examples")
    return workdir


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs(command, newcomer_dir):
    argv = shlex.split(command.split("  #")[0])
    result = run_cli(argv[1:], cwd=newcomer_dir, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    if "grpo_ext.train" in command and "--" not in command:
        steps = re.search(r"max_steps=(\d+)", command).group(1)
        assert f"steps: {steps}" in result.stdout
    if "grpo_ext.summarize" in command:
        assert len(result.stdout.splitlines()) >= 5  # a header and four jobs


def test_readme_score_output_is_what_the_command_prints(tmp_path):
    shown = re.search(r"```\n(\{\"reward\".*?)```", README, flags=re.DOTALL).group(1)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    result = run_cli(
        ["-m", "grpo_ext.score", "arithmetic_shaping", "examples/arithmetic_completions.jsonl"], cwd=tmp_path
    )
    assert result.stdout == shown
