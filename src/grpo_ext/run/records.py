"""A run's own record, ``metrics.jsonl``, ``alerts.jsonl`` and ``status.json``: read and written without
transformers, so that the commands that only read runs (``grpo_ext.summarize``, ``grpo_ext.plot``) start at once."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import yaml

from grpo_ext.run.rundir import RunDir


def write_status(
    run_dir: str | Path | RunDir, status: str, error: str | None = None, reason: str | None = None
) -> None:
    """Record how a run ended in ``status.json``: ``ok``, ``stopped`` (early, by the run itself, with the reason),
    ``failed`` (with the error) or ``interrupted``."""
    record = {"status": status, **({"error": error} if error else {}), **({"reason": reason} if reason else {})}
    RunDir(run_dir).status.write_text(json.dumps(record, indent=2) + "\n")


def read_status(run_dir: str | Path | RunDir) -> str:
    """How the run in ``run_dir`` ended (``status.json``); ``unfinished`` without the file."""
    path = RunDir(run_dir).status
    return json.loads(path.read_text())["status"] if path.exists() else "unfinished"


def interrupted(exit_code: Any) -> bool:
    """Whether a run's exit code says a signal stopped it: 128 + the signal's number, or -1, submitit's exit once
    it has requeued the job."""
    return isinstance(exit_code, int) and (exit_code >= 128 or exit_code < 0)


def read_metrics(run_dir: str | Path | RunDir) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl``, in order (a last line cut short by a kill is left out); none when
    nothing was logged (no file: ``trainer.logging_steps`` past the last step, evaluations off)."""
    return _records(RunDir(run_dir).metrics)


def append_metrics(run_dir: str | Path | RunDir, record: dict[str, Any]) -> None:
    """Append one line to ``metrics.jsonl``, flushed as it is written: a crash keeps everything logged before it."""
    with open(RunDir(run_dir).metrics, "a") as f:
        f.write(json.dumps(record) + "\n")


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


def append_alert(run_dir: str | Path | RunDir, step: int | None, level: str, title: str, message: str) -> None:
    """Record an alert in ``RUN/alerts.jsonl``, flushed at once (a divergence is recorded before the run exits)."""
    record = {"step": step, "level": level, "title": title, "message": message}
    with open(RunDir(run_dir).alerts, "a") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_alerts(run_dir: str | Path | RunDir) -> list[dict[str, Any]]:
    """The alerts ``RUN/alerts.jsonl`` records, in order; none without the file (a line cut short is left out)."""
    return _records(RunDir(run_dir).alerts)


def alerts_text(run_dir: str | Path | RunDir) -> str | None:
    """``no learning signal (step 10), held-out accuracy fell (step 25)``: each kind of alert once, at its first
    step; ``None`` without alerts."""
    first: dict[Any, Any] = {}
    for alert in read_alerts(run_dir):
        first.setdefault(alert.get("title"), alert.get("step"))
    return ", ".join(f"{title} (step {step})" for title, step in first.items()) or None


def truncate_records(run_dir: str | Path | RunDir, step: int | None) -> None:
    """Keep the lines of ``metrics.jsonl`` and ``alerts.jsonl`` up to ``step``: the resumed run trains and logs the
    later steps again (an alert of no particular step stays). ``None``: the run starts afresh, in a directory an
    earlier start left without a checkpoint (stopped or killed before its first), and logs everything again, its
    step-0 evaluation included: nothing is kept."""
    from grpo_ext.run.rundir import replace_whole

    run = RunDir(run_dir)
    for path in (run.metrics, run.alerts):
        if not path.exists():
            continue
        kept = []
        for line in path.read_text().splitlines():
            try:
                if step is not None and (json.loads(line)["step"] or 0) <= step:
                    kept.append(line)
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by the kill
        replace_whole(path, "".join(line + "\n" for line in kept))


def final_value(records: list[dict[str, Any]], key: str, last: int = 5) -> float | None:
    """The mean of ``key`` over the last ``last`` records that have it; ``None`` when none has it."""
    values = [r[key] for r in records if key in r]
    return statistics.fmean(values[-last:]) if values else None


def job_overrides(job_dir: Path) -> list[str]:
    """The command-line overrides a sweep's job ran with (from Hydra's record in the job directory)."""
    path = Path(job_dir) / ".hydra" / "overrides.yaml"
    return list(yaml.safe_load(path.read_text()) or []) if path.exists() else []


def varying(overrides: list[list[str]]) -> list[list[str]]:
    """Each job's overrides, less those every job shares."""
    common = set.intersection(*(set(o) for o in overrides)) if overrides else set()
    return [[o for o in own if o not in common] for own in overrides]


def stopped_early(state: Any, key: str, sampler: str | None = None) -> str | None:
    """Why training ended before its last step without a signal or an error (``state``: the Trainer's): the prompt
    sampler's policy had nothing left to draw (``sampler``: what it said), or else the held-out evaluation stopped
    it, ``key`` (``eval.stop_on_drop``) being on; None when it ran to its end."""
    if state.global_step >= state.max_steps:
        return None
    if sampler:
        return f"stopped at step {state.global_step} of {state.max_steps}: the sampler ended it ({sampler})"
    return (
        f"stopped at step {state.global_step} of {state.max_steps}: held-out accuracy fell below the run's best "
        f"({key}=true)"
    )


def eval_change(records: list[dict[str, Any]], part: str | None = None) -> str | None:
    """``eval accuracy: 12.5% (step 0) -> 40.0% (step 200): +27.5 points``, from metrics records (of a mixture's
    ``part``: ``eval accuracy of arithmetic: ...``); ``None`` without two evaluations."""
    key = f"eval/{part}/accuracy" if part else "eval/accuracy"
    evals = [r for r in records if key in r]
    if len(evals) < 2:
        return None
    first, last = evals[0], evals[-1]
    change = 100 * (last[key] - first[key])
    return (
        f"eval accuracy{f' of {part}' if part else ''}: {first[key]:.1%} (step {first['step']}) -> "
        f"{last[key]:.1%} (step {last['step']}): {change:+.1f} points"
    )


def parts_evaluated(records: list[dict[str, Any]]) -> list[str]:
    """The parts of a mixture whose held-out accuracy the records hold (``eval/PART/accuracy``), in order."""
    keys = dict.fromkeys(k for r in records for k in r if k.startswith("eval/") and k.endswith("/accuracy"))
    return [k.removeprefix("eval/").removesuffix("/accuracy") for k in keys if k.count("/") == 2]
