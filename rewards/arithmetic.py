"""``arithmetic_shaping``: the seed project's shaped reward for integer arithmetic answered in ``<answer>`` tags.

+0.2 for exactly one well-formed ``<answer>...</answer>`` block, +0.2 when the single number inside is within 1 of
the truth, +0.6 when it is exact (1.0 in all). The three amounts and the tolerance are parameters. Numbers are read
as ASCII decimals and compared exactly (``decimal.Decimal``), so huge or long answers cannot overflow or round.
"""

from __future__ import annotations

import logging
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from grpo_ext.rewards.text import completion_text

logger = logging.getLogger(__name__)

OPEN_TAG, CLOSE_TAG = "<answer>", "</answer>"
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
# Longer numbers are scored as wrong rather than parsed: no arithmetic answer in this task comes near it.
MAX_NUMBER_CHARS = 1000


def parse_number(text: str) -> Decimal | None:
    """A plain ASCII decimal (``-12``, ``+3``, ``4.50``), surrounding whitespace allowed; anything else is ``None``."""
    text = text.strip()
    if len(text) > MAX_NUMBER_CHARS or not _NUMBER.fullmatch(text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def extract_answer(text: str) -> tuple[str | None, str]:
    """The content of the single ``<answer>`` block in ``text``, and a status saying why there is none."""
    opens, closes = text.count(OPEN_TAG), text.count(CLOSE_TAG)
    if opens == 0 and closes == 0:
        return None, "no_answer"
    if opens != 1 or closes != 1:
        return None, "multiple_answers" if opens > 1 or closes > 1 else "malformed_answer"
    start, end = text.index(OPEN_TAG) + len(OPEN_TAG), text.index(CLOSE_TAG)
    if end < start:
        return None, "malformed_answer"
    return text[start:end], "ok"


class ArithmeticShaping:
    """Shaped reward: format, closeness and exactness of an integer answer. Reads the ``answer`` column."""

    columns = ("answer",)
    PARAMS = ("format_reward", "close_reward", "exact_reward", "tolerance")

    def __init__(
        self,
        format_reward: float = 0.2,
        close_reward: float = 0.2,
        exact_reward: float = 0.6,
        tolerance: float = 1.0,
    ) -> None:
        for key, value in zip(self.PARAMS, (format_reward, close_reward, exact_reward, tolerance), strict=True):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"arithmetic_shaping: {key} must be a number >= 0, got {value!r}")
        self.format_reward = float(format_reward)
        self.close_reward = float(close_reward)
        self.exact_reward = float(exact_reward)
        self.tolerance = Decimal(str(tolerance))
        self.__name__ = "arithmetic_shaping"

    def score(self, completion: Any, answer: Any = None, **_: Any) -> dict[str, Any]:
        """Score one completion against its gold ``answer``; returns ``reward`` plus what was read."""
        gold = parse_number(str(answer)) if isinstance(answer, (str, int)) and not isinstance(answer, bool) else None
        if gold is None:
            logger.warning("arithmetic_shaping: gold answer %r is not a number; reward is None", answer)
            return {"reward": None, "status": "bad_gold"}
        inner, status = extract_answer(completion_text(completion))
        if inner is None:
            return {"reward": 0.0, "status": status}
        value = parse_number(inner)
        if value is None:
            return {"reward": self.format_reward, "status": "not_a_number", "extracted": inner[:100]}
        reward = self.format_reward
        if abs(value - gold) <= self.tolerance:
            reward += self.close_reward
        exact = value == gold
        if exact:
            reward += self.exact_reward
        status = "exact" if exact else ("close" if reward > self.format_reward else "wrong")
        return {"reward": reward, "status": status, "extracted": str(value)}

    def __call__(self, completions: list[Any], answer: list[Any] | None = None, **_: Any) -> list[float | None]:
        if answer is None:
            logger.error("arithmetic_shaping: the dataset has no 'answer' column; every reward is None")
            return [None] * len(completions)
        return [self.score(c, a)["reward"] for c, a in zip(completions, answer, strict=True)]
