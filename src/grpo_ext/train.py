"""GRPO training: ``python -m grpo_ext.train task=arithmetic model=tiny hardware=cpu logger=none``.

The whole run, top to bottom: Hydra composes the config (schemas reject typos); everything that needs no model and
no data is validated in one pass (``config.validate``: TRL's GRPOConfig, the rewards, the hardware, the resume
point); the task's splits are built and checked against what the rewards read; the model is resolved to a local
directory; TRL's GRPOTrainer trains, resuming from the run directory's newest complete checkpoint when there is one.
The run directory (Hydra's output directory) receives ``config.yaml``, ``metrics.jsonl``, checkpoints,
``final_model/``, the best model and plots (``run.rundir``). SIGTERM or Ctrl-C saves a checkpoint and stops;
rerunning the same command resumes. TRL (and transformers under it) is imported only where training starts, so
that ``--help``, ``--cfg`` and config errors come in about a second.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from grpo_ext.backends import adapters, models, vllm_server
from grpo_ext.config import validate
from grpo_ext.config.grpo import generation_batches
from grpo_ext.config.schema import register_configs
from grpo_ext.errors import ConfigError, TaskError, raised_as
from grpo_ext.monitor.heldout import first_rows
from grpo_ext.run import entry, processes
from grpo_ext.run import sampler as prompt_sampler
from grpo_ext.run.lifecycle import Lifecycle
from grpo_ext.run.rundir import RunDir
from grpo_ext.tasks import build_task, check_columns, mix

log = logging.getLogger("grpo_ext.train")
register_configs()


@hydra.main(version_base=None, config_path="pkg://grpo_ext.conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One run, or one job of a sweep (``-m``): a job that fails is recorded and reported, and the sweep goes on.

    Returns the run's final ``objective`` (what an Optuna sweep maximizes); NaN for a failed job.
    """
    return entry.run_command(_job, cfg)


def _job(cfg: DictConfig, run: RunDir, group: str | None) -> float:
    train(cfg, run, group)
    return entry.objective(run, cfg.objective)


def train(cfg: DictConfig, run_dir: Path | RunDir, group: str | None = None) -> str | None:
    """Run GRPO as ``cfg`` describes, writing everything to ``run_dir``; ``group`` names the sweep, if any. Returns
    why the run stopped before its last step (``eval.stop_on_drop``), None when it ran to its end."""
    run = RunDir(run_dir)
    run.path.mkdir(parents=True, exist_ok=True)

    # 1. Validate everything that needs no model and no data, so that a mistake costs seconds.
    spec = validate.grpo_run(cfg, run)
    cfg = spec.cfg

    # 2. Data: the task's splits, checked against what the rewards read.
    with raised_as(TaskError):
        splits = build_task(cfg.task)
        check_columns(splits.train, spec.rewards, f"{cfg.task.name} train split")
        check_columns(splits.eval, spec.rewards, f"{cfg.task.name} eval split")
    # Which prompts each generation batch takes: TRL's shuffle of the split (a mixture's parts in their shares), or
    # a sampler's draws as the run goes, from what it has seen of them (run.sampler)
    per_batch, batches = generation_batches(spec.args, len(splits.train))
    with raised_as(ConfigError):
        sampler = prompt_sampler.for_run(cfg, splits.train, per_batch, spec.resume_from)
    if cfg.task.name == "mix" and sampler is None:
        splits.train = mix.scheduled(splits.train, cfg.task, per_batch, batches, cfg.seed)
    eval_rows = first_rows(splits.eval, cfg.eval.size)  # what our evaluations and TRL's (eval_strategy) score
    log.info("task %s: %d train / %d eval prompts", cfg.task.name, len(splits.train), len(eval_rows))
    if cfg.eval.size > len(splits.eval):
        log.warning("eval.size=%d: the eval split has only %d prompts (task.eval_size)", cfg.eval.size, len(eval_rows))

    # 3. Model: a local directory (built, cached, or downloaded), loaded by TRL from its path.
    with processes.main_first():  # a model built here is built once, then read by the other processes
        model_path = models.resolve(cfg.model)
    if spec.resume_from:  # a whole model in the checkpoint loads only into a model of its shape
        models.check_checkpoint_shape(spec.resume_from, model_path)
    log.info("model %s from %s", cfg.model.name, model_path)

    # 4. Train with TRL, resuming where the run directory says; keep the final model beside the metrics.
    life = Lifecycle(spec, model_path, group)
    from trl import GRPOTrainer  # here, not at the top: TRL and transformers take seconds to import

    with life.training(vllm_server.for_run(cfg, model_path, run.path)):  # a vLLM server lives as long as the trainer
        trainer = GRPOTrainer(
            model=model_path,
            reward_funcs=prompt_sampler.observing(spec.trained_rewards, sampler),
            args=spec.args,
            train_dataset=sampler.dataset() if sampler else splits.train,
            eval_dataset=eval_rows,
            callbacks=life.callbacks(sampler),
            peft_config=adapters.lora_config(cfg.peft),
            quantization_config=adapters.quantization_config(cfg.peft, spec.dtype),
            rollout_func=spec.rollout,
        )
        life.watch(trainer, eval_rows, spec.eval_every)
        trainer.train(resume_from_checkpoint=life.resume_from)
    outcome = life.finish(trainer)
    if outcome.summary:
        print(outcome.summary)
    return outcome.stopped


if __name__ == "__main__":
    main()
