"""``python_exec`` and its sandbox, attacked one property at a time. Each attack is a program a policy could write;
most tests are written so that the program passes its test exactly when the isolation holds."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from trl.trainer.utils import is_async_callable

from grpo_ext.rewards import sandbox
from grpo_ext.rewards.python_exec import PythonExec, default_workers, extract_code, strict_equal
from grpo_ext.rewards.sandbox import SandboxUnavailableError, WorkerError
from support import needs_bwrap, zygote_module

pytestmark = needs_bwrap

SECRET = "grpo-test-secret-7d1f"


@pytest.fixture(scope="module")
def verifier():
    os.environ["GRPO_TEST_TOKEN"] = SECRET  # in the parent's environment when the workers start
    reward = PythonExec(timeout=1.5, workers=2, max_processes=16, max_output_bytes=1 << 20)
    yield reward
    reward.close()
    del os.environ["GRPO_TEST_TOKEN"]


def fn_tests(*pairs, tolerance=None):
    tests = [{"args": list(args), "expected": expected} for args, expected in pairs]
    if tolerance is not None:
        for test in tests:
            test["tolerance"] = tolerance
    return tests


ISOLATED = fn_tests(((), "isolated"))  # a probe program returns "isolated" when the attack failed


def probe(verifier, body: str) -> dict:
    """Run ``def f(): <body>`` and return the score; ``body`` returns "isolated" when the isolation held."""
    code = "def f():\n" + "\n".join("    " + line for line in body.strip().splitlines()) + "\n"
    return verifier.score(code, ISOLATED, "f")


FIZZ = fn_tests(((1,), "1"), ((3,), "Fizz"), ((5,), "Buzz"), ((15,), "FizzBuzz"), ((7,), "7"))
GOOD = """```python
def fizzbuzz(n):
    return "FizzBuzz" if n % 15 == 0 else "Fizz" if n % 3 == 0 else "Buzz" if n % 5 == 0 else str(n)
```"""


# scoring


def test_correct_partial_and_wrong(verifier):
    assert verifier.score(GOOD, FIZZ, "fizzbuzz") == {"reward": 1.0, "passed": 5, "total": 5, "status": "ok"}
    partial = verifier.score("def fizzbuzz(n):\n    return str(n)\n", FIZZ, "fizzbuzz")
    assert partial["reward"] == pytest.approx(0.5 * 2 / 5) and partial["status"] == "wrong_answer"
    custom = PythonExec(full_reward=2.0, partial_weight=0.0, workers=1)
    try:
        assert custom.score(GOOD, FIZZ, "fizzbuzz")["reward"] == 2.0
        assert custom.score("def fizzbuzz(n):\n    return str(n)\n", FIZZ, "fizzbuzz")["reward"] == 0.0
    finally:
        custom.close()


def test_a_generated_completion_is_scored_as_its_text(verifier):
    """The held-out evaluations hand rewards ``Completion`` objects (text carrying its token ids, a ``str``
    subclass), which the sandbox's request format cannot carry: an unfenced program reached it as one, and the
    verifier failed on it as if its worker had died."""
    from grpo_ext.backends.generation import Completion

    unfenced = Completion("def fizzbuzz(n):\n    return str(n)\n", [1, 2, 3])
    assert verifier.score(unfenced, FIZZ, "fizzbuzz")["status"] == "wrong_answer"
    assert verifier.score(Completion(GOOD, [1]), FIZZ, "fizzbuzz")["status"] == "ok"


def test_code_extraction():
    assert extract_code("text\n```python\na = 1\n```\nmore\n```py\nb = 2\n```") == "b = 2\n"
    assert extract_code("```\nc = 3\n```") == "c = 3\n"
    assert extract_code("```js\nlet x = 1;\n```") is None
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    assert extract_code("Here is my answer: it returns 1.") is None
    assert extract_code("") is None


def test_no_code_and_syntax_error(verifier):
    assert verifier.score("I cannot solve this.", FIZZ, "fizzbuzz")["status"] == "no_code"
    result = verifier.score("```python\ndef fizzbuzz(n:\n```", FIZZ, "fizzbuzz")
    assert (result["reward"], result["status"]) == (0.0, "syntax_error")


@pytest.mark.parametrize(
    "expected,actual,tolerance,equal",
    [
        (1, True, None, False),
        (True, 1, None, False),
        (1, 1.0, None, False),
        (1.0, 1, None, False),
        (1.0, 1, 1e-9, True),
        (0.3, 0.1 + 0.2, None, False),
        (0.3, 0.1 + 0.2, 1e-9, True),
        (True, 1, 1e-9, False),
        ([1, 2], [1, 2], None, True),
        ([1, 2], [1, 2.0], None, False),
        ({"a": 1}, {"a": 1}, None, True),
        ({"a": 1}, {"a": 1, "b": 2}, None, False),
        ("1", 1, None, False),
        (None, None, None, True),
    ],
)
def test_exact_types(expected, actual, tolerance, equal):
    assert strict_equal(expected, actual, tolerance) is equal


def test_exact_types_end_to_end(verifier):
    assert verifier.score("def f():\n    return True\n", fn_tests(((), 1)), "f")["passed"] == 0
    assert verifier.score("def f():\n    return 1.0\n", fn_tests(((), 1)), "f")["passed"] == 0
    assert verifier.score("def f():\n    return 1\n", fn_tests(((), 1.0), tolerance=1e-9), "f")["passed"] == 1
    assert verifier.score("def f():\n    return (1, 2)\n", fn_tests(((), [1, 2])), "f")["passed"] == 1


class _Str(str):
    def __eq__(self, other):  # a subclass is written as its base type's value, whatever it claims
        return True

    __hash__ = str.__hash__


@pytest.mark.parametrize(
    "value",
    [
        None, True, False, 0, -7, 10**40, 2.5, -0.0, 1e300, 1e-300, float("nan"), float("inf"), float("-inf"),
        "", "Fizz", 'quote " backslash \\ newline \n tab \t', "é ü 中 \U0001f600", "\ud800 lone surrogate", "\x00\x1f",
        [], [1, [2, [3, []]]], (1, "a", None), {"a": 1, "b": [True, None]}, {1: "int", 2.5: "float", False: "f",
        None: "n", "s": {}}, _Str("x"), {_Str("k"): _Str("v")},
    ],
)  # fmt: skip
def test_the_workers_json_writer_matches_the_json_module(value):
    """The worker writes results without the json package (see _zygote._dump); the host reads them with it."""
    zygote = zygote_module()
    assert zygote._dump(value) == json.dumps(value)


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", object(), {(1, 2): 3}, [1, {"a": 1j}]])
def test_the_workers_json_writer_refuses_what_json_refuses(value):
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        zygote_module()._dump(value)


def test_the_worker_preloads_the_common_stdlib_and_nothing_else():
    """Programs find typing, collections, re... imported already (each costs a program milliseconds otherwise); the
    worker itself imports neither the json package nor what it pulls in: every fork copies its page tables."""
    heavy = "{'json', 're', 'enum', 'typing', 'collections', 'signal', 'bisect'}"
    code = f"import sys\ndef f():\n    return sorted({heavy} & set(sys.modules))\n"
    for preload, found in (
        ((), []),
        (None, ["bisect", "collections", "enum", "re", "typing"]),
        (["bisect"], ["bisect"]),
    ):
        reward = PythonExec(workers=1) if preload is None else PythonExec(workers=1, preload=preload)
        try:
            assert reward.score(code, fn_tests(((), found)), "f")["reward"] == 1.0
        finally:
            reward.close()


@pytest.mark.parametrize("preload", ["typing", ["typing", "no such"], [3]])
def test_a_preload_that_is_not_module_names_is_refused(preload):
    with pytest.raises(ValueError, match="python_exec: preload must be a list of module names"):
        PythonExec(workers=1, preload=preload)


def test_a_module_that_cannot_be_preloaded_is_said_and_skipped(caplog):
    reward = PythonExec(workers=1, preload=["typing", "surely_not_a_module_here"])
    try:
        code = "import sys\ndef f():\n    return 'typing' in sys.modules\n"
        assert reward.score(code, fn_tests(((), True)), "f")["reward"] == 1.0
    finally:
        reward.close()
    assert "could not import ['surely_not_a_module_here']" in caplog.text


def test_kwargs_are_passed(verifier):
    tests = [{"args": [2], "kwargs": {"power": 3}, "expected": 8}]
    assert verifier.score("def p(x, power=2):\n    return x ** power\n", tests, "p")["reward"] == 1.0


# programs that try to fool the judge


@pytest.mark.parametrize(
    "code",
    [
        "class A:\n    def __eq__(self, other):\n        return True\ndef fizzbuzz(n):\n    return A()\n",
        "class S(str):\n    def __eq__(self, other):\n        return True\ndef fizzbuzz(n):\n    return S('x')\n",
        "class I(int):\n    def __eq__(self, other):\n        return True\ndef fizzbuzz(n):\n    return I(0)\n",
        "print('All tests passed')\ndef fizzbuzz(n):\n    return None\n",
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "def fizzbuzz(n):\n    raise SystemExit(0)\n",
        "import sys\nprint('{\"value\": \"Fizz\"}')\nsys.stdout.flush()\ndef fizzbuzz(n):\n    return 0\n",
        "def fizzbuzz(n):\n    import os\n    os._exit(0)\n",
    ],
    ids=["eq-always-true", "str-subclass", "int-subclass", "prints-success", "sys-exit", "os-exit", "raise-exit",
         "fake-result-line", "exit-in-call"],
)  # fmt: skip
def test_tricks_do_not_pass(verifier, code):
    result = verifier.score(code, FIZZ, "fizzbuzz")
    assert result["passed"] == 0 and result["reward"] == 0.0, result


def test_a_forged_result_line_cannot_crash_the_judge(verifier):
    # the program finds its nonce and result pipe in the reporting frame and writes a line nested too deep to parse
    code = """
