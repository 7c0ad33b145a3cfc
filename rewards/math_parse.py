"""A small LaTeX/plain-text math parser (pure Python, no sympy): answers as trees of tuples.

``parse`` turns a normalised answer into a tree: numbers stay decimal strings (exact), and answers keep their shape:
``("list", items)`` for several answers, ``("tuple", "(", "]", items)`` for tuples and intervals, ``("set", items)``,
``("union", items)``, ``("matrix", rows)``, ``("rel", op, lhs, rhs)``, ``("text", words)``. What a relation or a
list means as an answer (``x > 3`` is an interval) is ``math_shapes``'s; ``math_expr`` compares two trees.

Limits: at most ``MAX_TOKENS`` tokens and ``MAX_DEPTH`` levels of nesting; anything else raises ``ParseError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from grpo_ext.rewards.math_shapes import Node, between, expand_pm, solution, strip_assignment

MAX_TOKENS = 400
MAX_DEPTH = 40
MAX_ITEMS = 24  # answers per list/set: their matching (math_expr) is quadratic in it

_TOKEN = re.compile(
    r"(?P<num>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)"
    r"|(?P<cmd>\\[A-Za-z]+|\\[{}|\\])"
    r"|(?P<word>[A-Za-z]+)"
    r"|(?P<op><=|>=|!=|\*\*|[-+*/^_()\[\]{},;|!=<>&%:])"
    r"|(?P<space>\s+)"
)
FUNCTIONS = {
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "log", "ln",
    "exp", "lg",
}  # fmt: skip
GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota", "kappa",
    "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma",
    "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}  # fmt: skip
CONSTANTS = {"pi": "pi", "infty": "oo", "inf": "oo", "infinity": "oo", "oo": "oo"}
RELATIONS = {"=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=", r"\le": "<=", r"\ge": ">=",
             r"\ne": "!=", r"\lt": "<", r"\gt": ">", r"\in": "in", r"\approx": "approx"}  # fmt: skip
MATRICES = {"pmatrix", "bmatrix", "matrix", "Bmatrix", "smallmatrix", "array"}
MATH_WORDS = FUNCTIONS | CONSTANTS.keys() | MATRICES | {"sqrt"}  # words in an answer that are not prose or units
_MUL = {"*", r"\cdot", r"\times", "**"}
_STARTS_ATOM = {"(", "[", "{"}
_TEXT = re.compile(r"[A-Za-z]+(?: [A-Za-z]+)*")


class ParseError(ValueError):
    """The answer is not something this parser reads."""


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ParseError(f"unexpected character {text[pos]!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind == "space":
            continue
        value = match.group(0)
        if kind == "word" and value not in FUNCTIONS and value not in CONSTANTS and value != "sqrt":
            tokens += [("word", letter) for letter in value]  # "xy" is x times y
        else:
            tokens.append((kind, value))
        if len(tokens) > MAX_TOKENS:
            raise ParseError(f"more than {MAX_TOKENS} tokens")
    return tokens


def parse(text: str) -> Node:
    """The tree of a normalised answer; a letters-only answer of several letters is ``("text", lowercased)``."""
    stripped = text.strip()
    if not stripped:
        raise ParseError("empty answer")
    if _TEXT.fullmatch(stripped) and len(stripped) > 1 and stripped not in CONSTANTS:
        return ("text", stripped.lower())
    choice = re.fullmatch(r"\(([A-Ea-e])\)", stripped)  # multiple choice "(C)" is the letter C
    if choice:
        return ("sym", choice.group(1).upper())
    return _Parser(tokenize(stripped)).answer()


class _Parser:
    """Recursive descent, lowest precedence first: list, relation, union, sum, term, unary, power, postfix, atom."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.in_abs = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def peek_kind(self) -> str | None:
        return self.tokens[self.pos][0] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        value = self.peek()
        if value is None or (expected is not None and value != expected):
            raise ParseError(f"expected {expected or 'more'}, got {value!r}")
        self.pos += 1
        return value

    def answer(self) -> Node:
        groups = [self.items({None, ";"})]
        while self.peek() == ";" and len(groups) <= MAX_ITEMS:  # "1; 3", "p=5, q=2; p=7, q=2": a list of answers
            self.take()
            if self.peek() is not None:
                groups.append(self.items({None, ";"}))
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.peek()!r}")
        items = groups[0] if len(groups) == 1 else [_solution(group) for group in groups]
        items = [strip_assignment(item) for item in items]
        expanded = [alt for item in items for alt in expand_pm(item)]
        return expanded[0] if len(expanded) == 1 else ("list", expanded)

    def items(self, closers: set[str | None], separators: tuple[str, ...] = (",",)) -> list[Node]:
        items = [self.relation()]
        while self.peek() in separators:
            self.take()
            if self.peek() in closers:  # a trailing comma
                break
            items.append(self.relation())
            if len(items) > MAX_ITEMS:
                raise ParseError(f"more than {MAX_ITEMS} items")
        return items

    def relation(self) -> Node:
        left = self.union()
        if self.peek() in RELATIONS:
            op = RELATIONS[self.take()]
            right = self.union()
            if self.peek() in RELATIONS:  # a < x <= b is an interval
                second = RELATIONS[self.take()]
                interval = between(left, op, right, second, self.union())
                if interval is None:
                    raise ParseError("a chain of relations that is not an interval")
                return interval
            return ("rel", op, left, right)
        return left

    def union(self) -> Node:
        parts = [self.sum()]
        while self.peek() == r"\cup":
            self.take()
            parts.append(self.sum())
        return parts[0] if len(parts) == 1 else ("union", parts)

    def sum(self) -> Node:
        node = None if self.peek() in (r"\pm", r"\mp") else self.term()
        while self.peek() in ("+", "-", r"\pm", r"\mp"):
            op = self.take()
            right = self.term()
            if op in (r"\pm", r"\mp"):
                node = ("pm", node, right)
            else:
                node = ("add" if op == "+" else "sub", node, right)
        if node is None:
            raise ParseError("expected a term")
        return node

    def term(self) -> Node:
        node = self.unary()
        while True:
            op = self.peek()
            if op in _MUL or op in ("/", r"\div", ":"):  # a ratio a:b is the number a/b
                self.take()
                right = self.unary()
                node = ("mul", node, right) if op in _MUL else ("div", node, right)
            elif self._starts_factor():
                node = ("mul", node, self.power())
            else:
                return node

    def _starts_factor(self) -> bool:
        kind, value = self.peek_kind(), self.peek()
        if value is None:
            return False
        if kind in ("num", "word"):
            return True
        if value == "|":
            return not self.in_abs
        if kind == "cmd":
            name = value[1:]
            return name in FUNCTIONS or name in GREEK or name in CONSTANTS or name in ("frac", "sqrt", "binom")
        return value in _STARTS_ATOM

    def unary(self) -> Node:
        if self.peek() in ("-", "+"):
            sign = self.take()
            operand = self.unary()
            return ("neg", operand) if sign == "-" else operand
        return self.power()

    def power(self) -> Node:
        base = self.postfix(self.atom())
        if self.peek() in ("^", "**"):
            self.take()
            return ("pow", base, self.exponent())
        return base

    def exponent(self) -> Node:
        if self.peek() == "{":
            return self.group()
        if self.peek() in ("-", "+"):
            sign = self.take()
            operand = self.power()
            return ("neg", operand) if sign == "-" else operand
        return self.power()

    def postfix(self, node: Node) -> Node:
        while self.peek() in ("!", "%"):
            node = ("fact", node) if self.take() == "!" else ("pct", node)
        return node

    def group(self) -> Node:
        self.take("{")
        node = self.nested(self.relation)
        self.take("}")
        return node

    def nested(self, parse: Callable[[], Any]) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(f"nested deeper than {MAX_DEPTH}")
        try:
            return parse()
        finally:
            self.depth -= 1

    def atom(self) -> Node:
        kind, value = self.peek_kind(), self.take()
        if kind == "num":
            if self.peek() == r"\overline" and "." in value:
                return self.repeating(value)
            if self.peek() == "_" and "." not in value:  # a number in another base: 204_5 is 54
                return self.based(value)
            if self.peek() == r"\frac" and "." not in value:  # a mixed number: 2\frac{1}{2} is 5/2
                fraction = self.atom()
                return ("add" if _is_plain_fraction(fraction) else "mul", ("num", value), fraction)
            return ("num", value)
        if kind == "word":
            return self.function(value) if value in FUNCTIONS or value == "sqrt" else self.symbol(value)
        if value in ("(", "["):
            return self.bracketed(value)
        if value == "{":  # a group, or a set written with bare braces: {1, 3}
            items = self.nested(lambda: self.items({"}"}))
            self.take("}")
            return items[0] if len(items) == 1 else ("set", items)
        if value == r"\{":
            items = [] if self.peek() == r"\}" else self.nested(lambda: self.items({r"\}"}))
            self.take(r"\}")
            return ("set", items)
        if value == "|":
            self.in_abs += 1
            inner = self.nested(self.sum)
            self.in_abs -= 1
            self.take("|")
            return ("abs", inner)
        if kind == "cmd":
            return self.command(value[1:])
        raise ParseError(f"unexpected {value!r}")

    def repeating(self, value: str) -> Node:
        """``0.1\\overline{6}`` is 1/6: the decimal so far plus the repeating digits."""
        self.take(r"\overline")
        self.take("{")
        digits = self.take()
        self.take("}")
        if not digits.isdigit() or len(digits) > 50 or "e" in value.lower():
            raise ParseError("a repeating decimal needs plain digits under \\overline")
        fixed = value.split(".", 1)[1]
        repeat = Fraction(int(digits), (10 ** len(digits) - 1) * 10 ** len(fixed))
        total = Fraction(value.rstrip(".") or "0") + repeat
        return ("div", ("num", str(total.numerator)), ("num", str(total.denominator)))

    def based(self, digits: str) -> Node:
        self.take("_")
        base = self.take()
        if not base.isdigit() or not 2 <= int(base) <= 10 or any(int(d) >= int(base) for d in digits):
            raise ParseError(f"{digits}_{base} is not a number in base {base}")
        return ("num", str(int(digits, int(base))))

    def bracketed(self, opener: str) -> Node:
        items = self.nested(lambda: self.items({")", "]"}, (",", ";")))  # (1; 2) is (1, 2)
        closer = self.take()
        if closer not in (")", "]"):
            raise ParseError(f"{opener!r} closed by {closer!r}")
        if len(items) == 1 and opener + closer in ("()", "[]"):
            return items[0]
        if len(items) == 1:
            raise ParseError(f"{opener}...{closer} with one item")
        return ("tuple", opener, closer, items)

    def symbol(self, name: str) -> Node:
        if name in CONSTANTS:
            return ("const", CONSTANTS[name])
        if self.peek() == "_":
            self.take()
            sub = self.take()
            if sub == "{":
                parts = []
                while self.peek() not in ("}", None):
                    parts.append(self.take())
                self.take("}")
                sub = "".join(parts)
            name = f"{name}_{sub}"
        return ("sym", name)

    def command(self, name: str) -> Node:
        if name == "frac":
            return ("div", self.argument(), self.argument())
        if name == "binom":  # ours: math-verify computes \binom{10^9}{10^8} until it is killed
            return ("binom", self.argument(), self.argument())
        if name == "sqrt":
            return self.function("sqrt")
        if name in FUNCTIONS:
            return self.function(name)
        if name in CONSTANTS:
            return ("const", CONSTANTS[name])
        if name in GREEK:
            return self.symbol(name)
        if name == "emptyset":
            return ("set", [])
        if name == "begin":
            return self.matrix()
        raise ParseError(f"unsupported command \\{name}")

    def argument(self) -> Node:
        """A braced group, or one character: ``\\frac12`` is 1/2."""
        if self.peek() == "{":
            return self.group()
        if self.peek() == "(":  # plain-text sqrt(2)
            self.take()
            inner = self.nested(self.sum)
            self.take(")")
            return inner
        kind, value = self.peek_kind(), self.peek()
        if value is None:
            raise ParseError(f"expected an argument, got {value!r}")
        if kind == "num" and len(value) > 1:
            self.tokens[self.pos] = ("num", value[1:])
            return ("num", value[0])
        if kind in ("num", "word"):
            self.take()
            return ("num", value) if kind == "num" else self.symbol(value)
        if kind == "cmd":
            self.take()
            return self.command(value[1:])
        raise ParseError(f"expected an argument, got {value!r}")

    def function(self, name: str) -> Node:
        if name == "sqrt":
            index = None
            if self.peek() == "[":
                self.take()
                index = self.nested(self.sum)
                self.take("]")
            return ("sqrt", self.argument(), index)
        base = exponent = None
        while self.peek() in ("_", "^"):
            if self.take() == "_":
                base = self.argument()
            else:
                exponent = self.argument()
        if self.peek() == "(":
            self.take()
            arg = self.nested(self.sum)
            self.take(")")
        else:
            arg = self.nested(self.power)
        node = ("func", name, arg, base)
        return ("pow", node, exponent) if exponent is not None else node

    def environment(self) -> str:
        self.take("{")
        name = ""
        while self.peek_kind() == "word":
            name += self.take()
        self.take("}")
        return name

    def matrix(self) -> Node:
        env = self.environment()
        if env not in MATRICES:
            raise ParseError(f"unsupported environment {env!r}")
        if env == "array":  # its column specification: {cc}, {c|c}
            self.take("{")
            while self.peek() not in ("}", None):
                self.take()
            self.take("}")
        rows, row = [], []
        while True:
            row.append(self.nested(self.sum))
            separator = self.take()
            if separator == "&":
                continue
            rows.append(row)
            row = []
            if separator == r"\\":
                if self.peek() == r"\end":
                    separator = self.take()
                else:
                    continue
            if separator != r"\end":
                raise ParseError(f"unexpected {separator!r} in a matrix")
            if self.environment() != env:
                raise ParseError(f"\\begin{{{env}}} closed by another environment")
            if len({len(r) for r in rows}) != 1:
                raise ParseError("matrix rows of different lengths")
            return ("matrix", rows)


def _is_plain_fraction(node: Node) -> bool:
    return node[0] == "div" and node[1][0] == "num" and node[2][0] == "num"


def _solution(group: list[Node]) -> Node:
    found = solution(group)
    if found is None:
        raise ParseError("several items between semicolons that are not one solution")
    return found
