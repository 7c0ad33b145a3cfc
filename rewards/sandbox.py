"""A local sandbox for model-written Python: a pool of isolated "zygote" processes that fork one child per program.

What it isolates (``isolation="bwrap"``, the default; needs bubblewrap, ``apt-get install bubblewrap``):

* each worker is a bubblewrap sandbox with its own network namespace (no network: only a loopback that nothing
  listens on), PID, IPC and UTS namespaces, a read-only view of the host file system, a private tmpfs /tmp (the only
  writable place; emptied after every program; capped, 64 MiB by default, since tmpfs pages are memory that the
  programs' memory limit does not count), secret-holding paths of the home directory hidden, an empty
  environment (no tokens, no keys), and a seccomp filter that refuses new namespaces, ptrace and a few other calls
  (``syscall_filter``); it dies with the process that started it;
* each program is a fresh child forked from the worker: own session and process group, rlimits on address space
  (memory), CPU seconds, process count, file size (captured output) and open files, a wall-clock deadline, and the
  memory of all its processes together (plus SysV shared memory) summed every 20 ms against the same limit; when it
  ends, its group and every other process left in the worker's PID namespace are killed and reaped, and SysV
  shared memory, message queues and semaphores it left in the worker's IPC namespace are removed (POSIX message
  queues are refused by an rlimit);
* the child reports values (JSON, tagged with a per-run nonce); expected outputs never enter the sandbox, and the
  host compares. A worker that dies is replaced and the program is tried once more.

What it does not isolate: the kernel (a kernel exploit escapes any namespace sandbox), CPU time shared with the host
(programs run at the worker's priority), and reads of world-readable host files outside the hidden paths.

``isolation="rlimits"`` is a weaker mode for machines without bubblewrap or user namespaces, taken only when asked
for: the same fork-per-program, sessions, rlimits, scratch directory and empty environment, but no network or file
system isolation, no cap on the scratch directory's total size (each file is capped), a memory limit per process
only (not summed over a program's processes), no clean-up of SysV IPC objects (the host's namespace is shared), and
children that leave their process group can outlive the run.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import marshal
import os
import py_compile
import queue
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ISOLATIONS = ("bwrap", "rlimits")
ZYGOTE = Path(__file__).with_name("_zygote.py")
# Paths under $HOME that commonly hold credentials; hidden inside the sandbox.
SECRET_PATHS = (
    ".ssh", ".aws", ".gnupg", ".config", ".netrc", ".git-credentials", ".docker", ".kube",
    ".cache/huggingface", ".huggingface", ".pypirc", ".wandb",
)  # fmt: skip
START_TIMEOUT_S = 30.0
SCRATCH_BYTES = 64 << 20  # the default size of a worker's /tmp
SMALL_TMPFS_BYTES = 1 << 20  # the tmpfs mounts that only hide paths or hold mount points


class SandboxUnavailableError(RuntimeError):
    """The requested isolation cannot be set up on this machine."""


class WorkerError(RuntimeError):
    """A worker died or stopped answering (an infrastructure failure, not the program's)."""


@dataclass(frozen=True)
class Limits:
    """Per-program limits. ``wall`` and ``cpu`` in seconds, ``memory`` and ``output`` in bytes."""

    wall: float = 5.0
    cpu: int = 5
    memory: int = 1 << 30
    nproc: int = 32
    output: int = 1 << 20

    def check(self) -> None:
        for key, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"sandbox limit {key} must be a positive number, got {value!r}")


def _sandbox_mountpoint() -> str:
    for candidate in ("/mnt", "/opt", "/srv"):
        if os.path.isdir(candidate):
            return candidate
    raise SandboxUnavailableError("no /mnt, /opt or /srv directory to mount the sandbox's interpreter on")


def _python_home() -> tuple[str, str]:
    """The interpreter's installation prefix and the executable's path relative to it."""
    prefix = Path(sys.base_prefix)
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (prefix / "bin" / name, prefix / "bin" / "python3"):
        if candidate.is_file():
            return str(prefix), str(candidate.relative_to(prefix))
    raise SandboxUnavailableError(f"cannot find the Python executable under {prefix}")


