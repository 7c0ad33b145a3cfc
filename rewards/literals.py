"""Python values that JSON cannot carry, and assert-style tests, for ``python_exec``.

* ``read_literal``: Python literal text (tuples, sets, frozensets, dicts with any keys, bytes, complex, ``nan`` and
  ``inf``) read into values by walking its syntax tree; nothing is evaluated. The sandbox writes what a program
  returned this way (``_zygote._literal``), and rows may write their values this way.
* ``python_equal``: Python's ``==`` on such values, as the host holds them (never the program's objects), with an
  optional tolerance for numbers.
* ``lift_asserts``: assert statements whose verdict the host can decide itself (``assert candidate(ARGS) ==
  LITERAL``, ``abs(candidate(...) - LIT) < TOL``, ``math.isclose(...)``, a bare ``assert candidate(...)``), turned
  into checks of a returned value; the rest run inside the sandbox.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from typing import Any

MAX_LITERAL_CHARS = 1 << 20  # as much as a program may report (the sandbox's output cap)
_NAMES = {"nan": math.nan, "inf": math.inf, "True": True, "False": False, "None": None}


def read_literal(text: str) -> Any:
    """The value of Python literal ``text``; ``ValueError`` when it is not one (or is too long or deep)."""
    if not isinstance(text, str):
        raise ValueError(f"a Python literal is text, not {type(text).__name__}")
    if len(text) > MAX_LITERAL_CHARS:
        raise ValueError(f"a Python literal of {len(text)} characters is over {MAX_LITERAL_CHARS}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
        return _value(tree.body)
    except (SyntaxError, RecursionError, MemoryError, TypeError) as err:
        raise ValueError(f"not a Python literal: {text[:80]!r} ({type(err).__name__})") from err


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant) and not isinstance(node.value, type(...)):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMES:
        return _NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _value(node.operand)
        if isinstance(operand, (int, float, complex)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else +operand
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):  # 1+2j, as literal_eval reads it
        left, right = _value(node.left), _value(node.right)
        if isinstance(left, (int, float)) and not isinstance(left, bool) and isinstance(right, complex):
            return left + right if isinstance(node.op, ast.Add) else left - right
    if isinstance(node, ast.Tuple):
        return tuple(_value(item) for item in node.elts)
    if isinstance(node, ast.List):
        return [_value(item) for item in node.elts]
    if isinstance(node, ast.Set):
        return {_value(item) for item in node.elts}
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        args = [_value(arg) for arg in node.args]
        name = node.func.id
        if name in ("set", "frozenset", "tuple", "list") and len(args) <= 1:
            return {"set": set, "frozenset": frozenset, "tuple": tuple, "list": list}[name](*args)
        if name == "complex" and len(args) == 2 and all(isinstance(a, (int, float)) for a in args):
            return complex(*args)
        if name == "float" and len(args) == 1 and args[0] in ("nan", "inf", "-inf", "infinity", "-infinity"):
            return float(args[0])
    raise ValueError(f"not a literal: {ast.dump(node)[:80]}")


def is_literal(node: ast.AST) -> bool:
    try:
        _value(node)
    except (ValueError, TypeError, RecursionError):
        return False
    return True


def python_equal(expected: Any, actual: Any, tolerance: float | None = None) -> bool:
    """Python's ``expected == actual``; with a ``tolerance``, numbers (not bools) at any depth of lists, tuples and
    dict values compare within it (relative or absolute)."""
    if tolerance is None:
        try:
            return bool(expected == actual)
        except RecursionError:
            return False
    if _number(expected) and _number(actual):
        return math.isclose(actual, expected, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(expected, (list, tuple)) and type(expected) is type(actual):
        return len(expected) == len(actual) and all(
            python_equal(e, a, tolerance) for e, a in zip(expected, actual, strict=True)
        )
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(
            python_equal(expected[k], actual[k], tolerance) for k in expected
        )
    return python_equal(expected, actual)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Lifted:
    """One assert turned into a check of the value a call returns. ``check``: ``equal`` (Python's ``==``), ``is``
    (identity with True, False or None), ``truthy``/``falsy``, ``below`` (``abs(value - expected) < tolerance``,
    ``<=`` when ``inclusive``) or ``close`` (``math.isclose`` with ``rel_tol`` and ``abs_tol``)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    check: str = "equal"
    expected: Any = None
    tolerance: float = 0.0
    inclusive: bool = False
    rel_tol: float = 1e-9
    abs_tol: float = 0.0

    def passes(self, value: Any) -> bool:
        try:
            if self.check == "equal":
                return python_equal(self.expected, value)
            if self.check == "is":
                return value is self.expected
            if self.check in ("truthy", "falsy"):
                return bool(value) is (self.check == "truthy")
            if self.check == "below":
                gap = abs(value - self.expected)
                return bool(gap <= self.tolerance if self.inclusive else gap < self.tolerance)
            if self.check == "close":
                return math.isclose(value, self.expected, rel_tol=self.rel_tol, abs_tol=self.abs_tol)
        except (TypeError, ValueError, OverflowError, RecursionError):
            return False
        raise ValueError(f"unknown check {self.check!r}")


def _call(node: ast.AST, names: set[str]) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """The literal arguments of ``candidate(...)`` (or a call of one of ``names``), or None."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names):
        return None
    if any(isinstance(arg, ast.Starred) for arg in node.args) or any(kw.arg is None for kw in node.keywords):
        return None
    if not all(is_literal(arg) for arg in node.args) or not all(is_literal(kw.value) for kw in node.keywords):
        return None
    return tuple(_value(arg) for arg in node.args), {str(kw.arg): _value(kw.value) for kw in node.keywords}


def lift(statement: ast.stmt, names: set[str]) -> Lifted | None:
    """``statement`` as a host-decided check, or None when the sandbox must run it. ``names``: what the tests call
    the function (``candidate``, the entry point)."""
    if not isinstance(statement, ast.Assert):
        return None
    test = statement.test
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not) and (call := _call(test.operand, names)):
        return Lifted(*call, check="falsy")
    if call := _call(test, names):
        return Lifted(*call, check="truthy")
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if isinstance(op, (ast.Eq, ast.Is)):
            for called, other in ((left, right), (right, left)):
                if (call := _call(called, names)) and is_literal(other):
                    expected = _value(other)
                    if isinstance(op, ast.Is):
                        if expected is not True and expected is not False and expected is not None:
                            return None
                        return Lifted(*call, check="is", expected=expected)
                    return Lifted(*call, check="equal", expected=expected)
        if isinstance(op, (ast.Lt, ast.LtE)) and is_literal(right) and _number(tolerance := _value(right)):
            gap = _abs_difference(left, names)
            if gap is not None:
                return Lifted(*gap[0], check="below", expected=gap[1], tolerance=float(tolerance),
                              inclusive=isinstance(op, ast.LtE))  # fmt: skip
    if isinstance(test, ast.Call) and _is_isclose(test.func) and len(test.args) == 2:
        for called, other in ((test.args[0], test.args[1]), (test.args[1], test.args[0])):
            if (call := _call(called, names)) and is_literal(other) and _number(expected := _value(other)):
                tolerances = {kw.arg: kw.value for kw in test.keywords}
                if set(tolerances) - {"rel_tol", "abs_tol"} or not all(is_literal(v) for v in tolerances.values()):
                    return None
                rel, absolute = (_value(tolerances[k]) if k in tolerances else d
                                 for k, d in (("rel_tol", 1e-9), ("abs_tol", 0.0)))  # fmt: skip
                return Lifted(*call, check="close", expected=expected, rel_tol=rel, abs_tol=absolute)
    return None


def _abs_difference(node: ast.AST, names: set[str]) -> tuple[tuple[tuple[Any, ...], dict[str, Any]], Any] | None:
    """``abs(candidate(ARGS) - LIT)`` (either way round): the call and the literal."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "abs"):
        return None
    if len(node.args) != 1 or node.keywords or not isinstance(node.args[0], ast.BinOp):
        return None
    inner = node.args[0]
    if not isinstance(inner.op, ast.Sub):
        return None
    for called, other in ((inner.left, inner.right), (inner.right, inner.left)):
        if (call := _call(called, names)) and is_literal(other) and _number(_value(other)):
            return call, _value(other)
    return None


def _is_isclose(func: ast.AST) -> bool:
    return (isinstance(func, ast.Attribute) and func.attr == "isclose" and isinstance(func.value, ast.Name)
            and func.value.id == "math") or (isinstance(func, ast.Name) and func.id == "isclose")  # fmt: skip


def _trivial(statement: ast.stmt) -> bool:
    """A statement that decides nothing: a docstring or other bare constant, ``pass``, ``assert True``, an import."""
    if isinstance(statement, ast.Pass | ast.Import | ast.ImportFrom):
        return True
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant):
        return True
    return (
        isinstance(statement, ast.Assert) and isinstance(statement.test, ast.Constant) and statement.test.value is True
    )


def lift_check(source: str, entry_point: str) -> list[Lifted] | None:
    """HumanEval's ``check(candidate)``: its asserts as host-decided checks when every statement of its body is one
    (or decides nothing), else None (the sandbox runs the whole function). ``source`` may hold more than the
    function (HumanEval's ``METADATA``); anything at its top level other than a constant assignment, an import or
    the function keeps it in the sandbox."""
    tree = ast.parse(source)
    check = None
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef) and statement.name == "check":
            check = statement
        elif not (_trivial(statement) or (isinstance(statement, ast.Assign) and is_literal(statement.value))):
            return None
    if check is None or len(check.args.args) != 1 or check.decorator_list:
        return None
    names = {check.args.args[0].arg, entry_point}
    lifted = []
    for statement in check.body:
        if _trivial(statement):
            continue
        one = lift(statement, names)
        if one is None:
            return None
        lifted.append(one)
    return lifted or None


def lift_statement(source: str, entry_point: str) -> Lifted | None:
    """One MBPP-style assert statement (``assert f(1) == 2``) as a host-decided check, or None."""
    tree = ast.parse(source)
    if len(tree.body) != 1:
        return None
    return lift(tree.body[0], {entry_point, "candidate"})
