"""What every task shares: the config schema of a ``task`` node and the splits a task returns."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
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


LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_table(path: str, split: str, subset: str | None = None) -> Dataset:
    """The rows at ``path`` (``task.path``): a local .jsonl/.json/.parquet file by its suffix, else a Hub dataset
    name, read at ``split`` (and config ``subset``). Raises ``ValueError`` saying what was tried."""
    from datasets import load_dataset

    from grpo_ext.models import HUB_TIMEOUT_S, hub_offline

    local = Path(path).expanduser()
    if local.suffix in LOCAL_FORMATS:
        if not local.is_file():
            raise ValueError(f"task.path={path}: no such file")
        return load_dataset(LOCAL_FORMATS[local.suffix], data_files=str(local), split="train")
    try:
        if not hub_offline():
            from huggingface_hub import HfApi

            HfApi().dataset_info(path, timeout=HUB_TIMEOUT_S)  # fail in seconds, not after the retries
        return load_dataset(path, subset, split=split)
    except Exception as err:  # the Hub client and datasets raise many types for "not found" and "no network"
        raise ValueError(
            f"task.path={path}: not a local .jsonl/.json/.parquet file, and loading it from the Hub failed "
            f"({type(err).__name__}: {err}). With a copy in the local cache, set HF_HUB_OFFLINE=1"
        ) from err


def hold_out(rows: list[dict[str, Any]], cfg: Any) -> TaskSplits:
    """Shuffle checked rows with ``cfg.seed``; the first ``cfg.eval_size`` are eval, then up to ``cfg.train_size``
    (0: all the rest) are train. Raises ``ValueError`` when no train row would be left."""
    if len(rows) <= cfg.eval_size:
        raise ValueError(
            f"task.path={cfg.path} has {len(rows)} usable rows, not more than task.eval_size={cfg.eval_size}"
        )
    rows = list(rows)
    random.Random(cfg.seed).shuffle(rows)
    eval_rows, train_rows = rows[: cfg.eval_size], rows[cfg.eval_size :]
    if cfg.train_size:
        train_rows = train_rows[: cfg.train_size]

    def columns(part: list[dict[str, Any]]) -> dict[str, list]:
        return {key: [r[key] for r in part] for key in part[0]}

    return TaskSplits(train=Dataset.from_dict(columns(train_rows)), eval=Dataset.from_dict(columns(eval_rows)))
