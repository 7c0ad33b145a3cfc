"""What a parsed answer means, beyond its syntax: ``x = 5`` answers ``5``, ``x > 3`` is the interval ``(3, oo)``,
``a < x <= b`` is ``(a, b]``, ``1 \\pm \\sqrt2`` is two answers, ``p=5, q=2`` is the solution ``(5, 2)``.

``math_parse`` builds its trees with these; ``math_expr`` compares them. Trees are tuples (see ``math_parse``).
"""

from __future__ import annotations

Node = tuple
MIRROR = {"=": "=", "!=": "!=", "<": ">", ">": "<", "<=": ">=", ">=": "<=", "in": "in", "approx": "approx"}
ORDER = {"<", "<=", ">", ">="}
# x < a is the interval (-oo, a): the brackets, and which end the bound is, by the operator with x on the left
_RAYS = {"<": ("(", ")", "high"), "<=": ("(", "]", "high"), ">": ("(", ")", "low"), ">=": ("[", ")", "low")}


def strip_assignment(node: Node) -> Node:
    """``x = 5`` answers ``5`` and ``x \\in [1, 2]`` answers ``[1, 2]`` (the right side of a lone variable's
    equation); ``x > 3`` is the interval ``(3, oo)``."""
    if node[0] != "rel":
        return node
    op, left, right = node[1:]
    if left[0] != "sym" and right[0] == "sym" and op in _RAYS:
        op, left, right = MIRROR[op], right, left
    if left[0] != "sym":
        return node
    if op == "in":
        return right
    if op in _RAYS:
        low, high, bound = _RAYS[op]
        ends = [("neg", ("const", "oo")), right] if bound == "high" else [right, ("const", "oo")]
        return ("tuple", low, high, ends)
    return node


def solution(group: list[Node]) -> Node | None:
    """One answer of a list separated by semicolons: a single item, or ``p=5, q=2`` as the tuple ``(5, 2)``; ``None``
    for anything else."""
    if len(group) == 1:
        return group[0]
    if all(is_assignment(item) and item[2][0] == "sym" for item in group):
        return ("tuple", "(", ")", [item[3] for item in group])
    return None


def as_solution(node: Node, other: Node) -> Node:
    """``a=1, b=2`` as ``(a, b) = (1, 2)`` when ``other`` is a tuple or a tuple's assignment (its variables' order
    first, when it names the same ones); ``node`` itself otherwise."""
    if node[0] != "list" or other[0] not in ("tuple", "rel"):
        return node
    if not all(is_assignment(item) and item[2][0] == "sym" for item in node[1]):
        return node
    values = {item[2][1]: item[3] for item in node[1]}
    if len(values) != len(node[1]):
        return node
    names = list(values)
    if other[0] == "rel" and is_assignment(other) and other[2][0] == "tuple":
        labels = [item[1] for item in other[2][3]]
        names = labels if sorted(labels) == sorted(names) else names
    elif other[0] == "rel":
        return node
    return (
        "rel",
        "=",
        ("tuple", "(", ")", [("sym", n) for n in names]),
        ("tuple", "(", ")", [values[n] for n in names]),
    )


def between(low: Node, op: str, middle: Node, second: str, high: Node) -> Node | None:
    """``a < x <= b`` as the interval ``(a, b]`` (and ``b >= x > a`` likewise); ``None`` for another chain."""
    if op in (">", ">=") and second in (">", ">="):
        low, op, second, high = high, MIRROR[second], MIRROR[op], low
    variable = middle[0] == "sym" or (middle[0] == "mul" and middle[1][0] == "sym")  # x, or f(x)
    if not variable or op not in ("<", "<=") or second not in ("<", "<="):
        return None
    return ("tuple", "(" if op == "<" else "[", ")" if second == "<" else "]", [low, high])


def expand_pm(node: Node) -> list[Node]:
    """``a \\pm b`` is the two answers ``a + b`` and ``a - b`` (``x = a \\pm b`` likewise)."""
    if is_assignment(node):
        return [("rel", "=", node[2], value) for value in expand_pm(node[3])]
    if node[0] == "pm":
        left, right = node[1], node[2]
        if left is None:
            return [right, ("neg", right)]
        return [("add", left, right), ("sub", left, right)]
    return [node]


def is_assignment(node: Node) -> bool:
    """``label = value``: a lone variable, a function of one (``f(x) = ...``), a tuple of variables (``(p, q) =
    (3, 2)``), a ratio of two (``S_1:S = 7:32``) or a length (``|AB| = 1``) on the left."""
    if node[0] != "rel" or node[1] != "=":
        return False
    left = node[2]
    if left[0] == "tuple":
        return bool(left[3]) and all(item[0] == "sym" for item in left[3])
    if left[0] == "abs":  # |AB| = 1
        left = left[1]
    return left[0] == "sym" or (left[0] in ("mul", "div") and left[1][0] == "sym" and left[2][0] == "sym")
