"""``grpo_ext.monitor.health``: the warnings for stretches of steps that teach nothing or whose completions are cut
off, fed the lines TRL logs. (End to end, with a random model that does both: ``tests/commands/test_train.py``.)"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import grpo_ext.train
from grpo_ext.monitor import heldout
from grpo_ext.monitor.health import WarnOnEvalDrop, WarnOnTruncation, WarnWithoutSignal
from grpo_ext.run.best_model import read_best
from grpo_ext.run.records import append_alert, read_alerts, read_metrics, truncate_records
from grpo_ext.train import train
from support import FAST, WITH_SIGNAL, compose_config

ARGS = SimpleNamespace(logging_steps=1, num_generations=4, max_completion_length=256, mask_truncated_completions=False)


def feed(callback, lines, args=ARGS, first_step=1):
    """Give ``callback`` one logged line a step; a line may be None (the step logged nothing, logging_steps > 1)."""
    callback.on_train_begin(args, SimpleNamespace(global_step=first_step - 1), None)
    for step, logs in enumerate(lines, start=first_step):
        if logs is not None:
            callback.on_log(args, SimpleNamespace(is_world_process_zero=True, global_step=step), None, logs=logs)


def test_a_stretch_without_signal_ends_when_one_group_differs(caplog):
    fracs = [1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    feed(WarnWithoutSignal(steps=3), [{"frac_reward_zero_std": f, "reward": 0.5, "reward_std": 0.4} for f in fracs])
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(":")[0] for m in messages] == [
        "no learning signal in steps 4-6",
        "no learning signal in steps 9-11",
    ]
    assert "The groups differ (mean reward 0.500): each prompt is either always or never solved." in messages[0]


def cut(ratio, ended=100.0):
    return {"completions/clipped_ratio": ratio, "completions/mean_terminated_length": ended}


def test_completions_cut_off_for_a_stretch_are_named_once_with_what_to_change(caplog):
    feed(WarnOnTruncation(steps=3), [cut(0.6), cut(0.5), cut(0.4), cut(0.7), cut(0.75), cut(0.8), cut(0.9), cut(0.9)])
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "completions cut off in steps 4-6: in each, at least 50% of the completions reached "
        "trainer.max_completion_length=256 tokens without ending (80% in step 6); those that ended averaged 100 "
        "tokens. A cut completion is scored as it stands, most often without its final answer: its reward says how "
        "long it was rather than whether it was right. Raise trainer.max_completion_length, ask for shorter answers "
        "in the task's prompt, or leave cut completions out of the loss with trainer.mask_truncated_completions=true."
    ]


def test_a_model_that_never_stops_is_told_apart_and_masked_runs_are_not_told_to_mask(caplog):
    masked = SimpleNamespace(**{**vars(ARGS), "mask_truncated_completions": True})
    feed(WarnOnTruncation(steps=2), [cut(1.0, ended=0.0)] * 2, args=masked)
    (message,) = [r.getMessage() for r in caplog.records]
    assert "(100% in step 2); none of the last step's ended: the model may not know to stop" in message
    assert message.endswith(
        "They are left out of the loss (trainer.mask_truncated_completions=true), so these steps learned from the "
        "0% that ended. Raise trainer.max_completion_length or ask for shorter answers in the task's prompt."
    )


def test_steps_between_logged_lines_count_toward_the_stretch_and_other_lines_are_skipped(caplog):
    """logging_steps=5: each line covers five steps, so two lines make a stretch of ten; an evaluation's line (no
    clipped_ratio) neither ends the stretch nor counts. A resumed run counts from its first step."""
    lines = [None] * 4 + [cut(0.9)] + [None] * 2 + [{"eval/accuracy": 0.5}] + [None] + [cut(0.9)]
    feed(WarnOnTruncation(steps=10), lines, first_step=21)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["completions cut off in steps 21-30"]
    caplog.clear()
    feed(WarnOnTruncation(steps=10), lines[:5])
    assert not caplog.records


def test_only_the_main_process_warns(caplog):
    warn = WarnOnTruncation(steps=1)
    warn.on_log(ARGS, SimpleNamespace(is_world_process_zero=False, global_step=1), None, logs=cut(1.0))
    assert not caplog.records


def test_a_collapse_is_told_apart_from_a_model_that_never_earned_a_reward(caplog):
    """The reward was 0.6 before every completion began to score 0: the warning names the fall and the learning rate,
    not a model that never writes what the reward pays for."""
    lines = [{"frac_reward_zero_std": 0.1, "reward": 0.6, "reward_std": 0.3}]
    lines += [{"frac_reward_zero_std": 1.0, "reward": 0.0, "reward_std": 0.0, "entropy": 0.0, "kl": 10.5}] * 3
    feed(WarnWithoutSignal(steps=3), lines, args=SimpleNamespace(**vars(ARGS), learning_rate=30.0))
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith("no learning signal in steps 2-4")
    assert (
        "Every completion of the last step got reward 0.000, and the mean reward was 0.600 at step 1 (entropy now "
        "0.000, kl 10.500): the policy may have collapsed onto one answer per prompt, as after updates too large "
        "(trainer.learning_rate=30)." in message
    )
    assert "never write" not in message
    caplog.clear()
    feed(WarnWithoutSignal(steps=3), lines[1:], args=SimpleNamespace(**vars(ARGS), learning_rate=30.0))
    (message,) = [r.getMessage() for r in caplog.records]
    assert "the model may never write what the reward pays for" in message and "collapsed" not in message


def evaluations(run_dir, lines):
    """Write ``metrics.jsonl`` as a run would: ``(step, values)`` lines, training ones and evaluations."""
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "wall_time": 0.0, **v}) + "\n" for s, v in lines)
    )


def check_each(drop, run_dir, lines, n=100):
    """Log each line; after each evaluation line, let ``drop`` check it, as the run's EvalCallback does."""
    args = SimpleNamespace(learning_rate=1e-5)
    for i, (step, values) in enumerate(lines):
        evaluations(run_dir, lines[: i + 1])
        if "eval/accuracy" in values:
            drop.check(step, values, n, args)


