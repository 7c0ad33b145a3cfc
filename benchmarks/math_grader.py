"""Accuracy, latency and throughput of the ``math`` reward against math-verify 0.9.0, on the same labelled cases.

    python benchmarks/math_grader.py [--cap 10] [--show-errors]

Cases: ``benchmarks/math_cases.py`` (category, completion, gold, equivalent?). Our grader runs in this process (its
symbolic work in its own killable workers, as in training). math-verify runs in a child process, item by item, with
its own signal-based timeouts; an item still running after ``--cap`` seconds is counted as a hang (no verdict) and
its process is killed and replaced. math-verify is given the whole completion (it extracts the answer itself) and the
gold as ``$...$`` after the same ``####``/boxed extraction ours does.

Prints, for both: accuracy, false positives, false negatives, undecided (hangs), p50/p99/max latency per item, and
simple items per second (2,000 GSM8K-style numeric items, each grader in one process); ours on the whole labelled set
in one batch (its symbolic work spread over its 2 workers), items per second, with and without the items that run to
their deadline.

Then Math-Verify's own test suite (``math_verify_suite.py``: every labelled row of the tests in its sdist), scored
three ways: math-verify as each test calls it (its match types, precision and strictness); ours with each row's
prediction as the completion, as written (free text, so with ``unanchored: true``); and ours with the prediction as
the stated final answer (``<answer>...</answer>`` where it has no box). Rows whose verdict depends on a setting the
``math`` reward does not have (a precision other than 6, ``strict: false``, ``allow_set_relation_comp``) are
counted apart.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from math_cases import SIMPLE, cases  # noqa: E402
from math_verify_suite import suite  # noqa: E402

from grpo_ext.rewards.math_answer import extract_gold  # noqa: E402
from grpo_ext.rewards.math_grader import MathGrader  # noqa: E402


def _math_verify_serve(conn) -> None:
    from math_verify import parse, verify

    while (request := conn.recv()) is not None:
        kind, items = request
        start = time.perf_counter()
        verdicts = []
        for completion, gold in items:
            try:
                verdicts.append(bool(verify(parse(f"${extract_gold(gold)}$"), parse(completion))))
            except Exception:  # noqa: BLE001 - an error is a "not equal" verdict, as a reward would give
                verdicts.append(False)
        conn.send((verdicts, time.perf_counter() - start))


class MathVerifyProcess:
    """math-verify in a child process that is killed when an item runs past ``cap`` seconds."""

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.ctx = mp.get_context("spawn")
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.process = self.ctx.Process(target=_math_verify_serve, args=(child,), daemon=True)
        self.process.start()
        self.conn.send(("warmup", [("$\\boxed{1}$", "1")]))
        self.conn.recv()

    def grade(self, items: list[tuple[str, str]], cap: float | None = None) -> tuple[list[bool] | None, float]:
        cap = cap or self.cap
        self.conn.send(("grade", items))
        if self.conn.poll(cap):
            return self.conn.recv()
        self.process.kill()
        self.process.join()
        self._start()
        return None, cap

    def close(self) -> None:
        self.conn.send(None)
        self.process.join(5)


def summarize(name: str, labels: list[bool], verdicts: list[bool | None], latencies: list[float]) -> dict:
    right = sum(v is not None and v == label for v, label in zip(verdicts, labels, strict=True))
    false_pos = sum(v is True and not label for v, label in zip(verdicts, labels, strict=True))
    false_neg = sum(v is False and label for v, label in zip(verdicts, labels, strict=True))
    hangs = sum(v is None for v in verdicts)
    ordered = sorted(latencies)
    return {
        "grader": name,
        "accuracy": right / len(labels),
        "correct": right,
        "false_pos": false_pos,
        "false_neg": false_neg,
        "hangs": hangs,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "max_ms": 1000 * ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cap", type=float, default=10.0, help="seconds before a math-verify item counts as a hang")
    parser.add_argument("--show-errors", action="store_true", help="list the cases each grader gets wrong")
    args = parser.parse_args()
    rows = cases()
    labels = [label for *_, label in rows]
    print(
        f"{len(rows)} labelled cases ({sum(labels)} equivalent, {len(rows) - sum(labels)} not), "
        f"{len({r[0] for r in rows})} categories"
    )

    ours = MathGrader()
    ours.score(r"\boxed{\sqrt{8}}", r"2\sqrt2")  # start the symbolic workers before timing (sympy decides this)
    our_verdicts, our_latencies = [], []
    for _, completion, gold, _ in rows:
        start = time.perf_counter()
        result = ours.score(completion, gold)
        our_latencies.append(time.perf_counter() - start)
        our_verdicts.append(result["reward"] == 1.0)

    theirs = MathVerifyProcess(args.cap)
    their_verdicts, their_latencies = [], []
    for _, completion, gold, _ in rows:
        verdicts, seconds = theirs.grade([(completion, gold)])
        their_verdicts.append(None if verdicts is None else verdicts[0])
        their_latencies.append(seconds)

    simple_completions, simple_golds = zip(*SIMPLE, strict=True)
    start = time.perf_counter()
    ours.score_batch(list(simple_completions), list(simple_golds))
    our_rate = len(SIMPLE) / (time.perf_counter() - start)
    _, seconds = theirs.grade(list(SIMPLE), cap=600)
    their_rate = len(SIMPLE) / seconds
    batch = MathGrader(workers=2)
    batch.score_batch([r[1] for r in rows], [r[2] for r in rows])  # both workers started and warm
    start = time.perf_counter()
    results = batch.score_batch([r[1] for r in rows], [r[2] for r in rows])
    mixed_rate = len(rows) / (time.perf_counter() - start)
    timely = [row for row, result in zip(rows, results, strict=True) if result["status"] != "timeout"]
    start = time.perf_counter()  # without the items that run to their deadline (each also restarts a worker)
    batch.score_batch([r[1] for r in timely], [r[2] for r in timely])
    timely_rate = len(timely) / (time.perf_counter() - start)
    batch.close()
    theirs.close()
    ours.close()

    table = [
        {**summarize("grpo_ext math", labels, our_verdicts, our_latencies), "simple_per_s": our_rate},
        {**summarize("math-verify 0.9.0", labels, their_verdicts, their_latencies), "simple_per_s": their_rate},
    ]
    print(
        f"{'grader':<18} {'accuracy':>9} {'correct':>8} {'false+':>7} {'false-':>7} {'hangs':>6} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>9} {'simple/s':>9}"
    )
    for r in table:
        print(
            f"{r['grader']:<18} {r['accuracy']:>9.1%} {r['correct']:>8} {r['false_pos']:>7} {r['false_neg']:>7} "
            f"{r['hangs']:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.1f} {r['max_ms']:>9.1f} {r['simple_per_s']:>9.0f}"
        )
    print(f"ours, the {len(rows)} labelled cases in one batch, 2 workers: {mixed_rate:.0f} items/s; without the "
          f"{len(rows) - len(timely)} that run to their deadline: {timely_rate:.0f} items/s")  # fmt: skip
    categories = sorted({r[0] for r in rows})
    print("\nright answers by category (ours / math-verify / cases):")
    for category in categories:
        idx = [i for i, r in enumerate(rows) if r[0] == category]
        mine = sum(our_verdicts[i] == labels[i] for i in idx)
        other = sum(their_verdicts[i] is not None and their_verdicts[i] == labels[i] for i in idx)
        print(f"  {category:<20} {mine:>3} / {other:>3} / {len(idx)}")
    if args.show_errors:
        for name, verdicts in (("grpo_ext math", our_verdicts), ("math-verify", their_verdicts)):
            print(f"\n{name} gets wrong:")
            for (category, completion, gold, label), verdict in zip(rows, verdicts, strict=True):
                if verdict != label:
                    print(
                        f"  [{category}] label={label} verdict={verdict} gold={gold[:60]!r} pred={completion[-70:]!r}"
                    )


def _math_verify_as_tested(row: dict) -> bool:
    """math-verify's verdict as the row's own test computes it."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    settings = row["settings"]
    targets = [LatexExtractionConfig(boxed_match_priority=0) if kind == "latex" else ExprExtractionConfig()
               for kind in settings.get("match_types", ["latex", "expr"])]  # fmt: skip
    try:
        if "match_types" not in settings:  # test_yujianll: parse and verify with their defaults
            return bool(verify(parse(row["gold"]), parse(row["pred"])))
        return bool(verify(parse(row["gold"], targets), parse(row["pred"], targets),
                           float_rounding=settings.get("precision", 6), strict=settings.get("strict", True),
                           allow_set_relation_comp=settings.get("allow_set_relation_comp", False)))  # fmt: skip
    except Exception:  # noqa: BLE001 - an error is a "not equal" verdict
        return False


