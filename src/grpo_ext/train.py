"""GRPO training: ``python -m grpo_ext.train task=arithmetic model=tiny hardware=cpu logger=none``.

The whole run, top to bottom: Hydra composes the config (schemas reject typos), everything that needs no model or
data is validated (TRL's GRPOConfig checks, task and reward names, reward parameters, the resume point), then the
task's dataset is built and checked against what the rewards read, the model is resolved to a local directory, and
TRL's GRPOTrainer trains, resuming from the run directory's newest complete checkpoint when there is one. The run
directory (Hydra's output directory) receives ``config.yaml`` (resolved), ``metrics.jsonl``, checkpoints,
``final_model/`` and plots. SIGTERM or Ctrl-C saves a checkpoint and stops; rerunning the same command resumes.
TRL (and transformers under it) is imported only where training starts, so that ``--help``, ``--cfg`` and config
errors come in about a second.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from grpo_ext.backends import adapters, hardware, models, vllm_server
from grpo_ext.config.schema import make_grpo_config, register_configs
from grpo_ext.evaluate import check_eval, first_rows, run_eval
from grpo_ext.monitor import loggers
from grpo_ext.plot import plot_runs
from grpo_ext.rewards import build_rewards
from grpo_ext.rewards.guard import RewardFailureError, guard_all, trl_none_warning_once
from grpo_ext.run import checkpoints, processes
from grpo_ext.run.best_model import BestModel, best_line
from grpo_ext.run.records import alerts_text, eval_change, interrupted, read_metrics, stopped_early, write_status
from grpo_ext.summarize import final_value
from grpo_ext.tasks import build_task, check_columns, get_task

log = logging.getLogger("grpo_ext.train")
register_configs()


@hydra.main(version_base=None, config_path="pkg://grpo_ext.conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """One run, or one job of a sweep (``-m``): a job that fails is recorded and reported, and the sweep goes on.

    Returns the run's final ``objective`` (what an Optuna sweep maximizes); NaN for a failed job.
    """
    hydra_cfg = HydraConfig.get()
    processes.quiet_unless_main()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    cfg = hardware.resolve_auto(cfg, list(hydra_cfg.overrides.task))  # hardware=auto: the profile for this machine
    if sweeping:  # each job of a sweep its own vLLM ports, so that jobs running side by side never collide
        OmegaConf.update(cfg, "hardware.vllm.port", cfg.hardware.vllm.port + hydra_cfg.job.num)
        OmegaConf.update(cfg, "hardware.vllm.group_port", cfg.hardware.vllm.group_port + hydra_cfg.job.num)
    if cfg.trainer.run_name is None:  # the W&B run's name: what was chosen, and the overrides that differ
        overrides = list(hydra_cfg.overrides.task)
        if sweeping:  # only the swept keys: the others are the same for every job of the sweep
            swept = swept_keys(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
            overrides = [o for o in overrides if o.split("=", 1)[0] in swept]
        OmegaConf.update(cfg, "trainer.run_name", run_name(cfg, overrides))
    with checkpoints.one_run_at_a_time(run_dir):  # the same directory twice at once: the second stops here
        try:
            stopped = train(cfg, run_dir, group=Path(hydra_cfg.sweep.dir).name if sweeping else None)
        except SystemExit as stop:
            if stop.code in (None, 0):
                raise
            signalled = interrupted(stop.code)  # a signal stops the whole sweep
            write_status(run_dir, "interrupted" if signalled else "failed", str(stop.code))
            if signalled or not sweeping:
                raise
            log.error("job %s failed, the sweep goes on: %s", hydra_cfg.job.num, stop.code)
            return math.nan
        except Exception as err:
            write_status(run_dir, "failed", f"{type(err).__name__}: {err}")
            if not sweeping:
                raise
            log.exception("job %s failed, the sweep goes on", hydra_cfg.job.num)
            return math.nan
        if processes.is_main():
            write_status(run_dir, "stopped" if stopped else "ok", reason=stopped)
        return objective(run_dir, cfg.objective)


def train(cfg: DictConfig, run_dir: Path, group: str | None = None) -> str | None:
    """Run GRPO as ``cfg`` describes, writing everything to ``run_dir``; ``group`` names the sweep, if any. Returns
    why the run stopped before its last step (``eval.stop_on_drop``), None when it ran to its end."""
    run_dir.mkdir(parents=True, exist_ok=True)

    # 1. Validate everything that needs no model and no data, so that a mistake costs seconds.
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ValueError(f"these keys need a value, on the command line (KEY=VALUE): {', '.join(missing)}")
        get_task(cfg.task.name)
        models.check(cfg.model)
        check_eval(cfg.eval)
        hardware.check_launch(cfg.hardware)
        hardware.check_device(cfg.hardware)
        hardware.check_precision(cfg)
        adapters.check(cfg.peft, cfg.hardware.device)
        reward_funcs, reward_weights = build_rewards(OmegaConf.to_container(cfg.task.rewards, resolve=True))
        args = make_grpo_config(cfg, str(run_dir), reward_weights)
        rollout = hardware.rollout_func(cfg.hardware, args.use_vllm, cfg.peft.name)  # None: TRL's generate or vLLM
        resume_from = checkpoints.resume_point(cfg.resume, run_dir)
        if resume_from and cfg.resume == "auto":  # the run in run_dir goes on, with the settings it was trained with
            checkpoints.check_same_run(run_dir, cfg, checkpoints.TRAIN_RESUMABLE, resume_from, "grpo_ext.train")
        if resume_from:  # whatever else changes, its weights must load: an adapter of the same shape, or none
            adapters.check_resume(resume_from, cfg.peft)
        guarded = guard_all(reward_funcs, cfg.reward_failure_limit)
        loggers.check(cfg.logger)
        processes.check_one_run_dir(args, run_dir)  # with several processes (one per GPU), all in one directory
        processes.check_evaluation(cfg.eval.during_training, args)
        if processes.is_main():
            checkpoints.save_config(cfg, run_dir, "grpo_ext.train")
    except ValueError as err:
        sys.exit(f"config error: {err}")
    except OSError as err:
        sys.exit(f"error: cannot write to the run directory {run_dir}: {err}")

    # 2. Data: the task's splits, checked against what the rewards read.
    try:
        splits = build_task(cfg.task)
        check_columns(splits.train, reward_funcs, f"{cfg.task.name} train split")
        check_columns(splits.eval, reward_funcs, f"{cfg.task.name} eval split")
    except ValueError as err:
        sys.exit(f"task error: {err}")
    eval_rows = first_rows(splits.eval, cfg.eval.size)  # what our evaluations and TRL's (eval_strategy) score
    log.info("task %s: %d train / %d eval prompts", cfg.task.name, len(splits.train), len(eval_rows))
    if cfg.eval.size > len(splits.eval):
        log.warning("eval.size=%d: the eval split has only %d prompts (task.eval_size)", cfg.eval.size, len(eval_rows))

    # 3. Model: a local directory (built, cached, or downloaded), loaded by TRL from its path.
    try:
        with processes.main_first():  # a model built here is built once, then read by the other processes
            model_path = models.resolve(cfg.model)
        if resume_from:  # a whole model in the checkpoint loads only into a model of its shape
            models.check_checkpoint_shape(resume_from, model_path)
    except models.ModelUnavailableError as err:
        sys.exit(f"model error: {err}")
    log.info("model %s from %s", cfg.model.name, model_path)

    # 4. Train with TRL, resuming where the run directory says; keep the final model beside the metrics.
    resumed_step = checkpoints.checkpoint_step(resume_from) if resume_from else 0
    if processes.is_main():
        checkpoints.discard_after(run_dir, resumed_step)
        checkpoints.truncate_metrics(run_dir, resumed_step if resume_from else None)  # None: all is logged anew
    if resume_from:
        log.info("resuming from %s (step %d)", resume_from, resumed_step)
    tags = [cfg.task.name, cfg.model.name, cfg.algorithm.name]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    loggers.start(cfg.logger, args, tags, group, resolved)  # W&B, when it can start: a run never fails for it
    import torch
    from trl import GRPOTrainer  # here, not at the top: TRL and transformers take seconds to import

    # TRL 1.16 reads model.is_gradient_checkpointing, which transformers 5.2x renamed and warns about at every step;
    # nothing a user could act on (the renamed arguments themselves: trainer_node.RENAMED)
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)

    from grpo_ext.monitor import callbacks, health

    stop, metrics = callbacks.StopOnSignal(), callbacks.MetricsFile(run_dir)
    # the run's record; signals; NaN weights refused, and a NaN step stopped before it is saved; steps that teach
    # nothing and completions cut off named; a resumed run's learning rate its own, not its checkpoint's; a hook leak
    # in transformers worked around
    diverged = callbacks.StopOnDivergence(run_dir, "trainer.learning_rate")
    ours = [metrics, stop, diverged]
    ours += [health.WarnWithoutSignal(), health.WarnOnTruncation()]
    ours += [callbacks.OptimizerSettingsOnResume("trainer."), callbacks.OneInputGradHook()]
    dtype = models.torch_dtype(cfg.model.dtype, cfg.hardware.dtype)
    try:  # a vLLM server of our own, when the profile says so, lives exactly as long as the trainer
        with vllm_server.for_run(cfg, model_path, run_dir), stop.installed(), trl_none_warning_once():
            trainer = GRPOTrainer(
                model=model_path,
                reward_funcs=guarded,
                args=args,
                train_dataset=splits.train,
                eval_dataset=eval_rows,
                callbacks=ours,
                peft_config=adapters.lora_config(cfg.peft),
                quantization_config=adapters.quantization_config(cfg.peft, dtype),
                rollout_func=rollout,
            )
            adapters.keep_4bit_layers_trainable(trainer.model)  # QLoRA on the CPU: evaluating must not break training
            trainer.add_callback(callbacks.CompletionsTable(trainer, cfg.logger.completions_every))
            if cfg.eval.during_training:  # held-out greedy accuracy before step 1, every eval.every steps, at the end
                evaluate = functools.partial(run_eval, dataset=eval_rows, reward=reward_funcs[0], cfg=cfg)
                keep_best = cfg.eval.keep_best and trainer.is_world_process_zero()  # the process that evaluates
                metric, adapter = f"eval/{cfg.eval.best_metric}", cfg.peft.name != "none"
                best = BestModel(run_dir, trainer.save_model, adapter, metric) if keep_best else None
                # a collapse, said while it costs (and ended there, with eval.stop_on_drop)
                drop = health.WarnOnEvalDrop(
                    run_dir, "trainer.learning_rate", "eval.stop_on_drop", cfg.eval.stop_on_drop
                )
                trainer.add_callback(callbacks.EvalCallback(metrics, evaluate, cfg.eval.every, best, drop))
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    except vllm_server.ServerError as err:
        sys.exit(f"vLLM server error: {err}")
    except (RewardFailureError, callbacks.DivergedError) as err:
        sys.exit(f"error: {err}")
    except torch.OutOfMemoryError as err:
        last_step = max((r["step"] for r in read_metrics(run_dir) if "reward" in r), default=resumed_step)
        sys.exit(hardware.out_of_memory(err, cfg, args, last_step, checkpoints.latest_complete(run_dir)))
    except RuntimeError as err:  # after OutOfMemoryError, a kind of it: sampling met NaN or infinite logits
        if not callbacks.is_sampling_failure(err):
            raise
        sys.exit(f"error: {diverged.sampling_failure(err, trainer.model, trainer.state, args)}")
    except OSError as err:
        if not checkpoints.is_write_failure(err):
            raise
        sys.exit(_write_failure(run_dir, err))
    finally:
        for reward in reward_funcs:
            getattr(reward, "close", lambda: None)()  # sandbox workers and the like
        loggers.finish(stop.received)  # failed, on its way out with an error; stopped by a signal; finished
    if stop.received is not None:  # a checkpoint was saved: say where, and exit with 128 + the signal
        stop.exit(trainer.state.global_step, run_dir)
    adapters.save_final(trainer, run_dir, cfg.peft, model_path, dtype)
    stopped = stopped_early(trainer.state, "eval.stop_on_drop")
    if not processes.is_main():
        return stopped
    try:
        plot_runs([run_dir], run_dir)
    except Exception as err:  # noqa: BLE001 - a plot is not worth the run
        log.warning("could not draw the plots: %s", err)
    print(_summary(run_dir, stopped))
    return stopped


def objective(run_dir: Path, key: str) -> float:
    """The run's final ``key`` (the mean of its last 5 logged values); NaN, with a warning naming the keys that
    were logged, when it never was (a misspelled ``objective`` would otherwise give an Optuna sweep only NaNs)."""
    records = read_metrics(run_dir)
    value = final_value(records, key)
    if value is None:
        logged = ", ".join(sorted({k for r in records for k in r} - {"step", "wall_time"})) or "none"
        log.warning("objective=%s was never logged, so the run returns NaN; logged keys: %s", key, logged)
        return math.nan
    return value


def swept_keys(multirun_yaml: Path) -> set[str]:
    """The keys a sweep varies (``key=a,b``, ``key=range(...)``...), from the sweep's ``multirun.yaml``."""
    if not multirun_yaml.exists():
        return set()
    sweep = OmegaConf.load(multirun_yaml).hydra.overrides.task
    return {o.split("=", 1)[0] for o in sweep if "," in o.split("=", 1)[-1] or "(" in o.split("=", 1)[-1]}


