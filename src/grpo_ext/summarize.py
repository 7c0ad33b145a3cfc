"""One row per job of a sweep: ``python -m grpo_ext.summarize MULTIRUN_DIR [--metric reward] [--csv PATH]``.

Reads each job directory of a Hydra multirun (``.hydra/overrides.yaml``, ``status.json``, ``metrics.jsonl``) and
prints a table sorted by the chosen metric (best first; jobs without it last): the overrides that differ between
jobs, the status, steps, wall time, the final value of reward, KL and every eval metric logged, the best held-out
accuracy (or the job's ``eval.best_metric``) with its step (``best.json``: the model the job kept), and the alerts the
job raised, each kind at its first step (``alerts.jsonl``: a collapse, no learning signal, completions cut off).
"Final" is the mean over the last ``--last`` logged steps (default 5), which is steadier than one step. The table is
also written as CSV (default: ``MULTIRUN_DIR/summary.csv``).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from grpo_ext.run.best_model import read_best, record_metric
from grpo_ext.run.records import alerts_text, final_value, job_overrides, read_metrics, read_status, varying

FIXED = ("job", "overrides", "status", "steps", "wall_time_s")


def job_row(job_dir: Path, last: int) -> dict[str, Any]:
    overrides = job_overrides(job_dir)
    status = read_status(job_dir)
    records = read_metrics(job_dir)
    row: dict[str, Any] = {
        "job": job_dir.name.split("_", 1)[0],
        "overrides": overrides,
        "status": status,
        "steps": records[-1]["step"] if records else 0,
        "wall_time_s": records[-1].get("wall_time") if records else None,
        "reward": final_value(records, "reward", last),
        "kl": final_value(records, "kl", last),
        "alerts": alerts_text(job_dir),  # what the job warned of: a collapse, no signal, cut-off completions...
    }
    for key in sorted({k for r in records for k in r if k.startswith("eval")}):
        row[key] = final_value(records, key, last)
    best = read_best(job_dir)  # the best evaluation, whose model the job kept (eval.keep_best)
    if best is None:
        row["best_accuracy"], row["best_step"] = None, None
    else:  # best_accuracy, or best_reward... for jobs that rank by eval.best_metric=reward
        metric = record_metric(best)
        row[f"best_{metric.removeprefix('eval/')}"], row["best_step"] = best[metric], best["step"]
    return row


def summarize(sweep_dir: Path, metric: str, last: int) -> list[dict[str, Any]]:
    jobs = [d for d in sweep_dir.iterdir() if d.is_dir() and d.name.split("_", 1)[0].isdigit()]
    if not jobs:
        raise ValueError(f"{sweep_dir} holds no job directories (NUMBER_overrides/): is it a multirun directory?")
    rows = [job_row(d, last) for d in sorted(jobs, key=lambda d: int(d.name.split("_", 1)[0]))]
    for row, own in zip(rows, varying([r["overrides"] for r in rows]), strict=True):
        row["overrides"] = " ".join(own) or "(none)"
    return sorted(rows, key=lambda r: (r.get(metric) is None, -(r.get(metric) or 0.0)))


def render(rows: list[dict[str, Any]]) -> str:
    columns = list(FIXED) + sorted({k for r in rows for k in r} - set(FIXED))
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo_ext.summarize", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory")
    parser.add_argument("--metric", default="reward", help="sort by this column, highest first (default: reward)")
    parser.add_argument("--last", type=int, default=5, help="final values average the last N logged steps")
    parser.add_argument(
        "--csv", type=Path, default=None, help="where to write the CSV (default: SWEEP_DIR/summary.csv)"
    )
    args = parser.parse_args(argv)
    try:
        if args.last < 1:
            raise ValueError(f"--last must be >= 1, got {args.last}")
        if not args.sweep_dir.is_dir():
            raise ValueError(f"{args.sweep_dir} is not a directory")
        rows = summarize(args.sweep_dir, args.metric, args.last)
        if all(args.metric not in r for r in rows):
            known = sorted({k for r in rows for k in r} - {"job", "overrides", "status"})
            raise ValueError(f"no job has the metric {args.metric!r}; columns: {known}")
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(rows))
    path = args.csv or args.sweep_dir / "summary.csv"
    columns = list(FIXED) + sorted({k for r in rows for k in r} - set(FIXED))
    try:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    except OSError as err:
        print(f"error: cannot write the CSV to {path}: {err}", file=sys.stderr)
        return 1
    print(f"\n{len(rows)} jobs; CSV: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
