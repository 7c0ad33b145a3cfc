"""``gsm8k`` and ``math``: word problems and competition problems from the Hub or a local file, graded by ``math``.

Run them with ``python -m grpo_ext.train task=gsm8k`` (``openai/gsm8k``, config ``main``) or ``task=math``
(``HuggingFaceH4/MATH-500``), or point ``task.path`` at a local .jsonl/.json/.parquet/.csv file. Column names are
settings, so other datasets of the same kind load as they are. The gold stays as the dataset stores it (GSM8K's
``... #### 72``, MATH's LaTeX answer) in the ``answer`` column; the grader extracts and compares it. Every row is
checked before training: a missing question or answer is an error naming the row; a gold answer neither of the
grader's engines can read (math-verify is asked in a worker process) is dropped with a warning (or is an error with
``drop_unreadable_gold: false``), since it could never score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from grpo_ext.rewards.math_answer import extract_gold
from grpo_ext.rewards.math_grader import gold_errors
from grpo_ext.tasks.base import (
    RewardSpec,
    TaskConfig,
    TaskSplits,
    chat_prompt,
    check_positive,
    hold_out,
    load_table,
    open_node,
    with_columns,
)

logger = logging.getLogger(__name__)

PROMPT = "{question}\n\nReason step by step, then put your final answer inside \\boxed{{}}."


@dataclass
class MathDatasetConfig(TaskConfig):
    path: str = "openai/gsm8k"  # a Hub dataset name, or a local .jsonl/.json/.parquet/.csv file or directory
    subset: str | None = "main"  # the Hub dataset's config name, if it has several
    split: str = "train"  # the split read from the Hub or a directory holding several (a file is one)
    question_column: str = "question"
    answer_column: str = "answer"
    solution_column: str | None = None  # a worked solution, kept as the row's reference
    # question, answer, solution -> the data's column for each, over the *_column keys ({question: problem})
    columns: Any = field(default_factory=open_node)
    prompt_template: str = PROMPT
    drop_unreadable_gold: bool = True
    train_size: int = 0  # 0: every row not held out for eval
    eval_size: int = 200
    max_completion_length: int = 512
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="math")])


@dataclass
class GSM8KConfig(MathDatasetConfig):
    pass


@dataclass
class MathConfig(MathDatasetConfig):
    path: str = "HuggingFaceH4/MATH-500"
    subset: str | None = None
    split: str = "test"
    question_column: str = "problem"
    answer_column: str = "answer"
    solution_column: str | None = "solution"
    eval_size: int = 100
    max_completion_length: int = 1024


def _reference(raw: dict[str, Any], gold: str, cfg: MathDatasetConfig) -> str:
    """A correct completion: the worked solution ending in a boxed answer, or just the boxed answer."""
    solution = raw.get(cfg.solution_column) if cfg.solution_column else None
    if not solution and "####" in gold:  # GSM8K keeps its solution in the answer column
        solution = gold.rsplit("####", 1)[0].strip()
    answer = extract_gold(gold)
    if isinstance(solution, str) and solution.strip():
        if "\\boxed" in solution or "\\fbox" in solution:
            return solution
        return f"{solution.strip()}\nThe final answer is $\\boxed{{{answer}}}$."
    return f"$\\boxed{{{answer}}}$"


def _row(raw: dict[str, Any], number: int, cfg: MathDatasetConfig) -> dict[str, Any]:
    question = raw.get(cfg.question_column)
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"row {number}: column {cfg.question_column!r} must be a non-empty string")
    gold = raw.get(cfg.answer_column)
    if isinstance(gold, (int, float)) and not isinstance(gold, bool):
        gold = str(gold)
    if not isinstance(gold, str) or not gold.strip():
        raise ValueError(f"row {number}: column {cfg.answer_column!r} must be a non-empty string or number")
    return {
        "prompt": chat_prompt(cfg.prompt_template.format(question=question), cfg.system_prompt),
        "answer": gold,
        "reference": _reference(raw, gold, cfg),
    }


def build(cfg: MathDatasetConfig) -> TaskSplits:
    """Check every row, drop unreadable golds, then hold out ``eval_size`` rows (``hold_out``)."""
    check_positive(cfg, "eval_size")
    if cfg.train_size < 0:
        raise ValueError(f"task.train_size must be >= 0 (0: all the rest), got {cfg.train_size}")
    if "{question}" not in cfg.prompt_template:
        raise ValueError("task.prompt_template must contain the placeholder {question}")
    raw = load_table(cfg.path, cfg.split, cfg.subset)
    cfg = with_columns(cfg, ("question", "answer", "solution"), raw.column_names)
    for key in ("question_column", "answer_column", "solution_column"):
        column = getattr(cfg, key)
        if column is not None and column not in raw.column_names:
            raise ValueError(f"task.{key}={column!r} is not a column of {cfg.path}; its columns: {raw.column_names}")
    numbered = [(number, _row(record, number, cfg)) for number, record in raw.numbered()]
    errors = gold_errors([row["answer"] for _, row in numbered])
    rows, unreadable = [], []
    for (number, row), error in zip(numbered, errors, strict=True):
        if error is None:
            rows.append(row)
        elif cfg.drop_unreadable_gold:
            unreadable.append(f"row {number}: {row['answer'][-60:]!r} ({error})")
        else:
            raise ValueError(f"row {number}: the grader cannot read the gold answer {row['answer']!r}: {error}")
    if unreadable:
        logger.warning("%s: dropped %d rows whose gold answer the grader cannot read, e.g. %s",
                       cfg.path, len(unreadable), "; ".join(unreadable[:3]))  # fmt: skip
    return hold_out(rows, cfg)
