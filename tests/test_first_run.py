"""The README's first run, as written: an SFT warm start, then 25 GRPO steps that must raise the held-out accuracy
as the README says (slow tier, about 7 minutes; a file of its own, so that it runs beside the other slow tests)."""

from __future__ import annotations

import re

import pytest

from test_readme import COMMANDS, LONG, run_readme_command


@pytest.mark.slow
def test_the_first_run_shows_learning_as_the_readme_says(tmp_path):
    first = [c for c in COMMANDS if LONG in c]
    assert [c.split()[2] for c in first] == ["grpo_ext.sft", "grpo_ext.train"]
    sft, grpo = (run_readme_command(c, tmp_path) for c in first)
    start = re.search(r"SFT arithmetic: eval accuracy: 0.0% \(step 0\) -> ([\d.]+)% \(step 500\)", sft.stdout)
    assert start and 20 <= float(start.group(1)) <= 50, sft.stdout  # a middling warm start
    change = re.search(r"eval accuracy: ([\d.]+)% \(step 0\) -> ([\d.]+)% \(step 25\): \+([\d.]+) points", grpo.stdout)
    assert change and float(change.group(3)) >= 20, grpo.stdout