def test_a_held_out_fall_within_noise_says_nothing_and_one_beyond_it_is_said_once(tmp_path, caplog):
    """On 100 prompts, 50% -> 40% is noise (1.4 standard errors); 50% -> 20% is not (4.4), said once while it lasts,
    and again after an evaluation within noise."""
    accuracies = [0.5, 0.4, 0.2, 0.1, 0.45, 0.15]
    check_each(WarnOnEvalDrop(tmp_path, "trainer.learning_rate", "eval.stop_on_drop"), tmp_path,
               [(10 * i, {"eval/accuracy": a}) for i, a in enumerate(accuracies)])  # fmt: skip
    messages = [r.getMessage() for r in caplog.records]
    assert [m.split(",")[0] for m in messages] == [
        "held-out accuracy fell to 20.0% at step 20",
        "held-out accuracy fell to 15.0% at step 50",
    ]
    assert "from 50.0% at step 0, the run's best (100 prompts: 30.0 points, 4.4 times the noise" in messages[0]
    assert "the starting model was the best: start again with trainer.learning_rate=2.5e-06" in messages[0]


def test_a_fall_stops_the_run_only_when_asked_and_the_message_says_which(tmp_path, caplog):
    lines = [(0, {"eval/accuracy": 0.5}), (10, {"eval/accuracy": 0.2}), (20, {"eval/accuracy": 0.1})]
    for stop, said in [(False, "The run goes on (eval.stop_on_drop=true would stop it here)."),
                       (True, "Stopping the run here (eval.stop_on_drop=true).")]:  # fmt: skip
        caplog.clear()
        drop = WarnOnEvalDrop(tmp_path, "trainer.learning_rate", "eval.stop_on_drop", stop=stop)
        args = SimpleNamespace(learning_rate=1e-5)
        answers = []
        for i, (step, values) in enumerate(lines):
            evaluations(tmp_path, lines[: i + 1])
            answers.append(drop.check(step, values, 100, args))
        assert answers == [False, stop, False]  # once: the fall at step 20 continues the one warned of
        (message,) = [r.getMessage() for r in caplog.records]
        assert message.endswith(said)


