"""The lifecycle of a training run, shared by ``grpo_ext.train`` (GRPO) and ``grpo_ext.sft`` (SFT).

After the config is validated (``grpo_ext.config.validate``), the data built and the model resolved, a run goes
through the same stages whichever TRL trainer it drives::

    life = Lifecycle(spec, model_path)          records cut back to the resume point, W&B opened
    with life.training():                       signals handled; failures become typed errors; rewards closed
        trainer = life.watch(Trainer(..., callbacks=life.callbacks()), eval_rows)   evaluations, best model
        trainer.train(resume_from_checkpoint=life.resume_from)
    outcome = life.finish(trainer)              a signal's stop reported; final model, plots, status, summary

What differs between the two methods is a ``Method``: where its settings live, what a resumed run may change.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from grpo_ext.config import plain
from grpo_ext.errors import RewardError, TrainingError, WriteError
from grpo_ext.monitor import loggers
from grpo_ext.run import checkpoints, processes
from grpo_ext.run.best_model import BestModel, best_line
from grpo_ext.run.records import (
    alerts_text,
    eval_change,
    parts_evaluated,
    read_metrics,
    stopped_early,
    truncate_records,
    write_status,
)
from grpo_ext.run.rundir import RunDir

if TYPE_CHECKING:
    from grpo_ext.config.validate import RunSpec
    from grpo_ext.run.sampler import PromptSampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Method:
    """What differs between the kinds of run that share the lifecycle."""

    entry_point: str  # the command that runs it, recorded in config.yaml: a resume must be by the same one
    job_type: str  # the W&B run's job type
    prefix: str  # the config node of its optimizer settings, as messages name them
    stop_key: str  # the setting that stops the run at a fall in held-out accuracy
    resumable: tuple[str, ...]  # dotted config keys a resumed run may change
    log_file: str  # the log Hydra writes in the run directory

    @property
    def lr_key(self) -> str:
        return f"{self.prefix}learning_rate"


GRPO = Method("grpo_ext.train", "train", "trainer.", "eval.stop_on_drop", checkpoints.TRAIN_RESUMABLE, "train.log")
SFT = Method("grpo_ext.sft", "sft", "sft.", "sft.stop_on_drop", checkpoints.SFT_RESUMABLE, "sft.log")


@dataclass(frozen=True)
class Outcome:
    """How a run ended: ``stopped`` says why it ended before its last step (``eval.stop_on_drop``), ``None`` when it
    ran to its end; ``summary`` is its closing lines (``None`` in processes other than the main one)."""

    stopped: str | None
    summary: str | None


class Lifecycle:
    """One training run, from its validated ``spec`` and the model in ``model_path`` to its final model.

    Creating it takes the run directory to its resume point (later checkpoints removed, the records cut back to
    it, or begun anew when there is none) and opens the external logger; ``group`` names the sweep the run is a job
    of, if any.
    """

    def __init__(self, spec: RunSpec, model_path: str, group: str | None = None) -> None:
        from grpo_ext.monitor.record import MetricsFile
        from grpo_ext.monitor.signals import StopOnSignal

        self.spec, self.model_path, self.run = spec, model_path, spec.run
        self.trainer: Any = None
        self.sampler: PromptSampler | None = None
        self.stop, self.metrics = StopOnSignal(), MetricsFile(self.run)
        resumed = checkpoints.checkpoint_step(spec.resume_from) if spec.resume_from else None
        self.resumed_step = resumed or 0
        if processes.is_main():  # the steps after the checkpoint are trained and logged again; without one, all are
            checkpoints.discard_after(self.run, self.resumed_step)
            truncate_records(self.run, resumed)
        if spec.resume_from:
            log.info("resuming from %s (step %d)", spec.resume_from, self.resumed_step)
        cfg = spec.cfg
        tags = [cfg.task.name, cfg.model.name, cfg.algorithm.name if spec.method is GRPO else "sft"]
        resolved = plain(cfg)
        # W&B, when it can start: a run never fails for it
        loggers.start(cfg.logger, spec.args, tags, group, resolved, job_type=spec.method.job_type)

    @property
    def resume_from(self) -> str | None:
        """What ``trainer.train(resume_from_checkpoint=...)`` takes."""
        return str(self.spec.resume_from) if self.spec.resume_from else None

    def callbacks(self, sampler: PromptSampler | None = None) -> list[Any]:
        """The Trainer callbacks every run has: the record (``metrics.jsonl``), signals, NaN weights refused and a
        NaN step stopped before it is saved, a resumed run's learning rate its own, not its checkpoint's; for GRPO
        also the warnings of steps that teach nothing and of completions cut off, a hook leak in transformers
        worked around, and with a prompt ``sampler`` its state in every checkpoint and its pass-rate histogram."""
        from grpo_ext.monitor import health
        from grpo_ext.monitor.divergence import StopOnDivergence
        from grpo_ext.monitor.resume import OptimizerSettingsOnResume
        from grpo_ext.monitor.workarounds import OneInputGradHook

        method = self.spec.method
        self.diverged = StopOnDivergence(self.run, method.lr_key)
        found: list[Any] = [self.metrics, self.stop, self.diverged]
        if method is GRPO:
            found += [health.WarnWithoutSignal(), health.WarnOnTruncation()]
        found.append(OptimizerSettingsOnResume(method.prefix))
        if method is GRPO:
            found.append(OneInputGradHook())
        if sampler is not None:
            from grpo_ext.monitor.sampling import SamplerRecord

            self.sampler = sampler
            found.append(SamplerRecord(sampler, self.run, self.metrics, self.spec.eval_every))
        return found

    def watch(self, trainer: Any, eval_rows: Any, eval_every: int) -> Any:
        """Attach to ``trainer`` what needs it: TRL's completions tables (GRPO), and with ``eval.during_training`` the
        held-out evaluations of ``eval_rows`` (before the first step, every ``eval_every`` steps and at the end), the
        best model and the warning of a fall below it. Returns ``trainer``."""
        from grpo_ext.backends import adapters
        from grpo_ext.monitor.evaluation import EvalCallback
        from grpo_ext.monitor.health import WarnOnEvalDrop
        from grpo_ext.monitor.heldout import run_eval, scoring
        from grpo_ext.monitor.record import CompletionsTable

        self.trainer = trainer
        cfg, method = self.spec.cfg, self.spec.method
        adapters.keep_4bit_layers_trainable(trainer.model)  # QLoRA on the CPU: evaluating must not break training
        if method is GRPO:
            trainer.add_callback(CompletionsTable(trainer, cfg.logger.completions_every))
        if cfg.eval.during_training:
            evaluate = functools.partial(run_eval, dataset=eval_rows, reward=scoring(self.spec.rewards), cfg=cfg)
            keep_best = cfg.eval.keep_best and processes.is_main()  # the process that evaluates
            metric, adapter = f"eval/{cfg.eval.best_metric}", cfg.peft.name != "none"
            best = BestModel(self.run, trainer.save_model, adapter, metric) if keep_best else None
            stop_on_drop = OmegaConf.select(cfg, method.stop_key)
            drop = WarnOnEvalDrop(self.run, method.lr_key, method.stop_key, stop_on_drop)
            trainer.add_callback(EvalCallback(self.metrics, evaluate, eval_every, best, drop))
        return trainer

    @contextlib.contextmanager
    def training(self, *around: contextlib.AbstractContextManager[Any]) -> Iterator[None]:
        """The block that builds the trainer and trains: signals stop it after a checkpoint, ``around`` (a vLLM
        server) lives as long as it, and a failure leaves as a typed error saying what to do (out of memory, a
        sampling failure, a full disk, a broken reward). Rewards are closed and the W&B run ended however it ends."""
        import torch

        from grpo_ext.monitor.divergence import is_sampling_failure
        from grpo_ext.rewards.guard import RewardFailureError, trl_none_warning_once

        # TRL 1.16 reads model.is_gradient_checkpointing, which transformers 5.2x renamed and warns about at every
        # step; nothing a user could act on (the renamed arguments themselves: config.trainer_node.RENAMED)
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        try:
            with contextlib.ExitStack() as stack:
                for manager in around:
                    stack.enter_context(manager)
                stack.enter_context(self.stop.installed())
                stack.enter_context(trl_none_warning_once())
                yield
        except RewardFailureError as err:  # too many completions failed: a bug in the reward
            raise RewardError(str(err)) from err
        except torch.OutOfMemoryError as err:
            raise TrainingError(self._out_of_memory(err)) from err
        except RuntimeError as err:  # after OutOfMemoryError, a kind of it: sampling met NaN or infinite logits
            if not is_sampling_failure(err) or self.trainer is None:
                raise
            trainer = self.trainer
            raise TrainingError(
                self.diverged.sampling_failure(err, trainer.model, trainer.state, trainer.args)
            ) from err
        except OSError as err:
            if not checkpoints.is_write_failure(err):
                raise
            raise WriteError(write_failure(self.run, err)) from err
        finally:
            for reward in self.spec.rewards:
                getattr(reward, "close", lambda: None)()  # sandbox workers and the like
            loggers.finish(self.stop.received)  # failed, on its way out with an error; stopped by a signal; finished

    def _out_of_memory(self, err: BaseException) -> str:
        from grpo_ext.backends import hardware

        cfg, args = self.spec.cfg, self.spec.args
        checkpoint = checkpoints.latest_complete(self.run)
        if self.spec.method is SFT:
            step = self.trainer.state.global_step if self.trainer is not None else self.resumed_step
            return hardware.sft_out_of_memory(err, cfg, step, checkpoint)
        last_step = max((r["step"] for r in read_metrics(self.run) if "reward" in r), default=self.resumed_step)
        return hardware.out_of_memory(err, cfg, args, last_step, checkpoint)

    def finish(self, trainer: Any) -> Outcome:
        """After training: a run stopped by a signal raises ``Interrupted`` (its checkpoint saved); otherwise the
        final model is saved, and the main process draws the plots (GRPO), records how the run ended in
        ``status.json`` and writes its closing summary."""
        if self.stop.received is not None:
            raise self.stop.interrupted(trainer.state.global_step, self.run)
        from grpo_ext.backends import adapters

        adapters.save_final(trainer, self.run, self.spec.cfg.peft, self.model_path, self.spec.dtype)
        method = self.spec.method
        stopped = stopped_early(trainer.state, method.stop_key, self.sampler.stopped if self.sampler else None)
        if not processes.is_main():
            return Outcome(stopped, None)
        if method is GRPO:
            from grpo_ext.run.plots import plot_runs

            try:
                plot_runs([self.run.path], self.run.path)
            except Exception as err:  # noqa: BLE001 - a plot is not worth the run
                log.warning("could not draw the plots: %s", err)
        write_status(self.run, "stopped" if stopped else "ok", reason=stopped)
        return Outcome(stopped, summary(self.run, method, self.spec.cfg.task.name, stopped))


def summary(run: RunDir, method: Method, task: str, stopped: str | None) -> str:
    """A run's closing lines: what changed (GRPO: the steps and the reward, then the held-out accuracy; SFT: the
    held-out accuracy), the best model, the alerts, why it stopped early, and where it is."""
    records = read_metrics(run)
    change = eval_change(records)
    if method is GRPO:
        steps = [r for r in records if "reward" in r]
        if not steps:
            return f"run directory: {run} (no training step was logged)"
        first, last = steps[0], steps[-1]
        lines = [
            f"steps: {last['step']}  reward: {first['reward']:.3f} (step {first['step']}) -> {last['reward']:.3f}"
        ]
        lines += [change] if change else []
    else:
        evaluated = any("eval/accuracy" in r for r in records)
        unevaluated = "not evaluated (eval.during_training=false)"
        lines = [f"SFT {task}: {change or ('one evaluation only' if evaluated else unevaluated)}"]
    lines += [line for part in parts_evaluated(records) if (line := eval_change(records, part))]  # a mixture's
    best, alerts = best_line(run), alerts_text(run)
    lines += [best] if best else []
    lines += [f"alerts: {alerts}; what each said is in {method.log_file} and {run.alerts.name}"] if alerts else []
    lines += [stopped] if stopped else []
    if method is GRPO:
        lines.append(f"run directory: {run}")
    else:
        lines.append(f"model: {run.final_model}  (start GRPO from it: model.path={run.final_model})")
    return "\n".join(lines)


def write_failure(run: RunDir, err: OSError) -> str:
    """What to say when a write failed mid-run (a full disk, a lost mount): what is left, and how to go on."""
    removed = checkpoints.remove_incomplete(run)
    intact = checkpoints.latest_complete(run)
    return (
        f"writing to {run} failed: {err}. "
        + (f"Removed the incomplete {', '.join(p.name for p in removed)}. " if removed else "")
        + (f"The last complete checkpoint, {intact.name}, is intact: " if intact else "No checkpoint was complete: ")
        + "free space and run the same command to resume."
    )
