"""Runs survive interruption: SIGKILL mid-run, SIGTERM, a full disk; resume picks the last complete checkpoint."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from grpo_ext.errors import DivergedError, GrpoExtError
from grpo_ext.monitor.divergence import StopOnDivergence
from grpo_ext.run import checkpoints
from grpo_ext.run.records import read_alerts, read_metrics
from grpo_ext.train import train
from support import FAST, QLORA_HERE, TESTS, compose_config, history, tiny_model_with, wait_for_step
from wandb_records import run_summary

SIX_STEPS = [
    *[o for o in FAST if not o.startswith(("trainer.max_steps", "trainer.save_strategy"))],
    "task=arithmetic",
    "model=tiny",
    "trainer.max_steps=6",
    "trainer.save_steps=1",
    "task.rewards=[{name: arithmetic_shaping}, {name: reward_fixtures.prefers_short}]",
    "trainer.learning_rate=1e-3",
]


def start(run_dir, *extra):
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    cmd = [sys.executable, "-m", "grpo_ext.train", *SIX_STEPS, f"hydra.run.dir={run_dir}", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full")
    process = start(run_dir)
    err, _ = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return run_dir


@pytest.mark.slow
def test_sigkill_mid_run_resumes_to_the_same_history(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = start(run_dir)
    wait_for_step(run_dir, 3, process)
    process.kill()  # SIGKILL: no handler runs; a checkpoint may be half written
    process.communicate()
    resumed = start(run_dir)
    err, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "resuming from" in err
    assert [s for s, *_ in history(run_dir)] == [1, 2, 3, 4, 5, 6]  # no step missing or logged twice
    assert history(run_dir) == history(uninterrupted)  # the same losses and rewards, step by step
    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    optimizer = torch.load(run_dir / "checkpoint-6" / "optimizer.pt", weights_only=False)
    reference = torch.load(uninterrupted / "checkpoint-6" / "optimizer.pt", weights_only=False)
    steps = {int(s["step"]) for s in optimizer["state"].values()}
    assert steps == {int(s["step"]) for s in reference["state"].values()} == {6}


@pytest.mark.slow
def test_a_second_run_of_the_same_directory_stops_while_the_first_goes_on(tmp_path):
    first = start(tmp_path, "trainer.max_steps=500")
    try:
        wait_for_step(tmp_path, 1, first)
        second = start(tmp_path, "trainer.max_steps=500")
        out, _ = second.communicate(timeout=120)
        assert second.returncode == 1
        assert f"error: another run (process {first.pid}) is using {tmp_path}; wait for it, or give this one" in out
        assert first.poll() is None  # untouched: its status and checkpoints are its own
        assert not (tmp_path / "status.json").exists()
    finally:
        first.kill()
        first.communicate()


@pytest.mark.slow
def test_a_half_written_checkpoint_is_skipped(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    for step in (5, 6):  # as if killed while writing checkpoint-5, before checkpoint-6 began
        (run_dir / f"checkpoint-{step}" / "trainer_state.json").unlink()
    (run_dir / "checkpoint-6" / "optimizer.pt").write_bytes(b"\0" * 10)
    assert checkpoints.latest_complete(run_dir).name == "checkpoint-4"
    shutil.rmtree(run_dir / "final_model")
    resumed = start(run_dir, "eval.during_training=true")  # a resumed run evaluates at its end, not at its start
    err, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "resuming from" in err and "checkpoint-4" in err
    assert history(run_dir) == history(uninterrupted)
    assert checkpoints.is_complete(run_dir / "checkpoint-6")
    records = read_metrics(run_dir)
    times = [r["wall_time"] for r in records]  # training and evaluation lines share one clock, across the resume
    assert times == sorted(times) and [r["step"] for r in records if "eval/accuracy" in r] == [6]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_resumed_run_continues_its_wandb_run(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    extra = ["trainer.save_steps=100", "logger=wandb"]  # no periodic checkpoint: the one saved is the signal's
    process = start(run_dir, *extra)
    wait_for_step(run_dir, 2, process)
    process.send_signal(signal.SIGTERM)
    err, _ = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in err and "to resume" in err
    saved = checkpoints.latest_complete(run_dir)
    assert saved is not None and checkpoints.checkpoint_step(saved) >= 2
    assert not (run_dir / "final_model").exists()
    resumed = start(run_dir, *extra)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-3000:]
    assert history(run_dir) == history(uninterrupted)
    assert "wandb offline" in out and "wandb sync" in out
    run_id = (run_dir / "wandb_run_id").read_text().strip()
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and {p.name.rsplit("-", 1)[-1] for p in offline_runs} == {run_id}
    assert [run_summary(p)["exit_code"] for p in offline_runs] == [128 + signal.SIGTERM, 0]  # stopped, then finished


def test_checkpoints_rotate_and_resume_none_or_path(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        checkpoints.resume_point("none", run_dir)
    assert sorted(p.name for p in checkpoints.checkpoints(run_dir)) == ["checkpoint-4", "checkpoint-5", "checkpoint-6"]
    assert checkpoints.resume_point(str(run_dir / "checkpoint-5"), run_dir).name == "checkpoint-5"
    with pytest.raises(ValueError, match="no such directory"):
        checkpoints.resume_point(str(tmp_path / "nope"), run_dir)
    (run_dir / "checkpoint-4" / "trainer_state.json").write_text("{")
    with pytest.raises(ValueError, match="not a complete checkpoint"):
        checkpoints.resume_point(str(run_dir / "checkpoint-4"), run_dir)


def test_resuming_with_other_learning_settings_is_refused_unless_the_checkpoint_is_named(uninterrupted, tmp_path):
    """resume=auto continues the run that is there: a changed learning rate is named and refused before any model
    loads; more steps, another micro-batch and evaluations may change; resume=CHECKPOINT changes it on purpose."""
    run_dir = tmp_path / "run"
    shutil.copytree(uninterrupted, run_dir)
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*SIX_STEPS, "trainer.max_steps=7", "trainer.learning_rate=1e-4"]), run_dir)
    assert stop.value.report() == (
        f"config error: resume=auto would continue the run in {run_dir} from checkpoint-6 with settings it was not "
        "trained with: trainer.learning_rate: 0.001 -> 0.0001. Continue it as it was (without those overrides), start "
        "a new run in another hydra.run.dir, or continue from the checkpoint with the new settings on purpose: "
        f"resume={run_dir / 'checkpoint-6'}"
    )
    assert checkpoints.changed_settings({"task": {"name": "a"}}, {"task": {"name": "b"}}, ("task.",)) == []
    train(compose_config([*SIX_STEPS, "trainer.max_steps=7", "hardware.micro_batch=4", "eval.every=1"]), run_dir)
    assert [r["step"] for r in read_metrics(run_dir) if "reward" in r] == list(range(1, 8))
    lower = [*SIX_STEPS, "trainer.max_steps=8", "trainer.learning_rate=1e-4", f"resume={run_dir / 'checkpoint-7'}"]
    train(compose_config(lower), run_dir)
    assert [r["step"] for r in read_metrics(run_dir) if "reward" in r] == list(range(1, 9))


def test_reward_entries_compare_field_by_field_so_a_field_added_later_is_no_change():
    """A run started before ``timeout``/``workers`` joined each ``task.rewards`` entry resumes; a changed weight or
    another reward is still named."""
    old = {"task": {"rewards": [{"name": "math", "weight": 1.0, "params": {"timeout": 1.0}}], "ops": ["+", "-"]}}
    same = {"task": {"rewards": [{"name": "math", "weight": 1.0, "params": {"timeout": 1.0}, "timeout": None,
                                  "workers": 2}], "ops": ["+", "-"]}}  # fmt: skip
    assert checkpoints.changed_settings(old, same, ()) == []
    heavier = {"task": {"rewards": [{"name": "math", "weight": 2.0, "params": {"timeout": 1.0}}], "ops": ["+"]}}
    assert checkpoints.changed_settings(old, heavier, ()) == [
        "task.ops: ['+', '-'] -> ['+']",
        "task.rewards.0.weight: 1.0 -> 2.0",
    ]
    more = {"task": {"rewards": [*old["task"]["rewards"], {"name": "my.fn", "weight": 1.0}], "ops": ["+", "-"]}}
    assert checkpoints.changed_settings(old, more, ()) == ["task.rewards.#: 1 -> 2"]


def test_two_paths_to_one_file_are_one_setting(tmp_path, monkeypatch):
    """A run started with ``task.path=rows.jsonl`` resumes with ``task.path=/abs/rows.jsonl``; another file is
    named."""
    (tmp_path / "rows.jsonl").write_text("{}\n")
    (tmp_path / "other.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    saved = {"task": {"path": "rows.jsonl", "name": "prompts"}}
    absolute, other = str(tmp_path / "rows.jsonl"), str(tmp_path / "other.jsonl")
    assert checkpoints.changed_settings(saved, {"task": {"path": absolute, "name": "prompts"}}, ()) == []
    assert checkpoints.changed_settings(saved, {"task": {"path": other, "name": "prompts"}}, ()) == [
        f"task.path: 'rows.jsonl' -> '{other}'"
    ]
    assert checkpoints.changed_settings(saved, {"task": {"path": "rows.jsonl", "name": "math"}}, ()) == [
        "task.name: 'prompts' -> 'math'"
    ]


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    saves = {"n": 0}
    real_save = torch.save

    def save(obj, f, *args, **kwargs):  # the disk fills up during the second checkpoint's optimizer state
        if str(f).endswith("optimizer.pt"):
            saves["n"] += 1
            if saves["n"] == 2:
                with open(f, "wb") as partial:
                    partial.write(b"\0" * 100)
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    cfg = compose_config([*SIX_STEPS])
    with pytest.raises(GrpoExtError) as info:
        train(cfg, tmp_path)
    message = info.value.report()
    assert "No space left on device" in message and "checkpoint-1, is intact" in message
    assert "Removed the incomplete checkpoint-2" in message
    assert checkpoints.latest_complete(tmp_path).name == "checkpoint-1"
    assert not (tmp_path / "checkpoint-2").exists()


def test_an_unwritable_run_directory_fails_before_any_model(fresh_cache, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    env = {**os.environ, "PYTHONPATH": str(TESTS), "GRPO_EXT_CACHE": str(fresh_cache)}
    done = subprocess.run(
        [sys.executable, "-m", "grpo_ext.train", "model=tiny", "logger=none", f"hydra.run.dir={blocker}/run"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and str(blocker) in done.stderr
    assert not (tmp_path / "cache" / "models").exists()  # no model was built


def test_stop_on_signal_handles_ctrl_c_then_stops_at_once_on_a_second():
    from transformers import TrainerControl

    from grpo_ext.monitor.signals import StopOnSignal

    stop, control = StopOnSignal(), TrainerControl()
    before = signal.getsignal(signal.SIGINT)
    with stop.installed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert stop.received == signal.SIGINT
        stop.on_step_end(None, None, control)
        assert control.should_save and control.should_training_stop
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    assert signal.getsignal(signal.SIGINT) is before


def finite_weights(checkpoint) -> bool:
    from safetensors.torch import load_file

    return all(torch.isfinite(t).all() for t in load_file(checkpoint / "model.safetensors").values())


def test_a_run_that_diverges_stops_before_the_nan_reaches_the_weights_or_the_disk(tmp_path):
    """A learning rate of 1e8 makes the gradient NaN at step 2. Before, that step was applied and saved as a
    checkpoint, step 3 died in generation (torch: ``probability tensor contains either inf, nan or element < 0``),
    and rerunning the command resumed from the NaN checkpoint and died again."""
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*SIX_STEPS, "trainer.learning_rate=1e8"]), tmp_path)
    saved = checkpoints.checkpoints(tmp_path)
    assert [p.name for p in saved] == ["checkpoint-1"] and finite_weights(saved[0])
    assert stop.value.report() == (
        "error: training diverged at step 2: its gradient is NaN or infinite. Training stopped before saving that "
        "step. checkpoint-1 holds the weights step 2 started from: resumed, it would take the same step again (same "
        "weights, and the same batch, since a checkpoint restores the random state), whatever the learning rate. No "
        "earlier checkpoint was saved: start again with smaller updates, e.g. trainer.learning_rate=2.5e+07 (a "
        "quarter of 1e+08)"
    )
    assert not (tmp_path / "final_model").exists()


@pytest.mark.slow
def test_the_run_is_sent_back_to_a_checkpoint_before_the_weights_that_diverged_and_trains_on_from_it(tmp_path):
    """Step N + 1's gradient comes from checkpoint-N's weights and, the random state restored, from the same batch.
    The message used to name checkpoint-N as the one to continue from, and resuming from it diverged at once again,
    at any learning rate (checked at 2.5e7 and 1e-5)."""
    train(compose_config([*SIX_STEPS, "trainer.max_steps=3"]), tmp_path)
    with pytest.raises(GrpoExtError) as stop:  # one step at 1e8: finite weights, then a NaN gradient
        train(
            compose_config([*SIX_STEPS, "trainer.learning_rate=1e8", f"resume={tmp_path / 'checkpoint-2'}"]), tmp_path
        )
    assert [p.name for p in checkpoints.checkpoints(tmp_path)] == ["checkpoint-1", "checkpoint-2", "checkpoint-3"]
    assert stop.value.report().startswith("error: training diverged at step 4: its gradient is NaN")
    # the resumed run's own learning rate, at the schedule's place (linear decay over 6 steps), not the checkpoint's
    assert [r["learning_rate"] for r in read_metrics(tmp_path) if "loss" in r] == pytest.approx(
        [1e-3, 2e-3 / 3, 2e8 / 3]
    )
    assert stop.value.report().endswith(
        "checkpoint-3 holds the weights step 4 started from: resumed, it would take the same step again (same "
        "weights, and the same batch, since a checkpoint restores the random state), whatever the learning rate. The "
        "newest "
        f"checkpoint from before it is {tmp_path / 'checkpoint-2'}: continue from it, or an earlier one, with smaller "
        f"updates, e.g. resume={tmp_path / 'checkpoint-2'} trainer.learning_rate=2.5e+07 (a quarter of 1e+08)"
    )
    with pytest.raises(GrpoExtError, match="diverged at step 4"):  # what the message used to advise
        train(
            compose_config([*SIX_STEPS, "trainer.learning_rate=1e-5", f"resume={tmp_path / 'checkpoint-3'}"]), tmp_path
        )
    train(compose_config([*SIX_STEPS, f"resume={tmp_path / 'checkpoint-2'}"]), tmp_path)  # at 1e-3 again
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_sft_that_diverges_stops_naming_sft_s_learning_rate(tmp_path):
    from grpo_ext.sft import fine_tune

    overrides = [*SIX_STEPS, "sft.steps=6", "sft.save_steps=1", "sft.batch_size=8", "eval.during_training=false"]
    with pytest.raises(DivergedError, match=r"^training diverged at step 2: its gradient is NaN") as stop:
        fine_tune(compose_config([*overrides, "sft.learning_rate=1e8"]), tmp_path)
    assert stop.value.report().endswith("checkpoint-1 holds the weights step 2 started from: resumed, it would "
        "take the same step again (same weights, and the same batch, since a checkpoint restores the random state), "
        "whatever the learning rate. No earlier checkpoint was saved: start again with smaller updates, e.g. "
        "sft.learning_rate=2.5e+07 (a quarter of 1e+08)")  # fmt: skip
    assert [p.name for p in checkpoints.checkpoints(tmp_path)] == ["checkpoint-1"]
    assert finite_weights(tmp_path / "checkpoint-1") and not (tmp_path / "final_model").exists()


def test_sft_resumes_a_named_checkpoint_with_new_settings_and_refuses_them_under_resume_auto(tmp_path):
    from grpo_ext.sft import fine_tune

    overrides = [
        *SIX_STEPS,
        "sft.save_steps=1",
        "sft.logging_steps=1",
        "sft.batch_size=8",
        "eval.during_training=false",
    ]
    fine_tune(compose_config([*overrides, "sft.steps=2"]), tmp_path)
    with pytest.raises(GrpoExtError, match="settings it was not trained with: sft.learning_rate: 0.001 -> 0.0001"):
        fine_tune(compose_config([*overrides, "sft.steps=3", "sft.learning_rate=1e-4"]), tmp_path)
    named = [*overrides, "sft.steps=3", "sft.learning_rate=1e-4", f"resume={tmp_path / 'checkpoint-1'}"]
    fine_tune(compose_config(named), tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path) if "loss" in r] == [1, 2, 3]
    rates = [r["learning_rate"] for r in read_metrics(tmp_path) if "loss" in r]
    # the new rate (it was the checkpoint's 1e-3), at its place on SFT's cosine schedule over 3 steps
    assert rates[1:] == pytest.approx(
        [1e-4 * (1 + math.cos(math.pi / 3)) / 2, 1e-4 * (1 + math.cos(2 * math.pi / 3)) / 2]
    )
    with pytest.raises(GrpoExtError, match="resume=none, but .* already holds checkpoints"):
        fine_tune(compose_config([*overrides, "resume=none"]), tmp_path)


def at(step: int) -> SimpleNamespace:
    """The Trainer's state at ``step``, in the main process."""
    return SimpleNamespace(global_step=step, is_world_process_zero=True)