def test_a_fall_with_the_training_reward_points_to_the_checkpoint_of_the_best(tmp_path, caplog):
    for step in (10, 20, 30):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    train = lambda step, reward: (step, {"reward": reward, "entropy": 0.01, "kl": 9.0})  # noqa: E731
    lines = [(0, {"eval/accuracy": 0.3}), train(10, 0.5), (20, {"eval/accuracy": 0.7})]
    lines += [train(21, 0.6), train(22, 0.2), train(23, 0.1), train(24, 0.0), (30, {"eval/accuracy": 0.1})]
    check_each(WarnOnEvalDrop(tmp_path, "trainer.learning_rate", "eval.stop_on_drop"), tmp_path, lines)
    (message,) = [r.getMessage() for r in caplog.records]
    assert (
        "Training reward: 0.600 at step 21 (sampled from the best evaluation's policy), 0.100 in steps 22-24 "
        "(entropy 0.010, kl 9.000). It fell too: the policy itself got worse, as after updates too large; go on "
        f"from the checkpoint of the best evaluation or one before it: resume={tmp_path / 'checkpoint-20'} "
        "trainer.learning_rate=2.5e-06 (a quarter of 1e-05)."
    ) in message


def test_a_fall_while_the_training_reward_holds_points_at_the_reward(tmp_path, caplog):
    lines = [(0, {"eval/accuracy": 0.6}), (1, {"reward": 0.5}), (2, {"reward": 0.55}), (3, {"reward": 0.6})]
    check_each(
        WarnOnEvalDrop(tmp_path, "trainer.learning_rate", "eval.stop_on_drop"),
        tmp_path,
        [*lines, (4, {"eval/accuracy": 0.3})],
    )
    (message,) = [r.getMessage() for r in caplog.records]
    assert (
        "Training reward: 0.500 at step 1 (sampled from the best evaluation's policy), 0.575 in steps 2-3" in message
    )
    assert "It held: the policy earns its training reward in a way the held-out evaluation" in message
    caplog.clear()  # fine-tuning logs no reward
    check_each(
        WarnOnEvalDrop(tmp_path, "sft.learning_rate", "sft.stop_on_drop"),
        tmp_path,
        [(0, {"eval/accuracy": 0.6}), (4, {"eval/accuracy": 0.3})],
    )
    (message,) = [r.getMessage() for r in caplog.records]
    assert (
        "The policy got worse, as after updates too large, or it fits its training rows; the starting model" in message
    )
    assert "sft.learning_rate=2.5e-06" in message


def script_evaluations(monkeypatch, script: list[float]) -> list[float]:
    """Let training's evaluations run for real but report the accuracies of ``script``, in turn; returns the list,
    which the caller may refill."""
    real_eval = heldout.run_eval

    def scripted_eval(model, tokenizer, **kwargs):
        report = real_eval(model, tokenizer, **kwargs)
        return {**report, "metrics": {**report["metrics"], "accuracy": script.pop(0)}}

    monkeypatch.setattr(heldout, "run_eval", scripted_eval)
    return script


def test_a_run_whose_held_out_accuracy_falls_says_so_at_that_evaluation(tmp_path, monkeypatch, caplog, capsys):
    """Real training and evaluations, the accuracy each evaluation reports set by a script (16 prompts): the fall at
    step 2 is named once, at that evaluation, with step 1's training reward; the recovery at step 4 is not."""
    script_evaluations(monkeypatch, [0.75, 0.75, 0.0625, 0.0625, 0.75])
    keep = ["trainer.save_strategy=steps", "trainer.save_steps=1", "trainer.max_steps=4", "eval.size=16"]
    overrides = [*FAST, *WITH_SIGNAL, *keep, "eval.during_training=true", "eval.every=1"]
    train(compose_config(["task=arithmetic", "model=tiny", *overrides]), tmp_path)
    (message,) = [r.getMessage() for r in caplog.records if r.name == "grpo_ext.monitor.health"]
    assert [(a["step"], a["title"], a["message"]) for a in read_alerts(tmp_path)] == [
        (2, "held-out accuracy fell", message)
    ]  # recorded for the closing summary and grpo_ext.summarize, W&B or not
    assert "alerts: held-out accuracy fell (step 2); what each said is in train.log" in capsys.readouterr().out
    assert message.startswith("held-out accuracy fell to 6.2% at step 2, from 75.0% at step 0, the run's best (16 pro")
    assert (
        "the one step logged since the best. If the updates were too large, the starting model was the best" in message
    )


