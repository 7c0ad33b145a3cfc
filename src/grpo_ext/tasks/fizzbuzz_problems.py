"""The problems of the ``fizzbuzz`` task: each kind's maker, ``(rng, level, tests) -> Problem``, and its oracle.

Oracles are the truth the hidden tests are computed from, written here as plain Python; the reference solutions a
problem carries are separate source text (a test runs every one in the sandbox against the oracle's values).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Problem:
    kind: str
    level: int
    description: str
    signature: str
    entry_point: str
    inputs: list[list[Any]]  # positional arguments of each test; the first one is the prompt's example
    oracle: Callable[..., Any]
    reference: str
    # FizzBuzz only: the classic wrong FizzBuzz, which returns the word of the first rule that applies (so 15 gets
    # "Fizz", not "FizzBuzz"); task.flawed_fraction of the train references are this one
    flawed_reference: str | None = None


def fizzbuzz_oracle(rules: list[tuple[int, str]]) -> Callable[[int], str]:
    def answer(n: int) -> str:
        return "".join(word for d, word in rules if n % d == 0) or str(n)

    return answer


def balanced_oracle(pairs: str) -> Callable[[str], bool]:
    def answer(s: str) -> bool:
        closing = {pairs[i + 1]: pairs[i] for i in range(0, len(pairs), 2)}
        stack: list[str] = []
        for ch in s:
            if ch in closing.values():
                stack.append(ch)
            elif ch in closing:
                if not stack or stack.pop() != closing[ch]:
                    return False
        return not stack

    return answer


def rle(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == s[i]:
            j += 1
        out.append(f"{s[i]}{j - i}")
        i = j
    return "".join(out)


def nth_prime(n: int) -> int:
    count, k = 0, 1
    while count < n:
        k += 1
        if all(k % d for d in range(2, int(k**0.5) + 1)):
            count += 1
    return k


ROMAN = [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"), (40, "XL"), (10, "X"),
         (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]  # fmt: skip


def to_roman(n: int) -> str:
    out = []
    for value, numeral in ROMAN:
        count, n = divmod(n, value)
        out.append(numeral * count)
    return "".join(out)


def collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def flatten(xs: list) -> list:
    return [y for x in xs for y in (flatten(x) if isinstance(x, list) else [x])]


WORDS = ["Fizz", "Buzz", "Bazz", "Pop", "Zap", "Woof", "Ping", "Boom"]


def make_fizzbuzz(rng: random.Random, level: int, tests: int) -> Problem:
    if level == 1:
        rules = [(3, "Fizz"), (5, "Buzz")]
    else:
        divisors = sorted(rng.sample(range(2, 12), level))
        rules = list(zip(divisors, rng.sample(WORDS, level), strict=True))
    described = ", ".join(f'"{w}" if n is divisible by {d}' for d, w in rules)
    multiples = [d * rng.randint(1, 9) for d, _ in rules]
    product = 1
    for d, _ in rules:
        product *= d
    inputs = [rng.randint(1, 200) for _ in range(tests - len(multiples) - 1)] + multiples + [product]
    lines = "\n".join(f"    if n % {d} == 0:\n        out += {w!r}" for d, w in rules)
    first_match = "\n".join(f"    if n % {d} == 0:\n        return {w!r}" for d, w in rules)
    return Problem(
        kind="fizzbuzz",
        level=level,
        description=f"returns the concatenation, in this order, of {described}; or str(n) if none applies",
        signature="fizzbuzz(n: int) -> str",
        entry_point="fizzbuzz",
        inputs=[[n] for n in [rng.randint(1, 200)] + inputs],
        oracle=fizzbuzz_oracle(rules),
        reference=f'def fizzbuzz(n: int) -> str:\n    out = ""\n{lines}\n    return out or str(n)\n',
        flawed_reference=f"def fizzbuzz(n: int) -> str:\n{first_match}\n    return str(n)\n",
    )


def make_balanced(rng: random.Random, level: int, tests: int) -> Problem:
    pairs = "()[]{}"[: 2 * level]
    closing = {pairs[i + 1]: pairs[i] for i in range(0, len(pairs), 2)}
    noise = "ab1 " if level == 3 else ""
    oracle = balanced_oracle(pairs)
    inputs: list[str] = []
    while len(inputs) < tests + 1:
        depth = rng.randint(1, 6)
        opens = [pairs[2 * rng.randrange(level)] for _ in range(depth)]
        s = "".join(opens) + "".join(pairs[pairs.index(o) + 1] for o in reversed(opens))
        if rng.random() < 0.5:  # break it
            i = rng.randrange(len(s))
            s = s[:i] + rng.choice(pairs) + s[i + 1 :]
        if noise:
            s = "".join(ch + (rng.choice(noise) if rng.random() < 0.3 else "") for ch in s)
        inputs.append(s)
    kinds = " ".join(pairs[i : i + 2] for i in range(0, len(pairs), 2))
    extra = ", ignoring every other character" if noise else ""
    return Problem(
        kind="balanced",
        level=level,
        description=f"returns True if the brackets {kinds} in s are balanced and properly nested{extra}",
        signature="is_balanced(s: str) -> bool",
        entry_point="is_balanced",
        inputs=[[s] for s in inputs],
        oracle=oracle,
        reference=(
            "def is_balanced(s: str) -> bool:\n"
            f"    closing = {closing!r}\n"
            "    stack = []\n"
            "    for ch in s:\n"
            "        if ch in closing.values():\n"
            "            stack.append(ch)\n"
            "        elif ch in closing:\n"
            "            if not stack or stack.pop() != closing[ch]:\n"
            "                return False\n"
            "    return not stack\n"
        ),
    )


def _text(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    """A random string of ``alphabet`` characters, ``low`` to ``high`` long."""
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


@dataclass(frozen=True)
class SimpleKind:
    """A problem whose instances differ only in their test inputs, drawn by ``draw(rng)``."""

    level: int
    description: str
    signature: str
    reference: str
    oracle: Callable[..., Any]
    draw: Callable[[random.Random], list[Any]]

    def make(self, name: str, rng: random.Random, tests: int) -> Problem:
        entry_point = self.signature.split("(")[0]
        inputs = [self.draw(rng) for _ in range(tests + 1)]
        return Problem(name, self.level, self.description, self.signature, entry_point, inputs, self.oracle,
                       self.reference)  # fmt: skip


def is_palindrome(s: str) -> bool:
    t = [c.lower() for c in s if c.isalnum()]
    return t == t[::-1]


def _palindrome_input(rng: random.Random) -> list[str]:
    if rng.random() < 0.4:
        return [_text(rng, "abcd ,", 1, 12)]
    half = _text(rng, "abc ,!", 0, 8)
    return [half + rng.choice(["", "x", ", "]) + half[::-1].upper()]


def _nested(rng: random.Random, depth: int) -> list:
    return [_nested(rng, depth - 1) if depth and rng.random() < 0.3 else rng.randint(0, 99)
            for _ in range(rng.randint(0, 4))]  # fmt: skip


SIMPLE_KINDS = {
    "digit_sum": SimpleKind(
        1, "returns the sum of the decimal digits of the non-negative integer n", "digit_sum(n: int) -> int",
        "def digit_sum(n: int) -> int:\n    return sum(int(c) for c in str(n))\n",
        lambda n: sum(int(c) for c in str(n)), lambda rng: [rng.randint(0, 10 ** rng.randint(1, 12))],
    ),
    "count_vowels": SimpleKind(
        1, "returns how many letters of s are vowels (a, e, i, o, u, either case)", "count_vowels(s: str) -> int",
        "def count_vowels(s: str) -> int:\n    return sum(c in 'aeiouAEIOU' for c in s)\n",
        lambda s: sum(c in "aeiouAEIOU" for c in s), lambda rng: [_text(rng, string.ascii_letters + " ", 0, 30)],
    ),
    "reverse_words": SimpleKind(
        1, "returns the words of s (separated by single spaces) in reverse order, joined by single spaces",
        "reverse_words(s: str) -> str",
        "def reverse_words(s: str) -> str:\n    return ' '.join(reversed(s.split(' ')))\n",
        lambda s: " ".join(reversed(s.split(" "))),
        lambda rng: [" ".join(_text(rng, string.ascii_lowercase, 1, 6) for _ in range(rng.randint(1, 6)))],
    ),
    "palindrome": SimpleKind(
        2, "returns True if s reads the same backwards, ignoring case and non-alphanumeric characters",
        "is_palindrome(s: str) -> bool",
        "def is_palindrome(s: str) -> bool:\n    t = [c.lower() for c in s if c.isalnum()]\n    return t == t[::-1]\n",
        is_palindrome, _palindrome_input,
    ),
    "running_max": SimpleKind(
        2, "returns a list whose i-th element is the largest of xs[0], ..., xs[i]",
        "running_max(xs: list[int]) -> list[int]",
        "def running_max(xs: list[int]) -> list[int]:\n    out = []\n    for x in xs:\n"
        "        out.append(x if not out else max(out[-1], x))\n    return out\n",
        lambda xs: [max(xs[: i + 1]) for i in range(len(xs))],
        lambda rng: [[rng.randint(-50, 50) for _ in range(rng.randint(0, 10))]],
    ),
    "caesar": SimpleKind(
        2, "shifts every lowercase letter of s forward by k places in the alphabet (wrapping from z to a) "
        "and leaves every other character unchanged", "caesar(s: str, k: int) -> str",
        "def caesar(s: str, k: int) -> str:\n    return ''.join(chr((ord(c) - 97 + k) % 26 + 97) if 'a' <= c <= 'z' "
        "else c for c in s)\n",
        lambda s, k: "".join(chr((ord(c) - 97 + k) % 26 + 97) if "a" <= c <= "z" else c for c in s),
        lambda rng: [_text(rng, string.ascii_lowercase + " .A", 0, 20), rng.randint(0, 60)],
    ),
    "collatz": SimpleKind(
        2, "returns how many steps the Collatz map (n/2 if n is even, else 3n+1) takes to reach 1",
        "collatz_steps(n: int) -> int",
        "def collatz_steps(n: int) -> int:\n    steps = 0\n    while n != 1:\n"
        "        n = n // 2 if n % 2 == 0 else 3 * n + 1\n        steps += 1\n    return steps\n",
        collatz_steps, lambda rng: [rng.randint(1, 10_000)],
    ),
    "run_length": SimpleKind(
        3, "returns the run-length encoding of s: each run of equal characters as the character followed by the "
        "run's length, e.g. 'aaab' -> 'a3b1'", "run_length(s: str) -> str",
        "def run_length(s: str) -> str:\n    out = []\n    for c in s:\n        if out and out[-1][0] == c:\n"
        "            out[-1][1] += 1\n        else:\n            out.append([c, 1])\n"
        "    return ''.join(f'{c}{k}' for c, k in out)\n",
        rle, lambda rng: ["".join(rng.choice("abc") * rng.randint(1, 12) for _ in range(rng.randint(0, 5)))],
    ),
    "nth_prime": SimpleKind(
        3, "returns the n-th prime number, counting from nth_prime(1) == 2", "nth_prime(n: int) -> int",
        "def nth_prime(n: int) -> int:\n    primes = []\n    k = 1\n    while len(primes) < n:\n        k += 1\n"
        "        if all(k % p for p in primes if p * p <= k):\n            primes.append(k)\n    return k\n",
        nth_prime, lambda rng: [rng.randint(1, 300)],
    ),
    "roman": SimpleKind(
        3, "returns n (1 to 3999) in Roman numerals, using subtractive forms such as IV, IX, XL and CM",
        "to_roman(n: int) -> str",
        "def to_roman(n: int) -> str:\n    table = [(1000, 'M'), (900, 'CM'), (500, 'D'), (400, 'CD'), (100, 'C'), "
        "(90, 'XC'), (50, 'L'), (40, 'XL'), (10, 'X'), (9, 'IX'), (5, 'V'), (4, 'IV'), (1, 'I')]\n    out = ''\n"
        "    for value, numeral in table:\n        while n >= value:\n            out += numeral\n"
        "            n -= value\n    return out\n",
        to_roman, lambda rng: [rng.randint(1, 3999)],
    ),
    "flatten": SimpleKind(
        3, "returns the integers of the arbitrarily nested list xs, in order, as one flat list",
        "flatten(xs: list) -> list[int]",
        "def flatten(xs: list) -> list[int]:\n    out = []\n    for x in xs:\n"
        "        out.extend(flatten(x) if isinstance(x, list) else [x])\n    return out\n",
        flatten, lambda rng: [_nested(rng, 3)],
    ),
}  # fmt: skip

# kind -> lowest level it appears at. FizzBuzz and brackets grow harder with the level; the others have one level.
KIND_LEVELS: dict[str, int] = {"fizzbuzz": 1, "balanced": 1, **{k: v.level for k, v in SIMPLE_KINDS.items()}}


def make_problem(kind: str, rng: random.Random, level: int, tests: int) -> Problem:
    if kind == "fizzbuzz":
        return make_fizzbuzz(rng, level, tests)
    if kind == "balanced":
        return make_balanced(rng, level, tests)
    return SIMPLE_KINDS[kind].make(kind, rng, tests)
