"""``vllm serve`` as part of a run: started on its own GPU with the flags TRL 1.16 needs, awaited on ``/health``
with a deadline while its process is watched, and stopped, with its whole process group, when the run ends.

TRL 1.16 deprecates ``trl vllm-serve`` for vLLM's own ``vllm serve`` with the weight-transfer engine and processed
logprobs (``trl/scripts/vllm_serve.py`` builds the same command). Every failure to start ends in ``ServerError``
naming the cause (a port in use, a server that exited, one that never became healthy) with the end of its log,
within the deadline, and leaves no process behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from grpo_ext import errors
from grpo_ext.run.rundir import RunDir

if TYPE_CHECKING:
    from grpo_ext.backends.hardware import Gpu

log = logging.getLogger(__name__)

POLL_S = 0.5
STOP_GRACE_S = 15.0
PR_SET_PDEATHSIG = 1


class ServerError(errors.ServerError):
    """The vLLM server could not be started or stopped as the run needs."""


def serve_command(model_path: str, vllm: DictConfig, dtype: str, version: str | None) -> list[str]:
    """The ``vllm serve`` command line TRL's client expects (weight transfer over NCCL, processed logprobs)."""
    from packaging.version import Version

    command = [
        "vllm", "serve", model_path,
        "--host", vllm.host,
        "--port", str(vllm.port),
        "--gpu-memory-utilization", str(vllm.server_memory_utilization),
        "--dtype", dtype,
        "--weight-transfer-config", json.dumps({"backend": "nccl"}),
        "--logprobs-mode", "processed_logprobs",
        "--max-logprobs", "-1",
    ]  # fmt: skip
    if version and Version(Version(version).base_version) >= Version("0.30.0"):
        command.append("--enable-scale-out")  # the render and generate endpoints TRL's client uses from 0.30 on
    return command + list(vllm.extra_args)


def server_dtype(cfg: DictConfig, gpu: Gpu) -> str:
    """The dtype a server on ``gpu`` generates in: ``hardware.vllm.dtype``, or for ``auto`` the one the trainer
    computes in. That is its mixed precision, bfloat16 or float16, not the dtype of the weights it trains: fp16 mixed
    precision on a GPU before Ampere trains float32 weights, and a server in float32 would take twice the memory and
    compute without tensor cores. Without mixed precision, the weights' dtype. vLLM refuses bfloat16 on a GPU that
    does not compute it: ``auto`` takes float16 there, and an explicit ``bfloat16`` is refused with this message.
    """
    from grpo_ext.backends.models import torch_dtype

    chosen, trainer = cfg.hardware.vllm.dtype, cfg.trainer
    if chosen == "bfloat16" and not gpu.bf16:
        raise ServerError(
            f"hardware.vllm.dtype=bfloat16, and the server's GPU ({gpu.name}) does not compute bf16, which vLLM "
            "refuses: use hardware.vllm.dtype=float16, or auto"
        )
    if chosen != "auto":
        return chosen
    if trainer.fp16:
        return "float16"
    if trainer.bf16 or trainer.bf16 is None:  # None: TRL's default, bf16 unless fp16
        return "bfloat16" if gpu.bf16 else "float16"
    return torch_dtype(cfg.model.dtype, cfg.hardware.dtype)


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on ``host:port`` (or the port cannot be bound there)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def server_gpu(vllm: DictConfig, visible: int) -> int:
    """The GPU index the server runs on (``-1``: the last of ``visible``), checked against what is visible."""
    gpu = vllm.server_gpu if vllm.server_gpu >= 0 else visible - 1
    if not 0 <= gpu < visible:
        raise ServerError(
            f"hardware.vllm.server_gpu={vllm.server_gpu} but {visible} GPU(s) are visible: a vLLM server needs a GPU "
            "of its own besides the training GPU(s)"
        )
    return gpu


@contextlib.contextmanager
def running(command: list[str], vllm: DictConfig, gpu: int | str, log_path: Path) -> Iterator[subprocess.Popen]:
    """Run ``command`` (a ``vllm serve`` line) on ``gpu`` until the block ends; enter once ``/health`` answers."""
    for key in ("port", "group_port"):
        if port_in_use(vllm.host, vllm[key]):
            raise ServerError(
                f"port {vllm[key]} on {vllm.host} is already in use (hardware.vllm.{key}): another vLLM server or "
                f"another job? Choose a free one, for example hardware.vllm.{key}={vllm[key] + 100}"
            )
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": str(gpu), "VLLM_SERVER_DEV_MODE": "1"}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("starting the vLLM server on GPU %s (log: %s): %s", gpu, log_path, " ".join(command))
    with open(log_path, "ab") as out:
        try:
            server = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        except FileNotFoundError as err:
            raise ServerError(f"cannot run {command[0]!r}: {err}. The vllm extra installs it") from err
    try:
        started = time.monotonic()
        wait_healthy(server, f"http://{_connect_host(vllm.host)}:{vllm.port}/health", vllm.startup_timeout_s, log_path)
        log.info("vLLM server healthy after %.0f s", time.monotonic() - started)
        try:
            yield server
        except Exception as err:  # out of training, not out of the start above
            stopped = _server_stopped_it(server, err, log_path)
            if stopped is None:
                raise
            raise stopped from err
    finally:
        stop(server)