def test_divergence_seen_only_in_the_logs_names_the_checkpoints_saved_since_the_last_finite_line(tmp_path):
    """Under fp16, DeepSpeed or FSDP the gradients are not checked, only the logged values, every logging_steps."""
    for step in (1, 2, 3):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    guard = StopOnDivergence(tmp_path, "trainer.learning_rate")
    args = SimpleNamespace(fp16=True, learning_rate=1e-5)
    guard.on_log(args, at(1), None, logs={"loss": 0.5, "grad_norm": 1.0})
    guard.on_log(
        args,
        at(2),
        None,
        logs={"loss": 0.5, "grad_norm": math.inf},
    )  # fp16: fine
    with pytest.raises(DivergedError) as err:
        guard.on_log(args, at(4), None, logs={"loss": math.nan})
    assert str(err.value) == (
        "training diverged at step 4: loss=nan. Training stopped before saving that step. checkpoint-3 was saved "
        "after step 2, the last one logged as finite, and may hold NaN weights. The newest checkpoint from before it "
        f"is {tmp_path / 'checkpoint-2'}: continue from it, or an earlier one, with smaller updates, e.g. "
        f"resume={tmp_path / 'checkpoint-2'} trainer.learning_rate=2.5e-06 (a quarter of 1e-05)"
    )
    with pytest.raises(
        DivergedError, match="step 2: grad_norm=inf. .* No checkpoint was saved before it: start again"
    ):
        StopOnDivergence(tmp_path / "new", "sft.learning_rate").on_log(
            SimpleNamespace(fp16=False, learning_rate=1e-5), at(2), None,
            logs={"loss": 0.5, "grad_norm": math.inf},
        )  # fmt: skip


