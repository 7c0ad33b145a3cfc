"""Supervised warm start on a task's references: ``python -m grpo_ext.sft task=arithmetic model=tiny sft.steps=600``.

TRL's SFTTrainer learns the task's ``reference`` completions (prompt-completion pairs: the loss is on the completion
only), with the same config groups as ``grpo_ext.train`` (task, model, hardware, logger) and the ``sft`` node for
its own knobs. The eval split is evaluated before the first step, every ``sft.eval_every`` steps and after the last
(greedy accuracy, as ``grpo_ext.evaluate``; ``eval.during_training=false``: never), the best model is kept as in
GRPO runs (``grpo_ext.run.best_model``), and the model is saved to ``final_model/`` in the output directory: start GRPO
from it with ``model.path=.../final_model``.
Checkpoints are written every ``sft.save_steps``; SIGTERM or Ctrl-C saves one and stops (as in training), and
rerunning the same command resumes from the newest one (``resume`` as in training: ``auto``, ``none`` or a
checkpoint to continue with new settings). ``status.json`` says how the run ended.
"""

from __future__ import annotations

import functools
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from grpo_ext.backends import adapters, hardware, models
from grpo_ext.config.schema import register_configs
from grpo_ext.config.trainer_node import RENAMED, with_current_names
from grpo_ext.evaluate import check_eval, check_stop_on_drop, run_eval
from grpo_ext.monitor import loggers
from grpo_ext.rewards import build_rewards
from grpo_ext.rewards.guard import RewardFailureError
from grpo_ext.run import checkpoints, processes
from grpo_ext.run.best_model import BestModel, best_line
from grpo_ext.run.records import alerts_text, eval_change, interrupted, read_metrics, stopped_early, write_status
from grpo_ext.tasks import build_task, check_columns

log = logging.getLogger("grpo_ext.sft")
register_configs()


def check_sft(node: Any, evaluating: bool) -> None:
    """Raise ``ValueError`` naming the ``sft`` key whose value is out of range, or that asks for what the
    evaluations (``evaluating``: ``eval.during_training``) cannot do."""
    for key in ("steps", "batch_size", "max_length", "save_steps", "logging_steps"):
        if getattr(node, key) < 1:
            raise ValueError(f"sft.{key} must be >= 1, got {getattr(node, key)}")
    if node.eval_every < 0:
        raise ValueError(f"sft.eval_every must be >= 0 (0: only before and after), got {node.eval_every}")
    check_stop_on_drop("sft", node.stop_on_drop, "sft.eval_every", node.eval_every, evaluating)
    if node.learning_rate <= 0:
        raise ValueError(f"sft.learning_rate must be > 0, got {node.learning_rate}")
    if not 0 <= node.warmup_fraction < 1:
        raise ValueError(f"sft.warmup_fraction must be in [0, 1), got {node.warmup_fraction}")


def sft_config(cfg: DictConfig, run_dir: Path) -> Any:
    """TRL's SFTConfig from the ``sft`` node, with placement and precision from the hardware profile."""
    from trl import SFTConfig

    node = cfg.sft
    kwargs = dict(
        output_dir=str(run_dir),
        max_steps=node.steps,
        per_device_train_batch_size=node.batch_size,
        learning_rate=node.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=int(node.warmup_fraction * node.steps),
        weight_decay=node.weight_decay,
        max_length=node.max_length,
        logging_steps=node.logging_steps,
        save_steps=node.save_steps,
        save_total_limit=2,
        seed=cfg.seed,
        use_cpu=cfg.trainer.use_cpu,
        bf16=cfg.trainer.bf16,
        fp16=cfg.trainer.fp16,
        **{name: cfg.trainer[name] for names in RENAMED for name in names if name in cfg.trainer},  # checkpointing
        report_to=["wandb"] if cfg.logger.name == "wandb" else [],
        run_name=f"sft-{cfg.task.name}-{cfg.model.name}",
        model_init_kwargs={"dtype": models.torch_dtype(cfg.model.dtype, cfg.hardware.dtype)},
        disable_tqdm=cfg.trainer.disable_tqdm,
        dataloader_num_workers=0,
    )
    return SFTConfig(**with_current_names(kwargs))


