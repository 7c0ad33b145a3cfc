"""Assert-style tests and Python-literal values in ``python_exec``: which asserts are lifted to the host, how the
rest run in the sandbox, and the attacks a policy could write against them."""

from __future__ import annotations

import pytest

from grpo_ext.rewards.literals import lift_check, lift_statement, python_equal, read_literal
from grpo_ext.rewards.python_exec import PythonExec, parse_tests
from support import needs_bwrap, zygote_module


@pytest.fixture(scope="module")
def verifier():
    reward = PythonExec(timeout=2.0, workers=2)
    yield reward
    reward.close()


# Python literals, read without evaluating anything


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("(1, 2)", (1, 2)), ("(1,)", (1,)), ("()", ()), ("[1, (2, 3)]", [1, (2, 3)]), ("{1: 'a', (2, 3): None}",
        {1: "a", (2, 3): None}), ("{1, 2}", {1, 2}), ("set()", set()), ("frozenset({1})", frozenset({1})),
        ("b'\\x00'", b"\x00"), ("complex(1.0, -2.0)", 1 - 2j), ("1+2j", 1 + 2j), ("-5", -5), ("inf", float("inf")),
        ("-inf", float("-inf")), ("True", True), ("None", None), ("'é'", "é"),
    ],
)  # fmt: skip
def test_literals_are_read_as_python_writes_them(text, value):
    assert read_literal(text) == value and type(read_literal(text)) is type(value)


@pytest.mark.parametrize(
    "text", ["__import__('os').system('true')", "open('/etc/passwd')", "x", "(1).__class__", "[1] * 10", "lambda: 1",
             "f'{1}'", "1 if True else 2", "(" * 5000 + ")" * 5000, "{**{}}"],
)  # fmt: skip
def test_anything_but_a_literal_is_refused_and_never_run(text):
    with pytest.raises(ValueError):
        read_literal(text)


def test_nan_is_read_and_equals_nothing():
    value = read_literal("nan")
    assert value != value and not python_equal(value, read_literal("nan"))


@pytest.mark.parametrize(
    ("expected", "actual", "tolerance", "equal"),
    [
        (5, 5.0, None, True), (True, 1, None, True), ((1, 2), [1, 2], None, False), ({1: "a"}, {1: "a"}, None, True),
        ({1, 2}, frozenset({1, 2}), None, True), (0.1 + 0.2, 0.3, None, False), (0.1 + 0.2, 0.3, 1e-9, True),
        ([1.0, (2.0,)], [1.0000001, (2.0,)], 1e-6, True), ([1.0], (1.0,), 1e-6, False),
    ],
)  # fmt: skip
def test_python_comparison_is_pythons_equality(expected, actual, tolerance, equal):
    assert python_equal(expected, actual, tolerance) is equal


# which asserts the host decides


@pytest.mark.parametrize(
    ("statement", "check", "expected"),
    [
        ("assert f(1, 'a') == (2, 3)", "equal", (2, 3)), ("assert [1] == f(x=1)", "equal", [1]),
        ("assert f(2) is True", "is", True), ("assert f(2)", "truthy", None), ("assert not f(2)", "falsy", None),
        ("assert abs(f(2) - 1.5) < 1e-6", "below", 1.5),
        ("assert math.isclose(f(2), 1.5, rel_tol=1e-3)", "close", 1.5),
        ("assert f(-1) == -1, 'a message'", "equal", -1),
    ],
)  # fmt: skip
def test_asserts_on_a_call_of_literals_are_lifted_to_the_host(statement, check, expected):
    lifted = lift_statement(statement, "f")
    assert lifted is not None and lifted.check == check and lifted.expected == expected


@pytest.mark.parametrize(
    "statement",
    ["assert f(g(1)) == 2", "assert f([1] * 3) == 2", "assert f(1) == g(1)", "assert f(1) is 3", "assert f(1) > 2",
     "assert f(*xs) == 1", "x = f(1)", "assert other(1) == 2", "assert f(1) == 2 == 2"],
)  # fmt: skip
def test_asserts_the_host_cannot_decide_stay_in_the_sandbox(statement):
    assert lift_statement(statement, "f") is None


def test_a_check_function_is_lifted_whole_or_not_at_all():
    lifted = lift_check(
        "METADATA = {'author': 'x'}\n\ndef check(candidate):\n    '''doc'''\n    assert candidate(1) == 2\n"
        "    assert True, 'debugging aid'\n    assert candidate(2) == 3\n",
        "inc",
    )
    assert [one.args for one in lifted] == [(1,), (2,)]
    looped = "def check(candidate):\n    for i in range(3):\n        assert candidate(i) == i + 1\n"
    assert lift_check(looped + "    assert candidate(1) == 2\n", "inc") is None
    seeded = "import random\nrandom.seed(0)\ndef check(candidate):\n    assert candidate(1) == 2\n"
    assert lift_check(seeded, "inc") is None


def test_malformed_assert_tests_are_refused_naming_the_test():
    with pytest.raises(ValueError, match=r"tests\[1\]: its assert code does not parse"):
        parse_tests([{"assert": "assert f(1) == 1"}, {"assert": "assert f(1 =="}], "f")
    with pytest.raises(ValueError, match="the same setup code"):
        parse_tests([{"assert": "assert f(1)", "setup": "x = 1"}, {"assert": "assert f(2)"}], "f")
    with pytest.raises(ValueError, match=r"tests\[0\]: not a Python literal"):
        parse_tests([{"args": "(1,", "expected": "1", "encoding": "python"}], "f")
    with pytest.raises(ValueError, match="compare must be one of"):
        parse_tests([{"args": [1], "expected": 1, "compare": "loose"}], "f")


