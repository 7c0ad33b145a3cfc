"""Rewards used by tests through dotted paths (``reward_fixtures.NAME``), as a user's own rewards would be."""

from __future__ import annotations

import os
import time

IMPORTED_IN = os.getpid()


def imported_elsewhere(completions, **kwargs):
    """1.0 where the process scoring did not import this module itself (a forkserver imported it before the fork)."""
    return [float(IMPORTED_IN != os.getpid()) for _ in completions]


def prefers_short(completions, **kwargs):
    """Higher for shorter completions: gives a random model's group a reward spread, hence a gradient."""
    return [-float(len(c if isinstance(c, str) else c[-1]["content"])) / 10 for c in completions]


def varies_on_odd_answers(completions, answer, **kwargs):
    """0 for every completion of a problem whose answer is even (no signal there); for an odd answer, a score that
    differs from one completion to the next (a checksum of its text, below 1.0, the full score), hence a signal."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [sum(map(ord, t)) % 101 / 101 if int(a) % 2 else 0.0 for t, a in zip(texts, answer, strict=True)]


def chat_only(completions, **kwargs):
    """Written as TRL's documentation writes rewards for chat prompts: each completion is a list of messages. Fails
    on plain text, which our evaluations used to score."""
    return [len(c[0]["content"]) / 100 for c in completions]


def reads_trl_arguments(prompts, completions, completion_ids, trainer_state, log_metric, log_extra, **kwargs):
    """Reads every argument TRL gives a reward besides the columns (prompts first, as TRL's documentation writes
    them): the step it was scored at, plus a little for each completion's tokens and its prompt."""
    log_metric("calls", 1.0)
    log_extra("step", [trainer_state.global_step] * len(completions))
    return [
        trainer_state.global_step + len(ids) / 1000 + (p[-1]["role"] == "user") / 10
        for p, ids in zip(prompts, completion_ids, strict=True)
    ]


def every_other(completions, **kwargs):
    """``None`` (does not apply) for every other completion, ``prefers_short``'s score for the rest."""
    return [None if i % 2 else score for i, score in enumerate(prefers_short(completions))]


def hangs(completions, **kwargs):
    if any("hang" in str(c) for c in completions):
        time.sleep(3600)
    return [1.0 for _ in completions]


def crashes(completions, **kwargs):
    if any("crash" in str(c) for c in completions):
        os._exit(13)
    return [1.0 for _ in completions]


def raises(completions, **kwargs):
    raise RuntimeError("reward bug")


class Scaled:
    """A parametrised user reward (a class called with ``params``)."""

    def __init__(self, factor: float = 1.0) -> None:
        self.factor = factor
        self.__name__ = "scaled"

    def __call__(self, completions, **kwargs):
        return [self.factor * len(str(c)) for c in completions]


def fails_on_some(completions, **kwargs):
    """Raises for a batch holding a completion that contains the letter 'q'; fine one completion at a time."""
    text = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    if len(text) > 1 and any("q" in t for t in text):
        raise ValueError("cannot score a batch with q in it")
    if any("q" in t for t in text):
        raise ValueError("q is not allowed")
    return [1.0 for _ in text]


def always_fails(completions, **kwargs):
    raise RuntimeError("this reward is broken")


class ScriptedEvaluations:
    """Held-out evaluations scored by script, as if the policy's greedy accuracy went 0% -> 100% -> 50% (before
    step 1, then at each ``eval.every``), for tests of the best model where the evaluating process is not the test's
    own. An evaluation is a call with exactly ``eval_size`` completions; any other call is a training batch, scored
    as ``prefers_short`` scores it."""

    full_reward = 1.0

    def __init__(self, eval_size: int = 4, script: tuple[float, ...] = (0.0, 1.0, 0.5)) -> None:
        self.__name__ = "scripted_evaluations"
        self.eval_size, self.script, self.evaluations = eval_size, tuple(script), 0

    def __call__(self, completions, **kwargs):
        if len(completions) != self.eval_size:
            return prefers_short(completions)
        share = self.script[min(self.evaluations, len(self.script) - 1)]
        self.evaluations += 1
        return [1.0 if i < round(share * len(completions)) else 0.0 for i in range(len(completions))]


class FailsInEvaluations:
    """A reward that raises on every other held-out completion (a call with exactly ``eval_size`` completions, or one
    completion at a time), and scores training batches as ``prefers_short`` does."""

    def __init__(self, eval_size: int = 4) -> None:
        self.__name__ = "fails_in_evaluations"
        self.eval_size, self.alone = eval_size, 0

    def __call__(self, completions, **kwargs):
        if len(completions) == self.eval_size:
            raise ValueError("cannot score this batch")
        if len(completions) == 1:
            self.alone += 1
            if self.alone % 2:
                raise ValueError("cannot score this completion")
            return [1.0]
        return prefers_short(completions)


def records_expressions(completions, expression, **kwargs):
    """Appends each scored row's ``expression`` to the file named by ``$GRPO_EXT_TEST_SEEN`` (which rows a run's
    evaluations reached), and scores as ``prefers_short``."""
    with open(os.environ["GRPO_EXT_TEST_SEEN"], "a") as seen:
        seen.writelines(f"{e}\n" for e in expression)
    return prefers_short(completions)


def without_kwargs(completions, words):
    """A user's reward that forgot ``**kwargs``: TRL's call would fail on every batch."""
    return [1.0 for _ in completions]


def reads_words(completions, words, scale=1.0, **kwargs):
    """A user's reward reading the column ``words`` (required) and taking an optional ``scale``."""
    return [scale * w for w in words]


def returns_strings(completions, **kwargs):
    return ["1.0" for _ in completions]


def returns_inf(completions, **kwargs):
    return [float("inf") for _ in completions]


class OnlyInTheMainProcess:
    """Builds in the trainer's process but not in a worker's (as a module found only from the trainer's cwd)."""

    def __init__(self) -> None:
        import multiprocessing

        if multiprocessing.current_process().name != "MainProcess":
            raise ImportError("no module named 'my_private_helpers'")
        self.__name__ = "only_in_the_main_process"

    def __call__(self, completions, **kwargs):
        return [1.0 for _ in completions]


class SlowToBuild:
    """Takes 1.5 s to build in a worker process (a large import, a model to load), then scores at once."""

    def __init__(self) -> None:
        import multiprocessing

        if multiprocessing.current_process().name != "MainProcess":
            time.sleep(1.5)
        self.__name__ = "slow_to_build"

    def __call__(self, completions, **kwargs):
        return [1.0 for _ in completions]


def solves_even_answers(completions, answer, **kwargs):
    """1.0 (the full score) for every completion of a problem whose answer is even, 0.0 for an odd one: each group
    solved in every completion or in none, whatever the model writes."""
    return [float(int(a) % 2 == 0) for a in answer]


def solves_level_one(completions, level, **kwargs):
    """1.0 for every completion of a level-1 row; below it elsewhere, differing from one completion to the next (a
    checksum of its text): a curriculum passes level 1 at once and stays at the next."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [1.0 if lv == 1 else sum(map(ord, t)) % 101 / 101 * 0.5 for t, lv in zip(texts, level, strict=True)]


def solves_even_lengths(completions, **kwargs):
    """1.0 for a completion of an even number of characters, else 0.0: a pass rate that follows what was sampled."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(len(t) % 2 == 0) for t in texts]
