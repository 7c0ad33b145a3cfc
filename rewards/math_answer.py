"""Final answers of math completions and gold columns: extraction and string normalisation (no sympy here).

``extract_final`` finds what a completion commits to: the last ``\\boxed{...}`` or ``\\fbox{...}`` (braces matched,
escaped braces skipped), else the content of the last ``<answer>...</answer>``. ``extract_gold`` reads a dataset's
gold as stored: GSM8K's ``... #### 72``, a boxed solution, or the bare answer. ``normalize`` strips what does not
change the value (math delimiters, ``\\left``/``\\right``, spacing commands, ``\\text{}`` wrappers, trailing units in
``\\text{}``, degrees, ``\\$``, thousands separators) so that equal answers usually become equal strings; whatever is
left over is for the parser in ``math_parse``.
"""

from __future__ import annotations

import re

from grpo_ext.rewards.math_parse import MATH_WORDS

MAX_ANSWER_CHARS = 1000  # longer final answers are not parsed: no competition answer comes near it

_BOXED = re.compile(r"\\(?:boxed|fbox)\b")
_ANSWER_OPEN, _ANSWER_CLOSE = "<answer>", "</answer>"
_WRAPPERS = (
    "text", "textbf", "textit", "textrm", "textsf", "textnormal", "mathrm", "mathbf", "mathit", "mathsf",
    "mathnormal", "mbox", "boldsymbol", "bm", "emph", "hbox",
)  # fmt: skip
_UNIT_TEXT = re.compile(r"\\(?:text|mbox|mathrm|textrm)\{\s*[A-Za-z][A-Za-z .]*\}(?:\^\{?\d\}?)?\s*$")
_SPACING = re.compile(r"(?<!\\)\\[,;:! >]|\\q?quad\b|~")
_SIZING = re.compile(r"\\(?:left|right|[bB]igg?[lr]?)(?![A-Za-z])\.?|\\(?:display|text|script)style\b|\\angle\b")
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ\b|\\circ\b|°|\^\s*\{?\\degree\}?|\\degree\b")
_TRIG_DEGREES = re.compile(  # "\\sin 60^\\circ": the argument in degrees, made radians before degree marks go
    r"(\\(?:sin|cos|tan|cot|sec|csc)\s*)(\(?\s*)([-+]?\d+(?:\.\d+)?)\s*(?:" + _DEGREES.pattern + ")"
)
_CHOOSE = re.compile(r"\{\s*([^{}\\]+?)\s*\\choose\s*([^{}\\]+?)\s*\}")  # "{10 \\choose 3}": TeX's binomial
_REALS = re.compile(r"\\mathbb\s*(?:\{\s*R\s*\}|R\b)")  # the real line as a set
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACED_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?: \d{3})+(?:\.\d+)?")
_WORD_SEPARATOR = re.compile(r"\s+(?:or|and)\s+|(?<=\))\s*(?:or|and)\s*(?=\()", re.IGNORECASE)
# a unit after a number, outside \text{}: any word of 3 letters or more after a space ("20 minutes"), or a known
# unit written on the number ("10weeks", "50km/h", "3 cm^2"); never one letter ("2m" may be 2 times m)
_KNOWN_UNIT = (
    r"(?:km|cm|mm|kg|mg|hrs?|mins?|ft|yd|mi|mph|ml|mL|lbs?|oz|secs?|weeks?|days?|hours?|minutes?|seconds?|years?"
    r"|months?|meters?|metres?|miles?|feet|inch(?:es)?|dollars?|cents?|units?)(?![A-Za-z])"
)
_UNIT = r"(?:\s+[A-Za-z]{3,}|\s*" + _KNOWN_UNIT + r")(?:/[A-Za-z]+)?(?:\^\{?[23]\}?)?"
_NUMBER_THEN_UNIT = re.compile(r"([-+]?[\d.,/]*\d)((?:" + _UNIT + r")+)")
_MIXED_NUMBER = re.compile(r"([-+]?)(\d+)\s+(\d+)/(\d+)")  # "1 1/2" is one and a half
_SMALL_NUMBERS = {
    word: n
    for n, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
        "seventeen eighteen nineteen".split()
    )
} | {word: 10 * n for n, word in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), start=2)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
_NUMBER_WORD = re.compile(r"[a-z]+(?:[ -]+[a-z]+)*", re.IGNORECASE)  # words only: what _number_in_words reads
_PLAIN_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")  # nothing to normalise
_SPACED_COMMA = re.compile(r"(?<=\d)\s*\{\s*,\s*\}\s*(?=\d)")  # 14 {, }916 is 14,916
_TIME_12 = re.compile(r"(\d{1,2}):([0-5]\d)\s*([AaPp])\.?\s*[Mm]\.?")  # 8:34 PM is 20:34
# a doubled backslash before a command (a string escaped twice): \\frac is \frac; never before other letters, where
# it may be a line break
_DOUBLED = re.compile(
    r"\\\\(?=(?:[dt]?frac|sqrt|pi|cdot|times|left|right|infty|text[a-z]*|math[a-z]*|leq?|geq?|neq?|pm|mp|boxed"
    r"|[dt]?binom|log|ln|sin|cos|tan|alpha|beta|gamma|theta|circ)(?![A-Za-z]))"
)
_TIME = re.compile(r"(\d{1,2}):([0-5]\d)(?::00)?")  # 08:34 and 8:34:00 are 8:34
_BASE = re.compile(r"(?<=\d)_\{(\d+)\}")  # 4210_{7} is 4210_7
_UNICODE = {
    "−": "-", "–": "-", "×": r"\times ", "·": r"\cdot ", "÷": r"\div ", "π": r"\pi ", "∞": r"\infty ",
    "√": r"\sqrt ", "≤": r"\le ", "≥": r"\ge ", "≠": r"\ne ", "∪": r"\cup ", "±": r"\pm ", "∈": r"\in ",
    "²": "^2", "³": "^3", "€": "", "£": "", "¥": "", "₹": "",
}  # fmt: skip
_ALIASES = {
    r"\dfrac": r"\frac", r"\tfrac": r"\frac", r"\cfrac": r"\frac", r"\dbinom": r"\binom", r"\tbinom": r"\binom",
    r"\leqslant": r"\le", r"\geqslant": r"\ge", r"\leq": r"\le", r"\geq": r"\ge", r"\neq": r"\ne",
    r"\lvert": "|", r"\rvert": "|", r"\vert": "|", r"\lbrace": r"\{", r"\rbrace": r"\}", r"\varnothing": r"\emptyset",
}  # fmt: skip
_ALIAS = re.compile("|".join(re.escape(a) for a in sorted(_ALIASES, key=len, reverse=True)) + r"(?![A-Za-z])")


