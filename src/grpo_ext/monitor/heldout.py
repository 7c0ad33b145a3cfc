"""Held-out evaluation of a model on a task's eval split: greedy accuracy, pass@k, format accuracy and mean reward.

For each of the first ``eval.size`` eval prompts: one greedy completion, scored by the task's first reward, and, with
``eval.k`` > 1, ``k`` sampled completions at ``eval.temperature``. ``accuracy`` is greedy pass@1 (the reward's full
score), ``pass@k`` whether any of the k samples is fully right, ``format`` the share of greedy completions that state
an answer or code at all (for rewards that say so), ``reward`` the mean greedy reward. ``grpo_ext.evaluate`` runs it
once; training runs it before the first step, every ``eval.every`` steps and at the end (``monitor.evaluation``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from grpo_ext.backends.generation import generate
from grpo_ext.rewards.calling import as_trl_passes, score_tolerantly, trl_arguments
from grpo_ext.tasks.mix import TASK_COLUMN

# Reward statuses meaning "the completion never stated an answer (or code)": what format accuracy counts.
FORMAT_FAILURES = {"no_answer", "malformed_answer", "multiple_answers", "no_code", "too_long"}


def first_rows(dataset: Any, size: int) -> Any:
    """The first ``size`` rows of ``dataset`` (0: all of it): the eval prompts that ``eval.size`` selects; in a
    mixture's (rows marked with their part, ``task``), the first ``size`` of each part."""
    if not size:
        return dataset
    if TASK_COLUMN not in dataset.column_names:
        return dataset.select(range(min(size, len(dataset))))
    seen: dict[str, int] = {}
    kept = []
    for index, label in enumerate(dataset[TASK_COLUMN]):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] <= size:
            kept.append(index)
    return dataset.select(kept)


def evaluate(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    reward: Callable,
    *,
    size: int,
    k: int,
    temperature: float,
    batch_size: int,
    max_new_tokens: int,
    state: Any = None,
) -> dict[str, Any]:
    """Greedy accuracy, pass@k, format accuracy and mean reward on the first ``size`` rows (0: all) of ``dataset``;
    ``state``: the Trainer's, which a reward gets as ``trainer_state`` during training."""
    rows = first_rows(dataset, size)
    columns = {name: list(rows[name]) for name in rows.column_names if name != "prompt"}
    full = float(getattr(reward, "full_reward", 1.0))
    started = time.monotonic()
    prompts = list(rows["prompt"])
    greedy = [c[0] for c in generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                     batch_size=batch_size)]  # fmt: skip
    context = trl_arguments(prompts, greedy, tokenizer, state)
    results = score_tolerantly(reward, as_trl_passes(greedy, prompts[0]), columns, context)
    rewards = [r.get("reward") for r in results]
    scored = [r for r in rewards if r is not None]
    metrics: dict[str, Any] = {
        "n": len(rows),
        "accuracy": sum(r is not None and r >= full for r in rewards) / len(rows),
        "reward": sum(scored) / len(scored) if scored else float("nan"),
    }
    if all("status" in r for r in results if "error" not in r):  # a failed score counts as no answer
        metrics["format"] = sum(r.get("status", "error") not in FORMAT_FAILURES for r in results) / len(rows)
    if k > 1:
        sampled = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, samples=k,
                           temperature=temperature, batch_size=batch_size)  # fmt: skip
        texts = [c for group in sampled for c in group]
        repeated = {name: [v for v in values for _ in range(k)] for name, values in columns.items()}
        context = trl_arguments([p for p in prompts for _ in range(k)], texts, tokenizer, state)
        sample_rewards = [r.get("reward") for r in score_tolerantly(reward, as_trl_passes(texts, prompts[0]),
                                                                    repeated, context)]  # fmt: skip
        hits = [
            any(r is not None and r >= full for r in sample_rewards[i * k : (i + 1) * k]) for i in range(len(rows))
        ]
        metrics[f"pass@{k}"] = sum(hits) / len(rows)
    metrics["seconds"] = round(time.monotonic() - started, 2)
    examples = [{"completion": c, **r} for c, r in zip(greedy, results, strict=True)]
    return {"metrics": metrics, "examples": examples}


def scorers(rewards: Sequence[Callable]) -> list[Callable]:
    """The rewards that score held-out rows: the task's first, or each part's first in a mixture."""
    parts: dict[Any, Callable] = {}
    for reward in rewards:
        parts.setdefault(getattr(reward, "rows_of", None), reward)
    return list(parts.values())


def scoring(rewards: Sequence[Callable]) -> Callable | list[Callable]:
    """What scores held-out rows: the task's first reward, or in a mixture every part's rewards (``run_eval`` scores
    each part's rows with its first)."""
    return list(rewards) if getattr(rewards[0], "rows_of", None) is not None else rewards[0]


def run_eval(
    model: Any, tokenizer: Any, dataset: Any, reward: Callable | Sequence[Callable], cfg: Any, state: Any = None
) -> dict[str, Any]:
    """``evaluate`` with the settings of the config's ``eval`` node. ``reward``: the reward that scores, or a
    mixture's rewards (``rewards.parts``), of which each part's first scores its own rows: each part's figures come
    as ``PART/accuracy``..., and ``accuracy``, ``reward``, ``format`` and ``pass@k`` are their means weighted as the
    parts (``task.of``)."""
    node = cfg.eval
    settings = dict(k=node.k, temperature=node.temperature, batch_size=node.batch_size,
                    max_new_tokens=node.max_new_tokens or cfg.task.max_completion_length, state=state)  # fmt: skip
    if callable(reward):
        return evaluate(model, tokenizer, dataset, reward, size=node.size, **settings)
    weights = dict(cfg.task.of)
    first_of: dict[str, Callable] = {}
    part_reward: Any
    for part_reward in reward:  # a part's first reward scores its rows
        first_of.setdefault(part_reward.rows_of, part_reward.reward)
    metrics: dict[str, Any] = {"n": 0, "seconds": 0.0}
    examples, by_part = [], {}
    labels = dataset[TASK_COLUMN]
    for label, first in first_of.items():
        rows = dataset.select([i for i, own in enumerate(labels) if own == label])
        report = evaluate(model, tokenizer, rows, first, size=node.size, **settings)
        by_part[label] = report["metrics"]
        metrics["n"] += report["metrics"]["n"]
        metrics["seconds"] += report["metrics"]["seconds"]
        metrics.update(
            {f"{label}/{key}": value for key, value in report["metrics"].items() if key not in ("n", "seconds")}
        )
        examples += [{TASK_COLUMN: label, **example} for example in report["examples"]]
    weighted = {label: weights[label] for label in by_part if weights.get(label, 0) > 0}
    total = sum(weighted.values())
    for key in ("accuracy", "reward", "format", f"pass@{node.k}"):
        if all(key in by_part[label] for label in weighted):
            metrics[key] = sum(by_part[label][key] * weight for label, weight in weighted.items()) / total
    return {"metrics": metrics, "examples": examples}
