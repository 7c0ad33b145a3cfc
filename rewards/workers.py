"""A reward of your own in worker processes, with a deadline per completion (``task.rewards[i].timeout``).

TRL calls rewards in the trainer's process and waits for them, so a reward that hangs on one completion (a regex that
backtracks without end, a solver that never returns) hangs the run with it, GPUs idle. ``InWorkers`` runs the reward
in ``workers`` processes of its own, one completion per job: a completion whose job runs past ``timeout`` seconds,
or whose worker dies, is a failure of that completion (``None``, logged and counted by ``reward_guard`` like an
exception, so that a reward failing everywhere stops the run), and its worker is killed and replaced. A worker that
died between jobs (the out-of-memory killer) is replaced with a warning, its next job given to the new one. Workers are
forked from a ``forkserver`` (the trainer's process holds CUDA, which a fork must not copy), a clean process that
imports the trainer's main module and the reward's module once, so that a replacement starts in milliseconds rather
than the seconds a ``spawn`` takes to import torch and TRL again. They ignore SIGINT and SIGTERM (the trainer decides
when to stop, and kills them), exit when the trainer's end of their pipe closes, and on Linux are killed when their
parent exits, however it exits. What a reward in workers
does not get: ``trainer_state``, ``log_extra`` and ``log_metric`` (the trainer's objects, which stay in its process).
``grpo_ext.score --workers/--timeout`` scores lines with the same ``Pool``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from typing import Any

from grpo_ext.rewards.guard import RewardFailureError, check_values, slice_kwargs

# A worker forked from the forkserver runs the trainer's main module again, as multiprocessing does for every child;
# the forkserver imported that module already (so that the run is quick), which runpy would warn about in each worker.
# This module is imported there before the first fork, and the filter passes to the workers with the fork.
warnings.filterwarnings("ignore", r"'.*' found in sys.modules after import of package", RuntimeWarning, "runpy")

logger = logging.getLogger(__name__)

# What TRL passes that stays in the trainer's process.
NOT_SENT = ("trainer_state", "log_extra", "log_metric")
STARTUP_S = 120.0  # for a worker to import the reward's module and build it


def _die_with_trainer() -> None:
    """Linux: be killed when the trainer's process exits, however it exits (a trainer killed with SIGKILL, or out of
    memory, cannot stop its workers, and a worker stuck in a reward never reads its pipe).

    The kernel kills this process when its parent exits: the trainer under spawn, the forkserver under forkserver.
    The forkserver exits once every holder of the write end of its "trainer alive" pipe has: multiprocessing gives
    that end to each child it forks, for children of their own, which a worker never starts; so a worker closes it,
    else the forkserver would wait for the worker and the worker for the forkserver."""
    from multiprocessing import forkserver

    server: Any = getattr(forkserver, "_forkserver", None)
    if getattr(server, "_forkserver_pid", 0) is None and getattr(server, "_forkserver_alive_fd", None) is not None:
        os.close(server._forkserver_alive_fd)  # this process is a forkserver's child, not the trainer
        server._forkserver_alive_fd = None
    if sys.platform.startswith("linux"):
        import ctypes

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent went before the line above
            os._exit(1)


def _serve(conn: Connection, name: str, params: dict[str, Any], job: Callable[[Any, Any], Any]) -> None:
    _die_with_trainer()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        from grpo_ext.rewards import build_reward

        reward = build_reward(name, params)
    except Exception:  # noqa: BLE001 - the trainer says why its workers cannot start
        conn.send(("failed", traceback.format_exc()))
        return
    conn.send(("ready", None))
    try:
        while (item := conn.recv()) is not None:
            index, payload = item
            conn.send((index, job(reward, payload)))
    except (EOFError, OSError):  # the trainer's process is gone (its end of the pipe closed, or reset)
        pass


class WorkerStartError(RewardFailureError):
    """A worker could not build the reward (an import that fails in a fresh process, say) or did not start: the run
    stops as for a reward that fails everywhere."""


REAPED_S = 5.0  # for a forkserver that has died to be seen dead, so that the next start launches a new one


def _start_process(ctx: Any, child: Connection, name: str, params: dict[str, Any], job: Callable) -> Any:
    """A started worker process. Under forkserver, a server killed (or failed) a moment ago may not be seen dead yet:
    multiprocessing then asks it for a fork and is refused, and asking again shortly launches a new server."""
    deadline = time.monotonic() + REAPED_S
    while True:
        process = ctx.Process(target=_serve, args=(child, name, params, job), daemon=True)
        try:
            process.start()
            return process
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise WorkerStartError(
                    f"a worker process for reward {name!r} could not start: the forkserver that starts them is "
                    f"gone and no new one started within {REAPED_S:.0f} s"
                ) from None
            time.sleep(0.05)
        except (EOFError, OSError) as err:  # the forkserver died with the request, having printed why
            raise WorkerStartError(
                f"a worker process for reward {name!r} could not start ({type(err).__name__}: {err}): the forkserver "
                "that starts them failed, most likely importing the reward's module in a fresh process (its "
                "traceback is above)"
            ) from err


class _Worker:
    """One worker process, started and ready (its reward built) when the constructor returns, so that a job's
    deadline never counts the process's start (its imports, and the reward's construction)."""

    def __init__(self, ctx: Any, name: str, params: dict[str, Any], job: Callable[[Any, Any], Any]) -> None:
        self.conn, child = ctx.Pipe()
        try:
            self.process = _start_process(ctx, child, name, params, job)
        finally:
            child.close()
        self.job: int | None = None
        self.started = 0.0
        try:
            status, detail = self.conn.recv() if self.conn.poll(STARTUP_S) else ("slow", None)
        except EOFError:
            status, detail = "died", None
        if status != "ready":
            self.kill()
            reason = {
                "failed": f"could not build it:\n{detail}",
                "slow": f"did not start within {STARTUP_S:.0f} s",
                "died": f"died while starting (exit code {self.process.exitcode})",
            }[status]
            raise WorkerStartError(f"a worker process for reward {name!r} {reason}")

    def submit(self, index: int, payload: Any) -> bool:
        """Give the worker a job; ``False`` when it was found dead (killed while idle: out of memory, say)."""
        try:
            self.conn.send((index, payload))
        except OSError:  # BrokenPipeError, ConnectionResetError: nobody reads the other end
            return False
        self.job, self.started = index, time.monotonic()
        return True

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


class Pool:
    """``workers`` processes that each build the reward ``name`` with ``params`` and return ``job(reward, payload)``
    for each payload they are given.

    Args:
        start_method: ``forkserver`` where the parent holds CUDA (training); ``fork`` where it does not (the score
            CLI). Where the platform lacks it, ``spawn``.
    """

    def __init__(
        self, name: str, params: dict[str, Any], workers: int, job: Callable[[Any, Any], Any], start_method: str
    ) -> None:
        self.name, self.params, self.job, self.size = name, params, job, workers
        if start_method not in mp.get_all_start_methods():
            start_method = "spawn"
        self.ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            self.ctx.set_forkserver_preload(_preload(name))
        self.workers: list[_Worker] = []

    def run(self, payloads: list[Any], timeout: float | None) -> Iterator[tuple[int, str, Any]]:
        """``(index, outcome, result)`` for each payload as it finishes: outcome ``ok`` (``result``: what the job
        returned), ``timeout`` or ``crashed`` (``result``: ``None``; the worker was replaced)."""
        while len(self.workers) < min(self.size, len(payloads)):
            self.workers.append(self._start())
        pending = list(range(len(payloads)))[::-1]
        try:
            while pending or any(w.job is not None for w in self.workers):
                for i, worker in enumerate(self.workers):
                    if worker.job is None and pending:
                        index = pending.pop()
                        if not worker.submit(index, payloads[index]):
                            self.workers[i] = self._replace_dead(worker)
                            if not self.workers[i].submit(index, payloads[index]):  # its replacement too
                                raise WorkerStartError(
                                    f"the worker processes for reward {self.name!r} keep dying: the one started to "
                                    f"replace a dead one was dead too before its first job "
                                    f"({_exit(self.workers[i].process)})"
                                )
                busy = [w for w in self.workers if w.job is not None]
                deadline = min(w.started + timeout for w in busy) if timeout else None
                ready = wait(
                    [w.conn for w in busy], None if deadline is None else max(0.0, deadline - time.monotonic())
                )
                for i, worker in enumerate(self.workers):
                    if worker.job is None:
                        continue
                    if worker.conn in ready:
                        try:
                            index, result = worker.conn.recv()
                            worker.job = None
                            yield index, "ok", result
                            continue
                        except (EOFError, OSError):  # it died (a crash, out of memory): report and replace it;
                            # ConnectionResetError when it died with the job unread
                            outcome = "crashed"
                    elif timeout and time.monotonic() - worker.started >= timeout:
                        outcome = "timeout"
                    else:
                        continue
                    lost, worker.job = worker.job, None
                    worker.kill()
                    self.workers[i] = self._start()
                    assert lost is not None  # a busy worker's job
                    yield lost, outcome, None
        except BaseException:  # stopped mid-batch (an error, a generator closed early): no worker keeps a stale job
            self.close()
            raise

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def _start(self) -> _Worker:
        return _Worker(self.ctx, self.name, self.params, self.job)

    def _replace_dead(self, worker: _Worker) -> _Worker:
        """A worker found dead between jobs (killed by the out-of-memory killer, say, or with its forkserver) is
        replaced, and the job it was to get goes to the new one."""
        worker.kill()
        logger.warning(
            "a worker process of reward %s had died between jobs (%s); replaced", self.name, _exit(worker.process)
        )
        return self._start()


def _exit(process: Any) -> str:
    """How a worker process ended, for a message: its exit code, and what a SIGKILL most often is."""
    process.join()
    killed = ": killed, out of memory?" if process.exitcode == -signal.SIGKILL else ""
    return f"exit code {process.exitcode}{killed}"


def _preload(name: str) -> list[str]:
    """What the forkserver imports before its first fork (once per process: later calls change nothing). Each worker
    runs the main module again, as multiprocessing requires, which is cheap once its imports are loaded: the main
    module when run with ``-m`` (``grpo_ext.train``), else the trainer's module (a script of yours that imports it);
    then this module, and the reward's module when the forkserver can import it (from the current directory,
    ``PYTHONPATH`` or site-packages; else each worker imports it). A module that fails to import is skipped there,
    and the worker names the error."""
    main = getattr(getattr(sys.modules["__main__"], "__spec__", None), "name", None)
    modules = [main] if main and not main.endswith("__main__") else []  # python -m pkg runs pkg.__main__: not that
    return [m for m in dict.fromkeys([*modules, "grpo_ext.train", __name__, name.rpartition(".")[0]]) if m]


async def _await(value: Any) -> Any:
    return await value


def call_one(reward: Callable, payload: tuple[Any, dict[str, Any]]) -> tuple[str, Any]:
    """Call ``reward`` on one completion as TRL would (``payload``: the completion and its keyword arguments);
    ``("ok", value)`` or ``("error", traceback)``."""
    import asyncio
    import inspect

    completion, kwargs = payload
    try:
        values = reward(completions=[completion], **kwargs)  # by keyword, as TRL calls it
        if inspect.isawaitable(values):
            values = asyncio.run(_await(values))
        return "ok", list(values)
    except Exception:  # noqa: BLE001 - the trainer's guard logs and counts it
        return "error", traceback.format_exc()


class InWorkers:
    """The reward ``name`` (a dotted path, with ``params``), each completion scored in a worker process within
    ``timeout`` seconds (see the module docstring). ``score_each`` gives the guard the failures; calling it gives
    ``None`` for them, as evaluation and inference want."""

    def __init__(self, name: str, params: dict[str, Any], timeout: float, workers: int, local: Callable) -> None:
        self.name, self.params, self.timeout, self.size = name, params, timeout, workers
        from grpo_ext.rewards import reward_columns

        self.__name__ = getattr(local, "__name__", type(local).__name__)
        self.columns = reward_columns(local)  # of the reward built here, which is never called
        self.pool: Pool | None = None  # started at the first call, not while the config is checked

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "pool": None}

    def score_each(self, completions: list[Any], kwargs: dict[str, Any]) -> tuple[list[Any], list[tuple[int, str]]]:
        """One value per completion (``None`` where it failed) and the failures, ``(index, what happened)``."""
        if self.pool is None:
            self.pool = Pool(self.name, self.params, self.size, call_one, "forkserver")
        n = len(completions)
        sent = {k: v for k, v in kwargs.items() if k not in NOT_SENT}
        payloads = [(c, slice_kwargs(sent, n, i)) for i, c in enumerate(completions)]
        results: list[Any] = [None] * n
        errors: list[tuple[int, str]] = []
        for index, outcome, result in self.pool.run(payloads, self.timeout):
            if outcome == "timeout":
                errors.append((index, f"timed out after {self.timeout} s (task.rewards timeout); worker replaced"))
            elif outcome == "crashed":
                errors.append((index, "its worker process died (a crash, or out of memory); worker replaced"))
            elif result[0] == "error":
                errors.append((index, result[1]))
            else:
                try:
                    results[index] = check_values(result[1], 1)[0]
                except ValueError as err:
                    errors.append((index, f"ValueError: {err}"))
        return results, sorted(errors)

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[Any]:
        return self.score_each(completions, kwargs)[0]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
