"""The run's own record of what happened, independent of any external logger: ``metrics.jsonl`` and
``summary.json``, and TRL's completions tables."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

from grpo_ext.run.records import append_metrics, read_metrics
from grpo_ext.run.rundir import RunDir

# Keys of the Trainer's closing log line: a summary of the run, not a training step.
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")


class MetricsFile(TrainerCallback):
    """Append one JSON line per logging step to ``metrics.jsonl``; write the closing summary to ``summary.json``.

    Each line holds ``step``, ``wall_time`` (seconds since training began) and every numeric value TRL logged at
    that step: ``reward``, ``reward_std``, ``rewards/<name>/mean``, ``kl``, ``loss``, ``completions/mean_length``...
    Lines are flushed as they are written, so a crash keeps everything logged before it.
    """

    def __init__(self, run_dir: str | Path | RunDir) -> None:
        self.run_dir = RunDir(run_dir)
        self.started = time.monotonic()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # A resumed run's clock continues from the last line already in the file.
        previous = read_metrics(self.run_dir)
        self.started = time.monotonic() - (previous[-1]["wall_time"] if previous else 0.0)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or not logs:
            return
        values = {key: value for key, value in logs.items() if _is_number(value)}
        if any(key in values for key in SUMMARY_KEYS):
            summary = {"step": state.global_step, **values}
            self.run_dir.summary.write_text(json.dumps(summary, indent=2) + "\n")
            return
        self.append(state.global_step, values)

    def append(self, step: int, values: dict[str, Any]) -> dict[str, Any]:
        """Write one line at ``step`` with the run's wall time (which continues across resumes); return it."""
        record = {"step": step, "wall_time": round(time.monotonic() - self.started, 3), **values}
        append_metrics(self.run_dir, record)
        return record


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class CompletionsTable(TrainerCallback):
    """Turn on TRL's completions table (prompt, completion, each reward, the ground truth, the advantage) every
    ``every`` steps: logged to W&B when it runs, and saved as ``completions/completions_STEP.parquet``."""

    def __init__(self, trainer: Any, every: int) -> None:
        self.trainer = trainer
        self.every = every
        if every > 0:  # TRL makes this directory only when the table is on from the start
            RunDir(trainer.args.output_dir).completions.mkdir(parents=True, exist_ok=True)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.trainer.log_completions = self.every > 0 and state.global_step % self.every == 0
