"""The errors grpo_ext raises for what a user can act on, one base class for all of them.

Library code raises these and never exits the process; the entry points (``grpo_ext.run.entry``) turn one into its
message (``config error: task.train_size must be >= 1, got 0``), the exit status, ``status.json`` and, in a sweep,
the failed job's NaN. Each kind names the part of the run that failed, so that the message says where to look.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class GrpoExtError(Exception):
    """A failure the run can explain: ``report()`` is what the command prints, ``exit_code`` how it exits."""

    kind = "error"
    exit_code = 1

    def report(self) -> str:
        return f"{self.kind}: {self}"


class ConfigError(GrpoExtError, ValueError):
    """A config value, or a combination of them, that cannot run: found before any model or data is loaded."""

    kind = "config error"


class TaskError(GrpoExtError, ValueError):
    """The task's data: a file, row or column that its rewards cannot use."""

    kind = "task error"


class ModelError(GrpoExtError):
    """A model named by the config that cannot be found, fetched, or used (NaN weights, another shape)."""

    kind = "model error"


class RewardError(GrpoExtError):
    """A reward that fails on too many completions: a bug to fix, not noise to train through."""


class TrainingError(GrpoExtError):
    """Training stopped for a reason it names: a divergence, a sampling failure, out of memory."""


class DivergedError(TrainingError):
    """The loss or the gradient became NaN or infinite: training stopped before that step's weights were saved."""


class WriteError(GrpoExtError):
    """The run directory could not be written (a full disk, a lost mount)."""


class ServerError(GrpoExtError):
    """The vLLM server a run generates with failed to start, or stopped."""

    kind = "vLLM server error"


class RunDirBusy(GrpoExtError):
    """Another run holds the run directory; nothing of this run is written there."""


class Interrupted(GrpoExtError):
    """A signal stopped the run after it saved a checkpoint; it exits with 128 + the signal's number.

    ``pass_on`` hands the signal to the handler that was installed before training (submitit's, which requeues a
    SLURM job), if any: the entry point calls it once the run's record is written.
    """

    def __init__(self, message: str, signal_number: int, pass_on: object = None) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number
        self.pass_on = pass_on

    def report(self) -> str:
        return str(self)


class Stopped(GrpoExtError):
    """The user stopped a command that keeps what it did (Ctrl-C while measuring): the message says how to go on."""

    def report(self) -> str:
        return str(self)


@contextlib.contextmanager
def raised_as(kind: type[GrpoExtError], *caught: type[Exception]) -> Iterator[None]:
    """Inside the block, a ``ValueError`` (or one of ``caught``) becomes ``kind`` with the same message: how a plain
    check's failure is said to belong to a part of the run (the config, the task's data). Errors of this module pass
    through as they are."""
    try:
        yield
    except GrpoExtError:
        raise
    except Exception as err:
        if not isinstance(err, caught or (ValueError,)):
            raise
        raise kind(str(err)) from err
