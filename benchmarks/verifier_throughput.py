"""How fast does ``python_exec`` judge programs, with full isolation, beside a naive verifier in the same run?

  python benchmarks/verifier_throughput.py [--programs 2000] [--baseline-programs 400] [--workers N]

Programs: short correct programs, the reference solutions of the ``fizzbuzz`` task family's short kinds (FizzBuzz
variants, brackets, digit sums, vowels, word reversal, palindromes, Caesar shifts, running maxima), each with 5
function tests; ``--all-kinds`` adds the heavier ones (n-th prime, Roman numerals, ...). Ours: ``PythonExec`` with
its defaults (bubblewrap sandbox, a fresh forked process per program, one worker per core). Baseline: for each
program a fresh ``python -I -S`` subprocess with no isolation that runs the tests and prints the results, the parent
comparing them; as many in parallel as ours has workers. Prints programs per second for both and their ratio.
Nothing is asserted: the figures go to the README.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from grpo_ext.rewards.python_exec import PythonExec, extract_code, strict_equal
from grpo_ext.tasks.fizzbuzz import FizzBuzzConfig, build

SHORT_KINDS = [
    "fizzbuzz",
    "balanced",
    "digit_sum",
    "count_vowels",
    "reverse_words",
    "palindrome",
    "caesar",
    "running_max",
]
HARNESS = """
import json, sys
namespace = {{}}
exec(compile({code!r}, "<solution>", "exec"), namespace)
function = namespace[{entry_point!r}]
out = []
for args in {calls!r}:
    try:
        out.append({{"value": function(*args)}})
    except Exception as exc:
        out.append({{"error": type(exc).__name__}})
print(json.dumps(out))
"""


def naive_one(completion: str, tests: str, entry_point: str) -> float:
    tests = json.loads(tests)
    script = HARNESS.format(code=extract_code(completion), entry_point=entry_point, calls=[t["args"] for t in tests])
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, timeout=10)
    results = json.loads(done.stdout)
    passed = sum("value" in r and strict_equal(t["expected"], r["value"]) for t, r in zip(tests, results, strict=True))
    return 1.0 if passed == len(tests) else 0.5 * passed / len(tests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--programs", type=int, default=2000)
    parser.add_argument("--baseline-programs", type=int, default=400)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--all-kinds", action="store_true", help="every problem kind, not only the short ones")
    args = parser.parse_args()

    kinds = [] if args.all_kinds else SHORT_KINDS
    cfg = FizzBuzzConfig(name="fizzbuzz", train_size=args.programs, eval_size=1, tests_per_problem=5, kinds=kinds)
    problems = build(cfg).train
    completions, tests, entry_points = problems["reference"], problems["tests"], problems["entry_point"]
    distinct = len(set(completions))
    print(f"{len(completions)} programs ({distinct} distinct sources), 5 function tests each, {args.workers} workers, "
          f"{os.cpu_count()} cores")  # fmt: skip

    verifier = PythonExec(workers=args.workers)
    verifier.score_batch(completions[:50], tests[:50], entry_points[:50])  # start the workers
    start = time.perf_counter()
    results = verifier.score_batch(completions, tests, entry_points)
    ours = len(completions) / (time.perf_counter() - start)
    verifier.close()
    assert all(r["reward"] == 1.0 for r in results), "every reference solution should pass"

    n = min(args.baseline_programs, len(completions))
    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        naive = list(pool.map(naive_one, completions[:n], tests[:n], entry_points[:n]))
    baseline = n / (time.perf_counter() - start)
    assert all(r == 1.0 for r in naive)

    print(f"python_exec (bubblewrap, fork per program): {ours:8.0f} programs/s")
    print(f"naive (fresh python -I -S per program, no isolation; {n} programs): {baseline:8.0f} programs/s")
    print(f"ratio: {ours / baseline:.1f}x")


if __name__ == "__main__":
    main()
