"""Code datasets as they are published, each mapped once, at load, onto ``python_exec``'s columns: the problem
statement, ``tests``, ``entry_point``, a ``reference`` solution and a ``code_prefix`` (what the model's code
continues or sits under: HumanEval's prompt, with its imports and helpers).

| layout | columns it is told by | tests |
| --- | --- | --- |
| ``humaneval`` (HumanEval, KodCode) | ``prompt``, ``test``, ``entry_point`` | ``check(candidate)`` |
| ``mbpp`` | ``test_list`` | its assert statements, with ``test_setup_code`` and ``test_imports`` |
| ``apps`` | ``input_output`` | stdin/stdout, or calls of ``fn_name`` |
| ``codecontests`` | ``public_tests``, ``private_tests`` | stdin/stdout |
| ``open_r1`` (open-r1's verifiable-coding-problems) | ``verification_info`` | stdin/stdout or function calls |
| ``livecodebench`` | ``public_test_cases`` | stdin/stdout, or ``Solution().method`` calls |
| ``ours`` | ``tests`` | python_exec's own schema |

Values that the published data writes as JSON compare the ``python`` way (``5 == 5.0``), as the datasets' own
harnesses do; ``ours`` keeps each row's own ``compare``. A malformed row is named with its line.
"""

from __future__ import annotations

import ast
import json
from typing import Any

# layout -> the columns that tell it (all present)
SIGNATURES: dict[str, tuple[str, ...]] = {
    "humaneval": ("prompt", "test", "entry_point"),
    "mbpp": ("test_list",),
    "apps": ("input_output",),
    "codecontests": ("public_tests", "private_tests"),
    "open_r1": ("verification_info",),
    "livecodebench": ("public_test_cases",),
    "ours": ("tests",),
}
LAYOUTS = tuple(SIGNATURES)


def detect(columns: list[str], label: str) -> str:
    """The layout whose columns ``columns`` has; ``ValueError`` naming them when none or several match."""
    found = [layout for layout, needed in SIGNATURES.items() if set(needed) <= set(columns)]
    if len(found) == 1:
        return found[0]
    said = ", ".join(f"{layout} ({', '.join(SIGNATURES[layout])})" for layout in LAYOUTS)
    if not found:
        raise ValueError(f"{label}: its columns {columns} match no code layout; the layouts and their columns: {said}")
    raise ValueError(f"{label}: its columns {columns} match several layouts ({', '.join(found)}): set task.format")


def convert(layout: str, raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    """One row of ``layout`` as ``{"problem", "tests", "entry_point", "reference", "code_prefix"}``; ``columns``: the
    names of ``ours``'s columns (``prompt``, ``tests``, ``entry_point``, ``reference``). ``ValueError`` says what
    is wrong."""
    if layout not in SIGNATURES:
        raise ValueError(f"task.format must be one of {['auto', *LAYOUTS]}, got {layout!r}")
    return _CONVERTERS[layout](raw, columns)


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"column {key!r} must be a non-empty string")
    return value


