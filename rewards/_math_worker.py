"""Worker process of the ``math`` grader: symbolic comparison with sympy, one request at a time.

Started by ``math_grader.SymbolicPool`` as ``python -m grpo_ext.rewards._math_worker MEMORY_MB``. It caps its own
address space, imports sympy, writes ``{"ready": true}``, then answers each JSON line (``answer``: our normalised
answers, and the raw texts for math-verify) with ``{"equal": bool, "status": str}``: only JSON strings and booleans
leave this process. math-verify runs here too, never in the trainer's process, with its signal timers off. The
parent kills it when an answer runs past its deadline, so nothing here needs a timer. Before sympy evaluates a power,
factorial or binomial, its size is estimated and anything too big to compute quickly raises ``TooLarge`` instead.
"""

from __future__ import annotations

import json
import random
import resource
import sys
from typing import Any

import sympy
from sympy import S

from grpo_ext.rewards.math_expr import exact_value, match
from grpo_ext.rewards.math_parse import ParseError, parse
from grpo_ext.rewards.math_shapes import ORDER, Node

MAX_DIGITS = 2000  # longest number literal turned into a sympy number
MAX_BITS = 400_000  # largest exact power or factorial computed (about 120,000 digits)
MAX_EXPONENT = 10_000  # largest exponent of an irrational base
DIGITS = 50  # precision of numeric comparisons
RELATIVE = sympy.Float(10) ** -40  # two values closer than this, relative to their size, are equal
POINTS = 4  # random points at which expressions with variables must agree
MAX_DEGREE = 12  # highest power of a variable in an equation compared by proportion or an inequality solved

_FUNCTIONS = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot, "sec": sympy.sec, "csc": sympy.csc,
    "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan, "sinh": sympy.sinh, "cosh": sympy.cosh,
    "tanh": sympy.tanh, "ln": sympy.log, "exp": sympy.exp,
}  # fmt: skip
_SYMBOLS = {"e": S.Exp1, "i": S.ImaginaryUnit}


class TooLarge(ValueError):
    """The value would take too long to compute (huge powers, factorials, literals)."""


def to_sympy(node: Node) -> Any:
    kind = node[0]
    if kind == "num":
        mantissa, _, power = node[1].lower().partition("e")
        if len(mantissa) > MAX_DIGITS or (power and abs(int(power)) > MAX_DIGITS):
            raise TooLarge(f"a number with more than {MAX_DIGITS} digits")
        return sympy.Rational(node[1])
    if kind == "sym":
        return _SYMBOLS.get(node[1]) or sympy.Symbol(node[1])
    if kind == "value":  # a sympy value computed here (an end of a solved inequality)
        return node[1]
    if kind == "const":
        return S.Pi if node[1] == "pi" else S.Infinity
    if kind == "neg":
        return -to_sympy(node[1])
    if kind in ("add", "sub", "mul", "div"):
        left, right = to_sympy(node[1]), to_sympy(node[2])
        return {"add": left + right, "sub": left - right, "mul": left * right}[kind] if kind != "div" else left / right
    if kind == "pow":
        return _power(to_sympy(node[1]), to_sympy(node[2]))
    if kind == "pct":
        return to_sympy(node[1]) / 100
    if kind == "fact":
        value = to_sympy(node[1])
        _check_integer_size(value, "factorial")
        return sympy.factorial(value)
    if kind == "binom":
        top, bottom = to_sympy(node[1]), to_sympy(node[2])
        _check_integer_size(top, "binomial")
        return sympy.binomial(top, bottom)
    if kind == "sqrt":
        value = to_sympy(node[1])
        return sympy.sqrt(value) if node[2] is None else sympy.root(value, to_sympy(node[2]))
    if kind == "abs":
        return sympy.Abs(to_sympy(node[1]))
    if kind == "func":
        return _function(node[1], to_sympy(node[2]), None if node[3] is None else to_sympy(node[3]))
    raise ParseError(f"{kind} is not a scalar")


def _function(name: str, arg: Any, base: Any) -> Any:
    if name in ("log", "lg"):
        if base is None and name == "lg":
            base = sympy.Integer(10)
        return sympy.log(arg) if base is None else sympy.log(arg, base)
    return _FUNCTIONS[name](arg)


