"""A reward of your own, for ``task=prompts``: write a sentence of exactly ``words`` words.

Used as ``'task.rewards=[{name: examples.word_count.word_count}]'`` from the repository root (any importable module
works the same way). TRL's contract: ``fn(completions, **columns) -> list[float | None]``, where each dataset column
(here ``words``) arrives as a list, one value per completion.
"""

from __future__ import annotations

from typing import Any


def word_count(completions: list[Any], words: list[int], **_: Any) -> list[float | None]:
    """1.0 for exactly ``words`` words, less the further off (0 at twice or none); ``None`` without a target."""
    scores: list[float | None] = []
    for completion, target in zip(completions, words, strict=True):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        if not isinstance(target, int) or target < 1:
            scores.append(None)
            continue
        scores.append(max(0.0, 1.0 - abs(len(text.split()) - target) / target))
    return scores