def _closing_braces(text: str) -> dict[int, int]:
    """For every ``{`` that is closed, the index of its ``}``: one pass, so a completion of a thousand unclosed
    ``\\boxed{`` costs no more than its length."""
    pairs, stack, i = {}, [], 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def matching_brace(text: str, open_at: int) -> int | None:
    """Index of the ``}`` closing the ``{`` at ``open_at``; escaped braces (``\\{``, ``\\}``) do not count."""
    return _closing_braces(text).get(open_at)


def last_boxed(text: str, matches: list[re.Match[str]] | None = None) -> str | None:
    """Content of the last ``\\boxed{...}``/``\\fbox{...}`` (or ``\\boxed 5``); ``None`` when there is none.
    ``matches``: the text's ``\\boxed`` commands where the caller has found them already."""
    matches = list(_BOXED.finditer(text)) if matches is None else matches
    pairs = _closing_braces(text) if matches else {}
    for match in reversed(matches):
        start = match.end()
        while start < len(text) and text[start] == " ":
            start += 1
        if start < len(text) and text[start] == "{":
            if start in pairs:
                return text[start + 1 : pairs[start]]
        elif start > match.end():  # "\\boxed 5": the next word, up to a space or a math delimiter
            word = re.match(r"[^\s$]+", text[start:])
            if word:
                return word.group(0)
    return None


# what may stand between the boxes of one answer: commas, "and", "or", spacing, and those inside \text{}
_GLUE_PART = r"(?:[\s$,;.]|\\[()\[\]]|\\q?quad\b|\\[,;:! ]|~)*"
_GLUE = re.compile(
    _GLUE_PART + r"(?:(?:and|or|,)|\\(?:text|mbox|textrm)\s*\{\s*(?:and|or|,)\s*\})?" + _GLUE_PART, re.IGNORECASE
)
# or a short phrase with "and", within one sentence: "\boxed{(3, 3)} \text{ for part (a) and } \boxed{(1, 1)}",
# "y_1 = \boxed{2x} and y_2 = \boxed{3x}", "\boxed{1} papers and \boxed{2} bins"
_PHRASE_GLUE = re.compile(r"(?=[^\n]*\band\b)[^.;:!?\n]{0,40}", re.IGNORECASE)


def _glued(between: str) -> bool:
    return bool(_GLUE.fullmatch(between) or _PHRASE_GLUE.fullmatch(between))