def _power(base: Any, exponent: Any) -> Any:
    if exponent.is_Number and base.is_number and abs(exponent) > 64:
        if base.is_Rational and exponent.is_Rational:
            bits = max(int(base.p).bit_length(), int(base.q).bit_length()) * abs(int(exponent.p))
            if bits > MAX_BITS and base not in (0, 1, -1):
                raise TooLarge("a power with more than about 120,000 digits")
        elif abs(exponent) > MAX_EXPONENT:
            raise TooLarge(f"an exponent above {MAX_EXPONENT}")
    elif exponent.is_number and not exponent.is_Number and base.is_number and base not in (0, 1, -1):
        magnitude = sympy.Abs(exponent).evalf(15)
        if magnitude.is_Number and magnitude > MAX_EXPONENT:
            raise TooLarge(f"an exponent above {MAX_EXPONENT}")
    return base**exponent


def _check_integer_size(value: Any, what: str) -> None:
    if value.is_Integer and abs(value) * max(1, int(abs(value)).bit_length()) > MAX_BITS:
        raise TooLarge(f"a {what} of {value}")


def sympy_equal(gold: Node, pred: Node) -> bool:
    """Equality of two scalars: exact for rationals, to ``DIGITS`` digits for constants, at ``POINTS`` random points
    for expressions with variables."""
    a, b = to_sympy(gold), to_sympy(pred)
    if any(v.has(S.NaN, S.ComplexInfinity) for v in (a, b)):
        return False  # undefined (a ratio or quotient with a zero second term, 0/0): equal to nothing, itself included
    if a == b:
        return True
    if a.is_Rational and b.is_Rational:
        return False
    if a.has(S.Infinity, S.NegativeInfinity) or b.has(S.Infinity, S.NegativeInfinity):
        return sympy.simplify(a - b) == 0
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    if not symbols:
        return _close(a, b, {}) is True
    rng = random.Random(0)
    agreed = 0
    for attempt in range(4 * POINTS):  # points where either side is undefined are skipped
        # all negative, all positive, then mixed signs: sqrt(x^2) is not x, |x| is not x
        signs = [-1 if attempt == 0 else 1 if attempt == 1 else rng.choice((-1, 1)) for _ in symbols]
        values = [sympy.Rational(sign * rng.randint(11, 97), rng.randint(3, 17)) for sign in signs]
        point = dict(zip(symbols, values, strict=True))
        verdict = _close(a, b, point)
        if verdict is False:
            return False
        agreed += verdict is True
        if agreed == POINTS:
            return True
    return False


def _close(a: Any, b: Any, point: dict[Any, Any]) -> bool | None:
    """Whether ``a`` and ``b`` agree at ``point``: exactly where both come out rational there (a relative tolerance
    would call ``(x+1)^{100000}`` and ``(x+1)^{100000}+1`` equal), else numerically; ``None`` where either is
    undefined there."""
    if point:
        a, b = a.subs(point), b.subs(point)
        if a.is_Rational and b.is_Rational:
            return bool(a == b)
    va, vb = a.evalf(DIGITS), b.evalf(DIGITS)
    if not (va.is_number and vb.is_number) or any(v.has(S.NaN, S.ComplexInfinity, S.Infinity) for v in (va, vb)):
        return None
    scale = max(abs(va), abs(vb))
    if scale == 0:
        return True
    return bool(abs(va - vb) <= scale * RELATIVE)


def proportional(gold_diff: Node, pred_diff: Node) -> bool | None:
    """Whether two equations ``gold_diff = 0`` and ``pred_diff = 0`` are one equation scaled (``2x + 4y - 3 = 0`` and
    ``y = -x/2 + 3/4``): their differences' ratio is a nonzero constant."""
    a, b = to_sympy(gold_diff), to_sympy(pred_diff)
    if not (a.free_symbols | b.free_symbols) or b == 0 or not (_low_degree(a) and _low_degree(b)):
        return None
    ratio = sympy.cancel(a / b)
    return bool(ratio.is_number and ratio.is_finite and ratio != 0)


def _low_degree(expr: Any) -> bool:
    """No power of a variable above ``MAX_DEGREE``: what may be expanded, cancelled or solved within a deadline."""
    return all(
        not power.base.free_symbols or (power.exp.is_Number and abs(power.exp) <= MAX_DEGREE)
        for power in expr.atoms(sympy.Pow)
    )


