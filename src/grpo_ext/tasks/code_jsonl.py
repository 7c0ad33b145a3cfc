"""``code_jsonl``: code problems from a local JSON/JSONL/Parquet/CSV file or a Hub dataset, scored by ``python_exec``.

Run it with ``python -m grpo_ext.train task=code_jsonl task.path=problems.jsonl``. Each row needs a prompt and tests
in python_exec's schema (function tests with an entry point, or stdin/stdout tests); column names are configurable,
so MBPP- or APPS-style data converted to that schema can be used as it is. Every row is checked before training:
an error names the row and the column.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from grpo_ext.rewards.python_exec import parse_tests
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


@dataclass
class CodeJsonlConfig(TaskConfig):
    path: str = MISSING  # a local .jsonl/.json/.parquet/.csv file or directory, or a Hub dataset name
    split: str = "train"  # the split read from a Hub dataset or a directory holding several
    prompt_column: str = "prompt"
    tests_column: str = "tests"
    entry_point_column: str = "entry_point"  # may be absent from the data when every test is stdin/stdout
    reference_column: str | None = None  # a known-good solution, kept as the row's reference
    # prompt, tests, entry_point, reference -> the data's column for each, over the *_column keys
    columns: Any = field(default_factory=open_node)
    prompt_template: str = "{prompt}\n\nAnswer with the complete code in one ```python code block."
    train_size: int = 0  # 0: every row not held out for eval
    eval_size: int = 50
    max_completion_length: int = 512
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec(name="python_exec")])


def _row(raw: dict[str, Any], number: int, cfg: CodeJsonlConfig) -> dict[str, Any]:
    prompt = raw[cfg.prompt_column]
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"row {number}: column {cfg.prompt_column!r} must be a non-empty string")
    entry_point = raw.get(cfg.entry_point_column)
    try:
        _, tests = parse_tests(raw[cfg.tests_column], entry_point)
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"row {number}: column {cfg.tests_column!r}: {err}") from err
    reference = raw.get(cfg.reference_column) if cfg.reference_column else None
    return {
        "prompt": chat_prompt(cfg.prompt_template.format(prompt=prompt), cfg.system_prompt),
        "tests": json.dumps(tests),
        "entry_point": entry_point or "",
        "reference": f"```python\n{reference}\n```" if reference else "",
    }


def build(cfg: CodeJsonlConfig) -> TaskSplits:
    """Check every row, shuffle with ``cfg.seed``, hold out ``eval_size`` rows, keep up to ``train_size``."""
    check_positive(cfg, "eval_size")
    if "{prompt}" not in cfg.prompt_template:
        raise ValueError("task.prompt_template must contain the placeholder {prompt}")
    raw = load_table(cfg.path, cfg.split)
    cfg = with_columns(cfg, ("prompt", "tests", "entry_point", "reference"), raw.column_names)
    for column in (cfg.prompt_column, cfg.tests_column):
        if column not in raw.column_names:
            raise ValueError(f"task.path={cfg.path} has no column {column!r}; its columns: {raw.column_names}")
    if cfg.reference_column and cfg.reference_column not in raw.column_names:
        raise ValueError(f"task.reference_column {cfg.reference_column!r} is not a column of {cfg.path}")
    rows = [_row(r, number, cfg) for number, r in raw.numbered()]
    return hold_out(rows, cfg)
