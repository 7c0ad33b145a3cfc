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
Each batch's figures are appended to ``difficulty.partial.jsonl`` as they come, beside ``difficulty.settings.json``
(what is being measured): a run stopped part way (a crash, a preempted job, Ctrl-C) and run again into the same
directory (``hydra.run.dir=DIR``) goes on from the first prompt not yet measured, and one run again after it finished
prints its result without loading the model. Each batch is sampled from a seed of its own (``seed`` plus its first
row's index), so a measurement continued gives the figures an unbroken one would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from grpo_ext.backends.hardware import check_device
from grpo_ext.config import plain, plain_list
from grpo_ext.config.grpo import make_grpo_config
from grpo_ext.config.schema import register_configs
from grpo_ext.config.validate import check_config, expand_mixture
from grpo_ext.errors import ConfigError, Stopped, TaskError, raised_as
from grpo_ext.run import entry
from grpo_ext.run.rundir import RunDir, replace_whole
from grpo_ext.tasks import build_task, check_columns, task_rewards
from grpo_ext.tasks.mix import TASK_COLUMN

log = logging.getLogger("grpo_ext.difficulty")

register_configs()

FIGURES = ("pass_rate", "reward_mean", "signal")  # what is measured of each row
SIGNAL_SPREAD = 1e-6  # total rewards closer than this count as the same (TRL's zero-std test has the same margin)


def measure(
    model: Any, tokenizer: Any, dataset: Any, rewards: list[Any], weights: list[float], cfg: Any, start: int = 0
) -> Iterator[dict[str, Any]]:
    """Per row of ``dataset`` from ``start`` on, as each batch is scored: ``pass_rate``, ``reward_mean`` and
    ``signal`` over a group sampled as ``cfg.trainer`` samples (a failed score counts as missing, as in training; a
    group scored by nothing has no signal)."""
    from transformers import set_seed

    from grpo_ext.backends.generation import generate
    from grpo_ext.rewards.calling import as_trl_passes, score_tolerantly, trl_arguments

    trainer, k = cfg.trainer, cfg.trainer.num_generations
    # the reward that says whether a row is solved: the first, or its part's first in a mixture
    first = {getattr(reward, "rows_of", None): i for i, reward in reversed(list(enumerate(rewards)))}
    full = [float(getattr(reward, "full_reward", 1.0)) for reward in rewards]
    per_batch = prompts_per_batch(cfg)
    for begin in range(start, len(dataset), per_batch):
        rows = dataset.select(range(begin, min(begin + per_batch, len(dataset))))
        prompts = list(rows["prompt"])
        parts = rows[TASK_COLUMN] if TASK_COLUMN in rows.column_names else [None] * len(rows)
        set_seed(cfg.seed + begin)  # the batch's own seed: the same groups whether or not the run was continued
        groups = generate(
            model, tokenizer, prompts, max_new_tokens=trainer.max_completion_length, samples=k,
            temperature=trainer.temperature, top_p=trainer.top_p, top_k=trainer.top_k or 0, min_p=trainer.min_p,
            batch_size=cfg.eval.batch_size,
        )  # fmt: skip
        texts = [c for group in groups for c in group]
        repeated = {name: [v for v in rows[name] for _ in range(k)] for name in rows.column_names if name != "prompt"}
        context = trl_arguments([p for p in prompts for _ in range(k)], texts, tokenizer)
        flat = as_trl_passes(texts, prompts[0])
        scores = [[r.get("reward") for r in score_tolerantly(fn, flat, repeated, context)] for fn in rewards]
        for i in range(len(rows)):
            group = range(i * k, (i + 1) * k)
            totals = [_total([s[j] for s in scores], weights) for j in group]
            scored = [t for t in totals if t is not None]
            judge = first.get(parts[i], 0)
            solved = [scores[judge][j] for j in group]
            yield {
                "pass_rate": sum(v is not None and v >= full[judge] for v in solved) / k,
                "reward_mean": sum(scored) / len(scored) if scored else None,
                "signal": bool(scored) and max(scored) - min(scored) > SIGNAL_SPREAD,
            }


def prompts_per_batch(cfg: Any) -> int:
    """The prompts whose groups are sampled at once: ``eval.batch_size`` completions' worth."""
    return max(1, cfg.eval.batch_size // cfg.trainer.num_generations)


def settings(cfg: Any, dataset: Any, weights: list[float], model_dir: str) -> dict[str, Any]:
    """What a measurement depends on: the model (by name and by what ``model_dir`` holds: one trained further or built
    otherwise under the same name differs), the sampling, the rewards and the prompts themselves (a digest).
    ``eval.batch_size`` and the hardware are left out: they change how fast, not what (up to sampling noise)."""

    from grpo_ext.backends.models import digest

    trainer = cfg.trainer
    prompts = json.dumps(list(dataset["prompt"]), sort_keys=True, ensure_ascii=False)
    return {
        "model": cfg.model.path or cfg.model.name,
        "model_sha256": digest(model_dir),
        "task": cfg.task.name,
        "rows": len(dataset),
        "prompts_sha256": hashlib.sha256(prompts.encode()).hexdigest(),
        "rewards": _rewards(cfg.task),
        "weights": list(weights),
        "seed": cfg.seed,
        **{key: trainer[key] for key in ("num_generations", "temperature", "top_p", "top_k", "min_p")},
        "max_completion_length": trainer.max_completion_length,
    }


def _rewards(task: Any) -> Any:
    """The rewards a measurement scores with: the task's, or each part's in a mixture."""
    if task.name == "mix":
        return {label: plain(node)["rewards"] for label, node in task.parts.items()}
    return plain_list(task.rewards)


class OtherMeasurementError(ConfigError):
    """The output directory holds a measurement made with other settings."""


def measured_so_far(run_dir: Path | RunDir, wanted: dict[str, Any]) -> list[dict[str, Any]]:
    """The figures an earlier run into ``run_dir`` measured with the same settings (its last line dropped if a kill
    cut it short); none when there is no earlier run. ``ValueError`` naming what differs when its settings do."""
    run_dir = RunDir(run_dir)
    partial, recorded = run_dir.difficulty_partial, run_dir.difficulty_settings
    if not recorded.exists():
        partial.unlink(missing_ok=True)  # figures without their settings: of no known measurement
        return []
    try:
        earlier = json.loads(recorded.read_text())
    except ValueError as err:
        raise OtherMeasurementError(f"{recorded} is not valid JSON ({err}): remove it to measure anew") from err
    changed = sorted(key for key in {*earlier, *wanted} if earlier.get(key) != wanted.get(key))
    if changed:
        digests = {"model_sha256": "the model's files differ", "prompts_sha256": "the prompts differ"}
        shown = "; ".join(
            f"{key}: {earlier.get(key)!r} -> {wanted.get(key)!r}" for key in changed if key not in digests
        )
        shown += "".join(f"; {said}" for key, said in digests.items() if key in changed)
        raise OtherMeasurementError(
            f"{run_dir} holds a measurement with other settings ({shown.lstrip('; ')}): measure into another "
            f"directory (hydra.run.dir), or remove {recorded.name} and {partial.name} there to start this one anew"
        )
    source = partial if partial.exists() else run_dir.difficulty  # the second: a finished measurement's
    figures = []
    for line in source.read_text().splitlines() if source.exists() else []:
        try:
            figures.append({key: json.loads(line)[key] for key in FIGURES})
        except (ValueError, KeyError, TypeError):
            break  # the line a kill cut short, and nothing after it
    return figures[: wanted["rows"]]


def _total(values: list[float | None], weights: list[float]) -> float | None:
    """The weighted sum TRL trains on, leaving out the rewards that gave None; None when all did."""
    present = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None]
    return sum(v * w for v, w in present) if present else None


def summary(measured: list[dict[str, Any]], k: int, parts: list[str] | None = None) -> str:
    """How many prompts give a signal, how many always or never pass, and the pass-rate histogram; for a mixture
    (``parts``: each row's part), the same for each part after the whole."""
    whole = _summary(measured, k)
    if parts is None:
        return whole
    lines = [whole]
    for label in dict.fromkeys(parts):
        own = [figures for figures, part in zip(measured, parts, strict=True) if part == label]
        lines.append(f"{label}: " + _summary(own, k).replace("\n", f"\n{label}: "))
    return "\n".join(lines)


def _summary(measured: list[dict[str, Any]], k: int) -> str:
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


def write(
    run_dir: Path | RunDir, dataset: Any, eval_split: Any, measured: list[dict[str, Any]]
) -> tuple[Path, Path, Path]:
    """``difficulty.jsonl`` (every row with its figures), ``with_signal.jsonl`` and ``eval.jsonl``, each whole or not
    at all."""
    given = dataset.to_list()
    rows = [{**row, **figures} for row, figures in zip(given, measured, strict=True)]
    keep = [row for row, figures in zip(given, measured, strict=True) if figures["signal"]]
    run_dir = RunDir(run_dir)
    paths = run_dir.difficulty, run_dir.with_signal, run_dir.eval_rows
    for path, lines in zip(paths, (rows, keep, eval_split.to_list()), strict=True):
        replace_whole(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return paths


def measure_into(
    run_dir: RunDir, splits: Any, rewards: list[Any], weights: list[float], cfg: Any, again: str
) -> list[dict[str, Any]]:
    """Every train row's figures: those an earlier run into ``run_dir`` left (same settings), then the others,
    appended to ``difficulty.partial.jsonl`` batch by batch, the progress logged every tenth of the split.
    ``again``: the command that goes on from where this one stops."""
    from grpo_ext.backends.generation import load_model
    from grpo_ext.backends.models import resolve

    wanted = settings(cfg, splits.train, weights, resolve(cfg.model))
    done = measured_so_far(run_dir, wanted)
    total = len(splits.train)
    if len(done) == total:
        log.info("%s holds every prompt's figures with these settings: nothing left to measure", run_dir)
        return done
    done = done[: len(done) - len(done) % prompts_per_batch(cfg)]  # whole batches: each sampled from its own seed
    # whole or not at all: a kill here leaves no settings half written
    replace_whole(run_dir.difficulty_settings, json.dumps(wanted, indent=2) + "\n")
    if done:
        log.info("continuing %s: %d of %d prompts measured already", run_dir.difficulty_partial, len(done), total)
    log.info("measuring %d prompts into %s; if stopped, this goes on from there: %s", total, run_dir, again)
    model, tokenizer = load_model(cfg)
    partial = run_dir.difficulty_partial
    replace_whole(partial, "".join(json.dumps(figures) + "\n" for figures in done))  # not a line a kill cut short
    started, said = time.monotonic(), 10 * len(done) // total
    with open(partial, "a") as out:
        for figures in measure(model, tokenizer, splits.train, rewards, weights, cfg, start=len(done)):
            out.write(json.dumps(figures) + "\n")
            out.flush()
            done.append(figures)
            if 10 * len(done) // total > said:
                said = 10 * len(done) // total
                log.info("measured %d of %d prompts (%.0f s)", len(done), total, time.monotonic() - started)
    return done


def next_command(cfg: Any, with_signal: Path, eval_path: Path) -> list[str]:
    """The overrides that train on the rows with a signal: the prompts task, with this task's rewards and lengths and
    this model."""

    rewards = _override(plain_list(cfg.task.rewards))
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


@hydra.main(version_base=None, config_path="pkg://grpo_ext.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    entry.run_command(difficulty, cfg, records=False)


def difficulty(cfg: DictConfig, run_dir: RunDir, group: str | None = None) -> None:
    """Measure every train prompt of ``cfg``'s task into ``run_dir`` (going on from what an earlier run measured
    there), write the rows with a signal, and print the figures and the command that trains on them."""
    from hydra.core.hydra_config import HydraConfig

    overrides = list(HydraConfig.get().overrides.task)  # hydra.run.dir is not among them
    again = shlex.join(["python", "-m", "grpo_ext.difficulty", *overrides, f"hydra.run.dir={run_dir}"])

    def checked() -> tuple[list[Any], list[float]]:
        check_device(cfg.hardware)
        expand_mixture(cfg)
        rewards, weights = task_rewards(cfg.task)
        make_grpo_config(cfg, str(run_dir), weights)  # the sampling settings checked as training checks them
        return rewards, weights

    rewards, weights = check_config(checked)
    try:
        with raised_as(TaskError):
            splits = build_task(cfg.task)
            check_columns(splits.train, rewards, f"{cfg.task.name} train split")
            with run_dir.locked():  # two measurements into one directory would mix
                measured = measure_into(run_dir, splits, rewards, weights, cfg, again)
    except KeyboardInterrupt:
        if not run_dir.difficulty_partial.exists():  # stopped while loading: nothing measured yet
            raise Stopped(f"stopped before any prompt was measured; to measure: {again}") from None
        raise Stopped(f"stopped; the figures measured so far are kept, and this goes on from there: {again}") from None
    finally:
        for reward in rewards:
            getattr(reward, "close", lambda: None)()
    report, with_signal, eval_path = write(run_dir, splits.train, splits.eval, measured)
    run_dir.difficulty_partial.unlink(missing_ok=True)  # difficulty.jsonl holds every figure now
    k = cfg.trainer.num_generations
    print(f"{cfg.task.name} train split, {len(measured)} prompts, {k} completions each:")
    parts = splits.train[TASK_COLUMN] if cfg.task.name == "mix" else None
    print(summary(measured, k, parts))
    print(f"every prompt with its figures: {report}")
    if parts is not None:
        print(f"the prompts with a signal, each with its part (column {TASK_COLUMN}): {with_signal}")
    elif any(r["signal"] for r in measured):
        command = ["python", "-m", "grpo_ext.train", *next_command(cfg, with_signal, eval_path)]
        print(f"train on the prompts with a signal: {shlex.join(command)}")
    else:
        print(
            "no prompt gives a signal: a warm start on the task's references (grpo_ext.sft), easier or harder "
            "prompts, a reward with partial credit, or more generations or a higher trainer.temperature"
        )


if __name__ == "__main__":
    main()
