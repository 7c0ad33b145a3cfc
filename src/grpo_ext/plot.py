"""Plots of runs against step: ``python -m grpo_ext.plot RUN_DIR [RUN_DIR ...] [--out DIR]``.

Writes ``reward.png`` (mean reward with its band of one standard deviation, and eval metrics when logged),
``kl.png`` and ``completion_length.png`` from each run's ``metrics.jsonl``; several runs (or a multirun directory,
whose jobs are taken one by one) are overlaid for comparison. Output: ``--out``, else the run directory when there
is one run, else the current directory. Every training run makes its own at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpo_ext.run.plots import expand, plot_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grpo_ext.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or a multirun directory")
    parser.add_argument("--out", type=Path, default=None, help="where to write the PNGs")
    args = parser.parse_args(argv)
    runs = expand(args.runs)
    if not runs:
        print(f"error: no metrics.jsonl in {[str(p) for p in args.runs]} or their job directories", file=sys.stderr)
        return 2
    out = args.out or (runs[0] if len(runs) == 1 else Path.cwd())
    try:
        paths = plot_runs(runs, out)
    except OSError as err:
        print(f"error: cannot write the plots to {out}: {err}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