@functools.cache
def compiled_zygote() -> str:
    """``_zygote.py`` compiled once per process into a private directory. A worker started from the bytecode holds
    about 1 MiB less memory than one that compiles its source at start-up (the compiler's garbage stays in the
    allocator's pages), and fork copies, and exit tears down, every page: about 45 us a program per MiB here."""
    directory, owner = tempfile.mkdtemp(prefix="grpo_ext_zygote_"), os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not forks'
            shutil.rmtree(directory, ignore_errors=True)

    atexit.register(remove)
    compiled = py_compile.compile(str(ZYGOTE), cfile=os.path.join(directory, "zygote.pyc"), doraise=True)
    assert compiled is not None  # doraise: a failure raises
    return compiled


@functools.cache
def _bwrap_sizes_tmpfs(bwrap: str) -> bool:
    """Whether this bubblewrap has ``--size`` (0.5.0 and later), which caps a tmpfs."""
    try:
        usage = subprocess.run([bwrap, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in usage


# A seccomp filter (classic BPF) for the sandbox. It keeps programs from making namespaces (inside a user namespace
# of its own a program is "root" there and may mount a tmpfs of any size: memory that no limit of ours would see)
# and from calls that reach into other processes or widen the kernel's attack surface (ptrace, which a program could
# otherwise use on a worker of its own uid; process_vm_*; bpf; perf_event_open; userfaultfd; the key calls).
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SYSCALLS = {  # unshare, clone, clone3, then the ones refused outright: setns, ptrace, process_vm_readv,
    # process_vm_writev, perf_event_open, bpf, userfaultfd, add_key, request_key, keyctl
    "x86_64": (272, 56, 435, (308, 101, 310, 311, 298, 321, 323, 248, 249, 250)),
    "aarch64": (97, 220, 435, (268, 117, 270, 271, 241, 280, 282, 217, 218, 219)),
}
_NEW_NAMESPACE_FLAGS = 0x10000000 | 0x00020000 | 0x40000000 | 0x20000000 | 0x08000000 | 0x04000000 | 0x02000000 | 0x80
# CLONE_NEWUSER | NEWNS | NEWNET | NEWPID | NEWIPC | NEWUTS | NEWCGROUP | NEWTIME
_X32_SYSCALL_BIT = 0x40000000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _EPERM, _ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38


def syscall_filter(machine: str | None = None) -> bytes | None:
    """The filter as ``bwrap --seccomp`` reads it: ``unshare`` and ``clone`` with a new-namespace flag fail with
    EPERM, ``clone3`` with ENOSYS (the C library then falls back to ``clone``, whose flags a filter can see), the
    calls listed above with EPERM, and system calls of another ABI (i386, x32) are refused. ``None`` on an
    architecture it does not know."""
    machine = machine or os.uname().machine
    if machine not in _SYSCALLS:
        return None
    unshare, clone, clone3, refused = _SYSCALLS[machine]
    # (code, true label, false label, k); labels are resolved to BPF's relative jumps below
    program: list[tuple[int | str, str | None, str | None, int]] = [  # a str code: a label, not an instruction
        (_LD_ABS, None, None, 4),  # the architecture
        (_JEQ, "number", "enosys", _AUDIT_ARCH[machine]),
        ("number", None, None, 0),
        (_LD_ABS, None, None, 0),  # the system call number
        (_JGE, "eperm", None, _X32_SYSCALL_BIT),
        (_JEQ, "flags", None, unshare),
        (_JEQ, "flags", None, clone),
        (_JEQ, "enosys", None, clone3),
        *[(_JEQ, "eperm", None, number) for number in refused],
        (_RET, None, None, _ALLOW),
        ("flags", None, None, 0),
        (_LD_ABS, None, None, 16),  # the first argument's low 32 bits: the flags of unshare and clone
        (_JSET, "eperm", "allow", _NEW_NAMESPACE_FLAGS),
        ("enosys", None, None, 0),
        (_RET, None, None, _ENOSYS),
        ("allow", None, None, 0),
        (_RET, None, None, _ALLOW),
        ("eperm", None, None, 0),
        (_RET, None, None, _EPERM),
    ]
    labels: dict[str, int] = {}
    instructions: list[tuple[int, str | None, str | None, int]] = []
    for code, true, false, k in program:
        if isinstance(code, str):
            labels[code] = len(instructions)
        else:
            instructions.append((code, true, false, k))
    out = []
    for index, (code, true, false, k) in enumerate(instructions):
        jt = labels[true] - index - 1 if true else 0
        jf = labels[false] - index - 1 if false else 0
        out.append(struct.pack("=HBBI", code, jt, jf, k))
    return b"".join(out)


def bwrap_command(
    scratch_bytes: int = SCRATCH_BYTES, seccomp_fd: int | None = None, preload: tuple[str, ...] = ()
) -> list[str]:
    """The bubblewrap command line that starts one zygote; its /tmp and /dev/shm hold at most ``scratch_bytes``;
    ``seccomp_fd``: a file descriptor to read ``syscall_filter()`` from; ``preload``: modules it imports before its
    first fork."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError(
            "python_exec needs bubblewrap (the `bwrap` command) for isolation and it is not installed. "
            "Install it (Debian/Ubuntu: apt-get install bubblewrap), or opt into the weaker documented mode with the "
            "reward parameter isolation: rlimits (no network or file-system isolation)"
        )
    mount = _sandbox_mountpoint()
    prefix, executable = _python_home()
    sized = _bwrap_sizes_tmpfs(bwrap)
    if not sized:
        logger.warning(
            "this bubblewrap has no --size option (0.5.0 and later have it): the sandbox's /tmp is not capped, so a "
            "program can fill memory through it; upgrade bubblewrap"
        )

    def tmpfs(path: str, size: int) -> list[str]:
        return [*(["--size", str(size)] if sized else []), "--tmpfs", path]

    cmd = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
    ]
    cmd += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.getuid() != 0:  # unprivileged users need a user namespace; root drops to nobody inside instead
        cmd += ["--unshare-user"]
    cmd += ["--ro-bind", "/", "/", "--dev", "/dev", *tmpfs("/dev/shm", scratch_bytes), "--proc", "/proc"]
    cmd += ["--perms", "1777", *tmpfs("/tmp", scratch_bytes)]
    home = Path.home()
    for rel in SECRET_PATHS:
        path = home / rel
        if path.resolve().is_relative_to("/tmp"):
            continue  # the sandbox's own empty /tmp hides it already (and its /tmp must hold no mount points)
        if path.is_dir():
            cmd += tmpfs(str(path), SMALL_TMPFS_BYTES)
        elif path.exists():
            cmd += ["--ro-bind", "/dev/null", str(path)]
    cmd += [*tmpfs(mount, SMALL_TMPFS_BYTES), "--ro-bind", prefix, f"{mount}/python"]
    cmd += ["--ro-bind", compiled_zygote(), f"{mount}/zygote.pyc"]
    cmd += ["--clearenv", "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin", "--setenv", "HOME", "/tmp"]
    cmd += ["--setenv", "LANG", "C.UTF-8", "--setenv", "PYTHONDONTWRITEBYTECODE", "1", "--chdir", "/tmp"]
    cmd += [f"{mount}/python/{executable}", "-I", "-S", f"{mount}/zygote.pyc", "/tmp", "1", ",".join(preload)]
    return cmd


class Zygote:
    """One worker process: a sandboxed Python that forks a child per program. Not thread-safe: one user at a time."""

    def __init__(self, isolation: str, scratch_bytes: int = SCRATCH_BYTES, preload: tuple[str, ...] = ()) -> None:
        self.isolation = isolation
        self.scratch: str | None = None
        filter_fd = None
        if isolation == "bwrap":
            program = syscall_filter()
            if program is None:
                logger.warning("no seccomp filter for %s: programs may create namespaces", os.uname().machine)
            else:  # bubblewrap reads the filter from a pipe that it inherits
                filter_fd, write_end = os.pipe()
                os.write(write_end, program)
                os.close(write_end)
            cmd = bwrap_command(scratch_bytes, filter_fd, preload)
        else:
            self.scratch = tempfile.mkdtemp(prefix="grpo_ext_exec_")
            cmd = [sys.executable, "-I", "-S", compiled_zygote(), self.scratch, "0", ",".join(preload)]
        try:
            self.process = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"} if isolation == "rlimits" else {},
                cwd=self.scratch or "/",
                start_new_session=True,
                pass_fds=() if filter_fd is None else (filter_fd,),
            )
        finally:
            if filter_fd is not None:
                os.close(filter_fd)
        hello = self._read_line(time.monotonic() + START_TIMEOUT_S)
        if not hello.get("ready"):
            self.close()
            raise WorkerError(f"sandbox worker did not start: {hello}")
        self.uid = hello.get("uid")
        if hello.get("not_preloaded"):
            logger.warning("sandbox worker could not import %s before its first program", hello["not_preloaded"])

    def _read_line(self, deadline: float) -> dict[str, Any]:
        stdout, stderr = self.process.stdout, self.process.stderr
        assert stdout is not None and stderr is not None  # both piped
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WorkerError("sandbox worker stopped answering")
            ready, _, _ = select.select([stdout], [], [], remaining)
            if ready:
                line = stdout.readline()
                if not line:
                    err = stderr.read(2000).decode(errors="replace") if self.process.poll() else ""
                    raise WorkerError(f"sandbox worker exited ({self.process.poll()}): {err.strip()}")
                return json.loads(line)

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request (programs, each with its runs); wait for the reply within the runs' deadlines + slack."""
        runs = sum(len(job["runs"]) for job in request["jobs"])
        budget = runs * (request["limits"]["wall"] + 2.0) + 5.0
        try:
            payload = marshal.dumps(request)  # the worker's format (see _zygote._requests)
            stdin = self.process.stdin
            assert stdin is not None  # piped
            stdin.write(len(payload).to_bytes(8, "little") + payload)
            stdin.flush()
        except (OSError, ValueError) as err:  # ValueError: its pipe was already closed
            raise WorkerError(f"sandbox worker is gone: {err}") from err
        return self._read_line(time.monotonic() + budget)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, 9)
            except OSError:
                self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:  # unflushed input to a process that is gone
                pass
        if self.scratch:
            shutil.rmtree(self.scratch, ignore_errors=True)


class SandboxPool:
    """``workers`` zygotes shared by threads; ``execute_many`` runs requests in parallel and keeps their order."""

    def __init__(
        self, workers: int, isolation: str = "bwrap", scratch_bytes: int = SCRATCH_BYTES, preload: tuple[str, ...] = ()
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {list(ISOLATIONS)}, got {isolation!r}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.isolation = isolation
        self.scratch_bytes = scratch_bytes
        self.preload = tuple(preload)
        self._idle: queue.Queue[Zygote | None] = queue.Queue()
        for _ in range(workers):
            self._idle.put(None)  # started on first use
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sandbox")
        self._closed = False
        self._lock = threading.Lock()

    def probe(self) -> None:
        """Start one worker now, so that a missing sandbox fails at start-up rather than mid-run."""
        zygote = self._idle.get()
        try:
            zygote = zygote or Zygote(self.isolation, self.scratch_bytes, self.preload)
        except WorkerError as err:
            self._idle.put(None)
            raise SandboxUnavailableError(
                f"the {self.isolation} sandbox cannot start here: {err}. If user namespaces are disabled, enable "
                "them (sysctl kernel.unprivileged_userns_clone=1) or opt into the weaker mode isolation: rlimits"
            ) from err
        self._idle.put(zygote)

    def execute(self, request: dict[str, Any]) -> dict[str, Any]:
        """Run one request on an idle worker; a worker that fails is replaced and the request retried once."""
        zygote = self._idle.get()
        try:
            for attempt in (1, 2):
                try:
                    zygote = zygote or Zygote(self.isolation, self.scratch_bytes, self.preload)
                    return zygote.execute(request)
                except WorkerError as err:
                    logger.warning("sandbox worker failed (attempt %d): %s", attempt, err)
                    if zygote is not None:
                        zygote.close()
                    zygote = None
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        finally:
            self._idle.put(zygote)

    def execute_many(self, requests: list[dict[str, Any]]) -> list[dict[str, Any] | WorkerError]:
        futures = [self._executor.submit(self.execute, r) for r in requests]
        results: list[dict[str, Any] | WorkerError] = []
        for future in futures:
            try:
                results.append(future.result())
            except WorkerError as err:
                results.append(err)
        return results

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._executor.shutdown(wait=True)
        while not self._idle.empty():
            zygote = self._idle.get_nowait()
            if zygote is not None:
                zygote.close()
