"""Divergence: a step whose gradient, loss or weights are NaN or infinite stops the run before it is saved, and a
sampling failure (NaN or infinite logits) is explained."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

from grpo_ext.backends import models
from grpo_ext.errors import DivergedError
from grpo_ext.monitor import loggers
from grpo_ext.monitor.record import _is_number
from grpo_ext.run import diagnosis
from grpo_ext.run.rundir import RunDir

logger = logging.getLogger(__name__)


class StopOnDivergence(TrainerCallback):
    """Stop at the first step whose gradient is NaN, before the optimizer applies it; and at the first logged step
    whose loss or gradient norm is NaN or infinite, before that step is saved.

    Gradient clipping multiplies every gradient by ``max_grad_norm / norm``, so one NaN makes the whole gradient,
    and at the optimizer step every weight, NaN. Left alone, a run saved that step as a checkpoint, the next step died
    in generation (torch's ``probability tensor contains either inf, nan or element < 0``), and the same command
    resumed from the NaN checkpoint and died again; a longer run would have saved NaN checkpoints until
    ``save_total_limit`` rotated the good ones away. ``DivergedError``, raised out of ``trainer.train()``, names the
    newest checkpoint from before it and the key to change (``lr_key``). Skipped: the gradients under fp16 (its loss
    scaler skips the steps whose gradients overflow, by design) and under DeepSpeed or FSDP (the gradients are
    sharded, and each process would decide alone); there the logged values are checked, every
    ``logging_steps``, and a checkpoint saved between the last finite line and the divergence is named as suspect.
    (The Trainer logs a NaN loss as the mean of the previous ones, ``logging_nan_inf_filter``, but not the norm.)
    """

    def __init__(self, run_dir: str | Path | RunDir, lr_key: str) -> None:
        self.run_dir, self.lr_key = RunDir(run_dir), lr_key
        self.last_finite = 0  # the last logged step whose values were all finite
        self.first_step = 0  # the step this run (or its resumption) started from

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        self.last_finite = self.first_step = state.global_step  # a resumed run starts from a sound checkpoint
        if args.deepspeed or args.fsdp or model is None:  # sharded: each process holds a part, or nothing
            return
        what = models.non_finite(model)
        if what is None:
            return
        if state.global_step:  # loaded from the checkpoint this run resumes from
            step = state.global_step
            earlier = [p.name for p in diagnosis.saved_before(self.run_dir, step)]
            resumed = self.run_dir.checkpoint(step).name
            text = f"the weights of {resumed}, which this run resumes from, are not all finite: {what}. "
            if earlier:
                lr = args.learning_rate
                text += (
                    "Saved after the run diverged, or damaged since: resume from an earlier checkpoint (the newest "
                    f"is {earlier[-1]}) with smaller updates, e.g. resume={self.run_dir / earlier[-1]} "
                    f"{self.lr_key}={lr / 4:.3g}"
                )
            else:
                text += (
                    "Saved after the run diverged, or damaged since, and no earlier checkpoint is left: start again"
                )
            self.stop(state, step, text)
        self.stop(
            state,
            0,
            f"the weights of the model this run starts from, {_source(model)}, are not all finite: {what}. No run "
            f"can train or sample from it; a model {models.FROM_A_DIVERGED_RUN}",
        )

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        if args.fp16 or args.deepspeed or args.fsdp or model is None:
            return
        import torch

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        # NaN or inf anywhere makes the norm so; one fused read of the gradients, one sync: on the CPU, for the 0.5B
        # shape, 0.04 of an AdamW step, where torch.isfinite per tensor took 0.5-0.8
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            self.last_finite = state.global_step  # nothing of this step has reached the weights
            step = state.global_step + 1
            self.stop(state, step, self.message(step, "its gradient is NaN or infinite", args))

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        logs = logs or {}
        checked = ("loss",) if args.fp16 else ("loss", "grad_norm")
        bad = {key: logs[key] for key in checked if _is_non_finite(logs.get(key))}
        if bad:
            values = ", ".join(f"{key}={value}" for key, value in bad.items())
            self.stop(state, state.global_step, self.message(state.global_step, values, args))
        if "loss" in logs:
            self.last_finite = state.global_step

    def sampling_failure(self, err: BaseException, model: Any, state: Any, args: Any) -> str:
        """What to say, and record as an alert, when sampling the completions of the next step failed on
        probabilities that are NaN or infinite (``err``, for which ``is_sampling_failure`` holds)."""
        step = state.global_step + 1
        message = self._sampling_failure(err, model, step, args)
        if state.is_world_process_zero:
            loggers.alert("sampling failed", message, "ERROR", step)
        return message

    def _sampling_failure(self, err: BaseException, model: Any, step: int, args: Any) -> str:
        # activations beyond float16's range; weights gone NaN or infinite by an update the checks could not see
        # (under fp16, DeepSpeed or FSDP only the logged values are checked); or finite weights so large that float32
        # overflows, from an update or from the start
        if args.fp16 or args.bf16:
            dtype = "float16" if args.fp16 else "bfloat16"
        else:
            dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
        in_float16 = (
            "The run computes in float16, whose largest value, 65504, the activations of some models exceed "
            "(Qwen2.5's are reported to): train in float32 (trainer.fp16=false hardware.dtype=float32, slower), or "
            "in bfloat16 on a GPU that computes it (trainer.bf16=true hardware.dtype=bfloat16)"
        )
        if "device-side assert" in str(err):  # the GPU can be asked nothing more; its failed assertion is above
            return (
                f"a CUDA device-side assert stopped the run while it sampled the completions of step {step}; the "
                "failed assertion is printed above. When it reads `probability tensor contains either inf, nan or "
                "element < 0`, the model's next-token logits were NaN or infinite. "
                + (f"{in_float16}. Or, as in any precision, " if dtype == "float16" else "Then ")
                + f"the weights diverged: the checkpoints saved after step {self.last_finite}, the last one logged "
                "as finite, may hold NaN weights"
            )
        bad = models.non_finite_tensors(model)[0]
        if bad:
            return self.message(step, f"sampling found the weights NaN or infinite ({models.listed(bad)})", args)
        what = f"the model's next-token logits are NaN or infinite (torch: {str(err).splitlines()[0]})"
        if dtype == "float16":
            return f"sampling the completions of step {step} failed: {what}, from finite weights. {in_float16}"
        if step - 1 == self.first_step:  # no update of this run's has reached the weights
            return (
                f"the model this run starts from, {_source(model)}, cannot be sampled from: {what}, from weights "
                f"that are finite but so large that {dtype} overflows. A model {models.FROM_A_DIVERGED_RUN}"
            )
        return self.message(step, f"{what}, from weights that are finite but so large that {dtype} overflows", args)

    def stop(self, state: Any, step: int, message: str) -> NoReturn:
        if state.is_world_process_zero:
            loggers.alert("training diverged", message, "ERROR", step)
        raise DivergedError(message)

    def message(self, step: int, what: str, args: Any) -> str:
        found = diagnosis.diverged_checkpoints(self.run_dir, step, self.last_finite)
        text = f"training diverged at step {step}: {what}. Training stopped before saving that step. "
        if found.suspect:
            names = [p.name for p in found.suspect]
            text += (
                f"{', '.join(names)} {'was' if len(names) == 1 else 'were'} saved after step {self.last_finite}, "
                "the last one logged as finite, and may hold NaN weights. "
            )
        if found.started_from:
            text += (
                f"{found.started_from.name} holds the weights step {step} started from: resumed, it would take the "
                "same step again (same weights, and the same batch, since a checkpoint restores the random state), "
                "whatever the learning rate. "
            )
        lr = args.learning_rate
        smaller = f"{self.lr_key}={lr / 4:.3g} (a quarter of {lr:.3g})"
        if found.sound:
            return text + (
                f"The newest checkpoint from before it is {found.sound[-1]}: continue from it, or an earlier one, "
                f"with smaller updates, e.g. resume={found.sound[-1]} {smaller}"
            )
        earlier = "No earlier checkpoint was saved" if found.started_from else "No checkpoint was saved before it"
        return text + f"{earlier}: start again with smaller updates, e.g. {smaller}"


def _source(model: Any) -> str:
    """Where ``model`` was loaded from, as its messages name it."""
    return getattr(model, "name_or_path", None) or "the model"


def _is_non_finite(value: Any) -> bool:
    return isinstance(value, float) and not _is_number(value)


SAMPLING_FAILURES = ("probability tensor contains either", "device-side assert triggered")


def is_sampling_failure(err: BaseException) -> bool:
    """Whether ``err`` is torch refusing to sample from probabilities that are NaN, infinite or negative (on a CUDA
    GPU, a device-side assert, whose own text is printed by the GPU before the exception)."""
    return isinstance(err, RuntimeError) and any(text in str(err) for text in SAMPLING_FAILURES)
