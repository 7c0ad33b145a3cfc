"""Resuming runs: which checkpoints are complete, where to resume from, and the run directory's record kept in step.

The Trainer writes a checkpoint's ``trainer_state.json`` last (after weights, optimizer, scheduler and RNG state), so
a checkpoint is complete when that file exists and parses with the step of its directory's name. A run killed in
the middle of a write leaves a checkpoint without it; resuming skips it and removes it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def is_complete(path: Path) -> bool:
    """True when ``path`` holds a checkpoint that the Trainer finished writing."""
    step = checkpoint_step(path)
    if step is None:
        return False
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return state.get("global_step") == step


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint directories, complete or not, oldest step first."""
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if checkpoint_step(p) is not None]
    return sorted(found, key=checkpoint_step)


def latest_complete(run_dir: Path) -> Path | None:
    complete = [p for p in checkpoints(run_dir) if is_complete(p)]
    return complete[-1] if complete else None


def resume_point(resume: str, run_dir: Path) -> Path | None:
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


def discard_after(run_dir: Path, step: int) -> None:
    """Remove checkpoints newer than ``step`` (incomplete ones, or a future the resumed run will redo)."""
    for path in checkpoints(run_dir):
        if checkpoint_step(path) > step:
            logger.warning("removing %s: newer than the checkpoint the run resumes from", path)
            shutil.rmtree(path, ignore_errors=True)


def remove_incomplete(run_dir: Path) -> list[Path]:
    """Remove checkpoints the Trainer did not finish writing; return what was removed."""
    removed = [p for p in checkpoints(run_dir) if not is_complete(p)]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def truncate_metrics(run_dir: Path, step: int) -> None:
    """Keep the lines of ``metrics.jsonl`` up to ``step``: the resumed run logs the later steps again."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    os.replace(tmp, path)
