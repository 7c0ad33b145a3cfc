"""The ``math`` reward: extraction, normalisation, exact and symbolic equivalence, and that it never hangs.

The labelled cases of ``benchmarks/math_cases.py`` are also checked here, so a change that breaks one fails.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grpo_ext.rewards.math_answer import extract_final, extract_gold, normalize
from grpo_ext.rewards.math_grader import MathGrader, SymbolicPool
from grpo_ext.rewards.math_parse import ParseError, parse
from support import run_cli

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from math_cases import cases  # noqa: E402


@pytest.fixture(scope="module")
def grader():
    built = MathGrader()
    yield built
    built.close()


def boxed(answer: str) -> str:
    return rf"so the answer is $\boxed{{{answer}}}$."


def test_every_labelled_case(grader):
    rows = cases()
    results = grader.score_batch([completion for _, completion, _, _ in rows], [gold for _, _, gold, _ in rows])
    wrong = [(row, r["status"]) for row, r in zip(rows, results, strict=True) if (r["reward"] == 1.0) != row[3]]
    assert not wrong


@pytest.mark.parametrize(
    "pred,gold",
    [
        ("0.5", r"\frac{1}{2}"), ("1000", "1{,}000"), ("x=5", "5"), (r"\frac{\sqrt2}{2}", r"\frac{1}{\sqrt{2}}"),
        (r"(-\infty, 3) \cup (4, \infty)", r"(4,\infty)\cup(-\infty,3)"), (r"\{3, 1\}", "1, 3"),
        ("(x+1)^2", "x^2+2x+1"),
        (r"10\text{ cm}", "10"), (r"\$5", "5"), (r"90^\circ", "90"), (r"50\%", "0.5"), (r"1.5\times10^{3}", "1500"),
    ],
)  # fmt: skip
def test_equivalent_forms_score_one(grader, pred, gold):
    assert grader.score(boxed(pred), gold)["reward"] == 1.0


@pytest.mark.parametrize(
    "pred,gold",
    [
        ("3.14", r"\pi"), ("0.33", r"\frac13"), ("1/2006!", "1/2004!"), ("1/2^99", "1/2^98"), ("(1,2]", "[1,2)"),
        ("(2, 1)", "(1, 2)"), (r"\sqrt{x^2}", "x"), ("1, 2, 2", "1, 2"), (r"1+10^{-25}", "1"),
    ],
)  # fmt: skip
def test_near_misses_score_zero(grader, pred, gold):
    assert grader.score(boxed(pred), gold)["reward"] == 0.0


@pytest.mark.parametrize("pred,gold", [("1:00", "12:00"), ("7:0", "3:0"), ("2/0", "1/0"), ("0/0", "0/0 + 1")])
def test_an_undefined_value_equals_nothing(grader, pred, gold):
    """A ratio or a quotient with a zero second term is undefined: it never equals another answer (sympy's zoo
    equals zoo, which graded 1:00 equal to 12:00)."""
    assert grader.score(boxed(pred), gold)["reward"] == 0.0
    assert grader.score(boxed(gold), gold)["reward"] == 1.0  # the same text is the same answer


def test_gold_first_extraction_of_gsm8k_and_boxed_solutions():
    assert extract_gold("She has 3 + 4 = 7 apples.\n#### 7") == "7"
    assert extract_gold(r"So the area is $\boxed{\frac{9}{2}}$.") == r"\frac{9}{2}"
    assert extract_gold(" 12 ") == "12"
    minerva = "The loss is $28\\%$. Final Answer: The final answer is $28 \\%$. I hope it is correct. Note: none."
    assert extract_gold(minerva) == "$28 \\%$"  # a solution without a box: its "final answer is"


def test_extraction_takes_the_last_boxed_then_the_last_answer_tag():
    assert extract_final(r"\boxed{1} then \fbox{2}") == ("2", "boxed")
    assert extract_final(r"\boxed{\{1, \frac{2}{3}\}}") == (r"\{1, \frac{2}{3}\}", "boxed")
    assert extract_final("<answer>1</answer><answer> 2 </answer>") == (" 2 ", "answer_tag")
    assert extract_final(r"\boxed{unclosed") == (None, "none")
    assert extract_final("the answer is 4") == (None, "none")
    assert extract_final(r"so \boxed{255}. The final answer is $10,455$. I hope it is correct.") == (
        "$10,455$",
        "final_answer",
    )
    assert extract_final("The final answer is:\n\n\\boxed{42}") == ("42", "boxed")  # the phrase before its box
    assert extract_final('Final Answer: The final answer is "$12$ and $13$".') == ("$12$ and $13$", "final_answer")


def test_normalize_strips_what_does_not_change_the_value():
    assert normalize(r"$\left( \dfrac{1}{2}, 3 \right)$") == r"( \frac{1}{2}, 3 )"
    assert normalize(r"1{,}234{,}567") == "1234567"
    assert normalize(r"\text{(C)}") == "(C)"
    assert normalize(r"12 \text{ inches}^2") == "12"
    assert normalize("50 km/h") == normalize("10weeks").replace("1", "5") == "50"  # units outside \\text{}
    assert normalize("5xyz") == "5xyz" and normalize("2m") == "2m"  # letters that are not a known unit stay
    assert normalize("1 1/2") == r"1\frac{1}{2}" and normalize("4210_{7}") == "4210_7"
    assert normalize("20:34:00") == "20:34" and normalize("20:34:15") == "20:34:15"
    assert normalize("Forty-two.") == "42" and normalize(r"\text{one hundred and five}") == "105"
    assert normalize("minus three thousand two hundred") == "-3200" and normalize("two million five") == "2000005"
    for not_a_number in ("five five", "twenty thirty", "hundred", "one thousand thousand", "ten and five", "and"):
        assert normalize(not_a_number) != normalize("0") and not normalize(not_a_number).lstrip("-").isdigit()


def test_no_final_answer_scores_zero_and_format_bonus_only_for_a_stated_wrong_answer():
    bonus = MathGrader(format_bonus=0.1)
    assert bonus.score("it is 5", "5") == {"reward": 0.0, "status": "no_answer", "gold": "5"}
    assert bonus.score(boxed("6"), "5")["reward"] == pytest.approx(0.1)
    assert bonus.score(boxed("5"), "5")["reward"] == 1.0


@pytest.mark.parametrize("gold", ["", "  ", None, r"\frac{", "#### ", [1, 2], r"\unknowncommand{3}"])
def test_gold_that_cannot_be_read_gives_none_never_one(grader, gold, caplog):
    result = grader.score(boxed("3"), gold)
    assert result["reward"] is None
    assert result["status"] in ("gold_missing", "gold_unparseable")
    assert "not graded" in caplog.text


@pytest.mark.parametrize(
    "junk",
    ["\x00\x01\xff" * 1000, "\ud800", boxed("\u202e41"), "🙂" * 10_000, r"\boxed{" * 5000, "a" * 1_000_000,
     boxed("(" * 300 + "1" + ")" * 300), boxed("1+" * 2000 + "1"), boxed(r"\frac" * 500)],
)  # fmt: skip
def test_junk_completions_score_zero_without_raising(grader, junk):
    assert grader.score(junk, "41")["reward"] == 0.0


@pytest.mark.parametrize(
    "pred",
    [r"9^{9^{9^{9^9}}}", "99999999!", "1000000!", r"\sqrt{2}^{10^{9}}", "1" * 3000, "1" * 20_000, r"2^{3^{4^{5}}}",
     r"\binom{10^{9}}{10^{8}}", "(" * 5000 + "1" + ")" * 5000, r"x^{99999999} - 3x > 1"],
)  # fmt: skip
def test_pathological_answers_are_screened_within_a_second(grader, pred):
    assert grader.score(boxed(r"\sqrt{8}"), r"2\sqrt{2}")["method"] == "symbolic"  # the workers have started
    start = time.monotonic()
    result = grader.score(boxed(pred), "5")
    assert result["reward"] == 0.0
    assert time.monotonic() - start < 1.0


def _expanded_power_of_sum(power: int) -> str:
    """``(x+y+z)^power`` multiplied out, term by term: sympy needs about 100 ms to see the two are equal."""
    terms = []
    for i in range(power, -1, -1):
        for j in range(power - i, -1, -1):
            k = power - i - j
            coefficient = math.factorial(power) // (math.factorial(i) * math.factorial(j) * math.factorial(k))
            factors = "".join(f"{v}^{{{e}}}" for v, e in (("x", i), ("y", j), ("z", k)) if e)
            terms.append(f"{coefficient}{factors}")
    return "+".join(terms)


def test_an_answer_past_the_deadline_is_killed_and_the_next_one_is_graded():
    # The item takes the worker ~100 ms (2-core EPYC), a hundred times the deadline; a trivial one such as
    # (x+1)^2 answers within a warm worker's millisecond and made this test flaky.
    gold, answer = _expanded_power_of_sum(8), boxed("(x+y+z)^{8}")
    impatient = MathGrader(timeout=0.001, workers=1)
    try:
        impatient._pool = pool = SymbolicPool(workers=1, timeout=0.001, memory_mb=1024)
        first_worker = pool.workers[0].process
        first = impatient.score(answer, gold)
        assert first["status"] == "timeout" and first["reward"] == 0.0
        assert first_worker.returncode is not None  # killed and reaped
        assert pool.workers[0].process is not first_worker
        pool.timeout = 30.0
        assert impatient.score(answer, gold)["reward"] == 1.0
    finally:
        impatient.close()


def test_a_worker_that_dies_is_replaced(grader):
    grader.score(boxed(r"\sqrt{8}"), r"2\sqrt2")
    for worker in grader._pool.workers:
        worker.process.kill()
        worker.process.wait()
    assert grader.score(boxed(r"\sqrt{8}"), r"2\sqrt2")["reward"] == 1.0


def test_workers_that_cannot_start_give_none_with_infra_error(monkeypatch, caplog):
    broken = MathGrader(workers=1)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    try:
        results = broken.score_batch([boxed(r"\sqrt{8}"), boxed("3")], [r"2\sqrt2", "3"])
    finally:
        broken.close()
    assert results[0]["reward"] is None and results[0]["status"] == "infra_error"
    assert results[1]["reward"] == 1.0  # what is decided in-process does not need the workers


def test_only_plain_strings_and_booleans_leave_a_worker():
    pool = SymbolicPool(workers=1, timeout=30.0, memory_mb=1024)
    try:
        pairs = [(r"\sqrt{2}", r"\frac{2}{\sqrt2}"), ("x", "y"), ("1/2004!", "1/2006!")]
        replies = pool.compare_many([{"engine": "ours", "gold": gold, "pred": pred} for gold, pred in pairs])
    finally:
        pool.close()
    assert [r["equal"] for r in replies] == [True, False, False]
    assert all(
        set(r) == {"equal", "status"} and type(r["equal"]) is bool and type(r["status"]) is str for r in replies
    )


def test_parser_limits_raise_parse_error():
    with pytest.raises(ParseError):
        parse("(" * 100 + "1" + ")" * 100)
    with pytest.raises(ParseError):
        parse("1+" * 1000 + "1")
    assert parse(r"\frac12") == ("div", ("num", "1"), ("num", "2"))


def test_async_call_and_missing_column(grader):
    chat = [{"role": "assistant", "content": boxed("7")}]
    assert asyncio.run(grader([chat, boxed("8")], answer=["7", "7"])) == [1.0, 0.0]
    assert asyncio.run(grader([boxed("7")])) == [None]


@pytest.mark.parametrize(
    "bad,key",
    [({"format_bonus": 1.5}, "format_bonus"), ({"workers": 0}, "workers"), ({"timeout": 0}, "timeout"),
     ({"memory_mb": 10}, "memory_mb"), ({"timeout": True}, "timeout")],
)  # fmt: skip
def test_bad_parameters_are_named(bad, key):
    with pytest.raises(ValueError, match=f"math: {key}"):
        MathGrader(**bad)


def test_score_cli_reads_completion_and_answer(tmp_path):
    lines = [
        {"completion": boxed(r"\frac{1}{2}"), "answer": "0.5"},
        {"completion": boxed("3.14"), "answer": r"\pi"},
        {"completion": "<answer>72</answer>", "answer": "Natalia sold 72 clips.\n#### 72"},
        {"completion": boxed("1"), "answer": ""},
    ]
    path = tmp_path / "math.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = run_cli(["-m", "grpo_ext.score", "math", str(path), "--timeout", "2"], cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["reward"] for o in out] == [1.0, 0.0, 1.0, None]
    assert [o["status"] for o in out] == ["correct", "wrong", "correct", "gold_missing"]


# extraction, and the second engine (math-verify)


@pytest.mark.parametrize(
    "completion,gold",
    [
        (r"$$\boxed{(2, 2)} \quad \text{and} \quad \boxed{(6, 2)}$$", "$$(2, 2), (6, 2)$$"),  # several boxes
        (r"\boxed{1}, \boxed{3} and \boxed{5}", "1, 3, 5"),
        (r"$\boxed{-2,1}$.", r"\(\boxed{1}\) and \(\boxed{-2}\)."),  # a gold of several boxes
        ("so the final answer is 42.", "42"),  # no box: "the final answer is"
        ("Final answer: $\\frac{3}{4}$", "0.75"),
        ("24 + 48 = 72\n#### 72", "72"),  # GSM8K's own marker
        (r"\boxed{(3, 2)}", "(p,q)=(3,2)"),  # a gold of the form label = value
        (r"\boxed{7:32}", "S_{1}:S=7:32"),
        (r"\boxed{11,\! 111,\! 111,\! 100}", "11111111100"),  # MATH's digit grouping, spaced
        (r"\boxed{\frac{1}{3} \textbf{meters}}", "1/3"),  # notation only math-verify reads
    ],
)
def test_extraction_and_notation_beyond_the_box(grader, completion, gold):
    assert grader.score(completion, gold)["reward"] == 1.0


@pytest.mark.parametrize(
    "completion,gold",
    [
        (r"\boxed{2}", r"\boxed{1}\boxed{2}"),  # one item of a list of boxes is not the list
        ("The answer is 42.", "42"),  # no marked answer: nothing to grade (unanchored: false)
        (r"\boxed{(2, 3)}", "(p,q)=(3,2)"),
        ("the final answer is 41", "42"),
    ],
)
def test_what_is_still_not_an_answer_or_not_equal(grader, completion, gold):
    assert grader.score(completion, gold)["reward"] == 0.0


def test_unanchored_extraction_is_math_verifys_and_opt_in():
    grader = MathGrader(unanchored=True)
    try:
        right = grader.score("After all that work we get 1,000.99€ in the end", "1000.99")
        wrong = grader.score("After all that work we get 1,000.98€ in the end", "1000.99")
        nothing = grader.score("I do not know", "5")
    finally:
        grader.close()
    assert (right["reward"], right["source"], right["method"]) == (1.0, "unanchored", "math_verify")
    assert (wrong["reward"], nothing["reward"], nothing["status"]) == (0.0, 0.0, "no_answer")
    with pytest.raises(ValueError, match="math: unanchored must be true or false"):
        MathGrader(unanchored="yes")


def test_math_verify_runs_in_the_workers_and_its_near_misses_are_caught():
    """math-verify rounds (and calls 1/2006! equal to 1/2004!) and can reduce a list to its last item: its "equal"
    between numbers is confirmed to 50 digits, and a list never equals one item."""
    pool = SymbolicPool(workers=1, timeout=30.0, memory_mb=1024)
    requests = [(r"$\frac{1}{2006!}$", r"$\frac{1}{2004!}$"), ("$0.5$", r"$\frac{1}{2}$"), ("$(1, 2, 3)$", "$3$"),
                (r"$\pi$", "$3.14159265$"), ("$x^2 + 2x + 1$", "$(x+1)^2$"), ("$12:00$", "$1:00$")]  # fmt: skip
    try:
        replies = pool.compare_many([{"engine": "math_verify", "gold_raw": g, "pred_raw": p} for g, p in requests])
    finally:
        pool.close()
    assert [r["equal"] for r in replies] == [False, True, False, False, True, False]
    assert all(set(r) == {"equal", "status"} for r in replies)


def test_the_reward_gives_the_same_verdicts_from_eight_threads_at_once():
    import concurrent.futures

    rows = [(c, g) for _, c, g, _ in cases()][:120]
    grader = MathGrader()
    try:
        alone = [r["reward"] for r in grader.score_batch([c for c, _ in rows], [g for _, g in rows])]
        chunks = [rows[i::8] for i in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(lambda chunk: grader.score_batch([c for c, _ in chunk], [g for _, g in chunk]),
                                     chunks))  # fmt: skip
        together = [None] * len(rows)
        for i, results in enumerate(threaded):
            for j, result in enumerate(results):
                together[i + 8 * j] = result["reward"]

        async def gathered():
            return await asyncio.gather(*(grader([c for c, _ in chunk], answer=[g for _, g in chunk])
                                          for chunk in chunks))  # fmt: skip

        as_async = [None] * len(rows)
        for i, rewards in enumerate(asyncio.run(gathered())):
            for j, reward in enumerate(rewards):
                as_async[i + 8 * j] = reward
    finally:
        grader.close()
    assert together == alone and as_async == alone


def test_the_graders_process_never_imports_sympy_math_verify_or_antlr():
    """Symbolic and math-verify items are graded, yet none of their libraries is loaded in the calling process."""
    script = (
        "import sys\n"
        "from grpo_ext.rewards.math_grader import MathGrader\n"
        "grader = MathGrader()\n"
        "rewards = [grader.score(c, g)['reward'] for c, g in [(r'\\boxed{\\sqrt{8}}', r'2\\sqrt2'),"
        " (r'\\boxed{\\frac{1}{3} \\textbf{meters}}', '1/3'), (r'\\boxed{-x > -1}', 'x < 1')]]\n"
        "grader.close()\n"
        "heavy = ('sympy', 'math_verify', 'latex2sympy2_extended', 'antlr4', 'mpmath')\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in heavy)\n"
        "print(rewards, loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[1.0, 1.0, 1.0] []"
