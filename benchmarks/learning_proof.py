"""Proof that training learns: a model trained from scratch, SFT to a middling accuracy, then GRPO, on held-out data.

    python benchmarks/learning_proof.py {arithmetic,fizzbuzz} [--out proofs] [--seed 1] [KEY=VALUE ...]

Runs the project's own commands with the task's experiment config (``conf/experiment/<task>_proof.yaml``):
``grpo_ext.sft``, ``grpo_ext.evaluate`` on the warm start, ``grpo_ext.train`` from it, and ``grpo_ext.evaluate`` on
the result; extra ``KEY=VALUE`` overrides go to all four. A warm start already in ``OUT/<task>/sft`` is reused when
it was trained with the same seed, task, model shape and ``sft`` settings (else the script stops and says so:
delete it, or give another ``--out``); GRPO always starts afresh. Prints held-out greedy
accuracy (pass@1), pass@k and mean reward before and after GRPO, with figures that say where the change is (for
arithmetic: how often the greedy answer shows its work, and the accuracy of each way of answering when the first
characters of the answer force it; for fizzbuzz: accuracy at each problem level), accuracy along GRPO, and the
wall time of each stage. Draws ``OUT/<task>/proof.png`` (held-out accuracy and training reward against step).
Nothing is asserted: the figures go to the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from commands import run

FIZZBUZZ_HEAD = "```python\ndef fizzbuzz(n: int) -> str:\n    "
# task -> (the way of answering the RL may pick, how to tell a completion takes it, and each way of answering as
# the first characters that commit a completion to it, given the eval row)
STYLES: dict[str, tuple[str, Callable[[str], bool], dict[str, Callable[[dict], str]]]] = {
    "arithmetic": (
        "worked out",
        lambda completion: " = " in completion,
        {
            "at once": lambda row: "<answer>",
            "worked out": lambda row: row["expression"].lstrip("(").split()[0],  # the first operand starts the work
        },
    ),
    "fizzbuzz": (
        "concatenates",
        lambda completion: 'out = ""' in completion,
        {
            "first match": lambda row: FIZZBUZZ_HEAD + "if",  # if n % 3 == 0:\n return 'Fizz' (wrong for 15)
            "concatenates": lambda row: FIZZBUZZ_HEAD + 'out = ""',  # then out += 'Fizz' for each rule that applies
        },
    ),
}
SAMPLES = 8  # pass@k of the evaluations before and after GRPO


def check_reusable(sft_dir: Path, common: list[str]) -> None:
    """Exit unless the warm start in ``sft_dir`` was trained with the config these arguments compose."""
    from omegaconf import OmegaConf

    wanted = compose_config(common)
    saved = OmegaConf.load(sft_dir / "config.yaml")
    for key in ("seed", "task", "model.architecture", "sft"):
        if OmegaConf.select(saved, key) != OmegaConf.select(wanted, key):
            sys.exit(
                f"{sft_dir} holds a warm start trained with another {key} than this run's; delete it or give "
                "another --out"
            )


def compose_config(overrides: list[str]) -> Any:
    from hydra import compose, initialize_config_module

    from grpo_ext.config.schema import register_configs

    register_configs()
    with initialize_config_module(config_module="grpo_ext.conf", version_base=None):
        return compose(config_name="config", overrides=overrides)


def eval_setup(overrides: list[str]) -> tuple[Any, Any, Callable]:
    """The composed config, the evaluated rows of the eval split (as ``grpo_ext.evaluate`` takes them) and the
    task's first reward (close it when done)."""
    from omegaconf import OmegaConf

    from grpo_ext.rewards import build_rewards
    from grpo_ext.tasks import build_task

    cfg = compose_config(overrides)
    rows = build_task(cfg.task).eval
    rows = rows.select(range(min(cfg.eval.size or len(rows), len(rows))))
    return cfg, rows, build_rewards(OmegaConf.to_container(cfg.task.rewards, resolve=True))[0][0]


