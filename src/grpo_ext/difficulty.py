"""Which prompts give GRPO something to learn from, before GPU time is spent on the others:
``python -m grpo_ext.difficulty task=arithmetic model.path=DIR [task.train_size=2000]``.

GRPO learns from the differences between the rewards of one prompt's completions; a prompt whose completions all
score alike (always solved, as FizzBuzz was for the seeds' model, or never) adds nothing but its cost to a step. For
each prompt of the task's train split this samples a group as training would (``trainer.num_generations``
completions at ``trainer.temperature``, ``top_p``, ``top_k``, ``min_p``, up to ``trainer.max_completion_length``
tokens), scores it with the task's rewards and weights, and writes to the output directory:

- ``difficulty.jsonl``: every row with ``pass_rate`` (the share of its completions the first reward scores in full),
  ``reward_mean`` and ``signal`` (whether the group's total rewards differ, which TRL's ``frac_reward_zero_std``
  counts the opposite of);
- ``with_signal.jsonl``: the rows with a signal, as the task gave them, and ``eval.jsonl``: the task's eval split,
  so that ``task=prompts task.path=RUN/with_signal.jsonl task.eval_path=RUN/eval.jsonl`` trains on them and
  evaluates as before (the command is printed).

Generation is TRL's ``model.generate`` path of the evaluations (no vLLM), ``eval.batch_size`` completions at once.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SIGNAL_SPREAD = 1e-6  # total rewards closer than this count as the same (TRL's zero-std test has the same margin)


def measure(
    model: Any, tokenizer: Any, dataset: Any, rewards: list[Any], weights: list[float], cfg: Any
) -> list[dict[str, Any]]:
    """Per row of ``dataset``: ``pass_rate``, ``reward_mean`` and ``signal`` over a group sampled as ``cfg.trainer``
    samples (a failed score counts as missing, as in training; a group scored by nothing has no signal)."""
    from grpo_ext.evaluate import as_trl_passes, generate, score_tolerantly, trl_arguments

    trainer, k = cfg.trainer, cfg.trainer.num_generations
    columns = {name: list(dataset[name]) for name in dataset.column_names if name != "prompt"}
    prompts = list(dataset["prompt"])
    groups = generate(
        model, tokenizer, prompts, max_new_tokens=trainer.max_completion_length, samples=k,
        temperature=trainer.temperature, top_p=trainer.top_p, top_k=trainer.top_k or 0, min_p=trainer.min_p,
        batch_size=cfg.eval.batch_size,
    )  # fmt: skip
    texts = [c for group in groups for c in group]
    flat = as_trl_passes(texts, prompts[0])
    repeated = {name: [v for v in values for _ in range(k)] for name, values in columns.items()}
    context = trl_arguments([p for p in prompts for _ in range(k)], texts, tokenizer)
    scores = [[r.get("reward") for r in score_tolerantly(reward, flat, repeated, context)] for reward in rewards]
    full = float(getattr(rewards[0], "full_reward", 1.0))
    rows = []
    for i in range(len(dataset)):
        group = range(i * k, (i + 1) * k)
        totals = [_total([s[j] for s in scores], weights) for j in group]
        scored = [t for t in totals if t is not None]
        rows.append({
            "pass_rate": sum(scores[0][j] is not None and scores[0][j] >= full for j in group) / k,
            "reward_mean": sum(scored) / len(scored) if scored else None,
            "signal": bool(scored) and max(scored) - min(scored) > SIGNAL_SPREAD,
        })  # fmt: skip
    return rows


def _total(values: list[float | None], weights: list[float]) -> float | None:
    """The weighted sum TRL trains on, leaving out the rewards that gave None; None when all did."""
    present = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    return sum(v * w for v, w in present) if present else None


def summary(measured: list[dict[str, Any]], k: int) -> str:
    """How many prompts give a signal, how many always or never pass, and the pass-rate histogram."""
    n = len(measured)
    signal = sum(r["signal"] for r in measured)
    always = sum(not r["signal"] and r["pass_rate"] == 1.0 for r in measured)
    never = sum(not r["signal"] and r["pass_rate"] == 0.0 for r in measured)
    counts = Counter(round(r["pass_rate"] * k) for r in measured)
    histogram = "  ".join(f"{j}/{k}: {counts.get(j, 0)}" for j in range(k + 1))
    return (
        f"{signal} of {n} prompts ({signal / max(n, 1):.1%}) give GRPO a signal (the rewards of their {k} "
        f"completions differ); {n - signal} score alike: {always} solved every time, {never} never, "
        f"{n - signal - always - never} alike otherwise\npass rate (first reward in full): {histogram}"
    )


def write(run_dir: Path, dataset: Any, eval_split: Any, measured: list[dict[str, Any]]) -> tuple[Path, Path, Path]:
    """``difficulty.jsonl`` (every row with its figures), ``with_signal.jsonl`` and ``eval.jsonl``, each whole or not
    at all."""
    given = dataset.to_list()
    rows = [{**row, **figures} for row, figures in zip(given, measured, strict=True)]
    keep = [row for row, figures in zip(given, measured, strict=True) if figures["signal"]]
    paths = run_dir / "difficulty.jsonl", run_dir / "with_signal.jsonl", run_dir / "eval.jsonl"
    for path, lines in zip(paths, (rows, keep, eval_split.to_list()), strict=True):
        tmp = path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
        tmp.replace(path)
    return paths


def next_command(cfg: Any, with_signal: Path, eval_path: Path) -> list[str]:
    """The overrides that train on the rows with a signal: the prompts task, with this task's rewards and lengths and
    this model."""
    from omegaconf import OmegaConf

    rewards = _override(OmegaConf.to_container(cfg.task.rewards, resolve=True))
    model = f"model.path={cfg.model.path}" if cfg.model.path else f"model={cfg.model.name}"
    return [
        "task=prompts", f"task.path={with_signal}", f"task.eval_path={eval_path}",
        f"task.eval_size={cfg.task.eval_size}", f"task.max_completion_length={cfg.task.max_completion_length}",
        f"task.rewards={rewards}", model,
    ]  # fmt: skip


def _override(value: Any) -> str:
    """``value`` as Hydra's override grammar writes it: keys bare, strings double-quoted (inside the shell's single
    quotes)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_override(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_override(item) for item in value) + "]"
    return json.dumps(value)  # a string quoted, None as null, booleans as true and false, numbers as they are


