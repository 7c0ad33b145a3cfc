"""Several training processes of one run (``torchrun``, ``accelerate launch``: one per GPU, DDP or ZeRO-3).

They share one run directory, which they must agree on before anything is written; only the main process writes
the run's own records (the resolved config, W&B, plots, the merged model, the closing summary); and a signal that
reaches any of them stops all of them after the same step, so that the checkpoint holds every process's state and
no process waits forever in a collective operation for one that has stopped. One process alone (no ``WORLD_SIZE``
in the environment) is the main process and all of this costs nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def world_size() -> int:
    """How many training processes this launch started (``WORLD_SIZE``, set by every distributed launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """True in the process that writes the run's records: global rank 0, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0


def quiet_unless_main() -> None:
    """In a process other than the main one, log warnings and errors only: its info lines repeat the main one's."""
    if not is_main():
        logging.getLogger("grpo_ext").setLevel(logging.WARNING)


def launch_time(pattern: str) -> str:
    """``datetime.strftime(pattern)`` of when this launch began: the ``launch_time`` resolver of run directories.

    One process: now. Several: the start of their parent, the launcher (torchrun and ``accelerate launch`` start
    every process of a machine themselves), so that processes which start across a second boundary still compose
    the same ``outputs/<task>/<time>`` directory; with Hydra's ``now`` they would each get their own. Where the
    parent's start cannot be read (not Linux), now; ``check_one_run_dir`` then catches a disagreement.
    """
    when = time.time()
    if world_size() > 1:
        when = _parent_start() or when
    return datetime.fromtimestamp(when).strftime(pattern)


def _parent_start() -> float | None:
    """When the parent process started, in seconds since the epoch (Linux: from /proc), or None."""
    try:
        stat = Path(f"/proc/{os.getppid()}/stat").read_text()
        boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime; the name before it may hold spaces
        return int(boot.split()[1]) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def check_one_run_dir(args: Any, run_dir: Path) -> None:
    """With several processes, raise ``ValueError`` unless all of them write to ``run_dir``.

    ``args`` (the run's GRPOConfig) sets up the process group the way the Trainer will (backend, timeout).
    """
    if world_size() == 1:
        return
    import torch.distributed as dist

    args.device  # noqa: B018 - the property that joins the process group
    dirs: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(dirs, str(run_dir.resolve()))
    if len(set(dirs)) > 1:
        listed = ", ".join(f"process {rank}: {d}" for rank, d in enumerate(dirs))
        raise ValueError(
            f"the {len(dirs)} training processes would write to different run directories ({listed}); "
            "give them one with hydra.run.dir=DIR"
        )


def check_evaluation(during_training: bool, args: Any) -> None:
    """Raise ``ValueError`` when evaluating during training cannot work: under DeepSpeed ZeRO-3 or FSDP (from
    ``accelerate launch``'s config, or the run's own ``deepspeed``/``fsdp`` settings) every process holds a shard of
    the weights, and the main process, generating alone, would wait for ever for the others to gather them."""
    if not during_training:
        return
    deepspeed = getattr(args, "hf_deepspeed_config", None)  # set from trainer.deepspeed
    zero3 = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3" or bool(deepspeed and deepspeed.is_zero3())
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true" or bool(getattr(args, "fsdp", None))
    if zero3 or fsdp:
        raise ValueError(
            f"eval.during_training=true cannot run under {'DeepSpeed ZeRO-3' if zero3 else 'FSDP'}: the main process "
            "evaluates alone, and the weights it would generate with are sharded across all the processes; add "
            "eval.during_training=false, and evaluate the final model with python -m grpo_ext.evaluate"
        )


def agree_on_signal(received: signal.Signals | None, args: Any) -> signal.Signals | None:
    """The signal any process has received (the highest number, when several differ), or None when none has.
    ``args``: the run's GRPOConfig, whose ``device`` the processes' collective operations use.

    Called by every process at the end of every step (one all-reduce of one number): a process that stopped alone
    would leave the others blocked in the next step's gradient all-reduce.
    """
    agreed = largest(received.value if received is not None else 0, args)
    if agreed and received is None:
        log.warning("another training process received %s: stopping with it", signal.Signals(agreed).name)
    return signal.Signals(agreed) if agreed else received


def largest(value: int, args: Any) -> int:
    """The largest of the training processes' ``value``s (``value`` itself with one process): every process must
    call it at the same point, since it is a collective operation on ``args.device``."""
    import torch
    import torch.distributed as dist

    if not _joined():
        return value
    flag = torch.tensor([value], device=args.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item())


@contextmanager
def main_first() -> Iterator[None]:
    """Run the block in the main process, then in the others: what the main process builds or downloads into a
    cache (the tiny model), the others find there. It must be the main process: with a process group joined,
    transformers' ``save_pretrained`` writes a model's files only in global rank 0."""
    if not _joined():
        yield
        return
    from accelerate import PartialState

    with PartialState().main_process_first():
        yield


def wait_for_all() -> None:
    """Block until every training process gets here (nothing with one process): used after a stop, so that no
    process exits, and its launcher kills the rest, while another is still writing its part of the checkpoint."""
    if _joined():
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def _joined() -> bool:
    """True when this process is in a process group with others (the Trainer, or ``check_one_run_dir``, joined it)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
