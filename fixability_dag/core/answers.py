r"""Final-answer extraction and checking. Model output is data: it is parsed, never executed.

Two design choices matter for the features downstream:

* Extraction returns ``None`` when a rollout states no final answer. "No answer" is its own category of the answer
  distribution (a truncated or rambling rollout is a different failure from a confident wrong number), so we do
  not fall back to "the last number in the text" unless the caller asks for it.
* Answers are *canonicalized* before they are compared or counted, so ``1,000``, ``$1000`` and ``1000.0`` are one
  answer, both for correctness and for the entropy of the answer distribution.

What counts as a stated final answer, in this order (the first that is present wins; within one kind, the last):
``#### x`` (GSM8K), ``\boxed{x}`` (MATH), a label (``The answer is x``, ``Answer: x``, ``**Final Answer:** x``,
Minerva's ``The final answer is x. I hope it is correct.``), and a bold number on the last line (``**18**``: chat
models bold their result). Only the part of a completion that can hold its answer is read (:func:`answer_region`):
the text after a reasoning model's ``</think>``, and before a new ``Q:``/``Question:`` a completion ran on into
(a few-shot model that keeps writing exemplars would otherwise be graded on an answer to a question it invented).

Comparison reads past the spelling of a value, symmetrically for the gold answer and the model's
(:func:`answer_value`): markup (``**18**``, ``$18$``, ``\(18\)``, ``\text{18}``), an assignment to one variable
(``x = 5`` is ``5``), units after a number (``18 dollars``, ``875 apples``, ``5 \text{ cm}^2``, ``90^\circ``), and
plain or LaTeX fractions and decimals compared as exact rationals (``9/2`` = ``4.5``, ``0.75`` = ``\frac{3}{4}``).
A comma-separated list of numbers is compared as a multiset whatever its spacing (``3,5,7`` = ``3, 5, 7``; MATH
asks for "all solutions, separated by commas"); ``1,000`` with three-digit groups stays a thousands separator.
Everything else that looks like LaTeX goes to math-verify.

Model output is arbitrary text, so every function here accepts any string without raising:

* Unicode: text is NFKC-folded, so fullwidth ``４２`` is ``42``. Any other decimal digit (Arabic-Indic ``٤٢``,
  Devanagari ``४२``: Unicode category Nd) also counts as the number it spells, because Python's ``Decimal`` reads
  every Nd digit by its value; a model that answers in another script has still answered. Superscript digits are
  exponents, not digits: ``4²`` becomes ``4^{2}`` (NFKC alone would turn it into ``42``). The minus sign U+2212 is
  a minus.
* Control characters (NUL included) are dropped before extraction; tabs and newlines stay.
* Length: an extracted answer is cut to :data:`MAX_ANSWER_CHARS`, the width of ``rollouts.answer``.
* Numbers are compared as exact rationals (``Fraction`` of the ``Decimal``), never floats: a 200-digit answer
  neither overflows nor rounds.
* LaTeX answers go to math-verify (sympy) in a separate worker process with a time limit
  (:data:`LATEX_TIMEOUT_SECONDS`): ``9^{9^{9}}`` would otherwise make sympy compute a 370-million-digit integer and
  hang the run (math-verify's own timeout relies on SIGALRM, which neither works outside the main thread nor
  interrupts a long C-level bignum operation). An answer the checker cannot decide in time is "not shown equal".
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]

MAX_ANSWER_CHARS = 200
"""Longer "answers" are not answers: they are kept truncated for inspection and never sent to the LaTeX checker."""

_MARKER = re.compile(r"(?:####\s*)+([^\n]*)")  # repeated markers (a "####" line, then "#### 0") are one
_ANSWER_LABEL = re.compile(r"\banswer\b(?:[*_ \t]*(?:is\b|:))+", re.I)
_SENTENCE_END = re.compile(r"\.(?=\s|$)")
_BOLD = re.compile(r"\*\*([^*\n]{1,200}?)\*\*")
_THINK_OPEN, _THINK_CLOSE = re.compile(r"<think>", re.I), re.compile(r"</think>", re.I)
_NEW_QUESTION = re.compile(r"\n[ \t]*(?:Q|Question)[ \t]*:")
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LATEX_HINT = re.compile(r"[\\^{}_]|\bfrac\b|sqrt|pi|[A-Za-z].*[-+*/]|[-+*/].*[A-Za-z]")
"""Worth asking math-verify: LaTeX, or algebra (a letter and an operator: ``p - q`` vs ``-q + p``)."""
_DECIMAL = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?")
_FRACTION = re.compile(r"([-+]?)(?:(\d+)/(\d+)|\\frac\{([-+]?\d+)\}\{(\d+)\})")
_ASSIGNMENT = re.compile(r"\\?[A-Za-z]{1,20}(?:_\{?\w{1,8}\}?)?\s*=\s*(?=\S)")
_UNIT = re.compile(r"\s*(?:\\(?:text|mbox|mathrm)\s*\{[^{}]*\}|[A-Za-z]{2,}(?![A-Za-z])\.?(?:/[A-Za-z]+)?|°|\^\s*\{?\\circ\}?"
                   r"|\\circ)(?:\^\{?\d\}?)?\s*$")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("__", "__"))
_WRAPPING_COMMANDS = ("\\boxed{", "\\fbox{", "\\text{", "\\textbf{", "\\mathbf{", "\\mbox{")


_SUPERSCRIPT = re.compile("[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+")
_SUPERSCRIPT_DIGITS = str.maketrans("\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079", "0123456789")
_MINUS = str.maketrans({"\u2212": "-", "\u2796": "-"})
LATEX_TIMEOUT_SECONDS = 5.0
"""How long math-verify may take to compare one answer with the gold one before it counts as "not shown equal"."""


def last_boxed(text: str) -> str | None:
    r"""Content of the last ``\boxed{...}`` (or ``\fbox{...}``), honouring nested braces."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    start, depth = starts[-1], 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
    return None


