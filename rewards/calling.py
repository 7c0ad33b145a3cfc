"""Rewards called as TRL calls them, outside training: the held-out evaluations, ``grpo_ext.infer`` and
``grpo_ext.difficulty`` hand a reward the same arguments TRL does, and tolerate its failures as training does."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from grpo_ext.rewards import score_results
from grpo_ext.rewards.guard import RewardFailureError, check_values

log = logging.getLogger(__name__)


def as_trl_passes(completions: list[str], prompt: Any) -> list[Any]:
    """``completions`` as TRL hands them to a reward: after a chat ``prompt``, each as one assistant message
    (``[{"role": "assistant", "content": text}]``); after a plain one, the text. Scored as plain text after chat
    prompts, a reward written to TRL's contract (``c[0]["content"]``) failed on every completion of the first
    evaluation, which stopped the run before its first step."""
    if isinstance(prompt, list):
        return [[{"role": "assistant", "content": text}] for text in completions]
    return completions


def trl_arguments(prompts: list[Any], completions: list[Any], tokenizer: Any, state: Any = None) -> dict[str, Any]:
    """What TRL gives a reward besides the completions and the dataset's columns, for a completion of each of
    ``prompts``: the prompts, ``completion_ids`` (the tokens ``generate`` produced; for text from elsewhere, the text
    tokenized again), ``trainer_state`` (the Trainer's during training, else a new one at step 0), and
    ``log_extra`` and ``log_metric``, which log nothing outside training. A reward that read any of them failed on
    every completion of the first evaluation, which stopped the run."""
    from transformers import TrainerState

    if all(hasattr(c, "ids") for c in completions):  # generated here (backends.generation.Completion)
        ids: Any = [c.ids for c in completions]
    else:
        ids = tokenizer(completions, add_special_tokens=False)["input_ids"] if tokenizer is not None else None
    return {"prompts": prompts, "completion_ids": ids, "trainer_state": state or TrainerState(),
            "log_extra": _log_nothing, "log_metric": _log_nothing}  # fmt: skip


def _log_nothing(*args: Any, **kwargs: Any) -> None:
    """``log_extra`` and ``log_metric`` outside training: there is no completions table or step to log to."""


PER_COMPLETION = ("prompts", "completion_ids")  # the TRL arguments that hold one value per completion


def score_tolerantly(
    reward: Callable, completions: list[Any], columns: dict[str, list[Any]], trl: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """``score_results``, with the tolerance training's ``reward_guard`` has: when the reward raises or returns
    what is not a number (or ``None``) for each completion, each completion is scored alone, and the ones that still
    fail score ``None`` (not accurate) with their ``error``, logged with the first traceback. Without it, one bad
    held-out completion ended a training run at its evaluation, which the same failure in a training batch does
    not. ``RewardFailureError`` when every completion fails: a broken reward, not a bad completion."""
    try:
        return _checked(score_results(reward, completions, columns, trl), len(completions))
    except Exception:  # noqa: BLE001 - scored one at a time below, where the failures are told apart
        pass
    results = []
    first = None
    for i, completion in enumerate(completions):
        try:
            one = {k: v[i : i + 1] if k in PER_COMPLETION and v is not None else v for k, v in (trl or {}).items()}
            results += _checked(score_results(reward, [completion], {k: [v[i]] for k, v in columns.items()}, one), 1)
        except Exception as err:  # noqa: BLE001 - this completion's failure, logged once below
            first = first or traceback.format_exc()
            results.append({"reward": None, "error": f"{type(err).__name__}: {err}"})
    failed = sum("error" in r for r in results)
    name = getattr(reward, "__name__", type(reward).__name__)
    if failed and failed == len(results):
        raise RewardFailureError(f"reward {name} failed on every one of the {failed} completions to score:\n{first}")
    if failed:
        log.warning("reward %s failed on %d of the %d completions to score, each scored None (not accurate); "
                    "the first failure:\n%s", name, failed, len(results), first)  # fmt: skip
    return results


def _checked(results: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """``results`` when there is one per completion and each ``reward`` is a finite number or ``None``."""
    if len(results) != n:
        raise ValueError(f"returned {len(results)} values for {n} completions")
    check_values([r.get("reward") for r in results], n)
    return results
