"""Several training processes on one run, as torchrun and ``accelerate launch`` start them (one per GPU): here two
CPU processes joined by gloo, through the real torchrun, so that DDP, the process group and the launcher's own
signal handling are the real ones."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from subprocess import Popen

import psutil
import pytest
import torch
import transformers
from packaging.version import Version
from safetensors.torch import load_file

from grpo_ext.run import checkpoints
from grpo_ext.run.records import read_metrics
from support import FAST, TESTS, history, run_cli, wait_for_step

ARGS = [
    *[o for o in FAST if not o.startswith(("trainer.max_steps", "trainer.save_strategy", "eval.during_training"))],
    "task=arithmetic",
    "model=tiny",
    "peft=lora",
    "trainer.max_steps=6",
    "trainer.save_steps=1",
    "eval.every=3",
    # evaluations scored 0%, 100%, 50%: the best model is the one of step 3, saved by the main process mid-run
    "task.rewards=[{name: reward_fixtures.ScriptedEvaluations}, {name: reward_fixtures.prefers_short}]",
    "trainer.learning_rate=1e-3",
]


def torchrun(cwd: Path, *args: str, env: dict[str, str | None] | None = None, entry: str = "train") -> Popen:
    """``torchrun --standalone --nproc_per_node 2 -m grpo_ext.ENTRY ARGS`` (a free rendezvous port: tests may run
    side by side), both streams in one pipe. ``ARGS`` (this module's) come first for training."""
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", f"grpo_ext.{entry}", *(ARGS if entry == "train" else []), *args]
    return Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: Popen, timeout: float = 240) -> str:
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        raise AssertionError(f"still running after {timeout} s: {process.communicate()[0][-3000:]}") from None


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """One uninterrupted run of 6 steps in two processes, in the run directory Hydra names by itself, with W&B
    offline; returns (run directory, output)."""
    cwd = tmp_path_factory.mktemp("ddp")
    process = torchrun(cwd, "logger=wandb", "logger.mode=offline", env={"WANDB_MODE": None, "WANDB_API_KEY": None})
    out = finish(process)
    assert process.returncode == 0, out[-3000:]
    runs = list((cwd / "outputs" / "arithmetic").iterdir())
    assert len(runs) == 1, runs  # both processes in one run directory
    return runs[0], out


