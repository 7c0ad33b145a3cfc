"""Proof that training learns: a model trained from scratch, SFT to a middling accuracy, then GRPO, on held-out data.

    python benchmarks/learning_proof.py arithmetic [--out proofs] [--seed 1] [KEY=VALUE ...]

Runs the project's own commands with the task's experiment config (``conf/experiment/<task>_proof.yaml``):
``grpo_ext.sft``, ``grpo_ext.evaluate`` on the warm start, ``grpo_ext.train`` from it, and ``grpo_ext.evaluate`` on
the result; extra ``KEY=VALUE`` overrides go to all four. A warm start already in ``OUT/sft`` is reused (delete it,
or give another ``--out``, to train it again); GRPO always starts afresh. Prints held-out greedy accuracy, pass@k
and how often the greedy answer shows its work, before and after GRPO, accuracy along GRPO, and the wall time of
each stage; draws ``OUT/proof.png`` (held-out accuracy and training reward against step). Nothing is asserted: the
figures go to the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

# task -> what a greedy answer that "shows its work" looks like in that task's eval report
SHOWS_WORK = {"arithmetic": lambda completion: " = " in completion}
SAMPLES = 8  # pass@k of the evaluations before and after GRPO


def run(args: list[str], log: Path) -> float:
    """Run ``python -m ARGS`` with its output in ``log``; return the wall time; exit on failure."""
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(args[:2])} failed (exit {code}); see {log}")
    return time.monotonic() - started


def summary(report_dir: Path, task: str) -> dict[str, float]:
    """Accuracy, pass@k and the share of greedy answers that show their work, from an ``eval_report.json``."""
    report = json.loads((report_dir / "eval_report.json").read_text())
    examples = report["examples"]
    worked = sum(SHOWS_WORK[task](e["completion"]) for e in examples) / len(examples)
    return {**report["metrics"], "shows_work": worked}


def draw(records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for key, style, label in (
        ("reward", "-", "training reward (mean over the step's completions)"),
        ("eval/accuracy", "o-", "held-out accuracy (greedy)"),
    ):
        steps = [r["step"] for r in records if key in r]
        ax.plot(steps, [r[key] for r in records if key in r], style, label=label, linewidth=1.5)
    ax.set_xlabel("GRPO step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("GRPO from the SFT warm start")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=sorted(SHOWS_WORK))
    parser.add_argument("--out", type=Path, default=Path("proofs"))
    parser.add_argument("--seed", type=int, default=42, help="the training seed of both stages (config key seed)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every stage, e.g. hardware=cpu")
    args = parser.parse_args()
    out = args.out.resolve() / args.task
    out.mkdir(parents=True, exist_ok=True)
    common = [f"experiment={args.task}_proof", f"seed={args.seed}", "logger=none", "trainer.disable_tqdm=true",
              *args.overrides]  # fmt: skip
    sft_model, grpo_dir = out / "sft" / "final_model", out / "grpo"
    seconds = {"sft": 0.0}
    if not (sft_model / "config.json").is_file():
        seconds["sft"] = run(["grpo_ext.sft", *common, f"hydra.run.dir={out / 'sft'}"], out / "sft.log")
    evaluate = ["grpo_ext.evaluate", *common, f"eval.k={SAMPLES}"]
    run([*evaluate, f"model.path={sft_model}", f"hydra.run.dir={out / 'eval_sft'}"], out / "eval_sft.log")
    shutil.rmtree(grpo_dir, ignore_errors=True)  # GRPO always starts afresh from the warm start
    seconds["grpo"] = run(
        ["grpo_ext.train", *common, f"model.path={sft_model}", f"hydra.run.dir={grpo_dir}"], out / "grpo.log"
    )
    run([*evaluate, f"model.path={grpo_dir / 'final_model'}", f"hydra.run.dir={out / 'eval_grpo'}"],
        out / "eval_grpo.log")  # fmt: skip
    before, after = summary(out / "eval_sft", args.task), summary(out / "eval_grpo", args.task)
    records = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval/accuracy"]) for r in records if "eval/accuracy" in r]
    draw(records, out / "proof.png")

    sft_time = f"{seconds['sft'] / 60:.1f} min" if seconds["sft"] else "reused"
    print(
        f"{args.task}, seed {args.seed}: SFT [{sft_time}], GRPO {evals[-1][0]} steps [{seconds['grpo'] / 60:.1f} min]"
    )
    print(f"{'':<22}{'accuracy':>10}{f'pass@{SAMPLES}':>10}{'shows work':>12}{'reward':>9}")
    for name, m in (("after SFT", before), ("after GRPO", after)):
        print(
            f"{name:<22}{m['accuracy']:>10.1%}{m[f'pass@{SAMPLES}']:>10.1%}{m['shows_work']:>12.1%}{m['reward']:>9.3f}"
        )
    print("held-out greedy accuracy along GRPO: " + "  ".join(f"{step}: {acc:.1%}" for step, acc in evals))
    change = 100 * (after["accuracy"] - before["accuracy"])
    print(f"GRPO change: {before['accuracy']:.1%} -> {after['accuracy']:.1%} ({change:+.1f} points); "
          f"plot: {out / 'proof.png'}")  # fmt: skip


if __name__ == "__main__":
    main()