_RELATIONS = {"<": sympy.Lt, "<=": sympy.Le, ">": sympy.Gt, ">=": sympy.Ge}


def solved(node: Node) -> Node:
    """An inequality in one variable as the interval (or union of intervals) of its solutions, in our tree's form
    (``-x > -1`` is ``(-oo, 1)``); anything else as it is."""
    if node[0] in ("list", "set"):
        return (node[0], [solved(item) for item in node[1]])
    if node[0] != "rel" or node[1] not in ORDER:
        return node
    left, right = to_sympy(node[2]), to_sympy(node[3])
    relation = _RELATIONS[node[1]](left, right)
    symbols = relation.free_symbols
    if len(symbols) != 1 or not (_low_degree(left) and _low_degree(right)):
        return node
    solutions = sympy.solveset(relation, symbols.pop(), sympy.S.Reals)
    intervals = solutions.args if isinstance(solutions, sympy.Union) else (solutions,)
    if not all(isinstance(i, sympy.Interval) for i in intervals):
        return node
    parts = [
        ("tuple", "(" if i.left_open else "[", ")" if i.right_open else "]", [("value", i.start), ("value", i.end)])
        for i in intervals
    ]
    return parts[0] if len(parts) == 1 else ("union", parts)


def compare(gold: str, pred: str) -> dict[str, Any]:
    """Our parsed answers compared with sympy. ``final``: the verdict stands, because both sides were numbers
    (computed to ``DIGITS`` digits) or a variable is raised past ``MAX_DEGREE`` (math-verify expands such powers until
    the deadline kills it); elsewhere (variables, relations) a "not equal" may be ours failing to see it."""
    try:
        gold_tree, pred_tree = solved(parse(gold)), solved(parse(pred))
        verdict = match(gold_tree, pred_tree, sympy_equal, proportional)
    except TooLarge:
        return {"equal": False, "status": "too_large", "final": True}
    except ParseError:
        return {"equal": False, "status": "unparsed_answer", "final": False}
    except MemoryError:
        return {"equal": False, "status": "memory", "final": True}
    except Exception as err:  # sympy raises many types on odd input; the answer is then not shown equal
        return {"equal": False, "status": f"sympy_error: {type(err).__name__}", "final": False}
    final = (_numeric(gold_tree) and _numeric(pred_tree)) or _high_power(gold_tree) or _high_power(pred_tree)
    return {"equal": verdict is True, "status": "symbolic", "final": final}


def _high_power(node: Node) -> bool:
    """A variable raised to a number past ``MAX_DEGREE`` anywhere in the tree: ``(x+1)^{5000}``."""
    if node[0] == "pow" and not _numeric(node[1]):
        exponent = exact_value(node[2])
        if exponent is not None and abs(exponent) > MAX_DEGREE:
            return True
    return any(_high_power(child) for child in _children(node))


def _children(node: Node) -> list[Node]:
    """The subtrees of a node: its tuple fields, and the items of its list fields (list items, matrix rows)."""
    found: list[Node] = []
    for field in node[1:]:
        if isinstance(field, tuple):
            found.append(field)
        elif isinstance(field, list):
            found += [
                c for item in field for c in (item if isinstance(item, list) else [item]) if isinstance(c, tuple)
            ]
    return found


def _numeric(node: Node) -> bool:
    """A tree of numbers and constants only: no variable, relation or set."""
    if node[0] == "sym":
        return node[1] in _SYMBOLS
    if node[0] in ("num", "const"):
        return True
    children = [child for child in node[1:] if isinstance(child, tuple)]
    return node[0] in _SCALAR_KINDS and all(_numeric(child) for child in children)


_SCALAR_KINDS = {"neg", "add", "sub", "mul", "div", "pow", "pct", "fact", "binom", "sqrt", "abs", "func"}
_MATH_VERIFY: dict[str, Any] = {}
_WARM_UP = [("y = 2x - 1", "y = 1 + 2x"), ("x < 1", "-x > -1"), (r"\sqrt{2}", r"\frac{2}{\sqrt2}")]