def test_only_the_disk_s_errors_read_as_a_failed_write_to_the_run_directory():
    """requests' ConnectionError is an OSError too: it used to end in `writing to RUN failed ... free space`."""
    import requests

    assert checkpoints.is_write_failure(OSError(errno.ENOSPC, "No space left on device"))
    assert checkpoints.is_write_failure(PermissionError(errno.EACCES, "Permission denied", "/runs/x/checkpoint-2"))
    assert not checkpoints.is_write_failure(requests.exceptions.ConnectionError("Max retries exceeded"))
    assert not checkpoints.is_write_failure(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))


def resumed_optimizer(groups: list[dict], steps: int = 2):
    """An AdamW and a linear schedule over 6 steps as a checkpoint holds them after ``steps`` steps."""
    optimizer = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.999), eps=1e-8)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / 6)
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
    return optimizer, scheduler


def settings(**changed) -> SimpleNamespace:
    values = dict(learning_rate=1e-3, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8)
    return SimpleNamespace(optim="adamw_torch", **{**values, **changed})


def test_a_resumed_run_trains_with_its_own_optimizer_settings_not_its_checkpoint_s(caplog):
    """The Trainer restores the optimizer and scheduler hyperparameters saved in the checkpoint."""
    from grpo_ext.monitor.resume import OptimizerSettingsOnResume

    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(1))]
    # as the Trainer builds it: biases and norms do not decay
    groups = [{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:], "weight_decay": 0.0}]
    optimizer, scheduler = resumed_optimizer(groups)
    new = settings(learning_rate=1e-4, weight_decay=0.01, adam_beta2=0.95, adam_epsilon=1e-6)
    with caplog.at_level(logging.INFO, logger="grpo_ext.monitor.resume"):
        OptimizerSettingsOnResume("trainer.").on_train_begin(
            new, at(2), None, optimizer=optimizer, lr_scheduler=scheduler
        )
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([1e-4 * 4 / 6] * 2)  # step 3's rate
    assert scheduler.get_last_lr() == pytest.approx([1e-4 * 4 / 6] * 2)  # what the Trainer logs for it
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    assert all(g["betas"] == (0.9, 0.95) and g["eps"] == 1e-6 for g in optimizer.param_groups)
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr() == pytest.approx([1e-4 * 3 / 6] * 2)  # the schedule goes on from the new rate
    assert "trainer.learning_rate 0.001 -> 0.0001 (this step's rate 0.000667 -> 6.67e-05); " in caplog.text
    assert "trainer.weight_decay 0.1 -> 0.01" in caplog.text and "trainer.adam_epsilon 1e-08 -> 1e-06" in caplog.text


