"""Every command the README and the docs show that needs no GPU and no network runs, as written, and does what they
say; and the docs describe the software as it is.

The commands run in one working directory, in the order a newcomer reads them (the README, then the docs' pages in
the site's order), so that each finds what the ones before it wrote. The default tier runs the quick ones (no
training); the slow tier runs every one, shortened (fewer SFT and GRPO steps: each composes and finds its inputs) and
as written, and the first run, whose commands the README says take minutes, must show learning.
"""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from support import REPO, run_cli

README = (REPO / "README.md").read_text()
PAGES = [entry for item in yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"] for entry in item.values()]
DOCS = {"README.md": README, **{f"docs/{page}": (REPO / "docs" / page).read_text() for page in PAGES}}


def commands(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    runs = ("python -m grpo_ext.", "python examples/")  # our entry points, and the examples' data writers
    return [line for line in lines if line.startswith(runs) and "# needs:" not in line]


COMMANDS = [command for text in DOCS.values() for command in commands(text)]
LONG = "min on 2 cores"
# What makes a training command short: fewer SFT and GRPO steps.
SHORTER = {"grpo_ext.sft": ["sft.steps=4"], "grpo_ext.train": ["trainer.max_steps=2"]}
TRAINS = ("grpo_ext.sft", "grpo_ext.train", "grpo_ext.evaluate", "grpo_ext.infer", "grpo_ext.difficulty")


def quick(command: str) -> bool:
    """A command that loads no model: scoring, summaries, plots, help and the config."""
    return command.split()[2] not in TRAINS or "--help" in command or "--cfg" in command


def test_the_readme_is_short_and_the_docs_have_commands_to_run():
    assert len(README.splitlines()) <= 300
    assert len(commands(README)) >= 4 and any("model=tiny" in c for c in commands(README))
    assert len(COMMANDS) >= 15


def test_every_page_is_in_the_site_and_every_link_between_pages_resolves():
    assert sorted(PAGES) == sorted(p.name for p in (REPO / "docs").glob("*.md"))
    for name, text in DOCS.items():
        base = REPO / name.rsplit("/", 1)[0] if "/" in name else REPO
        for target in re.findall(r"\]\(([^)#]+\.(?:md|png))(?:#[^)]*)?\)", text):
            assert (base / target).exists(), f"{name} links to {target}, which does not exist"


def test_the_docs_name_hardware_as_a_paper_would_and_keep_history_out():
    """Figures name their CPU or GPU; the change history is in CHANGELOG.md."""
    said = {
        r"\bmachine [AB]\b": "a machine named by a letter",
        r"project's (2-core )?(CPU )?machines?": "the project's machines",
        r"\blent\b": "a GPU being lent",
        r"\b[Bb]efore, (it|the|a|every)\b|\bused to\b": "history",
    }
    for name, text in DOCS.items():
        for pattern, what in said.items():
            found = re.search(pattern, text)
            assert not found, f"{name} speaks of {what}: {found.group(0)!r}"


def newcomer(tmp_path_factory, name: str):
    """One working directory for all the commands, run in the docs' order, as a newcomer would."""
    workdir = tmp_path_factory.mktemp(name)
    (workdir / "examples").symlink_to(REPO / "examples")
    return workdir


@pytest.fixture(scope="module")
def newcomer_dir(tmp_path_factory):
    return newcomer(tmp_path_factory, "newcomer")


@pytest.fixture(scope="module")
def newcomer_dir_as_written(tmp_path_factory):
    return newcomer(tmp_path_factory, "as_written")


def run_doc_command(command: str, cwd, extra: list[str] = ()):
    argv = [*shlex.split(command.split("  #")[0]), *extra]
    result = run_cli(argv[1:], cwd=cwd, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not re.findall(r"^.*\w+Warning: .*$", result.stderr, flags=re.M)  # nothing a newcomer must puzzle over
    if "grpo_ext.train" in command and "--" not in command:
        steps = re.findall(r"max_steps=(\d+)", " ".join(argv)) or [r"\d+"]  # none given: the experiment's
        assert re.search(rf"^steps: {steps[-1]} ", result.stdout, flags=re.M), result.stdout
    return result


def check_output(command: str, result) -> None:
    if "grpo_ext.summarize" in command:
        assert len(result.stdout.splitlines()) >= 5  # a header and four jobs


@pytest.mark.parametrize("command", [c for c in COMMANDS if quick(c)])
def test_doc_command_runs(command, tmp_path):
    """The commands that load no model, each on its own (the sweep's summary and plots run with it, slow tier)."""
    if command.split()[2] in ("grpo_ext.summarize", "grpo_ext.plot"):
        pytest.skip("reads the sweep of the slow tier's run")
    (tmp_path / "examples").symlink_to(REPO / "examples")
    check_output(command, run_doc_command(command, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if LONG not in c])
def test_doc_command_runs_shortened(command, newcomer_dir):
    result = run_doc_command(command, newcomer_dir, SHORTER.get(command.split()[2], []))
    check_output(command, result)


@pytest.mark.slow
@pytest.mark.parametrize("command", [c for c in COMMANDS if LONG not in c])
def test_doc_command_runs_as_written(command, newcomer_dir_as_written):
    result = run_doc_command(command, newcomer_dir_as_written)
    check_output(command, result)
    if "grpo_ext.train experiment=word_count_proof" in command:  # a reward of your own teaches, as the docs say
        start = re.search(r"eval accuracy: ([\d.]+)% \(step 0\)", result.stdout)
        best = re.search(r"best eval accuracy: ([\d.]+)%", result.stdout)
        assert start and best and float(best.group(1)) - float(start.group(1)) >= 20, result.stdout


def test_the_score_output_shown_is_what_the_command_prints(tmp_path):
    page = DOCS["docs/tasks-and-rewards.md"]
    shown = re.search(r"```\n(\{\"reward\".*?)```", page, flags=re.DOTALL).group(1)
    (tmp_path / "examples").symlink_to(REPO / "examples")
    result = run_cli(
        ["-m", "grpo_ext.score", "arithmetic_shaping", "examples/arithmetic_completions.jsonl"], cwd=tmp_path
    )
    assert result.stdout == shown


@pytest.mark.slow
def test_the_first_run_shows_learning_as_the_readme_says(tmp_path):
    first = [c for c in commands(README) if LONG in c]
    assert [c.split()[2] for c in first] == ["grpo_ext.sft", "grpo_ext.train"]
    sft, grpo = (run_doc_command(c, tmp_path) for c in first)
    start = re.search(r"SFT arithmetic: eval accuracy: 0.0% \(step 0\) -> ([\d.]+)% \(step 500\)", sft.stdout)
    assert start and 20 <= float(start.group(1)) <= 50, sft.stdout  # a middling warm start
    change = re.search(r"eval accuracy: ([\d.]+)% \(step 0\) -> ([\d.]+)% \(step 25\): \+([\d.]+) points", grpo.stdout)
    assert change and float(change.group(3)) >= 20, grpo.stdout
