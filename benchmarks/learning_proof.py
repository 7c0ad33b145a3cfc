"""Proof that training learns: SFT a model trained from scratch to a middling accuracy, then GRPO, on held-out data.

    python benchmarks/learning_proof.py arithmetic [--hardware cpu] [--out proofs] [--grpo-steps N] [KEY=VALUE ...]

Runs ``python -m grpo_ext.sft`` then ``python -m grpo_ext.train`` from its ``final_model`` with the preset below
(extra ``KEY=VALUE`` overrides go to both), and prints the held-out greedy accuracy before SFT, after SFT, and along
GRPO (every ``eval.every`` steps; the same 500 eval problems throughout), with the wall time of each stage. The GRPO
run directory keeps ``metrics.jsonl`` and the plots (``accuracy.png``, ``reward.png``). Nothing is asserted: the
figures go to the README.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

PRESETS = {
    # The seeds' testbed, (a op1 b) op2 c with digits 0-9, prompts reduced to the bare expression for a small model.
    "arithmetic": {
        "task": [
            "task=arithmetic",
            'task.prompt_template="{expression}"',
            "task.train_size=8000",
            "task.eval_size=500",
            "eval.size=500",
        ],  # fmt: skip
        "sft": ["sft.steps=500", "sft.batch_size=64", "sft.learning_rate=1e-3"],  # 42.8% held-out
        "grpo": [
            "trainer.num_generations=8",
            "trainer.per_device_train_batch_size=128",
            "trainer.max_completion_length=24",
            "trainer.learning_rate=5e-5",
            "trainer.beta=0.04",
            "trainer.loss_type=grpo",
            "trainer.max_steps=300",
            "trainer.save_steps=50",
            "eval.every=25",
        ],  # fmt: skip
    },
}


def run(args: list[str], log: Path) -> float:
    """Run ``python -m ARGS`` with its output in ``log``; return the wall time; exit on failure."""
    started = time.monotonic()
    with open(log, "w") as out:
        code = subprocess.call([sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(args[:2])} failed (exit {code}); see {log}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=sorted(PRESETS))
    parser.add_argument("--hardware", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("proofs"))
    parser.add_argument("--grpo-steps", type=int, default=None)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    preset = PRESETS[args.task]
    out = args.out.resolve() / args.task
    common = [*preset["task"], "model=tiny", f"hardware={args.hardware}", "logger=none", "trainer.disable_tqdm=true",
              *args.overrides]  # fmt: skip
    sft_dir, grpo_dir = out / "sft", out / "grpo"
    out.mkdir(parents=True, exist_ok=True)
    sft_seconds = run(["grpo_ext.sft", *common, *preset["sft"], f"hydra.run.dir={sft_dir}"], out / "sft.log")
    grpo = [*preset["grpo"], *([f"trainer.max_steps={args.grpo_steps}"] if args.grpo_steps else [])]
    grpo_seconds = run(
        ["grpo_ext.train", *common, *grpo, f"model.path={sft_dir / 'final_model'}", f"hydra.run.dir={grpo_dir}"],
        out / "grpo.log",
    )
    sft_line = next(line for line in (out / "sft.log").read_text().splitlines() if line.startswith("SFT "))
    records = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval/accuracy"]) for r in records if "eval/accuracy" in r]
    print(f"{args.task} on {args.hardware}: {sft_line}  [{sft_seconds / 60:.1f} min]")
    print(f"GRPO, {evals[-1][0]} steps [{grpo_seconds / 60:.1f} min]: held-out greedy accuracy by step:")
    print("  " + "  ".join(f"{step}: {acc:.1%}" for step, acc in evals))
    change = 100 * (evals[-1][1] - evals[0][1])
    print(f"GRPO change: {evals[0][1]:.1%} -> {evals[-1][1]:.1%} ({change:+.1f} points); plots in {grpo_dir}")


if __name__ == "__main__":
    main()