def _server_stopped_it(server: subprocess.Popen, err: Exception, log_path: Path) -> ServerError | None:
    """When ``err`` came out of training while the server was in use: a ``ServerError`` with the end of its log if
    the server has exited (it crashed, or ran out of GPU memory: the client's connection error says nothing of
    that) or the client lost it; ``None`` when the error is not the server's."""
    lost = _lost_connection(err)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=2.0 if lost else 0.0)  # a crash the client saw first may still be under way
    what = f"{type(err).__name__}: {str(err)[:300]}"
    resume = "Run the same command (same hydra.run.dir) to resume from the newest checkpoint."
    if server.returncode is not None:
        return ServerError(
            f"the vLLM server exited with code {server.returncode} during training, which stopped the run ({what}). "
            f"{resume} {_tail(log_path)}"
        )
    if lost:
        return ServerError(f"the run lost its connection to the vLLM server, which is still running ({what}); "
                           f"it is stopped now. {resume} {_tail(log_path)}")  # fmt: skip
    return None


def wait_healthy(server: subprocess.Popen, url: str, timeout_s: float, log_path: Path) -> None:
    """Return once ``url`` answers 200; raise ``ServerError`` if ``server`` exits first or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        code = server.poll()
        if code is not None:
            raise ServerError(f"the vLLM server exited with code {code} while starting. {_tail(log_path)}")
        try:
            with urllib.request.urlopen(url, timeout=max(0.1, min(2.0, deadline - time.monotonic()))) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() >= deadline:
            raise ServerError(
                f"the vLLM server did not answer {url} within {timeout_s:g} s (hardware.vllm.startup_timeout_s); "
                f"stopped it. {_tail(log_path)}"
            )
        time.sleep(POLL_S)


def stop(server: subprocess.Popen, grace_s: float | None = None) -> None:
    """Stop the server's whole process group: SIGTERM, then SIGKILL after ``grace_s``; reap the server."""
    grace_s = STOP_GRACE_S if grace_s is None else grace_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        log.warning("the vLLM server ignored SIGTERM for %.0f s: killing it", grace_s)
    with contextlib.suppress(ProcessLookupError):  # the group's stragglers too, even when the leader has exited
        os.killpg(server.pid, signal.SIGKILL)
    server.wait()
    deadline = time.monotonic() + 2.0  # until the killed stragglers are reaped (by init), so none is left behind
    while time.monotonic() < deadline:
        try:
            os.killpg(server.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.02)
    log.warning("processes of the vLLM server's group %d are still present after SIGKILL", server.pid)


def _lost_connection(err: Exception) -> bool:
    """Whether ``err`` is TRL's client failing to reach the server (requests' errors, which are ``OSError``s too:
    left alone, they would read as a failed write to the run directory)."""
    return isinstance(err, ConnectionError) or type(err).__module__.startswith(("requests", "urllib3"))


@contextlib.contextmanager
def _connected(vllm: DictConfig) -> Iterator[None]:
    """A server the user started (``managed: false``): a lost connection to it stops the run saying so."""
    try:
        yield
    except Exception as err:
        if not _lost_connection(err):
            raise
        url = f"http://{_connect_host(vllm.host)}:{vllm.port}"
        raise ServerError(
            f"the run lost its connection to the vLLM server at {url}, which it did not start "
            f"(hardware.vllm.managed=false) ({type(err).__name__}: {str(err)[:300]}): is it still running? Look at "
            "its log (launch/vllm_server.sh: SERVER_LOG), then run the same command (same hydra.run.dir) to resume "
            "from the newest checkpoint"
        ) from err


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the run dies without cleaning up (kill -9)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _connect_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _tail(log_path: Path, lines: int = 15) -> str:
    try:
        text = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"Last lines of {log_path}:\n" + "\n".join(text) if text else f"{log_path} is empty."


def for_run(cfg: DictConfig, model_path: str, run_dir: Path) -> contextlib.AbstractContextManager:
    """The server a run needs for as long as it trains: none unless the profile says ``vllm.mode: server`` and
    ``managed`` (the default; ``managed: false`` connects to a server the user started, as launch/ scripts do, and
    only names a lost connection to it)."""
    vllm = cfg.hardware.vllm
    if vllm.mode != "server":
        return contextlib.nullcontext()
    if not vllm.managed:
        return _connected(vllm)
    from grpo_ext.backends.hardware import visible_gpus, vllm_version

    gpus = visible_gpus()
    gpu = server_gpu(vllm, len(gpus))
    command = serve_command(model_path, vllm, server_dtype(cfg, gpus[gpu]), vllm_version())
    return running(command, vllm, gpu, RunDir(run_dir).vllm_log)