def style_figures(task: str, examples: list[dict], model_dir: Path, setup: tuple) -> dict[str, float]:
    """How often the greedy answer takes the task's second way of answering, and the greedy accuracy of each way,
    forced by the first characters of its answer."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from grpo_ext.backends.generation import generate
    from grpo_ext.rewards import score_results

    transformers_logging.disable_progress_bar()
    cfg, rows, reward = setup
    full = getattr(reward, "full_reward", 1.0)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    prompts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in rows["prompt"]]
    columns = {name: list(rows[name]) for name in rows.column_names if name != "prompt"}
    name, takes, styles = STYLES[task]
    figures = {f"greedy {name}": sum(takes(e["completion"]) for e in examples) / len(examples)}
    for style, start in styles.items():
        starts = [start(row) for row in rows]
        outputs = generate(model, tokenizer, [p + s for p, s in zip(prompts, starts, strict=True)],
                           max_new_tokens=cfg.task.max_completion_length)  # fmt: skip
        completions = [s + o[0] for s, o in zip(starts, outputs, strict=True)]
        results = score_results(reward, completions, columns)
        figures[f"forced {style}"] = sum(r["reward"] is not None and r["reward"] >= full for r in results) / len(rows)
    return figures


def level_figures(examples: list[dict], setup: tuple) -> dict[str, float]:
    """Greedy accuracy at each problem level (fizzbuzz: level 1 is the classic 3/5 FizzBuzz, 2 and 3 have rules of
    their own)."""
    _, rows, reward = setup
    full = getattr(reward, "full_reward", 1.0)
    solved: dict[int, list[bool]] = {}
    for row, example in zip(rows, examples, strict=True):
        solved.setdefault(row["level"], []).append(example["reward"] is not None and example["reward"] >= full)
    return {f"level {level}": sum(s) / len(s) for level, s in sorted(solved.items())}


def figures_of(task: str, examples: list[dict], model_dir: Path, overrides: list[str]) -> dict[str, float]:
    """The task's figures of one model (``style_figures``, and ``level_figures`` for fizzbuzz)."""
    setup = eval_setup(overrides)
    try:
        levels = level_figures(examples, setup) if task == "fizzbuzz" else {}
        return {**style_figures(task, examples, model_dir, setup), **levels}
    finally:
        getattr(setup[2], "close", lambda: None)()


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
    parser.add_argument("task", choices=sorted(STYLES))
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
    if (sft_model / "config.json").is_file():
        check_reusable(out / "sft", common)
    else:
        seconds["sft"] = run(["grpo_ext.sft", *common, f"hydra.run.dir={out / 'sft'}"], out / "sft.log")
    evaluate = ["grpo_ext.evaluate", *common, f"eval.k={SAMPLES}"]
    run([*evaluate, f"model.path={sft_model}", f"hydra.run.dir={out / 'eval_sft'}"], out / "eval_sft.log")
    shutil.rmtree(grpo_dir, ignore_errors=True)  # GRPO always starts afresh from the warm start
    seconds["grpo"] = run(
        ["grpo_ext.train", *common, f"model.path={sft_model}", f"hydra.run.dir={grpo_dir}"], out / "grpo.log"
    )
    run([*evaluate, f"model.path={grpo_dir / 'final_model'}", f"hydra.run.dir={out / 'eval_grpo'}"],
        out / "eval_grpo.log")  # fmt: skip
    compose = [o for o in common if not o.startswith("trainer.")]
    reports = {"after SFT": (out / "eval_sft", sft_model), "after GRPO": (out / "eval_grpo", grpo_dir / "final_model")}
    metrics, figures = {}, {}
    for name, (report_dir, model) in reports.items():
        report = json.loads((report_dir / "eval_report.json").read_text())
        metrics[name] = report["metrics"]
        figures[name] = figures_of(args.task, report["examples"], model, compose)
    records = [json.loads(line) for line in (grpo_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["step"], r["eval/accuracy"]) for r in records if "eval/accuracy" in r]
    draw(records, out / "proof.png")

    sft_time = f"{seconds['sft'] / 60:.1f} min" if seconds["sft"] else "reused"
    print(
        f"{args.task}, seed {args.seed}: SFT [{sft_time}], GRPO {evals[-1][0]} steps [{seconds['grpo'] / 60:.1f} min]"
    )
    extra = list(figures["after SFT"])
    print(f"{'':<12}{'accuracy':>10}{f'pass@{SAMPLES}':>9}{'reward':>8}" + "".join(f"{e:>22}" for e in extra))
    for name, m in metrics.items():
        print(f"{name:<12}{m['accuracy']:>10.1%}{m[f'pass@{SAMPLES}']:>9.1%}{m['reward']:>8.3f}"
              + "".join(f"{figures[name].get(e, float('nan')):>22.1%}" for e in extra))  # fmt: skip
    print("held-out greedy accuracy along GRPO: " + "  ".join(f"{step}: {acc:.1%}" for step, acc in evals))
    before, after = metrics["after SFT"]["accuracy"], metrics["after GRPO"]["accuracy"]
    print(
        f"GRPO change: {before:.1%} -> {after:.1%} ({100 * (after - before):+.1f} points); plot: {out / 'proof.png'}"
    )


if __name__ == "__main__":
    main()