def _math_verify() -> Any:
    """math-verify, imported once (latex2sympy2 and its ANTLR parser take a second), at the worker's start."""
    if not _MATH_VERIFY:
        import math_verify  # noqa: PLC0415

        _MATH_VERIFY["module"] = math_verify
    return _MATH_VERIFY["module"]


def math_verify_compare(gold: str, pred: str, percent: bool = False) -> dict[str, Any]:
    """math-verify's verdict on the texts (its own extraction and normalisation), its timers off: the parent's
    deadline kills this process instead. An "equal" between numbers is confirmed to ``DIGITS`` digits (math-verify
    rounds, and calls 1/2006! equal to 1/2004!), and a list never equals one of its items."""
    mv = _math_verify()
    try:
        gold_parsed = mv.parse(gold, parsing_timeout=None)
        if all(isinstance(item, str) for item in gold_parsed):  # nothing, or only its text back: not read as math
            return {"equal": False, "status": "gold_unparseable"}
        pred_parsed = mv.parse(pred, parsing_timeout=None)
        if not pred_parsed:
            return {"equal": False, "status": "unparsed_answer"}
        if not mv.verify(gold_parsed, pred_parsed, timeout_seconds=None):
            return {"equal": False, "status": "math_verify"}
        if not _confirmed(gold_parsed[0], pred_parsed[0], percent):
            return {"equal": False, "status": "near_miss"}
    except MemoryError:
        return {"equal": False, "status": "memory"}
    except Exception as err:  # the library raises many types on odd input; the answer is then not shown equal
        return {"equal": False, "status": f"math_verify_error: {type(err).__name__}"}
    return {"equal": True, "status": "math_verify"}


def _items(value: Any) -> list[Any] | None:
    """The elements of a tuple, list or finite set math-verify parsed; None for anything else."""
    if isinstance(value, (sympy.Tuple, tuple, list)):
        return list(value)
    if isinstance(value, sympy.FiniteSet):
        return sorted(value.args, key=sympy.default_sort_key)
    return None


def _confirmed(gold: Any, pred: Any, percent: bool = False) -> bool:
    """math-verify's "equal", checked where it rounds or collapses: numbers to ``DIGITS`` digits (a hundredfold apart
    too, where either side speaks of percent), tuples and sets of numbers item by item, and never a list of several
    items against one."""
    gold_items, pred_items = _items(gold), _items(pred)
    if gold_items is not None or pred_items is not None:
        if gold_items is None or pred_items is None:
            return len(gold_items or pred_items or []) <= 1
        if len(gold_items) != len(pred_items):
            return False
        return all(_confirmed(g, p, percent) for g, p in zip(gold_items, pred_items, strict=True))
    if isinstance(gold, sympy.Basic) and isinstance(pred, sympy.Basic) and gold.is_number and pred.is_number:
        if any(v.has(S.NaN, S.ComplexInfinity) for v in (gold, pred)):
            return False
        readings = [(gold, pred), (gold * 100, pred), (gold, pred * 100)] if percent else [(gold, pred)]
        return any(a == b or _close(a, b, {}) is True for a, b in readings)
    return True


def main() -> None:
    memory = int(sys.argv[1]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    sys.setrecursionlimit(5000)
    _math_verify()  # before "ready": its import takes longer than a deadline
    for gold, pred in _WARM_UP:  # sympy imports its solvers and polynomial code on first use: a few hundred ms
        answer({"engine": "ours", "gold": gold, "pred": pred, "gold_raw": f"${gold}$", "pred_raw": f"${pred}$"})
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        out.write(json.dumps(answer(request)) + "\n")
        out.flush()


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """One request: ``engine`` ``ours`` (our parsed answers with sympy, then math-verify on the raw texts where a
    "not equal" is not final) or ``math_verify`` (the raw texts only: ours could not read one side)."""
    if request.get("engine") == "math_verify":
        return math_verify_compare(request["gold_raw"], request["pred_raw"], request.get("percent", False))
    verdict = compare(request["gold"], request["pred"])
    final = verdict.pop("final")  # numbers, to DIGITS digits, and powers math-verify would expand: the verdict stands
    if verdict["equal"] or final or "gold_raw" not in request:
        return verdict
    second = math_verify_compare(request["gold_raw"], request["pred_raw"], request.get("percent", False))
    return second if second["equal"] else verdict


if __name__ == "__main__":
    main()
