"""Which prompts a run trains on next: online difficulty control (``sampler=adaptive``, ``sampler=curriculum``).

GRPO learns only from groups whose completions score differently; a prompt always solved, or never, costs its share of
the generation and teaches nothing. A ``PromptSampler`` draws each generation batch's prompts from the train split
by what the run has seen of them, and hands TRL the rows as an ``IterableDataset`` (TRL's public surface: no sampler
of TRL's is replaced). What it has seen comes from the completions TRL scores anyway: the task's first reward (each
part's first in a mixture) is wrapped (``observing``) so that every group's pass rate (the share of its completions
the reward scores in full, as ``grpo_ext.difficulty`` defines it) is recorded against its prompt. No completion is
generated for the sampler.

The policies:

- ``adaptive``: prompts never seen are drawn first; among the others, a prompt whose last ``window`` groups were all
  solved (pass rate >= ``solved``) or all failed (<= ``failed``) is drawn with ``weight`` (others 1), and retired
  after ``retire_after`` such groups in a row (0: never);
- ``curriculum``: rows have levels (their ``level`` column: fizzbuzz's problem levels, arithmetic's operand digits);
  the run starts at the lowest, moves up when the pass rate of the last ``window`` groups at its level reaches
  ``advance``, and back down when it falls to ``retreat`` (null: never); ``review`` of each batch comes from the
  levels below.

Each batch ``b`` is drawn from what was seen up to batch ``b - 2`` (the batch before is being scored while ``b`` is
drawn: TRL's data loader reads one batch ahead) and from a random generator seeded with the run's seed and ``b``:
what a batch holds depends on nothing else, so a run resumed from a checkpoint (whose ``sampler.json`` holds what was
seen) draws the batches an unbroken run draws. A policy that has retired every prompt ends the stream: the run stops
there, its best model kept, saying why.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LAG = 2  # batch b is drawn from what was seen of the batches before b - 1
PROMPT_ID, BATCH = "prompt_id", "sampler_batch"  # the columns a sampled row carries
STATE_FILE = "sampler.json"
MEASURED_OUT_OF = 1000  # a measured pass rate counts as this many completions (difficulty.jsonl keeps the rate)
# the pass-rate histogram's bins, as logged: (key, highest pass rate in the bin)
_BINS = (("sampler/prompts_none_solved", 0.0), ("sampler/prompts_solved_to_25", 0.25),
         ("sampler/prompts_solved_to_50", 0.5), ("sampler/prompts_solved_to_75", 0.75),
         ("sampler/prompts_solved_below_100", 0.999999), ("sampler/prompts_all_solved", 1.0))  # fmt: skip
HISTOGRAM = ("sampler/prompts_unseen", *(key for key, _ in _BINS))


def _bin(rate: float) -> str:
    return next(key for key, top in _BINS if rate <= top)


@dataclass(frozen=True)
class Seen:
    """One group: its batch, its prompt (the row of the train split), and how many of its completions passed."""

    batch: int
    prompt: int
    passed: int
    total: int

    @property
    def rate(self) -> float:
        return self.passed / self.total if self.total else 0.0


class PromptSampler:
    """Draws each generation batch of ``per_batch`` prompts from ``rows`` (the train split). ``parts``: each part's
    rows (their indices in ``rows``) and the policy that chooses among them, with its weight: one part holding every
    row for a single task; in a mixture, each batch holds the parts' shares (as ``tasks.mix.weighted_order``), a
    part with nothing left to draw leaving its share to the others."""

    def __init__(
        self,
        rows: Any,
        parts: dict[str, tuple[list[int], Policy]],
        weights: dict[str, float],
        per_batch: int,
        seed: int,
    ) -> None:
        self.rows, self.parts, self.weights, self.per_batch, self.seed = rows, parts, weights, per_batch, seed
        self.local = {label: {row: i for i, row in enumerate(indices)} for label, (indices, _) in parts.items()}
        self.seen: list[Seen] = []
        self.next_batch = 0  # where the stream goes on (a new epoch of the dataset continues it)
        self.stopped: str | None = None  # why the stream ended early

    # what was seen
    def observe(self, batch: int, prompt: int, passed: int, total: int) -> None:
        self.seen.append(Seen(batch, prompt, passed, total))

    def state(self, step: int) -> dict[str, Any]:
        """What a checkpoint at ``step`` keeps: everything seen, the seed and the policies."""
        policies = {label: policy.name for label, (_, policy) in self.parts.items()}
        return {"step": step, "seed": self.seed, "policies": policies,
                "seen": [[s.batch, s.prompt, s.passed, s.total] for s in self.seen]}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        self.seen = [Seen(*entry) for entry in state["seen"]]

    def _known(self, batch: int, label: str) -> list[Seen]:
        """What a part's policy may use to draw ``batch``: its groups of the batches before ``batch - LAG + 1``, by
        the part's own row numbers."""
        local = self.local[label]
        return [Seen(s.batch, local[s.prompt], s.passed, s.total) for s in self.seen
                if s.batch <= batch - LAG and s.prompt in local]  # fmt: skip

    # the stream
    def draw(self, batch: int) -> list[int]:
        """The rows of ``batch``, each part's share chosen by its policy with a generator of the batch's own."""
        from grpo_ext.tasks.mix import apportion

        if batch >= LAG and max((s.batch for s in self.seen), default=-LAG) < batch - LAG:
            log.warning("sampler: batch %d is drawn before batch %d was scored; a resumed run may draw it otherwise",
                        batch, batch - LAG)  # fmt: skip
        rng = random.Random(f"{self.seed}/{batch}")
        total, size = sum(self.weights.values()), self.per_batch
        cumulative = [apportion({k: w / total * size * n for k, w in self.weights.items()}, size * n)
                      for n in (batch, batch + 1)]  # fmt: skip
        wanted = {label: cumulative[1][label] - cumulative[0][label] for label in self.parts}
        chosen: list[int] = []
        short = 0
        for label, (indices, policy) in self.parts.items():
            picks = policy.choose(self._known(batch, label), wanted[label], rng)
            chosen += [indices[i] for i in picks]
            short += wanted[label] - len(picks)
        for label, (indices, policy) in self.parts.items():  # a part with nothing left leaves its share to others
            if not short:
                break
            taken = set(chosen)
            extra = [indices[i] for i in policy.choose(self._known(batch, label), short + len(indices), rng)]
            extra = [row for row in extra if row not in taken][:short]
            chosen += extra
            short -= len(extra)
        if short:  # fewer rows left in all the parts together than a batch holds
            return []
        rng.shuffle(chosen)
        return chosen

    def stream(self) -> Iterator[dict[str, Any]]:
        """The rows, batch after batch, each with its prompt's id and its batch; ends when the policies have nothing
        left to draw."""
        while True:
            batch = self.next_batch
            chosen = self.draw(batch)
            if not chosen:
                policies = {policy.name: policy.exhausted for _, policy in self.parts.values()}
                self.stopped = f"{'; '.join(policies.values())} at batch {batch}"
                log.warning("sampler: %s; the run stops here", self.stopped)
                return
            self.next_batch += 1
            for index in chosen:
                yield {**self.rows[index], PROMPT_ID: index, BATCH: batch}

    def dataset(self) -> Any:
        """The stream as the ``IterableDataset`` TRL trains on (its columns: the split's, the id and the batch)."""
        from datasets import Features, IterableDataset, Value

        features = Features({**self.rows.features, PROMPT_ID: Value("int64"), BATCH: Value("int64")})
        return IterableDataset.from_generator(self._generate, features=features)

    def _generate(self) -> Iterator[dict[str, Any]]:
        yield from self.stream()

    # what it shows
    def figures(self, batch: int) -> dict[str, float]:
        """What the sampler knew when it drew ``batch``: prompts retired and never seen, and each part's level."""
        figures: dict[str, float] = {}
        for label, (_, policy) in self.parts.items():
            for key, value in policy.figures(self._known(batch, label)).items():
                if key in ("sampler/retired", "sampler/unseen"):
                    figures[key] = figures.get(key, 0.0) + value
                else:  # a level: a mixture's each part's own
                    figures[key if len(self.parts) == 1 else key.replace("sampler/", f"sampler/{label}/")] = value
        return figures

    def pass_rates(self) -> dict[int, float]:
        """Each seen prompt's latest pass rate."""
        latest: dict[int, float] = {}
        for s in self.seen:
            latest[s.prompt] = s.rate
        return latest

    def histogram(self) -> dict[str, float]:
        """How many prompts of the train split stand at each pass rate (their latest group's): never seen, none
        solved, up to a quarter, up to half, up to three quarters, short of all, all."""
        counts = dict.fromkeys(HISTOGRAM, 0.0)
        rates = self.pass_rates()
        counts["sampler/prompts_unseen"] = float(len(self.rows) - len(rates))
        for rate in rates.values():
            counts[_bin(rate)] += 1
        return counts

    def seed_from(self, measured: list[dict[str, Any]]) -> int:
        """Start from a ``grpo_ext.difficulty`` measurement (its ``difficulty.jsonl`` rows): each train row whose
        prompt it measured counts as seen with its pass rate, before the first batch. Returns how many."""
        rate_of = {json.dumps(row["prompt"], sort_keys=True): float(row["pass_rate"]) for row in measured}
        found = 0
        for index, prompt in enumerate(self.rows["prompt"]):
            rate = rate_of.get(json.dumps(prompt, sort_keys=True))
            if rate is not None:
                self.observe(-LAG, index, round(rate * MEASURED_OUT_OF), MEASURED_OUT_OF)
                found += 1
        return found


