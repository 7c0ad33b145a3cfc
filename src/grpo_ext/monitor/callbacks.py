"""Trainer callbacks: the run's own record of what happened, independent of any external logger."""

from __future__ import annotations

import json
import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from transformers import TrainerCallback

from grpo_ext.backends import models
from grpo_ext.monitor import loggers
from grpo_ext.monitor.health import WarnOnEvalDrop
from grpo_ext.run import checkpoints, processes
from grpo_ext.run.best_model import BestModel
from grpo_ext.run.records import read_metrics

logger = logging.getLogger(__name__)

# Keys of the Trainer's closing log line: a summary of the run, not a training step.
SUMMARY_KEYS = ("train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss")


class MetricsFile(TrainerCallback):
    """Append one JSON line per logging step to ``metrics.jsonl``; write the closing summary to ``summary.json``.

    Each line holds ``step``, ``wall_time`` (seconds since training began) and every numeric value TRL logged at
    that step: ``reward``, ``reward_std``, ``rewards/<name>/mean``, ``kl``, ``loss``, ``completions/mean_length``...
    Lines are flushed as they are written, so a crash keeps everything logged before it.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.started = time.monotonic()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A resumed run's clock continues from the last line already in the file.
        previous = read_metrics(self.run_dir)
        self.started = time.monotonic() - (previous[-1]["wall_time"] if previous else 0.0)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        values = {key: value for key, value in logs.items() if _is_number(value)}
        if any(key in values for key in SUMMARY_KEYS):
            summary = {"step": state.global_step, **values}
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
            return
        self.append(state.global_step, values)

    def append(self, step: int, values: dict[str, Any]) -> dict[str, Any]:
        """Write one line at ``step`` with the run's wall time (which continues across resumes); return it."""
        record = {"step": step, "wall_time": round(time.monotonic() - self.started, 3), **values}
        with open(self.run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        return record


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class StopOnSignal(TrainerCallback):
    """SIGTERM, Ctrl-C or SIGUSR2: finish the current step, save a checkpoint, stop training. A second signal stops
    at once.

    SIGUSR2 is the warning SLURM sends before a job's time limit when asked (``--signal=USR2@SECONDS``), and the one
    submitit asks for: a job run by Hydra's submitit launcher (``hydra/launcher=slurm``) saves its checkpoint first,
    then submitit's own handler requeues it, and the requeued job resumes from that checkpoint. ``received`` tells
    the entry point afterwards which signal ended the run (``None`` if none did). With several training processes, a
    signal that reaches any of them stops all of them after the same step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the signals while inside the block (main thread only), then restore the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now, without a checkpoint")
        self.received = signal.Signals(signum)
        logger.warning(
            "%s: finishing this step, saving a checkpoint, then stopping (again to stop now)", self.received.name
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.received = processes.agree_on_signal(self.received, args)
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def exit(self, step: int, run_dir: Path) -> NoReturn:
        """Once training stopped for ``received``: say where the checkpoint is (once, from the main process), after
        every process has written its part of it, then pass the signal on to the handler that was there before
        training (submitit's, which requeues the job), if any, and exit with 128 + the signal's number."""
        processes.wait_for_all()
        if processes.is_main():
            sys.stderr.write(
                f"stopped by {self.received.name} at step {step}; checkpoint: {checkpoints.latest_complete(run_dir)}. "
                "Run the same command (same hydra.run.dir) to resume.\n"
            )
        before = signal.getsignal(self.received)  # restored when training ended
        if callable(before) and before is not signal.default_int_handler:
            logger.info("passing %s on to %s", self.received.name, getattr(before, "__qualname__", before))
            before(self.received.value, None)
        sys.exit(128 + self.received.value)


class OptimizerSettingsOnResume(TrainerCallback):
    """Give a resumed run the optimizer settings it is run with, not those saved in its checkpoint.

    Resuming, the Trainer loads the optimizer's and the scheduler's state from the checkpoint, and with them the
    hyperparameters they were saved with: a run resumed from a checkpoint (``resume=CHECKPOINT``) with another
    learning rate, weight decay, or Adam's betas or epsilon trained on with the checkpoint's, silently (the advice
    after a divergence, to resume with a smaller learning rate, changed nothing). At the start of a resumed run,
    this sets them back to the run's own, where the optimizer is the Trainer's own: the learning rate by rescaling
    the schedule (its base rate, and each parameter group's current rate, so the schedule keeps its place), the others
    as they are. Each change is logged; one that cannot be made is a warning. ``prefix`` is where the user sets them
    (``trainer.``, ``sft.``).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def on_train_begin(
        self, args: Any, state: Any, control: Any, optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any
    ) -> None:
        if state.global_step == 0 or optimizer is None:
            return
        groups = optimizer.param_groups
        scheduler = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper holds torch's
        changed = self._learning_rate(args.learning_rate, groups, scheduler)
        if "adam" in str(args.optim).lower():
            adam = {
                "betas": ("adam_beta1/adam_beta2", (args.adam_beta1, args.adam_beta2)),
                "eps": ("adam_epsilon", args.adam_epsilon),
            }
            for key, (name, value) in adam.items():
                old = groups[0].get(key)
                if old is not None and _floats(old) != _floats(value):
                    for group in groups:
                        group[key] = value
                    changed.append(f"{self.prefix}{name} {old} -> {value}")
        decaying = [group for group in groups if group.get("weight_decay")]
        if decaying and decaying[0]["weight_decay"] != args.weight_decay:
            changed.append(f"{self.prefix}weight_decay {decaying[0]['weight_decay']} -> {args.weight_decay}")
            for group in decaying:
                group["weight_decay"] = args.weight_decay
        elif not decaying and args.weight_decay:
            logger.warning(
                "%sweight_decay=%s is not applied: the checkpoint's optimizer decays no parameter, and which ones "
                "would is not recorded in it; start a new run for weight decay",
                self.prefix,
                args.weight_decay,
            )
        if changed:
            logger.info("resumed with this run's optimizer settings, not the checkpoint's: %s", "; ".join(changed))

    def _learning_rate(self, lr: float, groups: list[dict[str, Any]], scheduler: Any) -> list[str]:
        base = list(getattr(scheduler, "base_lrs", None) or [group.get("initial_lr", group["lr"]) for group in groups])
        if len(set(base)) != 1:  # groups of their own rates: not the Trainer's optimizer
            if not math.isclose(max(base), lr):
                logger.warning(
                    "%slearning_rate=%s is not applied: the checkpoint's optimizer has parameter groups with "
                    "learning rates of their own (%s)",
                    self.prefix,
                    lr,
                    base,
                )
            return []
        before = [group["lr"] for group in groups]
        if hasattr(scheduler, "lr_lambdas"):  # the Trainer's schedules: this place of this run's schedule
            current = [lr * fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
        else:
            current = [rate * lr / base[0] for rate in before]
        if math.isclose(base[0], lr) and all(math.isclose(a, b) for a, b in zip(before, current, strict=True)):
            return []
        for group, rate in zip(groups, current, strict=True):
            group["lr"] = rate
            if "initial_lr" in group:
                group["initial_lr"] = lr
        if hasattr(scheduler, "base_lrs"):  # what the scheduler scales from now on, and what the Trainer logs
            scheduler.load_state_dict({**scheduler.state_dict(), "base_lrs": [lr] * len(base), "_last_lr": current})
        now = f"this step's rate {before[0]:.3g} -> {current[0]:.3g}"
        if math.isclose(base[0], lr):  # the same rate, on a schedule of another length (trainer.max_steps)
            return [f"the learning rate schedule's: {now}"]
        return [f"{self.prefix}learning_rate {base[0]:.3g} -> {lr:.3g} ({now})"]


def _floats(value: Any) -> tuple[float, ...]:
    """A hyperparameter (a float, a tuple of them, or tensors) as a tuple of floats, to compare."""
    return tuple(float(v) for v in value) if isinstance(value, (tuple, list)) else (float(value),)


class DivergedError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite: training stopped before that step's weights were saved."""


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

    def __init__(self, run_dir: str | Path, lr_key: str) -> None:
        self.run_dir, self.lr_key = Path(run_dir), lr_key
        self.last_finite = 0  # the last logged step whose values were all finite
        self.first_step = 0  # the step this run (or its resumption) started from

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.last_finite = self.first_step = state.global_step  # a resumed run starts from a sound checkpoint
        if args.deepspeed or args.fsdp or model is None:  # sharded: each process holds a part, or nothing
            return
        what = models.non_finite(model)
        if what is None:
            return
        if state.global_step:  # loaded from the checkpoint this run resumes from
            step = state.global_step
            earlier = [p.name for p in checkpoints.checkpoints(self.run_dir) if checkpoints.checkpoint_step(p) < step]
            text = f"the weights of checkpoint-{step}, which this run resumes from, are not all finite: {what}. "
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

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
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

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
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
        complete = [p for p in checkpoints.checkpoints(self.run_dir) if checkpoints.is_complete(p)]
        steps = {p: checkpoints.checkpoint_step(p) for p in complete}
        suspect = [p.name for p in complete if self.last_finite < steps[p] < step]
        # Step `step` started from the weights of step - 1: resumed from them, it takes the same step again (a
        # checkpoint restores the random state too, so the same batch), at any learning rate.
        started_from = [p.name for p in complete if steps[p] == step - 1 <= self.last_finite]
        sound = [p for p in complete if steps[p] <= self.last_finite and steps[p] < step - 1]
        text = f"training diverged at step {step}: {what}. Training stopped before saving that step. "
        if suspect:
            text += (
                f"{', '.join(suspect)} {'was' if len(suspect) == 1 else 'were'} saved after step {self.last_finite}, "
                "the last one logged as finite, and may hold NaN weights. "
            )
        if started_from:
            text += (
                f"{started_from[0]} holds the weights step {step} started from: resumed, it would take the same step "
                "again (same weights, and the same batch, since a checkpoint restores the random state), whatever "
                "the learning rate. "
            )
        lr = args.learning_rate
        smaller = f"{self.lr_key}={lr / 4:.3g} (a quarter of {lr:.3g})"
        if sound:
            return text + (
                f"The newest checkpoint from before it is {sound[-1]}: continue from it, or an earlier one, with "
                f"smaller updates, e.g. resume={sound[-1]} {smaller}"
            )
        earlier = "No earlier checkpoint was saved" if started_from else "No checkpoint was saved before it"
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


class OneInputGradHook(TrainerCallback):
    """Remove the copies of transformers' input-embedding hook that pile up during training; keep one.

    With activation checkpointing, TRL turns it off to generate and on again after
    (``trl.models.unwrap_model_for_generation``), and each time transformers (5.x) registers one more
    ``make_inputs_require_grads`` forward hook on the input embeddings without removing the old ones (it removes
    them only for a PEFT config loaded through transformers). Measured here with TRL 1.16 and transformers 5.24: two
    more hooks each step, with or without LoRA, so that by step 1,000 every forward pass, each decode step of
    generation included, runs 2,000 identical hooks (+2 ms a forward pass of the tiny model on this CPU), and a
    compiled decode step (``hardware.rollout=static_cache``), guarded on the number of hooks, is compiled again every
    step until torch's recompile limit sends it back to uncompiled decoding. The hooks all set
    ``requires_grad`` on the embeddings' output, so one does what all of them did.
    """

    HOOK = "make_inputs_require_grads"

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.prune(model)

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.prune(model)

    @classmethod
    def prune(cls, model: Any) -> int:
        """Keep the newest of the copies on each module of ``model``; return how many were removed."""
        removed = 0
        for module in model.modules() if model is not None else ():
            hooks = module._forward_hooks  # torch keeps them in registration order, keyed by handle id
            copies = [key for key, hook in hooks.items() if getattr(hook, "__name__", None) == cls.HOOK]
            for key in copies[:-1]:
                del hooks[key]
                for table in (module._forward_hooks_with_kwargs, module._forward_hooks_always_called):
                    table.pop(key, None)
            removed += max(len(copies) - 1, 0)
        return removed


class CompletionsTable(TrainerCallback):
    """Turn on TRL's completions table (prompt, completion, each reward, the ground truth, the advantage) every
    ``every`` steps: logged to W&B when it runs, and saved as ``completions/completions_STEP.parquet``."""

    def __init__(self, trainer: Any, every: int) -> None:
        self.trainer = trainer
        self.every = every
        if every > 0:  # TRL makes this directory only when the table is on from the start
            (Path(trainer.args.output_dir) / "completions").mkdir(parents=True, exist_ok=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.log_completions = self.every > 0 and state.global_step % self.every == 0


class EvalCallback(TrainerCallback):
    """Evaluate the policy before the first step, every ``every`` steps (0: never in between) and at the end.

    ``evaluate(model, tokenizer)`` returns the metrics (``grpo_ext.evaluate.run_eval``'s). Each evaluation becomes a
    line of ``eval/<metric>`` values at its step in ``metrics`` (the run's ``MetricsFile``, whose clock it shares),
    and a W&B log when a W&B run is open; ``best`` (a ``grpo_ext.run.best_model.BestModel``), when given, keeps the
    best model, and ``drop`` (a ``grpo_ext.monitor.health.WarnOnEvalDrop``) warns of a fall below the best, and stops
    the run for it when asked to. Only the main process evaluates; the others wait for it at their next collective
    operation, or, when ``drop`` may stop the run, at once, to hear whether they go on.
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

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == 0:
            self._run(args, state, kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.every and state.global_step % self.every == 0 and state.global_step < state.max_steps:
            fell = self._run(args, state, kwargs)
            if self.drop is not None and self.drop.stop and processes.largest(int(fell), args):  # every process
                control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
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
