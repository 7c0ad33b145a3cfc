"""The process that runs model-written programs, one fresh forked child per program. Standard library only.

It is started inside the sandbox (see ``sandbox.py``) as ``python -I -S _zygote.py SCRATCH_ROOT NAMESPACED``, reads
requests on fd 0 (length-prefixed marshal, see ``_requests``) and answers one JSON line per request on fd 1. For each
run it forks a child that:

* starts its own session and process group, in a fresh scratch directory under /tmp;
* gets rlimits: address space, CPU seconds, process count, file size (caps captured output), open files, no core;
* has stdin from a file (stdio tests) or /dev/null, stdout and stderr to files in the scratch directory, and no
  other file descriptor but the write end of a pipe that is never written: its end of file tells this process that
  the child and everything it forked have ended, without waking it for anything else;
* reports what the program returned, one line per call, prefixed with a per-run nonce, into a region of shared
  memory made once by this process (no system call per result, and what was reported before a hang or a crash is
  kept); expected values never enter this process, so nothing the program does here can make a wrong answer pass.

After the child ends or its wall-clock deadline passes, its process group is killed; inside the sandbox
(NAMESPACED=1) so is every other process of the sandbox's PID namespace (``kill(-1)``: children that left the group
with ``setsid`` too). SCRATCH_ROOT is then emptied and the result goes back. Inside the sandbox, when started as root,
each child drops to uid/gid 65534 before running the program: the kernel exempts root from the process-count limit,
and a program must not be able to signal the process that judges it.
"""

import _signal as signal  # the signal module wraps its constants in enums: importing enum costs every fork
import gc
import marshal
import mmap
import os
import resource
import select
import sys
import time

try:
    from _json import encode_basestring_ascii as _quote
except ImportError:  # an interpreter without the json accelerator
    from json.encoder import py_encode_basestring_ascii as _quote

NOBODY = 65534
PROTOCOL_IN, PROTOCOL_OUT = 3, 4
SCRATCH_ROOT = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
NAMESPACED = len(sys.argv) > 2 and sys.argv[2] == "1"
PRELOAD = [name for name in sys.argv[3].split(",") if name] if len(sys.argv) > 3 else []
DROP_TO_NOBODY = NAMESPACED and os.getuid() == 0
HEADER = 8  # the results region starts with the length of what follows it (little-endian)
_RESULTS = {"region": None, "size": 0}  # shared memory that children write results into (_results_region)
_NONCE_PREFIX = os.urandom(8).hex()  # + a counter: unique per run, unguessable without reading this process
_DEVNULL = {"fd": -1}  # opened once; children dup it onto their standard streams
_INHERITED = {"key": None}  # the lasting limits this process has set on itself, which its children inherit


def _drop_privileges():
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


def _limit(kind, soft, hard=None):
    hard = soft if hard is None else hard
    try:
        resource.setrlimit(kind, (soft, hard))
    except (ValueError, OSError):
        current_hard = resource.getrlimit(kind)[1]
        if current_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, current_hard), current_hard
        resource.setrlimit(kind, (soft, hard))


def _limits_key(limits):
    return (limits["memory"], limits["nproc"], limits["output"])


def _set_lasting_limits(limits):
    """The limits that do not grow with time spent: address space, processes, file size, open files, core."""
    _limit(resource.RLIMIT_AS, limits["memory"])
    _limit(resource.RLIMIT_NPROC, limits["nproc"])
    _limit(resource.RLIMIT_FSIZE, limits["output"])
    _limit(resource.RLIMIT_NOFILE, 64)
    _limit(resource.RLIMIT_CORE, 0)
    _limit(resource.RLIMIT_MSGQUEUE, 0)  # POSIX message queues: kernel memory that would outlive the program


def _inherit_limits(limits):
    """Set the lasting limits once on this process, so that children inherit them instead of setting them each
    time (it shows in programs per second). Only the first set of limits is taken; other ones are set per child.
    The CPU limit is always per child: it counts a process's own time, and this one lives long."""
    if _INHERITED["key"] is None:
        _set_lasting_limits(limits)
        _INHERITED["key"] = _limits_key(limits)


