"""Math-Verify's own test suite as labelled rows: (file, test, gold, prediction, expected verdict, settings).

    python benchmarks/math_verify_suite.py [--tests DIR] [--out rows.jsonl]

Reads the test files shipped in the ``math-verify`` 0.9.0 sdist (``test_all.py``, ``test_numina_cases.py``,
``test_open_thoughts.py``, ``test_yujianll.py``, ``test_boxed.py``, ``test_strict.py``; MIT licence, The HuggingFace
Team) from ``--tests`` (default: the sdist, fetched from the package index with pip into ``$GRPO_EXT_CACHE``) and turns
every row of their ``pytest.mark.parametrize`` tables whose names include ``gold`` and ``pred`` into a JSON line.
The tables are read from the syntax tree (``ast.literal_eval`` of each row), nothing in the files is run. The other
columns of a row (``precision``, ``strict``, ``allow_set_relation_comp``) and the test's own ``match_types`` are
kept as ``settings``: math-verify's verdict depends on them, the ``math`` reward has none of them.
"""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

FILES = ("test_all.py", "test_numina_cases.py", "test_open_thoughts.py", "test_yujianll.py", "test_boxed.py",
         "test_strict.py")  # fmt: skip
SDIST = "math-verify==0.9.0"
SKIPPED: list[str] = []  # rows left out, each with the reason


def _match_types(function: ast.FunctionDef) -> list[str] | None:
    """The ``match_types`` a test passes to its comparison, when it passes a literal one."""
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "match_types":
                    return ast.literal_eval(keyword.value)
    return None


def rows_of(path: Path) -> list[dict]:
    tree = ast.parse(path.read_text())
    rows = []
    for function in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for decorator in function.decorator_list:
            if not (isinstance(decorator, ast.Call) and getattr(decorator.func, "attr", "") == "parametrize"):
                continue
            names = [name.strip() for name in ast.literal_eval(decorator.args[0]).split(",")]
            if "gold" not in names or "pred" not in names:
                continue
            verdict = "expected" if "expected" in names else "result"
            for element in decorator.args[1].elts:
                try:
                    values = dict(zip(names, ast.literal_eval(element), strict=True))
                except ValueError:  # a row computed by the test (an f-string of math.sqrt): not a labelled string
                    SKIPPED.append(f"{path.name}:{element.lineno} {function.name}: computed, not literal")
                    continue
                settings = {k: v for k, v in values.items() if k not in ("gold", "pred", verdict)}
                if (types := _match_types(function)) is not None:
                    settings["match_types"] = types
                rows.append({"file": path.name, "test": function.name, "gold": values["gold"], "pred": values["pred"],
                             "expected": bool(values[verdict]), "settings": settings})  # fmt: skip
    return rows


def sdist_tests() -> Path:
    """The tests directory of the math-verify sdist: downloaded once (pip, from the package index) and unpacked
    under ``$GRPO_EXT_CACHE`` (default ``~/.cache/grpo_ext``)."""
    import os
    import subprocess
    import sys
    import tarfile

    cache = Path(os.environ.get("GRPO_EXT_CACHE", Path.home() / ".cache" / "grpo_ext")) / "math_verify_sdist"
    found = sorted(cache.glob("math_verify-*/tests"))
    if found:
        return found[-1]
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", SDIST, "--no-binary", ":all:", "--no-deps", "-q",
                    "-d", str(cache)], check=True)  # fmt: skip
    archive = next(cache.glob("math_verify-*.tar.gz"))
    with tarfile.open(archive) as tar:
        wanted = [m for m in tar.getmembers() if "/tests/" in m.name or m.name.endswith("LICENCE")]
        tar.extractall(cache, members=wanted, filter="data")
    return next(cache.glob("math_verify-*/tests"))


def suite(tests: Path | None = None) -> list[dict]:
    tests = tests or sdist_tests()
    return [row for name in FILES for row in rows_of(tests / name)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=Path, default=None, help="the sdist's tests directory (default: fetched)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = suite(args.tests)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if args.out:
        args.out.write_text(text)
    else:
        print(text, end="")
    for skipped in SKIPPED:
        print(f"skipped {skipped}", file=__import__("sys").stderr)


if __name__ == "__main__":
    main()