def f():
    import sys, os
    frame = sys._getframe()
    while frame is not None and "prefix" not in frame.f_locals:
        frame = frame.f_back
    prefix, fd = frame.f_locals["prefix"], frame.f_locals["result_fd"]
    os.write(fd, (prefix + '{"value": ' + "[" * 100000 + "]" * 100000 + "}\\n").encode())
    return 2
"""
    result = verifier.score(code, fn_tests(((), 1)), "f")
    assert result["reward"] == 0.0 and result["passed"] == 0, result
    assert verifier.score(GOOD, FIZZ, "fizzbuzz")["reward"] == 1.0


def test_expected_values_never_enter_the_sandbox(verifier, monkeypatch):
    sent = []
    execute_many = verifier.pool.execute_many
    monkeypatch.setattr(
        verifier.pool, "execute_many", lambda requests: sent.append(requests) or execute_many(requests)
    )
    marker = "expected-marker-31337"
    verifier.score("def f(x):\n    return x\n", fn_tests((("in",), marker)), "f")
    assert sent and marker not in json.dumps(sent) and "expected" not in json.dumps(sent)
    # and a program that searches its own memory for it finds nothing to return
    body = """
import gc
for o in gc.get_objects():
    if isinstance(o, dict) and "expected" in o:
        return o["expected"]