def clean_text(text: str) -> str:
    """NFKC-fold (fullwidth digits become ASCII), superscripts as exponents, U+2212 as '-', no control characters."""
    text = _SUPERSCRIPT.sub(lambda m: "^{" + m.group().translate(_SUPERSCRIPT_DIGITS) + "}", text)
    return _CONTROL.sub("", unicodedata.normalize("NFKC", text).translate(_MINUS))


def answer_region(text: str) -> str:
    r"""The part of a (cleaned) completion that can state its final answer.

    After the last ``</think>`` and before any later ``<think>``: a reasoning model's answer follows its thinking,
    and one that stopped while still thinking (an open ``<think>``) has stated none yet. Before a new ``Q:`` or
    ``Question:`` line: the model ran on into an exemplar of its own, whose answer is not this problem's.
    """
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        text = text[closes[-1].end():]
    if opened := _THINK_OPEN.search(text):
        text = text[: opened.start()]
    if new_question := _NEW_QUESTION.search(text):
        text = text[: new_question.start()]
    return text


def _labelled_answer(text: str) -> str | None:
    r"""The value after the last "answer is" / "answer:" label, to the end of its sentence (``7.5.`` keeps ``7.5``);
    a label alone on its line (``**Final Answer:**``) takes the next line."""
    labels = list(_ANSWER_LABEL.finditer(text))
    if not labels:
        return None
    rest = text[labels[-1].end():].lstrip(" \t:*_")
    line, _, after = rest.partition("\n")
    if not _unwrap(line):
        line = after.strip().partition("\n")[0]
    value = _SENTENCE_END.split(line, maxsplit=1)[0]
    return value if _unwrap(value) else None


def _bold_answer(text: str) -> str | None:
    r"""The last bold span on the last non-empty line, when it reads as a value (``**18**``, ``**$18.50**``):
    a bold heading (``**Step 2:**``) is not an answer."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return None
    for match in reversed(list(_BOLD.finditer(lines[-1]))):
        content = match.group(1)
        if answer_value(content) is not None or (content.strip().startswith("$") and content.strip().endswith("$")):
            return content
    return None


def extract_answer(text: str, last_number_fallback: bool = False) -> str | None:
    r"""The final answer a completion states (see the module docstring for what counts), markup removed."""
    text = answer_region(clean_text(text))
    answer: str | None = None
    markers = _MARKER.findall(text)
    if markers and _unwrap(markers[-1]):
        answer = markers[-1]
    if answer is None:
        answer = last_boxed(text)
    if answer is None:
        answer = _labelled_answer(text)
    if answer is None:
        answer = _bold_answer(text)
    if answer is None and last_number_fallback and (numbers := _NUMBER.findall(text)):
        answer = numbers[-1]
    answer = _unwrap(answer) if answer is not None else None
    return answer[:MAX_ANSWER_CHARS] if answer else None


def _unwrap(text: str) -> str:
    r"""Markup around a value removed: bold asterisks, ``$...$``, ``\(...\)``, ``__...__``, ``\boxed{}``/``\text{}``
    wrapping the whole value, and the sentence's closing period (``18.`` is ``18``; ``3.5`` keeps its point)."""
    s = text.strip()
    if len(s) > 4 * MAX_ANSWER_CHARS:  # not an answer anyway (kept truncated): no need to peel it
        return s
    while True:
        before = s
        s = s.strip().strip("*").strip()
        if s.endswith(".") and not s.endswith(".."):
            s = s[:-1].rstrip()
        for left, right in _WRAPPERS:
            if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right) and left not in s[len(left):-len(right)]:
                s = s[len(left): -len(right)].strip()
        for command in _WRAPPING_COMMANDS:
            if s.startswith(command) and s.endswith("}") and _closing_brace(s, len(command)) == len(s) - 1:
                s = s[len(command): -1].strip()
        if s == before:
            return s


