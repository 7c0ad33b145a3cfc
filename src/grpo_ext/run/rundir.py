"""A run directory: every path and file name of a run's record, in one place.

A run (``grpo_ext.train``, ``grpo_ext.sft``) writes into Hydra's output directory; ``grpo_ext.evaluate`` and
``grpo_ext.difficulty`` write their reports into theirs. Every module that reads or writes one of these files asks a
``RunDir`` for its path; none spells a file name again.

::

    config.yaml      the resolved config and the entry point that ran it     metrics.jsonl   a line per logged step
    alerts.jsonl     what the run warned of                                   status.json     how the run ended
    summary.json     the Trainer's closing figures                            best.json       which model is the best
    checkpoint-N/    the Trainer's checkpoints                                final_model/    the trained model
    best_model/      the best evaluation's model (adapters: best_adapter/, final_adapter/ beside)
    completions/     completions tables                                       wandb_run_id    the W&B run it continues
    *.png            plots                                                    .lock           held while a run writes
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from grpo_ext.errors import RunDirBusy

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
FINAL_MODEL, FINAL_ADAPTER, BEST_MODEL, BEST_ADAPTER = "final_model", "final_adapter", "best_model", "best_adapter"
SAVED_MODELS = (FINAL_MODEL, BEST_MODEL)  # what a run directory holds that model.path can name
ADAPTERS = {FINAL_ADAPTER: FINAL_MODEL, BEST_ADAPTER: BEST_MODEL}  # an adapter, and the model it is merged into


@dataclass(frozen=True)
class RunDir:
    """The directory of one run (or one report), and the paths of what it holds."""

    path: Path

    def __init__(self, path: str | os.PathLike[str] | RunDir) -> None:
        object.__setattr__(self, "path", Path(path.path if isinstance(path, RunDir) else path))

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name

    # The run's record
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def alerts(self) -> Path:
        return self.path / "alerts.jsonl"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def best_record(self) -> Path:
        return self.path / "best.json"

    @property
    def wandb_id(self) -> Path:
        return self.path / "wandb_run_id"

    @property
    def completions(self) -> Path:
        return self.path / "completions"

    @property
    def vllm_log(self) -> Path:
        return self.path / "vllm_server.log"

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def plot(self, name: str) -> Path:
        return self.path / name

    # Models
    def model(self, name: str) -> Path:
        """``final_model``, ``best_model``, ``final_adapter`` or ``best_adapter`` in this directory."""
        return self.path / name

    @property
    def final_model(self) -> Path:
        return self.path / FINAL_MODEL

    @property
    def final_adapter(self) -> Path:
        return self.path / FINAL_ADAPTER

    @property
    def best_model(self) -> Path:
        return self.path / BEST_MODEL

    @property
    def best_adapter(self) -> Path:
        return self.path / BEST_ADAPTER

    # Checkpoints
    def checkpoint(self, step: int) -> Path:
        return self.path / f"checkpoint-{step}"

    def checkpoint_dirs(self) -> list[Path]:
        """The checkpoint directories, complete or not, oldest step first."""
        if not self.path.is_dir():
            return []
        found = [p for p in self.path.iterdir() if checkpoint_step(p) is not None]
        return sorted(found, key=lambda p: checkpoint_step(p) or 0)

    # Reports of the commands that only read a model
    @property
    def eval_report(self) -> Path:
        return self.path / "eval_report.json"

    @property
    def difficulty(self) -> Path:
        return self.path / "difficulty.jsonl"

    @property
    def difficulty_partial(self) -> Path:
        return self.path / "difficulty.partial.jsonl"

    @property
    def difficulty_settings(self) -> Path:
        return self.path / "difficulty.settings.json"

    @property
    def with_signal(self) -> Path:
        return self.path / "with_signal.jsonl"

    @property
    def eval_rows(self) -> Path:
        return self.path / "eval.jsonl"

    def has_metrics(self) -> bool:
        return self.metrics.exists()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``.lock`` for as long as the block runs; ``RunDirBusy``, naming the other run's process, when another
        run holds it (the same command started twice would write the same checkpoints and models). The kernel drops
        the lock with the process, so a killed run never leaves it behind."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.lock_file, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "unknown"
                raise RunDirBusy(
                    f"another run (process {holder}) is using {self.path}; wait for it, or give this one its own "
                    "hydra.run.dir"
                ) from None
            lock.truncate(0)
            lock.write(str(os.getpid()))
            lock.flush()
            yield


def checkpoint_step(path: Path) -> int | None:
    """The step of a checkpoint directory (``checkpoint-40``: 40); ``None`` for anything else."""
    match = CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def replace_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: beside it first, then moved into place, so that a kill at any
    moment leaves the old file or the new one, never half of one (readers in other processes included)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
