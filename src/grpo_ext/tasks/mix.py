"""``mix``: several tasks in one run, each part with its own settings and rewards, sampled by weight.

``python -m grpo_ext.train task=mix 'task.of={arithmetic: 3, fizzbuzz: 1}' task.parts.fizzbuzz.kinds=[fizzbuzz]``

``task.of`` names the parts and their weights. A part's name is a task of the registry, or a label of your own whose
task ``task.parts.LABEL.name`` names (two parts of one task with other settings: ``'task.of={easy: 1, hard: 1}'
task.parts.easy.name=arithmetic task.parts.hard.name=arithmetic task.parts.hard.max_operand=99``). Each part starts
from its task's own config (``conf/task/NAME.yaml``) and takes ``task.parts.LABEL.*`` on top. Every row carries its
part's name in the column ``task``; each part's rewards score only its own rows (``None`` elsewhere, which TRL leaves
out of that reward's mean) and are named ``LABEL/REWARD`` (``rewards/fizzbuzz/python_exec/mean``), so that two parts
with the same reward never share a metric. Training draws each generation batch's prompts by the weights
(``weighted_order``), deterministically from the seed.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf

from grpo_ext.tasks.base import TaskConfig, TaskSplits, open_node

TASK_COLUMN = "task"  # each row's part


@dataclass
class MixConfig(TaskConfig):
    of: Any = field(default_factory=open_node)  # part -> weight
    parts: Any = field(default_factory=open_node)  # part -> its task's settings, over its task's config
    name: str = "mix"
    train_size: int = 0  # unused: each part has its own
    eval_size: int = 0


@dataclass(frozen=True)
class Part:
    """One part of a mixture: its label, weight, and its task's config node (typed by the task's schema)."""

    label: str
    weight: float
    config: Any


def task_defaults(name: str) -> dict[str, Any]:
    """The values ``conf/task/NAME.yaml`` gives a task node (its defaults list left out: it names the schema)."""
    text = resources.files("grpo_ext.conf").joinpath("task", f"{name}.yaml").read_text()
    node: Any = OmegaConf.to_container(OmegaConf.create(text))
    node.pop("defaults", None)
    return node.get("task", node) if "@package _global_" in text else node


def parts(cfg: Any) -> list[Part]:
    """The parts of the ``mix`` node ``cfg`` that have a weight, each with its whole task config; ``ValueError`` naming
    the key for an unknown part, a bad weight, a part setting of a part not in the mix, or a setting its task does not
    have. A part of weight 0 is checked as the others and left out of the run (its rows, rewards and evaluation): the
    way to drop a part of a composed mixture on the command line, ``task.of.fizzbuzz=0``."""
    from grpo_ext.tasks import TASKS  # the registry, which holds this module

    of = dict(_plain(cfg.of))
    settings = dict(_plain(cfg.parts))
    if not of:
        raise ValueError("task.of must name the parts of the mixture and their weights, e.g. 'task.of={arithmetic: 3, "
                         "fizzbuzz: 1}'")  # fmt: skip
    for label, weight in of.items():
        if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
            raise ValueError(f"task.of.{label}={weight!r}: a part's weight must be a number >= 0")
    if not any(weight > 0 for weight in of.values()):
        raise ValueError(f"task.of={of}: at least one part needs a weight > 0")
    for label in settings:
        if label not in of:
            raise ValueError(f"task.parts.{label} sets a part that is not in the mixture: task.of names {sorted(of)}")
    found = []
    for label, weight in of.items():
        own = dict(settings.get(label) or {})
        name = own.get("name", label)
        if name not in TASKS or name == "mix":
            valid = sorted(n for n in TASKS if n != "mix")
            raise ValueError(
                f"task.of names {label!r}, which is not a task ({valid}); a part of your own naming needs its task: "
                f"task.parts.{label}.name=TASK"
            )
        node = OmegaConf.merge(OmegaConf.structured(TASKS[name].schema), task_defaults(name))
        try:
            node = OmegaConf.merge(node, {**own, "name": name})
        except Exception as err:  # omegaconf's errors for a key or a value the task's schema refuses
            raise ValueError(f"task.parts.{label}: {str(err).splitlines()[0]} (the {name} task's settings)") from err
        missing = sorted(OmegaConf.missing_keys(node))
        if missing:
            keys = ", ".join(f"task.parts.{label}.{key}" for key in missing)
            raise ValueError(f"these keys need a value, on the command line (KEY=VALUE): {keys}")
        found.append(Part(label, float(weight), node))
    return [part for part in found if part.weight > 0]


def expanded(cfg: Any) -> dict[str, Any]:
    """The ``mix`` node with every part's whole config in ``parts``, as the run records it in its config.yaml, and
    ``max_completion_length``, when 0, the longest of the parts'."""
    node = copy.deepcopy(_plain(cfg))
    found = parts(cfg)
    node["parts"] = {part.label: _plain(part.config) for part in found}
    if not node.get("max_completion_length"):
        node["max_completion_length"] = max(part.config.max_completion_length for part in found)
    return node


def complete(node: DictConfig) -> None:
    """Make the ``mix`` node ``node`` (of a composed config) ``expanded``, in place."""
    whole = expanded(node)
    node.parts = whole["parts"]
    node.max_completion_length = whole["max_completion_length"]


