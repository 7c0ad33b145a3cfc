"""Training on a task mixture against training on each task alone, with the same number of its own completions.

    python benchmarks/mixture.py [--out proofs] [--seed 1] [--steps 100] [--reuse] [KEY=VALUE ...]

Runs the project's own commands with ``experiment=mixture_proof`` (arithmetic, the classic FizzBuzz and reasoning-gym's
chain_sum, weighted 2:1:1, on the tiny model from scratch): ``grpo_ext.sft`` on the mixture's references (reused from
``OUT/mixture/sft`` when it is there), ``grpo_ext.train`` on the mixture for ``--steps`` steps, then, from the same
warm start, ``grpo_ext.train`` on each part alone (the mixture with the other parts' weights 0, which trains as the
task alone) for its share of the steps, at the same batch: each part sees as many of its own completions alone as in
the mixture. Prints each part's held-out greedy accuracy after SFT, after the mixture and after training alone (the
last evaluation and the best), and the wall time of each run. ``--reuse`` keeps a run that ended well (its
``status.json`` says ok) instead of running it again.

Then the per-part bookkeeping's cost: the mixture's reward wrappers and ledgers (``rewards.parts``) timed on a batch of
the run's size, against the mean step time of the mixture run. Nothing is asserted: the figures go to the docs.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path

from commands import ended_well, run
from grpo_ext.run.records import read_metrics as records

WEIGHTS = {"arithmetic": 2, "fizzbuzz": 1, "reasoning_gym": 1}


def accuracy(run_dir: Path, part: str) -> tuple[float, float, float]:
    """A part's held-out accuracy: at the first evaluation, the last, and the best."""
    values = [r[f"eval/{part}/accuracy"] for r in records(run_dir) if f"eval/{part}/accuracy" in r]
    return values[0], values[-1], max(values)


def bookkeeping_cost(batch: int, repeats: int = 200) -> tuple[float, float]:
    """Seconds a batch of ``batch`` completions costs the mixture's bookkeeping (splitting the batch by part and
    spreading the values back, the ledgers' sums and their log), against the same reward called on its part's rows
    alone: (with, without), each the median over ``repeats`` batches."""
    from grpo_ext.rewards.arithmetic import ArithmeticShaping
    from grpo_ext.rewards.parts import Ledger, for_part

    parts = [label for label, weight in WEIGHTS.items() for _ in range(weight)]
    labels = [parts[i % len(parts)] for i in range(batch)]
    completions = [f"<answer>{i % 10}</answer>" for i in range(batch)]
    answers = [str(i % 7) for i in range(batch)]
    own = [i for i, label in enumerate(labels) if label == "arithmetic"]
    reward = ArithmeticShaping()
    wrapped = for_part(reward, "arithmetic", 1.0, Ledger("arithmetic", 1))
    timed = {"with": [], "without": []}
    for _ in range(repeats):
        ids: list = [[0]] * batch  # a batch of its own, as TRL passes it
        started = time.perf_counter()
        wrapped(completions, task=labels, answer=answers, completion_ids=ids, log_metric=lambda name, value: None)
        timed["with"].append(time.perf_counter() - started)
        started = time.perf_counter()
        reward([completions[i] for i in own], answer=[answers[i] for i in own])
        timed["without"].append(time.perf_counter() - started)
    return statistics.median(timed["with"]), statistics.median(timed["without"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("proofs"))
    parser.add_argument("--seed", type=int, default=1, help="the training seed of every run (config key seed)")
    parser.add_argument("--steps", type=int, default=100, help="GRPO steps of the mixture run")
    parser.add_argument("--reuse", action="store_true", help="keep the runs under OUT that ended well")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. hardware=cpu")
    args = parser.parse_intermixed_args()
    out = args.out.resolve() / "mixture"
    out.mkdir(parents=True, exist_ok=True)
    common = ["experiment=mixture_proof", f"seed={args.seed}", "logger=none", "trainer.disable_tqdm=true",
              *args.overrides]  # fmt: skip
    sft_model = out / "sft" / "final_model"
    seconds = {}
    if not (sft_model / "config.json").is_file():
        seconds["sft"] = run(["grpo_ext.sft", *common, f"hydra.run.dir={out / 'sft'}"], out / "sft.log")
    total = sum(WEIGHTS.values())
    runs = {"mixture": (f"trainer.max_steps={args.steps}",)}
    for part, weight in WEIGHTS.items():
        alone = ", ".join(f"{other}: {int(other == part)}" for other in WEIGHTS)
        runs[part] = (f"task.of={{{alone}}}", f"trainer.max_steps={args.steps * weight // total}")
    for name, extra in runs.items():
        if args.reuse and ended_well(out / name):
            continue
        shutil.rmtree(out / name, ignore_errors=True)  # every run starts afresh from the warm start
        where = [f"model.path={sft_model}", f"hydra.run.dir={out / name}"]
        seconds[name] = run(["grpo_ext.train", *common, *extra, *where], out / f"{name}.log")

    print(f"mixture_proof, seed {args.seed}: {args.steps} mixture steps of 16 prompts x 8 completions (weights "
          f"{WEIGHTS}); each part alone for its share of the steps")  # fmt: skip
    header = (
        ("after SFT", 10),
        ("mixture: last", 15),
        ("best", 7),
        ("alone: last", 13),
        ("best", 7),
        ("steps alone", 13),
    )
    print(f"{'part':<15}" + "".join(f"{name:>{width}}" for name, width in header))
    for part, weight in WEIGHTS.items():
        start, mixed, mixed_best = accuracy(out / "mixture", part)
        _, alone, alone_best = accuracy(out / part, part)
        print(f"{part:<15}{start:>10.1%}{mixed:>15.1%}{mixed_best:>7.1%}{alone:>13.1%}{alone_best:>7.1%}"
              f"{args.steps * weight // total:>13}")  # fmt: skip
    if seconds:
        print("wall time: " + ", ".join(f"{name} {s / 60:.1f} min" for name, s in seconds.items()))

    steps = [r["step_time"] for r in records(out / "mixture") if "step_time" in r]
    step = statistics.median(steps)
    wrapped, alone = bookkeeping_cost(batch=128)
    extra = wrapped - alone
    share = 100 * extra * len(WEIGHTS) / step
    print(f"bookkeeping: {1e3 * extra:.3f} ms a batch of 128 completions for each part's reward ({1e3 * wrapped:.3f} "
          f"ms wrapped, {1e3 * alone:.3f} ms on its rows alone); x{len(WEIGHTS)} parts = {share:.5f}% of the mixture "
          f"run's median step ({step:.2f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