def test_optimizer_settings_that_cannot_be_applied_on_resume_are_warned_about_and_left_alone(caplog):
    from grpo_ext.monitor.resume import OptimizerSettingsOnResume

    guard = OptimizerSettingsOnResume("sft.")
    optimizer, scheduler = resumed_optimizer([{"params": [torch.nn.Parameter(torch.ones(2))], "weight_decay": 0.0}])
    guard.on_train_begin(settings(weight_decay=0.1), at(2), None, optimizer=optimizer, lr_scheduler=scheduler)
    assert "sft.weight_decay=0.1 is not applied: the checkpoint's optimizer decays no parameter" in caplog.text
    assert optimizer.param_groups[0]["weight_decay"] == 0.0
    own = [
        {"params": [torch.nn.Parameter(torch.ones(2))]},
        {"params": [torch.nn.Parameter(torch.ones(2))], "lr": 1e-2},
    ]
    optimizer, scheduler = resumed_optimizer(own)
    guard.on_train_begin(settings(learning_rate=5e-2), at(2), None, optimizer=optimizer, lr_scheduler=scheduler)
    assert "sft.learning_rate=0.05 is not applied: the checkpoint's optimizer has parameter groups" in caplog.text
    assert scheduler.base_lrs == [1e-3, 1e-2]
    optimizer, scheduler = resumed_optimizer([{"params": [torch.nn.Parameter(torch.ones(2))]}], steps=0)
    guard.on_train_begin(settings(learning_rate=5e-2), at(0), None, optimizer=optimizer, lr_scheduler=scheduler)
    assert optimizer.param_groups[0]["lr"] == 1e-3  # a new run: the Trainer built the optimizer from its settings


