"""Final-answer extraction and checking. Model output is data: it is parsed, never executed.

Two design choices matter for the features downstream:

* Extraction returns ``None`` when a rollout states no final answer. "No answer" is its own category of the answer
  distribution (a truncated or rambling rollout is a different failure from a confident wrong number), so we do
  not fall back to "the last number in the text" unless the caller asks for it.
* Answers are *canonicalized* before they are compared or counted, so ``1,000``, ``$1000`` and ``1000.0`` are one
  answer, both for correctness and for the entropy of the answer distribution.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from fixability_dag.problems import last_boxed

MAX_ANSWER_CHARS = 200
"""Longer "answers" are not answers: they are kept truncated for inspection and never sent to the LaTeX checker."""

_MARKER = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.|$)", re.I | re.M)
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LATEX_HINT = re.compile(r"[\\^{}_]|\bfrac\b|sqrt|pi")


def clean_text(text: str) -> str:
    """NFKC-fold (fullwidth and other unicode digits become ASCII) and drop control characters."""
    return _CONTROL.sub("", unicodedata.normalize("NFKC", text))


def extract_answer(text: str, last_number_fallback: bool = False) -> str | None:
    r"""The final answer a completion states: ``#### x``, then ``\boxed{x}``, then "the answer is x"."""
    text = clean_text(text)
    answer: str | None = None
    markers = _MARKER.findall(text)
    if markers and markers[-1].strip():
        answer = markers[-1].strip()
    if answer is None:
        answer = last_boxed(text)
    if answer is None and (found := _ANSWER_IS.findall(text)):
        answer = found[-1].strip()
    if answer is None and last_number_fallback and (numbers := _NUMBER.findall(text)):
        answer = numbers[-1]
    if answer is None or not answer.strip():
        return None
    return answer.strip()[:MAX_ANSWER_CHARS]


def _as_decimal(text: str) -> Decimal | None:
    s = text.strip().rstrip(".").replace(" ", "")
    s = s.replace("\\$", "").replace("$", "").replace("\\%", "").replace("%", "")
    if s.startswith("\\text{") and s.endswith("}"):
        s = s[6:-1]
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", s):
        return None
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def canonical_answer(answer: str | None) -> str | None:
    """A canonical spelling used as the category key of the answer distribution."""
    if answer is None:
        return None
    answer = clean_text(answer).strip()
    number = _as_decimal(answer)
    if number is not None:
        normalized = number.normalize()
        if normalized == 0:
            return "0"
        text = format(normalized, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return re.sub(r"\s+", " ", answer)[:MAX_ANSWER_CHARS]


@lru_cache(maxsize=65536)
def _latex_equal(gold: str, answer: str) -> bool:
    # math-verify's own timeouts rely on SIGALRM, which fails outside the main thread (Dagster runs steps in
    # threads and subprocesses). We use its timeout-free mode and bound the work by the answer length instead.
    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    gold_parsed = parse(f"${gold}$", parsing_timeout=None)
    answer_parsed = parse(f"${answer}$", parsing_timeout=None)
    if not gold_parsed or not answer_parsed:
        return False
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=None))


def answers_match(gold: str, answer: str | None) -> bool:
    """Is ``answer`` (already extracted) the gold answer? Numbers compare by value, LaTeX through math-verify."""
    if answer is None:
        return False
    gold_c, answer_c = canonical_answer(gold), canonical_answer(answer)
    if gold_c == answer_c:
        return True
    if _as_decimal(gold_c or "") is not None and _as_decimal(answer_c or "") is not None:
        return False  # two different numbers: no need to ask sympy
    if len(answer) > MAX_ANSWER_CHARS or not (_LATEX_HINT.search(gold) or _LATEX_HINT.search(answer)):
        return False
    try:
        return _latex_equal(gold.strip(), answer.strip())
    except Exception:  # noqa: BLE001 - a parser failure on model output means "not shown equal", never a crash
        return False


def grade(gold: str, completion: str, last_number_fallback: bool = False) -> tuple[str | None, bool]:
    """Extract the answer of one completion and check it: ``(canonical answer or None, correct)``."""
    answer = extract_answer(completion, last_number_fallback)
    return canonical_answer(answer), answers_match(gold, answer)
