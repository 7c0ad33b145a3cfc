"""Stopping on a signal: SIGTERM, Ctrl-C or SIGUSR2 finish the step under way, save a checkpoint and stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

from grpo_ext.errors import Interrupted
from grpo_ext.run import checkpoints, processes
from grpo_ext.run.rundir import RunDir

logger = logging.getLogger(__name__)


class StopOnSignal(TrainerCallback):
    """SIGTERM, Ctrl-C or SIGUSR2: finish the current step, save a checkpoint, stop training. A second signal stops
    at once.

    SIGUSR2 is the warning SLURM sends before a job's time limit when asked (``--signal=USR2@SECONDS``), and the one
    submitit asks for: a job run by Hydra's submitit launcher (``hydra/launcher=slurm``) saves its checkpoint first,
    then submitit's own handler requeues it, and the requeued job resumes from that checkpoint. ``received`` tells
    the entry point afterwards which signal ended the run (``None`` if none did). With several training processes, a
    signal that reaches any of them stops all of them after the same step.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Handle the signals while inside the block (main thread only), then restore the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now, without a checkpoint")
        self.received = signal.Signals(signum)
        logger.warning(
            "%s: finishing this step, saving a checkpoint, then stopping (again to stop now)", self.received.name
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.received = processes.agree_on_signal(self.received, args)
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True

    def interrupted(self, step: int, run_dir: Path | RunDir) -> Interrupted:
        """Once training stopped for ``received``, and every process has written its part of the checkpoint: the
        error the entry point reports (where the checkpoint is) and exits with (128 + the signal's number), carrying
        the hand-over of the signal to the handler that was there before training (submitit's, which requeues the
        job)."""
        processes.wait_for_all()
        received = self.received
        assert received is not None, "interrupted() is for a run that a signal stopped"
        message = (
            f"stopped by {received.name} at step {step}; checkpoint: {checkpoints.latest_complete(run_dir)}. "
            "Run the same command (same hydra.run.dir) to resume."
        )
        return Interrupted(message, received.value, pass_on=lambda: _pass_on(received))


def _pass_on(received: signal.Signals) -> None:
    """Call the handler of ``received`` that training replaced (restored when it ended), if it is one of a
    program's own: submitit's requeues the job (and exits)."""
    before = signal.getsignal(received)
    if callable(before) and before is not signal.default_int_handler:
        logger.info("passing %s on to %s", received.name, getattr(before, "__qualname__", before))
        before(received.value, None)