class Policy:
    """How a batch's prompts are chosen from what was seen; ``name`` is the ``sampler`` config's."""

    name = ""
    exhausted = "nothing left to draw"

    def __init__(self, size: int) -> None:
        self.size = size  # rows in the train split

    def choose(self, seen: list[Seen], count: int, rng: random.Random) -> list[int]:
        raise NotImplementedError

    def figures(self, seen: list[Seen]) -> dict[str, float]:
        return {}


class Adaptive(Policy):
    """Unseen prompts first; then prompts whose recent groups were all solved or all failed are drawn less, and
    retired after ``retire_after`` such groups in a row."""

    name = "adaptive"
    exhausted = "every prompt is retired (solved, or failed, in every completion of its last groups)"

    def __init__(self, size: int, solved: float, failed: float, window: int, weight: float, retire_after: int):
        super().__init__(size)
        self.solved, self.failed = solved, failed  # a group's pass rate at or past these: all solved, all failed
        self.window, self.weight, self.retire_after = window, weight, retire_after

    def _history(self, seen: list[Seen]) -> dict[int, list[float]]:
        history: dict[int, list[float]] = defaultdict(list)
        for s in seen:
            history[s.prompt].append(s.rate)
        return history

    def _alike(self, rate: float) -> bool:
        return rate >= self.solved or rate <= self.failed

    def _retired(self, rates: list[float]) -> bool:
        if not self.retire_after or len(rates) < self.retire_after:
            return False
        return all(self._alike(r) for r in rates[-self.retire_after :])

    def choose(self, seen: list[Seen], count: int, rng: random.Random) -> list[int]:
        history = self._history(seen)
        unseen = [i for i in range(self.size) if i not in history]
        rng.shuffle(unseen)
        chosen = unseen[:count]
        if len(chosen) == count:
            return chosen
        candidates, weights = [], []
        for prompt, rates in history.items():
            if self._retired(rates):
                continue
            recent = rates[-self.window :]
            candidates.append(prompt)
            weights.append(self.weight if all(self._alike(r) for r in recent) else 1.0)
        while len(chosen) < count and candidates:
            pick = rng.choices(range(len(candidates)), weights=weights)[0] if sum(weights) > 0 else 0
            chosen.append(candidates.pop(pick))
            weights.pop(pick)
        return chosen

    def figures(self, seen: list[Seen]) -> dict[str, float]:
        history = self._history(seen)
        return {"sampler/retired": float(sum(self._retired(r) for r in history.values())),
                "sampler/unseen": float(self.size - len(history))}  # fmt: skip