# end to end, in the sandbox

INC = "def inc(x):\n    return x + 1\n"
LOOPED = [{"check": "def check(candidate):\n    for i in range(5):\n        assert candidate(i) == i + 1\n"}]
LIFTED = [{"assert": "assert inc(1) == 2"}, {"assert": "assert inc(-1) == 0"}]


@needs_bwrap
def test_lifted_and_sandboxed_asserts_pass_a_right_program_and_fail_a_wrong_one(verifier):
    for tests, on_host, in_sandbox in ((LOOPED, 0, 1), (LIFTED, 2, 0), (LOOPED + LIFTED, 2, 1)):
        right = verifier.score(INC, tests, "inc")
        assert right["reward"] == 1.0 and (right["on_host"], right["in_sandbox"]) == (on_host, in_sandbox)
        assert verifier.score("def inc(x):\n    return x + 2\n", tests, "inc")["reward"] == 0.0


@needs_bwrap
def test_setup_code_and_the_programs_own_helpers_are_there_for_the_asserts(verifier):
    program = "def double(x):\n    return 2 * x\n\ndef quad(x):\n    return double(double(x))\n"
    check = "def check(candidate):\n    for x in XS:\n        assert candidate(x) == double(double(x))\n"
    assert verifier.score(program, [{"check": check, "setup": "XS = [1, 2, 3]"}], "quad")["reward"] == 1.0


@needs_bwrap
def test_python_values_compare_as_python_does(verifier):
    float_for_int = "def f(x):\n    return x * 1.0\n"
    strict = [{"args": [2], "expected": 2}]
    assert verifier.score(float_for_int, strict, "f")["reward"] == 0.0  # strict: 2.0 is not 2
    assert verifier.score(float_for_int, [{**strict[0], "compare": "python"}], "f")["reward"] == 1.0
    pair = [{"args": "((1, 2),)", "expected": "(2, 1)", "encoding": "python"}]
    assert verifier.score("def f(p):\n    return p[::-1]\n", pair, "f")["reward"] == 1.0
    assert verifier.score("def f(p):\n    return list(p[::-1])\n", pair, "f")["reward"] == 0.0  # a list is no tuple
    keyed = [{"args": "({(1, 2): {3}},)", "expected": "{3: (1, 2)}", "encoding": "python"}]
    assert verifier.score("def f(d):\n    return {min(v): k for k, v in d.items()}\n", keyed, "f")["reward"] == 1.0


ATTACKS = {
    "exits at import": "import sys\nsys.exit(0)\ndef inc(x):\n    return x\n",
    "exits in the call": "import os\ndef inc(x):\n    os._exit(0)\n",
    "raises SystemExit": "def inc(x):\n    raise SystemExit(0)\n",
    "prints OK": "def inc(x):\n    print('OK: all tests passed')\n    return x\n",
    "always equal": "class Yes:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
    "def inc(x):\n    return Yes()\n",
    "an int that always equals": "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = int.__hash__\ndef inc(x):\n    return Yes(x)\n",
    "patches builtins": "import builtins\nbuiltins.range = lambda *a: []\nbuiltins.abs = lambda x: 0\n"
    "def inc(x):\n    return x\n",
    "patches AssertionError": "import builtins\nbuiltins.AssertionError = type('Quiet', (Exception,), {})\n"
    "def inc(x):\n    return x\n",
    "patches math": "import math\nmath.isclose = lambda *a, **k: True\nmath.fabs = lambda x: 0.0\n"
    "def inc(x):\n    return x\n",
    "replaces a module": "import sys, types\nfake = types.ModuleType('math')\nfake.isclose = lambda *a, **k: True\n"
    "sys.modules['math'] = fake\ndef inc(x):\n    return x\n",
}
GUARDED = [
    {"check": "import math\ndef check(candidate):\n    for i in range(3):\n        assert candidate(i) == i + 1\n"
     "        assert abs(candidate(i) - (i + 1)) < 1e-9\n        assert math.isclose(candidate(i), i + 1)\n"
     "        assert math.fabs(candidate(i) - i - 1) < 1e-9\n"},
]  # fmt: skip


@needs_bwrap
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_a_program_cannot_pass_an_assert_test_by_attacking_the_harness(verifier, attack):
    assert verifier.score(INC, GUARDED, "inc")["reward"] == 1.0  # the tests pass a right program
    assert verifier.score(ATTACKS[attack], GUARDED, "inc")["reward"] == 0.0
    assert verifier.score(ATTACKS[attack], LIFTED, "inc")["reward"] == 0.0


class _Tuple(tuple):
    def __repr__(self):
        return "__import__('os')"


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -3, 10**30, 2.5, -0.0, float("inf"), 1 - 2j, "a'\"\n", b"\x00\xff", (), (1,), (1, [2, {3: (4,)}]),
     {1, 2}, frozenset({"a"}), set(), {(1, 2): None, 1.5: b"x"}, _Tuple((1, 2))],
)  # fmt: skip
def test_the_worker_writes_what_the_host_reads_back_as_the_same_value(value):
    text = zygote_module()._literal(value)
    back = read_literal(text)
    assert back == value and type(back) is (tuple if isinstance(value, tuple) else type(value))


@pytest.mark.parametrize("value", [object(), range(3), [1, print], {1: iter([])}])
def test_the_worker_refuses_to_write_what_is_no_literal(value):
    with pytest.raises(TypeError):
        zygote_module()._literal(value)
