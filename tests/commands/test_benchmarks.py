"""The benchmark scripts run, shortened: the GPU checks' driver in the default tier; the learning proof and the
scripts behind the README's figures in the slow tier (which CI runs too, so that a change that breaks one is found
here and not on a lent GPU machine)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from support import REPO, needs_bwrap

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


GPU_CHECKS = str(REPO / "benchmarks" / "gpu_checks.sh")


def gpu_checks(tmp_path, *checks, budget=None):
    """``benchmarks/gpu_checks.sh`` with this interpreter, its logs in ``tmp_path``, and no wheels installed."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "WHEELS": str(tmp_path / "no-wheels")}
    if budget is not None:
        env["BUDGET_S"] = str(budget)
    return subprocess.run(["bash", GPU_CHECKS, *checks], capture_output=True, text=True, timeout=300, env=env)


def test_gpu_checks_refuses_an_unknown_check_before_running_any(tmp_path):
    result = gpu_checks(tmp_path, "tests", "rollout_2x51")
    assert result.returncode == 2
    assert "unknown check: rollout_2x51 (one of: tests rollout_32x256" in result.stderr
    assert not list(tmp_path.iterdir())  # nothing ran, not even the version line


@pytest.mark.slow
def test_gpu_checks_cuts_a_deadline_to_what_is_left_of_the_budget(tmp_path):
    result = gpu_checks(tmp_path, "tests", budget=90)
    deadline = int(re.search(r"== tests \(deadline (\d+)s\)", result.stdout).group(1))
    assert 60 <= deadline < 90, result.stdout  # 300 s unbudgeted; 90 less the time the version line took
    assert "== tests: exit status 0" in result.stdout, result.stdout  # here every GPU test is skipped
    assert "skipped" in (tmp_path / "tests.log").read_text()
    assert (tmp_path / "versions.log").read_text().startswith("torch ")
    assert result.returncode == 0


def test_gpu_checks_skips_what_the_budget_leaves_no_time_for_and_counts_it(tmp_path):
    result = gpu_checks(tmp_path, "tests", "rollout_32x256", budget=30)
    assert "== tests: skipped" in result.stdout and "== rollout_32x256: skipped" in result.stdout, result.stdout
    assert result.returncode == 2
    assert not (tmp_path / "tests.log").exists()


