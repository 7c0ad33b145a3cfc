"""Task registry: each task turns its config node into train and eval ``datasets.Dataset`` splits.

A task's rows carry a ``prompt`` (chat messages), the ground-truth columns its rewards read, and a ``reference``
(a correct completion, for warm starts and for tests). Splits are deterministic given ``task.seed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from grpo_ext.tasks import arithmetic, code_jsonl, fizzbuzz, math_datasets, mathexpr, mix, prompts, reasoning_gym
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
    "reasoning_gym": Task(schema=reasoning_gym.ReasoningGymConfig, build=reasoning_gym.build),
    "mix": Task(schema=mix.MixConfig, build=mix.build),
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


def task_rewards(cfg: Any) -> tuple[list[Any], list[float]]:
    """The rewards of the ``task`` node ``cfg`` and their weights, built (``ValueError`` naming the entry that is
    wrong). A mixture's are its parts' rewards, each scoring only its part's rows (``rewards.parts``)."""
    from grpo_ext.rewards import build_rewards
    from grpo_ext.rewards.parts import Ledger, for_part

    if cfg.name != "mix":
        return build_rewards(_plain_rewards(cfg.rewards))
    funcs, weights = [], []
    for part in mix.parts(cfg):
        try:
            rewards, own = build_rewards(_plain_rewards(part.config.rewards))
        except ValueError as err:
            raise ValueError(str(err).replace("task.rewards", f"task.parts.{part.label}.rewards", 1)) from err
        ledger = Ledger(part.label, len(rewards))
        funcs += [for_part(reward, part.label, weight, ledger) for reward, weight in zip(rewards, own, strict=True)]
        weights += own
    return funcs, weights


def _plain_rewards(rewards: Any) -> list[dict[str, Any]]:
    """A ``rewards`` list (a config node, or dataclasses once the node is an object) as plain dicts."""
    import dataclasses

    from omegaconf import OmegaConf

    if OmegaConf.is_config(rewards):
        return OmegaConf.to_container(rewards, resolve=True)  # type: ignore[return-value]
    return [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in rewards]  # type: ignore[arg-type]


__all__ = ["TASKS", "Task", "TaskConfig", "TaskSplits", "build_task", "check_columns", "get_task", "task_rewards"]


def check_columns(dataset: Any, rewards: Sequence[Any], where: str) -> None:
    """Raise ``ValueError`` naming the column (and the row) when a reward reads a column that ``dataset`` lacks or
    that is empty (``None``) in some row; ``where`` names the split."""
    from grpo_ext.rewards import reward_columns

    for reward in rewards:
        part = getattr(reward, "rows_of", None)  # a mixture's part reward reads its part's rows only
        mine = None if part is None else [label == part for label in dataset[mix.TASK_COLUMN]]
        for column in reward_columns(reward):
            if column not in dataset.column_names:
                raise ValueError(
                    f"reward {reward.__name__!r} reads column {column!r}, which the {where} lacks "
                    f"(its columns: {dataset.column_names})"
                )
            for row, value in enumerate(dataset[column]):
                if value is None and (mine is None or mine[row]):
                    raise ValueError(
                        f"row {row} of the {where} has no value in column {column!r}, which reward "
                        f"{reward.__name__!r} reads"
                    )
