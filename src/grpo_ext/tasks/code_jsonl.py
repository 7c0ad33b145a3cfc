"""``code_jsonl``: code problems from a local JSON/JSONL/Parquet/CSV file or a Hub dataset, scored by ``python_exec``.

Run it with ``python -m grpo_ext.train task=code_jsonl task.path=problems.jsonl``. The rows may be in python_exec's
own schema (a prompt, tests, an entry point; column names configurable) or in a published layout, read as it is:
HumanEval, MBPP, APPS, CodeContests, open-r1's verification_info or LiveCodeBench (``task.format``, or told from the
columns: ``tasks.code_layouts``). Every row is checked before training: an error names the row and the column.
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
from grpo_ext.tasks.code_layouts import LAYOUTS, convert, detect


@dataclass
class CodeJsonlConfig(TaskConfig):
    path: str = MISSING  # a local .jsonl/.json/.parquet/.csv file or directory, or a Hub dataset name
    # the rows' layout: auto (told from the columns), ours, humaneval, mbpp, apps, codecontests, open_r1, livecodebench
    format: str = "auto"
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


def _row(raw: dict[str, Any], number: int, cfg: CodeJsonlConfig, layout: str) -> dict[str, Any]:
    columns = {"prompt": cfg.prompt_column, "tests": cfg.tests_column, "entry_point": cfg.entry_point_column,
               "reference": cfg.reference_column or ""}  # fmt: skip
    where = f"row {number}" if layout == "ours" else f"row {number} ({layout})"
    try:
        row = convert(layout, raw, columns)
    except (ValueError, TypeError, KeyError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{where}: {err}") from err
    try:
        _, tests = parse_tests(row["tests"], row["entry_point"] or None)
    except (ValueError, TypeError) as err:
        column = cfg.tests_column if layout == "ours" else "tests"
        raise ValueError(f"{where}: column {column!r}: {err}") from err
    reference = row["reference"]
    return {
        "prompt": chat_prompt(cfg.prompt_template.format(prompt=row["problem"]), cfg.system_prompt),
        "tests": json.dumps(tests),
        "entry_point": row["entry_point"],
        "reference": f"```python\n{reference}\n```" if reference else "",
        "code_prefix": row["code_prefix"],
    }


def build(cfg: CodeJsonlConfig) -> TaskSplits:
    """Check every row, shuffle with ``cfg.seed``, hold out ``eval_size`` rows, keep up to ``train_size``."""
    check_positive(cfg, "eval_size")
    if "{prompt}" not in cfg.prompt_template:
        raise ValueError("task.prompt_template must contain the placeholder {prompt}")
    if cfg.format not in ("auto", *LAYOUTS):
        raise ValueError(f"task.format must be one of {['auto', *LAYOUTS]}, got {cfg.format!r}")
    raw = load_table(cfg.path, cfg.split)
    cfg = with_columns(cfg, ("prompt", "tests", "entry_point", "reference"), raw.column_names)
    layout = cfg.format
    if layout == "auto":
        own = [c for c in raw.column_names if c != cfg.tests_column] + (
            ["tests"] if cfg.tests_column in raw.column_names else []
        )
        layout = detect(own, f"task.path={cfg.path}")
    if layout == "ours":
        for column in (cfg.prompt_column, cfg.tests_column):
            if column not in raw.column_names:
                raise ValueError(f"task.path={cfg.path} has no column {column!r}; its columns: {raw.column_names}")
        if cfg.reference_column and cfg.reference_column not in raw.column_names:
            raise ValueError(f"task.reference_column {cfg.reference_column!r} is not a column of {cfg.path}")
    rows = [_row(r, number, cfg, layout) for number, r in raw.numbered()]
    return hold_out(rows, cfg)