@pytest.mark.slow
def test_resuming_a_checkpoint_whose_weights_cannot_load_with_the_adapter_settings_is_refused_first(tmp_path):
    """resume=CHECKPOINT takes new settings on purpose, but not an adapter of another shape, or none: the Trainer
    failed after loading the model, with a state-dict size mismatch or "Can't find a checkpoint index"."""
    lora, full = tmp_path / "lora", tmp_path / "full"
    train(compose_config([*SIX_STEPS, "trainer.max_steps=1", "peft=lora", "peft.r=4"]), lora)
    train(compose_config([*SIX_STEPS, "trainer.max_steps=1"]), full)
    refused = {
        "peft.r=8": (lora, "holds a LoRA adapter of another shape than this run's (peft.r: 4 -> 8): resume it with "
                           "the adapter settings it was trained with (peft=lora peft.r=4), or start a new run"),
        "peft=none": (lora, "holds a LoRA adapter, and this run trains without adapters (peft=none): resume it with "
                            "the adapter it was trained with (peft=lora peft.r=4), or start a new run from it merged"),
        "peft=lora": (full, "holds a whole model (a run without adapters), and this run trains adapters (peft=lora): "
                            "resume it with peft=none, or start a new run from it with model.path="),
    }  # fmt: skip
    for override, (run_dir, message) in refused.items():
        lora_settings = ["peft=lora", override] if override.startswith("peft.") else [override]
        checkpoint = run_dir / "checkpoint-1"
        with pytest.raises(GrpoExtError) as stop:
            train(compose_config([*SIX_STEPS, *lora_settings, f"resume={checkpoint}"]), tmp_path / "new")
        assert stop.value.report().startswith(f"config error: resume={checkpoint} {message}"), stop.value.report()
    assert not (tmp_path / "new" / "metrics.jsonl").exists()  # refused before training
    train(compose_config([*SIX_STEPS, "trainer.max_steps=2", "peft=lora", "peft.r=4", "peft.alpha=8",
                          f"resume={lora / 'checkpoint-1'}"]), lora)  # fmt: skip
    assert [r["step"] for r in read_metrics(lora) if "loss" in r] == [1, 2]