def _json(value: Any, key: str) -> Any:
    """A column that holds JSON, as text or already parsed."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"column {key!r} is not JSON ({err.msg} at character {err.pos})") from err
    return value


def _ours(raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    reference = raw.get(columns["reference"]) if columns.get("reference") else None
    return {
        "problem": _text(raw, columns["prompt"]),
        "tests": _json(raw[columns["tests"]], columns["tests"]),
        "entry_point": raw.get(columns["entry_point"]) or "",
        "reference": reference or "",
        "code_prefix": "",
    }


def _humaneval(raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    stub = _text(raw, "prompt")
    return {
        "problem": f"Complete this Python function:\n```python\n{stub}```",
        "tests": [{"check": _text(raw, "test")}],
        "entry_point": _text(raw, "entry_point"),
        "reference": stub + (raw.get("canonical_solution") or ""),
        "code_prefix": stub,
    }


def _mbpp(raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    asserts = raw["test_list"]
    if not isinstance(asserts, list) or not asserts or not all(isinstance(a, str) for a in asserts):
        raise ValueError("column 'test_list' must be a non-empty list of assert statements")
    setup = "\n".join([*(raw.get("test_imports") or []), raw.get("test_setup_code") or ""]).strip()
    problem = raw.get("text") or raw.get("prompt")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("column 'text' (or 'prompt') must be a non-empty string")
    tests = [{"assert": a, **({"setup": setup} if setup else {})} for a in asserts]
    shown = "\n".join(asserts[:1])  # MBPP's own prompt shows a test, which also names the function
    return {
        "problem": f"{problem}\nYour code should pass this test:\n{shown}",
        "tests": tests,
        "entry_point": _called(asserts, raw.get("code") or ""),
        "reference": raw.get("code") or "",
        "code_prefix": "",
    }


def _called(asserts: list[str], code: str) -> str:
    """The function MBPP's asserts call: the first name called in the first assert that the reference defines (any
    name called, without a reference)."""
    defined = set()
    try:
        defined = {n.name for n in ast.walk(ast.parse(code)) if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    except SyntaxError:
        pass
    try:
        tree = ast.parse(asserts[0])
    except SyntaxError as err:
        raise ValueError(f"test_list[0] does not parse: {err}") from err
    called = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    for name in called:
        if name in defined or not defined:
            return name
    raise ValueError(f"cannot tell which function test_list[0] tests: it calls {called}, the code defines {defined}")


def _stdio(inputs: Any, outputs: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs) or not inputs:
        raise ValueError(f"{where}: inputs and outputs must be lists of the same, non-zero length")
    return [{"stdin": _lines(i), "stdout": _lines(o)} for i, o in zip(inputs, outputs, strict=True)]


def _lines(value: Any) -> str:
    return "\n".join(map(str, value)) if isinstance(value, list) else str(value)


def _apps(raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    io = _json(raw["input_output"], "input_output")
    if not isinstance(io, dict) or "inputs" not in io or "outputs" not in io:
        raise ValueError("column 'input_output' must hold {'inputs': [...], 'outputs': [...]}")
    solutions = _json(raw.get("solutions") or "[]", "solutions")
    problem = _text(raw, "question")
    starter = raw.get("starter_code") or ""
    if io.get("fn_name"):  # APPS wraps a function's return value in a one-element list
        outputs = [o[0] if isinstance(o, list) and len(o) == 1 else o for o in io["outputs"]]
        tests = _calls(io["inputs"], outputs, "input_output")
        entry = str(io["fn_name"])
        if "class Solution" in starter:
            entry = f"Solution.{entry}"
    else:
        tests, entry = _stdio(io["inputs"], io["outputs"], "input_output"), ""
    if starter:
        problem += f"\nStart from:\n```python\n{starter}\n```"
    return {"problem": problem, "tests": tests, "entry_point": entry,
            "reference": solutions[0] if solutions else "", "code_prefix": ""}  # fmt: skip


def _calls(inputs: Any, outputs: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs) or not inputs:
        raise ValueError(f"{where}: inputs and outputs must be lists of the same, non-zero length")
    tests = []
    for i, (args, expected) in enumerate(zip(inputs, outputs, strict=True)):
        if not isinstance(args, list):
            raise ValueError(f"{where}: inputs[{i}] must be the list of a call's arguments")
        tests.append({"args": args, "expected": expected, "compare": "python"})
    return tests


def _codecontests(raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    tests = []
    for key in ("public_tests", "private_tests"):
        block = _json(raw.get(key) or {}, key)
        if block and block.get("input"):
            tests += _stdio(block["input"], block["output"], key)
    if not tests:
        raise ValueError("public_tests and private_tests hold no test")
    solutions = raw.get("solutions") or {}
    python = [s for s, lang in zip(solutions.get("solution", []), solutions.get("language", []), strict=False)
              if lang in (3, "PYTHON3")]  # fmt: skip
    return {"problem": _text(raw, "description"), "tests": tests, "entry_point": "",
            "reference": python[0] if python else "", "code_prefix": ""}  # fmt: skip


def _open_r1(raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    info = _json(raw["verification_info"], "verification_info")
    cases = info.get("test_cases") if isinstance(info, dict) else None
    if not isinstance(cases, list) or not cases:
        raise ValueError("column 'verification_info' must hold a non-empty list test_cases")
    if isinstance(info, dict) and info.get("language", "python") != "python":
        raise ValueError(f"verification_info's language is {info['language']!r}; python_exec runs Python")
    kinds = {case.get("type") for case in cases}
    if kinds == {"stdin_stdout"}:
        tests, entry = [{"stdin": _lines(c["input"]), "stdout": _lines(c["output"])} for c in cases], ""
    elif kinds == {"function_call"}:
        names = {c.get("fn_name") for c in cases}
        if len(names) != 1 or not isinstance(next(iter(names)), str):
            raise ValueError("function_call test cases must all name one fn_name")
        entry = str(next(iter(names)))
        outputs = [c["output"][0] if isinstance(c["output"], list) and len(c["output"]) == 1 else c["output"]
                   for c in cases]  # fmt: skip
        tests = _calls([c["input"] for c in cases], outputs, "verification_info")
    else:
        raise ValueError(f"test_cases must be all stdin_stdout or all function_call, got {sorted(map(str, kinds))}")
    problem = raw.get("problem") or raw.get("prompt")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError("column 'problem' (or 'prompt') must be a non-empty string")
    return {"problem": problem, "tests": tests, "entry_point": entry,
            "reference": raw.get("gold_standard_solution") or "", "code_prefix": ""}  # fmt: skip


def _livecodebench(raw: dict[str, Any], columns: dict[str, str]) -> dict[str, Any]:
    cases = []
    for key in ("public_test_cases", "private_test_cases"):
        value = raw.get(key)
        if not value:
            continue
        try:
            cases += _json(value, key)
        except ValueError as err:  # the released private cases are compressed pickles: never unpickled here
            raise ValueError(f"{err}; LiveCodeBench's compressed private cases must be decoded to JSON first") from err
    testtypes = {case.get("testtype") for case in cases}
    starter = raw.get("starter_code") or ""
    if testtypes == {"stdin"}:
        tests, entry = [{"stdin": c["input"], "stdout": c["output"]} for c in cases], ""
    elif testtypes == {"functional"}:
        metadata = _json(raw.get("metadata") or "{}", "metadata")
        name = metadata.get("func_name") if isinstance(metadata, dict) else None
        if not isinstance(name, str):
            raise ValueError("functional tests need metadata.func_name")
        entry = f"Solution.{name}" if "class Solution" in starter else name
        tests = []
        for i, case in enumerate(cases):
            try:
                args = [json.loads(line) for line in case["input"].splitlines() if line.strip()]
                expected = json.loads(case["output"])
            except json.JSONDecodeError as err:
                raise ValueError(f"test case {i}: its input and output must be JSON, one argument a line") from err
            tests.append({"args": args, "expected": expected, "compare": "python"})
    else:
        raise ValueError(f"test cases must be all stdin or all functional, got {sorted(map(str, testtypes))}")
    problem = _text(raw, "question_content")
    if starter:
        problem += f"\nStart from:\n```python\n{starter}\n```"
    return {"problem": problem, "tests": tests, "entry_point": entry, "reference": "", "code_prefix": ""}


_CONVERTERS = {
    "ours": _ours,
    "humaneval": _humaneval,
    "mbpp": _mbpp,
    "apps": _apps,
    "codecontests": _codecontests,
    "open_r1": _open_r1,
    "livecodebench": _livecodebench,
}
