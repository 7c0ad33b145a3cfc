"""Evaluation on a task's eval split: ``python -m grpo_ext.evaluate task=NAME model.path=DIR [eval.k=8]``.

For each of the first ``eval.size`` eval prompts: one greedy completion, scored by the task's first reward, and, with
``eval.k`` > 1, ``k`` sampled completions at ``eval.temperature``. Reported: ``accuracy`` (greedy pass@1: the
reward's full score), ``pass@k`` (any of the k samples fully right), ``format`` (the share of greedy completions that
state an answer or code at all, for rewards that say so), and ``reward`` (the mean greedy reward). The report goes to
``eval_report.json`` in the output directory (with every greedy completion and its score) and a table to the console.
The same evaluation runs inside training (``monitor.heldout``): before the first step, every ``eval.every`` steps
and at the end, its figures logged as ``eval/accuracy``, ``eval/format``, ``eval/reward`` and ``eval/pass@k``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from grpo_ext.backends.generation import load_model
from grpo_ext.backends.hardware import check_device
from grpo_ext.config.schema import check_eval, register_configs
from grpo_ext.config.validate import check_config, expand_mixture
from grpo_ext.errors import TaskError, raised_as
from grpo_ext.monitor.heldout import run_eval, scorers, scoring
from grpo_ext.run import entry
from grpo_ext.run.rundir import RunDir
from grpo_ext.tasks import build_task, check_columns, task_rewards

register_configs()


def table(metrics: dict[str, Any]) -> str:
    """The metrics as a two-column console table."""
    width = max(len(key) for key in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in metrics.items():
        name = key.rsplit("/", 1)[-1]  # a mixture's part figures: PART/accuracy...
        shown = f"{value:.1%}" if name in ("accuracy", "format") or name.startswith("pass@") else f"{value:.4g}"
        lines.append(f"{key:<{width}}  {shown}")
    return "\n".join(lines)


def write_report(run_dir: RunDir, report: dict[str, Any], cfg: Any) -> Path:
    path = run_dir.eval_report
    header = {"task": cfg.task.name, "model": cfg.model.path or cfg.model.name, "eval": dict(cfg.eval)}
    path.write_text(json.dumps({**header, **report}, indent=2, ensure_ascii=False) + "\n")
    return path


@hydra.main(version_base=None, config_path="pkg://grpo_ext.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    entry.run_command(evaluate, cfg, records=False)


def evaluate(cfg: DictConfig, run_dir: RunDir, group: str | None = None) -> None:
    """Evaluate the model of ``cfg`` on its task's eval split; the report to ``run_dir``, a table to the console."""

    def checked() -> tuple[list[Any], list[float]]:
        check_eval(cfg.eval)
        check_device(cfg.hardware)
        expand_mixture(cfg)
        return task_rewards(cfg.task)

    rewards, _ = check_config(checked)
    try:
        with raised_as(TaskError):
            splits = build_task(cfg.task)
            check_columns(splits.eval, scorers(rewards), f"{cfg.task.name} eval split")  # the rewards that score
            model, tokenizer = load_model(cfg)
            report = run_eval(model, tokenizer, splits.eval, scoring(rewards), cfg)
    finally:
        for reward in rewards:
            getattr(reward, "close", lambda: None)()
    path = write_report(run_dir, report, cfg)
    scored_by = ", ".join(reward.__name__ for reward in scorers(rewards))
    print(f"{cfg.task.name} eval split, {report['metrics']['n']} prompts, reward {scored_by}:")
    print(table(report["metrics"]))
    print(f"report: {path}")


if __name__ == "__main__":
    main()
