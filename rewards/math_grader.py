"""``math``: 1.0 when the completion's final answer equals the gold ``answer``, else 0.0; never hangs.

Column read: ``answer`` (the gold as datasets store it: LaTeX, a plain number, GSM8K's ``... #### 72``). The final
answer is the last ``\\boxed{}``/``\\fbox{}``, else the last ``<answer>...</answer>``; none gives 0.0. Equivalence is
decided cheapest first, gold always on the left:

1. normalised strings (``math_answer.normalize``), in-process;
2. the parsed answers' shapes (lists and sets without order, tuples and intervals with their brackets, matrices,
   relations; ``math_parse``, ``math_expr``), with scalars compared by exact rational arithmetic, in-process;
3. what exact arithmetic cannot decide (radicals, pi, variables, huge numbers) goes to sympy in worker processes
   (``_math_worker``), each item with a wall-clock deadline: a worker past it is killed and replaced, the item scores
   0.0 with status ``timeout``.

Near misses are wrong: decimals are read as exact rationals, so ``0.33`` is not ``1/3`` and ``3.14`` is not pi.
A gold answer that is missing or does not parse gives ``None`` (logged), never 1.0. ``format_bonus`` (default 0) is
given to a completion that states a final answer which is wrong; a right answer scores 1.0.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import deque
from fractions import Fraction
from typing import Any

from grpo_ext.rewards.math_answer import (
    MAX_ANSWER_CHARS,
    extract_final,
    extract_gold,
    final_boxes,
    last_boxes,
    normalize,
)
from grpo_ext.rewards.math_expr import exact_equal, match
from grpo_ext.rewards.math_parse import MATH_WORDS, ParseError, parse
from grpo_ext.rewards.math_shapes import Node
from grpo_ext.rewards.text import completion_text

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT_S = 60.0  # a worker importing sympy on a loaded machine
MAX_UNANCHORED_CHARS = 20_000  # a completion without a marked answer longer than this is not searched for one
STATUSES = (
    "correct", "wrong", "no_answer", "too_long", "unparsed_answer", "timeout", "too_large", "crashed", "memory",
    "gold_missing", "gold_unparseable", "infra_error",
)  # fmt: skip


class WorkerStartError(RuntimeError):
    """Symbolic workers could not be started (the verdicts that needed them are ``None``)."""


class _Worker:
    def __init__(self, memory_mb: int) -> None:
        command = [sys.executable, "-m", "grpo_ext.rewards._math_worker", str(memory_mb)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert self.process.stdin is not None and self.process.stdout is not None  # both piped
        self.stdin, self.fd = self.process.stdin, self.process.stdout.fileno()
        self.buffer = b""
        self.ready = False
        self.job: int | None = None
        self.since = time.monotonic()  # when it was started, or when its job was sent

    def send(self, job: int, request: dict[str, Any]) -> None:
        self.job, self.since = job, time.monotonic()
        self.stdin.write((json.dumps(request) + "\n").encode())
        self.stdin.flush()

    def read_lines(self) -> list[dict[str, Any]] | None:
        """Complete reply lines read so far; ``None`` when the worker has exited."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass


class SymbolicPool:
    """``workers`` sympy and math-verify processes; ``compare_many`` spreads requests (``_math_worker.answer``) over
    them, each with a wall-clock ``timeout`` after which its worker is killed and replaced."""

    def __init__(self, workers: int, timeout: float, memory_mb: int) -> None:
        self.timeout, self.memory_mb = timeout, memory_mb
        self.workers = [_Worker(memory_mb) for _ in range(workers)]
        self.lock = threading.Lock()

    def compare_many(self, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.lock:
            return self._run(pairs)

    def _run(self, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(pairs)
        queue = deque(range(len(pairs)))
        failed_starts = 0
        while queue or any(w.job is not None for w in self.workers):
            for i, worker in enumerate(self.workers):
                if worker.ready and worker.job is None and queue:
                    job = queue.popleft()
                    try:
                        worker.send(job, pairs[job])
                    except OSError:  # it died while idle: the job waits for its replacement
                        queue.appendleft(job)
                        worker.job = None
                        self._replace(i, results, None)
            readable, _, _ = select.select([w.fd for w in self.workers], [], [], self._wait())
            for i, worker in enumerate(self.workers):
                if worker.fd in readable:
                    lines = worker.read_lines()
                    if lines is None:  # it died: out of memory beyond the rlimit, a crash, a failed start
                        failed_starts += not worker.ready
                        self._replace(i, results, {"equal": False, "status": "crashed"})
                        continue
                    for line in lines:
                        if line.get("ready"):
                            worker.ready, failed_starts = True, 0
                        elif worker.job is not None:
                            results[worker.job], worker.job = line, None
                elif worker.job is not None and time.monotonic() - worker.since > self.timeout:
                    self._replace(i, results, {"equal": False, "status": "timeout"})
                elif not worker.ready and time.monotonic() - worker.since > STARTUP_TIMEOUT_S:
                    failed_starts += 1
                    self._replace(i, results, None)
            if failed_starts >= 2 * len(self.workers):
                self.close()
                raise WorkerStartError(
                    f"math grader: symbolic workers fail to start ({sys.executable} -m grpo_ext.rewards._math_worker)"
                )
        return results  # type: ignore[return-value]

    def _wait(self) -> float:
        now = time.monotonic()
        limits = [
            w.since + (self.timeout if w.ready else STARTUP_TIMEOUT_S) - now
            for w in self.workers
            if w.job is not None or not w.ready
        ]
        return max(0.0, min(limits)) + 0.001 if limits else 1.0

    def _replace(self, index: int, results: list[dict[str, Any] | None], verdict: dict[str, Any] | None) -> None:
        worker = self.workers[index]
        if worker.job is not None and verdict is not None:
            results[worker.job] = verdict
        worker.kill()
        self.workers[index] = _Worker(self.memory_mb)

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()


@functools.lru_cache(maxsize=4096)
def _gold(gold: str) -> tuple[str, Node | None, str]:
    """A gold answer normalised and parsed (rows repeat once per generation, so this is cached)."""
    text = normalize(extract_gold(gold))
    if not text:
        return text, None, "gold_missing"
    try:
        return text, parse(text), "ok"
    except ParseError as err:
        return text, None, f"gold_unparseable ({err})"


def _gold_for_math_verify(gold: str, tree: Node | None) -> str:
    """The gold's answer as math-verify is given it: a gold our parser cannot read inside ``$...$`` (math-verify reads
    math inside delimiters) unless it has some; one ours reads as it is (delimiting every gold halves the rate)."""
    latex = extract_gold(gold)
    if tree is not None or re.search(r"\$|\\\(|\\\[|\\boxed", latex):
        return latex
    return f"${latex}$"


def gold_errors(golds: list[str], timeout: float = 5.0) -> list[str | None]:
    """For each gold answer, why neither engine can read it (every completion would score ``None``), or ``None`` when
    one can. Golds our parser cannot read are put to math-verify in one worker process, never in this one."""
    errors: list[str | None] = []
    for gold in golds:
        _, tree, status = _gold(gold)
        errors.append(None if tree is not None else status)
    asked = [i for i, error in enumerate(errors) if error is not None and error != "gold_missing"]
    if asked:
        pool = SymbolicPool(workers=1, timeout=timeout, memory_mb=1024)
        try:
            raws = [_gold_for_math_verify(golds[i], None) for i in asked]
            replies = pool.compare_many([{"engine": "math_verify", "gold_raw": raw, "pred_raw": raw} for raw in raws])
        finally:
            pool.close()
        for i, reply in zip(asked, replies, strict=True):
            if reply is not None and reply.get("equal") is True:  # math-verify reads it, and as itself
                errors[i] = None
            elif reply is not None and reply["status"] == "timeout":
                errors[i] = f"gold_unparseable (math-verify took more than {timeout:g} s to read it)"
    return errors


_PERCENT = re.compile(r"%|\\bpercent\\b|\\bpct\\b", re.IGNORECASE)
_CHOICE = re.compile(r"\(([A-Ea-e])\)(?:\s|$)|([A-E])(?:[.):](?:\s|$)|$)")
_DECIMAL_COMMA = re.compile(r"[-+]?\d+,(?:\d{1,2}|\d{4,})")  # never three digits after the comma: 1,000 is grouped
_DECIMAL = re.compile(r"[-+]?\d+\.\d+")
_TIME_OF_DAY = re.compile(r"\d{1,2}:[0-5]\d")  # as normalised: 20:34 (a ratio with two digits after the colon)


def _choice(text: str) -> str | None:
    """The letter of a multiple-choice answer: ``C``, ``(C)``, ``C. x = 42``, ``(B) 5``; ``None`` for anything else."""
    found = _CHOICE.match(text)
    return (found.group(1) or found.group(2)).upper() if found else None


def _decimal_comma(gold: str, gold_tree: Node | None, pred: str) -> bool | None:
    """``1,22`` against ``1.22``, either way round, where one side is a single number: the comma is a decimal comma
    (never with three digits after it, which group thousands). ``None`` where neither side reads so."""
    if gold_tree is not None and gold_tree[0] == "num" and _DECIMAL_COMMA.fullmatch(pred):
        return Fraction(pred.replace(",", ".")) == Fraction(gold_tree[1])
    if (
        _DECIMAL_COMMA.fullmatch(gold)
        and _DECIMAL.fullmatch(pred)
        and Fraction(gold.replace(",", ".")) == Fraction(pred)
    ):
        return True  # else the gold may be the list 1, 22
    return None


def _compact(text: str) -> str:
    return text.replace(" ", "")


_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")  # a word of prose, not a LaTeX command


def _has_prose(text: str) -> bool:
    """Whether a normalised answer holds words (``the number is 10``): ours would read them as products of letters."""
    return any(word not in MATH_WORDS for word in _WORD.findall(text))


def _readable(text: str) -> bool:
    """Whether ``text`` is an answer ours reads whole (a bare ``$(3, 2)$``), rather than prose around one."""
    if len(text) > MAX_ANSWER_CHARS or _has_prose(answer := normalize(text)):
        return False
    try:
        parse(answer)
    except ParseError:
        return False
    return True


def _decide_here(gold_text: str, gold_tree: Node | None, pred_text: str) -> tuple[bool | None, str]:
    """What this process decides about two normalised answers: ``(verdict, method)``; an undecided verdict
    (``None``) comes with the engine a worker should ask (``ours``: sympy; ``math_verify``: what ours cannot read)."""
    if _compact(pred_text) == _compact(gold_text):
        return True, "string"
    if _TIME_OF_DAY.fullmatch(gold_text) and _TIME_OF_DAY.fullmatch(pred_text):  # never ratios: 0:05 is not 0:07
        return False, "exact"
    letters = _choice(gold_text), _choice(pred_text)
    if letters[0] is not None and letters[1] is not None:  # "(B) 5" answers the choice "B"
        return letters[0] == letters[1], "choice"
    comma = _decimal_comma(gold_text, gold_tree, pred_text)
    if comma is not None:  # 1,22 is 1.22
        return comma, "exact"
    if gold_tree is None or (_has_prose(pred_text) and gold_tree[0] != "text"):  # words are math-verify's to read
        return None, "math_verify"
    try:
        pred_tree = parse(pred_text)
    except ParseError:  # notation ours does not read
        return None, "math_verify"
    verdict = match(gold_tree, pred_tree, exact_equal)
    return verdict, "exact" if verdict is not None else "ours"


class MathGrader:
    """Binary reward for math answers (see the module docstring). Reads the ``answer`` column."""

    columns = ("answer",)
    PARAMS = ("format_bonus", "workers", "timeout", "memory_mb", "unanchored")

    def __init__(
        self,
        format_bonus: float = 0.0,
        workers: int = 2,
        timeout: float = 1.0,
        memory_mb: int = 1024,
        unanchored: bool = False,
    ) -> None:
        if isinstance(format_bonus, bool) or not isinstance(format_bonus, (int, float)) or not 0 <= format_bonus < 1:
            raise ValueError(f"math: format_bonus must be a number in [0, 1), got {format_bonus!r}")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"math: workers must be an integer >= 1, got {workers!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ValueError(f"math: timeout must be a number of seconds > 0, got {timeout!r}")
        if isinstance(memory_mb, bool) or not isinstance(memory_mb, int) or memory_mb < 256:
            raise ValueError(f"math: memory_mb must be an integer >= 256, got {memory_mb!r}")
        if not isinstance(unanchored, bool):
            raise ValueError(f"math: unanchored must be true or false, got {unanchored!r}")
        self.format_bonus, self.unanchored = float(format_bonus), unanchored
        self.workers, self.timeout, self.memory_mb = workers, float(timeout), memory_mb
        self.__name__ = "math"
        self._pool: SymbolicPool | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_pool": None}  # worker processes do not travel; a copy starts its own

    def close(self) -> None:
        pool = getattr(self, "_pool", None)  # also from __del__ of a half-built instance
        if pool is not None:
            pool.close()
            self._pool = None

    def __del__(self) -> None:
        self.close()

    def score_batch(self, completions: list[Any], answer: list[Any]) -> list[dict[str, Any]]:
        """One result per completion, in order: ``reward``, ``status``, and the compared answers."""
        results: list[dict[str, Any]] = []
        symbolic: list[int] = []
        for i, (completion, gold) in enumerate(zip(completions, answer, strict=True)):
            result = self._grade_here(completion, gold)
            if result.get("status") == "pending":
                symbolic.append(i)
            results.append(result)
        if symbolic:
            self._grade_in_workers([results[i] for i in symbolic])
        for i, result in enumerate(results):
            if result["reward"] is None:
                logger.error("math: row %d not graded (%s); reward is None", i, result["status"])
        return results

    def _grade_here(self, completion: Any, gold: Any) -> dict[str, Any]:
        """The verdict when this process can decide it; else a result with ``status`` ``pending`` and the request a
        worker decides it by (``_request``)."""
        if isinstance(gold, (int, float)) and not isinstance(gold, bool):
            gold = str(gold)
        if not isinstance(gold, str):
            return {"reward": None, "status": "gold_missing"}
        gold_text, gold_tree, gold_status = _gold(gold)
        if not gold_text:
            return {"reward": None, "status": "gold_missing"}
        gold_raw = _gold_for_math_verify(gold, gold_tree)
        text = completion_text(completion)
        final, source = extract_final(text)
        if (
            source == "boxed" and gold_tree is not None and gold_tree[0] in ("list", "set")
        ):  # "\boxed{2} and \boxed{3}"
            final = last_boxes(text, len(gold_tree[1])) or final
        if final is None:  # no marked answer: math-verify's extraction from the text, when allowed
            if not self.unanchored or not text.strip() or len(text) > MAX_UNANCHORED_CHARS:
                return {"reward": 0.0, "status": "no_answer", "gold": gold_text}
            if not _readable(text):  # prose around the answer: math-verify's extraction finds it
                request = {"engine": "math_verify", "gold_raw": gold_raw, "pred_raw": text}
                return {"reward": 0.0, "status": "pending", "source": "unanchored", "gold": gold_text,
                        "_request": request}  # fmt: skip
            final, source = text, "unanchored"  # the bare answer: graded as a stated one
        bonus = 0.0 if source == "unanchored" else self.format_bonus  # an answer nobody marked states nothing
        result: dict[str, Any] = {"reward": bonus, "status": "wrong", "source": source, "gold": gold_text}
        if len(final) > max(MAX_ANSWER_CHARS, 2 * len(gold_text)):
            return {**result, "status": "too_long"}
        if gold_tree is None and source == "boxed" and re.search(r",|\band\b", gold_text):
            final = final_boxes(text) or final  # a list answered one box per item, for a gold only math-verify reads
        # math-verify reads a box; a line after "final answer is" may hold prose around the answer, which it finds
        pred_raw = final if source in ("final_answer", "hashes", "unanchored") else "\\boxed{" + final + "}"
        pred_text = normalize(final)
        result["answer"] = pred_text
        verdict, method = _decide_here(gold_text, gold_tree, pred_text)
        if source == "unanchored" and verdict is not True:  # unmarked text: math-verify's reading may still find it
            verdict, method = None, "math_verify"
        if verdict is None:  # a worker decides: "ours" (sympy, then math-verify) or "math_verify" alone
            request = {"engine": method, "gold_raw": gold_raw, "pred_raw": pred_raw}
            if method == "ours":
                request.update(gold=gold_text, pred=pred_text)
            extra = {"_gold_status": gold_status} if gold_tree is None else {}
            return {**result, "status": "pending", "_request": request, **extra}
        return {**result, "reward": 1.0 if verdict else bonus, "status": "correct" if verdict else "wrong",
                "method": method}  # fmt: skip

    def _grade_in_workers(self, results: list[dict[str, Any]]) -> None:
        requests = [result.pop("_request") for result in results]
        for request in requests:  # 28% may be answered 28 (or 0.28): math-verify's "equal" is then confirmed so
            if "gold_raw" in request:
                request["percent"] = bool(_PERCENT.search(request["gold_raw"] + " " + request["pred_raw"]))
        gold_statuses = [result.pop("_gold_status", None) for result in results]
        try:
            if self._pool is None:
                self._pool = SymbolicPool(self.workers, self.timeout, self.memory_mb)
            verdicts = self._pool.compare_many(requests)
        except (WorkerStartError, OSError) as err:
            self._pool = None
            for result in results:
                result.update(reward=None, status="infra_error", error=str(err))
            return
        for result, request, gold_status, verdict in zip(results, requests, gold_statuses, verdicts, strict=True):
            verdict = verdict or {"equal": False, "status": "crashed"}
            method = (
                "math_verify"
                if request["engine"] == "math_verify" or verdict["status"] == "math_verify"
                else "symbolic"
            )
            if verdict.get("equal") is True:
                result.update(reward=1.0, status="correct", method=method)
            elif verdict["status"] == "gold_unparseable" and gold_status is not None:  # neither engine reads it
                status, _, error = gold_status.partition(" ")
                result.update(reward=None, status=status, **({"error": error.strip("()")} if error else {}))
            elif result.get("source") == "unanchored":  # math-verify found no answer, or a wrong one
                status = "no_answer" if verdict["status"] in ("unparsed_answer", "gold_unparseable") else "wrong"
                result.update(reward=0.0, status=status, method=method)
            else:
                failed = verdict["status"] in ("timeout", "too_large", "crashed", "memory", "unparsed_answer")
                status = verdict["status"] if failed else "wrong"
                result.update(reward=self.format_bonus if result["source"] != "unanchored" else 0.0, status=status,
                              method=method)  # fmt: skip

    def score(self, completion: Any, answer: Any = None, **_: Any) -> dict[str, Any]:
        return self.score_batch([completion], [answer])[0]

    async def __call__(self, completions: list[Any], answer: list[Any] | None = None, **_: Any) -> list[float | None]:
        if answer is None:
            logger.error("math: the dataset has no 'answer' column; every reward is None")
            return [None] * len(completions)
        results = await asyncio.to_thread(self.score_batch, completions, answer)
        return [r["reward"] for r in results]
