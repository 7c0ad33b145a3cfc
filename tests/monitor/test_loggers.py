"""The ``logger`` node's checks: each bad value named with what is allowed, before anything starts."""

from __future__ import annotations

import pytest

from grpo_ext.monitor import loggers
from grpo_ext.run.records import read_alerts
from support import compose_config


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["logger.name=tensorboard"], "logger.name must be one of ['none', 'wandb'], got 'tensorboard'"),
        (["logger=wandb", "logger.mode=cloud"], "logger.mode must be one of ['auto', 'online', 'offline', 'disabled"),
        (["logger=none", "logger.completions_every=-1"], "logger.completions_every must be >= 0 (0: no tables)"),
    ],
)
def test_bad_logger_values_are_named(overrides, message):
    with pytest.raises(ValueError) as info:
        loggers.check(compose_config(overrides).logger)
    assert str(info.value).startswith(message)


def test_the_mode_a_run_will_use(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    monkeypatch.setenv("HOME", "/nonexistent")
    assert loggers.check(compose_config(["logger=none"]).logger) == "none"
    assert loggers.check(compose_config(["logger=wandb", "logger.mode=offline"]).logger) == "offline"
    assert loggers.check(compose_config(["logger=wandb"]).logger) == "offline"  # auto, without credentials
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert loggers.check(compose_config(["logger=wandb"]).logger) == "online"


@pytest.mark.slow
def test_a_diverged_run_and_one_without_signal_send_w_and_b_alerts_and_end_as_failed_and_finished(tmp_path):
    """What a long run's owner must hear of without watching it reaches W&B as an alert (an email or Slack message
    where W&B is set up for it; recorded in an offline run, which is what is read here)."""
    from support import FAST, run_cli
    from wandb_records import run_summary

    steps = [o for o in FAST if not o.startswith(("trainer.max_steps", "logger", "trainer.save_strategy"))]
    wandb = ["logger=wandb", "logger.mode=offline"]
    env = {"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path)}
    runs = {
        "diverged": ["task.rewards=[{name: reward_fixtures.prefers_short}]", "trainer.learning_rate=1e8"],
        "no_signal": [],  # a random model never writes <answer> (every reward is 0), nor knows to stop
    }
    for name, extra in runs.items():
        command = ["-m", "grpo_ext.train", "task=arithmetic", "model=tiny", *steps, *wandb, *extra]
        result = run_cli([*command, "trainer.max_steps=11", f"hydra.run.dir={tmp_path / name}"], tmp_path, env=env)
        assert result.returncode == (1 if name == "diverged" else 0), result.stderr[-2000:]
    found = {name: run_summary(next((tmp_path / name / "wandb").glob("offline-run-*"))) for name in runs}
    assert {name: run.get("alerts") for name, run in found.items()} == {
        "diverged": [("training diverged", "ERROR")],
        "no_signal": [("no learning signal", "WARN"), ("completions cut off", "WARN")],
    }
    assert found["diverged"]["exit_code"] == 1 and found["no_signal"]["exit_code"] == 0  # failed; finished
    # and in the run directory, with their steps, whether or not W&B runs: what the closing summary names
    recorded = {name: [(a["title"], a["step"]) for a in read_alerts(tmp_path / name)] for name in runs}
    assert recorded["no_signal"] == [("no learning signal", 10), ("completions cut off", 10)]
    assert [title for title, _ in recorded["diverged"]] == ["training diverged"]
    assert "training diverged at step" in read_alerts(tmp_path / "diverged")[0]["message"]


@pytest.mark.slow
def test_a_run_stopped_by_a_fall_says_so_in_its_wandb_run(tmp_path):
    """Offline W&B, evaluations of 16 prompts scored 100%, 100%, 0% by script, eval.stop_on_drop=true: the W&B run
    finishes (exit 0) with the alert and ``stopped_at_step`` in its summary, for the runs table."""
    from support import FAST, run_cli
    from wandb_records import run_summary

    scripted = "task.rewards=[{name: reward_fixtures.ScriptedEvaluations, params: {eval_size: 16, script: [1, 1, 0]}}]"
    steps = [o for o in FAST if not o.startswith(("trainer.max_steps", "logger", "eval.size", "eval.during"))]
    command = ["-m", "grpo_ext.train", "task=arithmetic", "model=tiny", *steps, "logger=wandb", "logger.mode=offline"]
    command += ["trainer.max_steps=6", "eval.during_training=true", "eval.every=1", "eval.size=16"]
    command += ["eval.stop_on_drop=true", scripted, f"hydra.run.dir={tmp_path / 'run'}"]
    result = run_cli(command, tmp_path, env={"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    found = run_summary(next((tmp_path / "run" / "wandb").glob("offline-run-*")))
    assert found["alerts"] == [("held-out accuracy fell", "WARN")] and found["exit_code"] == 0
    assert found["summary"]["stopped_at_step"] == 2