class Curriculum(Policy):
    """One level at a time, easiest first: up when the last ``window`` groups at the level pass ``advance`` on
    average, down when they fall to ``retreat``; ``review`` of each batch from the levels below."""

    name = "curriculum"

    def __init__(self, levels: list[int], advance: float, retreat: float | None, window: int, review: float) -> None:
        super().__init__(len(levels))
        self.levels = levels  # each row's level
        self.order = sorted(set(levels))
        self.advance, self.retreat, self.window, self.review = advance, retreat, window, review
        self.rows_at = {level: [i for i, own in enumerate(levels) if own == level] for level in self.order}

    def level(self, seen: list[Seen]) -> int:
        """The level after replaying what was seen: each group moves the rolling window of its level's groups."""
        at = 0
        recent: deque[float] = deque(maxlen=self.window)
        for s in seen:
            if self.levels[s.prompt] != self.order[at]:
                continue  # a review group, or one drawn before the last move
            recent.append(s.rate)
            if len(recent) < self.window:
                continue
            mean = sum(recent) / len(recent)
            if mean >= self.advance and at + 1 < len(self.order):
                at, recent = at + 1, deque(maxlen=self.window)
            elif self.retreat is not None and mean <= self.retreat and at > 0:
                at, recent = at - 1, deque(maxlen=self.window)
        return at

    def choose(self, seen: list[Seen], count: int, rng: random.Random) -> list[int]:
        at = self.level(seen)
        below = [i for level in self.order[:at] for i in self.rows_at[level]]
        reviewed = min(len(below), round(self.review * count)) if below else 0
        here = self.rows_at[self.order[at]]
        return rng.sample(below, reviewed) + [rng.choice(here) for _ in range(count - reviewed)] if here else []

    def figures(self, seen: list[Seen]) -> dict[str, float]:
        return {"sampler/level": float(self.order[self.level(seen)])}