@pytest.mark.skipif(not QLORA_HERE, reason="needs bitsandbytes with CPU 4-bit kernels (in the dev extra)")
def test_the_settings_a_qlora_checkpoint_was_trained_with_come_from_its_run_and_a_foreign_one_s_from_its_adapter(
    tmp_path,
):
    """LoRA and QLoRA adapters are alike on disk: the run's config.yaml says which one to resume with."""
    run = tmp_path / "qlora"
    train(compose_config([*SIX_STEPS, "trainer.max_steps=1", "peft=qlora", "peft.r=4"]), run)
    with pytest.raises(GrpoExtError, match=r"resume it with the adapter it was trained with \(peft=qlora peft.r=4\),"):
        train(compose_config([*SIX_STEPS, f"resume={run / 'checkpoint-1'}"]), tmp_path / "new")
    shutil.copytree(run / "checkpoint-1", tmp_path / "elsewhere" / "checkpoint-1")  # no config.yaml beside it
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*SIX_STEPS, f"resume={tmp_path / 'elsewhere' / 'checkpoint-1'}"]), tmp_path / "new")
    assert (
        "the adapter it was trained with (peft=lora peft.r=4 peft.target_modules=[down_proj,gate_proj,k_proj,"
        "o_proj,q_proj,up_proj,v_proj])" in stop.value.report()
    )