return "isolated"
"""
    assert probe(verifier, body)["reward"] == 1.0


# isolation


def test_no_network(verifier):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    body = f"""
import socket
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=1)
    return "connected"
except OSError:
    pass
try:
    socket.create_connection(("192.0.2.1", 80), timeout=1)
    return "connected"
except OSError:
    return "isolated"
"""
    try:
        server.settimeout(0.5)
        assert probe(verifier, body)["reward"] == 1.0
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_file_system_is_read_only_outside_scratch(verifier):
    host_dir = Path(tempfile.mkdtemp(prefix="grpo_fs_test_", dir="/var/tmp"))  # outside the sandbox's private /tmp
    targets = [host_dir / "pwned", Path(__file__).parent / "pwned", Path("/etc/pwned"), Path.home() / "pwned"]
    body = f"""
for path in {[str(t) for t in targets]!r}:
    try:
        open(path, "w").write("x")
        return "wrote " + path
    except OSError:
        pass
open("scratch_ok.txt", "w").write("fine")  # the private scratch directory is writable
return "isolated"
"""
    try:
        assert probe(verifier, body)["reward"] == 1.0
        assert not any(t.exists() for t in targets)
    finally:
        shutil.rmtree(host_dir)


def test_scratch_is_private_and_removed_between_programs(verifier):
    write = """
import os
open("left_behind.txt", "w").write("x")
open("/tmp/planted.txt", "w").write("x")
os.makedirs("/tmp/dir/sub")
os.chmod("/tmp/dir", 0)
return "isolated"
"""
    check = """
