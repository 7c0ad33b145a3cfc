"""Reward functions for GRPO, in TRL's reward contract, and the registry that names them.

Every reward here is a callable ``fn(completions, **columns) -> list[float | None]``: ``completions`` are strings
(plain prompts) or lists of chat messages (chat prompts), each dataset column arrives as a keyword list of the same
length, and ``None`` marks a completion the reward could not score. Rewards never raise on a bad completion.

The registry key equals the callable's ``__name__``, so a config name is also the W&B metric name
(``rewards/<name>/mean``). This subpackage is torch-free so that worker processes import it quickly.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from grpo_ext.rewards.arithmetic import ArithmeticShaping
from grpo_ext.rewards.math_grader import MathGrader
from grpo_ext.rewards.python_exec import PythonExec
from grpo_ext.rewards.reasoning_gym import ReasoningGymScore

# name -> factory(**params) returning a reward callable. Later rewards are added here, nowhere else.
REWARDS: dict[str, Callable[..., Callable]] = {
    "arithmetic_shaping": ArithmeticShaping,
    "math": MathGrader,
    "python_exec": PythonExec,
    "reasoning_gym": ReasoningGymScore,
}


# What TRL 1.16 passes every reward by keyword besides the dataset's columns.
TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")


def build_reward(name: str, params: dict[str, Any] | None = None) -> Callable:
    """Build the reward called ``name`` with ``params``.

    ``name`` is a registry key or a dotted path ``package.module.attr`` to a user's own reward. A dotted path to a
    class (or any factory) is called with ``params``; a dotted path to a plain function is used as it is, and then
    ``params`` must be empty.

    Raises:
        ValueError: unknown name, or parameters the reward does not take (the message lists the valid ones).
    """
    params = dict(params or {})
    if name in REWARDS:
        factory = REWARDS[name]
    elif "." in name:
        factory = _import_dotted(name)
        if not isinstance(factory, type):
            if params:
                raise ValueError(f"reward {name!r} is a function, so it takes no params; got {sorted(params)}")
            return _check_signature(name, factory)
    else:
        raise ValueError(f"unknown reward {name!r}; valid names: {sorted(REWARDS)} or a dotted path pkg.module.fn")
    try:
        reward = factory(**params)
    except TypeError as err:
        accepted = getattr(factory, "PARAMS", None)
        hint = f"; it accepts {sorted(accepted)}" if accepted else ""
        raise ValueError(f"bad params for reward {name!r}: {err}{hint}") from err
    return reward if name in REWARDS else _check_signature(name, reward)


def _check_signature(name: str, reward: Any) -> Callable:
    """``reward`` when TRL can call it: a callable taking ``completions`` and every keyword TRL passes (``**kwargs``
    takes them all); ``ValueError`` saying what to change otherwise."""
    if not callable(reward):
        raise ValueError(f"reward {name!r} is a {type(reward).__name__}, not a function or callable object")
    parameters = _parameters(reward)
    if parameters is None or any(p.kind is p.VAR_KEYWORD for p in parameters):  # no signature: nothing to check
        return reward
    named = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    refused = [arg for arg in TRL_ARGUMENTS if arg not in named]
    if refused:
        shown = ", ".join(str(p) for p in parameters)
        raise ValueError(
            f"reward {name!r} takes ({shown}), but TRL calls it with the keyword arguments {', '.join(refused)} and "
            "one per dataset column: add **kwargs to its parameters"
        )
    return reward


def reward_columns(reward: Callable) -> tuple[str, ...]:
    """The dataset columns ``reward`` reads: those it declares (``columns``), else, for a user's reward, the
    parameters it requires beyond what TRL passes (``def fn(completions, words, **kwargs)`` reads ``words``)."""
    if hasattr(reward, "columns"):
        return tuple(reward.columns)
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(
        p.name
        for p in _parameters(reward) or ()
        if p.kind in named and p.default is p.empty and p.name not in TRL_ARGUMENTS
    )


def _parameters(reward: Callable) -> list[inspect.Parameter] | None:
    """The parameters of ``reward`` (a function, or a callable object's ``__call__``); ``None`` without a signature."""
    try:
        return list(inspect.signature(reward).parameters.values())
    except (TypeError, ValueError):  # a builtin, or a callable that hides its signature
        return None


def score_results(
    reward: Callable,
    completions: list[Any],
    columns: dict[str, list[Any]],
    trl_arguments: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One result dict per completion: ``reward`` (a float, or None where the reward does not apply) and whatever
    details the reward reports (``status``, ...).

    A reward that scores batches itself (``score_batch``: the sandbox, the math grader) gets them all at once, with
    the columns it declares; one with a ``score`` method gets one completion at a time; any other is called as TRL
    calls it, every argument by keyword, with ``trl_arguments`` (``prompts``, ``completion_ids``, ``trainer_state``,
    ``log_extra``, ``log_metric``) where the caller has them. Async rewards are awaited.
    """
    if hasattr(reward, "score_batch"):
        names = (*reward_columns(reward), *getattr(reward, "optional_columns", ()))
        return reward.score_batch(completions, **{name: columns[name] for name in names if name in columns})
    if hasattr(reward, "score"):
        results = []
        for i, completion in enumerate(completions):
            result = reward.score(completion, **{key: values[i] for key, values in columns.items()})
            results.append(dict(_awaited(result)))
        return results
    values = reward(completions=completions, **(trl_arguments or {}), **columns)
    return [{"reward": value} for value in _awaited(values)]


def _awaited(value: Any) -> Any:
    """``value``, awaited when it is awaitable (an async reward's result)."""
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    return asyncio.run(wait())


def _import_dotted(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"cannot import reward {path!r}: {err}") from err
    if not hasattr(module, attr):
        raise ValueError(f"module {module_name!r} has no attribute {attr!r} (reward {path!r})")
    return getattr(module, attr)


def build_rewards(specs: list[dict[str, Any]]) -> tuple[list[Callable], list[float]]:
    """Build a task's rewards from its ``rewards`` entries (``name``, ``weight``, ``params``); return them and
    their weights. Errors name the entry (``task.rewards[i]``)."""
    if not specs:
        raise ValueError("task.rewards is empty: a task needs at least one reward")
    funcs, weights = [], []
    for i, spec in enumerate(specs):
        try:
            reward = build_reward(spec["name"], spec.get("params"))
            if spec.get("timeout") is not None:
                reward = _in_workers(spec, reward)
        except ValueError as err:
            raise ValueError(f"task.rewards[{i}]: {err}") from err
        funcs.append(reward)
        weights.append(float(spec.get("weight", 1.0)))
    return funcs, weights


def _in_workers(spec: dict[str, Any], reward: Callable) -> Callable:
    """The reward of ``spec`` run in worker processes with its ``timeout`` per completion (``InWorkers``)."""
    name, timeout, workers = spec["name"], spec["timeout"], spec.get("workers", 2)
    if name in REWARDS:
        raise ValueError(
            f"timeout is for rewards of your own; {name!r} keeps its own limits (its params, e.g. params.timeout)"
        )
    if timeout <= 0 or workers < 1:
        raise ValueError(f"timeout must be > 0 and workers >= 1, got timeout={timeout}, workers={workers}")
    from grpo_ext.rewards.workers import InWorkers

    return InWorkers(name, dict(spec.get("params") or {}), float(timeout), int(workers), reward)