def test_an_adapter_resumed_over_another_base_model_is_refused_for_another_shape_and_named_for_the_same(
    tmp_path, caplog
):
    """The adapter's base is in its adapter_config.json. Over a model of another shape the Trainer failed loading it
    (a size mismatch); over another of the same shape (another seed, revision or model) it trained on silently."""
    train(compose_config([*SIX_STEPS, "trainer.max_steps=1", "peft=lora"]), tmp_path)
    checkpoint = tmp_path / "checkpoint-1"
    base = json.loads((checkpoint / "adapter_config.json").read_text())["base_model_name_or_path"]
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*SIX_STEPS, "peft=lora", "model.architecture.hidden_size=128", f"resume={checkpoint}"]),
              tmp_path / "new")  # fmt: skip
    assert stop.value.report() == (
        f"model error: resume={checkpoint} holds a LoRA adapter trained over a model of another shape than this "
        f"run's (hidden_size: 256 -> 128): resume it over the model it was trained over, model.path={base}"
    )
    other_seed = [*SIX_STEPS, "trainer.max_steps=2", "peft=lora", "model.seed=1", f"resume={checkpoint}"]
    train(compose_config(other_seed), tmp_path / "seed1")
    assert (
        f"resume={checkpoint} holds a LoRA adapter trained over {base}, and this run's base model is " in caplog.text
    )
    assert f"If they are not the same (another model, revision or seed), resume with model.path={base}" in caplog.text
    assert [r["step"] for r in read_metrics(tmp_path / "seed1") if "loss" in r] == [2]  # a warning, not a refusal
    caplog.clear()
    train(compose_config([*SIX_STEPS, "trainer.max_steps=2", "peft=lora", f"resume={checkpoint}"]), tmp_path / "same")
    assert "holds a LoRA adapter trained over" not in caplog.text


def test_resuming_a_checkpoint_of_a_model_of_another_shape_is_refused_before_training(tmp_path):
    """The Trainer failed loading it: "Error(s) in loading state_dict for Qwen2ForCausalLM"."""
    train(compose_config([*SIX_STEPS, "trainer.max_steps=1"]), tmp_path)
    checkpoint = tmp_path / "checkpoint-1"
    other = [*SIX_STEPS, "model.architecture.hidden_size=128", f"resume={checkpoint}"]
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config(other), tmp_path / "new")
    assert stop.value.report().startswith(
        f"model error: resume={checkpoint} holds a model of another shape than this run's model (hidden_size: 256 -> "
        "128): it was trained from "
    ), stop.value.report()
    assert stop.value.report().endswith(f"or start a new run from it with model.path={checkpoint}")
    assert not (tmp_path / "new" / "metrics.jsonl").exists()


def test_a_model_with_nan_weights_is_refused_before_its_first_evaluation_or_step(tmp_path):
    """It used to be evaluated (greedy decoding of NaN logits), saved as the run's best model, and then to stop the
    run in generation with torch's ``probability tensor contains either inf, nan or element < 0``."""
    path = tiny_model_with(tmp_path, lambda m: m.model.layers[1].mlp.up_proj.weight[3, 5].fill_(math.nan))
    run = tmp_path / "run"
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*SIX_STEPS, f"model.path={path}", "eval.during_training=true"]), run)
    assert stop.value.report() == (
        f"error: the weights of the model this run starts from, {path}, are not all finite: 1 of its 52 tensors "
        "hold NaN or infinite values (model.layers.1.mlp.up_proj.weight). No run can train or sample from it; a "
        "model saved by a run that diverged? Take one saved before (its best_model, or a checkpoint from before the "
        "divergence)"
    )
    assert not (run / "best_model").exists() and not checkpoints.checkpoints(run)
    assert not [r for r in read_metrics(run) if "eval/accuracy" in r]
    from grpo_ext.sft import fine_tune

    with pytest.raises(GrpoExtError) as stop:
        fine_tune(
            compose_config([*SIX_STEPS, f"model.path={path}", "sft.steps=2", "sft.batch_size=8"]), tmp_path / "sft"
        )
    assert stop.value.report().startswith(f"error: the weights of the model this run starts from, {path}, are not")


def test_resuming_a_checkpoint_with_nan_weights_is_refused_naming_the_one_before_it(tmp_path):
    from safetensors.torch import load_file, save_file

    train(compose_config([*SIX_STEPS, "trainer.max_steps=2"]), tmp_path)
    weights = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    weights["model.embed_tokens.weight"][0, 0] = math.inf
    save_file(weights, tmp_path / "checkpoint-2" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*SIX_STEPS, "trainer.max_steps=4"]), tmp_path)
    assert stop.value.report() == (
        "error: the weights of checkpoint-2, which this run resumes from, are not all finite: 1 of its 52 tensors "
        "hold NaN or infinite values (model.embed_tokens.weight). Saved after the run diverged, or damaged since: "
        "resume from an earlier checkpoint (the newest is checkpoint-1) with smaller updates, e.g. "
        f"resume={tmp_path}/checkpoint-1 trainer.learning_rate=0.00025"
    )
    assert [(a["title"], a["level"], a["step"]) for a in read_alerts(tmp_path)] == [("training diverged", "ERROR", 2)]


