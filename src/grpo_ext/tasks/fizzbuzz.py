"""``fizzbuzz``: a procedurally generated family of small function-writing problems, scored by ``python_exec``.

Run it with ``python -m grpo_ext.train task=fizzbuzz`` (default model: qwen2.5-coder-0.5b-instruct, the seed's).
Each problem names a function signature, describes it, shows one example that is not among its tests, and carries
hidden tests (7 by default) and a reference solution. ``task.difficulty`` (1-3) is the highest problem level drawn:

* level 1: FizzBuzz, balanced parentheses with one bracket kind, digit sums, vowel counts, word reversal;
* level 2: FizzBuzz with other divisors and words, two bracket kinds, palindromes ignoring case and punctuation,
  running maxima, Caesar shifts, Collatz step counts;
* level 3: FizzBuzz with three rules, three bracket kinds among other characters, run-length encoding, the n-th
  prime, Roman numerals, flattening nested lists.

The problems (each kind's maker, and the oracles that compute the expected values) are in ``fizzbuzz_problems``;
the reference solutions are separate source text, and a test proves that every reference scores 1.0 in the sandbox.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset

from grpo_ext.tasks.base import RewardSpec, TaskConfig, TaskSplits, chat_prompt, check_positive
from grpo_ext.tasks.fizzbuzz_problems import KIND_LEVELS, Problem, make_problem

PROMPT_TEMPLATE = (
    "Write a Python function `{signature}` that {description}.\n"
    "For example, {call} returns {result}.\n"
    "Answer with the complete function in one ```python code block."
)
PLACEHOLDERS = ("signature", "description", "call", "result")


@dataclass
class FizzBuzzConfig(TaskConfig):
    difficulty: int = 3  # highest problem level drawn (1-3)
    kinds: list[str] = field(default_factory=list)  # restrict to these problem kinds; empty: all up to difficulty
    tests_per_problem: int = 7
    # share of the FizzBuzz train references that return the first rule's word (a bug: see Problem), as a teacher's
    # imperfect solutions would be; the eval split's references are always right
    flawed_fraction: float = 0.0
    # the user turn; placeholders: {signature}, {description} (required), {call} and {result} (the shown example)
    prompt_template: str = PROMPT_TEMPLATE
    train_size: int = 2000
    eval_size: int = 200
    max_completion_length: int = 384
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="python_exec")])


def fenced(code: str) -> str:
    return f"```python\n{code}```"


def render(problem: Problem, cfg: FizzBuzzConfig) -> dict[str, Any]:
    """A dataset row: the prompt (with the first input as a worked example), hidden tests and the reference."""
    example, *hidden = problem.inputs
    user = cfg.prompt_template.format(
        signature=problem.signature,
        description=problem.description,
        call=f"{problem.entry_point}({', '.join(repr(a) for a in example)})",
        result=repr(problem.oracle(*example)),
    )
    tests = [{"args": args, "expected": problem.oracle(*args)} for args in hidden]
    return {
        "prompt": chat_prompt(user, cfg.system_prompt),
        "entry_point": problem.entry_point,
        "tests": json.dumps(tests),
        "reference": fenced(problem.reference),
        "kind": problem.kind,
        "level": problem.level,
    }


def _validate(cfg: FizzBuzzConfig) -> list[str]:
    check_positive(cfg, "train_size", "eval_size")
    if cfg.difficulty not in (1, 2, 3):
        raise ValueError(f"task.difficulty must be 1, 2 or 3, got {cfg.difficulty}")
    if not 0.0 <= cfg.flawed_fraction <= 1.0:
        raise ValueError(f"task.flawed_fraction must be in [0, 1], got {cfg.flawed_fraction}")
    if cfg.tests_per_problem < 5:
        raise ValueError(f"task.tests_per_problem must be >= 5, got {cfg.tests_per_problem}")
    for i, kind in enumerate(cfg.kinds):
        if kind not in KIND_LEVELS:
            raise ValueError(f"task.kinds[{i}] is {kind!r}; valid kinds: {sorted(KIND_LEVELS)}")
    try:
        cfg.prompt_template.format(**{name: "" for name in PLACEHOLDERS})
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(
            f"task.prompt_template {cfg.prompt_template!r} does not format ({type(err).__name__}: {err}); "
            f"its placeholders may be {{{'}, {'.join(PLACEHOLDERS)}}}, and a literal brace is written twice"
        ) from err
    if "{description}" not in cfg.prompt_template:
        raise ValueError("task.prompt_template must contain the placeholder {description}: it states the problem")
    kinds = [k for k in (cfg.kinds or KIND_LEVELS) if KIND_LEVELS[k] <= cfg.difficulty]
    if not kinds:
        raise ValueError(f"no problem kind in {list(cfg.kinds)} appears at difficulty {cfg.difficulty}")
    return kinds


def build(cfg: FizzBuzzConfig) -> TaskSplits:
    """Draw ``eval_size`` then ``train_size`` distinct problems from ``random.Random(cfg.seed)``. A FizzBuzz problem
    with rules of its own (levels 2 and 3) in the eval split has no train problem with the same rules; the other
    kinds have one solution per kind (and level), so their held-out problems differ in their inputs only."""
    kinds = _validate(cfg)
    rng = random.Random(cfg.seed)
    problems: list[Problem] = []
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    eval_programs: set[str] = set()
    attempts = 0
    while len(problems) < cfg.eval_size + cfg.train_size:
        attempts += 1
        if attempts > 20 * (cfg.eval_size + cfg.train_size) + 1000:
            raise ValueError(
                f"could only draw {len(problems)} distinct problems for task.kinds={kinds} at difficulty "
                f"{cfg.difficulty}; lower task.train_size or task.eval_size"
            )
        kind = rng.choice(kinds)
        level = rng.randint(KIND_LEVELS[kind], cfg.difficulty) if kind in ("fizzbuzz", "balanced") else 0
        problem = make_problem(kind, rng, level, cfg.tests_per_problem)
        row = render(problem, cfg)
        key = (row["prompt"][-1]["content"], row["tests"])
        if key in seen or (len(problems) >= cfg.eval_size and problem.reference in eval_programs):
            continue
        seen.add(key)
        problems.append(problem)
        rows.append(row)
        if len(problems) <= cfg.eval_size and problem.kind == "fizzbuzz" and problem.level > 1:
            eval_programs.add(problem.reference)  # rules of its own: held out means never trained on
    # Drawn after the problems, so that flawed_fraction never changes which problems are in which split.
    for i, (problem, row) in enumerate(zip(problems, rows, strict=True)):
        flawed = rng.random() < cfg.flawed_fraction
        if flawed and i >= cfg.eval_size and problem.flawed_reference is not None:
            row["reference"] = fenced(problem.flawed_reference)
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    split = cfg.eval_size
    return TaskSplits(
        train=Dataset.from_dict({k: v[split:] for k, v in columns.items()}),
        eval=Dataset.from_dict({k: v[:split] for k, v in columns.items()}),
    )