def _closing_brace(text: str, start: int) -> int:
    """Index of the brace closing the group that opens just before ``start``, or -1."""
    depth = 1
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    return -1


def _normal_form(answer: str) -> str:
    r"""``answer`` with what does not change its value removed: markup, ``x =``, units after a number, ``\left``."""
    s = _unwrap(clean_text(answer))
    s = s.replace("\\left", "").replace("\\right", "").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    if (assignment := _ASSIGNMENT.match(s)) and "=" not in s[assignment.end():]:
        s = _unwrap(s[assignment.end():])
    head = s
    for _ in range(6):  # "5 \text{ cm}^2", "18 dollars per hour": a few unit tokens at most
        unit = _UNIT.search(head)
        if unit is None or unit.start() == 0:
            break
        head = head[: unit.start()]
        if _as_number(head) is not None:
            return head.strip()
    return s


def _as_number(text: str) -> Fraction | None:
    r"""The exact value of a number spelled as a decimal (``1,000``, ``$18``, ``12%``), a plain fraction (``9/2``) or
    a LaTeX one (``\frac{3}{4}``); None for anything else."""
    s = text.strip().rstrip(".").replace(" ", "").replace("\\!", "").replace("{,}", ",")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[6:-1]
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    if _DECIMAL.fullmatch(s):
        try:
            return Fraction(Decimal(s))
        except (InvalidOperation, ValueError):
            return None
    if fraction := _FRACTION.fullmatch(s):
        sign, numerator, denominator = fraction.group(1), fraction.group(2) or fraction.group(4), fraction.group(3) or fraction.group(5)
        if int(denominator) != 0:
            return Fraction(int(numerator), int(denominator)) * (-1 if sign == "-" else 1)
    return None


def _as_number_list(text: str) -> list[Fraction] | None:
    """The values of a bare comma-separated list of at least two numbers (no brackets: ``(1,2)`` is a point)."""
    if "," not in text or any(c in text.replace("\\frac", "") for c in "()[]"):
        return None
    values = [_as_number(part) for part in text.split(",")]
    return values if len(values) >= 2 and all(v is not None for v in values) else None


def answer_value(answer: str) -> Fraction | tuple[Fraction, ...] | None:
    """The exact value ``answer`` spells (a number, or a sorted tuple for a list of numbers); None when it is not
    numeric (an expression, a name, a point), which leaves the comparison to canonical text and math-verify."""
    form = _normal_form(answer)
    if (number := _as_number(form)) is not None:
        return number
    values = _as_number_list(form)
    return tuple(sorted(values)) if values is not None else None


