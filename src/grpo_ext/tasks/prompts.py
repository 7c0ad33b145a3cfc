"""``prompts``: your own prompts and columns, scored by the rewards you name (one of ours or a dotted path).

Run it with ``python -m grpo_ext.train task=prompts task.path=rows.jsonl 'task.rewards=[{name: my_pkg.rewards.fn}]'``.
Each row needs a prompt: a string, which becomes the user message through ``task.prompt_template`` (its placeholders
are column names, ``{prompt}`` being the prompt column), or a list of chat messages used as they are; a chat that
ends with the assistant's answer, as chat SFT data sets do, gives that answer as the row's reference. Every other
column reaches the rewards as a keyword argument, as TRL passes dataset columns. Held-out prompts are ``eval_size``
rows of the same data, or the rows of ``task.eval_path``. Every row is checked before training: an error names the
row (its line in a .jsonl file) and the column.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from datasets import Dataset
from omegaconf import MISSING

from grpo_ext.rewards import TRL_ARGUMENTS
from grpo_ext.tasks.base import (
    RewardSpec,
    Table,
    TaskConfig,
    TaskSplits,
    chat_prompt,
    check_positive,
    hold_out,
    load_table,
    open_node,
    shuffled,
    to_dataset,
    with_columns,
)

ROLES = ("system", "user", "assistant")
# Names TRL gives the reward function itself, or leaves out of what it passes: not data columns.
RESERVED = (*TRL_ARGUMENTS, "completion", "environments")


@dataclass
class PromptsConfig(TaskConfig):
    path: str = MISSING  # a local .jsonl/.json/.parquet/.csv file or directory, or a Hub dataset name
    subset: str | None = None  # the Hub dataset's config name, if it has several
    split: str = "train"  # the split read from a Hub dataset or a directory holding several
    eval_path: str | None = None  # held-out prompts from another file or Hub dataset; None: eval_size rows of path
    eval_split: str = "test"  # the split read from eval_path when it is a Hub dataset or a directory
    prompt_column: str = "prompt"  # a string, or a list of {"role", "content"} messages
    prompt_template: str = "{prompt}"  # for string prompts: {prompt} and any other column's name
    reference_column: str | None = None  # a known-good completion, for warm starts (None: "reference" or "completion")
    columns: Any = field(default_factory=open_node)  # prompt, reference -> the data's column, over the *_column keys
    train_size: int = 0  # 0: every row not held out for eval
    eval_size: int = 100
    max_completion_length: int = 256
    rewards: list[RewardSpec] = MISSING  # required: the task has no default reward


def _messages(value: list[Any], number: int, cfg: PromptsConfig) -> tuple[list[dict[str, str]], str | None]:
    """A chat given as messages, checked: the prompt (the task's system prompt first when the chat has none) and,
    for a chat that ends with the assistant's answer (a chat SFT data set), that answer; else ``None``."""
    for i, message in enumerate(value):
        if not (
            isinstance(message, dict) and message.get("role") in ROLES and isinstance(message.get("content"), str)
        ):
            raise ValueError(
                f"row {number}: column {cfg.prompt_column!r}, message {i}: expected {{'role': one of {list(ROLES)}, "
                f"'content': a string}}, got {message!r:.80}"
            )
    if cfg.prompt_template != "{prompt}":
        raise ValueError(
            f"row {number}: column {cfg.prompt_column!r} holds chat messages; task.prompt_template applies to string "
            "prompts only (leave it at {prompt})"
        )
    messages = [{"role": m["role"], "content": m["content"]} for m in value]
    answer = messages.pop()["content"] if messages and messages[-1]["role"] == "assistant" else None
    if not messages or messages[-1]["role"] != "user":
        ends = "" if answer is None else ", before the assistant's answer that ends it"
        raise ValueError(f"row {number}: column {cfg.prompt_column!r}: the chat must end with a user message{ends}")
    if cfg.system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    return messages, answer


def _row(
    raw: dict[str, Any], number: int, cfg: PromptsConfig, placeholders: list[str], reference_column: str | None
) -> dict[str, Any]:
    """The task's row of the file's row ``raw``; ``placeholders``: the template's field names."""
    value, answer = raw[cfg.prompt_column], None
    if isinstance(value, str) and value.strip():
        fields = {**raw, "prompt": value}
        missing = [f"{{{name}}}" for name in placeholders if fields.get(name) is None]
        if missing:
            raise ValueError(f"row {number}: task.prompt_template needs {', '.join(missing)}, which this row lacks")
        prompt = chat_prompt(cfg.prompt_template.format(**fields), cfg.system_prompt)
    elif isinstance(value, list):
        prompt, answer = _messages(value, number, cfg)
    else:
        raise ValueError(
            f"row {number}: column {cfg.prompt_column!r} must be a non-empty string or a list of chat messages, "
            f"got {value!r:.80}"
        )
    reference = _reference((raw.get(reference_column) if reference_column else None) or "", number, reference_column)
    if answer is not None and reference:
        raise ValueError(
            f"row {number}: column {cfg.prompt_column!r} ends with the assistant's answer and column "
            f"{reference_column!r} gives a reference as well; keep one (the answer becomes the reference)"
        )
    reference = reference or answer or ""
    columns = {k: v for k, v in raw.items() if k not in (cfg.prompt_column, reference_column, "prompt")}
    return {"prompt": prompt, **columns, "reference": reference}


def _reference_column(cfg: PromptsConfig, columns: Any) -> str | None:
    """``task.reference_column``, else a column named ``reference``, else ``completion`` (TRL's prompt-completion
    data sets), else none."""
    return cfg.reference_column or next((c for c in ("reference", "completion") if c in columns), None)


def _reference(value: Any, number: int, column: str | None) -> str:
    """A reference given as a string, or as TRL's conversational completions give it: one assistant message."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        if value[0].get("role") == "assistant" and isinstance(value[0].get("content"), str):
            return value[0]["content"]
    if not isinstance(value, str):
        raise ValueError(
            f"row {number}: column {column!r} must be a string or one assistant message, got {value!r:.80}"
        )
    return value


def _placeholders(template: str) -> list[str]:
    """The field names of a ``str.format`` template; ``ValueError`` for one that cannot be formatted by name."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ValueError(f"task.prompt_template={template!r}: {err} (write {{{{ and }}}} for literal braces)") from err
    for name in names:
        if not name.isidentifier():
            raise ValueError(f"task.prompt_template={template!r}: {{{name}}} is not a column name")
    return names


def _check_columns(table: Table, cfg: PromptsConfig, key: str) -> None:
    path = getattr(cfg, key)
    wanted = {"task.prompt_column": cfg.prompt_column, "task.reference_column": cfg.reference_column}
    for setting, column in wanted.items():
        if column is not None and column not in table.column_names:
            raise ValueError(f"{setting}={column!r} is not a column of task.{key}={path}; its columns: "
                             f"{table.column_names}")  # fmt: skip
    for name in _placeholders(cfg.prompt_template):
        if name != "prompt" and name not in table.column_names:
            raise ValueError(f"task.prompt_template names {{{name}}}, which is not a column of task.{key}={path}; "
                             f"its columns: {table.column_names}")  # fmt: skip
    reference_column = _reference_column(cfg, table.column_names)  # becomes "reference": not passed under its name
    reserved = [c for c in table.column_names if c in RESERVED and c != reference_column]
    if reserved:
        raise ValueError(
            f"task.{key}={path}: column {reserved[0]!r} is a name TRL reserves in what it passes rewards; rename it"
        )


def _check_types(rows: list[dict[str, Any]], numbers: list[int], key: str) -> None:
    """Raise ``ValueError`` naming the column, its value types and a row of each, when one column mixes types that
    a dataset cannot hold together (a number in one row, a string in another)."""
    for column in rows[0] if rows else ():
        values = [row[column] for row in rows]
        try:
            Dataset.from_dict({column: values})
        except Exception as err:  # pyarrow's ArrowInvalid / ArrowTypeError
            first: dict[str, int] = {}
            for number, value in zip(numbers, values, strict=True):
                if value is not None:
                    first.setdefault(type(value).__name__, number)
            kinds = ", ".join(f"{kind} (row {number})" for kind, number in first.items())
            raise ValueError(
                f"task.{key}: column {column!r} mixes values that cannot share a column: {kinds}. Give every row the "
                f"same type ({type(err).__name__}: {err})"
            ) from err


def _rows(cfg: PromptsConfig, key: str, split_key: str) -> list[dict[str, Any]]:
    table = load_table(getattr(cfg, key), getattr(cfg, split_key), cfg.subset, f"task.{key}", f"task.{split_key}")
    cfg = with_columns(cfg, ("prompt", "reference"), table.column_names)
    _check_columns(table, cfg, key)
    placeholders, reference_column = _placeholders(cfg.prompt_template), _reference_column(cfg, table.column_names)
    rows = [_row(raw, number, cfg, placeholders, reference_column) for number, raw in table.numbered()]
    _check_types(rows, table.numbers, key)
    return rows


def build(cfg: PromptsConfig) -> TaskSplits:
    """Check every row, then hold out ``eval_size`` rows (``hold_out``), or read them from ``eval_path``."""
    check_positive(cfg, "eval_size")
    if cfg.train_size < 0:
        raise ValueError(f"task.train_size must be >= 0 (0: all the rest), got {cfg.train_size}")
    rows = _rows(cfg, "path", "split")
    if cfg.eval_path is None:
        return hold_out(rows, cfg)
    if not rows:
        raise ValueError(f"task.path={cfg.path} has no rows")
    held_out = _rows(cfg, "eval_path", "eval_split")
    if not held_out:
        raise ValueError(f"task.eval_path={cfg.eval_path} has no rows")
    train, evaluation = shuffled(rows, cfg.seed), shuffled(held_out, cfg.seed)
    return TaskSplits(train=to_dataset(train[: cfg.train_size or None]), eval=to_dataset(evaluation[: cfg.eval_size]))
