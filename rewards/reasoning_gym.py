"""``reasoning_gym``: a completion scored by the reasoning-gym generator that made its row (its own ``score_answer``).

The row's ``rg_entry`` column holds the generator's entry (question, answer, metadata; JSON, as ``task=reasoning_gym``
writes it). The completion's answer is the text of its last ``<answer>...</answer>`` block, the format reasoning-gym's
prompts ask for; a completion without one scores 0. Each completion is scored in a worker process with a wall-clock
deadline (``timeout``): a scorer that hangs gives ``None`` (its worker replaced), one that raises gives 0, and
neither stops the run. Needs the ``reasoning_gym`` extra (``pip install 'grpo-ext[reasoning_gym]'``).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from grpo_ext.rewards.text import completion_text

logger = logging.getLogger(__name__)

_ANSWER = re.compile(r"<answer>\s?(.*?)\s?</answer>", re.DOTALL)
INSTALL = "pip install 'grpo-ext[reasoning_gym]' (reasoning-gym 0.1.25)"


def extract_answer(text: str) -> str | None:
    """The text of the last ``<answer>...</answer>`` block, stripped; ``None`` without one."""
    found = _ANSWER.findall(text)
    return found[-1].strip() if found else None


def score_entries(completions: list[Any], rg_entry: list[str], **kwargs: Any) -> list[float]:
    """Each completion's score by its entry's generator, in this process: 0.0 without an answer, or when the
    scorer raises (logged); what the scorer gives otherwise, clipped to [0, 1]."""
    import reasoning_gym

    scores = []
    for completion, encoded in zip(completions, rg_entry, strict=True):
        answer = extract_answer(completion_text(completion))
        if answer is None:
            scores.append(0.0)
            continue
        entry = json.loads(encoded)
        source = entry.get("metadata", {}).get("source_dataset")
        try:
            score = float(reasoning_gym.get_score_answer_fn(source)(answer=answer, entry=entry))
        except Exception as err:  # noqa: BLE001 - a scorer's failure is a wrong answer, not a reason to stop
            logger.warning("reasoning-gym's %s scorer raised on an answer (scored 0): %s: %s",
                           source, type(err).__name__, err)  # fmt: skip
            score = 0.0
        scores.append(min(1.0, max(0.0, score)))
    return scores


class ReasoningGymScore:
    """The ``reasoning_gym`` reward (see the module docstring): ``timeout`` seconds per completion, in ``workers``
    processes."""

    columns = ("rg_entry",)
    PARAMS = ("timeout", "workers")

    def __init__(self, timeout: float = 5.0, workers: int = 2) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"reasoning_gym: timeout must be a number of seconds > 0, got {timeout!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"reasoning_gym: workers must be an integer >= 1, got {workers!r}")
        try:
            import reasoning_gym  # noqa: F401 - checked here: a run without the extra is refused at start
        except ImportError as err:
            raise ValueError(f"the reasoning_gym reward needs reasoning-gym: {INSTALL}") from err
        self.timeout, self.workers = float(timeout), workers
        self.__name__ = "reasoning_gym"
        self.pool: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "pool": None}  # worker processes do not travel

    def __call__(self, completions: list[Any], rg_entry: list[str], **kwargs: Any) -> list[float | None]:
        from grpo_ext.rewards.workers import Pool, call_one

        if self.pool is None:
            self.pool = Pool(f"{__name__}.score_entries", {}, self.workers, call_one, "forkserver")
        payloads = [
            (completion_text(c), {"rg_entry": [entry]}) for c, entry in zip(completions, rg_entry, strict=True)
        ]
        scores: list[float | None] = [None] * len(completions)
        for index, outcome, result in self.pool.run(payloads, self.timeout):
            if outcome == "ok" and result[0] == "ok":
                scores[index] = result[1][0]
            else:  # a timeout or a dead worker (replaced), or the scorer's module failing to import
                logger.warning("reasoning_gym: completion %d not scored (%s); its reward is None", index,
                               outcome if outcome != "ok" else result[1].strip().splitlines()[-1])  # fmt: skip
        return scores

    def close(self) -> None:
        if getattr(self, "pool", None) is not None:  # also from __del__ of a half-built instance
            self.pool.close()
            self.pool = None

    def __del__(self) -> None:
        self.close()
