"""``reasoning_gym``: rows from reasoning-gym's procedural generators, scored by each generator's own ``score_answer``.

``python -m grpo_ext.train task=reasoning_gym 'task.datasets={basic_arithmetic: {weight: 1, min_digits: 2}}'``

``task.datasets`` names the generators and, for each, its share of the rows (``weight``, 1 by default) and its own
config knobs (those of its config class in reasoning-gym). The rows are generated offline and deterministically from
``task.seed``: the eval split from one seed, the train split from another, with no question in both. Each prompt is
the generator's question after reasoning-gym's system prompt (``task.prompt``: a key of its ``SYSTEM_PROMPTS``, which
ask for the answer inside ``<answer></answer>``); each row keeps the entry for the reward (``rg_entry``), its
generator (``rg_dataset``) and a reference answer for warm starts. Needs the ``reasoning_gym`` extra.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from grpo_ext.tasks.base import (
    RewardSpec,
    TaskConfig,
    TaskSplits,
    chat_prompt,
    check_positive,
    open_node,
    shuffled,
    to_dataset,
)
from grpo_ext.tasks.mix import apportion

INSTALL = "pip install 'grpo-ext[reasoning_gym]' (reasoning-gym 0.1.25)"


@dataclass
class ReasoningGymConfig(TaskConfig):
    # generator name -> {weight: share of the rows (1), and the generator's config knobs}
    datasets: Any = field(default_factory=open_node)
    prompt: str | None = "default"  # reasoning-gym's system prompt (SYSTEM_PROMPTS key); null: task.system_prompt
    train_size: int = 2000
    eval_size: int = 200
    max_completion_length: int = 256
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="reasoning_gym")])


def _generators(cfg: ReasoningGymConfig) -> dict[str, tuple[float, dict[str, Any]]]:
    """Each generator's weight and config knobs, checked against reasoning-gym's registry."""
    try:
        from reasoning_gym.factory import DATASETS
    except ImportError as err:
        raise ValueError(f"task=reasoning_gym needs reasoning-gym: {INSTALL}") from err
    specs = dict(cfg.datasets or {})
    if not specs:
        raise ValueError("task.datasets must name reasoning-gym generators, e.g. 'task.datasets={basic_arithmetic: "
                         "{weight: 1}}'")  # fmt: skip
    found = {}
    for name, spec in specs.items():
        if name not in DATASETS:
            raise ValueError(
                f"task.datasets.{name}: reasoning-gym has no generator {name!r}; it has {sorted(DATASETS)}"
            )
        knobs = dict(spec or {})
        weight = knobs.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"task.datasets.{name}.weight={weight!r}: a weight must be a number >= 0")
        found[name] = (float(weight), knobs)
    if not any(weight > 0 for weight, _ in found.values()):
        raise ValueError("task.datasets: at least one generator needs a weight > 0")
    return found


def _entries(name: str, knobs: dict[str, Any], size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` entries of the generator ``name`` with ``knobs``; ``ValueError`` naming a knob it refuses."""
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    try:
        return list(reasoning_gym.create_dataset(name, seed=seed, size=size, **knobs))
    except TypeError as err:  # an unknown knob
        fields = sorted(getattr(DATASETS[name][1], "__dataclass_fields__", {}))
        knobs_of = [f for f in fields if f not in ("seed", "size")]
        raise ValueError(f"task.datasets.{name}: {err}; its knobs: {knobs_of}") from err
    except (AssertionError, ValueError) as err:  # a knob's value it refuses
        said = str(err) or type(err).__name__
        raise ValueError(f"task.datasets.{name}: reasoning-gym refused these settings: {said}") from err


def _row(entry: dict[str, Any], name: str, cfg: ReasoningGymConfig, system: str | None) -> dict[str, Any]:
    return {
        "prompt": chat_prompt(entry["question"], system),
        "answer": str(entry["answer"]),
        "rg_entry": json.dumps(entry, default=_plain, ensure_ascii=False),
        "rg_dataset": name,
        "reference": f"<answer>{entry['answer']}</answer>",
    }


def _plain(value: Any) -> Any:
    """What JSON cannot hold in an entry's metadata (tuples become lists on their own): sets as lists, else text."""
    return sorted(value, key=repr) if isinstance(value, (set, frozenset)) else repr(value)


def build(cfg: ReasoningGymConfig) -> TaskSplits:
    """Each generator's share of ``eval_size`` and ``train_size`` rows, the eval rows from ``seed`` and the train
    rows from another seed, without the eval questions."""
    check_positive(cfg, "train_size", "eval_size")
    generators = _generators(cfg)
    system = cfg.system_prompt
    if cfg.prompt is not None:
        from reasoning_gym.utils import SYSTEM_PROMPTS

        if cfg.prompt not in SYSTEM_PROMPTS:
            raise ValueError(f"task.prompt={cfg.prompt!r}: reasoning-gym's prompts are {sorted(SYSTEM_PROMPTS)}")
        system = SYSTEM_PROMPTS[cfg.prompt]
    total = sum(weight for weight, _ in generators.values())
    splits = {}
    held_out: set[str] = set()
    for split, size, seed in (("eval", cfg.eval_size, cfg.seed), ("train", cfg.train_size, cfg.seed + 1_000_003)):
        counts = apportion({name: size * weight / total for name, (weight, _) in generators.items()}, size)
        rows = []
        for name, (_, knobs) in generators.items():
            if not counts[name]:
                continue
            # a train question that is also held out is left out: a few more are drawn to make up for it
            entries = _entries(name, knobs, counts[name] + (len(held_out) if split == "train" else 0), seed)
            kept = [e for e in entries if e["question"] not in held_out][: counts[name]]
            rows += [_row(entry, name, cfg, system) for entry in kept]
        if split == "eval":
            held_out = {json.loads(row["rg_entry"])["question"] for row in rows}
        splits[split] = to_dataset(shuffled(rows, seed))
    return TaskSplits(train=splits["train"], eval=splits["eval"])
