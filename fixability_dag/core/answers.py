"""Final-answer extraction and checking. Model output is data: it is parsed, never executed.

Two design choices matter for the features downstream:

* Extraction returns ``None`` when a rollout states no final answer. "No answer" is its own category of the answer
  distribution (a truncated or rambling rollout is a different failure from a confident wrong number), so we do
  not fall back to "the last number in the text" unless the caller asks for it.
* Answers are *canonicalized* before they are compared or counted, so ``1,000``, ``$1000`` and ``1000.0`` are one
  answer, both for correctness and for the entropy of the answer distribution.

Model output is arbitrary text, so every function here accepts any string without raising:

* Unicode: text is NFKC-folded, so fullwidth ``４２`` is ``42``. Any other decimal digit (Arabic-Indic ``٤٢``,
  Devanagari ``४२``: Unicode category Nd) also counts as the number it spells, because Python's ``Decimal`` reads
  every Nd digit by its value; a model that answers in another script has still answered. Superscript digits are
  exponents, not digits: ``4²`` becomes ``4^{2}`` (NFKC alone would turn it into ``42``). The minus sign U+2212 is
  a minus.
* Control characters (NUL included) are dropped before extraction; tabs and newlines stay.
* Length: an extracted answer is cut to :data:`MAX_ANSWER_CHARS`, the width of ``rollouts.answer``.
* Numbers are compared as ``Decimal`` strings, never floats: a 200-digit answer neither overflows nor rounds.
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
from functools import lru_cache
from pathlib import Path

_PACKAGE_ROOT = Path(__file__).resolve().parents[2]

MAX_ANSWER_CHARS = 200
"""Longer "answers" are not answers: they are kept truncated for inspection and never sent to the LaTeX checker."""

_MARKER = re.compile(r"####\s*([^\n]*)")
_ANSWER_IS = re.compile(r"answer is[:\s]*\$?([^\n$]+?)\$?\s*(?:\.|$)", re.I | re.M)
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LATEX_HINT = re.compile(r"[\\^{}_]|\bfrac\b|sqrt|pi")


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
        # exact: Decimal.normalize() would round to the context's 28 digits and make two long numbers one answer
        if number == 0:
            return "0"
        text = format(number, "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return re.sub(r"\s+", " ", answer)[:MAX_ANSWER_CHARS]


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


if __name__ == "__main__":
    _serve()