@hydra.main(version_base=None, config_path="pkg://grpo_ext.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    processes.quiet_unless_main()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    with checkpoints.one_run_at_a_time(run_dir):  # the same directory twice at once: the second stops here
        try:
            fine_tune(hardware.resolve_auto(cfg, list(hydra_cfg.overrides.task)), run_dir)
        except SystemExit as stop:
            if stop.code not in (None, 0):
                write_status(run_dir, "interrupted" if interrupted(stop.code) else "failed", str(stop.code))
            raise
        except Exception as err:
            write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
            raise


def fine_tune(cfg: DictConfig, run_dir: Path) -> None:
    """Train the model of ``cfg`` on its task's references, writing everything to ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        check_sft(cfg.sft, cfg.eval.during_training)
        models.check(cfg.model)
        check_eval(cfg.eval)
        hardware.check_device(cfg.hardware)
        hardware.check_precision(cfg)
        adapters.check(cfg.peft, cfg.hardware.device)
        rewards, _ = build_rewards(OmegaConf.to_container(cfg.task.rewards, resolve=True))
        loggers.check(cfg.logger)
        args = sft_config(cfg, run_dir)
        processes.check_one_run_dir(args, run_dir)  # several processes (torchrun): all in one directory
        processes.check_evaluation(cfg.eval.during_training, args)
        resume = checkpoints.resume_point(cfg.resume, run_dir)  # auto, none or a checkpoint, as in training
        if resume and cfg.resume == "auto":  # the run in run_dir goes on, with the settings it was trained with
            checkpoints.check_same_run(run_dir, cfg, checkpoints.SFT_RESUMABLE, resume, "grpo_ext.sft")
        if resume:  # whatever else changes, its weights must load
            adapters.check_resume(resume, cfg.peft)
        if processes.is_main():
            checkpoints.save_config(cfg, run_dir, "grpo_ext.sft")
    except ValueError as err:
        sys.exit(f"config error: {err}")
    try:
        splits = build_task(cfg.task)
        if cfg.eval.during_training:  # the held-out evaluations score with the first reward
            check_columns(splits.eval, rewards[:1], f"{cfg.task.name} eval split")
        with processes.main_first():  # a model built here is built once, then read by the other processes
            model_path = models.resolve(cfg.model)
        if resume:  # a whole model in the checkpoint loads only into a model of its shape
            models.check_checkpoint_shape(resume, model_path)
    except ValueError as err:
        sys.exit(f"task error: {err}")
    except models.ModelUnavailableError as err:
        sys.exit(f"model error: {err}")
    try:
        with_reference = rows_with_reference(splits.train, cfg.task.name)
    except ValueError as err:
        sys.exit(f"task error: {err}")
    train = with_reference.map(
        lambda row: {"completion": [{"role": "assistant", "content": row["reference"]}]},
        remove_columns=[c for c in splits.train.column_names if c != "prompt"],
    )
    tags = [cfg.task.name, cfg.model.name, "sft"]
    loggers.start(cfg.logger, args, tags, None, OmegaConf.to_container(cfg, resolve=True), job_type="sft")
    import torch
    from trl import SFTTrainer  # here, not at the top: seconds to import, and --help should not wait

    from grpo_ext.monitor.callbacks import (
        DivergedError,
        EvalCallback,
        MetricsFile,
        OptimizerSettingsOnResume,
        StopOnDivergence,
        StopOnSignal,
    )
    from grpo_ext.monitor.health import WarnOnEvalDrop

    dtype = models.torch_dtype(cfg.model.dtype, cfg.hardware.dtype)
    stop, metrics = StopOnSignal(), MetricsFile(run_dir)
    trainer = SFTTrainer(
        model=model_path,
        args=args,
        train_dataset=train,
        callbacks=[metrics, stop, StopOnDivergence(run_dir, "sft.learning_rate"), OptimizerSettingsOnResume("sft.")],
        peft_config=adapters.lora_config(cfg.peft),
        quantization_config=adapters.quantization_config(cfg.peft, dtype),
    )
    adapters.keep_4bit_layers_trainable(trainer.model)  # QLoRA on the CPU: evaluating must not break training
    try:
        check_truncation(len(trainer.train_dataset), len(train), cfg.sft.max_length)
    except ValueError as err:
        loggers.finish()
        sys.exit(f"config error: {err}")
    main = processes.is_main()  # the one process that evaluates and reports; the others only train
    if main:  # the steps after the checkpoint are trained (and logged) again; without one, every step is
        resumed_step = checkpoints.checkpoint_step(resume) if resume else None
        checkpoints.discard_after(run_dir, resumed_step or 0)
        checkpoints.truncate_metrics(run_dir, resumed_step)
    if cfg.eval.during_training:  # held-out greedy accuracy: before, every sft.eval_every steps, after
        evaluate = functools.partial(run_eval, dataset=splits.eval, reward=rewards[0], cfg=cfg)
        metric, adapter = f"eval/{cfg.eval.best_metric}", cfg.peft.name != "none"
        keep_best = cfg.eval.keep_best and main  # the process that evaluates; the others hear if the run stops
        best = BestModel(run_dir, trainer.save_model, adapter, metric) if keep_best else None
        drop = WarnOnEvalDrop(run_dir, "sft.learning_rate", "sft.stop_on_drop", cfg.sft.stop_on_drop)
        trainer.add_callback(EvalCallback(metrics, evaluate, cfg.sft.eval_every, best, drop))
    try:
        with stop.installed():  # SIGTERM or Ctrl-C: a checkpoint after the step under way, then stop
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError as err:
        sys.exit(_out_of_memory(err, cfg, trainer.state.global_step, checkpoints.latest_complete(run_dir)))
    except (DivergedError, RewardFailureError) as err:  # RewardFailureError: the evaluations' reward is broken
        sys.exit(f"error: {err}")
    finally:
        for reward in rewards:
            getattr(reward, "close", lambda: None)()
        loggers.finish(stop.received)
    if stop.received is not None:
        stop.exit(trainer.state.global_step, run_dir)
    adapters.save_final(trainer, run_dir, cfg.peft, model_path, dtype)
    if not main:
        return
    stopped = stopped_early(trainer.state, "sft.stop_on_drop")
    write_status(run_dir, "stopped" if stopped else "ok", reason=stopped)
    print(_summary(run_dir, cfg.task.name, stopped))


def rows_with_reference(dataset: Any, task: str) -> Any:
    """The rows of ``dataset`` that have a reference completion to learn; ``ValueError`` when none has, a warning
    counting the others when some lack one (a file's task without ``task.reference_column`` has none)."""
    has = [bool(reference and reference.strip()) for reference in dataset["reference"]]
    if not any(has):
        raise ValueError(
            f"no row of the {task} train split has a reference completion, so SFT has nothing to learn: for a task "
            "read from a file, task.reference_column names the column holding them"
        )
    if not all(has):
        log.warning("%d of %d %s train rows have no reference completion; SFT learns the other %d",
                    has.count(False), len(has), task, sum(has))  # fmt: skip
        return dataset.select([i for i, ok in enumerate(has) if ok])
    return dataset


def check_truncation(kept: int, pairs: int, max_length: int) -> None:
    """Raise ``ValueError`` when TRL kept none of the ``pairs`` training pairs (it drops those whose completion
    ``sft.max_length`` cuts away entirely: nothing is left to learn from), and warn when it dropped some."""
    if kept == 0:
        raise ValueError(
            f"sft.max_length={max_length} cuts the completion away entirely from every one of the {pairs} training "
            "pairs (the prompt alone fills it): raise sft.max_length"
        )
    if kept < pairs:
        log.warning(
            "sft.max_length=%d cuts the completion away entirely from %d of %d training pairs; TRL drops them",
            max_length, pairs - kept, pairs,
        )  # fmt: skip


def _out_of_memory(err: BaseException, cfg: DictConfig, last_step: int, checkpoint: Path | None) -> str:
    """The message for an SFT run that ran out of GPU memory: where, what would hold less, the checkpoint."""
    if hardware.in_evaluation(err):
        where = f"the held-out evaluation after SFT step {last_step}"
        return hardware.out_of_memory_message(err, where, [hardware.smaller_eval_batch(cfg)], [], checkpoint)
    other = [f"sft.batch_size={max(1, cfg.sft.batch_size // 2)} (references a step)"]
    other.append(f"sft.max_length={max(1, cfg.sft.max_length // 2)} (tokens a pair; longer ones are cut)")
    if cfg.peft.name == "none":
        other.insert(0, hardware.ADAPTERS)
    checkpointing = any(cfg.trainer.get(name) for name in ("gradient_checkpointing", "activation_checkpointing"))
    same = [] if checkpointing else [hardware.CHECKPOINTING]
    return hardware.out_of_memory_message(err, f"SFT step {last_step + 1}", same, other, checkpoint)


def _summary(run_dir: Path, task: str, stopped: str | None = None) -> str:
    """The closing lines: the held-out accuracy before and after, the best model, where the model is."""
    records = read_metrics(run_dir)
    evaluated = any("eval/accuracy" in r for r in records)
    unevaluated = "not evaluated (eval.during_training=false)"
    change = eval_change(records) or ("one evaluation only" if evaluated else unevaluated)
    best, final, alerts = best_line(run_dir), run_dir / "final_model", alerts_text(run_dir)
    return (
        f"SFT {task}: {change}\n"
        + (f"{best}\n" if best else "")
        + (f"alerts: {alerts}; what each said is in sft.log and alerts.jsonl\n" if alerts else "")
        + (f"{stopped}\n" if stopped else "")
        + f"model: {final}  (start GRPO from it: model.path={final})"
    )


if __name__ == "__main__":
    main()
