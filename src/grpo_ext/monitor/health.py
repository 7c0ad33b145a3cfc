"""Warnings for a run that trains but learns little, or unlearns, said once in the log and as a W&B alert (a long
run's owner hears of it there, not by reading the log): stretches of steps with no learning signal, and of
completions cut off at the length limit (both read what TRL logs each step), and a held-out evaluation fallen below
the run's best by more than noise. None stops the run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

from grpo_ext.monitor import loggers
from grpo_ext.run import diagnosis
from grpo_ext.run.best_model import best_line
from grpo_ext.run.records import read_metrics
from grpo_ext.run.rundir import RunDir

logger = logging.getLogger(__name__)


class StretchWarning(TrainerCallback):
    """Warn once when a condition on the logged values holds for ``steps`` steps in a row; again only after a logged
    step where it did not. Subclasses name the logged ``key`` the condition reads (lines without it, such as the
    evaluations', are skipped), the W&B alert's ``title``, the condition and the message."""

    key = ""
    title = ""

    def __init__(self, steps: int = 10) -> None:
        self.steps = steps
        self.first: int | None = None  # the first step of the stretch under way
        self.last_logged = 0
        self.warned = False

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.last_logged = state.global_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs or self.key not in logs:
            return
        since, self.last_logged = self.last_logged + 1, state.global_step  # the steps this line covers
        if not self.holds(logs):
            self.first, self.warned = None, False
            return
        if self.first is None:
            self.first = since
        if self.warned or state.global_step - self.first + 1 < self.steps:
            return
        self.warned = True
        message = self.message(self.first, state.global_step, logs, args)
        logger.warning(message)
        loggers.alert(self.title, message, step=state.global_step)

    def holds(self, logs: dict[str, Any]) -> bool:
        raise NotImplementedError

    def message(self, first: int, last: int, logs: dict[str, Any], args: Any) -> str:
        raise NotImplementedError


class WarnWithoutSignal(StretchWarning):
    """Warn when GRPO has had nothing to learn from for ``steps`` steps in a row.

    GRPO learns from the differences between the rewards of one prompt's completions: a group whose completions all
    score the same has advantage 0 (TRL logs the share of such groups as ``frac_reward_zero_std``). When every group
    of every step is like that, the policy moves only by the KL term, and GPU time buys nothing: a model that never
    writes what the reward looks for (the seeds' random model, reward 0 everywhere), or a task the model has
    mastered (FizzBuzz: reward 1 everywhere). The warning says which it looks like and what gives a signal back.
    """

    key, title = "frac_reward_zero_std", "no learning signal"

    def __init__(self, steps: int = 10) -> None:
        super().__init__(steps)
        self.best: tuple[float, int] | None = None  # the highest mean reward logged by this process, and its step

    def holds(self, logs: dict[str, Any]) -> bool:
        return logs[self.key] >= 1.0

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().on_log(args, state, control, logs, **kwargs)  # first: the message compares with the rewards before
        reward = (logs or {}).get("reward")
        if isinstance(reward, float) and math.isfinite(reward) and (self.best is None or reward > self.best[0]):
            self.best = reward, state.global_step

    def message(self, first: int, last: int, logs: dict[str, Any], args: Any) -> str:
        reward, spread = logs.get("reward", math.nan), logs.get("reward_std", math.nan)
        said = (
            f"no learning signal in steps {first}-{last}: in every group of "
            f"trainer.num_generations={args.num_generations} completions, each completion got the same reward "
            "(frac_reward_zero_std=1), so every advantage is 0 and nothing but the KL term (trainer.beta) moves the "
            "policy. "
        )
        kind = diagnosis.why_no_signal(reward, spread, self.best[0] if self.best else None)
        if kind is diagnosis.NoSignal.COLLAPSED:
            assert self.best is not None
            return said + (
                f"Every completion of the last step got reward {reward:.3f}, and the mean reward was "
                f"{self.best[0]:.3f} at step {self.best[1]} (entropy now {logs.get('entropy', math.nan):.3f}, kl "
                f"{logs.get('kl', math.nan):.3f}): the policy may have collapsed onto one answer per prompt, as after "
                f"updates too large (trainer.learning_rate={args.learning_rate:.3g}). A collapsed policy gives no "
                "signal to recover from: go on from a checkpoint saved before the fall with a smaller "
                "trainer.learning_rate."
            )
        if kind is diagnosis.NoSignal.ALIKE:
            kind_text = (
                f"Every completion of the last step got reward {reward:.3f}: the model may never write what the "
                "reward pays for (look at a few: grpo_ext.infer --samples 8, or logger.completions_every), or, if "
                "that is the reward's best, it has mastered these prompts."
            )
        else:
            kind_text = f"The groups differ (mean reward {reward:.3f}): each prompt is either always or never solved."
        return said + (
            f"{kind_text} GRPO needs completions of one prompt that score differently: a reward with partial credit, "
            "a warm start on references (grpo_ext.sft), harder or easier prompts (grpo_ext.difficulty finds the ones "
            "that give a signal), or more generations or a higher trainer.temperature."
        )


class WarnOnTruncation(StretchWarning):
    """Warn when, for ``steps`` steps in a row, at least ``share`` of the completions were cut at
    ``trainer.max_completion_length`` before they ended (TRL's ``completions/clipped_ratio``).

    A cut completion is scored as it stands. Where the answer comes last (``<answer>``, a final number, a program
    to run), it has none, and scores as wrong however well it began: its reward says how long it was, not whether
    it was right, and GRPO learns to be shorter rather than better. Completions that grow until they reach the limit
    are a common course of a reasoning run, hours in; a model that never learned to stop (random weights, a base
    model) reaches it from the first step.
    """

    key, title = "completions/clipped_ratio", "completions cut off"

    def __init__(self, steps: int = 10, share: float = 0.5) -> None:
        super().__init__(steps)
        self.share = share

    def holds(self, logs: dict[str, Any]) -> bool:
        return logs[self.key] >= self.share

    def message(self, first: int, last: int, logs: dict[str, Any], args: Any) -> str:
        ratio = logs[self.key]
        if ratio >= 1.0:
            ended = (
                "none of the last step's ended: the model may not know to stop (random weights, a base model; a "
                "warm start on the task's references, grpo_ext.sft, teaches it)"
            )
        else:
            ended = f"those that ended averaged {logs.get('completions/mean_terminated_length', math.nan):.0f} tokens"
        if args.mask_truncated_completions:
            advice = (
                f"They are left out of the loss (trainer.mask_truncated_completions=true), so these steps learned "
                f"from the {1 - ratio:.0%} that ended. Raise trainer.max_completion_length or ask for shorter answers "
                "in the task's prompt."
            )
        else:
            advice = (
                "Raise trainer.max_completion_length, ask for shorter answers in the task's prompt, or leave cut "
                "completions out of the loss with trainer.mask_truncated_completions=true."
            )
        return (
            f"completions cut off in steps {first}-{last}: in each, at least {self.share:.0%} of the completions "
            f"reached trainer.max_completion_length={args.max_completion_length} tokens without ending ({ratio:.0%} "
            f"in step {last}); {ended}. A cut completion is scored as it stands, most often without its final "
            f"answer: its reward says how long it was rather than whether it was right. {advice}"
        )


class WarnOnEvalDrop:
    """Warn when a held-out evaluation's greedy accuracy falls below the run's best evaluation by more than noise:
    by at least ``z`` standard errors of the difference of two shares of ``n`` prompts. Once, until an evaluation
    comes back within noise. Called by ``callbacks.EvalCallback`` after each evaluation, which stops the run when
    the warning is given and ``stop`` (the setting ``stop_key`` names: ``eval.stop_on_drop``, ``sft.stop_on_drop``).

    A collapse (a learning rate too large: in a few steps the reward falls to 0 and stays there, the entropy to 0)
    and a reward being earned at the held-out accuracy's expense both show here first, while the run goes on
    spending GPU time. The standard error treats the two evaluations as independent samples; they are the same
    prompts, which makes real noise smaller, and the best of many evaluations is itself lucky, which makes it
    larger: ``z=3`` keeps to falls no one would call noise (on 100 prompts near 50%, 21 points).
    """

    metric = "eval/accuracy"

    def __init__(
        self, run_dir: str | Path | RunDir, lr_key: str, stop_key: str, stop: bool = False, z: float = 3.0
    ) -> None:
        self.run_dir, self.lr_key, self.stop_key, self.stop, self.z = RunDir(run_dir), lr_key, stop_key, stop, z
        self.warned = False

    def check(self, step: int, values: dict[str, Any], n: int, args: Any) -> bool:
        """After the evaluation at ``step``: its ``eval/`` values, on ``n`` prompts, already in ``metrics.jsonl``.
        True when it warned, and ``stop`` asks the run to stop for it."""
        if self.metric not in values or n < 1:
            return False
        records = read_metrics(self.run_dir)
        earlier = [r for r in records if self.metric in r and r["step"] < step]
        if not earlier:
            return False
        best = max(earlier, key=lambda r: (r[self.metric], -r["step"]))
        now, then = values[self.metric], best[self.metric]
        pooled = (now + then) / 2
        error = math.sqrt(2 * pooled * (1 - pooled) / n)
        if now >= then or then - now < self.z * error:
            self.warned = False
            return False
        if self.warned:
            return False
        self.warned = True
        message = self.message(step, now, best, n, (then - now) / error, records, args)
        if self.stop:
            message += f" Stopping the run here ({self.stop_key}=true)."
        else:
            message += f" The run goes on ({self.stop_key}=true would stop it here)."
        logger.warning(message)
        loggers.alert("held-out accuracy fell", message, step=step)
        return self.stop

    def message(
        self, step: int, now: float, best: dict[str, Any], n: int, z: float, records: list[dict[str, Any]], args: Any
    ) -> str:
        then, best_step = best[self.metric], best["step"]
        text = (
            f"held-out accuracy fell to {now:.1%} at step {step}, from {then:.1%} at step {best_step}, the run's best "
            f"({n} prompts: {100 * (then - now):.1f} points, {z:.1f} times the noise of two such evaluations). "
        )
        # The evaluation at step b measures the weights after b steps, the ones that sample step b + 1's completions.
        after = [r for r in records if "reward" in r and r["step"] > best_step]
        recent = after[1:][-3:]
        lr = args.learning_rate
        smaller = f"{self.lr_key}={lr / 4:.3g} (a quarter of {lr:.3g})"
        sound = diagnosis.saved_by(self.run_dir, best_step)
        if sound:
            restart = (
                f"go on from the checkpoint of the best evaluation or one before it: resume={sound[-1]} {smaller}"
            )
        elif best_step == 0:
            restart = f"the starting model was the best: start again with {smaller}"
        else:
            restart = f"no checkpoint was saved by step {best_step}: start again with {smaller}"
        if recent:
            before, lately = after[0]["reward"], sum(r["reward"] for r in recent) / len(recent)
            last = recent[-1]
            sampled = " (sampled from the best evaluation's policy)" if after[0]["step"] == best_step + 1 else ""
            text += (
                f"Training reward: {before:.3f} at step {after[0]['step']}{sampled}, {lately:.3f} "
                f"{_steps(recent[0]['step'], last['step'])} (entropy {last.get('entropy', math.nan):.3f}, kl "
                f"{last.get('kl', math.nan):.3f}). "
            )
            if lately < before - abs(before) / 4:
                text += f"It fell too: the policy itself got worse, as after updates too large; {restart}. "
            else:
                text += (
                    "It held: the policy earns its training reward in a way the held-out evaluation (greedy, the "
                    "first reward alone) does not pay: another reward at the first one's expense, a reward being "
                    "gamed, or its training prompts learned by heart. Read its completions (logger.completions_every, "
                    f"grpo_ext.infer). If it is the updates, {restart}. "
                )
        elif after:  # one training step logged since the best: nothing to compare yet
            text += (
                f"Training reward: {after[0]['reward']:.3f} at step {after[0]['step']}, the one step logged since the "
                f"best. If the updates were too large, {restart}. "
            )
        else:  # fine-tuning, which logs no reward
            text += f"The policy got worse, as after updates too large, or it fits its training rows; {restart}. "
        kept = best_line(self.run_dir)  # the record eval.keep_best keeps, if it does
        return text + f"Kept: {kept}." if kept else text.rstrip()


def _steps(first: int, last: int) -> str:
    return f"at step {last}" if first == last else f"in steps {first}-{last}"
