"""Score completions with a reward: ``python -m grpo_ext.score REWARD FILE.jsonl [--workers N] [--timeout S]``.

Each input line is a JSON object with ``completion`` and the dataset columns the reward reads; each output line is
a JSON object with ``reward`` (a float, or null where the reward does not apply) and the reward's details, in input
order. Every line is checked before anything is scored: a malformed line or a missing column exits with status 2,
naming the line and the column, and prints no scores. ``FILE`` may be ``-`` for standard input.

For ``python_exec``, the lines may be rows of a published code dataset as they are, each with a ``completion``
(HumanEval's own rows, MBPP's, ...: ``tasks.code_layouts``), told from their columns or named by ``--format``.

``--workers`` and ``--timeout`` go to the reward when it takes them as parameters (``python_exec``: its sandbox
workers and per-program time limit), and the reward scores every line at once. For other rewards they mean: score
lines in worker processes; a line that runs past the timeout gets ``{"reward": null, "status": "timeout"}``, its
worker is killed and replaced, and scoring goes on.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from grpo_ext.rewards import REWARDS, build_reward, reward_columns, score_results
from grpo_ext.rewards.workers import Pool
from grpo_ext.tasks.base import json_objects

USAGE_ERROR = 2


def score_row(reward: Callable, row: dict[str, Any]) -> dict[str, Any]:
    """Score one row as TRL would call the reward on it; never raises (an exception becomes ``reward: null`` with
    ``status: error``).

    As in training: after a chat ``prompt``, a plain-text completion comes as one assistant message; ``prompt`` comes
    as ``prompts``, ``completion_ids`` as itself (``None`` when the line has none: there is no tokenizer here), with
    TRL's ``trainer_state`` (a new one), ``log_extra`` and ``log_metric`` (logging nothing); the other columns by
    name."""
    from grpo_ext.rewards.calling import trl_arguments

    completion, prompt = row["completion"], row.get("prompt")
    if isinstance(prompt, list) and isinstance(completion, str):
        completion = [{"role": "assistant", "content": completion}]
    trl = trl_arguments([prompt], [completion], None)
    trl["completion_ids"] = [row["completion_ids"]] if "completion_ids" in row else None
    columns = {key: [value] for key, value in row.items() if key not in ("completion", "prompt", "completion_ids")}
    try:
        return score_results(reward, [completion], columns, trl)[0]
    except Exception as err:  # a reward that raises must not stop the other lines
        return {"reward": None, "status": "error", "error": f"{type(err).__name__}: {err}"}


def score_batch(reward: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Score every row in one call of a reward that scores batches itself (in parallel, with its own limits)."""
    names = (*reward_columns(reward), *getattr(reward, "optional_columns", ()))
    try:
        return score_results(
            reward, [row["completion"] for row in rows], {n: [row.get(n) for row in rows] for n in names}
        )
    finally:
        if hasattr(reward, "close"):
            reward.close()


def read_rows(lines: list[str], required: tuple[str, ...]) -> list[dict[str, Any]]:
    """Parse and check every non-blank line; raise ``ValueError`` naming the first bad line (1-based) and what is
    wrong."""
    rows = []
    for number, row in json_objects(lines):
        for column in ("completion", *required):
            if column not in row:
                raise ValueError(f"line {number}: missing column {column!r} (this reward reads {list(required)})")
        rows.append(row)
    return rows


def score_in_workers(
    name: str, params: dict[str, Any], rows: list[dict[str, Any]], workers: int, timeout: float | None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Score ``rows`` in ``workers`` killable processes; yield ``(index, result)`` as results arrive."""
    # the TrainerState each call gets: imported before the workers fork, not in each against its first line's timeout
    import transformers.trainer_callback  # noqa: F401

    pool = Pool(name, params, workers, score_row, "fork")
    failed = {"timeout": {"reward": None, "status": "timeout"}, "crashed": {"reward": None, "status": "crashed"}}
    try:
        for index, outcome, result in pool.run(rows, timeout):
            yield index, result if outcome == "ok" else failed[outcome]
    finally:
        pool.close()


def code_rows(lines: list[str], layout: str) -> list[dict[str, Any]]:
    """Rows of a published code dataset (``layout``, or ``auto``: told from the first line's columns), each with a
    ``completion``, as python_exec's columns; ``ValueError`` naming the line."""
    from grpo_ext.rewards.python_exec import parse_tests
    from grpo_ext.tasks.code_layouts import convert, detect

    rows = []
    for number, raw in json_objects(lines):
        if "completion" not in raw:
            raise ValueError(f"line {number}: missing column 'completion'")
        if layout == "auto":
            layout = detect(sorted(raw), f"line {number}")
        try:
            row = convert(layout, raw, {"prompt": "prompt", "tests": "tests", "entry_point": "entry_point"})
            parse_tests(row["tests"], row["entry_point"] or None)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"line {number} ({layout}): {err}") from err
        rows.append({"completion": raw["completion"], "tests": row["tests"], "entry_point": row["entry_point"],
                     "code_prefix": row["code_prefix"]})  # fmt: skip
    return rows


def _parse_params(items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects KEY=VALUE, got {item!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _has_tests(lines: list[str]) -> bool:
    """Whether the first row has python_exec's own ``tests`` column (else it is read as a published layout)."""
    first = next(json_objects(lines), None)
    return first is None or "tests" in first[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo_ext.score", description=__doc__.split("\n\n")[0])
    parser.add_argument("reward", help=f"registry name ({', '.join(sorted(REWARDS))}) or dotted path pkg.module.fn")
    parser.add_argument("file", help="JSON lines with 'completion' and the columns the reward reads; - for stdin")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: score in-process)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per line (uses workers)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="reward parameter (JSON)")
    layouts = "humaneval, mbpp, apps, codecontests, open_r1, livecodebench, ours"
    parser.add_argument("--format", help=f"python_exec: the rows' layout (auto: from the columns; {layouts})")
    args = parser.parse_args(argv)
    try:
        if args.workers is not None and args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if args.timeout is not None and args.timeout <= 0:
            raise ValueError(f"--timeout must be > 0, got {args.timeout}")
        params = _parse_params(args.param)
        accepted = getattr(REWARDS.get(args.reward), "PARAMS", ())
        for key in ("workers", "timeout"):  # the reward's own, when it has them
            if key in accepted and getattr(args, key) is not None:
                params.setdefault(key, getattr(args, key))
                setattr(args, key, None)
        reward = build_reward(args.reward, params)
        with sys.stdin if args.file == "-" else open(args.file, encoding="utf-8") as f:
            lines = f.read().splitlines()
        if args.format is not None and "tests" not in reward_columns(reward):
            raise ValueError(f"--format is for python_exec's rows; {args.reward} reads {list(reward_columns(reward))}")
        if "tests" in reward_columns(reward) and (args.format not in (None, "ours") or not _has_tests(lines)):
            rows = code_rows(lines, args.format or "auto")
        else:
            rows = read_rows(lines, reward_columns(reward))
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR

    if hasattr(reward, "score_batch"):
        results: Iterator[tuple[int, dict[str, Any]]] = enumerate(score_batch(reward, rows))
    elif args.workers is None and args.timeout is None:
        results = ((i, score_row(reward, row)) for i, row in enumerate(rows))
    else:
        results = score_in_workers(args.reward, params, rows, args.workers or 1, args.timeout)
    done: dict[int, dict[str, Any]] = {}
    next_index = 0
    for index, result in results:  # print in input order, as soon as each prefix is complete
        done[index] = result
        while next_index in done:
            print(json.dumps(done.pop(next_index), ensure_ascii=False), flush=True)
            next_index += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