import os
others = [name for name in os.listdir("/tmp") if name != os.path.basename(os.getcwd())]
return "isolated" if not others and not os.listdir(".") else repr(others)
"""
    for _ in range(3):  # with two workers, make sure each has run the writer before a checker
        assert probe(verifier, write)["reward"] == 1.0
    for _ in range(4):
        assert probe(verifier, check)["reward"] == 1.0


def test_environment_has_nothing_of_the_parent(verifier):
    body = f"""
import os
values = " ".join(os.environ.values())
return "isolated" if {SECRET!r} not in values and "GRPO_TEST_TOKEN" not in os.environ else "leaked"
"""
    assert os.environ["GRPO_TEST_TOKEN"] == SECRET
    assert probe(verifier, body)["reward"] == 1.0


def test_secret_files_in_home_are_hidden(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text(SECRET)
    (home / ".netrc").write_text(f"machine api.wandb.ai login user password {SECRET}")
    monkeypatch.setenv("HOME", str(home))
    reward = PythonExec(workers=1)
    body = f"""
found = []
for path in ({str(home / ".ssh" / "id_rsa")!r}, {str(home / ".netrc")!r}):
    try:
        if {SECRET!r} in open(path).read():
            found.append(path)
    except OSError:
        pass
return "isolated" if not found else " ".join(found)
"""
    try:
        assert probe(reward, body)["reward"] == 1.0
    finally:
        reward.close()


def test_only_the_sandbox_processes_are_visible(verifier):
    body = """
import os
pids = [p for p in os.listdir("/proc") if p.isdigit()]
return "isolated" if len(pids) < 10 else str(len(pids))
"""
    assert probe(verifier, body)["reward"] == 1.0


def _host_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line]


def test_forked_sleepers_and_escapees_leave_nothing_behind(verifier):
    marker = "4242.4242"
    body = f"""
import os, subprocess
if os.fork() == 0:  # a child that leaves the process group
    os.setsid()
    os.execvp("sleep", ["sleep", "{marker}"])
started = 0
for _ in range(300):
    try:
        subprocess.Popen(["sleep", "{marker}"])
        started += 1
    except OSError:  # the process-count limit
        break
return "isolated" if started > 5 else "started " + str(started)
"""
    result = probe(verifier, body)
    assert result["reward"] == 1.0, result
    time.sleep(0.2)
    assert _host_processes(marker) == []  # no survivor and no zombie


def test_process_count_is_limited(verifier):
    body = """
import os, time
children = 0
for _ in range(1000):
    try:
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        children += 1
    except OSError:
        return "isolated" if children < 100 else str(children)
return "forked 1000"
"""
    assert probe(verifier, body)["reward"] == 1.0
    assert verifier.score(GOOD, FIZZ, "fizzbuzz")["reward"] == 1.0


def test_fork_bomb_is_contained(verifier):
    result = verifier.score("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                            FIZZ, "fizzbuzz")  # fmt: skip
    assert result["reward"] == 0.0 and result["status"] == "timeout"
    assert verifier.score(GOOD, FIZZ, "fizzbuzz")["reward"] == 1.0


@pytest.mark.parametrize("directory", ["/tmp", "/dev/shm"])
def test_scratch_space_is_capped(verifier, directory):
    # tmpfs pages are memory that RLIMIT_AS does not count: uncapped, 1 MiB files in a loop filled 2 GB in 3 s
    body = f"""
import os
written = 0
for i in range(4096):
    try:
        with open(os.path.join({directory!r}, f"fill{{i}}"), "wb") as out:
            out.write(b"x" * ((1 << 20) - 1))
    except OSError:
        break
    written += 1
return "isolated" if written <= 64 else f"wrote {{written}} MiB"
"""
    assert probe(verifier, body)["reward"] == 1.0
    assert verifier.score(GOOD, FIZZ, "fizzbuzz")["reward"] == 1.0  # and the next program has its space back


def test_what_the_wipe_cannot_remove_does_not_reach_the_next_program():
    deep = """
import os
def f():
    os.chdir("/tmp")
    for _ in range(800):  # a path longer than the kernel takes (PATH_MAX): a walk by full paths cannot reach it
        os.mkdir("d" * 16)
        os.chdir("d" * 16)
    open("note", "w").write("left for the next program")
    return 1
