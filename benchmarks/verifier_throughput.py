"""How fast does ``python_exec`` judge programs, with full isolation, beside a naive verifier in the same run?

  python benchmarks/verifier_throughput.py [--programs 2000] [--baseline-programs 400] [--workers N] [--rounds 2]
      [--samples 20]

Programs: short correct programs, the reference solutions of the ``fizzbuzz`` task family's short kinds (FizzBuzz
variants, brackets, digit sums, vowels, word reversal, palindromes, Caesar shifts, running maxima), each with 5
function tests; ``--all-kinds`` adds the heavier ones (n-th prime, Roman numerals, ...). Ours: ``PythonExec`` with
its defaults (bubblewrap sandbox, a fresh forked process per program, one worker per core). Baseline: for each
program a fresh ``python -I -S`` subprocess with no isolation that runs the tests and prints the results, the parent
comparing them; as many in parallel as ours has workers. Prints programs per second for both and their ratio.

Then the standard library preloaded by the workers (``python_exec``'s ``preload``): the same programs as they are and
with ``from typing import List, Dict`` and ``import collections`` at their top, each judged by workers that preload
the default modules and by workers that preload nothing, in alternation over ``--rounds`` rounds (programs per
second, the best round of each); and what each module costs: the milliseconds a program spends importing it when no
worker preloaded it (the median of 20 programs, each timing its own import), and the resident memory a worker's
child holds with it preloaded, against a worker that preloads nothing. Nothing is asserted: the figures go to the docs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from grpo_ext.rewards.python_exec import PRELOAD, PythonExec, extract_code, strict_equal
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
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the preload comparison")
    parser.add_argument("--samples", type=int, default=20, help="programs timing each module's import")
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
    preloading(completions, tests, entry_points, args.workers, args.rounds)
    module_costs(args.samples)


def preloading(completions: list[str], tests: list[str], entry_points: list[str], workers: int, rounds: int) -> None:
    """Programs per second with and without the preloaded standard library, for programs that import nothing and
    for the same programs importing typing and collections."""
    typed = [
        f"```python\nfrom typing import List, Dict\nimport collections\n{extract_code(c)}```" for c in completions
    ]
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for preload in ((), PRELOAD):
            verifier = PythonExec(workers=workers, preload=preload)
            verifier.score_batch(completions[:50], tests[:50], entry_points[:50])  # start the workers
            for name, programs in (("import nothing", completions), ("import typing, collections", typed)):
                start = time.perf_counter()
                results = verifier.score_batch(programs, tests, entry_points)
                rate = len(programs) / (time.perf_counter() - start)
                assert all(r["reward"] == 1.0 for r in results), "every reference solution should pass"
                key = (name, "default preload" if preload else "no preload")
                best[key] = max(best.get(key, 0.0), rate)
            verifier.close()
    print(f"preloaded standard library ({', '.join(PRELOAD)}), best of {rounds} rounds:")
    for name in ("import nothing", "import typing, collections"):
        off, on = best[(name, "no preload")], best[(name, "default preload")]
        print(f"  programs that {name}: {off:6.0f}/s without, {on:6.0f}/s with ({on / off:.2f}x)")


def _run_alone(verifier: PythonExec, code: str) -> str:
    job = {"code": code, "mode": "stdio", "entry_point": "", "calls": [], "runs": [{"stdin": ""}]}
    return verifier._execute([[job]])[0]["jobs"][0]["runs"][0]["stdout"].strip()


RSS = "print(next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmRSS')))"


def module_costs(samples: int = 20) -> None:
    """Each preloaded module: its import time inside a program of a worker that preloads nothing (what is not
    imported already), and the memory a worker's child holds with that module alone preloaded."""
    import statistics

    bare = PythonExec(workers=1, preload=())
    base = int(_run_alone(bare, RSS))
    print(f"each module: import time in a program without preload (median of {samples}), and a worker's child's "
          f"resident memory with it alone preloaded (nothing preloaded: {base / 1024:.1f} MiB)")  # fmt: skip
    for name in PRELOAD:
        timing = f"import time\nt = time.perf_counter()\nimport {name}\nprint(time.perf_counter() - t)"
        ms = statistics.median(1e3 * float(_run_alone(bare, timing)) for _ in range(samples))
        alone = PythonExec(workers=1, preload=(name,))
        extra = int(_run_alone(alone, RSS)) - base
        alone.close()
        print(f"  {name:<12} {ms:6.2f} ms   +{extra / 1024:.2f} MiB")
    every = PythonExec(workers=1)
    print(f"  all of them together: +{(int(_run_alone(every, RSS)) - base) / 1024:.2f} MiB")
    every.close()
    bare.close()


if __name__ == "__main__":
    main()
