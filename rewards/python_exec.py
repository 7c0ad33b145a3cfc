"""``python_exec``: run the completion's Python against the row's tests in the sandbox (``sandbox.py``) and reward the
fraction that passes.

Columns read: ``tests`` (a list, or its JSON string) and, for function and assert tests, ``entry_point``. Test forms:

* function call: ``{"args": [...], "kwargs": {...}, "expected": <JSON value>, "tolerance": <float, optional>}``,
  called as ``entry_point(*args, **kwargs)``. With ``"encoding": "python"``, ``args``, ``kwargs`` and ``expected``
  are Python literal text instead (``"(1, [2, 3])"``, ``"{(1, 2): 'a'}"``): tuples, sets, dicts with any keys,
  bytes, complex, read on the host without evaluating anything (``literals.read_literal``);
* assert: ``{"assert": "assert f(1) == 2"}`` (statements, MBPP's ``test_list``) or ``{"check": "def check(candidate):
  ..."}`` (HumanEval's ``test``), each with an optional ``"setup"`` (code run before it). An assert the host can
  decide (``candidate(LITERALS) == LITERAL``, ``abs(... - LIT) < TOL``, ``math.isclose``, ``assert candidate(...)``)
  is lifted out of the sandbox: the program's return value is compared on the host. The rest run inside the sandbox,
  after the program, with the builtins and modules as they were before it ran, on plain copies of what it returns;
* stdin/stdout: ``{"stdin": str, "stdout": str}``; lines compared after stripping trailing whitespace, equal counts
  (trailing blank lines ignored); the program must also exit with status 0.

Comparison (``compare``, the reward parameter, or a test's ``"compare"`` key, one per row): ``strict`` compares JSON
values with exact types (``1 != True``, ``1 != 1.0``; a ``tolerance`` makes numbers compare as numbers within it);
``python`` is Python's ``==`` on host-side values (``5 == 5.0``, ``(1, 2) != [1, 2]``), numbers within ``tolerance``
when given. Python literals and assert tests compare the ``python`` way.

Code is the last fenced block (```python, ```py or bare ```), else the whole completion if it parses as Python.
Reward: ``full_reward`` when every test passes, else ``partial_weight`` x the fraction passed. A row whose tests are
malformed, or a verifier failure (a sandbox worker that dies twice), gives ``None``, logged with the reason.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import math
import os
import re
import signal
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from grpo_ext.rewards.literals import Lifted, lift_check, lift_statement, python_equal, read_literal
from grpo_ext.rewards.sandbox import ISOLATIONS, Limits, SandboxPool, WorkerError
from grpo_ext.rewards.text import completion_text

logger = logging.getLogger(__name__)

_FENCE = re.compile(r"```(?:python3?|py)?[ \t]*\r?\n(.*?)```", re.DOTALL)
MAX_CODE_CHARS = 100_000
# Imported by each sandbox worker before its first program (``preload``): the standard library modules programs
# import most, which then cost a program nothing (docs/sandbox.md has each one's cost).
PRELOAD = ("typing", "collections", "re", "math", "itertools", "functools", "heapq", "bisect", "string")
STATUSES = (
    "ok", "wrong_answer", "no_code", "too_long", "syntax_error", "load_error", "missing_entry_point", "timeout",
    "memory", "output_limit", "crashed", "bad_tests", "infra_error",
)  # fmt: skip
COMPARES = ("strict", "python")


def extract_code(completion: str) -> str | None:
    """The last fenced Python block; else the whole completion if it parses as Python; else ``None``."""
    blocks = _FENCE.findall(completion)
    if blocks:
        return blocks[-1]
    if not completion.strip() or "```" in completion:
        return None
    try:
        ast.parse(completion)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return completion


def strict_equal(expected: Any, actual: Any, tolerance: float | None = None) -> bool:
    """``expected == actual`` with exact JSON types: bool, int, float, str, list and dict never stand for each other,
    except that with a ``tolerance`` numbers (not bools) compare by value within it."""
    if tolerance is not None and _is_number(expected) and _is_number(actual):
        return math.isclose(actual, expected, rel_tol=tolerance, abs_tol=tolerance)
    if type(expected) is not type(actual):
        return False
    if isinstance(expected, list):
        return len(expected) == len(actual) and all(
            strict_equal(e, a, tolerance) for e, a in zip(expected, actual, strict=True)
        )
    if isinstance(expected, dict):
        return expected.keys() == actual.keys() and all(
            strict_equal(expected[k], actual[k], tolerance) for k in expected
        )
    return expected == actual


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def parse_tests(tests: Any, entry_point: Any) -> tuple[str, list[dict[str, Any]]]:
    """Check a row's tests; return their mode (``function``, for function and assert tests, or ``stdio``) and the
    tests as given. Raises ``ValueError`` naming the test."""
    if isinstance(tests, str):
        tests = json.loads(tests)
    if not isinstance(tests, list) or not tests:
        raise ValueError("tests must be a non-empty list")
    modes = set()
    for i, test in enumerate(tests):
        if not isinstance(test, dict):
            raise ValueError(f"tests[{i}] is not an object")
        compare = test.get("compare", "strict")
        if compare not in COMPARES:
            raise ValueError(f"tests[{i}]: compare must be one of {list(COMPARES)}, got {compare!r}")
        if "expected" in test:
            modes.add("function")
            _call_values(test, i)
            tolerance = test.get("tolerance")
            if tolerance is not None and (not _is_number(tolerance) or tolerance < 0):
                raise ValueError(f"tests[{i}]: tolerance must be a number >= 0")
        elif "assert" in test or "check" in test:
            modes.add("function")
            for key in ("assert", "check", "setup"):
                if key in test and not isinstance(test[key], str):
                    raise ValueError(f"tests[{i}]: {key} must be Python source text")
                if key in test:
                    try:
                        ast.parse(test[key])
                    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
                        raise ValueError(f"tests[{i}]: its {key} code does not parse: {err}") from err
            if test.get("setup", "") != tests[0].get("setup", ""):
                raise ValueError(f"tests[{i}]: every test of a row must have the same setup code")
        elif "stdin" in test and "stdout" in test:
            modes.add("stdio")
            if not isinstance(test["stdin"], str) or not isinstance(test["stdout"], str):
                raise ValueError(f"tests[{i}]: stdin and stdout must be strings")
        else:
            raise ValueError(
                f"tests[{i}] has neither 'expected' (function test), 'assert' or 'check' (assert test) nor "
                "'stdin'/'stdout' (stdio test)"
            )
    if len(modes) > 1:
        raise ValueError("a row's tests must all be function or assert tests, or all stdin/stdout tests")
    if len({test.get("compare", "strict") for test in tests}) > 1:
        raise ValueError("every test of a row must compare the same way (compare: strict or python)")
    mode = modes.pop()
    if mode == "function" and not _is_entry_point(entry_point):
        raise ValueError(
            f"function tests need an entry_point that is a Python identifier (or Class.method), got {entry_point!r}"
        )
    return mode, tests


def _is_entry_point(entry_point: Any) -> bool:
    """A function's name, or ``Class.method`` (called on an instance made without arguments: LeetCode's Solution)."""
    return (
        isinstance(entry_point, str)
        and 1 <= len(parts := entry_point.split(".")) <= 2
        and all(part.isidentifier() for part in parts)
    )


def program(completion: str, prefix: str, entry_point: str) -> str | None:
    """The program a completion stands for. Without a ``prefix``: its code (``extract_code``). With one (HumanEval's
    prompt: imports, helpers and the function's stub), the prefix and then the code when the code defines the entry
    point, else the prefix continued by the completion (a completion that writes the function's body)."""
    code = extract_code(completion)
    if not prefix:
        return code
    if code is not None and _defines(code, entry_point.split(".")[0]):
        return f"{prefix}\n\n{code}"
    continued = prefix + completion
    try:
        ast.parse(continued)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None if code is None else f"{prefix}\n\n{code}"
    return continued


def _defines(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.name == name
               for node in tree.body)  # fmt: skip


def _call_values(test: dict[str, Any], i: int) -> tuple[list[Any], dict[str, Any], Any]:
    """A function test's arguments, keyword arguments and expected value, read from Python literals when its
    ``encoding`` is ``python``."""
    args, kwargs, expected = test.get("args", []), test.get("kwargs", {}), test["expected"]
    encoding = test.get("encoding", "json")
    if encoding == "python":
        try:
            args = read_literal(args) if isinstance(args, str) else args
            kwargs = read_literal(kwargs) if isinstance(kwargs, str) else kwargs
            expected = read_literal(expected)
        except ValueError as err:
            raise ValueError(f"tests[{i}]: {err}") from err
        if isinstance(args, tuple):
            args = list(args)
    elif encoding != "json":
        raise ValueError(f"tests[{i}]: encoding must be json or python, got {encoding!r}")
    if not isinstance(args, list) or not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ValueError(f"tests[{i}]: args must be a list and kwargs an object with string keys")
    return args, kwargs, expected


@dataclass
class Prepared:
    """A row's tests as the judge runs them: calls compared on the host (given, or lifted from asserts), asserts
    run in the sandbox, and how values compare."""

    mode: str
    compare: str
    calls: list[tuple[list[Any], dict[str, Any], Any, float | None, Lifted | None]] = field(default_factory=list)
    asserts: list[tuple[str, str]] = field(default_factory=list)  # (check | statements, source)
    setup: str = ""
    stdio: list[dict[str, Any]] = field(default_factory=list)
    assert_style: bool = False  # the row's tests were asserts (some maybe lifted)

    @property
    def total(self) -> int:
        return len(self.stdio) if self.mode == "stdio" else len(self.calls) + len(self.asserts)

    @property
    def literal(self) -> bool:
        """Values come back as Python literals (any comparison but strict)."""
        return self.compare == "python"


def prepare(mode: str, tests: list[dict[str, Any]], entry_point: str, compare: str) -> Prepared:
    """The judge's form of a row's checked tests (``parse_tests``); ``compare``: the reward's default."""
    compare = tests[0].get("compare", compare)
    if mode == "stdio":
        return Prepared(mode, compare, stdio=tests)
    prepared = Prepared(mode, compare, setup=tests[0].get("setup", ""))
    for i, test in enumerate(tests):
        if "expected" in test:
            args, kwargs, expected = _call_values(test, i)
            if test.get("encoding") == "python":
                prepared.compare = "python"
            prepared.calls.append((args, kwargs, expected, test.get("tolerance"), None))
            continue
        prepared.assert_style = True
        prepared.compare = "python"
        if "check" in test:
            lifted = lift_check(test["check"], entry_point)
            if lifted is None:
                prepared.asserts.append(("check", test["check"]))
            else:
                prepared.calls += [(list(one.args), one.kwargs, one.expected, None, one) for one in lifted]
        else:
            one = lift_statement(test["assert"], entry_point)
            if one is None:
                prepared.asserts.append(("statements", test["assert"]))
            else:
                prepared.calls.append((list(one.args), one.kwargs, one.expected, None, one))
    return prepared


def default_workers() -> int:
    """Sandbox workers when ``workers`` is not given: one per core this process may run on (its CPU affinity, which
    a SLURM allocation or a container's cpuset narrows, not the machine's count), divided among the training
    processes on this machine (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate), each with its own pool. More
    would oversubscribe the cores while every process scores its batch at once, and programs would run past their
    wall-clock limit for want of a core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // _pools_on_this_machine())


def _pools_on_this_machine() -> int:
    """Training processes on this machine (``LOCAL_WORLD_SIZE``, set by torchrun and accelerate): a pool each."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


class PythonExec:
    """Reward for code: the share of a row's tests that the completion's program passes, run in the sandbox."""

    columns = ("tests",)
    optional_columns = ("entry_point", "code_prefix")
    PARAMS = (
        "timeout", "cpu_seconds", "memory_mb", "max_processes", "max_output_bytes", "workers", "isolation",
        "full_reward", "partial_weight", "programs_per_request", "scratch_mb", "preload", "compare",
    )  # fmt: skip

    def __init__(
        self,
        timeout: float = 3.0,
        cpu_seconds: int | None = None,
        memory_mb: int = 1024,
        max_processes: int = 32,
        max_output_bytes: int = 1 << 20,
        workers: int | None = None,
        isolation: str = "bwrap",
        full_reward: float = 1.0,
        partial_weight: float = 0.5,
        programs_per_request: int = 16,
        scratch_mb: int = 64,
        preload: list[str] | tuple[str, ...] = PRELOAD,
        compare: str = "strict",
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"python_exec: isolation must be one of {list(ISOLATIONS)}, got {isolation!r}")
        if compare not in COMPARES:
            raise ValueError(f"python_exec: compare must be one of {list(COMPARES)}, got {compare!r}")
        self.compare = compare
        self.workers = workers if workers is not None else default_workers()
        for key, value in (
            ("workers", self.workers), ("programs_per_request", programs_per_request), ("scratch_mb", scratch_mb),
        ):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"python_exec: {key} must be an integer >= 1, got {value!r}")
        for key, number in (("full_reward", full_reward), ("partial_weight", partial_weight)):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
                raise ValueError(f"python_exec: {key} must be a number >= 0, got {number!r}")
        self.limits = Limits(
            wall=timeout,
            cpu=cpu_seconds if cpu_seconds is not None else max(1, math.ceil(timeout)),
            memory=memory_mb << 20 if isinstance(memory_mb, int) else memory_mb,
            nproc=max_processes,
            output=max_output_bytes,
        )
        try:
            self.limits.check()
        except ValueError as err:
            raise ValueError(f"python_exec: {err}") from err
        self.isolation = isolation
        self.full_reward = float(full_reward)
        self.partial_weight = float(partial_weight)
        self.programs_per_request = programs_per_request
        self.scratch_bytes = scratch_mb << 20
        if isinstance(preload, str) or not all(
            isinstance(name, str) and all(part.isidentifier() for part in name.split(".")) for name in preload
        ):
            raise ValueError(f"python_exec: preload must be a list of module names, got {preload!r}")
        self.preload = tuple(preload)
        self.__name__ = "python_exec"
        self._pool: SandboxPool | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # worker processes do not travel; a copy starts its own

    @property
    def pool(self) -> SandboxPool:
        if self._pool is None:
            pool = SandboxPool(self.workers, self.isolation, self.scratch_bytes, self.preload)
            pool.probe()  # raises SandboxUnavailableError with what is missing
            self._pool = pool
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _request_limits(self) -> dict[str, Any]:
        limits = asdict(self.limits)
        # The process-count rlimit counts every process of the programs' user: the other workers' programs too, and
        # those of the other training processes' pools on this machine.
        limits["nproc"] = self.limits.nproc + 2 * self.workers * _pools_on_this_machine() + 2
        return limits

    def score_batch(
        self,
        completions: list[Any],
        tests: list[Any],
        entry_point: list[Any] | None = None,
        code_prefix: list[Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Score many completions (in parallel); one result dict per completion, in order."""
        entry_points = entry_point if entry_point is not None else [None] * len(completions)
        prefixes = code_prefix if code_prefix is not None else [None] * len(completions)
        results: list[dict[str, Any] | None] = [None] * len(completions)
        jobs: list[tuple[int, Prepared, dict[str, Any]]] = []
        prepared_rows: dict[tuple[str, str], Prepared] = {}  # a group's completions share their row's tests
        for i, (completion, row_tests, entry) in enumerate(zip(completions, tests, entry_points, strict=True)):
            try:
                key = (row_tests if isinstance(row_tests, str) else json.dumps(row_tests, default=repr), str(entry))
                if key not in prepared_rows:
                    mode, parsed = parse_tests(row_tests, entry)
                    prepared_rows[key] = prepare(mode, parsed, entry or "", self.compare)
                prepared = prepared_rows[key]
            except (ValueError, TypeError, SyntaxError, RecursionError) as err:
                logger.error("python_exec: row %d has malformed tests (%s); reward is None", i, err)
                results[i] = {"reward": None, "status": "bad_tests", "error": str(err)}
                continue
            code = program(completion_text(completion), prefixes[i] or "", entry or "")
            if code is None:
                results[i] = self._finish(0, prepared.total, "no_code")
            elif len(code) > MAX_CODE_CHARS:
                results[i] = self._finish(0, prepared.total, "too_long")
            else:
                jobs.append((i, prepared, _job(code, prepared, entry or "")))
        step = self.programs_per_request
        batches = [jobs[k : k + step] for k in range(0, len(jobs), step)]
        replies = self._execute([[job for *_, job in batch] for batch in batches])
        failed = []
        for batch, reply in zip(batches, replies, strict=True):
            if isinstance(reply, WorkerError):
                failed += batch  # one program of the batch may have killed its worker: find out which, below
                continue
            for (i, prepared, _), job_result in zip(batch, reply["jobs"], strict=True):
                results[i] = self._judge(prepared, job_result)
        if failed:
            self._retry_alone(failed, results)
        return cast(list[dict[str, Any]], results)  # every one judged, above or alone

    def _execute(self, batches: list[list[dict[str, Any]]]) -> list[dict[str, Any] | WorkerError]:
        limits = self._request_limits()
        return self.pool.execute_many([{"jobs": jobs, "limits": limits} for jobs in batches])

    def _retry_alone(self, failed: list[tuple[int, Prepared, dict]], results: list[dict | None]) -> None:
        """Run each program of failed batches on its own. One whose worker dies again, while a fresh worker runs
        a trivial program fine, is judged to have killed it (reward 0); otherwise the verifier failed (None)."""
        replies = self._execute([[job] for *_, job in failed])
        healthy = None
        for (i, prepared, _), reply in zip(failed, replies, strict=True):
            if not isinstance(reply, WorkerError):
                results[i] = self._judge(prepared, reply["jobs"][0])
                continue
            if healthy is None:
                probe = {"code": "pass", "mode": "stdio", "entry_point": "", "calls": [], "runs": [{}]}
                healthy = not isinstance(self._execute([[probe]])[0], WorkerError)
            if healthy:
                results[i] = self._finish(0, prepared.total, "crashed", error="the program killed its sandbox worker")
            else:
                logger.error("python_exec: verifier failure on row %d: %s; reward is None", i, reply)
                results[i] = {"reward": None, "status": "infra_error", "error": str(reply)}

    def score(
        self, completion: Any, tests: Any = None, entry_point: Any = None, code_prefix: Any = None, **_: Any
    ) -> dict[str, Any]:
        return self.score_batch([completion], [tests], [entry_point], [code_prefix])[0]

    async def __call__(
        self,
        completions: list[Any],
        tests: list[Any] | None = None,
        entry_point: list[Any] | None = None,
        code_prefix: list[Any] | None = None,
        **_: Any,
    ) -> list[float | None]:
        if tests is None:
            logger.error("python_exec: the dataset has no 'tests' column; every reward is None")
            return [None] * len(completions)
        results = await asyncio.to_thread(self.score_batch, completions, tests, entry_point, code_prefix)
        return [r["reward"] for r in results]

    def _finish(self, passed: int, total: int, status: str, **details: Any) -> dict[str, Any]:
        if passed == total and total > 0:
            reward, status = self.full_reward, "ok"
        else:
            reward = self.partial_weight * passed / total if total else 0.0
        return {"reward": reward, "passed": passed, "total": total, "status": status, **details}

    def _judge(self, prepared: Prepared, result: dict[str, Any]) -> dict[str, Any]:
        total = prepared.total
        if "compile_error" in result:
            return self._finish(0, total, "syntax_error", error=result["compile_error"])
        if "test_compile_error" in result:
            return {"reward": None, "status": "bad_tests", "error": result["test_compile_error"]}
        runs = [(run, _outcomes(run["lines"])) for run in result["runs"]]
        if prepared.mode == "stdio":
            passed, failure = 0, None
            for test, (run, outcomes) in zip(prepared.stdio, runs, strict=True):
                problem = _problem(run, outcomes)
                exited_ok = any(o.get("exit") == 0 for o in outcomes)
                if problem is None and exited_ok and _lines(run.get("stdout", "")) == _lines(test["stdout"]):
                    passed += 1
                else:
                    failure = failure or problem or "wrong_answer"
            return self._finish(passed, total, failure or "wrong_answer")
        run, outcomes = runs[0]
        values = [o for o in outcomes if "value" in o or "literal" in o or "error" in o]
        passed = sum(self._call_passes(call, outcome) for call, outcome in zip(prepared.calls, values, strict=False))
        asserted = {o["assert"] for o in outcomes if o.get("passed") is True and isinstance(o.get("assert"), int)}
        answered = {o["assert"] for o in outcomes if isinstance(o.get("assert"), int)}
        passed += len(asserted & set(range(len(prepared.asserts))))
        status = _problem(run, outcomes)
        if status is None and (len(values) < len(prepared.calls) or len(answered) < len(prepared.asserts)):
            status = "crashed"  # exited (os._exit, a fatal signal) before answering every call and assert
        load_errors = [o["load_error"] for o in outcomes if "load_error" in o]
        details: dict[str, Any] = {"error": load_errors[0]} if load_errors else {}
        if prepared.assert_style:  # which kind each test was: decided on the host, or asserted in the sandbox
            details["on_host"], details["in_sandbox"] = len(prepared.calls), len(prepared.asserts)
        return self._finish(passed, total, status or "wrong_answer", **details)

    def _call_passes(self, call: tuple[Any, ...], outcome: dict[str, Any]) -> bool:
        _, _, expected, tolerance, lifted = call
        if "literal" in outcome:
            try:
                actual = read_literal(outcome["literal"])
            except ValueError:
                return False  # the program forged the line, or returned something no literal writes
        elif "value" in outcome:
            actual = outcome["value"]
        else:
            return False
        if lifted is not None:
            return lifted.passes(actual)
        if "literal" in outcome:
            return python_equal(expected, actual, tolerance)
        return strict_equal(expected, actual, tolerance)


def _job(code: str, prepared: Prepared, entry_point: str) -> dict[str, Any]:
    """What a sandbox worker runs for one program (``_zygote.run_job``)."""
    job: dict[str, Any] = {"code": code, "mode": prepared.mode, "entry_point": entry_point}
    if prepared.mode == "stdio":
        job["calls"], job["runs"] = [], [{"stdin": t["stdin"]} for t in prepared.stdio]
        return job
    job["calls"] = [[args, kwargs] for args, kwargs, *_ in prepared.calls]
    job["runs"] = [{}]
    job["literal"] = prepared.literal
    if prepared.asserts:
        job["asserts"], job["setup"] = prepared.asserts, prepared.setup
    return job


def _outcomes(lines: list[str]) -> list[dict[str, Any]]:
    """The child's report lines as objects; a line the program garbled (it shares the process) is skipped."""
    outcomes = []
    for line in lines:
        try:
            outcome = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: a forged line nested 100,000 deep
            continue
        if isinstance(outcome, dict):
            outcomes.append(outcome)
    return outcomes


def _problem(run: dict[str, Any], outcomes: list[dict[str, Any]]) -> str | None:
    """What kept a run from answering, if anything: a limit, a crash, or a program that did not load."""
    if run["timed_out"] or run["signal"] == signal.SIGXCPU:
        return "timeout"
    if run["output_truncated"] or run["signal"] == signal.SIGXFSZ:
        return "output_limit"
    if run.get("over_memory"):
        return "memory"  # the program's processes together held more than the memory limit
    if run["signal"]:
        return "crashed"
    for key in ("memory", "load_error", "missing_entry_point"):
        if any(key in o for o in outcomes):
            return key
    return None
