"""``grpo_ext.health``: the warnings for stretches of steps that teach nothing or whose completions are cut off, fed
the lines TRL logs. (End to end, with a random model that does both: ``test_train.py``.)"""

from __future__ import annotations

from types import SimpleNamespace

from grpo_ext.health import WarnOnTruncation, WarnWithoutSignal

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
