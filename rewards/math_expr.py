"""The structural comparison of two parsed answers (``math_parse``), and exact rational arithmetic (pure Python).

``match`` compares a gold tree with a predicted one, gold first, shape by shape, and leaves scalars to a function it is
given: the grader passes exact rational arithmetic (``exact_equal``, in-process, cannot hang), and its worker
processes pass sympy (``_math_worker``). Both return ``True``, ``False`` or ``None`` (undecided).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from grpo_ext.rewards.math_shapes import MIRROR, ORDER, Node, as_solution, is_assignment

EXACT_MAX_BITS = 4096  # exact arithmetic in-process stays below this size; bigger goes to a killable worker

Scalar = Callable[[Node, Node], "bool | None"]


def match(gold: Node, pred: Node, scalar: Scalar, equation: Scalar | None = None) -> bool | None:
    """Whether ``pred`` answers ``gold``: ``True``, ``False``, or ``None`` when ``scalar`` could not decide.

    ``x = 5`` answers ``5`` (and the reverse), ``f(x) = 2x`` answers ``y = 2x``; two equations compare as equations:
    by their sides, or by ``equation`` on their differences (the worker's: proportional, ``2x + 4y = 3`` is ``y =
    -x/2 + 3/4``). ``A \\approx 0.58`` answers ``A``, and a gold written as a decimal, ``0.58``; a gold ``A \\approx
    0.58`` is answered by ``A`` or by its decimal as written."""
    gold, pred = as_solution(gold, pred), as_solution(pred, gold)  # a=1, b=2 is (a, b) = (1, 2)
    if is_assignment(gold) and is_assignment(pred) and _function_labels(gold[2], pred[2]):
        gold, pred = gold[3], pred[3]
    if is_assignment(gold) and pred[0] != "rel":
        gold = gold[3]
    if is_assignment(pred) and gold[0] != "rel":
        pred = pred[3]
    again = functools.partial(match, scalar=scalar, equation=equation)
    if pred[0] == "rel" and pred[1] == "approx":
        decimal = gold[0] == "num" and "." in gold[1]
        return _any([again(gold, pred[2]), again(gold, pred[3]) if decimal else False])
    if gold[0] == "rel" and gold[1] == "approx":  # the same, the gold's way round
        decimal = pred[0] == "num" and "." in pred[1]
        return _any([again(gold[2], pred), again(gold[3], pred) if decimal else False])
    if _inequality(gold) != _inequality(pred) and {gold[0], pred[0]} & {"tuple", "union"}:
        return None  # an inequality against an interval: the worker solves the inequality first
    kind = gold[0]
    if kind in ("list", "set"):
        if pred[0] not in ("list", "set") or len(pred[1]) != len(gold[1]):
            return False
        return _match_unordered(gold[1], pred[1], again)
    if kind == "union" or (pred[0] == "union" and kind == "list" and _rays(gold[1])):  # x<2 or x>3 is a union
        if pred[0] == "union" or (pred[0] == "list" and _rays(pred[1])):
            return _match_unordered(gold[1], pred[1], again)
        return False
    if kind == "tuple":
        if pred[0] != "tuple" or pred[1:3] != gold[1:3] or len(pred[3]) != len(gold[3]):
            return False
        return _all(again(g, p) for g, p in zip(gold[3], pred[3], strict=True))
    if kind == "matrix":
        if pred[0] != "matrix" or [len(r) for r in pred[1]] != [len(r) for r in gold[1]]:
            return False
        return _all(again(g, p) for g, p in zip(_flat(gold[1]), _flat(pred[1]), strict=True))
    if kind == "rel":
        if pred[0] != "rel":
            return False
        same = pred[1] == gold[1] and _all([again(gold[2], pred[2]), again(gold[3], pred[3])])
        mirrored = pred[1] == MIRROR[gold[1]] and _all([again(gold[2], pred[3]), again(gold[3], pred[2])])
        verdict = _any([same, mirrored])
        if verdict is not True and gold[1] == pred[1] == "=":  # the same equation rearranged: equal differences
            gold_diff, pred_diff = ("sub", gold[2], gold[3]), ("sub", pred[2], pred[3])
            verdict = _any([verdict, scalar(gold_diff, pred_diff), scalar(gold_diff, ("neg", pred_diff))])
            if verdict is not True and equation is not None:
                verdict = _any([verdict, equation(gold_diff, pred_diff)])
        return verdict
    if kind == "text" or pred[0] == "text":
        return gold == pred
    if pred[0] in ("list", "set", "union", "tuple", "matrix", "rel"):
        return False
    if gold == pred:
        return True
    return _any(scalar(g, p) for g in _percent_readings(gold) for p in _percent_readings(pred))


def _rays(items: list[Node]) -> bool:
    """Intervals of which one at least is unbounded: what ``x < 2 or x > 3`` parses to."""
    infinite = {("const", "oo"), ("neg", ("const", "oo"))}
    return all(i[0] == "tuple" and len(i[3]) == 2 for i in items) and any(infinite & set(i[3]) for i in items)


def _inequality(node: Node) -> bool:
    return node[0] == "rel" and node[1] in ORDER


def _function_labels(gold: Node, pred: Node) -> bool:
    """``f(x)`` on one side, ``y`` or ``g(x)`` on the other: two names of one function."""

    def function(node: Node) -> bool:
        return node[0] == "mul" and node[1][0] == "sym" and node[2][0] == "sym"

    return (function(gold) or function(pred)) and all(function(n) or n == ("sym", "y") for n in (gold, pred))


def _percent_readings(node: Node) -> list[Node]:
    """``50%`` may stand for 50 or for 0.5."""
    if node[0] == "pct":
        return [node[1], ("div", node[1], ("num", "100"))]
    return [node]


def _flat(rows: list[list[Node]]) -> list[Node]:
    return [cell for row in rows for cell in row]


def _all(results: Any) -> bool | None:
    undecided = False
    for result in results:
        if result is False:
            return False
        undecided |= result is None
    return None if undecided else True


def _any(results: Any) -> bool | None:
    undecided = False
    for result in results:
        if result is True:
            return True
        undecided |= result is None
    return None if undecided else False


def _match_unordered(gold: list[Node], pred: list[Node], compare: Scalar) -> bool | None:
    """A one-to-one pairing of gold and predicted items: ``True`` if one exists on decided pairs, ``False`` if none
    exists even counting undecided pairs as equal, else ``None``."""
    if len(gold) != len(pred):
        return False
    table = [[compare(g, p) for p in pred] for g in gold]
    if _perfect_matching(table, lambda r: r is True):
        return True
    return None if _perfect_matching(table, lambda r: r is not False) else False


def _perfect_matching(table: list[list[bool | None]], ok: Callable[[Any], bool]) -> bool:
    owner: dict[int, int] = {}

    def place(g: int, seen: set[int]) -> bool:
        for p, result in enumerate(table[g]):
            if ok(result) and p not in seen:
                seen.add(p)
                if p not in owner or place(owner[p], seen):
                    owner[p] = g
                    return True
        return False

    return all(place(g, set()) for g in range(len(table)))


def exact_value(node: Node) -> Fraction | None:
    """The exact rational value of a tree of numbers and + - x / ^ !, or ``None`` (not rational, or too big to
    compute here quickly)."""
    kind = node[0]
    if kind == "num":
        text = node[1]
        mantissa, _, power = text.lower().partition("e")
        if len(mantissa) > 300 or (power and abs(int(power)) > 300):
            return None
        return Fraction(text)
    if kind == "neg":
        value = exact_value(node[1])
        return None if value is None else -value
    if kind in ("add", "sub", "mul", "div"):
        left, right = exact_value(node[1]), exact_value(node[2])
        if left is None or right is None:
            return None
        if kind == "div":
            return None if right == 0 else left / right
        result = left + right if kind == "add" else left - right if kind == "sub" else left * right
        return result if _small(result) else None
    if kind == "pow":
        base, exponent = exact_value(node[1]), exact_value(node[2])
        if base is None or exponent is None or exponent.denominator != 1 or (base == 0 and exponent < 0):
            return None
        bits = max(base.numerator.bit_length(), base.denominator.bit_length()) * abs(exponent.numerator)
        return base**exponent.numerator if bits <= EXACT_MAX_BITS else None
    if kind == "fact":
        value = exact_value(node[1])
        if value is None or value.denominator != 1 or not 0 <= value <= 300:
            return None
        return Fraction(math.factorial(value.numerator))
    return None


def _small(value: Fraction) -> bool:
    return max(value.numerator.bit_length(), value.denominator.bit_length()) <= EXACT_MAX_BITS


def exact_equal(gold: Node, pred: Node) -> bool | None:
    """Scalar comparison by exact rational arithmetic; ``None`` when either side is not a plain rational."""
    g, p = exact_value(gold), exact_value(pred)
    if g is None or p is None:
        return None
    return g == p
