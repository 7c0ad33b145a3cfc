"""Evaluation, inference and the SFT warm start: ``grpo_ext.evaluate``, ``grpo_ext.infer``, ``grpo_ext.sft``, and
the evaluations that training runs before, during and after."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import types

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from grpo_ext.backends import generation
from grpo_ext.errors import GrpoExtError, Interrupted
from grpo_ext.monitor import heldout
from grpo_ext.rewards import calling
from grpo_ext.rewards.arithmetic import ArithmeticShaping
from grpo_ext.rewards.guard import RewardFailureError
from grpo_ext.run import checkpoints, processes
from grpo_ext.run.records import read_metrics
from grpo_ext.sft import check_truncation, fine_tune
from grpo_ext.tasks import build_task
from grpo_ext.train import train
from support import FAST, QLORA_HERE, compose_config, run_cli, runs_out_of_memory, tiny_model_with
from wandb_records import run_summary


@pytest.fixture(scope="module")
def rows():
    return build_task(compose_config(["task=arithmetic", "task.train_size=10", "task.eval_size=8"]).task).eval


def test_metrics_count_right_answers_formats_and_pass_at_k(rows, monkeypatch):
    answers = list(rows["answer"])

    def fake_generate(model, tokenizer, prompts, *, max_new_tokens, samples=0, temperature=1.0, batch_size=64):
        assert len(prompts) <= len(answers)
        answers_here = answers[: len(prompts)]
        if not samples:  # greedy: right on rows 0-3, a wrong answer on 4-5, no answer on 6-7
            return [[f"<answer>{a}</answer>"] if i < 4 else ["<answer>x</answer>"] if i < 6 else ["no"]
                    for i, a in enumerate(answers_here)]  # fmt: skip
        # samples: row i has one right sample among k when i is even
        return [
            ["no"] * (samples - 1) + [f"<answer>{a}</answer>" if i % 2 == 0 else "no"] for i, a in enumerate(answers)
        ]

    monkeypatch.setattr(heldout, "generate", fake_generate)
    report = heldout.evaluate(None, None, rows, ArithmeticShaping(), size=0, k=3, temperature=1.0, batch_size=4,
                                 max_new_tokens=8)  # fmt: skip
    metrics = report["metrics"]
    assert metrics["n"] == 8
    assert metrics["accuracy"] == 0.5
    assert metrics["format"] == 0.75
    assert metrics["reward"] == pytest.approx((4 * 1.0 + 2 * 0.2) / 8)
    assert metrics["pass@3"] == 0.5
    assert [e["status"] for e in report["examples"]][4:] == ["not_a_number", "not_a_number", "no_answer", "no_answer"]
    assert heldout.evaluate(None, None, rows, ArithmeticShaping(), size=2, k=1, temperature=1.0, batch_size=4,
                               max_new_tokens=8)["metrics"]["n"] == 2  # fmt: skip


def test_a_reward_failing_on_some_held_out_completions_scores_them_none_and_logs_why(caplog):
    from reward_fixtures import fails_on_some, returns_strings

    results = calling.score_tolerantly(fails_on_some, ["a", "a q", "b"], {"answer": ["1", "2", "3"]})
    assert results == [{"reward": 1.0}, {"reward": None, "error": "ValueError: q is not allowed"}, {"reward": 1.0}]
    assert "reward fails_on_some failed on 1 of the 3 completions to score, each scored None" in caplog.text
    assert "Traceback" in caplog.text
    with pytest.raises(
        RewardFailureError, match=r"failed on every one of the 2 completions to score:\n(.|\n)*returned str"
    ):
        calling.score_tolerantly(returns_strings, ["a", "b"], {})


def test_training_goes_on_past_an_evaluation_whose_reward_fails_on_some_completions(tmp_path, caplog):
    """Training's own batches tolerate a reward that fails on a completion; its evaluations used to end the run."""
    reward = "task.rewards=[{name: reward_fixtures.FailsInEvaluations, params: {eval_size: 4}}]"
    train(compose_config(["task=arithmetic", "model=tiny", *FAST, reward, "eval.during_training=true",
                          "eval.size=4"]), tmp_path)  # fmt: skip
    evaluations = [r for r in read_metrics(tmp_path) if "eval/accuracy" in r]
    assert [r["eval/accuracy"] for r in evaluations] == [0.5, 0.5]  # the two of four that scored 1.0
    assert caplog.text.count("reward fails_in_evaluations failed on 2 of the 4 completions to score") == 2
    assert (tmp_path / "final_model" / "config.json").is_file()