def _stated(pred: str) -> str:
    return pred if any(mark in pred for mark in ("\\boxed", "\\fbox", "<answer>")) else f"<answer>{pred}</answer>"


def _settings_free(settings: dict) -> bool:
    """A row whose verdict needs no setting the math reward lacks."""
    return (
        settings.get("precision", 6) == 6
        and settings.get("strict", True)
        and "allow_set_relation_comp" not in settings
    )


def math_verify_suite() -> None:
    rows = suite()
    own = [r for r in rows if _settings_free(r["settings"])]
    labels = [r["expected"] for r in own]
    theirs = [_math_verify_as_tested(r) for r in own]
    free = MathGrader(unanchored=True)
    as_written = [r["reward"] == 1.0 for r in free.score_batch([r["pred"] for r in own], [r["gold"] for r in own])]
    free.close()
    anchored = MathGrader()
    stated = [r["reward"] == 1.0 for r in anchored.score_batch([_stated(r["pred"]) for r in own],
                                                               [r["gold"] for r in own])]  # fmt: skip
    anchored.close()
    print(f"\nMath-Verify 0.9.0's test suite: {len(rows)} labelled rows, {len(own)} whose verdict needs no setting "
          f"the math reward lacks ({sum(labels)} equal, {len(own) - sum(labels)} not)")  # fmt: skip
    for name, verdicts in (
        ("math-verify, as its tests call it", theirs),
        ("ours, predictions as written (unanchored: true)", as_written),
        ("ours, predictions as the stated answer", stated),
    ):
        right = sum(v == label for v, label in zip(verdicts, labels, strict=True))
        false_pos = sum(v and not label for v, label in zip(verdicts, labels, strict=True))
        print(f"  {name:<48} {right:>4} / {len(own)} right, {false_pos} false positives")


if __name__ == "__main__":
    main()
    math_verify_suite()
