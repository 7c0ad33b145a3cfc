"""The one validation pass of a run: from the composed config to a ``RunSpec``, the typed, frozen description that
the rest of the run reads as attributes.

Everything that needs no model and no data is checked here, so that a mistake costs seconds: our schemas' values
(each check names its key and what is allowed), the rewards and their parameters, TRL's own arguments, the hardware
and the generation path, the resume point and whether the run it continues was trained with the same settings, the
processes of a launch. A failure is a ``ConfigError``; the run directory receives the resolved ``config.yaml`` only
once all of it passed. The config is read-only from here on.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpo_ext.backends import adapters, hardware, models
from grpo_ext.config.schema import check_eval, check_sampler
from grpo_ext.errors import ConfigError, WriteError, raised_as
from grpo_ext.monitor import loggers
from grpo_ext.run import checkpoints, processes
from grpo_ext.run.lifecycle import GRPO, SFT, Method
from grpo_ext.run.rundir import RunDir
from grpo_ext.tasks import get_task, mix, task_rewards


@dataclass(frozen=True)
class RunSpec:
    """A validated run.

    Attributes:
        cfg: the composed config, read-only.
        run: its run directory.
        method: GRPO or SFT, and what differs between them.
        args: the TRL trainer's arguments (``trl.GRPOConfig`` or ``trl.SFTConfig``).
        rewards: the task's rewards, built (the held-out evaluations score with the first).
        weights: their weights.
        trained_rewards: what the trainer calls: GRPO's rewards guarded (``rewards.guard``); empty for SFT.
        resume_from: the checkpoint the run resumes from, if any.
        rollout: GRPO's ``rollout_func`` (``None``: TRL's own generate, or vLLM).
        dtype: the dtype the model is loaded in.
        eval_every: held-out evaluations between steps every this many steps (0: before and after only).
    """

    cfg: DictConfig
    run: RunDir
    method: Method
    args: Any
    rewards: tuple[Callable[..., Any], ...]
    weights: tuple[float, ...]
    trained_rewards: tuple[Callable[..., Any], ...]
    resume_from: Path | None
    rollout: Any
    dtype: str
    eval_every: int


def grpo_run(cfg: DictConfig, run: RunDir) -> RunSpec:
    """Validate a GRPO run (``grpo_ext.train``) of ``cfg`` into ``run``; ``ConfigError`` naming the key otherwise."""
    from grpo_ext.config.grpo import make_grpo_config
    from grpo_ext.rewards.guard import guard_all

    cfg = copy.deepcopy(cfg)
    with raised_as(ConfigError):
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise ValueError(f"these keys need a value, on the command line (KEY=VALUE): {', '.join(missing)}")
        get_task(cfg.task.name)
        models.check(cfg.model)
        check_eval(cfg.eval)
        hardware.check_launch(cfg.hardware)
        _check_placement(cfg)
        expand_mixture(cfg)
        rewards, weights = task_rewards(cfg.task)
        args = make_grpo_config(cfg, str(run), weights)
        rollout = hardware.rollout_func(cfg.hardware, args.use_vllm, cfg.peft.name)  # None: TRL's generate or vLLM
        resume_from = _resume_point(cfg, run, GRPO)
        _check_sampler(cfg, args, resume_from)
        guarded = guard_all(rewards, cfg.reward_failure_limit)
        loggers.check(cfg.logger)
        _check_processes(cfg, run, args)
    return _recorded(cfg, run, GRPO, args, rewards, weights, guarded, resume_from, rollout, cfg.eval.every)


def sft_run(cfg: DictConfig, run: RunDir) -> RunSpec:
    """Validate a warm start (``grpo_ext.sft``) of ``cfg`` into ``run``; ``ConfigError`` naming the key otherwise."""
    from grpo_ext.config.sft import check_sft, sft_config

    cfg = copy.deepcopy(cfg)
    with raised_as(ConfigError):
        check_sft(cfg.sft, cfg.eval.during_training)
        models.check(cfg.model)
        check_eval(cfg.eval)
        _check_placement(cfg)
        expand_mixture(cfg)
        rewards, weights = task_rewards(cfg.task)
        loggers.check(cfg.logger)
        args = sft_config(cfg, run.path)
        _check_processes(cfg, run, args)
        resume_from = _resume_point(cfg, run, SFT)
    return _recorded(cfg, run, SFT, args, rewards, weights, [], resume_from, None, cfg.sft.eval_every)


def expand_mixture(cfg: DictConfig) -> None:
    """A mixture's parts, each with its task's whole config under its own settings, as the run records them (and
    its completion length, when not set, the longest part's)."""
    if cfg.task.name == "mix":
        mix.complete(cfg.task)


def _check_placement(cfg: DictConfig) -> None:
    """The device, the precision on it, and adapters that it can train."""
    hardware.check_device(cfg.hardware)
    hardware.check_precision(cfg)
    adapters.check(cfg.peft, cfg.hardware.device)


def _resume_point(cfg: DictConfig, run: RunDir, method: Method) -> Path | None:
    """Where the run resumes from (``resume``: auto, none or a checkpoint), checked against what it continues:
    with ``auto``, the same entry point and settings; in any case, weights that load (an adapter of its shape)."""
    resume_from = checkpoints.resume_point(cfg.resume, run)
    if resume_from and cfg.resume == "auto":  # the run in run_dir goes on, with the settings it was trained with
        checkpoints.check_same_run(run, cfg, method.resumable, resume_from, method.entry_point)
    if resume_from:  # whatever else changes, its weights must load: an adapter of the same shape, or none
        adapters.check_resume(resume_from, cfg.peft)
    return resume_from


def _check_sampler(cfg: DictConfig, args: Any, resume_from: Path | None) -> None:
    """A sampler's settings, one process to keep its state, and its state in the checkpoint a run resumes from."""
    from grpo_ext.run.sampler import STATE_FILE

    check_sampler(cfg.sampler, args.max_steps)
    if cfg.sampler.name == "uniform":
        return
    if processes.world_size() > 1:
        raise ValueError(
            f"sampler={cfg.sampler.name} runs in one process (each process would see only its own groups); "
            "launch one process, or use sampler=uniform"
        )
    if resume_from is not None and not (resume_from / STATE_FILE).is_file():
        raise ValueError(
            f"resuming from {resume_from} with sampler={cfg.sampler.name}: it holds no {STATE_FILE} (saved by a run "
            "with another sampler, or before its state was written), so the prompts it drew cannot be drawn again; "
            "resume=none starts afresh"
        )


def _check_processes(cfg: DictConfig, run: RunDir, args: Any) -> None:
    """With several processes (one per GPU): all in one directory, and evaluations they can run."""
    processes.check_one_run_dir(args, run.path)
    processes.check_evaluation(cfg.eval.during_training, args)


def _recorded(
    cfg: DictConfig,
    run: RunDir,
    method: Method,
    args: Any,
    rewards: list[Any],
    weights: list[float],
    trained_rewards: list[Any],
    resume_from: Path | None,
    rollout: Any,
    eval_every: int,
) -> RunSpec:
    """The ``RunSpec``, once the resolved config is written to the run directory (by the main process)."""
    if processes.is_main():
        try:
            checkpoints.save_config(cfg, run, method.entry_point)
        except OSError as err:
            raise WriteError(f"cannot write to the run directory {run}: {err}") from err
    OmegaConf.set_readonly(cfg, True)
    return RunSpec(
        cfg=cfg,
        run=run,
        method=method,
        args=args,
        rewards=tuple(rewards),
        weights=tuple(weights),
        trained_rewards=tuple(trained_rewards),
        resume_from=resume_from,
        rollout=rollout,
        dtype=models.torch_dtype(cfg.model.dtype, cfg.hardware.dtype),
        eval_every=eval_every,
    )


def check_config(check: Callable[[], Any]) -> Any:
    """``check()``, its ``ValueError`` a ``ConfigError``: for the commands that validate only part of a config."""
    with raised_as(ConfigError):
        return check()
