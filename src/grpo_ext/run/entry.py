"""The one wrapper around a Hydra command's body: what every entry point does before a run and after it fails.

Before: the log of processes other than the main one quieted, ``hardware=auto`` resolved for this machine, a sweep's
job given vLLM ports of its own, the W&B run named, the run directory locked. After: an error of the library
(``grpo_ext.errors``) becomes its message on stderr and the exit status; a run's ``status.json`` says it failed (or
was interrupted); in a sweep a failed job is logged and returns NaN while the sweep goes on, and a signal stops the
whole sweep. No other module exits the process.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpo_ext.errors import GrpoExtError, Interrupted, RunDirBusy
from grpo_ext.run import processes
from grpo_ext.run.records import final_value, interrupted, read_metrics, write_status
from grpo_ext.run.rundir import RunDir

log = logging.getLogger(__name__)

Body = Callable[[DictConfig, RunDir, "str | None"], Any]


def run_command(body: Body, cfg: DictConfig, *, records: bool = True) -> Any:
    """Run ``body(cfg, run_dir, group)`` inside Hydra (``@hydra.main``): ``group`` names the sweep a job belongs to.

    ``records``: the command keeps a run's record (``grpo_ext.train``, ``grpo_ext.sft``): its directory is locked
    and ``status.json`` says how a failed run ended. Returns what ``body`` returns, or NaN for a failed job of a
    sweep.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from grpo_ext.backends.hardware import resolve_auto
    from grpo_ext.rewards.guard import RewardFailureError

    hydra_cfg = HydraConfig.get()
    processes.quiet_unless_main()
    run = RunDir(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    overrides = list(hydra_cfg.overrides.task)
    cfg = resolve_auto(cfg, overrides)  # hardware=auto: the profile for this machine
    if sweeping:  # each job of a sweep its own vLLM ports, so that jobs running side by side never collide
        OmegaConf.update(cfg, "hardware.vllm.port", cfg.hardware.vllm.port + hydra_cfg.job.num)
        OmegaConf.update(cfg, "hardware.vllm.group_port", cfg.hardware.vllm.group_port + hydra_cfg.job.num)
    if cfg.trainer.run_name is None:  # the W&B run's name: what was chosen, and the overrides that differ
        if sweeping:  # only the swept keys: the others are the same for every job of the sweep
            swept = swept_keys(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
            overrides = [o for o in overrides if o.split("=", 1)[0] in swept]
        OmegaConf.update(cfg, "trainer.run_name", run_name(cfg, overrides))
    group = Path(hydra_cfg.sweep.dir).name if sweeping else None
    try:
        with run.locked() if records and processes.is_main() else nullcontext():
            return _reported(body, cfg, run, group, sweeping, records, hydra_cfg.job.num if sweeping else 0)
    except RunDirBusy as err:  # the other run's directory: nothing of it is touched, its status included
        sys.exit(err.report())
    except RewardFailureError as err:  # the rewards package raises its own: a reward failed everywhere
        sys.exit(f"error: {err}")


def _reported(
    body: Body, cfg: DictConfig, run: RunDir, group: str | None, sweeping: bool, records: bool, job: int
) -> Any:
    """``body``'s result, its failure reported as the run's status and the command's exit."""
    try:
        return body(cfg, run, group)
    except Interrupted as stop:  # a checkpoint is saved: say where, pass the signal on, exit with 128 + it
        if processes.is_main():
            sys.stderr.write(stop.report() + "\n")
            if records:
                write_status(run, "interrupted", stop.report())
        if callable(stop.pass_on):
            stop.pass_on()  # submitit's handler requeues the job (and exits -1)
        sys.exit(stop.exit_code)  # a signal stops the whole sweep
    except GrpoExtError as err:
        if records:
            write_status(run, "failed", err.report())
        if not sweeping:
            sys.exit(err.report())
        log.error("job %s failed, the sweep goes on: %s", job, err.report())
        return math.nan
    except SystemExit as stop:  # a handler of another program's (submitit's requeue) exits on its own
        if stop.code not in (None, 0) and records:
            write_status(run, "interrupted" if interrupted(stop.code) else "failed", str(stop.code))
        raise
    except Exception as err:
        if records:
            write_status(run, "failed", f"{type(err).__name__}: {err}")
        if not sweeping:
            raise
        log.exception("job %s failed, the sweep goes on", job)
        return math.nan


def objective(run_dir: Path | RunDir, key: str) -> float:
    """The run's final ``key`` (the mean of its last 5 logged values), which an Optuna sweep maximizes; NaN, with a
    warning naming the keys that were logged, when it never was (a misspelled ``objective`` would otherwise give an
    Optuna sweep only NaNs)."""
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