@pytest.mark.slow
def test_evaluate_cli_writes_a_report_and_prints_a_table(tmp_path):
    result = run_cli(
        ["-m", "grpo_ext.evaluate", "task=arithmetic", "model=tiny", *FAST, "eval.size=6", "eval.k=2",
         f"hydra.run.dir={tmp_path / 'eval'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "eval" / "eval_report.json").read_text())
    assert report["metrics"]["n"] == 6 and len(report["examples"]) == 6
    assert set(report["metrics"]) >= {"accuracy", "format", "reward", "pass@2"}
    assert "accuracy" in result.stdout and "pass@2" in result.stdout


@pytest.mark.parametrize(
    "override,message",
    [("eval.k=0", "eval.k must be >= 1"), ("eval.temperature=0", "eval.temperature must be > 0"),
     ("eval.size=-1", "eval.size must be >= 0"),
     ("eval.best_metric=format", "eval.best_metric must be one of ['accuracy', 'reward'], got 'format'"),
     ("eval.best_metric=pass@4", "eval.best_metric must be one of ['accuracy', 'reward'], got 'pass@4' (pass@K is "
      "measured with eval.k=K)")],
)  # fmt: skip
def test_bad_eval_settings_fail_before_any_model_is_built(tmp_path, override, message):
    result = run_cli(["-m", "grpo_ext.train", "task=arithmetic", "model=tiny", *FAST, override,
                      f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0 and message in result.stderr


def test_training_evaluates_before_every_n_steps_and_at_the_end(tmp_path, capsys):
    overrides = ["task=arithmetic", "model=tiny", *FAST, "trainer.max_steps=3", "eval.every=2"]
    train(compose_config([*overrides, "eval.during_training=true"]), tmp_path)
    evals = [r for r in read_metrics(tmp_path) if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 2, 3]
    assert all({"eval/format", "eval/reward"} <= set(r) for r in evals)
    assert "eval accuracy: 0.0% (step 0) -> 0.0% (step 3): +0.0 points" in capsys.readouterr().out
    assert (tmp_path / "accuracy.png").is_file()


def sft_config(*overrides: str):
    """A short SFT run of the tiny model on arithmetic (4 steps of 8 references), with ``overrides`` on top."""
    return compose_config(["task=arithmetic", "model=tiny", *FAST, "sft.steps=4", "sft.batch_size=8", *overrides])


@pytest.mark.slow
def test_sft_saves_a_model_that_grpo_starts_from(tmp_path):
    """The command as a user without W&B credentials runs it: the default logger (wandb) writes offline."""
    fast = [o for o in FAST if not o.startswith("logger")]
    sft = run_cli(
        ["-m", "grpo_ext.sft", "task=arithmetic", "model=tiny", *fast, "sft.steps=4", "sft.batch_size=8",
         "sft.logging_steps=1", "eval.during_training=true", f"hydra.run.dir={tmp_path / 'sft'}"],
        cwd=tmp_path,
        env={"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path)},  # no credentials anywhere
    )  # fmt: skip
    assert sft.returncode == 0, sft.stderr[-2000:]
    final = tmp_path / "sft" / "final_model"
    assert (final / "config.json").is_file() and "eval accuracy" in sft.stdout
    assert json.loads((tmp_path / "sft" / "status.json").read_text()) == {"status": "ok"}
    assert "wandb offline (no credentials found)" in sft.stdout + sft.stderr
    (run,) = (tmp_path / "sft" / "wandb").glob("offline-run-*")
    found = run_summary(run)
    assert (found["name"], found["job_type"]) == ("sft-arithmetic-tiny", "sft")
    assert found["tags"] == ["arithmetic", "tiny", "sft"] and found["exit_code"] == 0
    assert {"train/loss", "eval/accuracy"} <= found["history_keys"]
    losses = [r["loss"] for r in read_metrics(tmp_path / "sft") if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]
    grpo = compose_config(["task=arithmetic", "model=tiny", f"model.path={final}", *FAST])
    train(grpo, tmp_path / "grpo")
    assert OmegaConf.load(tmp_path / "grpo" / "config.yaml").model.path == str(final)
    assert [r["step"] for r in read_metrics(tmp_path / "grpo")] == [1, 2]


def test_trl_s_own_evaluation_scores_the_same_eval_size_prompts_as_ours(tmp_path, monkeypatch):
    """trainer.eval_strategy=steps turns on TRL's evaluation (sampled completions, eval_reward): it gets the first
    eval.size eval prompts, as ours does, not the whole split."""
    seen = tmp_path / "seen.txt"
    monkeypatch.setenv("GRPO_EXT_TEST_SEEN", str(seen))
    trl_eval = ["trainer.eval_strategy=steps", "trainer.eval_steps=2", "trainer.per_device_eval_batch_size=4"]
    rewards = "task.rewards=[{name: reward_fixtures.records_expressions}]"
    cfg = compose_config(["model=tiny", *FAST, rewards, "eval.during_training=false", "eval.size=3", *trl_eval])
    train(cfg, tmp_path / "run")
    held_out = list(build_task(cfg.task).eval["expression"])
    assert set(seen.read_text().splitlines()) & set(held_out) == set(held_out[:3])
    assert [r["step"] for r in read_metrics(tmp_path / "run") if "eval_reward" in r] == [2]


def test_an_eval_size_past_the_eval_split_is_said_to_use_all_of_it(tmp_path, caplog):
    train(compose_config(["model=tiny", *FAST, "trainer.max_steps=1", "eval.size=20"]), tmp_path)
    assert "eval.size=20: the eval split has only 16 prompts (task.eval_size)" in caplog.text


def test_sft_evaluates_every_n_steps_and_keeps_its_best_model(tmp_path, capsys):
    """Evaluations scored by script (0%, 100%, 50% at steps 0, 2, 4): the model of step 2 is kept."""
    scripted = "task.rewards=[{name: reward_fixtures.ScriptedEvaluations}, {name: arithmetic_shaping}]"
    fine_tune(sft_config("sft.eval_every=2", "eval.during_training=true", scripted), tmp_path)
    stdout = capsys.readouterr().out
    evals = [(r["step"], r["eval/accuracy"]) for r in read_metrics(tmp_path) if "eval/accuracy" in r]
    assert evals == [(0, 0.0), (2, 1.0), (4, 0.5)]
    assert json.loads((tmp_path / "best.json").read_text()) == {"step": 2, "eval/accuracy": 1.0, "model": "best_model"}
    best, final = (load_file(tmp_path / name / "model.safetensors") for name in ("best_model", "final_model"))
    assert any(not torch.equal(best[key], final[key]) for key in final)  # two more steps after step 2
    assert "SFT arithmetic: eval accuracy: 0.0% (step 0) -> 50.0% (step 4): +50.0 points" in stdout
    assert f"best eval accuracy: 100.0% at step 2: {tmp_path / 'best_model'}" in stdout


def test_sft_asked_to_stop_on_a_fall_stops_there_and_says_why(tmp_path, capsys):
    """Evaluations of 16 prompts scored by script (100%, 100%, 0% at steps 0, 1, 2) with sft.stop_on_drop=true: the
    fine-tuning of 6 steps ends at step 2, recorded as stopped, the model of step 0 kept as the best."""
    scripted = "task.rewards=[{name: reward_fixtures.ScriptedEvaluations, params: {eval_size: 16, script: [1, 1, 0]}}]"
    stops = ["sft.eval_every=1", "sft.steps=6", "sft.stop_on_drop=true", "eval.size=16"]
    fine_tune(sft_config(*stops, "eval.during_training=true", scripted), tmp_path)
    why = "stopped at step 2 of 6: held-out accuracy fell below the run's best (sft.stop_on_drop=true)"
    assert [r["step"] for r in read_metrics(tmp_path) if "eval/accuracy" in r] == [0, 1, 2]
    assert json.loads((tmp_path / "status.json").read_text()) == {"status": "stopped", "reason": why}
    assert json.loads((tmp_path / "best.json").read_text())["step"] == 0
    assert f"{why}\nmodel: {tmp_path / 'final_model'}" in capsys.readouterr().out
    # Again: no checkpoint was saved (sft.save_steps=200), so it starts afresh, logging each evaluation once
    fine_tune(sft_config(*stops, "eval.during_training=true", scripted), tmp_path)
    assert [r["step"] for r in read_metrics(tmp_path) if "eval/accuracy" in r] == [0, 1, 2]


def test_sft_max_length_that_leaves_no_completion_is_refused_and_one_that_cuts_some_warns(tmp_path, caplog):
    with pytest.raises(GrpoExtError) as stop:
        fine_tune(sft_config("sft.max_length=30"), tmp_path)  # the arithmetic prompts alone are longer
    assert re.fullmatch(
        r"config error: sft.max_length=30 cuts the completion away entirely from every one of the \d+ training pairs "
        r"\(the prompt alone fills it\): raise sft.max_length",
        stop.value.report(),
    )
    assert not (tmp_path / "final_model").exists()
    check_truncation(kept=7990, pairs=8000, max_length=64)
    assert "sft.max_length=64 cuts the completion away entirely from 10 of 8000 training pairs" in caplog.text


def test_sft_resumes_only_with_the_settings_its_checkpoints_were_trained_with(tmp_path):
    fine_tune(sft_config("sft.save_steps=2"), tmp_path)
    with pytest.raises(GrpoExtError) as stop:  # GRPO pointed at the SFT run's directory would resume its checkpoints
        train(compose_config(["task=arithmetic", "model=tiny", *FAST]), tmp_path)
    assert stop.value.report() == (
        f"config error: {tmp_path} holds a grpo_ext.sft run, whose checkpoint-4 grpo_ext.train would resume and whose "
        f"models it would overwrite: give this run its own hydra.run.dir (a model the other run saved is "
        f"model.path={tmp_path / 'final_model'})"
    )
    with pytest.raises(GrpoExtError) as stop:
        fine_tune(sft_config("sft.save_steps=2", "sft.steps=6", "sft.learning_rate=1e-4"), tmp_path)
    assert "with settings it was not trained with: sft.learning_rate: 0.001 -> 0.0001. Continue" in stop.value.report()
    fine_tune(sft_config("sft.save_steps=2", "sft.steps=6", "sft.logging_steps=1"), tmp_path)  # longer: allowed
    assert checkpoints.checkpoint_step(checkpoints.latest_complete(tmp_path)) == 6


def test_sft_without_evaluations_says_so(tmp_path, capsys):
    fine_tune(sft_config("sft.steps=2"), tmp_path)
    assert "SFT arithmetic: not evaluated (eval.during_training=false)" in capsys.readouterr().out
    assert not [r for r in read_metrics(tmp_path) if "eval/accuracy" in r]


@pytest.mark.slow
def test_sft_stopped_by_a_signal_saves_a_checkpoint_and_resumes_to_the_same_history(tmp_path):
    """SIGTERM mid-run: a checkpoint of the step under way and exit status 143; the same run then resumes there and
    ends with the losses of an uninterrupted run, each step logged once."""
    cfg = sft_config("sft.steps=20", "sft.logging_steps=1", "sft.save_steps=100")  # the only checkpoint: the stop's
    fine_tune(cfg, tmp_path / "uninterrupted")
    run_dir = tmp_path / "run"

    def terminate_after_step_2():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if any(r["step"] >= 2 for r in read_metrics(run_dir)):  # training is under way, 18 steps to go
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.01)

    threading.Thread(target=terminate_after_step_2, daemon=True).start()
    with pytest.raises(Interrupted) as stop:
        fine_tune(cfg, run_dir)
    assert stop.value.exit_code == 128 + signal.SIGTERM
    saved = checkpoints.latest_complete(run_dir)
    assert 2 <= checkpoints.checkpoint_step(saved) < 20 and not (run_dir / "final_model").exists()
    fine_tune(cfg, run_dir)
    losses = [(r["step"], round(r["loss"], 5)) for r in read_metrics(run_dir) if "loss" in r]
    assert losses == [
        (r["step"], round(r["loss"], 5)) for r in read_metrics(tmp_path / "uninterrupted") if "loss" in r
    ]
    assert [step for step, _ in losses] == list(range(1, 21))


def test_evaluating_during_training_is_refused_where_the_weights_are_sharded(monkeypatch, tmp_path):
    args = types.SimpleNamespace(hf_deepspeed_config=None, fsdp=None)
    processes.check_evaluation(True, args)  # one process, nothing sharded
    for env, name in (("ACCELERATE_DEEPSPEED_ZERO_STAGE", "DeepSpeed ZeRO-3"), ("ACCELERATE_USE_FSDP", "FSDP")):
        with monkeypatch.context() as patched:
            patched.setenv(env, "3" if "STAGE" in env else "true")
            with pytest.raises(ValueError, match=f"eval.during_training=true cannot run under {name}"):
                processes.check_evaluation(True, args)
            processes.check_evaluation(False, args)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")  # as accelerate launch sets it for zero3.yaml
    for run in (fine_tune, train):
        with pytest.raises(GrpoExtError) as stop:
            run(sft_config("eval.during_training=true"), tmp_path / run.__name__)
        assert "config error: eval.during_training=true cannot run under DeepSpeed ZeRO-3" in stop.value.report()


def test_stopping_on_a_fall_without_evaluations_between_steps_is_refused(tmp_path):
    """eval.stop_on_drop and sft.stop_on_drop act at the evaluations between steps: refused without any, naming
    what to add."""
    none = "acts at the held-out evaluations between steps, and this run has none: add"
    every = "eval.every=N (an evaluation every N steps)"
    for overrides, missing in [(["eval.during_training=true", "eval.every=0"], every),
                               (["eval.every=0"], f"eval.during_training=true {every}"),
                               ([], "eval.during_training=true")]:  # fmt: skip
        with pytest.raises(GrpoExtError) as stop:
            train(compose_config(["model=tiny", *FAST, "eval.stop_on_drop=true", *overrides]), tmp_path / "grpo")
        assert stop.value.report() == f"config error: eval.stop_on_drop=true {none} {missing}"
    sft_every = "sft.eval_every=N (an evaluation every N steps)"
    for evaluating, missing in [("true", sft_every), ("false", f"eval.during_training=true {sft_every}")]:
        with pytest.raises(GrpoExtError) as stop:
            fine_tune(sft_config("sft.stop_on_drop=true", f"eval.during_training={evaluating}"), tmp_path / "sft")
        assert stop.value.report() == f"config error: sft.stop_on_drop=true {none} {missing}"


@pytest.mark.parametrize(
    "override,message",
    [("sft.steps=0", "sft.steps must be >= 1, got 0"),
     ("sft.eval_every=-1", "sft.eval_every must be >= 0 (0: only before and after), got -1")],
)  # fmt: skip
def test_bad_sft_settings_are_named(tmp_path, override, message):
    with pytest.raises(GrpoExtError) as stop:
        fine_tune(sft_config(override), tmp_path)
    assert stop.value.report() == f"config error: {message}"


def test_a_failed_sft_command_records_why_in_its_status(tmp_path):
    result = run_cli(["-m", "grpo_ext.sft", "task=arithmetic", "model=tiny", *FAST, "sft.steps=0",
                      f"hydra.run.dir={tmp_path}"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1 and "config error: sft.steps must be >= 1, got 0" in result.stderr
    status = json.loads((tmp_path / "status.json").read_text())
    assert status == {"status": "failed", "error": "config error: sft.steps must be >= 1, got 0"}


@pytest.mark.slow
def test_infer_prints_an_answer_and_scores_it(tmp_path):
    result = run_cli(["-m", "grpo_ext.infer", "What is (4 - 9) * 6?", "model=tiny", "hardware=cpu", "--answer", "-30",
                      "--max-new-tokens", "8", "--samples", "2"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("--- sample") == 2
    assert result.stdout.count("[reward ") == 2


@pytest.mark.slow
def test_rewards_get_completions_in_evaluation_as_trl_gives_them_in_training(tmp_path):
    """After chat prompts TRL hands a reward each completion as a list of messages; our evaluations handed it plain
    text, so a reward written to TRL's contract (c[0]["content"]) failed on every completion of the first
    evaluation, and the run stopped before its first step. Now training, its evaluations, grpo_ext.evaluate,
    grpo_ext.infer --answer and grpo_ext.difficulty all pass messages."""
    chat = "task.rewards=[{name: reward_fixtures.chat_only}]"
    train(
        compose_config(["task=arithmetic", "model=tiny", *FAST, chat, "eval.during_training=true"]), tmp_path / "train"
    )
    records = read_metrics(tmp_path / "train")
    assert [r["step"] for r in records if "eval/reward" in r] == [0, 2]
    assert all(r["eval/reward"] > 0 for r in records if "eval/reward" in r)
    assert all(r["rewards/chat_only/mean"] > 0 for r in records if "loss" in r)
    greedy = ["5", "<answer>5</answer>"]
    assert calling.as_trl_passes(greedy, [{"role": "user", "content": "2 + 3?"}]) == [
        [{"role": "assistant", "content": "5"}], [{"role": "assistant", "content": "<answer>5</answer>"}]
    ]  # fmt: skip
    assert calling.as_trl_passes(greedy, "2 + 3?") == greedy  # a plain prompt: plain completions, as TRL does
    result = run_cli(["-m", "grpo_ext.infer", "What is 2 + 3?", "model=tiny", "hardware=cpu", "--max-new-tokens", "4",
                      "--answer", "5", chat], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0 and "[reward " in result.stdout, result.stderr[-2000:]


def test_a_reward_reading_trl_s_other_arguments_gets_them_in_training_and_in_evaluation(tmp_path):
    """TRL calls a reward with every argument by keyword, and with prompts, completion_ids, trainer_state, log_extra
    and log_metric. Our guard called it with the completions first by position (a reward taking prompts first got
    two values for it), and our evaluations gave none of the others: the run stopped at its first evaluation."""
    reads = ["task.rewards=[{name: reward_fixtures.reads_trl_arguments}]", "eval.during_training=true"]
    train(compose_config(["task=arithmetic", "model=tiny", *FAST, *reads]), tmp_path)
    records = read_metrics(tmp_path)
    trained = [r["rewards/reads_trl_arguments/mean"] for r in records if "loss" in r]
    assert [int(v) for v in trained] == [0, 1] and all(v % 1 > 0.1 for v in trained)  # each step's own state
    evaluated = {r["step"]: r["eval/reward"] for r in records if "eval/reward" in r}
    assert sorted(evaluated) == [0, 2] and all(value % 1 > 0.1 for value in evaluated.values())
    assert evaluated[2] - evaluated[0] == pytest.approx(2, abs=0.02)  # the Trainer's state at each evaluation


@pytest.mark.slow
def test_infer_names_a_reward_that_fails_on_every_answer(tmp_path):
    broken = "task.rewards=[{name: reward_fixtures.always_fails}]"  # overrides after the options, too
    result = run_cli(["-m", "grpo_ext.infer", "What is 2 + 3?", "model=tiny", "--max-new-tokens", "4", "--answer", "5",
                      "hardware=cpu", broken], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    assert "error: reward always_fails failed on every one of the 1 completions to score:" in result.stderr
    assert "RuntimeError: this reward is broken" in result.stderr


def test_infer_without_a_question_says_that_the_question_comes_first(capsys):
    from grpo_ext.infer import is_override, main

    assert main(["model.path=outputs/run/final_model", "hardware=cpu"]) == 2
    assert "error: the question comes first, in quotes" in capsys.readouterr().err
    assert is_override("+trainer.beta=0.1") and is_override("seed=3")
    assert not is_override("x=3; what is x * 2?") and not is_override("What is 2 + 3?")


@pytest.mark.parametrize("args", [["What?", "model"], ["What?", "task=nope"], ["What?", "--samples", "-1"]])
def test_infer_usage_errors_exit_2(tmp_path, args):
    result = run_cli(["-m", "grpo_ext.infer", *args], cwd=tmp_path)
    assert result.returncode == 2 and "error" in result.stderr


@pytest.mark.parametrize(
    "peft",
    [
        "lora",
        pytest.param(
            "qlora", marks=pytest.mark.skipif(not QLORA_HERE, reason="needs bitsandbytes' CPU 4-bit kernels")
        ),
    ],
)
def test_sft_with_adapters_saves_the_adapter_and_a_merged_model(tmp_path, peft, capsys):
    fine_tune(sft_config(f"peft={peft}", "sft.steps=3", "eval.during_training=true"), tmp_path / "sft")
    stdout = capsys.readouterr().out
    assert "eval accuracy: " in stdout  # evaluated before and after, with the adapters (QLoRA: 4-bit layers)
    assert (tmp_path / "sft" / "final_adapter" / "adapter_config.json").is_file()
    merged = json.loads((tmp_path / "sft" / "final_model" / "config.json").read_text())
    assert merged["model_type"] == "qwen2" and not (tmp_path / "sft" / "final_model" / "adapter_config.json").exists()


def test_sft_running_out_of_gpu_memory_says_what_holds_less_and_where_to_resume(tmp_path, monkeypatch):
    """CUDA's out-of-memory error, raised here by the third training pass (no GPU on this machine to run out of)."""
    runs_out_of_memory(monkeypatch, 3, "CUDA out of memory. Tried to allocate 512.00 MiB (simulated)")
    with pytest.raises(GrpoExtError) as stop:
        fine_tune(sft_config("sft.save_steps=2"), tmp_path)
    assert stop.value.report() == (
        "error: out of GPU memory in SFT step 3 (CUDA out of memory. Tried to allocate 512.00 MiB (simulated)). Holds "
        "less with the same learning: trainer.gradient_checkpointing=true (recomputes activations in the backward "
        "pass). "
        "Holds less, and changes what is trained (a new run, in another hydra.run.dir): peft=lora (adapters: the "
        "optimizer holds a fraction of the weights' "
        "state); sft.batch_size=4 (references a step); sft.max_length=512 (tokens a pair; longer ones are cut). The "
        f"last complete checkpoint is {tmp_path / 'checkpoint-2'}; the same command (same hydra.run.dir) resumes "
        "there."
    )


def test_a_reward_gets_the_tokens_generated_as_completion_ids_up_to_the_end_of_sequence(rows):
    """TRL hands a reward the generated tokens, the end-of-sequence token included. The evaluations handed it the
    text tokenized again, which has no end-of-sequence token, and differs even for the tiny model's byte-level
    tokenizer where the generated bytes are not valid UTF-8 (decoded as U+FFFD, three bytes tokenized again)."""
    import pickle

    model, tokenizer = generation.load_model(compose_config(["model=tiny", "hardware=cpu"]))
    prompts = list(rows["prompt"])[:4]
    (first, *others) = [group[0] for group in generation.generate(model, tokenizer, prompts, max_new_tokens=12)]
    assert len(first.ids) == 12 and tokenizer.decode(first.ids, skip_special_tokens=True) == first
    eos, tokenizer.eos_token_id = tokenizer.eos_token_id, first.ids[4]  # as if the model ended at its fifth token
    try:
        (ended, *_) = [group[0] for group in generation.generate(model, tokenizer, prompts, max_new_tokens=12)]
    finally:
        tokenizer.eos_token_id = eos
    stop = first.ids.index(first.ids[4])  # the first time it generates that token
    assert ended.ids == first.ids[: stop + 1] and isinstance(ended, str)

    context = calling.trl_arguments([prompts[0]] * 2, [ended, first], tokenizer)
    assert context["completion_ids"] == [ended.ids, first.ids]
    again = pickle.loads(pickle.dumps(ended))  # as a reward's worker process receives it
    assert again == ended and again.ids == ended.ids
    plain = calling.trl_arguments([prompts[0]], ["<answer>7</answer>"], tokenizer)  # text from elsewhere
    assert plain["completion_ids"] == [tokenizer("<answer>7</answer>", add_special_tokens=False)["input_ids"]]


def test_a_model_with_nan_weights_is_refused_for_evaluation_instead_of_scored_zero(tmp_path):
    """Greedy decoding of NaN logits picks token 0 at every step: the evaluation, the difficulty measurement and
    ``grpo_ext.infer`` (which share this loader) reported a score of 0 with nothing said of why."""
    from grpo_ext.backends.models import ModelUnavailableError

    path = tiny_model_with(tmp_path, lambda m: m.lm_head.weight[7].fill_(-torch.inf))
    with pytest.raises(ModelUnavailableError) as err:
        generation.load_model(compose_config(["model=tiny", f"model.path={path}", "hardware=cpu"]))
    assert str(err.value) == (
        f"the weights of {path} are not all finite: 1 of its 52 tensors hold NaN or infinite values "
        "(model.embed_tokens.weight). It gives no meaningful completions; a model saved by a run that diverged? Take "
        "one saved before (its best_model, or a checkpoint from before the divergence)"
    )
