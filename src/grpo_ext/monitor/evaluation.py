"""Held-out evaluations during training: before the first step, every few steps and at the end; the best model kept
and a fall below it said."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

from grpo_ext.monitor.health import WarnOnEvalDrop
from grpo_ext.monitor.record import MetricsFile
from grpo_ext.run import processes
from grpo_ext.run.best_model import BestModel

logger = logging.getLogger(__name__)


class EvalCallback(TrainerCallback):
    """Evaluate the policy before the first step, every ``every`` steps (0: never in between) and at the end.

    ``evaluate(model, tokenizer)`` returns the metrics (``grpo_ext.monitor.heldout.run_eval``'s). Each evaluation
    becomes a line of ``eval/<metric>`` values at its step in ``metrics`` (the run's ``MetricsFile``, whose clock it
    shares), and a W&B log when a W&B run is open; ``best`` (a ``grpo_ext.run.best_model.BestModel``), when given,
    keeps the best model, and ``drop`` (a ``grpo_ext.monitor.health.WarnOnEvalDrop``) warns of a fall below the best,
    and stops the run for it when asked to. Only the main process evaluates; the others wait for it at their next
    collective operation, or, when ``drop`` may stop the run, at once, to hear whether they go on.
    """

    def __init__(
        self,
        metrics: MetricsFile,
        evaluate: Any,
        every: int,
        best: BestModel | None = None,
        drop: WarnOnEvalDrop | None = None,
    ) -> None:
        self.metrics, self.evaluate, self.every, self.best, self.drop = metrics, evaluate, every, best, drop
        self.history: list[dict[str, Any]] = []

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step == 0:
            self._run(args, state, kwargs)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            fell = self._run(args, state, kwargs)
            if self.drop is not None and self.drop.stop and processes.largest(int(fell), args):  # every process
                control.should_training_stop = True

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.history or self.history[-1]["step"] != state.global_step:
            self._run(args, state, kwargs, final=state.global_step >= state.max_steps)  # else stopped by a signal

    def _run(self, args: Any, state: Any, kwargs: dict[str, Any], final: bool = False) -> bool:
        """Evaluate (the main process only); True when ``drop`` asks the run to stop."""
        if not state.is_world_process_zero:
            return False
        metrics = self.evaluate(kwargs["model"], kwargs["processing_class"], state=state)["metrics"]
        values = {f"eval/{key}": value for key, value in metrics.items() if key not in ("n", "seconds")}
        self.history.append(self.metrics.append(state.global_step, values))
        logger.info("eval at step %d: %s (%.1f s)", state.global_step, values, metrics["seconds"])
        if self.best is not None:
            self.best.offer(state.global_step, values, final)
        fell = self.drop is not None and self.drop.check(state.global_step, values, metrics["n"], args)
        import wandb

        if wandb.run is not None:
            wandb.log({**values, "train/global_step": state.global_step})
            if fell:  # eval.stop_on_drop ends the run here: in the runs table, beside its state "finished"
                wandb.run.summary["stopped_at_step"] = state.global_step
            if self.best is not None and self.best.record is not None:  # for the runs table: sort runs by their best
                best = {f"best/{self.best.metric.replace('/', '_')}": self.best.value}  # best/eval_accuracy...
                wandb.run.summary.update({**best, "best/step": self.best.record["step"]})
        return fell
