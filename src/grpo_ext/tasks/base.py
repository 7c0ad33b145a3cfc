"""What every task shares: the config schema of a ``task`` node and the splits a task returns."""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset
from omegaconf import MISSING


@dataclass
class RewardSpec:
    """One reward of a task: a registry name (or dotted path), its weight, and its constructor parameters."""

    name: str = MISSING
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None  # a reward of your own: seconds per completion, run in worker processes
    workers: int = 2  # with a timeout: the worker processes


@dataclass
class TaskConfig:
    """Fields every task node has. A task's own schema subclasses this and adds its knobs."""

    name: str = MISSING
    seed: int = 0  # data seed: fixes the train/eval split, independent of the training seed
    train_size: int = 10_000
    eval_size: int = 500
    system_prompt: str | None = None
    max_completion_length: int = 256  # the default for trainer.max_completion_length
    rewards: list[RewardSpec] = field(default_factory=list)


@dataclass
class TaskSplits:
    train: Dataset
    eval: Dataset


def open_node() -> Any:
    """An empty config node that takes new keys without Hydra's ``+`` (``task.columns.question=problem``)."""
    from omegaconf import OmegaConf

    return OmegaConf.create({}, flags={"struct": False})


def with_columns(cfg: Any, fields: tuple[str, ...], columns: list[str]) -> Any:
    """``cfg`` with ``task.columns`` applied: each field it maps (``{question: problem}``) read from that column
    instead of ``task.FIELD_column``. ``ValueError`` naming a field the task does not read, or a mapped column that
    the data (its ``columns``) lacks, with the columns it has."""
    mapping = dict(cfg.columns or {})
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise ValueError(f"task.columns names {unknown}, which this task does not read; it reads {list(fields)}")
    for name, column in mapping.items():
        if column not in columns:
            raise ValueError(f"task.columns.{name}={column!r} is not a column of the data; its columns: {columns}")
    return dataclasses.replace(cfg, **{f"{name}_column": column for name, column in mapping.items()})


def chat_prompt(user: str, system_prompt: str | None) -> list[dict[str, str]]:
    """A prompt in chat form, with the task's system prompt first when it has one."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": user}]


def check_positive(cfg: Any, *keys: str) -> None:
    """Raise ``ValueError`` naming ``task.KEY`` for each of ``keys`` that is not a positive integer."""
    for key in keys:
        value = getattr(cfg, key)
        if value < 1:
            raise ValueError(f"task.{key} must be >= 1, got {value}")


LOCAL_FORMATS = (".jsonl", ".json", ".parquet", ".csv")
FORMATS = f"{', '.join(LOCAL_FORMATS[:-1])} or {LOCAL_FORMATS[-1]}"  # as messages name them


@dataclass
class Table:
    """Rows read from ``task.path``: dicts with every column (``None`` where a row lacks one), and each row's
    number as errors give it (its line in a .jsonl file, else its position from 1)."""

    rows: list[dict[str, Any]]
    column_names: list[str]
    numbers: list[int]

    @classmethod
    def of(
        cls, rows: list[dict[str, Any]], numbers: list[int] | None = None, columns: list[str] | None = None
    ) -> Table:
        columns = columns or list(dict.fromkeys(key for row in rows for key in row))  # first-seen order
        filled = [{c: row.get(c) for c in columns} for row in rows]
        return cls(filled, columns, numbers or list(range(1, len(rows) + 1)))

    def __len__(self) -> int:
        return len(self.rows)

    def numbered(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return zip(self.numbers, self.rows, strict=True)


def read_json_rows(path: Path, label: str) -> Table:
    """The objects of a local JSON Lines file (one per line, blank lines skipped) or JSON file (a list of objects;
    a .json file holding one object per line is read as JSON Lines). ``ValueError`` names ``label`` and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{label}: cannot read it ({err})") from err
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # "Extra data": more than one value, so JSON Lines under a .json name
                raise ValueError(
                    f"{label}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
                ) from err
        else:
            if not isinstance(data, list):
                raise ValueError(
                    f"{label}: expected a list of objects (or one object per line), got {type(data).__name__}"
                )
            for number, row in enumerate(data, start=1):
                if not isinstance(row, dict):
                    raise ValueError(f"{label}: item {number} is a {type(row).__name__}, not an object")
            return Table.of(data)
    try:
        numbered = list(json_objects(text.splitlines()))
    except ValueError as err:
        raise ValueError(f"{label} {err}") from err
    rows, numbers = [row for _, row in numbered], [number for number, _ in numbered]
    return Table.of(rows, numbers)


INTEGER = re.compile(r"[-+]?(0|[1-9][0-9]*)")  # as written back: "007" stays text
NUMBER = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")