def test_an_update_that_makes_the_logits_overflow_stops_the_run_with_what_happened_not_torch_s_sampling_error(
    tmp_path,
):
    """A learning rate of 1e30 leaves the gradients finite and the weights too, but so large that the next step's
    logits overflow float32: sampling raised torch's ``probability tensor contains either inf, nan or element < 0``
    from deep inside TRL's generation, with nothing said of why."""
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*SIX_STEPS, "trainer.learning_rate=1e30"]), tmp_path)
    assert stop.value.report() == (
        "error: training diverged at step 2: the model's next-token logits are NaN or infinite (torch: probability "
        "tensor contains either `inf`, `nan` or element < 0), from weights that are finite but so large that float32 "
        "overflows. Training stopped before saving that step. checkpoint-1 holds the weights step 2 started from: "
        "resumed, it would take the same step again (same weights, and the same batch, since a checkpoint restores "
        "the random state), whatever the learning rate. No earlier checkpoint was saved: start again with smaller "
        "updates, e.g. trainer.learning_rate=2.5e+29 (a quarter of 1e+30)"
    )
    assert [(a["title"], a["level"], a["step"]) for a in read_alerts(tmp_path)] == [("sampling failed", "ERROR", 2)]


def test_a_model_whose_logits_overflow_from_the_start_is_named_as_the_cause(tmp_path):
    path = tiny_model_with(tmp_path, lambda m: m.model.norm.weight.mul_(3e38 / m.model.norm.weight.abs().max()))
    with pytest.raises(GrpoExtError) as stop:
        train(compose_config([*SIX_STEPS, f"model.path={path}"]), tmp_path / "run")
    assert stop.value.report() == (
        f"error: the model this run starts from, {path}, cannot be sampled from: the model's next-token logits are "
        "NaN or infinite (torch: probability tensor contains either `inf`, `nan` or element < 0), from weights that "
        "are finite but so large that float32 overflows. A model saved by a run that diverged? Take one saved before "
        "(its best_model, or a checkpoint from before the divergence)"
    )


def test_a_gpu_s_sampling_assert_under_fp16_is_explained_with_the_precision_to_train_in(tmp_path):
    """On a CUDA GPU torch's check is a device-side assert: the GPU prints it, the exception says only that an assert
    fired, and no tensor can be read afterwards, so the message covers both causes."""
    from grpo_ext.monitor.divergence import is_sampling_failure

    guard = StopOnDivergence(tmp_path, "trainer.learning_rate")
    err = RuntimeError("CUDA error: device-side assert triggered\nCompile with `TORCH_USE_CUDA_DSA` ...")
    assert is_sampling_failure(err) and not is_sampling_failure(RuntimeError("shape mismatch"))
    model = torch.nn.Linear(2, 2)
    message = guard.sampling_failure(err, model, at(7), SimpleNamespace(fp16=True, bf16=False))
    assert message == (
        "a CUDA device-side assert stopped the run while it sampled the completions of step 8; the failed assertion "
        "is printed above. When it reads `probability tensor contains either inf, nan or element < 0`, the model's "
        "next-token logits were NaN or infinite. The run computes in float16, whose largest value, 65504, the "
        "activations of some models exceed (Qwen2.5's are reported to): train in float32 (trainer.fp16=false "
        "hardware.dtype=float32, slower), or in bfloat16 on a GPU that computes it (trainer.bf16=true "
        "hardware.dtype=bfloat16). Or, as in any precision, the weights diverged: the checkpoints saved after step 0, "
        "the last one logged as finite, may hold NaN weights"
    )


def test_non_finite_tensors_are_found_by_name_and_large_float16_weights_are_not_taken_for_them():
    from grpo_ext.backends.models import non_finite_tensors

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 4))
    assert non_finite_tensors(model) == ([], 8)  # 2 + 2 weights and biases, 3 float buffers (one is an integer)
    with torch.no_grad():
        model[0].bias[1] = math.nan
        model[1].running_var[0] = -math.inf
        big = model.half()
        big[2].weight.fill_(60000.0)  # the sum of its squares overflows float16; each value is finite
    assert non_finite_tensors(big) == (["0.bias", "1.running_var"], 8)