def run_benchmark(cwd, script: str, *args: str) -> str:
    """A benchmark script's output, run from ``cwd`` on this CPU; it must exit with 0."""
    env = {**os.environ, "WANDB_MODE": "disabled", "TRL_EXPERIMENTAL_SILENCE": "1"}
    command = [sys.executable, str(REPO / "benchmarks" / script), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


@pytest.mark.slow
def test_rollout_benchmark_compares_both_paths_on_one_job(tmp_path):
    out = run_benchmark(tmp_path, "rollout.py", "--steps", "3", "--repeats", "1", "model=tiny", "hardware=cpu",
                        "eval.during_training=false", "trainer.per_device_train_batch_size=4",
                        "trainer.num_generations=2", "trainer.max_completion_length=16")  # fmt: skip
    assert re.search(r"^static_cache\s+[\d.]+\s+\d+\s+[\d.]+$", out, flags=re.MULTILINE), out
    assert re.search(r"^ratio \(trl / static_cache\)\s+[\d.]+$", out, flags=re.MULTILINE), out
    trl, static = re.search(r"^mean completion tokens\s+([\d.]+)\s+([\d.]+)$", out, flags=re.MULTILINE).groups()
    assert trl == static  # same seed, same sampling: the same completions
    mean, largest = re.search(r"mean \|diff\| ([\d.e+-]+), largest ([\d.e+-]+)", out).groups()
    assert float(largest) < 1e-4, out  # float32 on the CPU


@pytest.mark.slow
def test_profiles_benchmark_prints_a_row_per_profile(tmp_path):
    out = run_benchmark(
        tmp_path, "profiles.py", "--profiles", "cpu", "--baseline", "none", "--steps", "2", "model=tiny"
    )
    assert re.search(r"^\| cpu \| none \| - \| - \| [\d.]+ \|  \|$", out, flags=re.MULTILINE), out


@pytest.mark.slow
def test_step_profile_splits_a_step_into_parts(tmp_path):
    out = run_benchmark(
        tmp_path, "step_profile.py", "model=tiny", "hardware=cpu", "logger=none", "trainer.max_steps=3"
    )
    parts = dict(re.findall(r"^(generation|log-prob forwards|reward|train forward\+backward|optimizer|other)\s+"
                            r"([\d.]+)\s+\d+%$", out, flags=re.MULTILINE))  # fmt: skip
    assert len(parts) == 6, out
    # "other" is the step less the timed parts: a part timed twice over would make it negative (and the regex fail).
    assert float(parts["generation"]) > 0 and float(parts["train forward+backward"]) > 0, out


@pytest.mark.slow
def test_overhead_benchmark_times_ours_and_plain_trl(tmp_path):
    out = run_benchmark(tmp_path, "overhead.py", "model=tiny", "hardware=cpu", "logger=none", "trainer.max_steps=3")
    ours = float(re.search(r"^grpo_ext  median step ([\d.]+) s", out, flags=re.MULTILINE).group(1))
    plain = float(re.search(r"^plain TRL median step ([\d.]+) s", out, flags=re.MULTILINE).group(1))
    ratio = float(re.search(r"^ratio grpo_ext / plain TRL: ([\d.]+)$", out, flags=re.MULTILINE).group(1))
    assert ours > 0 and plain > 0 and abs(ratio - ours / plain) < 0.01, out


@needs_bwrap
def test_verifier_throughput_benchmark_judges_every_program(tmp_path):
    out = run_benchmark(tmp_path, "verifier_throughput.py", "--programs", "40", "--baseline-programs", "10",
                        "--rounds", "1", "--samples", "2")  # fmt: skip
    assert re.search(r"^40 programs \(\d+ distinct sources\)", out, flags=re.MULTILINE), out
    assert re.search(r"^ratio: [\d.]+x$", out, flags=re.MULTILINE), out
    assert re.search(r"programs that import typing, collections: +\d+/s without, +\d+/s with", out), out
    assert re.search(r"^  typing +[\d.]+ ms +\+[\d.]+ MiB$", out, flags=re.MULTILINE), out


@needs_bwrap
@pytest.mark.slow
def test_humaneval_benchmark_scores_the_wheels_problems(tmp_path):
    out = run_benchmark(tmp_path, "humaneval.py", "--per-problem", "1")
    assert "canonical solutions, as completions of the prompt: 164 of 164 score 1.0" in out, out
    assert re.search(r"mutants that HumanEval's own check fails: \d+ from", out), out


@pytest.mark.slow
def test_sampler_benchmark_compares_policies_from_one_warm_start(tmp_path):
    out = run_benchmark(tmp_path, "sampler.py", "--out", str(tmp_path), "--seeds", "1", "--policies",
                        "uniform,adaptive", *SHORT)  # fmt: skip
    assert re.search(r"^adaptive: groups with a signal [\d.]+% of each step's", out, flags=re.MULTILINE), out
    assert re.search(r"^adaptive: reaches it at .*; goal .*: (met|not met)$", out, flags=re.MULTILINE), out
    assert re.search(r"sampler cost a step .*: adaptive [\d.]+ ms", out), out


@pytest.mark.slow
def test_mixture_benchmark_trains_the_mixture_and_each_part_alone(tmp_path):
    short = ["hardware=cpu", "sft.steps=5", "eval.size=4", "eval.every=1", "task.parts.arithmetic.train_size=64",
             "task.parts.fizzbuzz.train_size=64", "task.parts.reasoning_gym.train_size=64"]  # fmt: skip
    out = run_benchmark(tmp_path, "mixture.py", "--out", str(tmp_path), "--steps", "4", *short)
    for part in ("arithmetic", "fizzbuzz", "reasoning_gym"):
        assert re.search(rf"^{part} +[\d.]+%", out, flags=re.MULTILINE), out
    assert re.search(r"^bookkeeping: [\d.]+ ms a batch", out, flags=re.MULTILINE), out
    for part in ("arithmetic", "fizzbuzz", "reasoning_gym"):  # each alone run trains and evaluates its part only
        keys = {key for line in (tmp_path / "mixture" / part / "metrics.jsonl").read_text().splitlines()
                for key in json.loads(line) if key.startswith("eval/") and key.endswith("/accuracy")}  # fmt: skip
        assert keys == {f"eval/{part}/accuracy", "eval/accuracy"}, keys


@pytest.mark.slow
def test_reward_workers_benchmark_replaces_hung_workers_both_ways(tmp_path):
    out = run_benchmark(tmp_path, "reward_workers.py", "--repeats", "2")
    assert re.search(r"spawn: first worker ready in [\d.]+ s, a replacement in [\d.]+ s", out), out
    assert re.search(r"forkserver: first worker ready in [\d.]+ s, a replacement in [\d.]+ s", out), out
    assert re.search(r"replacement: spawn / forkserver = \d+x", out), out


def test_math_verify_suite_converter_reads_parametrized_rows_without_running_them(tmp_path):
    """The converter reads the tables from the syntax tree: labelled rows with their settings and the test's
    match_types; a row the test computes is left out and named; nothing in the file runs."""
    (tmp_path / "test_all.py").write_text(
        "import math\n"
        "import pytest\n"
        "raise SystemExit('this file must not run')\n"
        "@pytest.mark.parametrize('gold,pred,expected,precision', [\n"
        "    ('$1$', '$1.0$', 1, 6),\n"
        "    ('$2$', '$3$', 0, 3),\n"
        "    ('$x$', f'${math.sqrt(2)}$', 1, 6),\n"
        "])\n"
        "def test_numbers(gold, pred, expected, precision):\n"
        "    assert compare(gold, pred, match_types=['latex', 'expr'], precision=precision) == expected\n"
        "@pytest.mark.parametrize('text', ['no gold here'])\n"
        "def test_other(text):\n"
        "    pass\n"
    )
    for name in (
        "test_numina_cases.py",
        "test_open_thoughts.py",
        "test_yujianll.py",
        "test_boxed.py",
        "test_strict.py",
    ):
        (tmp_path / name).write_text("")
    out = tmp_path / "rows.jsonl"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "math_verify_suite.py"), "--tests", str(tmp_path),
                          "--out", str(out)], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows == [
        {"file": "test_all.py", "test": "test_numbers", "gold": "$1$", "pred": "$1.0$", "expected": True,
         "settings": {"precision": 6, "match_types": ["latex", "expr"]}},
        {"file": "test_all.py", "test": "test_numbers", "gold": "$2$", "pred": "$3$", "expected": False,
         "settings": {"precision": 3, "match_types": ["latex", "expr"]}},
    ]  # fmt: skip
    assert "test_all.py:7 test_numbers: computed, not literal" in run.stderr