"""
    look = "import os\ndef f():\n    return [len(os.listdir('/tmp')), os.listdir('.')]\n"
    single = PythonExec(workers=1)  # one worker: the next program would share its /tmp
    try:
        assert single.score(deep, fn_tests(((), 1)), "f")["reward"] == 0.0  # its worker ends: it scores 0
        assert single.score(look, fn_tests(((), [1, []])), "f")["reward"] == 1.0  # only its own, empty, directory
    finally:
        single.close()


@pytest.mark.parametrize("flags", [0x10000000 | 0x00020000, 0x40000000])  # a user + mount namespace; a network one
def test_programs_cannot_make_namespaces(verifier, flags):
    # in a user namespace of its own a program is root there and mounted a 4 GiB tmpfs no limit of ours could see
    body = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare({flags}) == 0:
    return "unshared"
pid = os.fork()  # forking and threads still work: only new namespaces are refused
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
return "isolated" if ctypes.get_errno() == 1 else "errno"
"""
    assert probe(verifier, body)["reward"] == 1.0


def test_programs_cannot_ptrace(verifier):
    # PTRACE_TRACEME succeeds for any process without the filter; with it, ptrace fails before doing anything
    body = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
return "isolated" if libc.ptrace(0, 0, None, None) == -1 and ctypes.get_errno() == 1 else "traced"
"""
    assert probe(verifier, body)["reward"] == 1.0


def test_the_syscall_filter_knows_its_architectures():
    from grpo_ext.rewards.sandbox import syscall_filter

    x86, arm = syscall_filter("x86_64"), syscall_filter("aarch64")
    assert len(x86) == len(arm) and len(x86) % 8 == 0 and x86 != arm
    assert syscall_filter("mips") is None


def test_memory_cap_counts_all_of_a_programs_processes():
    # RLIMIT_AS caps one process: three children of 300 MiB each would hold 900 MiB under a 512 MiB limit
    code = """
import os, time
def f():
    for _ in range(3):
        if os.fork() == 0:
            block = bytearray(300 << 20)
            for k in range(0, len(block), 4096):
                block[k] = 1
            time.sleep(10)
            os._exit(0)
    time.sleep(10)
    return 1
"""
    small = PythonExec(memory_mb=512, workers=1, timeout=5.0)
    try:
        result = small.score(code, fn_tests(((), 1)), "f")
        assert result["status"] == "memory" and result["reward"] == 0.0, result
        alone = "def f():\n    block = bytearray(300 << 20)\n    return len(block[::4096])\n"
        assert small.score(alone, fn_tests(((), 300 << 8)), "f")["reward"] == 1.0  # one process under the cap
    finally:
        small.close()


def test_sysv_shared_memory_does_not_outlive_the_program():
    # a segment outlives its maker and its memory counts against no rlimit: left alone, programs pile up gigabytes
    leave = """
def f():
    import ctypes
    libc = ctypes.CDLL(None)
    libc.shmat.restype = ctypes.c_void_p
    ident = libc.shmget(0, 16 << 20, 0o1666)  # IPC_PRIVATE, IPC_CREAT | 0666
    address = libc.shmat(ident, None, 0)
    ctypes.memset(address, 1, 16 << 20)
    libc.shmdt(ctypes.c_void_p(address))
    return open("/proc/sysvipc/shm").read().count("\\n") - 1
"""
    look = "def f():\n    return open('/proc/sysvipc/shm').read().count('\\n') - 1\n"
    single = PythonExec(workers=1)  # one worker: the second program runs in the first one's IPC namespace
    try:
        assert single.score(leave, fn_tests(((), 1)), "f")["passed"] == 1  # the segment existed while it ran
        assert single.score(look, fn_tests(((), 0)), "f")["passed"] == 1  # and is gone for the next program
    finally:
        single.close()


def test_memory_cap():
    small = PythonExec(memory_mb=256, workers=1)
    try:
        result = small.score("def f():\n    return len(bytearray(400 << 20))\n", fn_tests(((), 400 << 20)), "f")
        assert result["status"] == "memory" and result["reward"] == 0.0
        assert small.score("def f():\n    return len(bytearray(50 << 20))\n", fn_tests(((), 50 << 20)), "f")["passed"]
    finally:
        small.close()


@pytest.mark.parametrize(
    "code", ["def f():\n    while True:\n        pass\n", "import time\ndef f():\n    time.sleep(100)\n"]
)
def test_cpu_and_wall_clock_limits(verifier, code):
    started = time.monotonic()
    result = verifier.score(code, fn_tests(((), 1)), "f")
    assert result["status"] == "timeout" and result["reward"] == 0.0
    assert time.monotonic() - started < 1.5 + 2.0


def test_partial_credit_survives_a_hang(verifier):
    code = "import time\ndef f(x):\n    if x == 3:\n        time.sleep(100)\n    return x\n"
    result = verifier.score(code, fn_tests(((1,), 1), ((2,), 2), ((3,), 3), ((4,), 4)), "f")
    assert (result["passed"], result["status"]) == (2, "timeout")


def test_captured_output_is_capped(verifier):
    flood = verifier.score("print('x' * (8 << 20))", [{"stdin": "", "stdout": "x"}])
    assert flood["status"] == "output_limit" and flood["reward"] == 0.0
    big = verifier.score("def f():\n    return 'x' * (4 << 20)\n", fn_tests(((), "x")), "f")
    assert big["status"] == "output_limit"


def test_a_program_cannot_take_down_its_worker(verifier):
    body = """
