"""The best model of a run by a held-out metric (``eval.keep_best``, ``eval.best_metric``: greedy accuracy by
default), kept as the evaluations come.

A long run's last model is often not its best: reward can peak and fall. When an evaluation between steps beats
every earlier one (the one before the first step included; the earliest of equals wins), the policy is saved to
``RUN/best_model/`` (with adapters, the adapter to ``RUN/best_adapter/``, merged into ``best_model/`` when the run
ends), replacing the previous best whole or not at all. ``RUN/best.json`` says which model is the best, at which
step, with which value of the metric (``{"step": 40, "eval/accuracy": 0.625, "model": "best_model"}``):
``best_model``, ``final_model`` when the last evaluation is the best (it is not saved twice), or ``start`` when no
evaluation beat the starting model. Checkpoint rotation never touches these, and a resumed run starts from the best
recorded so far (anew, with a warning, when it ranks by another metric than the record).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grpo_ext.run.records import read_metrics
from grpo_ext.run.rundir import BEST_ADAPTER, BEST_MODEL, FINAL_ADAPTER, FINAL_MODEL, RunDir, replace_whole

log = logging.getLogger(__name__)

METRIC = "eval/accuracy"  # what the best is by default


class BestModel:
    """Decides, after each evaluation, whether the policy is the run's best, and keeps it.

    Args:
        run_dir: the run directory.
        save: saves the policy (or its adapter) to the directory it is given: the trainer's ``save_model``.
        adapter: whether ``save`` writes an adapter (LoRA, QLoRA) rather than a whole model.
        metric: the evaluation's value to maximize (``eval/accuracy``, ``eval/reward``, ``eval/pass@8``).
    """

    def __init__(
        self, run_dir: Path | RunDir, save: Callable[[str], None], adapter: bool, metric: str = METRIC
    ) -> None:
        run_dir = RunDir(run_dir)
        self.run_dir, self.save, self.adapter, self.metric = run_dir, save, adapter, metric
        self.saved_dir = run_dir.best_adapter if adapter else run_dir.best_model
        self._clean_up_interrupted_swap()
        self.record: Any = read_best(run_dir)  # dict[str, Any] | None
        if self.record is not None and metric not in self.record:
            log.warning(
                "%s ranks models by %s, and this run by %s (eval.best_metric): the best is chosen anew from here",
                run_dir.best_record, record_metric(self.record), metric,
            )  # fmt: skip
            self.record = None
        evals = [r for r in read_metrics(run_dir) if metric in r]  # the history this run continues, if any
        kept = self.record is not None and self.record["model"] == BEST_MODEL
        if kept and self.record["step"] not in {r["step"] for r in evals}:
            log.warning(
                "%s: the best so far, %s %.4g at step %d (%s), is from history this run no longer has (it resumed "
                "from an earlier checkpoint, or started afresh): it stays the best, its model kept, until an "
                "evaluation of this run beats it",
                run_dir.best_record, record_metric(self.record), self.record[record_metric(self.record)],
                self.record["step"], self.saved_dir,
            )  # fmt: skip
        if self.record is None:  # none yet: the best evaluation already logged (a resumed run), if any
            first_best = max(evals, key=lambda r: (r[metric], -r["step"]), default=None)
            if first_best is not None and first_best["step"] == 0:
                self._write_record(0, first_best[metric], "start")
        # A finished run whose final model is its best, continued: once it trains past its old end, that final model
        # will be replaced, so it is copied to best_model/ then (not now: a rerun that trains nothing keeps it).
        self.final_is_best = self.record is not None and self.record["model"] == FINAL_MODEL

    @property
    def value(self) -> float:
        """The best value of the metric so far (minus infinity before any)."""
        return self.record[self.metric] if self.record else float("-inf")

    def offer(self, step: int, metrics: dict[str, Any], final: bool) -> None:
        """Record the evaluation at ``step`` (``eval/<metric>`` values); keep the policy if it is the best so far.

        ``final``: the evaluation after the last step, whose model the run saves as ``final_model`` anyway.
        """
        better = metrics[self.metric] > self.value
        if self.final_is_best and step > self.record["step"]:
            self.final_is_best = False
            if not better:  # the earlier run's final model stays the best: keep it before this run replaces it
                for name, kept in ((FINAL_MODEL, BEST_MODEL), (FINAL_ADAPTER, BEST_ADAPTER)):
                    if self.run_dir.model(name).is_dir():
                        _swap_in(
                            self.run_dir.model(kept), functools.partial(shutil.copytree, self.run_dir.model(name))
                        )
                self._write_record(self.record["step"], self.record[self.metric], BEST_MODEL)
        if not better:
            return
        if step == 0:
            model = "start"
        elif final:
            model = FINAL_MODEL
            for stale in (self.run_dir.best_model, self.run_dir.best_adapter):
                shutil.rmtree(stale, ignore_errors=True)
        else:
            model = BEST_MODEL
            _swap_in(self.saved_dir, self.save)
            if self.adapter:  # the merge of the previous best adapter, if any: made again from this one at the end
                shutil.rmtree(self.run_dir.best_model, ignore_errors=True)
            log.info("best %s so far at step %d: saved to %s", self.metric, step, self.saved_dir)
        self._write_record(step, metrics[self.metric], model)

    def _write_record(self, step: int, value: float, model: str) -> None:
        self.record = {"step": step, self.metric: value, "model": model}
        replace_whole(self.run_dir.best_record, json.dumps(self.record, indent=2) + "\n")

    def _clean_up_interrupted_swap(self) -> None:
        for name in (BEST_MODEL, BEST_ADAPTER):
            shutil.rmtree(self.run_dir / f"{name}.partial", ignore_errors=True)
            old = self.run_dir / f"{name}.old"
            if old.is_dir() and not self.run_dir.model(name).is_dir():
                os.replace(old, self.run_dir.model(name))  # killed between the two renames: the previous best stands
            shutil.rmtree(old, ignore_errors=True)


def read_best(run_dir: Path | RunDir) -> dict[str, Any] | None:
    """``RUN/best.json``: ``{"step", "eval/<metric>", "model": "best_model" | "final_model" | "start"}``; ``None``
    when the run has none (or it cannot be read)."""
    try:
        record = json.loads(RunDir(run_dir).best_record.read_text())
    except (OSError, ValueError):
        return None
    metrics = [key for key in record if key.startswith("eval/")] if isinstance(record, dict) else []
    return record if {"step", "model"} <= set(record) and len(metrics) == 1 else None


def record_metric(record: dict[str, Any]) -> str:
    """The metric a ``best.json`` record ranks by: ``eval/accuracy``, ``eval/reward``..."""
    return next(key for key in record if key.startswith("eval/"))


def metric_text(metric: str, value: float) -> str:
    """``eval accuracy: 62.5%`` (shares as percentages), ``eval reward: 0.734``."""
    name = metric.removeprefix("eval/")
    shown = f"{value:.3f}" if name == "reward" else f"{value:.1%}"
    return f"eval {name}: {shown}"


def best_line(run_dir: Path | RunDir) -> str | None:
    """``best eval accuracy: 62.5% at step 40: RUN/best_model`` (or the final or starting model); ``None`` without
    a record."""
    record = read_best(run_dir)
    if record is None:
        return None
    run_dir = RunDir(run_dir)
    where = {
        BEST_MODEL: str(run_dir.best_model),
        FINAL_MODEL: f"the final model, {run_dir.final_model}",
        "start": "the starting model (no later evaluation beat it)",
    }[record["model"]]
    return (
        f"best {metric_text(record_metric(record), record[record_metric(record)])} at step {record['step']}: {where}"
    )


def _swap_in(target: Path, write: Callable[[str], Any]) -> None:
    """Replace the directory ``target`` by what ``write(path)`` writes beside it (``.partial``), then moved into place,
    so that a kill or a failed write at any moment leaves the old or the new one complete."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    write(str(partial))
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(partial, target)
    shutil.rmtree(old, ignore_errors=True)