def main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig, OmegaConf
    from transformers import set_seed

    from grpo_ext.config import make_grpo_config, register_configs
    from grpo_ext.evaluate import load_model
    from grpo_ext.hardware import check_device, resolve_auto
    from grpo_ext.models import ModelUnavailableError
    from grpo_ext.reward_guard import RewardFailureError
    from grpo_ext.rewards import build_rewards
    from grpo_ext.tasks import build_task, check_columns

    register_configs()

    @hydra.main(version_base=None, config_path="pkg://grpo_ext.conf", config_name="config")
    def _main(cfg: DictConfig) -> None:
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        cfg = resolve_auto(cfg, list(HydraConfig.get().overrides.task))
        try:
            check_device(cfg.hardware)
            rewards, weights = build_rewards(OmegaConf.to_container(cfg.task.rewards, resolve=True))
            make_grpo_config(cfg, str(run_dir), weights)  # the sampling settings checked as training checks them
        except ValueError as err:
            sys.exit(f"config error: {err}")
        try:
            splits = build_task(cfg.task)
            check_columns(splits.train, rewards, f"{cfg.task.name} train split")
            model, tokenizer = load_model(cfg)
            set_seed(cfg.seed)  # the same groups for the same command
            measured = measure(model, tokenizer, splits.train, rewards, weights, cfg)
        except ValueError as err:
            sys.exit(f"task error: {err}")
        except RewardFailureError as err:
            sys.exit(f"error: {err}")
        except ModelUnavailableError as err:
            sys.exit(f"model error: {err}")
        finally:
            for reward in rewards:
                getattr(reward, "close", lambda: None)()
        report, with_signal, eval_path = write(run_dir, splits.train, splits.eval, measured)
        k = cfg.trainer.num_generations
        print(f"{cfg.task.name} train split, {len(measured)} prompts, {k} completions each:")
        print(summary(measured, k))
        print(f"every prompt with its figures: {report}")
        if any(r["signal"] for r in measured):
            command = ["python", "-m", "grpo_ext.train", *next_command(cfg, with_signal, eval_path)]
            print(f"train on the prompts with a signal: {shlex.join(command)}")
        else:
            print(
                "no prompt gives a signal: a warm start on the task's references (grpo_ext.sft), easier or harder "
                "prompts, a reward with partial credit, or more generations or a higher trainer.temperature"
            )

    _main()


if __name__ == "__main__":
    main()
