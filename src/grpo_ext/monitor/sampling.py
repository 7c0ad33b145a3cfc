"""What a run's prompt sampler (``grpo_ext.run.sampler``) leaves: its state in every checkpoint, and the pass-rate
histogram of the train prompts at each held-out evaluation."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

from grpo_ext.monitor.record import MetricsFile
from grpo_ext.run.rundir import RunDir, replace_whole
from grpo_ext.run.sampler import STATE_FILE, PromptSampler

log = logging.getLogger(__name__)


class SamplerRecord(TrainerCallback):
    """Write the sampler's state (``sampler.json``) into each checkpoint before TRL writes the checkpoint's
    ``trainer_state.json`` (which makes a checkpoint complete), so that no complete checkpoint lacks it; and append
    the pass-rate histogram to ``metrics`` (and W&B) at step 0, every ``every`` steps and at the end."""

    def __init__(self, sampler: PromptSampler, run: RunDir, metrics: MetricsFile, every: int) -> None:
        self.sampler, self.run, self.metrics, self.every = sampler, run, metrics, every

    def save(self, step: int) -> None:
        path = self.run.checkpoint(step)
        path.mkdir(parents=True, exist_ok=True)
        replace_whole(path / STATE_FILE, json.dumps(self.sampler.state(step)) + "\n")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if control.should_save and state.is_world_process_zero:
            self.save(state.global_step)
        if self.every and state.global_step % self.every == 0:
            self._histogram(state)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if state.is_world_process_zero:  # a save asked for after the step ended (an evaluation, a signal)
            self.save(state.global_step)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step == 0:
            self._histogram(state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.every or state.global_step % self.every:
            self._histogram(state)
        if self.sampler.stopped:
            log.warning("the sampler ended the run at step %d: %s", state.global_step, self.sampler.stopped)

    def _histogram(self, state: TrainerState) -> None:
        if not state.is_world_process_zero:
            return
        values = self.sampler.histogram()
        self.metrics.append(state.global_step, values)
        import wandb

        if wandb.run is not None:
            wandb.log({**values, "train/global_step": state.global_step})
