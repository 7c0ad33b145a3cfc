"""A reward of your own, for ``task=prompts``: write a sentence of exactly ``words`` words.

Used as ``'task.rewards=[{name: examples.word_count.word_count}]'`` from the repository root (any importable module
works the same way). TRL's contract: ``fn(completions, **columns) -> list[float | None]``, where each dataset column
(here ``words``) arrives as a list, one value per completion.
"""

from __future__ import annotations

from typing import Any


def word_count(completions: list[Any], words: list[int], **_: Any) -> list[float | None]:
    """1.0 for exactly ``words`` words; otherwise half of how close it is (0.5 at one word off a target of many,
    0 at twice the target or none), so that the exact count always pays clearly more; ``None`` without a target."""
    scores: list[float | None] = []
    for completion, target in zip(completions, words, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        if not isinstance(target, int) or target < 1:
            scores.append(None)
            continue
        off = abs(len(text.split()) - target)
        scores.append(1.0 if off == 0 else 0.5 * max(0.0, 1.0 - off / target))
    return scores
