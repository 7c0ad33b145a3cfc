"""Task registry: each task turns its config node into train and eval ``datasets.Dataset`` splits.

A task's rows carry a ``prompt`` (chat messages), the ground-truth columns its rewards read, and a ``reference``
(a correct completion, for warm starts and for tests). Splits are deterministic given ``task.seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpo_ext.tasks import arithmetic, code_jsonl, fizzbuzz, math_datasets, mathexpr, prompts
from grpo_ext.tasks.base import TaskConfig, TaskSplits


@dataclass(frozen=True)
class Task:
    """A registry entry: the config schema of the task's node and the function that builds its splits."""

    schema: type[TaskConfig]
    build: Any  # Callable[[schema], TaskSplits]


# name -> Task. Later tasks are added here, nowhere else; the name is also conf/task/<name>.yaml.
TASKS: dict[str, Task] = {
    "arithmetic": Task(schema=arithmetic.ArithmeticConfig, build=arithmetic.build),
    "fizzbuzz": Task(schema=fizzbuzz.FizzBuzzConfig, build=fizzbuzz.build),
    "code_jsonl": Task(schema=code_jsonl.CodeJsonlConfig, build=code_jsonl.build),
    "mathexpr": Task(schema=mathexpr.MathExprConfig, build=mathexpr.build),
    "gsm8k": Task(schema=math_datasets.GSM8KConfig, build=math_datasets.build),
    "math": Task(schema=math_datasets.MathConfig, build=math_datasets.build),
    "prompts": Task(schema=prompts.PromptsConfig, build=prompts.build),
}


def get_task(name: str) -> Task:
    """The registry entry for ``name``; raises ``ValueError`` listing the valid names."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid names: {sorted(TASKS)}")
    return TASKS[name]


def build_task(cfg: Any) -> TaskSplits:
    """Build the train and eval splits of the task described by the ``task`` config node.

    The node is turned into its schema's dataclass first, so builders read plain attributes (fast in loops).
    """
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_object(cfg)
    return get_task(cfg.name).build(cfg)


__all__ = ["TASKS", "Task", "TaskConfig", "TaskSplits", "build_task", "check_columns", "get_task"]


def check_columns(dataset: Any, rewards: Sequence[Any], where: str) -> None:
    """Raise ``ValueError`` naming the column (and the row) when a reward reads a column that ``dataset`` lacks or
    that is empty (``None``) in some row; ``where`` names the split."""
    from grpo_ext.rewards import reward_columns

    for reward in rewards:
        for column in reward_columns(reward):
            if column not in dataset.column_names:
                raise ValueError(
                    f"reward {reward.__name__!r} reads column {column!r}, which the {where} lacks "
                    f"(its columns: {dataset.column_names})"
                )
            for row, value in enumerate(dataset[column]):
                if value is None:
                    raise ValueError(
                        f"row {row} of the {where} has no value in column {column!r}, which reward "
                        f"{reward.__name__!r} reads"
                    )