def read_csv_rows(path: Path, label: str) -> Table:
    """The rows of a local CSV file whose first line names the columns, each row numbered by the line it starts on.
    A column whose filled cells are all integers holds ints, all numbers floats, else text (``"nan"`` and ``"007"``
    are text); an empty cell is no value (``None``). ``ValueError`` names ``label`` and the line."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: the byte-order mark spreadsheets write
            reader = csv.reader(f)
            header, records = next(reader, None), []
            while True:
                start = reader.line_num + 1  # the line a row starts on, though a quoted cell may run over several
                record = next(reader, None)
                if record is None:
                    break
                if record:  # a blank line is no row
                    records.append((start, record))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{label}: cannot read it as CSV ({err})") from err
    if not header or not all(name.strip() for name in header):
        raise ValueError(f"{label}: the first line must name every column (a header such as prompt,answer)")
    if len(set(header)) < len(header):
        raise ValueError(f"{label}: the header names a column twice: {header}")
    for line, record in records:
        if len(record) != len(header):
            count = f"{len(record)} cell{'s' if len(record) != 1 else ''}"
            raise ValueError(f"{label} line {line}: {count}, where the header names {len(header)} columns")
    columns: dict[str, list[Any]] = {name: [record[i] for _, record in records] for i, name in enumerate(header)}
    for name, cells in columns.items():
        filled = [cell for cell in cells if cell != ""]
        if filled and all(INTEGER.fullmatch(cell) for cell in filled):
            kind: type = int
        elif filled and all(NUMBER.fullmatch(cell) for cell in filled):
            kind = float
        else:
            kind = str
        columns[name] = [kind(cell) if cell != "" else None for cell in cells]
    rows = [{name: columns[name][i] for name in header} for i in range(len(records))]
    return Table.of(rows, [line for line, _ in records], header)


def read_directory(path: Path, split: str, subset: str | None, label: str, split_key: str) -> Table:
    """The rows of a local directory: the dataset ``datasets`` saved there (``save_to_disk``), or the data files of
    a dataset repository (a clone of one on the Hub, or files laid out as one), at ``split`` when it has several."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    saved = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    try:
        data = load_from_disk(str(path)) if saved else load_dataset(str(path), subset)
    except Exception as err:  # datasets raises many types for a directory it cannot read
        raise ValueError(
            f"{label}: a directory that datasets cannot read as a saved dataset (save_to_disk) or a dataset "
            f"repository ({type(err).__name__}: {err}); or give a {FORMATS} file"
        ) from err
    if isinstance(data, DatasetDict):
        if split not in data:
            raise ValueError(f"{label}: the dataset has no split {split!r} ({split_key}); its splits: {list(data)}")
        data = data[split]
    return Table.of(list(data), columns=data.column_names)


def load_table(
    path: str, split: str, subset: str | None = None, key: str = "task.path", split_key: str = "task.split"
) -> Table:
    """The rows at ``path`` (the setting ``key``): a local .jsonl/.json/.parquet/.csv file by its suffix, a local
    directory (``read_directory``), else a Hub dataset name; a directory or Hub dataset read at ``split`` (the
    setting ``split_key``; and config ``subset``). Raises ``ValueError`` saying what was tried."""
    from datasets import load_dataset

    from grpo_ext.hub import HUB_TIMEOUT_S, hub_offline

    local = Path(path).expanduser()
    if local.suffix in LOCAL_FORMATS:
        if not local.is_file():
            raise ValueError(f"{key}={path}: no such file")
        if local.suffix in (".jsonl", ".json"):
            return read_json_rows(local, f"{key}={path}")
        if local.suffix == ".csv":
            return read_csv_rows(local, f"{key}={path}")
        try:
            dataset = load_dataset("parquet", data_files=str(local), split="train")
        except Exception as err:  # pyarrow and datasets raise many types for a file that is not Parquet
            raise ValueError(f"{key}={path}: cannot read it as Parquet ({type(err).__name__}: {err})") from err
        return Table.of(list(dataset), columns=dataset.column_names)
    if local.is_dir():
        return read_directory(local, split, subset, f"{key}={path}", split_key)
    if local.is_file():
        raise ValueError(
            f"{key}={path}: a local file of a format not read here ({local.suffix or 'no suffix'}): give a "
            f"{FORMATS} file"
        )
    try:
        if not hub_offline():
            from huggingface_hub import HfApi

            HfApi().dataset_info(path, timeout=HUB_TIMEOUT_S)  # fail in seconds, not after the retries
        dataset = load_dataset(path, subset, split=split)
    except Exception as err:  # the Hub client and datasets raise many types for "not found" and "no network"
        raise ValueError(
            f"{key}={path}: not a local {FORMATS} file or a directory, and loading it from the Hub failed "
            f"({type(err).__name__}: {err}). With a copy in the local cache, set HF_HUB_OFFLINE=1"
        ) from err
    return Table.of(list(dataset), columns=dataset.column_names)


def hold_out(rows: list[dict[str, Any]], cfg: Any) -> TaskSplits:
    """Shuffle checked rows with ``cfg.seed``; the first ``cfg.eval_size`` are eval, then up to ``cfg.train_size``
    (0: all the rest) are train. Raises ``ValueError`` when no train row would be left."""
    if len(rows) <= cfg.eval_size:
        raise ValueError(
            f"task.path={cfg.path} has {len(rows)} usable rows, not more than task.eval_size={cfg.eval_size}"
        )
    rows = shuffled(rows, cfg.seed)
    eval_rows, train_rows = rows[: cfg.eval_size], rows[cfg.eval_size :]
    if cfg.train_size:
        train_rows = train_rows[: cfg.train_size]
    return TaskSplits(train=to_dataset(train_rows), eval=to_dataset(eval_rows))


def shuffled(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """A copy of ``rows`` in an order fixed by ``seed``."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows


def to_dataset(rows: list[dict[str, Any]]) -> Dataset:
    """A ``Dataset`` of rows that all have the same keys."""
    return Dataset.from_dict({key: [r[key] for r in rows] for key in rows[0]})


def json_objects(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON Lines text; ``ValueError`` naming the first line
    that is not valid JSON or not an object (``line 3: not valid JSON (Expecting value at column 14)``)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"line {number}: not valid JSON ({err.msg} at column {err.colno})") from err
        if not isinstance(row, dict):
            raise ValueError(f"line {number}: expected a JSON object, got {type(row).__name__}")
        yield number, row