@pytest.mark.slow
def test_two_processes_write_one_run(two_processes):
    run_dir, out = two_processes
    assert [step for step, _, _ in history(run_dir)] == [1, 2, 3, 4, 5, 6]  # each step once, from the main process
    evals = [r["step"] for r in read_metrics(run_dir) if "eval/accuracy" in r]
    assert evals == [0, 3, 6]
    for step in range(4, 7):  # save_total_limit 3 keeps the last three, each with both processes' RNG state
        saved = run_dir / f"checkpoint-{step}"
        assert checkpoints.is_complete(saved)
        assert (saved / "rng_state_0.pth").exists() and (saved / "rng_state_1.pth").exists()
    assert (run_dir / "final_adapter" / "adapter_model.safetensors").exists()
    assert (run_dir / "final_model" / "model.safetensors").exists()
    for adapter in ("final_adapter", "best_adapter"):  # each merged by the main process only
        assert out.count(f"{adapter} merged into the base") == 1, out[-3000:]
    assert out.count("run directory: ") == 1 and out.count("steps: 6") == 1  # the closing summary, once
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}
    assert json.loads((run_dir / "best.json").read_text()) == {"step": 3, "eval/accuracy": 1.0, "model": "best_model"}
    assert (run_dir / "best_adapter" / "adapter_model.safetensors").exists()
    best, final = (load_file(run_dir / name / "model.safetensors") for name in ("best_model", "final_model"))
    assert any(not torch.equal(best[key], final[key]) for key in final)  # three more steps trained after step 3
    assert (run_dir / "train.log").read_text().count("task arithmetic:") == 1
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1  # one W&B run, not one per process


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The same run, sent SIGTERM in its second process only (a user's kill, a failing node's agent) once step 2
    is logged; returns (run directory, output)."""
    cwd = tmp_path_factory.mktemp("interrupted")
    run_dir = cwd / "run"
    process = torchrun(cwd, f"hydra.run.dir={run_dir}")
    try:
        wait_for_step(run_dir, 2, process, timeout=180)
    except AssertionError:
        finish(process, timeout=10)  # no worker left behind
        raise
    workers = [p for p in psutil.Process(process.pid).children(recursive=True) if "grpo_ext.train" in p.cmdline()]
    second = next(p for p in workers if p.environ().get("RANK") == "1")
    second.send_signal(signal.SIGTERM)
    out = finish(process, timeout=120)
    assert process.returncode != 0, out[-3000:]
    return run_dir, out


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_after_the_same_step(interrupted):
    """Both stop after the same step with a complete checkpoint, instead of the first waiting for ever in the next
    gradient all-reduce (on gloo, crashing: "Connection reset by peer")."""
    run_dir, out = interrupted
    assert "another training process received SIGTERM" in out, out[-3000:]
    assert out.count("stopped by SIGTERM at step") == 1, out[-3000:]
    saved = checkpoints.latest_complete(run_dir)
    assert 2 <= checkpoints.checkpoint_step(saved) < 6
    assert (saved / "rng_state_0.pth").exists() and (saved / "rng_state_1.pth").exists()
    assert json.loads((run_dir / "status.json").read_text())["status"] == "interrupted"


@pytest.mark.slow
@pytest.mark.skipif(
    Version(transformers.__version__) < Version("5.24"),
    reason="transformers 5.17 (the GPU machine's) cannot resume a multi-process run on the CPU: it loads the "
    "optimizer state to device 'cpu:0', which torch refuses; 5.24 loads it to 'cpu' (on GPUs: cuda:N, unaffected)",
)
def test_the_same_command_resumes_the_interrupted_run_to_the_uninterrupted_history(interrupted, two_processes):
    run_dir, _ = interrupted
    resumed = torchrun(run_dir.parent, f"hydra.run.dir={run_dir}")
    out = finish(resumed)
    assert resumed.returncode == 0, out[-3000:]
    assert history(run_dir) == history(two_processes[0])


@pytest.mark.slow
def test_processes_with_different_run_directories_are_stopped(tmp_path):
    process = torchrun(tmp_path, f"hydra.run.dir={tmp_path}/rank${{oc.env:RANK}}")
    out = finish(process)
    assert process.returncode != 0
    assert "config error: the 2 training processes would write to different run directories" in out, out[-3000:]
    assert "hydra.run.dir=DIR" in out


@pytest.mark.slow
@pytest.mark.parametrize(("world_size", "dirs"), [("2", 1), (None, 2)])
def test_processes_started_seconds_apart_get_one_run_directory(tmp_path, world_size, dirs):
    """Hydra's ``now`` gives processes that start in different seconds different directories; ``launch_time``
    takes their launcher's start, here this test's process. (A bad ``model.init`` ends each right after Hydra made
    the directory, before the processes would look for each other.)"""
    for rank in ("0", "1"):
        env = {"RANK": rank, "WORLD_SIZE": world_size}
        result = run_cli(["-m", "grpo_ext.train", "model.init=bogus"], cwd=tmp_path, env=env, timeout=120)
        assert "config error: model.init" in result.stderr, result.stderr[-2000:]
        time.sleep(1.1)
    assert len(list((tmp_path / "outputs" / "arithmetic").iterdir())) == dirs


@pytest.mark.slow
def test_sft_in_two_processes(tmp_path):
    args = ["task=arithmetic", "model=tiny", "peft=lora", *FAST, "task.train_size=64", "sft.steps=3"]
    args += ["sft.batch_size=4", "eval.during_training=true"]
    process = torchrun(tmp_path, *args, entry="sft")
    out = finish(process)
    assert process.returncode == 0, out[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "arithmetic").iterdir()
    saved = run_dir / "checkpoint-3"
    assert (saved / "rng_state_0.pth").exists() and (saved / "rng_state_1.pth").exists()
    assert (run_dir / "final_model" / "model.safetensors").exists()
    assert out.count("SFT arithmetic: eval accuracy") == 1  # evaluated and reported by the main process
    assert json.loads((run_dir / "status.json").read_text()) == {"status": "ok"}


@pytest.mark.slow
def test_a_fall_seen_by_the_main_process_stops_both(tmp_path):
    """eval.stop_on_drop=true: only the main process evaluates (100%, 100%, 0% of 16 prompts, by script), and the
    other, which would otherwise go on into step 3's gradient all-reduce and wait there for ever, stops with it."""
    scripted = "task.rewards=[{name: reward_fixtures.ScriptedEvaluations, params: {eval_size: 16, script: [1, 1, 0]}}]"
    args = [f"hydra.run.dir={tmp_path / 'run'}", "eval.every=1", "eval.size=16", "eval.stop_on_drop=true", scripted]
    process = torchrun(tmp_path, *args)
    out = finish(process)
    assert process.returncode == 0, out[-3000:]
    assert [step for step, _, _ in history(tmp_path / "run")] == [1, 2]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "stopped" and status["reason"].startswith("stopped at step 2 of 6"), status
