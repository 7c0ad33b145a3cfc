"""Resuming runs: which checkpoints are complete, where to resume from, and the run directory's record kept in step.

The Trainer writes a checkpoint's ``trainer_state.json`` last (after weights, optimizer, scheduler and RNG state), so
a checkpoint is complete when that file exists and parses with the step of its directory's name. A run killed in
the middle of a write leaves a checkpoint without it; resuming skips it and removes it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from grpo_ext.config import plain
from grpo_ext.run import rundir
from grpo_ext.run.rundir import RunDir

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint directory (``checkpoint-40``: 40); ``None`` for anything else."""
    return rundir.checkpoint_step(Path(path))


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a checkpoint that the Trainer finished writing."""
    step = checkpoint_step(path)
    if step is None:
        return False
    try:
        state = json.loads((Path(path) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return state.get("global_step") == step


def checkpoints(run_dir: Path | RunDir) -> list[Path]:
    """The run's checkpoint directories, complete or not, oldest step first."""
    return RunDir(run_dir).checkpoint_dirs()


def complete(run_dir: Path | RunDir) -> list[Path]:
    """The run's complete checkpoints, oldest step first."""
    return [p for p in checkpoints(run_dir) if is_complete(p)]


def latest_complete(run_dir: Path | RunDir) -> Path | None:
    found = complete(run_dir)
    return found[-1] if found else None


def resume_point(resume: str, run_dir: Path | RunDir) -> Path | None:
    """Where to resume from: ``resume`` is ``auto`` (the newest complete checkpoint in ``run_dir``, if any),
    ``none`` (start fresh; refused if ``run_dir`` already holds checkpoints) or a checkpoint directory."""
    if resume == "auto":
        return latest_complete(run_dir)
    if resume == "none":
        if checkpoints(run_dir):
            raise ValueError(
                f"resume=none, but {run_dir} already holds checkpoints; use resume=auto to continue that run, or "
                "another hydra.run.dir to start a new one"
            )
        return None
    path = Path(resume).expanduser()
    if not path.is_dir():
        raise ValueError(f"resume={resume}: no such directory (allowed: auto, none, or a checkpoint directory)")
    if not is_complete(path):
        raise ValueError(f"resume={resume}: not a complete checkpoint (no valid {STATE_FILE} for its step)")
    return path


def discard_after(run_dir: Path | RunDir, step: int) -> None:
    """Remove checkpoints newer than ``step`` (incomplete ones, or a future the resumed run will redo)."""
    for path in checkpoints(run_dir):
        if (checkpoint_step(path) or 0) > step:
            logger.warning("removing %s: newer than the checkpoint the run resumes from", path)
            shutil.rmtree(path, ignore_errors=True)


