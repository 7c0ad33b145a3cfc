"""Proof that training learns: a model trained from scratch, SFT to a middling accuracy, then GRPO, on held-out data.

    python benchmarks/learning_proof.py arithmetic [--out proofs] [--seed 1] [KEY=VALUE ...]

Runs the project's own commands with the task's experiment config (``conf/experiment/<task>_proof.yaml``):
``grpo_ext.sft``, ``grpo_ext.evaluate`` on the warm start, ``grpo_ext.train`` from it, and ``grpo_ext.evaluate`` on
the result; extra ``KEY=VALUE`` overrides go to all four. A warm start already in ``OUT/sft`` is reused (delete it,
or give another ``--out``, to train it again); GRPO always starts afresh. Prints held-out greedy accuracy, pass@k
and how often the greedy answer shows its work, before and after GRPO, with the accuracy of each way of answering
when the first characters of the answer force it; accuracy along GRPO, and the wall time of each stage. Draws
``OUT/proof.png`` (held-out accuracy and training reward against step). Nothing is asserted: the figures go to the
README.
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
# task -> each way of answering, as the first characters that commit a completion to it (given the eval row)
STYLES = {
    "arithmetic": {
        "at once": lambda row: "<answer>",
        "worked out": lambda row: row["expression"].lstrip("(").split()[0],  # the first operand starts the work
    }
}
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


def style_accuracy(model_dir: Path, overrides: list[str], task: str) -> dict[str, float]:
    """Held-out greedy accuracy of each way of answering, each forced by the first characters of its answer."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from grpo_ext.config import register_configs
    from grpo_ext.evaluate import generate, score_completions
    from grpo_ext.rewards import build_rewards
    from grpo_ext.tasks import build_task

    transformers_logging.disable_progress_bar()
    register_configs()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    rows = build_task(cfg.task).eval
    rows = rows.select(range(min(cfg.eval.size or len(rows), len(rows))))
    reward = build_rewards(OmegaConf.to_container(cfg.task.rewards, resolve=True))[0][0]
    full = getattr(reward, "full_reward", 1.0)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    prompts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in rows["prompt"]]
    columns = {name: list(rows[name]) for name in rows.column_names if name != "prompt"}
    accuracy = {}
    for style, start in STYLES[task].items():
        starts = [start(row) for row in rows]
        outputs = generate(model, tokenizer, [p + s for p, s in zip(prompts, starts, strict=True)],
                           max_new_tokens=cfg.task.max_completion_length)  # fmt: skip
        completions = [s + o[0] for s, o in zip(starts, outputs, strict=True)]
        results = score_completions(reward, completions, columns)
        accuracy[style] = sum(r["reward"] is not None and r["reward"] >= full for r in results) / len(rows)
    return accuracy


def draw(records: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    steps = [r["step"] for r in records if "reward" in r]
    rewards = [r["reward"] for r in records if "reward" in r]
    smooth = [sum(rewards[max(0, i - 9) : i + 1]) / len(rewards[max(0, i - 9) : i + 1]) for i in range(len(rewards))]
    ax.plot(steps, rewards, color="tab:blue", alpha=0.25, linewidth=1)
    ax.plot(steps, smooth, color="tab:blue", linewidth=1.8, label="training reward (mean of a step, last 10 steps)")
    evals = [(r["step"], r["eval/accuracy"]) for r in records if "eval/accuracy" in r]
    ax.plot([s for s, _ in evals], [a for _, a in evals], "o-", color="tab:orange", linewidth=2,
            label="held-out accuracy (greedy)")  # fmt: skip
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
    args = parser.parse_intermixed_args()
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
    compose = [o for o in common if not o.startswith("trainer.")]
    styles = {name: style_accuracy(model, compose, args.task) for name, model in
              (("after SFT", sft_model), ("after GRPO", grpo_dir / "final_model"))}  # fmt: skip
    records = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval/accuracy"]) for r in records if "eval/accuracy" in r]
    draw(records, out / "proof.png")

    sft_time = f"{seconds['sft'] / 60:.1f} min" if seconds["sft"] else "reused"
    print(
        f"{args.task}, seed {args.seed}: SFT [{sft_time}], GRPO {evals[-1][0]} steps [{seconds['grpo'] / 60:.1f} min]"
    )
    forced = list(STYLES[args.task])
    print(f"{'':<12}{'accuracy':>10}{f'pass@{SAMPLES}':>9}{'shows work':>12}{'reward':>8}"
          + "".join(f"{f'forced {s}':>20}" for s in forced))  # fmt: skip
    for name, m in (("after SFT", before), ("after GRPO", after)):
        print(f"{name:<12}{m['accuracy']:>10.1%}{m[f'pass@{SAMPLES}']:>9.1%}{m['shows_work']:>12.1%}{m['reward']:>8.3f}"
              + "".join(f"{styles[name][s]:>20.1%}" for s in forced))  # fmt: skip
    print("held-out greedy accuracy along GRPO: " + "  ".join(f"{step}: {acc:.1%}" for step, acc in evals))
    change = 100 * (after["accuracy"] - before["accuracy"])
    print(f"GRPO change: {before['accuracy']:.1%} -> {after['accuracy']:.1%} ({change:+.1f} points); "
          f"plot: {out / 'proof.png'}")  # fmt: skip


if __name__ == "__main__":
    main()
