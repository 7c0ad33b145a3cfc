"""What a reward in worker processes (``task.rewards[i].timeout``) costs to start and to replace, forkserver (what
training uses) against spawn (what it used before), in one run.

    python benchmarks/reward_workers.py [--repeats 5]

A script like this one, which imports the trainer, is the main module that every worker of both kinds runs again.
For each start method: the first worker's start (for the forkserver, the server's own imports as well), then
``--repeats`` completions that hang past a 0.2 s deadline, each of which costs a replacement; a replacement's time is
the batch's time less the deadline. Prints medians, and the ratio spawn / forkserver.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import grpo_ext.train  # noqa: F401 - the trainer's imports, as in a run (torch, transformers, TRL)
from grpo_ext.rewards.workers import Pool, call_one

# The reward below, as a user's module found on PYTHONPATH, by this process and by the workers' forkserver.
REPO = str(Path(__file__).resolve().parent.parent)
sys.path.insert(0, REPO)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
DEADLINE_S = 0.2


def measure(method: str, repeats: int) -> tuple[float, float]:
    """The first worker's start and the median replacement, in seconds."""
    pool = Pool("benchmarks.reward_workers.hang_on_request", {}, 1, call_one, method)
    try:
        started = time.monotonic()
        pool.workers.append(pool._start())
        first = time.monotonic() - started
        replacements = []
        for _ in range(repeats):
            started = time.monotonic()
            outcomes = [outcome for _, outcome, _ in pool.run([("hang", {})], DEADLINE_S)]
            assert outcomes == ["timeout"], outcomes
            replacements.append(time.monotonic() - started - DEADLINE_S)
        assert [outcome for _, outcome, _ in pool.run([("fine", {})], DEADLINE_S)] == ["ok"]
        return first, statistics.median(replacements)
    finally:
        pool.close()


def hang_on_request(completions, **kwargs):
    if "hang" in completions:
        time.sleep(3600)
    return [1.0 for _ in completions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    figures = {method: measure(method, args.repeats) for method in ("spawn", "forkserver")}
    for method, (first, replacement) in figures.items():
        print(f"{method:>10}: first worker ready in {first:.2f} s, a replacement in {replacement:.3f} s (median of "
              f"{args.repeats})")  # fmt: skip
    ratio = figures["spawn"][1] / figures["forkserver"][1]
    print(f"replacement: spawn / forkserver = {ratio:.0f}x")


if __name__ == "__main__":
    main()
