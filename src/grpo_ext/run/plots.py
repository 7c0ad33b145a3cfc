"""Plots of runs against step, drawn from their ``metrics.jsonl``: reward (with its band of one standard deviation,
and eval metrics when logged), KL, completion length and held-out accuracy. Several runs are overlaid, labelled by
the overrides that differ between them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grpo_ext.run.records import job_overrides, read_metrics, varying
from grpo_ext.run.rundir import RunDir

# file name -> (title, the keys drawn, y label)
FIGURES = {
    "reward.png": ("Reward", ("reward",), "mean reward"),
    "kl.png": ("KL to the reference model", ("kl",), "KL"),
    "completion_length.png": ("Completion length", ("completions/mean_length",), "tokens"),
    "accuracy.png": ("Held-out accuracy (greedy)", ("eval/accuracy",), "share of eval prompts fully right"),
}


def expand(paths: list[Path]) -> list[Path]:
    """Run directories: a path with metrics.jsonl is one; a multirun directory gives its jobs that have one."""
    runs = []
    for path in paths:
        if RunDir(path).has_metrics():
            runs.append(path)
        elif path.is_dir():
            runs += sorted(p for p in path.iterdir() if RunDir(p).has_metrics())
    return runs


def per_part(records: list[dict[str, Any]], key: str) -> Any:
    """The keys of a mixture's parts for ``key`` (``eval/accuracy``: ``eval/arithmetic/accuracy``, ...), in order."""
    if not key.startswith("eval/"):
        return ()
    name = key.removeprefix("eval/")
    return tuple(dict.fromkeys(k for r in records for k in r if k.startswith("eval/") and k.count("/") == 2
                               and k.endswith(f"/{name}")))  # fmt: skip


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if key in r]
    return [s for s, _ in points], [v for _, v in points]


def plot_runs(runs: list[Path], out: Path) -> list[Path]:
    """Write the figures for ``runs`` into ``out``; return their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    data = {run: read_metrics(run) for run in runs}
    labels = dict(zip(runs, [" ".join(v) or run.name for v, run in zip(varying([job_overrides(r) for r in runs]), runs,
                                                                        strict=True)], strict=True))  # fmt: skip
    label = labels.get if len(runs) > 1 else (lambda run: "train")
    written = []
    for name, (title, keys, ylabel) in FIGURES.items():
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for run, records in data.items():
            for key in [*keys, *(own for drawn in keys for own in per_part(records, drawn))]:
                steps, values = series(records, key)
                if not steps:
                    continue
                part = key.split("/")[1] if key.count("/") == 2 else None  # a mixture's part, eval/PART/accuracy
                (line,) = ax.plot(steps, values, label=f"{label(run)} {part}" if part else label(run), linewidth=1.6)
                if key == "reward":
                    _, spread = series(records, "reward_std")
                    if len(spread) == len(values):
                        low = [v - s for v, s in zip(values, spread, strict=True)]
                        high = [v + s for v, s in zip(values, spread, strict=True)]
                        ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.15, linewidth=0)
                    for eval_key in sorted({k for r in records for k in r if k.startswith("eval") and "reward" in k}):
                        eval_steps, eval_values = series(records, eval_key)
                        ax.plot(
                            eval_steps, eval_values, "o--", color=line.get_color(), label=f"{label(run)} {eval_key}"
                        )
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    if any(key.startswith("sampler/") for records in data.values() for r in records for key in r):
        written.append(_sampler_figure(data, label, out / "sampler.png", plt))
    return written


def _sampler_figure(data: dict[Path, list[dict[str, Any]]], label: Any, path: Path, plt: Any) -> Path:
    """A prompt sampler's record (``sampler=adaptive``, ``curriculum``): the share of each step's groups with a signal
    (TRL's ``1 - frac_reward_zero_std``), solved in every completion and in none, and the curriculum's level; and
    for one run, the train prompts by their latest pass rate at each evaluation, stacked."""
    from grpo_ext.run.sampler import HISTOGRAM

    one = len(data) == 1
    fig, axes = plt.subplots(1, 2 if one else 1, figsize=(12 if one else 7, 4.2), squeeze=False)
    groups = axes[0][0]
    for run, records in data.items():
        steps, zero = series(records, "frac_reward_zero_std")
        (line,) = groups.plot(steps, [1 - z for z in zero], label=f"{label(run)} with a signal", linewidth=1.6)
        for key, style in (("sampler/all_solved", "--"), ("sampler/none_solved", ":")):
            steps, values = series(records, key)
            if steps:
                groups.plot(steps, values, style, color=line.get_color(), label=f"{label(run)} {key.split('/')[1]}")
        levels = [k for k in dict.fromkeys(k for r in records for k in r) if k.endswith("level")]
        for key in levels:
            steps, values = series(records, key)
            twin = groups.twinx()
            twin.step(steps, values, where="post", color="grey", alpha=0.6, label=key)
            twin.set_ylabel("curriculum level")
    groups.set_title("Groups of each step")
    groups.set_xlabel("step")
    groups.set_ylabel("share of the step's groups")
    groups.grid(alpha=0.3)
    groups.legend(fontsize=8)
    if one:
        (records,) = data.values()
        rows = [r for r in records if HISTOGRAM[0] in r]
        stacked = axes[0][1]
        if rows:
            names = [key.removeprefix("sampler/prompts_").replace("_", " ") for key in HISTOGRAM]
            stacked.stackplot([r["step"] for r in rows], *[[r[key] for r in rows] for key in HISTOGRAM], labels=names)
            stacked.legend(fontsize=8, loc="upper right")
        stacked.set_title("Train prompts by their latest pass rate")
        stacked.set_xlabel("step")
        stacked.set_ylabel("prompts")
        stacked.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