def build(cfg: MixConfig) -> TaskSplits:
    """Each part's splits, their rows marked with the part (``task``) and put together."""
    from grpo_ext.tasks import build_task

    train: list[tuple[str, list[dict[str, Any]]]] = []
    held_out: list[tuple[str, list[dict[str, Any]]]] = []
    for part in parts(cfg):
        try:
            splits = build_task(part.config)
        except ValueError as err:
            raise ValueError(f"task.parts.{part.label}: {err}") from err
        for rows, split in ((train, splits.train), (held_out, splits.eval)):
            if TASK_COLUMN in split.column_names:
                raise ValueError(f"task.parts.{part.label}: its rows have a column {TASK_COLUMN!r}, which a mixture "
                                 "uses for each row's part")  # fmt: skip
            rows.append((part.label, split.to_list()))
    return TaskSplits(train=_together(train), eval=_together(held_out))


def _together(by_part: list[tuple[str, list[dict[str, Any]]]]) -> Any:
    """One dataset of the parts' rows, each with its part; a column a part lacks is ``None`` in its rows.
    ``ValueError`` naming a column whose values are of other kinds in two parts (one column cannot hold both)."""
    from datasets import Dataset

    kinds: dict[str, tuple[str, str]] = {}
    for label, rows in by_part:
        for column in dict.fromkeys(key for row in rows[:50] for key in row):
            kind = next((_kind(row[column]) for row in rows if row.get(column) is not None), None)
            if kind is None:
                continue
            if column in kinds and kinds[column][1] != kind:
                other, other_kind = kinds[column]
                raise ValueError(
                    f"the parts {other} and {label} both have a column {column!r}, of {other_kind} and {kind}: one "
                    "column cannot hold both; map one of them to another name (task.parts.PART.columns)"
                )
            kinds.setdefault(column, (label, kind))
    columns = [TASK_COLUMN, *kinds]
    merged = [{c: (row | {TASK_COLUMN: label}).get(c) for c in columns} for label, rows in by_part for row in rows]
    return Dataset.from_list(merged)


def _kind(value: Any) -> str:
    """What a dataset column must hold for ``value``: its type, with the types inside a list or a dict."""
    if isinstance(value, list):
        inner = {_kind(v) for v in value if v is not None}
        return f"list[{'|'.join(sorted(inner))}]"
    if isinstance(value, dict):
        return "dict[" + ",".join(f"{k}:{_kind(v)}" for k, v in sorted(value.items())) + "]"
    return "float" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def weights(cfg: Any) -> dict[str, float]:
    """The parts of the ``mix`` node ``cfg`` that have a weight, and their weights (the parts of weight 0 are out)."""
    return {str(label): float(weight) for label, weight in _plain(cfg.of).items() if weight > 0}


def scheduled(dataset: Any, cfg: Any, per_batch: int, batches: int, seed: int) -> Any:
    """A mixture's ``dataset`` in ``weighted_order`` when two parts or more have a weight (``cfg``: the ``mix``
    node); as it is when one has (a mixture of one task trains as that task does)."""
    weights_ = weights(cfg)
    if len(weights_) < 2:
        return dataset
    return weighted_order(dataset, weights_, per_batch, batches, seed)


def weighted_order(dataset: Any, weights: dict[str, float], per_batch: int, batches: int, seed: int) -> Any:
    """``dataset``'s rows in the order training takes them: ``batches`` batches of ``per_batch`` rows, in which
    each part has its share of the weights (cumulative rounding: over the run, exact to a row; each batch within one
    row of it), its rows drawn from its own shuffles, one after another (each part's rows once before any repeats),
    and the batch shuffled. Deterministic from ``seed``."""
    rng = random.Random(seed)
    labels = [label for label, weight in weights.items() if weight > 0]
    total = sum(weights[label] for label in labels)
    rows_of = {label: [] for label in labels}  # type: dict[str, list[int]]
    for index, label in enumerate(dataset[TASK_COLUMN]):
        if label in rows_of:
            rows_of[label].append(index)
    for label, rows in rows_of.items():
        if not rows:
            raise ValueError(f"task.of gives {label} a weight, and its train split has no rows")
    pools: dict[str, list[int]] = {label: [] for label in labels}
    taken = dict.fromkeys(labels, 0)
    order: list[int] = []
    for batch in range(1, batches + 1):
        wanted = apportion({label: weights[label] / total * per_batch * batch for label in labels}, per_batch * batch)
        picked = []
        for label in labels:
            for _ in range(wanted[label] - taken[label]):
                if not pools[label]:
                    pools[label] = rng.sample(rows_of[label], len(rows_of[label]))
                picked.append(pools[label].pop())
            taken[label] = wanted[label]
        rng.shuffle(picked)
        order += picked
    return dataset.select(order)


def apportion(quotas: dict[str, float], total: int) -> dict[str, int]:
    """Whole numbers summing to ``total``, each the floor of its quota plus one for the largest remainders (ties to
    the first named)."""
    counts = {label: int(quota) for label, quota in quotas.items()}
    by_remainder = sorted(quotas, key=lambda label: -(quotas[label] - counts[label]))
    for label in by_remainder[: total - sum(counts.values())]:
        counts[label] += 1
    return counts


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
