"""Hydra multirun sweeps: one directory per job, a failed job recorded while the sweep goes on; the summary table
and the plots read those directories."""

from __future__ import annotations

import csv
import json
import math
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
import yaml

from grpo_ext import plot, summarize
from grpo_ext.run import records
from grpo_ext.run.records import read_metrics
from support import FAST, run_cli
from wandb_records import run_summary


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    fast = [o for o in FAST if not o.startswith("trainer.max_steps")]
    result = run_cli(
        ["-m", "grpo_ext.train", "-m", "task=arithmetic", "model=tiny", *fast, "trainer.max_steps=3",
         "trainer.beta=0.0,0.04", "task.ops=[+],[/]", f"hydra.sweep.dir={sweep_dir}"],
        cwd=sweep_dir,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir, result


@pytest.mark.slow
def test_four_jobs_with_their_own_directories_and_a_failure_that_does_not_stop_the_sweep(sweep):
    sweep_dir, result = sweep
    jobs = sorted(d for d in sweep_dir.iterdir() if d.is_dir() and d.name[0].isdigit())
    assert [d.name.split("_", 1)[0] for d in jobs] == ["0", "1", "2", "3"]
    assert all(len(d.name) <= 125 for d in jobs)  # named from the overrides, cut (with a hash) when long
    statuses = [summarize.job_row(d, 5)["status"] for d in jobs]
    assert statuses == ["ok", "failed", "ok", "failed"]  # task.ops=[/] is refused; the next jobs still ran
    assert "job 1 failed, the sweep goes on" in result.stdout + result.stderr
    assert [r["step"] for r in read_metrics(jobs[2])] == [1, 2, 3]
    assert (jobs[0] / "reward.png").is_file()  # every run draws its plots
    ports = [yaml.safe_load((jobs[i] / "config.yaml").read_text())["hardware"]["vllm"] for i in (0, 2)]
    assert [(p["port"], p["group_port"]) for p in ports] == [(8000, 51216), (8002, 51218)]  # one pair per job


def test_summarize_prints_one_row_per_job_sorted_and_writes_csv(sweep, tmp_path):
    sweep_dir, _ = sweep
    result = run_cli(["-m", "grpo_ext.summarize", str(sweep_dir), "--metric", "kl", "--csv", str(tmp_path / "s.csv")],
                     cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:5] == ["job", "overrides", "status", "steps", "wall_time_s"]
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 4 and [r["status"] for r in rows[2:]] == ["failed", "failed"]
    assert rows[0]["overrides"] == "trainer.beta=0.04 task.ops=[+]"  # the only job with a KL comes first
    assert "model=tiny" not in result.stdout  # overrides every job shares are left out


def test_summarize_errors(sweep, tmp_path, capsys):
    assert summarize.main([str(tmp_path)]) == 2
    assert summarize.main([str(tmp_path / "absent")]) == 2
    capsys.readouterr()
    (tmp_path / "a_file").write_text("")
    assert summarize.main([str(sweep[0]), "--csv", str(tmp_path / "a_file" / "s.csv")]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write the CSV to {tmp_path / 'a_file' / 's.csv'}: ")


def test_plots_overlay_runs(sweep, tmp_path, capsys):
    sweep_dir, _ = sweep
    written = plot.plot_runs(plot.expand([sweep_dir]), tmp_path)
    assert sorted(p.name for p in written) == ["accuracy.png", "completion_length.png", "kl.png", "reward.png"]
    assert all(p.stat().st_size > 5000 for p in written)
    assert plot.main([str(tmp_path / "nothing")]) == 2
    capsys.readouterr()
    (tmp_path / "a_file").write_text("")
    assert plot.main([str(sweep_dir), "--out", str(tmp_path / "a_file" / "plots")]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot write the plots to {tmp_path / 'a_file' / 'plots'}: ")


@pytest.mark.slow
def test_each_job_writes_its_own_wandb_run_with_name_group_tags_config_and_best_evaluation(tmp_path):
    sweep_dir = tmp_path / "sweepB"
    fast = [o for o in FAST if not o.startswith(("logger", "eval.during_training"))]
    result = run_cli(
        ["-m", "grpo_ext.train", "-m", "task=arithmetic", "model=tiny", *fast, "logger=wandb", "logger.tags=[demo]",
         "eval.during_training=true", "eval.every=1", "trainer.beta=0.0,0.04", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        timeout=600,
        env={"WANDB_MODE": None, "WANDB_API_KEY": None},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert output.count("wandb offline (no credentials found); upload later with: wandb sync") == 1  # said once
    runs = sorted(sweep_dir.glob("*/wandb/offline-run-*"))
    assert len(runs) == 2
    found = [run_summary(run) for run in runs]
    assert len({f["run_id"] for f in found}) == 2  # one W&B run per job
    assert [f["name"] for f in found] == [
        "arithmetic-tiny-cpu-trainer.beta=0.0",
        "arithmetic-tiny-cpu-trainer.beta=0.04",
    ]
    for f in found:
        assert f["group"] == "sweepB" and f["job_type"] == "train"
        assert f["tags"] == ["demo", "arithmetic", "tiny", "grpo"]
        assert "grpo_ext" in f["config_keys"] and "learning_rate" in f["config_keys"]  # ours and TRL's
        assert {"train/reward", "train/rewards/arithmetic_shaping/mean", "eval/accuracy"} <= f["history_keys"]
        assert f["exit_code"] == 0  # closed when its job ended
        # the best evaluation, for sorting the runs table: a random model never beats step 0's 0%
        assert (f["summary"]["best/eval_accuracy"], f["summary"]["best/step"]) == (0.0, 0)
    assert "train/kl" in found[1]["history_keys"]  # beta 0.04 (with beta 0 TRL computes no KL)
    for run in runs:
        best = json.loads((run.parents[1] / "best.json").read_text())
        assert best == {"step": 0, "eval/accuracy": 0.0, "model": "start"}


@pytest.mark.slow
def test_a_wandb_that_cannot_start_never_fails_the_run(tmp_path):
    fast = [o for o in FAST if not o.startswith("logger")]
    result = run_cli(
        ["-m", "grpo_ext.train", "task=arithmetic", "model=tiny", *fast, "logger=wandb", "logger.mode=online",
         f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env={"WANDB_MODE": None, "WANDB_API_KEY": None, "WANDB_BASE_URL": "http://127.0.0.1:9"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "W&B could not start" in result.stdout + result.stderr
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [1, 2]


def compose_hydra(overrides):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from grpo_ext.config.schema import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        return compose(config_name="config", overrides=overrides, return_hydra_config=True)


def test_sweeper_and_slurm_launcher_configs_compose(monkeypatch):
    grid = compose_hydra(["hydra/sweeper=grid_lr_beta"]).hydra.sweeper
    assert grid._target_.endswith("BasicSweeper") and grid.params["trainer.beta"] == "0.0,0.04"
    optuna = compose_hydra(["hydra/sweeper=optuna_lr_beta"]).hydra.sweeper
    assert "optuna" in optuna._target_.lower() and optuna.direction == "maximize"
    assert set(optuna.params) == {"trainer.learning_rate", "trainer.beta"}
    monkeypatch.setenv("SLURM_PARTITION", "gpu-a100")
    slurm = compose_hydra(["hydra/launcher=slurm", "hardware=gpu"]).hydra.launcher
    assert "submitit" in slurm._target_.lower() and slurm.gpus_per_node == 1 and slurm.partition == "gpu-a100"


@pytest.mark.slow
def test_an_optuna_sweep_runs_and_maximizes_the_objective(tmp_path):
    sweep_dir = tmp_path / "optuna"
    result = run_cli(
        ["-m", "grpo_ext.train", "-m", "hydra/sweeper=optuna_lr_beta", "hydra.sweeper.n_trials=2", "task=arithmetic",
         "model=tiny", *FAST, "task.rewards=[{name: reward_fixtures.prefers_short}]", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    best = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"trainer.learning_rate", "trainer.beta"}
    values = [
        summarize.final_value(read_metrics(d), "reward")
        for d in sweep_dir.iterdir()
        if d.is_dir() and d.name[0].isdigit()
    ]
    assert len(values) == 2 and best["best_value"] == pytest.approx(max(values))


def test_completions_table_every_n_steps_with_rewards_and_answer(tmp_path):
    from grpo_ext.train import train
    from support import compose_config

    fast = [o for o in FAST if not o.startswith("trainer.max_steps")]
    cfg = compose_config(["task=arithmetic", "model=tiny", *fast, "trainer.max_steps=4", "logger.completions_every=2"])
    train(cfg, tmp_path)
    tables = sorted(p.name for p in (tmp_path / "completions").iterdir())
    assert tables == ["completions_00002.parquet", "completions_00004.parquet"]
    table = pd.read_parquet(tmp_path / "completions" / tables[0])
    assert {"prompt", "completion", "arithmetic_shaping", "answer", "advantage"} <= set(table.columns)
    assert len(table) == 8 and table["answer"].str.fullmatch(r"-?\d+").all()


def test_summarize_reads_eval_metrics_as_columns(tmp_path):
    for job, rewards in (("0_lr=1", [0.1, 0.2]), ("1_lr=2", [0.5, 0.7])):
        job_dir = tmp_path / job
        (job_dir / ".hydra").mkdir(parents=True)
        (job_dir / ".hydra" / "overrides.yaml").write_text(f"- model=tiny\n- lr={job[-1]}\n")
        (job_dir / "status.json").write_text('{"status": "ok"}')
        lines = [{"step": 1, "reward": rewards[0]}, {"step": 1, "eval_reward": rewards[0]},
                 {"step": 2, "reward": rewards[1]}, {"step": 2, "eval_reward": rewards[1]}]  # fmt: skip
        (job_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "0_lr=1" / "best.json").write_text('{"step": 1, "eval/accuracy": 0.5, "model": "best_model"}')
    rows = summarize.summarize(tmp_path, "eval_reward", last=1)
    assert [(r["job"], r["overrides"], r["eval_reward"]) for r in rows] == [("1", "lr=2", 0.7), ("0", "lr=1", 0.2)]
    assert [(r["best_accuracy"], r["best_step"]) for r in rows] == [(None, None), (0.5, 1)]
    assert [r["job"] for r in summarize.summarize(tmp_path, "best_accuracy", last=1)] == ["0", "1"]
    (tmp_path / "1_lr=2" / "best.json").write_text('{"step": 2, "eval/reward": 0.7, "model": "final_model"}')
    rows = {r["job"]: r for r in summarize.summarize(tmp_path, "best_reward", last=1)}
    assert (rows["1"]["best_reward"], rows["1"]["best_step"], rows["0"]["best_accuracy"]) == (0.7, 2, 0.5)


def test_summarize_names_the_alerts_each_job_raised_at_their_first_step(tmp_path):
    for job in ("0_lr=1", "1_lr=30"):
        (tmp_path / job / ".hydra").mkdir(parents=True)
        (tmp_path / job / ".hydra" / "overrides.yaml").write_text(f"- lr={job.split('=')[1]}\n")
        (tmp_path / job / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward": 0.5}) + "\n")
    for step, title in ((3, "held-out accuracy fell"), (11, "no learning signal"), (21, "no learning signal")):
        records.append_alert(tmp_path / "1_lr=30", step, "WARN", title, "...")
    rows = {r["job"]: r for r in summarize.summarize(tmp_path, "reward", last=1)}
    assert rows["0"]["alerts"] is None
    assert rows["1"]["alerts"] == "held-out accuracy fell (step 3), no learning signal (step 11)"
    assert "held-out accuracy fell (step 3), no learning signal (step 11)" in summarize.render(list(rows.values()))


def test_the_objective_a_run_returns_and_a_misspelled_one(tmp_path, caplog):
    from grpo_ext.run.entry import objective

    lines = [{"step": s, "wall_time": s, "reward": s / 10, "kl": 0.01} for s in range(1, 8)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert objective(tmp_path, "reward") == pytest.approx(0.5)  # the mean of the last 5: 0.3 .. 0.7
    with caplog.at_level("WARNING", logger="grpo_ext.run.entry"):
        assert math.isnan(objective(tmp_path, "eval/acuracy"))
    assert "objective=eval/acuracy was never logged, so the run returns NaN; logged keys: kl, reward" in caplog.text


@pytest.mark.slow
def test_a_slurm_job_warned_by_sigusr2_saves_a_checkpoint_is_requeued_and_resumes(tmp_path):
    """A SLURM job near its time limit, or preempted, through submitit's local executor: the same job pickling,
    signal (SIGUSR2) and handler as on SLURM, with a requeue by exit status instead of ``scontrol requeue``. The
    job saves a checkpoint after the step under way, submitit requeues it, and it resumes in the same directory."""
    sweep_dir = tmp_path / "sweep"
    fast = [o for o in FAST if not o.startswith(("trainer.max_steps", "trainer.save_strategy"))]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "grpo_ext.train", "-m", "hydra/launcher=submitit_local", "task=arithmetic",
         "model=tiny", *fast, "trainer.max_steps=6", "trainer.save_steps=100", f"hydra.sweep.dir={sweep_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 180
    while not [r for d in sweep_dir.glob("0_*") for r in read_metrics(d) if r["step"] >= 2]:
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()[0][-3000:]
        time.sleep(0.05)
    (job,) = [
        p for p in psutil.Process(launcher.pid).children(recursive=True) if "submitit.core._submit" in p.cmdline()
    ]
    job.send_signal(signal.SIGUSR2)
    out, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, out[-3000:]
    (job_dir,) = sweep_dir.glob("0_*")
    assert [r["step"] for r in read_metrics(job_dir) if "loss" in r] == [1, 2, 3, 4, 5, 6]  # each step once
    text = "".join(log.read_text() for log in sweep_dir.glob(".submitit/*/*_0_log.*"))  # both runs of the job
    stopped = re.search(r"stopped by SIGUSR2 at step (\d+); checkpoint: (\S+)\.", text)
    assert stopped and 2 <= int(stopped.group(1)) < 6, text[-3000:]
    assert f"resuming from {stopped.group(2)}" in text and "Requeued job" in text
    assert json.loads((job_dir / "status.json").read_text()) == {"status": "ok"}
    assert (job_dir / "final_model" / "model.safetensors").is_file()