def _number_text(value: Fraction) -> str:
    """A rational's canonical spelling: an integer, else its exact decimal when it has one, else ``p/q``."""
    if value.denominator == 1:
        return str(value.numerator)
    denominator, twos, fives = value.denominator, 0, 0
    while denominator % 2 == 0:
        denominator, twos = denominator // 2, twos + 1
    while denominator % 5 == 0:
        denominator, fives = denominator // 5, fives + 1
    if denominator == 1:
        places = max(twos, fives)
        digits = str(abs(value.numerator) * 10**places // value.denominator).rjust(places + 1, "0")
        text = ("-" if value < 0 else "") + digits[:-places] + "." + digits[-places:]
        if len(text) <= MAX_ANSWER_CHARS:
            return text.rstrip("0").rstrip(".")
    return f"{value.numerator}/{value.denominator}"


def canonical_answer(answer: str | None) -> str | None:
    """A canonical spelling used as the category key of the answer distribution: one key per value."""
    if answer is None:
        return None
    form = _normal_form(answer)
    if (number := _as_number(form)) is not None:
        return _number_text(number)[:MAX_ANSWER_CHARS]
    if (values := _as_number_list(form)) is not None:
        return ", ".join(map(_number_text, values))[:MAX_ANSWER_CHARS]
    return re.sub(r"\s*,\s*", ", ", re.sub(r"\s+", " ", form))[:MAX_ANSWER_CHARS]


def latex_equal_in_process(gold: str, answer: str) -> bool:
    """math-verify's verdict, computed here and without a time limit: only for the worker process."""
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    answer_parsed = parse(f"${answer}$", parsing_timeout=None)
    if not gold_parsed or not answer_parsed:
        return False
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


class LatexChecker:
    """One long-lived worker process running math-verify (``python -m fixability_dag.core.answers``, JSON lines on its
    stdin/stdout), killed and replaced when a comparison overruns its time limit or the worker dies.

    A plain subprocess rather than ``multiprocessing``: spawning would re-run the caller's main script in the worker
    (scripts without an ``if __name__ == "__main__":`` guard), and forking copies vLLM's threads.
    """

    def __init__(self, timeout: float = LATEX_TIMEOUT_SECONDS, startup_timeout: float = 120.0):
        self.timeout, self.startup_timeout = timeout, startup_timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen | None = None
        self.timeouts = 0

    def _readline(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self._process.stdout], [], [], timeout)
        return self._process.stdout.readline() if ready else None

    def _start(self) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")])))
        self._process = subprocess.Popen(
            [sys.executable, "-m", "fixability_dag.core.answers"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, encoding="utf-8", env=env, cwd=str(_PACKAGE_ROOT),
        )
        if self._readline(self.startup_timeout) != "ready\n":
            self._stop()
            raise RuntimeError("the math-verify worker process did not start")

    def _stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(10)
            for stream in (self._process.stdin, self._process.stdout):
                stream.close()
        self._process = None

    def equal(self, gold: str, answer: str) -> bool:
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._stop()
                self._start()
            try:
                self._process.stdin.write(json.dumps([gold, answer]) + "\n")
                self._process.stdin.flush()
                line = self._readline(self.timeout)
                if line:
                    return json.loads(line) is True
            except (OSError, ValueError):  # the worker died (e.g. out of memory on a huge expression)
                pass
            self.timeouts += 1
            logging.getLogger(__name__).warning(
                "math-verify did not decide %r vs gold %r within %.0fs; counted as not equal", answer[:60], gold[:60], self.timeout)
            self._stop()
            return False

    def close(self) -> None:
        with self._lock:
            self._stop()


def _serve() -> None:
    """The worker's loop: one JSON ``[gold, answer]`` per line in, ``true``/``false`` per line out."""
    import math_verify  # noqa: F401 - import once, before reporting ready

    print("ready", flush=True)
    for line in sys.stdin:
        try:
            gold, answer = json.loads(line)
            verdict = latex_equal_in_process(gold, answer)
        except Exception:  # noqa: BLE001 - a parser failure on model output means "not shown equal"
            verdict = False
        print(json.dumps(verdict), flush=True)


_CHECKER = LatexChecker()
atexit.register(_CHECKER.close)


@lru_cache(maxsize=65536)
def _latex_equal(gold: str, answer: str) -> bool:
    return _CHECKER.equal(gold, answer)


def answers_match(gold: str, answer: str | None) -> bool:
    """Is ``answer`` (already extracted) the gold answer? Values compare exactly, LaTeX through math-verify."""
    if answer is None:
        return False
    if canonical_answer(gold) == canonical_answer(answer):
        return True
    values = answer_value(gold), answer_value(answer)
    if None not in values:
        return values[0] == values[1]  # two numbers (or lists of numbers): no need to ask sympy
    gold_form, answer_form = _normal_form(gold), _normal_form(answer)
    if re.sub(r"\s+", "", gold_form) == re.sub(r"\s+", "", answer_form):
        return True  # ``p-q`` is ``p - q``: spacing never changes a value
    if len(answer) > MAX_ANSWER_CHARS or not (_LATEX_HINT.search(gold_form) or _LATEX_HINT.search(answer_form)):
        return False
    try:
        return _latex_equal(gold_form.strip(), answer_form.strip())
    except Exception:  # noqa: BLE001 - a parser failure on model output means "not shown equal", never a crash
        return False


def grade(gold: str, completion: str, last_number_fallback: bool = False) -> tuple[str | None, bool]:
    """Extract the answer of one completion and check it: ``(canonical answer or None, correct)``."""
    answer = extract_answer(completion, last_number_fallback)
    return canonical_answer(answer), answers_match(gold, answer)


if __name__ == "__main__":
    _serve()
