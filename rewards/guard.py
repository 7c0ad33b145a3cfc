"""Rewards that cannot take a run down: a reward that raises on one completion gives ``None`` for it.

``guard(reward, max_failure_rate)`` wraps a reward (sync or async, keeping its kind so that TRL still runs async
rewards concurrently, and its ``__name__``). When the wrapped reward raises or returns the wrong number of values for
a batch, each completion is scored on its own: the ones that fail get ``None`` (TRL leaves them out of that reward),
each failure is logged with its completion and traceback, and the count is logged as ``rewards/<name>/errors``. If
more than ``max_failure_rate`` of a batch fails, the run stops with the first traceback: a reward that fails
everywhere is a bug to fix, not noise to train through. A reward run in worker processes with a deadline
(``reward_workers.InWorkers``) is scored one completion at a time from the start, its timeouts counted as failures.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import traceback
from collections.abc import Callable, Iterator
from typing import Any

logger = logging.getLogger(__name__)


class RewardFailureError(RuntimeError):
    """Too many completions of one batch made a reward raise."""


def check_values(values: Any, n: int) -> list[Any]:
    """``values`` as a list when they are ``n`` numbers or ``None``s (what TRL can turn into a tensor); ``ValueError``
    saying what is wrong otherwise."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"returned {type(values).__name__} {values!r:.60}, not a list of {n} numbers")
    values = list(values)
    if len(values) != n:
        raise ValueError(f"returned {len(values)} values for {n} completions")
    for value in values:
        if value is None:
            continue
        if isinstance(value, (str, bytes)) or not hasattr(type(value), "__float__"):
            raise ValueError(
                f"returned {type(value).__name__} {value!r:.60}: a reward returns numbers, or None where it does not "
                "apply"
            )
        if math.isinf(float(value)):
            raise ValueError(f"returned {value}: a reward must be finite (None where it does not apply)")
    return values


def slice_kwargs(kwargs: dict[str, Any], n: int, i: int) -> dict[str, Any]:
    """The keyword arguments of completion ``i``: per-completion lists sliced, the rest passed as they are."""
    return {k: [v[i]] if isinstance(v, list) and len(v) == n else v for k, v in kwargs.items()}


class _Guard:
    def __init__(self, reward: Callable, max_failure_rate: float, log_columns: tuple[str, ...] = ()) -> None:
        self.reward = reward
        self.max_failure_rate = max_failure_rate
        self.log_columns = log_columns  # ground-truth columns to add to TRL's completions table
        self.__name__ = getattr(reward, "__name__", type(reward).__name__)
        self.failures = 0  # over the whole run
        self.warned = False  # about a batch that fails when none of its completions does

    def __getattr__(self, name: str) -> Any:  # columns, close(), score()... of the wrapped reward
        if name == "reward":
            raise AttributeError(name)
        return getattr(self.reward, name)

    def _scored_alone(self, batch_error: str, n: int) -> None:
        """Warn, once a run, that the batch failed although every completion scores alone (a bug in the reward that
        depends on the batch, e.g. one value for the whole batch), so each is scored alone: slower, and suspect."""
        if not self.warned:
            self.warned = True
            logger.warning(
                "reward %s failed on a batch of %d completions (%s) but not on any of them alone; each completion of "
                "such a batch is scored alone, which is slower: check the reward",
                self.__name__, n, batch_error,
            )  # fmt: skip

    def _finish(self, results: list[Any], errors: list[tuple[int, str]], completions: list[Any], kwargs: dict) -> list:
        log_extra = kwargs.get("log_extra")
        if callable(log_extra):
            for column in self.log_columns:
                if isinstance(kwargs.get(column), list):
                    log_extra(column, [str(v) for v in kwargs[column]])
        self.failures += len(errors)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            log_metric(f"rewards/{self.__name__}/errors", float(len(errors)))
        for i, trace in errors:
            logger.error(
                "reward %s failed on completion %d (its reward is None): %r\n%s",
                self.__name__, i, str(completions[i])[:500], trace,
            )  # fmt: skip
        if errors and len(errors) > self.max_failure_rate * len(completions):
            raise RewardFailureError(
                f"reward {self.__name__} failed on {len(errors)} of {len(completions)} completions, more than "
                f"reward_failure_limit={self.max_failure_rate}; the first failure:\n{errors[0][1]}"
            )
        return results