def boxes(text: str) -> list[tuple[int, int]]:
    """Every ``\\boxed{...}``/``\\fbox{...}`` with braces: (where the command starts, where its content ends)."""
    pairs = _closing_braces(text)
    found = []
    for match in _BOXED.finditer(text):
        start = match.end()
        while start < len(text) and text[start] == " ":
            start += 1
        if start < len(text) and text[start] == "{" and start in pairs:
            found.append((match.start(), pairs[start]))
    return found


def final_boxes(text: str) -> str | None:
    """The answer of several boxes side by side at the end (``\\boxed{1} and \\boxed{2}``, ``\\boxed{(2, 2)} \\quad
    \\text{and} \\quad \\boxed{(6, 2)}``), joined by commas; ``None`` with fewer than two."""
    found = boxes(text)
    run = found[-1:]
    for (start, end), (next_start, _) in reversed(list(zip(found, found[1:], strict=False))):
        if not _glued(text[end + 1 : next_start]):
            break
        run.insert(0, (start, end))
    if len(run) < 2:
        return None
    return ", ".join(text[text.index("{", start) + 1 : end] for start, end in run)


def last_boxes(text: str, count: int) -> str | None:
    """The last ``count`` boxed answers joined by commas, when they sit side by side (``\\boxed{2}, \\boxed{3}``):
    a list answered one box per item. ``None`` otherwise."""
    found = boxes(text)[-count:]
    if len(found) < count or count < 2:
        return None
    for (_, end), (next_start, _) in zip(found, found[1:], strict=False):
        if not _glued(text[end + 1 : next_start]):
            return None
    return ", ".join(text[text.index("{", start) + 1 : end] for start, end in found)


_FINAL_ANSWER = re.compile(r"final answer(?: is|:)", re.IGNORECASE)
_HASHES = re.compile(r"^####\s*(.+?)\s*$", re.MULTILINE)
_QUOTES = re.compile(r"^\\?[\"']|\\?[\"']$")
_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z])")  # "$20$. I hope it is correct.": the answer ends with its sentence


def final_answer_line(text: str, start: int = 0) -> str | None:
    """What follows the last "final answer is" or "final answer:" (after ``start``) to the end of its sentence or
    line (or on the next line when nothing follows on its own), without quotes or a closing period."""
    found = list(_FINAL_ANSWER.finditer(text, start))
    if not found:
        return None
    rest = text[found[-1].end() :].lstrip(" \t:")
    if rest.startswith("\n"):
        rest = rest.lstrip()
    line = _SENTENCE_END.split(rest.split("\n", 1)[0], maxsplit=1)[0].strip().rstrip(".").strip()
    line = _QUOTES.sub("", line).strip()  # the final answer is "12 and 13".
    return line or None


def extract_final(completion: str) -> tuple[str | None, str]:
    """The completion's final answer and where it came from: ``boxed`` (the last box), ``answer_tag`` (the last
    ``<answer>...</answer>``), ``final_answer`` (the rest of the line after the last "final answer is" or "final
    answer:"; it wins over a box before it), ``hashes`` (after GSM8K's ``####`` at the start of a line), or ``None``
    (no answer)."""
    commands = list(_BOXED.finditer(completion))
    boxed = last_boxed(completion, commands) if commands else None
    phrase = final_answer_line(completion, commands[-1].start() if boxed is not None else 0)
    if boxed is not None and phrase is None:
        return boxed, "boxed"
    start = completion.rfind(_ANSWER_OPEN)
    if boxed is None and start >= 0:
        end = completion.find(_ANSWER_CLOSE, start)
        if end >= 0:
            return completion[start + len(_ANSWER_OPEN) : end], "answer_tag"
    if phrase is not None:
        return phrase, "final_answer"
    found = list(_HASHES.finditer(completion))
    if found:
        answer = found[-1].group(1).rstrip(".").strip()
        return (answer, "hashes") if answer else (None, "none")
    return None, "none"


def extract_gold(gold: str) -> str:
    """The answer in a dataset's gold: after GSM8K's last ``####``, else its boxed answer (several boxes side by side
    at the end are one answer, joined by commas), else what follows its last "final answer is", else the whole
    string."""
    if "####" in gold:
        return gold.rsplit("####", 1)[1].strip()
    boxed = final_boxes(gold) or last_boxed(gold)
    if boxed is not None:
        return boxed
    phrase = final_answer_line(gold)
    return phrase if phrase is not None else gold.strip()


