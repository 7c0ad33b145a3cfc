"""What every task shares: the config schema of a ``task`` node and the splits a task returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from omegaconf import MISSING


@dataclass
class RewardSpec:
    """One reward of a task: a registry name (or dotted path), its weight, and its constructor parameters."""

    name: str = MISSING
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskConfig:
    """Fields every task node has. A task's own schema subclasses this and adds its knobs."""

    name: str = MISSING
    seed: int = 0  # data seed: fixes the train/eval split, independent of the training seed
    train_size: int = 10_000
    eval_size: int = 500
    system_prompt: str | None = None
    max_completion_length: int = 256  # the default for trainer.max_completion_length
    rewards: list[RewardSpec] = field(default_factory=list)


@dataclass
class TaskSplits:
    train: Dataset
    eval: Dataset


def chat_prompt(user: str, system_prompt: str | None) -> list[dict[str, str]]:
    """A prompt in chat form, with the task's system prompt first when it has one."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": user}]


def check_positive(cfg: Any, *keys: str) -> None:
    """Raise ``ValueError`` naming ``task.KEY`` for each of ``keys`` that is not a positive integer."""
    for key in keys:
        value = getattr(cfg, key)
        if value < 1:
            raise ValueError(f"task.{key} must be >= 1, got {value}")
