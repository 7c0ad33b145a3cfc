"""The learning-proof benchmark runs end to end, shortened (slow tier: SFT, GRPO and evaluations of each task)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import REPO

SHORT = ["hardware=cpu", "sft.steps=5", "trainer.max_steps=2", "eval.size=8", "eval.every=1", "task.train_size=64",
         "task.eval_size=8"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "task,columns",
    [
        ("arithmetic", ["greedy worked out", "forced at once", "forced worked out"]),
        ("fizzbuzz", ["greedy concatenates", "forced first match", "forced concatenates", "level 1"]),
    ],
)
def test_learning_proof_runs_and_reuses_only_its_own_warm_start(task, columns, tmp_path):
    script = [sys.executable, str(REPO / "benchmarks" / "learning_proof.py"), task, "--out", str(tmp_path)]
    first = subprocess.run([*script, "--seed", "1", *SHORT], capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    header = next(line for line in first.stdout.splitlines() if "pass@8" in line)
    assert all(column in header for column in columns), header
    assert re.search(r"held-out greedy accuracy along GRPO: 0: [\d.]+%  1: [\d.]+%  2: [\d.]+%", first.stdout)
    assert (tmp_path / task / "proof.png").stat().st_size > 10_000
    other_seed = subprocess.run([*script, "--seed", "2", *SHORT], capture_output=True, text=True, timeout=1200)
    assert other_seed.returncode != 0 and "trained with another seed" in other_seed.stderr
