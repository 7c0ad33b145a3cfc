"""``arithmetic``: the seeds' multi-step integer arithmetic, ``(a op1 b) op2 c``, answered in ``<answer>`` tags.

Run it with ``python -m grpo_ext.train task=arithmetic model=tiny``. Operands are drawn uniformly from
``[min_operand, max_operand]`` and operators from ``ops``; eval problems are drawn first and never reappear in train.
"""

from __future__ import annotations

import operator
import random
from dataclasses import dataclass, field

from datasets import Dataset

from grpo_ext.tasks.base import RewardSpec, TaskConfig, TaskSplits, chat_prompt, check_positive

OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


@dataclass
class ArithmeticConfig(TaskConfig):
    min_operand: int = 0
    max_operand: int = 9
    # Levels by operand size: each problem's operands all have the same number of digits, drawn from this list (its
    # level); empty: operands anywhere in [min_operand, max_operand], the level the largest operand's digits
    operand_digits: list[int] = field(default_factory=list)
    ops: list[str] = field(default_factory=lambda: ["+", "-", "*"])
    prompt_template: str = "What is {expression}? Put the final answer inside <answer></answer>."
    # Share of rows whose reference works the two steps out (`3 + 4 = 7`, `7 * 5 = 35`) before the answer; the
    # rest answer at once. A warm start on a mix can do both, and GRPO can find out which one pays.
    worked_fraction: float = 0.0
    max_completion_length: int = 32
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="arithmetic_shaping")])


def _operands(digits: int) -> range:
    """The operands of a level: every number of ``digits`` digits (one digit: 0 to 9)."""
    return range(0 if digits == 1 else 10 ** (digits - 1), 10**digits)


def level(a: int, b: int, c: int) -> int:
    """A problem's level: the digits of its largest operand."""
    return len(str(max(abs(a), abs(b), abs(c))))


def evaluate(a: int, op1: str, b: int, op2: str, c: int) -> int:
    return OPERATORS[op2](OPERATORS[op1](a, b), c)


def _validate(cfg: ArithmeticConfig) -> int:
    """Check the knobs; return how many distinct problems they allow."""
    check_positive(cfg, "train_size", "eval_size")
    if cfg.min_operand > cfg.max_operand:
        raise ValueError(f"task.min_operand ({cfg.min_operand}) must be <= task.max_operand ({cfg.max_operand})")
    if not cfg.ops:
        raise ValueError(f"task.ops must name at least one operator; allowed: {sorted(OPERATORS)}")
    for i, op in enumerate(cfg.ops):
        if op not in OPERATORS:
            raise ValueError(f"task.ops[{i}] is {op!r}; allowed: {sorted(OPERATORS)}")
    if not 0.0 <= cfg.worked_fraction <= 1.0:
        raise ValueError(f"task.worked_fraction must be in [0, 1], got {cfg.worked_fraction}")
    if "{expression}" not in cfg.prompt_template:
        raise ValueError("task.prompt_template must contain the placeholder {expression}")
    for i, digits in enumerate(cfg.operand_digits):
        if not 1 <= digits <= 9:
            raise ValueError(f"task.operand_digits[{i}] is {digits}; a level is a number of digits from 1 to 9")
    spans = [len(_operands(d)) for d in sorted(set(cfg.operand_digits))] or [cfg.max_operand - cfg.min_operand + 1]
    pool = sum(span**3 for span in spans) * len(set(cfg.ops)) ** 2
    needed = cfg.train_size + cfg.eval_size
    if needed > pool:
        operands = (
            f"operands of {list(cfg.operand_digits)} digits"
            if cfg.operand_digits
            else f"operands in [{cfg.min_operand}, {cfg.max_operand}]"
        )
        raise ValueError(
            f"task.train_size + task.eval_size = {needed}, but {operands} with ops {list(cfg.ops)} allow only {pool} "
            "distinct problems; widen the operand range or lower the sizes"
        )
    return pool


def worked_solution(a: int, op1: str, b: int, op2: str, c: int) -> str:
    """The two steps, one per line, then the answer: ``3 + 4 = 7\n7 * 5 = 35\n<answer>35</answer>``."""
    inner = OPERATORS[op1](a, b)
    answer = OPERATORS[op2](inner, c)
    return f"{a} {op1} {b} = {inner}\n{inner} {op2} {c} = {answer}\n<answer>{answer}</answer>"


def _rows(problems: list[tuple[int, str, int, str, int]], worked: list[bool], cfg: ArithmeticConfig) -> dict:
    columns: dict[str, list] = {"prompt": [], "answer": [], "expression": [], "reference": [], "level": []}
    for (a, op1, b, op2, c), show_work in zip(problems, worked, strict=True):
        columns["level"].append(level(a, b, c))
        expression = f"({a} {op1} {b}) {op2} {c}"
        answer = str(evaluate(a, op1, b, op2, c))
        columns["prompt"].append(chat_prompt(cfg.prompt_template.format(expression=expression), cfg.system_prompt))
        columns["answer"].append(answer)
        columns["expression"].append(expression)
        columns["reference"].append(worked_solution(a, op1, b, op2, c) if show_work else f"<answer>{answer}</answer>")
    return columns


def build(cfg: ArithmeticConfig) -> TaskSplits:
    """Draw ``eval_size`` then ``train_size`` distinct problems from ``random.Random(cfg.seed)``."""
    _validate(cfg)
    rng = random.Random(cfg.seed)
    ops = sorted(set(cfg.ops))
    seen: set[tuple[int, str, int, str, int]] = set()
    problems: list[tuple[int, str, int, str, int]] = []
    while len(problems) < cfg.eval_size + cfg.train_size:
        if cfg.operand_digits:
            operands = _operands(rng.choice(cfg.operand_digits))
            a, b, c = (rng.choice(operands) for _ in range(3))
        else:
            a, b, c = (rng.randint(cfg.min_operand, cfg.max_operand) for _ in range(3))
        problem = (a, rng.choice(ops), b, rng.choice(ops), c)
        if problem not in seen:
            seen.add(problem)
            problems.append(problem)
    # Drawn after the problems, so that worked_fraction never changes which problems are in which split.
    worked = [rng.random() < cfg.worked_fraction for _ in problems]
    return TaskSplits(
        train=Dataset.from_dict(_rows(problems[cfg.eval_size :], worked[cfg.eval_size :], cfg)),
        eval=Dataset.from_dict(_rows(problems[: cfg.eval_size], worked[: cfg.eval_size], cfg)),
    )