class _Observed:
    """A reward that also records, with the sampler, each group's pass rate (the share of its completions scored
    ``full`` or more; a failed score is not a pass, as in ``grpo_ext.difficulty``), and logs (TRL's ``log_metric``)
    the share of the batch's groups solved in every completion and in none, and the figures the batch was drawn
    with. Everything else is the wrapped reward's."""

    def __init__(self, reward: Callable, sampler: PromptSampler, full: float) -> None:
        self.reward, self.sampler, self.full = reward, sampler, full
        self.__name__ = getattr(reward, "__name__", type(reward).__name__)

    def __getattr__(self, name: str) -> Any:  # columns, rows_of, close()... of the wrapped reward
        if name in ("reward", "sampler"):
            raise AttributeError(name)
        return getattr(self.reward, name)

    def record(self, values: list[Any], kwargs: dict[str, Any]) -> None:
        from grpo_ext.rewards.parts import TASK_COLUMN

        prompts, batches = kwargs.get(PROMPT_ID), kwargs.get(BATCH)
        if prompts is None or batches is None:  # an evaluation's rows: not the sampler's
            return
        part, labels = getattr(self.reward, "rows_of", None), kwargs.get(TASK_COLUMN)
        groups: dict[tuple[int, int], list[bool]] = defaultdict(list)
        for i, value in enumerate(values):
            if part is not None and labels is not None and labels[i] != part:
                continue  # another part's row: its own reward judges it
            groups[(batches[i], prompts[i])].append(value is not None and value >= self.full)  # a failure: unsolved
        for (batch, prompt), passed in groups.items():
            self.sampler.observe(batch, prompt, sum(passed), len(passed))
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and groups:
            share = 1 / len(groups)
            log_metric("sampler/all_solved", share * sum(all(p) for p in groups.values()))
            log_metric("sampler/none_solved", share * sum(not any(p) for p in groups.values()))
            for key, value in self.sampler.figures(max(batches)).items():
                log_metric(key, value)


