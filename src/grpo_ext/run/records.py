"""The run directory's own record, ``metrics.jsonl``, ``alerts.jsonl`` and ``status.json``: read and written without
transformers, so that the commands that only read runs (``grpo_ext.summarize``, ``grpo_ext.plot``) start at once.
Also the reader of a user's JSON Lines files (task rows, completions to score), which names the line that is
wrong."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def write_status(run_dir: str | Path, status: str, error: str | None = None, reason: str | None = None) -> None:
    """Record how a run ended in ``status.json``: ``ok``, ``stopped`` (early, by the run itself, with the reason),
    ``failed`` (with the error) or ``interrupted``."""
    record = {"status": status, **({"error": error} if error else {}), **({"reason": reason} if reason else {})}
    (Path(run_dir) / "status.json").write_text(json.dumps(record, indent=2) + "\n")


def interrupted(exit_code: Any) -> bool:
    """Whether a run's ``SystemExit`` code says a signal stopped it: 128 + the signal's number, or -1, submitit's
    exit once it has requeued the job."""
    return isinstance(exit_code, int) and (exit_code >= 128 or exit_code < 0)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``, in order (a last line cut short by a kill is left out); none when
    nothing was logged (no file: ``trainer.logging_steps`` past the last step, evaluations off)."""
    return _records(Path(run_dir) / "metrics.jsonl")


def _records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines of one of the run's own files, in order, leaving out a line a kill cut short; none without
    the file."""
    records = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


ALERTS = "alerts.jsonl"  # what the run warned of (the W&B alerts), a line each: step, level, title, message


def append_alert(run_dir: str | Path, step: int | None, level: str, title: str, message: str) -> None:
    """Record an alert in ``RUN/alerts.jsonl``, flushed at once (a divergence is recorded before the run exits)."""
    record = {"step": step, "level": level, "title": title, "message": message}
    with open(Path(run_dir) / ALERTS, "a") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_alerts(run_dir: str | Path) -> list[dict[str, Any]]:
    """The alerts ``RUN/alerts.jsonl`` records, in order; none without the file (a line cut short is left out)."""
    return _records(Path(run_dir) / ALERTS)


def alerts_text(run_dir: str | Path) -> str | None:
    """``no learning signal (step 10), held-out accuracy fell (step 25)``: each kind of alert once, at its first
    step; ``None`` without alerts."""
    first: dict[str, Any] = {}
    for alert in read_alerts(run_dir):
        first.setdefault(alert.get("title"), alert.get("step"))
    return ", ".join(f"{title} (step {step})" for title, step in first.items()) or None


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


def stopped_early(state: Any, key: str) -> str | None:
    """Why training ended before its last step without a signal or an error (``state``: the Trainer's): the only
    callback that stops it so is ``callbacks.EvalCallback``, when ``key`` (``eval.stop_on_drop``) is on; None when
    it ran to its end."""
    if state.global_step >= state.max_steps:
        return None
    return (
        f"stopped at step {state.global_step} of {state.max_steps}: held-out accuracy fell below the run's best "
        f"({key}=true)"
    )


def eval_change(records: list[dict[str, Any]]) -> str | None:
    """``eval accuracy 12.5% (step 0) -> 40.0% (step 200): +27.5 points``, from metrics records; ``None`` without
    two evaluations."""
    evals = [r for r in records if "eval/accuracy" in r]
    if len(evals) < 2:
        return None
    first, last = evals[0], evals[-1]
    change = 100 * (last["eval/accuracy"] - first["eval/accuracy"])
    return (
        f"eval accuracy: {first['eval/accuracy']:.1%} (step {first['step']}) -> {last['eval/accuracy']:.1%} "
        f"(step {last['step']}): {change:+.1f} points"
    )