# JSON is written here without the json package: with what it imports (re, enum, functools, collections) and the
# signal module's enums, this process held 1.1 MiB more, which every fork pays for (7% fewer programs per second).
_INFINITY = float("inf")


def _dump(value):
    """JSON text for ``value`` as ``json.dumps`` writes it with ``ensure_ascii`` and ``allow_nan``: tuples as lists,
    subclasses of str, int, float, list and dict as their base types, NaN and the infinities as JavaScript names;
    anything else raises TypeError. Deep or circular structures raise RecursionError."""
    if isinstance(value, str):
        return _quote(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join([_dump(item) for item in value]) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join([_key(key) + ": " + _dump(item) for key, item in value.items()]) + "}"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _float(value):
    if value != value:
        return "NaN"
    if value == _INFINITY:
        return "Infinity"
    if value == -_INFINITY:
        return "-Infinity"
    return float.__repr__(value)


def _key(key):
    """A dict key as json writes it: strings as they are; floats, booleans, None and ints as quoted text."""
    if isinstance(key, str):
        return _quote(key)
    if isinstance(key, float):
        return '"' + _float(key) + '"'
    if key is True or key is False or key is None:
        return '"' + _dump(key) + '"'
    if isinstance(key, int):
        return '"' + int.__repr__(key) + '"'
    raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def _literal(value):
    """Python literal text for ``value``, which the host reads back with ``literals.read_literal`` (never
    evaluated): None, bool, int, float (``nan``, ``inf``), complex, str, bytes, and lists, tuples, sets, frozensets
    and dicts of them. Subclasses are written as their base type, with the base type's own methods, never the
    value's; anything else raises TypeError. Deep or circular structures raise RecursionError."""
    if value is None or value is True or value is False:
        return "None" if value is None else "True" if value else "False"
    if isinstance(value, str):
        return str.__repr__(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return float.__repr__(value)  # nan, inf and -inf are names the host reads
    if isinstance(value, bytes):
        return bytes.__repr__(value)
    if isinstance(value, complex):
        return "complex(" + float.__repr__(value.real) + ", " + float.__repr__(value.imag) + ")"
    if isinstance(value, tuple):
        items = [_literal(item) for item in tuple.__iter__(value)]
        return "(" + items[0] + ",)" if len(items) == 1 else "(" + ", ".join(items) + ")"
    if isinstance(value, list):
        return "[" + ", ".join([_literal(item) for item in list.__iter__(value)]) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join([_literal(k) + ": " + _literal(v) for k, v in dict.items(value)]) + "}"
    if isinstance(value, (set, frozenset)):
        kind = "set" if isinstance(value, set) else "frozenset"
        items = [_literal(item) for item in (set.__iter__ if kind == "set" else frozenset.__iter__)(value)]
        return kind + "({" + ", ".join(items) + "})" if items else kind + "()"
    raise TypeError(f"a {type(value).__name__} is not a Python literal")


class _Opaque:
    """What the candidate returns to in-sandbox asserts in place of an object that is no plain value: equal to
    nothing, so that an object whose ``__eq__`` always says yes cannot pass an assert."""

    __slots__ = ("kind",)

    def __init__(self, kind):
        self.kind = kind

    def __eq__(self, other):
        return False

    def __ne__(self, other):
        return True

    __hash__ = object.__hash__

    def __repr__(self):
        return "<a " + self.kind + ">"


def _plain(value, depth=0):
    """``value`` rebuilt from the base types with their own methods (a subclass becomes its base type; what is no
    plain value becomes an ``_Opaque``), for the asserts that run in the sandbox."""
    if depth > 100:
        raise RecursionError("a value nested over 100 deep")
    if value is None or value is True or value is False:
        return value
    for base in (int, float, complex, str, bytes):
        if isinstance(value, base):
            return value if type(value) is base else base.__new__(base, value)
    if isinstance(value, (list, tuple, set, frozenset)):
        base = next(b for b in (list, tuple, set, frozenset) if isinstance(value, b))
        return base([_plain(item, depth + 1) for item in base.__iter__(value)])
    if isinstance(value, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in dict.items(value)}
    return _Opaque(type(value).__name__)


def _snapshot():
    """The modules, builtins and module namespaces as they are before the program runs: restored before the
    asserts, so that a program that patched them (``builtins.abs``, ``math.isclose``, ``sys.modules``) does not
    change what the asserts compute."""
    namespaces = {}
    for name, module in sys.modules.items():
        namespace = getattr(module, "__dict__", None)
        if type(namespace) is dict:
            namespaces[name] = (namespace, dict(namespace))
    return dict(sys.modules), namespaces


def _restore(snapshot):
    modules, namespaces = snapshot
    sys.modules.clear()
    sys.modules.update(modules)
    for namespace, saved in namespaces.values():
        if len(namespace) != len(saved) or any(namespace.get(key, _restore) is not value
                                               for key, value in saved.items()):  # fmt: skip
            for key in [key for key in namespace if key not in saved]:
                del namespace[key]
            namespace.update(saved)


def _run_asserts(job, function, report, program):
    """Each of the row's assert tests in a copy of the program's namespace (HumanEval's tests call the helpers its
    prompt defines, as its own harness runs them), with the original builtins, and ``candidate`` and the entry point
    calling the program's function and handing back plain values; one line per test, written once it passed."""
    import builtins  # noqa: PLC0415 - the module object, already loaded

    clean_builtins = dict(vars(builtins))

    def candidate(*args, **kwargs):
        return _plain(function(*args, **kwargs))

    setup = job.get("setup_code")
    for index, (kind, source) in enumerate(job["assert_codes"]):
        namespace = dict(program)
        namespace.update({"__builtins__": clean_builtins, "__name__": "__test__", "candidate": candidate,
                          job["entry_point"]: candidate})  # fmt: skip
        try:
            if setup is not None:
                exec(setup, namespace)
                namespace["candidate"] = namespace[job["entry_point"]] = candidate
            exec(source, namespace)
            if kind == "check":
                check = namespace.get("check")
                if not callable(check):
                    raise NameError("the test defines no check(candidate)")
                check(candidate)
        except BaseException as exc:  # noqa: BLE001 - SystemExit, a failed assert, a program's exception: failed
            line = _dump({"assert": index, "failed": type(exc).__name__})
        else:
            line = _dump({"assert": index, "passed": True})
        if not report(line):
            break


def _child(job, code, run, limits, exit_fd, nonce, scratch):
    os.setsid()
    os.chdir(scratch)
    if job["mode"] == "stdio":
        stdin_path = scratch + "/.stdin"
        with open(stdin_path, "w", encoding="utf-8") as f:
            f.write(run.get("stdin") or "")
        os.dup2(os.open(stdin_path, os.O_RDONLY), 0)
        os.dup2(os.open(scratch + "/.stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 1)
        os.dup2(os.open(scratch + "/.stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), 2)
    else:  # function tests: what the program prints is not looked at
        for fd in (0, 1, 2):
            os.dup2(_DEVNULL["fd"], fd)
    os.closerange(3, exit_fd)
    os.closerange(exit_fd + 1, 65536)
    if DROP_TO_NOBODY:
        _drop_privileges()
    if _limits_key(limits) != _INHERITED["key"]:
        _set_lasting_limits(limits)
    _limit(resource.RLIMIT_CPU, limits["cpu"], limits["cpu"] + 1)  # SIGXCPU at the soft limit, SIGKILL a second later
    # Each result goes straight into the shared region (no system call, nothing to wake): what was reported before
    # a hang, a crash or a kill is there for the judge to read.
    prefix, region, capacity, end = nonce + "\t", _RESULTS["region"], _RESULTS["size"] - HEADER, [0]

    def report(line):
        """Append one line; False once the results would pass the output cap (marked by a length over it)."""
        data = (prefix + line + "\n").encode()
        start = end[0]
        if start + len(data) > capacity:
            region[:HEADER] = (capacity + 1).to_bytes(HEADER, "little")
            return False
        region[HEADER + start : HEADER + start + len(data)] = data
        end[0] = start + len(data)
        region[:HEADER] = end[0].to_bytes(HEADER, "little")
        return True

    try:
        if job["mode"] == "stdio":
            namespace = {"__name__": "__main__"}
            exit_code = 0
            try:
                exec(code, namespace)
            except SystemExit as exc:
                exit_code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            sys.stdout.flush()
            report(_dump({"exit": exit_code}))
        else:
            snapshot = _snapshot() if job.get("asserts") else None
            namespace = {"__name__": "__solution__"}
            exec(code, namespace)
            owner, _, method = job["entry_point"].partition(".")
            function = namespace.get(owner)
            if method and callable(function):  # Class.method: called on an instance made without arguments
                function = getattr(function(), method, None)
            literal = job.get("literal")
            if not callable(function):
                report(_dump({"missing_entry_point": job["entry_point"]}))
            else:
                for args, kwargs in job["calls"]:
                    try:
                        value = function(*args, **kwargs)
                        line = _dump({"literal": _literal(value)}) if literal else '{"value": ' + _dump(value) + "}"
                    except MemoryError:
                        report(_dump({"memory": True}))
                        break
                    except BaseException as exc:  # noqa: BLE001 - the program's failure is its result
                        line = _dump({"error": type(exc).__name__})
                    if not report(line):
                        break
                else:
                    if snapshot is not None:
                        _restore(snapshot)
                        _run_asserts(job, function, report, namespace)
    except MemoryError:
        report(_dump({"memory": True}))
    except BaseException as exc:  # noqa: BLE001 - a program that fails to load
        report(_dump({"load_error": type(exc).__name__ + ": " + str(exc)[:200]}))
    if job["mode"] == "stdio":  # a function's prints went to /dev/null: nothing to flush
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except BaseException:  # noqa: BLE001
            pass
    os._exit(0)


def _results_region(limits):
    """The shared region children write results into, ``limits["output"]`` bytes after the header. Inside the
    sandbox it is made once (again only when the output cap changes): every process that could still write to it is
    killed after each run. Outside it (NAMESPACED=0) a program's escaped descendants survive the run, so each run
    gets a region of its own, which no earlier program holds."""
    size = HEADER + limits["output"]
    if _RESULTS["size"] != size or not NAMESPACED:
        if _RESULTS["region"] is not None:
            _RESULTS["region"].close()
        _RESULTS["region"], _RESULTS["size"] = mmap.mmap(-1, size), size  # anonymous and shared with children
    return _RESULTS["region"]


def _read_tail(path, limit):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def _wipe(path):
    for root, dirs, _ in os.walk(path):  # a program may have made its directories unreadable
        for name in dirs:
            try:
                os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
            except (OSError, NotImplementedError):
                pass
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            try:
                os.unlink(os.path.join(root, name))
            except OSError:
                pass
        for name in dirs:
            full = os.path.join(root, name)
            try:
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    os.rmdir(full)
            except OSError:
                pass


def _kill_everything_else():
    """Kill every process of the sandbox but its init and this one. The program's own child is already reaped;
    what it forked was reparented to the namespace's init (bubblewrap's), which reaps it."""
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass


_SYSV_IPC = (("/proc/sysvipc/shm", "shmctl"), ("/proc/sysvipc/msg", "msgctl"), ("/proc/sysvipc/sem", "semctl"))
_SYSV_FDS: list = []  # the three tables, opened once; read with pread after every program
IPC_RMID = 0


def _sysv_fds():
    if not _SYSV_FDS:
        _SYSV_FDS.extend(os.open(table, os.O_RDONLY) for table, _ in _SYSV_IPC)
    return _SYSV_FDS


def _table_rows(fd):
    """The rows of a /proc/sysvipc table, read from its open descriptor: a header, then one line per object."""
    chunks, offset = [], 0
    while chunk := os.pread(fd, 1 << 16, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).splitlines()


def _remove_sysv_ipc():
    """Remove the SysV shared memory segments, message queues and semaphores a program left in this sandbox's IPC
    namespace: they outlive the program, and their memory counts against none of its limits (a program can leave
    gigabytes of shared memory behind). Reading the three tables costs three system calls; ctypes is loaded only
    when one is not empty. A table that cannot be emptied raises, which ends this worker (and its namespace)."""
    shm, msg, sem = _sysv_fds()  # a header line is under 200 bytes, as is a row
    lines = (
        os.pread(shm, 512, 0).count(b"\n") + os.pread(msg, 512, 0).count(b"\n") + os.pread(sem, 512, 0).count(b"\n")
    )
    if lines == 3:
        return  # a header line each: nothing left
    leftovers = []
    for (table, call), fd in zip(_SYSV_IPC, _SYSV_FDS, strict=True):
        leftovers += [(table, call, int(row.split()[1])) for row in _table_rows(fd)[1:]]  # key, id, ...
    import ctypes  # noqa: PLC0415 - only after a program left objects behind

    libc = ctypes.CDLL(None, use_errno=True)
    for table, call, ident in leftovers:
        args = (ident, 0, IPC_RMID, None) if call == "semctl" else (ident, IPC_RMID, None)
        if getattr(libc, call)(*args) != 0:
            raise OSError(ctypes.get_errno(), f"cannot remove SysV IPC object {ident} listed in {table}")


MEMORY_POLL_S = 0.02  # while a program runs longer than this, its processes' memory is summed this often
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _sandbox_memory():
    """Bytes held by the program's processes together (every process of this sandbox but its init and this one:
    resident memory not backed by files) plus SysV shared memory: RLIMIT_AS caps one process, and a program may
    have up to its process limit of them."""
    total, own = 0, (1, os.getpid())
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in own:
            try:
                with open(f"/proc/{name}/statm", "rb") as f:
                    fields = f.read().split()
            except OSError:  # it ended meanwhile
                continue
            total += (int(fields[1]) - int(fields[2])) * _PAGE  # resident - file-backed or shared
    rows = _table_rows(_sysv_fds()[0])
    if len(rows) > 1:
        rss = rows[0].split().index(b"rss")
        total += sum(int(row.split()[rss]) for row in rows[1:])
    return total


def run_one(job, code, run, limits, counter):
    name = f"run{counter}"
    scratch = f"{SCRATCH_ROOT}/{name}"  # not os.path.join: every object this loop touches costs a page fault
    os.mkdir(scratch, 0o700)
    if DROP_TO_NOBODY:
        os.chown(scratch, NOBODY, NOBODY)
    nonce = f"{_NONCE_PREFIX}{counter}"
    region = _results_region(limits)
    region[:HEADER] = bytes(HEADER)
    read_fd, write_fd = os.pipe()  # never written: its end of file says that the child and what it forked are gone
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            _child(job, code, run, limits, write_fd, nonce, scratch)
        finally:
            os._exit(70)
    os.close(write_fd)
    deadline = started + limits["wall"]
    timed_out = over_memory = False
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            timed_out = True
            break
        ready, _, _ = select.select([read_fd], [], [], min(remaining, MEMORY_POLL_S) if NAMESPACED else remaining)
        if ready:
            if not os.read(read_fd, 65536):
                break
            continue  # the program found the descriptor and wrote to it: what it wrote is not looked at
        if NAMESPACED and _sandbox_memory() > limits["memory"]:
            over_memory = True
            break
    os.close(read_fd)
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    elapsed = time.monotonic() - started
    if NAMESPACED:
        _kill_everything_else()
        _remove_sysv_ipc()
    size = int.from_bytes(region[:HEADER], "little")  # what the program left there; it could write anything
    text = region[HEADER : HEADER + min(size, limits["output"])].decode("utf-8", errors="replace")
    lines = []
    for raw in text.split("\n")[:-1]:  # complete lines only
        tag, _, body = raw.partition("\t")
        if tag == nonce and body:
            lines.append(body)
    out = {
        "lines": lines,
        "timed_out": timed_out,
        "over_memory": over_memory,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0,
        "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "output_truncated": size > limits["output"],
        "seconds": round(elapsed, 4),
    }
    if job["mode"] == "stdio":
        out["stdout"] = _read_tail(scratch + "/.stdout", limits["output"])
        out["stderr"] = _read_tail(scratch + "/.stderr", 2000)
    _clean(scratch, name)
    return out


def _clean(scratch, name):
    """Remove the run's scratch directory and anything else the program wrote (the common case is cheap)."""
    leftovers = os.listdir(scratch)
    if _OWN_FILES.issuperset(leftovers) and os.listdir(SCRATCH_ROOT) == [name]:
        for own in leftovers:
            os.unlink(f"{scratch}/{own}")
        os.rmdir(scratch)
    else:
        _wipe_or_end(SCRATCH_ROOT)
    if NAMESPACED and not DROP_TO_NOBODY and os.listdir("/dev/shm"):  # programs run as nobody cannot write there
        _wipe_or_end("/dev/shm")


_OWN_FILES = frozenset((".stdin", ".stdout", ".stderr"))  # what a stdio run leaves in its scratch directory


def _wipe_or_end(path):
    """Wipe ``path``; what could not be removed would be seen by the next program, so this worker ends instead (the
    host starts a fresh one, with an empty /tmp). A tree too deep to walk ends it the same way (RecursionError)."""
    _wipe(path)
    if os.listdir(path):
        raise RuntimeError(f"could not empty {path} after a program: {sorted(os.listdir(path))[:5]}")


_COMPILED: dict = {}  # source -> code object: a group of completions often repeats a program verbatim
_COMPILED_MAX = 256


def _compile(source):
    code = _COMPILED.get(source)
    if code is None:
        code = compile(source, "<solution>", "exec")
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[source] = code
    return code


def run_job(job, limits, counter):
    """Compile once here, then one fresh child per run; a program that does not compile runs nothing. The row's
    assert tests are compiled here too (once for a group's completions), outside the program's process."""
    try:
        code = _compile(job["code"])
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        return {"compile_error": type(exc).__name__ + ": " + str(exc)[:200]}, counter
    if job.get("asserts"):
        try:
            job["assert_codes"] = [(kind, _compile(source)) for kind, source in job["asserts"]]
            job["setup_code"] = _compile(job["setup"]) if job.get("setup") else None
        except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
            return {"test_compile_error": type(exc).__name__ + ": " + str(exc)[:200]}, counter
    runs = []
    for run in job["runs"]:
        counter += 1
        runs.append(run_one(job, code, run, limits, counter))
    return {"runs": runs}, counter


def main():
    # Python ignores SIGXFSZ; children inherit the default, so a program writing past the output cap ends there.
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    os.dup2(0, PROTOCOL_IN)
    os.dup2(1, PROTOCOL_OUT)
    _DEVNULL["fd"] = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(_DEVNULL["fd"], fd)
    replies = os.fdopen(PROTOCOL_OUT, "w", encoding="ascii")
    not_preloaded = _preload()
    replies.write(_dump({"ready": True, "uid": os.getuid(), "not_preloaded": not_preloaded}) + "\n")
    replies.flush()
    counter = 0
    gc.freeze()  # keep the collector from touching (and so copying) the parent's pages in every child
    for request in _requests(PROTOCOL_IN):
        results = []
        _inherit_limits(request["limits"])
        for job in request["jobs"]:
            result, counter = run_job(job, request["limits"], counter)
            results.append(result)
        replies.write(_dump({"jobs": results}) + "\n")
        replies.flush()


def _preload():
    """Import PRELOAD before the first fork: a program that imports one of them then finds it in ``sys.modules``
    instead of paying for it (``typing`` alone costs about 7 ms, more than a whole short program). Each child gets
    the modules copy-on-write; what a program changes in one stays in its own process. Returns the names that
    failed to import."""
    failed = []
    for name in PRELOAD:
        try:
            __import__(name)
        except BaseException:  # noqa: BLE001 - a module missing from this Python is skipped, and said
            failed.append(name)
    return failed


def _requests(fd):
    """The host's requests: each an 8-byte little-endian length, then the request in marshal format (the host is
    trusted, and marshal is built into the interpreter, where json would be imported). Ends at end of input."""
    while header := _read_exactly(fd, 8):
        yield marshal.loads(_read_exactly(fd, int.from_bytes(header, "little")))


def _read_exactly(fd, size):
    chunks, missing = [], size
    while missing:
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            if missing == size:
                return b""
            raise EOFError(f"the host's request ended {missing} bytes early")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


if __name__ == "__main__":
    main()
