"""A reward that scores only its part's rows of a task mixture, and the per-part training reward.

In a mixture (``task=mix``) every row names its part in the column ``task``. ``for_part(reward, part, weight,
ledger)`` wraps one of a part's rewards: it is called on the batch as TRL calls every reward, scores the part's rows
with the wrapped reward (the other rows' columns are not its own) and gives ``None`` to the others, which TRL leaves
out of that reward's mean and of the rows' total. Its name is ``PART/REWARD``, so that two parts with the same reward
never share a metric (``rewards/PART/REWARD/mean``). Sync, async and worker-process rewards keep their kind.

A part's ``Ledger`` adds up its rewards' values on each batch, weighted as TRL weighs them, and logs the part's mean
training reward through TRL's ``log_metric`` as ``PART/reward`` once every one of its rewards has scored the batch
(logged as ``train/PART/reward`` in W&B).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

TASK_COLUMN = "task"


class Ledger:
    """The weighted sum of a part's rewards on the batch being scored, logged when complete."""

    def __init__(self, part: str, rewards: int) -> None:
        self.part, self.rewards = part, rewards
        self.batch: int | None = None
        self.totals: list[float] = []
        self.seen = 0

    def add(self, batch: int, values: list[Any], weight: float, log_metric: Any) -> None:
        """One of the part's rewards scored ``batch`` (an identity TRL's arguments share for every reward of a batch)
        with ``values`` on the part's rows, weighted by ``weight``."""
        if batch != self.batch or len(values) != len(self.totals):
            self.batch, self.totals, self.seen = batch, [0.0] * len(values), 0
        for i, value in enumerate(values):
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.totals[i] += weight * float(value)
        self.seen += 1
        if self.seen == self.rewards:
            if self.totals and callable(log_metric):
                log_metric(f"{self.part}/reward", sum(self.totals) / len(self.totals))
            self.batch = None


class _PartReward:
    def __init__(self, reward: Callable, part: str, weight: float, ledger: Ledger | None) -> None:
        self.reward, self.part, self.weight, self.ledger = reward, part, weight, ledger
        self.__name__ = f"{part}/{getattr(reward, '__name__', type(reward).__name__)}"
        self.rows_of = part  # check_columns reads this reward's columns on these rows only

    def __getattr__(self, name: str) -> Any:  # columns, close(), full_reward... of the wrapped reward
        if name in ("reward", "score", "score_batch", "score_each"):  # these would score every part's rows
            raise AttributeError(name)
        return getattr(self.reward, name)

    def _own(self, completions: list[Any], kwargs: dict[str, Any]) -> tuple[list[int], list[Any], dict[str, Any]]:
        """The indices of this part's rows, their completions, and the keyword arguments cut to them."""
        labels = kwargs.get(TASK_COLUMN)
        n = len(completions)
        rows = [i for i in range(n) if labels is None or labels[i] == self.part]
        own = {k: [v[i] for i in rows] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}
        return rows, [completions[i] for i in rows], own

    def _spread(self, rows: list[int], n: int, values: list[Any], kwargs: dict[str, Any]) -> list[Any]:
        out: list[Any] = [None] * n
        for i, value in zip(rows, values, strict=True):
            out[i] = value
        if self.ledger is not None and rows:
            self.ledger.add(id(kwargs.get("completion_ids")), values, self.weight, kwargs.get("log_metric"))
        return out


class PartReward(_PartReward):
    def __call__(self, completions: list[Any], **kwargs: Any) -> list[Any]:
        rows, own_completions, own = self._own(completions, kwargs)
        values = list(self.reward(completions=own_completions, **own)) if rows else []
        return self._spread(rows, len(completions), values, kwargs)


class AsyncPartReward(_PartReward):
    async def __call__(self, completions: list[Any], **kwargs: Any) -> list[Any]:
        rows, own_completions, own = self._own(completions, kwargs)
        values = list(await self.reward(completions=own_completions, **own)) if rows else []
        return self._spread(rows, len(completions), values, kwargs)


class WorkersPartReward(PartReward):
    def score_each(self, completions: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], list[tuple[int, str]]]:
        """For a reward run in worker processes (``rewards.workers``): its values on this part's rows, and their
        failures, which the guard counts."""
        rows, own_completions, own = self._own(completions, kwargs)
        reward: Any = self.reward
        values, errors = reward.score_each(own_completions, own) if rows else ([], [])
        return self._spread(rows, len(completions), values, kwargs), [(rows[i], said) for i, said in errors]


def for_part(reward: Callable, part: str, weight: float = 1.0, ledger: Ledger | None = None) -> _PartReward:
    """``reward`` scoring only the rows of ``part`` (see the module docstring)."""
    from grpo_ext.rewards.guard import is_async_reward

    if hasattr(reward, "score_each"):
        return WorkersPartReward(reward, part, weight, ledger)
    return (AsyncPartReward if is_async_reward(reward) else PartReward)(reward, part, weight, ledger)