def test_a_run_asked_to_stop_on_a_fall_stops_at_that_evaluation_keeping_its_best(tmp_path, monkeypatch, capsys):
    """eval.stop_on_drop=true: the scripted fall at step 2 of 6 ends training there; the final model is saved, the
    best (step 0's) kept, and the closing summary says why the run ended early."""
    script = script_evaluations(monkeypatch, [0.75, 0.75, 0.0625, 0.75])
    keep = ["trainer.max_steps=6", "eval.size=16", "eval.every=1", "eval.stop_on_drop=true"]
    overrides = [*FAST, *WITH_SIGNAL, *keep, "eval.during_training=true"]
    stopped = train(compose_config(["task=arithmetic", "model=tiny", *overrides]), tmp_path)
    assert stopped == ("stopped at step 2 of 6: held-out accuracy fell below the run's best (eval.stop_on_drop=true)")
    records = read_metrics(tmp_path)
    assert max(r["step"] for r in records if "reward" in r) == 2  # no step trained after the fall
    assert [r["step"] for r in records if "eval/accuracy" in r] == [0, 1, 2]  # nor evaluated again at the end
    assert (tmp_path / "final_model").is_dir() and read_best(tmp_path)["step"] == 0
    out = capsys.readouterr().out
    assert (
        f"alerts: held-out accuracy fell (step 2); what each said is in train.log and alerts.jsonl\n{stopped}\n" in out
    )
    assert "Stopping the run here (eval.stop_on_drop=true)." in read_alerts(tmp_path)[0]["message"]
    # The same command again: no checkpoint was saved, so it starts afresh and logs each step and evaluation once
    script[:] = [0.75, 0.75, 0.0625]
    assert train(compose_config(["task=arithmetic", "model=tiny", *overrides]), tmp_path) == stopped
    assert [r["step"] for r in read_metrics(tmp_path) if "eval/accuracy" in r] == [0, 1, 2]
    assert [r["step"] for r in read_metrics(tmp_path) if "reward" in r] == [1, 2]
    assert len(read_alerts(tmp_path)) == 1


def test_a_run_that_stopped_itself_is_recorded_as_stopped_with_why(tmp_path, monkeypatch):
    """``status.json`` of a run that stopped itself at a fall in held-out accuracy (real training, the evaluations'
    accuracies scripted), run by Hydra's own entry point in this process: ``stopped``, with why; exit 0."""
    script_evaluations(monkeypatch, [0.75, 0.75, 0.0625])
    stops = [
        "trainer.max_steps=6",
        "eval.size=16",
        "eval.during_training=true",
        "eval.every=1",
        "eval.stop_on_drop=true",
    ]
    argv = [
        "grpo_ext.train",
        "task=arithmetic",
        "model=tiny",
        *FAST,
        *WITH_SIGNAL,
        *stops,
        f"hydra.run.dir={tmp_path}",
    ]
    monkeypatch.setattr(sys, "argv", argv)
    grpo_ext.train.main()
    why = "stopped at step 2 of 6: held-out accuracy fell below the run's best (eval.stop_on_drop=true)"
    assert json.loads((tmp_path / "status.json").read_text()) == {"status": "stopped", "reason": why}


def test_a_resumed_run_keeps_the_alerts_of_the_steps_it_does_not_train_again(tmp_path):
    for step in (None, 5, 10, 15):
        append_alert(tmp_path, step, "WARN", f"at {step}", "...")
    (tmp_path / "alerts.jsonl").write_text((tmp_path / "alerts.jsonl").read_text() + '{"step": 2')  # cut by a kill
    truncate_records(tmp_path, 10)
    assert [a["title"] for a in read_alerts(tmp_path)] == ["at None", "at 5", "at 10"]