def run_name(cfg: DictConfig, overrides: list[str]) -> str:
    """``task-model-hardware``, then the command-line overrides other than those choices and the logger's."""
    chosen = ("task=", "model=", "hardware=", "logger", "hydra.")
    extra = [o for o in overrides if not o.startswith(chosen)]
    return "-".join([cfg.task.name, cfg.model.name, cfg.hardware.name, *extra])[:128]


def _write_failure(run_dir: Path, err: OSError) -> str:
    """The message for a write that failed mid-run (full disk, lost mount): what is left and how to go on."""
    removed = checkpoints.remove_incomplete(run_dir)
    intact = checkpoints.latest_complete(run_dir)
    return (
        f"error: writing to {run_dir} failed: {err}. "
        + (f"Removed the incomplete {', '.join(p.name for p in removed)}. " if removed else "")
        + (f"The last complete checkpoint, {intact.name}, is intact: " if intact else "No checkpoint was complete: ")
        + "free space and run the same command to resume."
    )


def _summary(run_dir: Path, stopped: str | None) -> str:
    records = [r for r in read_metrics(run_dir) if "reward" in r]
    if not records:
        return f"run directory: {run_dir} (no training step was logged)"
    first, last = records[0], records[-1]
    change, best, alerts = eval_change(read_metrics(run_dir)), best_line(run_dir), alerts_text(run_dir)
    return (
        f"steps: {last['step']}  reward: {first['reward']:.3f} (step {first['step']}) -> {last['reward']:.3f}\n"
        + (f"{change}\n" if change else "")
        + (f"{best}\n" if best else "")
        + (f"alerts: {alerts}; what each said is in train.log and alerts.jsonl\n" if alerts else "")
        + (f"{stopped}\n" if stopped else "")
        + f"run directory: {run_dir}"
    )


if __name__ == "__main__":
    main()