def _unwrap(text: str, names: tuple[str, ...]) -> str:
    """Replace ``\\name{content}`` by ``content`` for each command in ``names`` (nested ones too)."""
    pattern = re.compile(r"\\(?:" + "|".join(names) + r")\s*\{")
    while match := pattern.search(text):
        end = matching_brace(text, match.end() - 1)
        if end is None:
            return text[: match.start()] + text[match.end() :]
        text = text[: match.start()] + " " + text[match.end() : end] + " " + text[end + 1 :]
    return text


def _number_in_words(text: str) -> str | None:
    """An integer written in English words (``forty-two``, ``one hundred and five``, ``minus three thousand``) as
    digits; ``None`` for anything else, a word that is not part of a number among them."""
    if not _NUMBER_WORD.fullmatch(text):
        return None
    words = [w for w in re.split(r"[ -]+", text.lower()) if w != "and"]
    sign = -1 if words[:1] in (["minus"], ["negative"]) else 1
    words = words[1:] if sign < 0 else words
    total = group = 0
    last = ""  # the previous word's kind, to refuse "five five", "hundred two hundred" or "thousand million"
    scale_before = 10**12
    for word in words:
        if word in _SMALL_NUMBERS:
            value = _SMALL_NUMBERS[word]
            if last == "small" and not (group % 100 >= 20 and group % 10 == 0 and 0 < value < 10):
                return None  # "twenty five" is 25; "five five" and "twenty thirty" are not numbers
            group, last = group + value, "small"
        elif word == "hundred" and last == "small" and 0 < group < 10:
            group, last = group * 100, "hundred"
        elif word in _SCALES and last in ("small", "hundred") and _SCALES[word] < scale_before:
            total, group, last, scale_before = total + group * _SCALES[word], 0, "scale", _SCALES[word]
        else:
            return None
    return str(sign * (total + group)) if last else None


def normalize(answer: str) -> str:
    """A canonical string for ``answer`` (see the module docstring); whitespace collapsed to single spaces."""
    s = answer.strip()
    if _PLAIN_NUMBER.fullmatch(s):
        return s
    s = _DOUBLED.sub(r"\\", s)
    for char, replacement in _UNICODE.items():
        s = s.replace(char, replacement)
    s = s.replace(r"\$", "").replace("$", "").replace(r"\%", "%").replace("{,}", ",")
    s = _SPACED_COMMA.sub(",", s)
    s = re.sub(r"\\[()\[\]]", " ", s)  # \( \) \[ \] math delimiters
    s = _SIZING.sub("", s)
    s = re.sub(r"(?<=\d),\\!\s*(?=\d{3}(?!\d))", "", s)  # MATH writes thousands as 32,\!348 (or 32,\! 348)
    s = s.replace(",\\!", ",")
    s = _SPACING.sub(" ", s)
    s = _ALIAS.sub(lambda m: _ALIASES[m.group(0)], s)
    s = _TRIG_DEGREES.sub(lambda m: rf"{m.group(1)}{m.group(2)}({m.group(3)}\pi/180)", s)
    s = _DEGREES.sub("", s)
    s = _CHOOSE.sub(r"\\binom{\1}{\2}", s)
    s = _REALS.sub(r"(-\\infty,\\infty)", s)
    body = s.strip()
    if _UNIT_TEXT.search(body) and not re.fullmatch(r"\\\w+\{[^{}]*\}", body):  # "5 \text{ cm}": drop the unit
        s = _UNIT_TEXT.sub("", body)
    s = _unwrap(s, _WRAPPERS)
    s = " ".join(s.split()).rstrip(" .")
    s = _number_in_words(s) or s  # before "and" separates: "one hundred and five" is one number
    s = _WORD_SEPARATOR.sub(", ", s)
    unit = _NUMBER_THEN_UNIT.fullmatch(s)
    if unit and not MATH_WORDS.intersection(re.split(r"[\s/^]+", unit.group(2).lower())):
        s = unit.group(1)
    s = _MIXED_NUMBER.sub(r"\1\2\\frac{\3}{\4}", s) if _MIXED_NUMBER.fullmatch(s) else s
    s = _BASE.sub(r"_\1", s)
    if time := _TIME.fullmatch(s):  # a time of day: 24-hour, no leading zero, no seconds
        s = f"{int(time.group(1))}:{time.group(2)}"
    elif time := _TIME_12.fullmatch(s):
        s = f"{int(time.group(1)) % 12 + (12 if time.group(3) in 'Pp' else 0)}:{time.group(2)}"
    if _THOUSANDS.fullmatch(s) or _SPACED_THOUSANDS.fullmatch(s):
        s = s.replace(",", "").replace(" ", "")
    return s