import os, signal
for pid in (os.getppid(), 1):
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
return "isolated"
"""
    result = probe(verifier, body)
    assert result["reward"] in (0.0, 1.0)  # it may not even reach its judge; it never gets None
    assert verifier.score(GOOD, FIZZ, "fizzbuzz")["reward"] == 1.0


def test_a_dead_worker_is_replaced(verifier):
    assert verifier.score(GOOD, FIZZ, "fizzbuzz")["reward"] == 1.0
    workers = [z for z in list(verifier.pool._idle.queue) if z is not None]
    assert workers
    for zygote in workers:
        zygote.process.kill()
        zygote.process.wait()
    results = verifier.score_batch([GOOD] * 6, [FIZZ] * 6, ["fizzbuzz"] * 6)
    assert [r["reward"] for r in results] == [1.0] * 6


# stdin/stdout tests

ECHO = [{"stdin": "3\n", "stdout": "1\n2\n3\n"}, {"stdin": "1\n", "stdout": "1"}]


def test_stdio_tests(verifier):
    good = "n = int(input())\nfor i in range(1, n + 1):\n    print(i, end='  \\n')\nprint()\n"
    assert verifier.score(good, ECHO)["reward"] == 1.0  # trailing spaces and a trailing blank line are ignored
    extra = "n = int(input())\nfor i in range(1, n + 2):\n    print(i)\n"
    assert verifier.score(extra, ECHO)["passed"] == 0
    failing = "import sys\nn = int(input())\nfor i in range(1, n + 1):\n    print(i)\nsys.exit(3)\n"
    assert verifier.score(failing, ECHO)["passed"] == 0  # the right output with a failing exit status


# failures of the verifier itself


@pytest.mark.parametrize(
    "tests,entry_point",
    [([], "f"), ("not json", "f"), ([{"args": [1]}], "f"), ([{"args": [1], "expected": 1}], None),
     ([{"args": [1], "expected": 1}, {"stdin": "", "stdout": ""}], "f"), ([{"args": 1, "expected": 1}], "f")],
)  # fmt: skip
def test_malformed_tests_give_none(verifier, tests, entry_point):
    result = verifier.score("def f(x):\n    return x\n", tests, entry_point)
    assert result["reward"] is None and result["status"] == "bad_tests"


def test_verifier_failure_gives_none_not_zero(verifier, monkeypatch):
    monkeypatch.setattr(verifier.pool, "execute", lambda request: (_ for _ in ()).throw(WorkerError("gone")))
    results = verifier.score_batch([GOOD, "I give up."], [FIZZ, FIZZ], ["fizzbuzz", "fizzbuzz"])
    assert results[0]["reward"] is None and results[0]["status"] == "infra_error"
    assert results[1]["status"] == "no_code"  # judged without running: still a real zero


# A program that finds the results region and its nonce in the reporting frame, leaves a detached process behind
# and has it write forged results for the runs that come next (their nonces are its own plus a counter).
FORGER = """
import os, sys, time
def f():
    frame = sys._getframe(1)
    region, nonce = frame.f_locals["region"], frame.f_locals["prefix"][:-1]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.closerange(3, 256)  # the judge waits for every holder of its descriptors
            ahead = [nonce[:16] + str(int(nonce[16:]) + k) for k in range(1, 20)]
            lines = "".join(a + '\\t{"value": "right"}\\n' for a in ahead).encode()
            time.sleep(0.5)  # this run has been judged by then
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                region[8 : 8 + len(lines)] = lines
                region[:8] = len(lines).to_bytes(8, "little")
        os._exit(0)
    return "right"
