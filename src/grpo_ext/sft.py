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

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from grpo_ext.backends import adapters, models
from grpo_ext.config import validate
from grpo_ext.config.schema import register_configs
from grpo_ext.errors import ConfigError, TaskError, raised_as
from grpo_ext.monitor.heldout import scorers
from grpo_ext.run import entry, processes
from grpo_ext.run.lifecycle import Lifecycle
from grpo_ext.run.rundir import RunDir
from grpo_ext.tasks import build_task, check_columns, mix

log = logging.getLogger("grpo_ext.sft")
register_configs()


@hydra.main(version_base=None, config_path="pkg://grpo_ext.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    entry.run_command(lambda cfg, run, group: fine_tune(cfg, run, group), cfg)


def fine_tune(cfg: DictConfig, run_dir: Path | RunDir, group: str | None = None) -> str | None:
    """Train the model of ``cfg`` on its task's references, writing everything to ``run_dir``; ``group`` names the
    sweep, if any. Returns why it stopped before its last step (``sft.stop_on_drop``), None when it ran to its end."""
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)

    # 1. Validate everything that needs no model and no data.
    spec = validate.sft_run(cfg, run)
    cfg = spec.cfg

    # 2. Data: the references to learn (as prompt-completion pairs), and the eval split the evaluations score.
    with raised_as(TaskError):
        splits = build_task(cfg.task)
        if cfg.eval.during_training:  # the held-out evaluations score with the first reward
            check_columns(splits.eval, scorers(spec.rewards), f"{cfg.task.name} eval split")

    # 3. Model: a local directory (built, cached, or downloaded), loaded by TRL from its path.
    with processes.main_first():  # a model built here is built once, then read by the other processes
        model_path = models.resolve(cfg.model)
    if spec.resume_from:  # a whole model in the checkpoint loads only into a model of its shape
        models.check_checkpoint_shape(spec.resume_from, model_path)
    with raised_as(TaskError):
        with_reference = rows_with_reference(splits.train, cfg.task.name)
    if cfg.task.name == "mix":  # a mixture's references in the parts' shares of the weights, step by step
        with_reference = mix.scheduled(with_reference, cfg.task, cfg.sft.batch_size, cfg.sft.steps, cfg.seed)
    pairs = with_reference.map(
        lambda row: {"completion": [{"role": "assistant", "content": row["reference"]}]},
        remove_columns=[c for c in splits.train.column_names if c != "prompt"],
    )

    # 4. Train with TRL's SFTTrainer, resuming where the run directory says.
    life = Lifecycle(spec, model_path, group)
    from trl import SFTTrainer  # here, not at the top: seconds to import, and --help should not wait

    with life.training():
        trainer = SFTTrainer(
            model=model_path,
            args=spec.args,
            train_dataset=pairs,
            callbacks=life.callbacks(),
            peft_config=adapters.lora_config(cfg.peft),
            quantization_config=adapters.quantization_config(cfg.peft, spec.dtype),
        )
        with raised_as(ConfigError):
            check_truncation(len(trainer.train_dataset), len(pairs), cfg.sft.max_length)  # type: ignore[arg-type]
        life.watch(trainer, splits.eval, spec.eval_every)
        trainer.train(resume_from_checkpoint=life.resume_from)
    outcome = life.finish(trainer)
    if outcome.summary:
        print(outcome.summary)
    return outcome.stopped


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


if __name__ == "__main__":
    main()
