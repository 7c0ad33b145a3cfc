"""Warnings for a run that trains but learns little, said once a stretch in the log and as a W&B alert (a long run's
owner hears of it there, not by reading the log): stretches of steps with no learning signal, and of completions cut
off at the length limit. Both read what TRL logs each step; neither stops the run.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from transformers import TrainerCallback

from grpo_ext import loggers

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

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.last_logged = state.global_step

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
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
        loggers.alert(self.title, message)

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

    def holds(self, logs: dict[str, Any]) -> bool:
        return logs[self.key] >= 1.0

    def message(self, first: int, last: int, logs: dict[str, Any], args: Any) -> str:
        reward, spread = logs.get("reward", math.nan), logs.get("reward_std", math.nan)
        if spread == 0:
            kind = (
                f"Every completion of the last step got reward {reward:.3f}: the model may never write what the "
                "reward pays for (look at a few: grpo_ext.infer --samples 8, or logger.completions_every), or, if "
                "that is the reward's best, it has mastered these prompts."
            )
        else:
            kind = f"The groups differ (mean reward {reward:.3f}): each prompt is either always or never solved."
        return (
            f"no learning signal in steps {first}-{last}: in every group of "
            f"trainer.num_generations={args.num_generations} completions, each completion got the same reward "
            "(frac_reward_zero_std=1), so every advantage is 0 and nothing but the KL term (trainer.beta) moves the "
            f"policy. {kind} GRPO needs completions of one prompt that score differently: a reward with partial "
            "credit, a warm start on references (grpo_ext.sft), harder or easier prompts (grpo_ext.difficulty finds "
            "the ones that give a signal), or more generations or a higher trainer.temperature."
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
