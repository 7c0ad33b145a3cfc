"""``mathexpr``: random arithmetic expressions as in the seed MathFormer project, exact answers, graded by ``math``.

Run it with ``python -m grpo_ext.train task=mathexpr``. An expression is a random tree up to ``max_depth`` operators
deep over integers of up to ``max_digits`` digits, with ``ops`` from + - * /, parentheses around every inner
operation, and, with probabilities ``neg_prob`` and ``abs_prob``, unary minus and ``abs(...)``. Answers are exact:
an integer, or a reduced fraction such as ``-1/3``. Expressions dividing by zero are redrawn. Eval problems are
drawn first and never reappear in train.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from fractions import Fraction

from datasets import Dataset

from grpo_ext.tasks.base import RewardSpec, TaskConfig, TaskSplits, chat_prompt, check_positive

OPS = ("+", "-", "*", "/")
MAX_DRAWS_PER_PROBLEM = 50  # a space too small for the sizes asked shows up as too many repeated draws


@dataclass
class MathExprConfig(TaskConfig):
    max_digits: int = 2
    max_depth: int = 3
    ops: list[str] = field(default_factory=lambda: list(OPS))
    neg_prob: float = 0.1  # chance that a number or a subexpression is negated
    abs_prob: float = 0.1  # chance that a subexpression is wrapped in abs(...)
    prompt_template: str = (
        "Compute {expression}. Give the exact answer, as an integer or a reduced fraction such as -1/3, "
        "inside \\boxed{{}}."
    )
    max_completion_length: int = 64
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="math")])


def format_answer(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"


class _Generator:
    def __init__(self, cfg: MathExprConfig, rng: random.Random) -> None:
        self.cfg, self.rng = cfg, rng
        self.ops = sorted(set(cfg.ops))

    def expression(self, depth: int, top: bool = True) -> tuple[str, Fraction]:
        """A random expression at most ``depth`` operators deep: its text and its exact value."""
        rng = self.rng
        if depth == 0 or (not top and rng.random() < 0.3):
            number = rng.randint(0, 10**self.cfg.max_digits - 1)
            if rng.random() < self.cfg.neg_prob:
                return f"(-{number})", Fraction(-number)
            return str(number), Fraction(number)
        op = rng.choice(self.ops)
        left, left_value = self.expression(depth - 1, top=False)
        right, right_value = self.expression(depth - 1, top=False)
        if op == "/":
            if right_value == 0:
                raise ZeroDivisionError
            value = left_value / right_value
        else:
            value = {"+": left_value + right_value, "-": left_value - right_value, "*": left_value * right_value}[op]
        text = f"{left} {op} {right}"
        if rng.random() < self.cfg.abs_prob:
            return f"abs({text})", abs(value)
        if rng.random() < self.cfg.neg_prob:
            return f"-({text})", -value
        return (text, value) if top else (f"({text})", value)


def _validate(cfg: MathExprConfig) -> None:
    check_positive(cfg, "train_size", "eval_size", "max_digits", "max_depth")
    if cfg.max_digits > 9:
        raise ValueError(f"task.max_digits must be <= 9, got {cfg.max_digits}")
    if cfg.max_depth > 6:
        raise ValueError(f"task.max_depth must be <= 6 (answers grow huge beyond), got {cfg.max_depth}")
    if not cfg.ops:
        raise ValueError(f"task.ops must name at least one operator; allowed: {list(OPS)}")
    for i, op in enumerate(cfg.ops):
        if op not in OPS:
            raise ValueError(f"task.ops[{i}] is {op!r}; allowed: {list(OPS)}")
    for key in ("neg_prob", "abs_prob"):
        if not 0 <= getattr(cfg, key) <= 1:
            raise ValueError(f"task.{key} must be in [0, 1], got {getattr(cfg, key)}")
    if "{expression}" not in cfg.prompt_template:
        raise ValueError("task.prompt_template must contain the placeholder {expression}")


def _rows(problems: list[tuple[str, Fraction]], cfg: MathExprConfig) -> dict[str, list]:
    columns: dict[str, list] = {"prompt": [], "answer": [], "expression": [], "reference": []}
    for expression, value in problems:
        answer = format_answer(value)
        columns["prompt"].append(chat_prompt(cfg.prompt_template.format(expression=expression), cfg.system_prompt))
        columns["answer"].append(answer)
        columns["expression"].append(expression)
        columns["reference"].append(f"\\boxed{{{answer}}}")
    return columns


def build(cfg: MathExprConfig) -> TaskSplits:
    """Draw ``eval_size`` then ``train_size`` distinct expressions from ``random.Random(cfg.seed)``."""
    _validate(cfg)
    generator = _Generator(cfg, random.Random(cfg.seed))
    needed = cfg.eval_size + cfg.train_size
    seen: set[str] = set()
    problems: list[tuple[str, Fraction]] = []
    for _ in range(needed * MAX_DRAWS_PER_PROBLEM):
        if len(problems) == needed:
            break
        try:
            expression, value = generator.expression(cfg.max_depth)
        except ZeroDivisionError:
            continue
        if expression not in seen:
            seen.add(expression)
            problems.append((expression, value))
    else:
        if len(problems) < needed:
            raise ValueError(
                f"task.train_size + task.eval_size = {needed}, but only {len(problems)} distinct expressions were "
                f"drawn with max_digits={cfg.max_digits}, max_depth={cfg.max_depth}: raise them or lower the sizes"
            )
    return TaskSplits(
        train=Dataset.from_dict(_rows(problems[cfg.eval_size :], cfg)),
        eval=Dataset.from_dict(_rows(problems[: cfg.eval_size], cfg)),
    )