class GuardedReward(_Guard):
    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        if hasattr(self.reward, "score_each"):  # in worker processes, each completion on its own (reward_workers)
            scored, errors = self.reward.score_each(completions, kwargs)
            return self._finish(scored, errors, completions, kwargs)
        n = len(completions)
        try:
            values = check_values(self.reward(completions=completions, **kwargs), n)
        except Exception as err:  # noqa: BLE001 - find which completions fail, below
            values, batch_error = None, f"{type(err).__name__}: {err}"
        if values is not None:
            return self._finish(values, [], completions, kwargs)
        results: list[Any] = []
        errors = []
        for i in range(n):
            try:
                results.append(
                    check_values(self.reward(completions=[completions[i]], **slice_kwargs(kwargs, n, i)), 1)[0]
                )
            except Exception:  # noqa: BLE001
                results.append(None)
                errors.append((i, traceback.format_exc()))
        if not errors:
            self._scored_alone(batch_error, n)
        return self._finish(results, errors, completions, kwargs)


class AsyncGuardedReward(_Guard):
    async def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        n = len(completions)
        try:
            values = check_values(await self.reward(completions=completions, **kwargs), n)
        except Exception as err:  # noqa: BLE001 - find which completions fail, below
            values, batch_error = None, f"{type(err).__name__}: {err}"
        if values is not None:
            return self._finish(values, [], completions, kwargs)
        results: list[Any] = []
        errors: list[tuple[int, str]] = []
        for i in range(n):
            try:
                results.append(
                    check_values(await self.reward(completions=[completions[i]], **slice_kwargs(kwargs, n, i)), 1)[0]
                )
            except Exception:  # noqa: BLE001
                results.append(None)
                errors.append((i, traceback.format_exc()))
        if not errors:
            self._scored_alone(batch_error, n)
        return self._finish(results, errors, completions, kwargs)


def is_async_reward(reward: Callable) -> bool:
    """Whether calling ``reward`` (a function, a ``functools.partial`` or a callable instance) gives a coroutine."""
    while isinstance(reward, functools.partial):
        reward = reward.func
    if inspect.isfunction(reward) or inspect.ismethod(reward):
        return inspect.iscoroutinefunction(reward)
    return inspect.iscoroutinefunction(type(reward).__call__)


def guard(reward: Callable, max_failure_rate: float, log_columns: tuple[str, ...] = ()) -> _Guard:
    """Wrap ``reward`` so that its failures on single completions become ``None`` (see the module docstring);
    ``log_columns`` are the dataset columns this reward adds to the completions table (each column by one reward)."""
    if not 0.0 <= max_failure_rate <= 1.0:
        raise ValueError(f"reward_failure_limit must be between 0 and 1, got {max_failure_rate}")
    cls = AsyncGuardedReward if is_async_reward(reward) else GuardedReward
    return cls(reward, max_failure_rate, log_columns)


def guard_all(rewards: list[Callable], max_failure_rate: float) -> list[_Guard]:
    """Guard every reward; the first reward that reads a column logs it to the completions table."""
    from grpo_ext.rewards import reward_columns

    logged: set[str] = set()
    guarded = []
    for reward in rewards:
        own = tuple(c for c in reward_columns(reward) if c not in logged)
        logged.update(own)
        guarded.append(guard(reward, max_failure_rate, own))
    return guarded


class _OnceARun(logging.Filter):
    """Lets the first of TRL's "All reward functions returned None" warnings through, with a note, and drops the
    rest. TRL logs one for each batch where some completion has no reward at all, with that completion's whole row
    (tests, solutions...): with a reward that times out now and then, a page per step. Each failure behind it has
    been logged already, with its completion and reason, by the guard."""

    MESSAGE = "All reward functions returned None"

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.MESSAGE not in str(record.msg):  # accelerate prefixes "[RANK 0] "
            return True
        self.seen += 1
        if self.seen == 1:
            record.msg = (
                f"{record.getMessage()}\n(TRL repeats this for every batch with such a completion; this is the only "
                "time this run shows it. A failed reward is logged with its reason above; a reward that returns None "
                "where it does not apply is not an error.)"
            )
            record.args = ()
        return self.seen == 1


@contextlib.contextmanager
def trl_none_warning_once() -> Iterator[_OnceARun]:
    """Within this block, TRL's warning about completions that no reward scored is shown once (``_OnceARun``)."""
    trl_logger = logging.getLogger("trl.trainer.grpo_trainer")
    once = _OnceARun()
    trl_logger.addFilter(once)
    try:
        yield once
    finally:
        trl_logger.removeFilter(once)