class Observed(_Observed):
    def __call__(self, completions: list[Any], **kwargs: Any) -> list[Any]:
        values = list(self.reward(completions=completions, **kwargs))
        self.record(values, kwargs)
        return values


class AsyncObserved(_Observed):
    async def __call__(self, completions: list[Any], **kwargs: Any) -> list[Any]:
        values = list(await self.reward(completions=completions, **kwargs))
        self.record(values, kwargs)
        return values


def observing(rewards: Sequence[Callable], sampler: PromptSampler | None) -> list[Any]:
    """``rewards`` (the trainer's), the one that says whether a row is solved (the first, or each part's first in a
    mixture) recording what it scores with ``sampler``; as they are without one."""
    from grpo_ext.rewards.guard import is_async_reward

    if sampler is None:
        return list(rewards)
    out: list[Any] = []
    judged: set[str | None] = set()
    for reward in rewards:
        part = getattr(reward, "rows_of", None)
        if part in judged:
            out.append(reward)
            continue
        judged.add(part)
        full = float(getattr(reward, "full_reward", 1.0))
        out.append((AsyncObserved if is_async_reward(reward) else Observed)(reward, sampler, full))
    return out


def for_run(cfg: Any, train: Any, per_batch: int, resume_from: Path | None = None) -> PromptSampler | None:
    """The sampler of a run of ``cfg`` (``None`` for ``sampler=uniform``: TRL's own order) over its ``train`` split,
    drawing ``per_batch`` prompts a batch, where the checkpoint ``resume_from`` left it (else from nothing seen, or
    from ``sampler.measured``); ``ValueError`` naming the key when the task cannot be sampled so."""
    from grpo_ext.tasks import mix

    node = cfg.sampler
    if node.name == "uniform":
        return None
    if cfg.task.name == "mix":
        weights = mix.weights(cfg.task)
        labels = list(train[mix.TASK_COLUMN])
    else:
        weights, labels = {cfg.task.name: 1.0}, [cfg.task.name] * len(train)
    if node.name == "curriculum" and "level" not in train.column_names:
        raise ValueError(
            f"sampler=curriculum needs the rows' levels, and task {cfg.task.name}'s rows have none (no level column);"
            " tasks with levels: arithmetic (task.operand_digits, e.g. [1,2,3]), fizzbuzz (task.difficulty); or use"
            " sampler=adaptive"
        )
    levels = list(train["level"]) if node.name == "curriculum" else []
    parts = {}
    for label in weights:
        indices = [i for i, own in enumerate(labels) if own == label]
        if not indices:
            raise ValueError(f"task.of gives {label} a weight, and its train split has no rows")
        if node.name == "adaptive":
            policy: Policy = Adaptive(len(indices), node.solved, node.failed, node.recent, node.weight,
                                      node.retire_after)  # fmt: skip
        else:
            own = [levels[i] for i in indices]
            if len(set(own)) < 2:
                log.warning("sampler=curriculum: %s has one level only (%s): it is drawn as it comes", label, own[0])
            policy = Curriculum(own, node.advance, node.retreat, node.window, node.review)
        parts[label] = (indices, policy)
    sampler = PromptSampler(train, parts, weights, per_batch, cfg.seed)
    state = load_state(resume_from) if resume_from is not None else None
    if state is not None:
        sampler.restore(state)
        log.info("sampler: %d groups seen up to %s", len(sampler.seen), resume_from)
    elif node.measured:
        path = Path(node.measured).expanduser()
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows and not {"prompt", "pass_rate"} <= set(rows[0]):
            raise ValueError(f"sampler.measured={path}: not a grpo_ext.difficulty difficulty.jsonl (no pass_rate)")
        found = sampler.seed_from(rows)
        log.info("sampler: %d of %d train prompts start from their pass rates in %s", found, len(train), path)
        if not found:
            log.warning("sampler.measured=%s measured none of this run's train prompts", path)
    return sampler


def load_state(checkpoint: Path) -> dict[str, Any] | None:
    """The sampler state a checkpoint holds, or ``None`` (a checkpoint of a run without a sampler)."""
    path = Path(checkpoint) / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