"""


@pytest.mark.parametrize("isolation", ["bwrap", "rlimits"])
def test_a_survivor_cannot_forge_the_next_programs_results(isolation):
    reward = PythonExec(isolation=isolation, workers=1, timeout=2)
    try:
        assert reward.score(FORGER, fn_tests(((), "right")), "f")["reward"] == 1.0
        for _ in range(3):  # the survivor, if any, writes for 4 s
            wrong = reward.score(
                "import time\ndef f():\n    time.sleep(0.5)\n    return 'wrong'\n", fn_tests(((), "right")), "f"
            )
            assert wrong["passed"] == 0, wrong
    finally:
        reward.close()


def test_missing_bubblewrap_is_refused_with_the_way_out(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    reward = PythonExec(workers=1)
    with pytest.raises(SandboxUnavailableError, match="apt-get install bubblewrap.*isolation: rlimits"):
        reward.score(GOOD, FIZZ, "fizzbuzz")


def test_the_weaker_mode_runs_when_asked_for():
    reward = PythonExec(isolation="rlimits", workers=1)
    try:
        assert reward.score(GOOD, FIZZ, "fizzbuzz")["reward"] == 1.0
        assert (
            reward.score("def fizzbuzz(n):\n    while True:\n        pass\n", FIZZ, "fizzbuzz")["status"] == "timeout"
        )
    finally:
        reward.close()


@pytest.mark.parametrize(
    "params,key",
    [({"isolation": "none"}, "isolation"), ({"workers": 0}, "workers"), ({"timeout": -1}, "wall"),
     ({"partial_weight": -0.5}, "partial_weight"), ({"memory_mb": 0}, "memory"), ({"scratch_mb": 0}, "scratch_mb")],
)  # fmt: skip
def test_bad_parameters_are_named(params, key):
    with pytest.raises(ValueError, match=key):
        PythonExec(**params)


# the reward contract


def test_async_interface_for_trl(verifier):
    assert is_async_callable(verifier)
    rewards = asyncio.run(verifier([GOOD, "nope"], tests=[FIZZ, FIZZ], entry_point=["fizzbuzz", "fizzbuzz"]))
    assert rewards == [1.0, 0.0]
    assert asyncio.run(verifier([GOOD])) == [None]  # no tests column at all


@pytest.mark.parametrize(
    "junk", ["", "\x00\xff" * 1000, "🙂" * 5000, "```python\n" + "x = 1\n" * 50_000 + "```", None, 42,
             [{"role": "assistant", "content": GOOD}], "```python\n" + "(" * 5000 + "\n```"],
)  # fmt: skip
def test_junk_completions_score_without_raising(verifier, junk):
    result = verifier.score(junk, FIZZ, "fizzbuzz")
    assert result["reward"] in (0.0, 1.0)
    if isinstance(junk, list):
        assert result["reward"] == 1.0  # a chat completion is read from its last message


def test_calls_from_many_threads_share_the_pool(verifier):
    results = []

    def work():
        results.extend(verifier.score_batch([GOOD] * 10, [FIZZ] * 10, ["fizzbuzz"] * 10))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r["reward"] for r in results] == [1.0] * 40


def test_default_workers_are_the_cores_this_process_may_use_shared_by_the_training_processes(monkeypatch):
    """Not the machine's core count: a SLURM allocation or a cpuset narrows the affinity, and several training
    processes on one machine (LOCAL_WORLD_SIZE) each start a pool."""
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    pinned = subprocess.run(
        [sys.executable, "-c", "from grpo_ext.rewards.python_exec import PythonExec; print(PythonExec().workers)"],
        preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}),  # one core, as taskset -c would
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert pinned.stdout.strip() == "1"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert default_workers() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_workers() == PythonExec().workers == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "16")
    assert default_workers() == 1


def test_the_process_limit_leaves_room_for_the_programs_of_every_pool_on_the_machine(monkeypatch):
    """Programs of all pools run as one user, whose processes the limit counts: with 4 training processes on the
    machine, 4 pools' programs."""
    reward = PythonExec(workers=2, max_processes=16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert reward._request_limits()["nproc"] == 16 + 2 * 2 + 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert reward._request_limits()["nproc"] == 16 + 2 * 2 * 4 + 2