def remove_incomplete(run_dir: Path | RunDir) -> list[Path]:
    """Remove checkpoints the Trainer did not finish writing; return what was removed."""
    removed = [p for p in checkpoints(run_dir) if not is_complete(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


# What a resumed run may change: where and how fast it runs, what it logs and evaluates, how long it goes on (dotted
# key prefixes). The rest (task, model, adapters, algorithm, seed, learning settings) is what its checkpoints were
# trained with.
_ANY_RUN = ("hardware.", "logger.", "eval.", "resume", "objective", "reward_failure_limit")
TRAIN_RESUMABLE = (*_ANY_RUN, "sft.") + tuple(
    f"trainer.{key}"
    for key in (
        "max_steps", "num_train_epochs", "save_steps", "save_strategy", "save_total_limit", "logging_steps",
        "logging_strategy", "logging_first_step", "report_to", "run_name", "output_dir", "disable_tqdm",
        "dataloader_num_workers", "gradient_checkpointing", "activation_checkpointing", "eval_strategy", "eval_steps",
        "per_device_eval_batch_size", "log_completions", "num_completions_to_print", "use_cpu", "bf16", "fp16",
        "use_vllm", "vllm_",
    )
)  # fmt: skip
SFT_RESUMABLE = (
    *_ANY_RUN,
    "algorithm.",
    "trainer.",
    "sampler.",
    "sft.steps",
    "sft.save_steps",
    "sft.logging_steps",
    "sft.eval_",
)


def changed_settings(saved: dict[str, Any], current: dict[str, Any], resumable: tuple[str, ...]) -> list[str]:
    """``KEY: OLD -> NEW`` for each setting in both ``saved`` (a run directory's config.yaml) and ``current`` that
    differs and whose dotted key does not start with one of ``resumable``. Keys in only one of them (a field a newer
    TRL or grpo_ext added) are not compared. Two paths to one file or directory (``rows.jsonl`` typed first,
    ``/data/rows.jsonl`` on resuming) are the same setting."""
    old, new = _flatten(saved), _flatten(current)
    return [
        f"{key}: {old[key]!r} -> {new[key]!r}"
        for key in sorted(old.keys() & new.keys())
        if not _same(old[key], new[key]) and not key.startswith(resumable)
    ]


def _same(old: Any, new: Any) -> bool:
    if old == new:
        return True
    if not (isinstance(old, str) and isinstance(new, str) and old and new):
        return False
    try:
        return os.path.samefile(os.path.expanduser(old), os.path.expanduser(new))
    except (OSError, ValueError):  # not paths, or not both there
        return False


def check_same_run(
    run_dir: Path | RunDir, cfg: Any, resumable: tuple[str, ...], checkpoint: Path, entry_point: str
) -> None:
    """Raise ``ValueError`` when ``resume=auto`` would continue the run in ``run_dir`` with another entry point
    (``grpo_ext.train`` on an SFT run's checkpoints) or with settings it was not trained with (``cfg``: this run's
    config; ``resumable``: the dotted key prefixes that may change)."""
    from omegaconf import OmegaConf

    run = RunDir(run_dir)
    try:
        saved = plain(OmegaConf.load(run.config), resolve=False)
    except (OSError, ValueError):  # no record to compare with (a deleted file)
        return
    if saved.get("entry_point", entry_point) != entry_point:
        raise ValueError(
            f"{run} holds a {saved['entry_point']} run, whose {checkpoint.name} {entry_point} would resume and "
            f"whose models it would overwrite: give this run its own hydra.run.dir (a model the other run saved "
            f"is model.path={run.final_model})"
        )
    changed = changed_settings(saved, plain(cfg), resumable)
    if changed:
        raise ValueError(
            f"resume=auto would continue the run in {run} from {checkpoint.name} with settings it was not "
            f"trained with: {'; '.join(changed[:8])}{'; ...' if len(changed) > 8 else ''}. Continue it as it was "
            "(without those overrides), start a new run in another hydra.run.dir, or continue from the checkpoint "
            f"with the new settings on purpose: resume={checkpoint}"
        )


WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EPERM, errno.ESTALE)


def is_write_failure(err: OSError) -> bool:
    """Whether ``err`` is the disk failing the run (full, read-only, gone), not an ``OSError`` of another kind (a
    lost connection raised by an HTTP client is one too)."""
    return err.errno in WRITE_ERRNOS or err.filename is not None


def save_config(cfg: Any, run_dir: Path | RunDir, entry_point: str) -> None:
    """Write the resolved config, and the ``entry_point`` that runs it, to ``run_dir/config.yaml``, whole or not at
    all: the other processes of a launch may be reading it for ``check_same_run`` while the main process writes it."""
    from omegaconf import OmegaConf

    config = {"entry_point": entry_point, **plain(cfg)}
    rundir.replace_whole(RunDir(run_dir).config, OmegaConf.to_yaml(config))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{dotted.key: leaf}``. A list of dicts (``task.rewards``) is flattened by position, with its
    length as ``KEY.#``, so that a field added to its entries (by a newer grpo_ext) is not a change; other lists are
    leaves."""
    if isinstance(tree, dict) and tree:
        return {k: v for key, value in tree.items() for k, v in _flatten(value, f"{prefix}{key}.").items()}
    if isinstance(tree, list) and tree and all(isinstance(item, dict) for item in tree):
        entries = {k: v for i, item in enumerate(tree) for k, v in _flatten(item, f"{prefix}{i}.").items()}
        return {f"{prefix}#": len(tree), **entries}
    return {prefix[:-1]: tree}
