"""Loaders for user problem files (GSM8K, MATH, generic JSONL/CSV), validated whole before anything is returned.

Every loader fails loudly on bad input with a :class:`ProblemFileError` that names the file, the line and the
field, because a silently skipped row changes every pass rate downstream. A file is read and checked whole before
anything is returned, so a bad row late in a file never leaves half of it in the database. What counts as bad:

* bytes that are not UTF-8 (the error gives the line and the byte offset in the file), lines that are not JSON
  objects, CSV rows with more values than the header;
* a missing, empty or NUL-containing required field (PostgreSQL cannot store NUL in text);
* a gold answer longer than :data:`MAX_GOLD_CHARS` (the ``problems.gold_answer`` column; a 5,000-digit "answer" is
  a broken export, not a reasoning target) or spelled ``NaN``/``inf`` (what JSON writers and pandas put where a
  value was missing or overflowed); ``\\infty`` is a legitimate MATH answer and is kept;
* JSON numbers are kept as the literal text of the file, never through ``float``: ``1e400`` stays ``1e400``
  instead of becoming ``inf``, 20-digit integers keep every digit, and a 5,000-digit integer does not trip
  Python's int-parsing limit. The bare JSON constants ``NaN``/``Infinity`` are refused where they are used;
* duplicate problem ids (listing the first few and the lines they occur on), ids longer than the 200-character
  key column, a difficulty that is not an integer in ``[0, 2**31)``.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path

from fixability_dag.core.answers import last_boxed
from fixability_dag.core.organism import organism_suite
from fixability_dag.core.problems import Problem, arithmetic_suite

MAX_GOLD_CHARS = 200
"""Width of ``problems.gold_answer`` and of ``rollouts.answer``: a longer gold answer is refused at load time."""
MAX_ID_CHARS = 200
"""Width of the ``problems.problem_id`` key column."""
MAX_SUITE_CHARS = 100
"""Width of ``problems.suite`` (by default the file name without extension)."""
MAX_DIFFICULTY = 2**31 - 1
"""``problems.difficulty`` is a 32-bit integer column."""


class ProblemFileError(ValueError):
    """A problem file cannot be used; the message names the file, line and field at fault."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = self.path + (f", line {line}" if line is not None else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {reason}")


_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)
_NUMBER_TEXT = re.compile(r"^[-+]?\$?\s*[\d,]*\.?\d+\s*%?$")


def _stable_id(suite: str, text: str) -> str:
    return f"{suite}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


class _NumberText(str):
    """A JSON number kept as the literal text of the file (see the module docstring)."""


class _NonFinite(str):
    """A bare JSON ``NaN``/``Infinity``/``-Infinity``; refused by the field that uses it."""


_NON_FINITE_TEXT = re.compile(r"[-+]?(nan|inf|infinity)", re.I)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProblemFileError(path, None, None, "file not found") from None
    except OSError as exc:
        raise ProblemFileError(path, None, None, f"cannot be read ({exc.strerror or exc})") from None


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    raw = _read_bytes(path)
    offset = 0
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        line_start, offset = offset, offset + len(line) + 1
        if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some editors write
            line, line_start = line[3:], 3
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProblemFileError(
                path, lineno, None,
                f"not valid UTF-8 ({exc.reason} at byte offset {line_start + exc.start} of the file, byte {exc.start + 1} "
                f"of the line: {line[exc.start:exc.start + 4]!r})",
            ) from None
        try:
            row = json.loads(text, parse_int=_NumberText, parse_float=_NumberText, parse_constant=_NonFinite)
        except json.JSONDecodeError as exc:
            raise ProblemFileError(path, lineno, None, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:  # e.g. nesting deep enough to exhaust the parser
            raise ProblemFileError(path, lineno, None, f"not usable JSON ({type(exc).__name__}: {exc})") from None
        if not isinstance(row, dict):
            raise ProblemFileError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def _required_text(path: Path, lineno: int, row: Mapping, field: str) -> str:
    if field not in row or row[field] is None:
        raise ProblemFileError(path, lineno, field, "missing")
    value = row[field]
    if isinstance(value, _NonFinite):
        raise ProblemFileError(path, lineno, field, f"the JSON constant {value} is not a usable value")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ProblemFileError(path, lineno, field, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise ProblemFileError(path, lineno, field, "empty")
    if "\x00" in value:
        raise ProblemFileError(path, lineno, field, f"contains a NUL character at position {value.index(chr(0))}")
    return str(value)


def _gold(path: Path, lineno: int, field: str, gold: str) -> str:
    """A final answer fit to store and compare: short, and not a writer's placeholder for a missing number.

    ``gold`` is always cut from a :func:`_required_text` value, which has already refused NUL characters.
    """
    gold = gold.strip()
    if not gold:
        raise ProblemFileError(path, lineno, field, "final answer is empty")
    if len(gold) > MAX_GOLD_CHARS:
        raise ProblemFileError(path, lineno, field, f"gold answer is {len(gold)} characters; expected a short final answer "
                                                    f"(at most {MAX_GOLD_CHARS})")
    if _NON_FINITE_TEXT.fullmatch(gold):
        raise ProblemFileError(path, lineno, field, f"gold answer {gold!r} is not a finite number (a missing or overflowed value?)")
    return gold


def _difficulty(path: Path, lineno: int, field: str, value) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        try:  # a JSON 3.0 or "3.0" is the integer 3; "3.5", "1e400", "NaN" are not integers
            decimal = Decimal(str(value).strip())
            if not decimal.is_finite() or decimal != decimal.to_integral_value():
                raise ValueError
            number = int(decimal)
        except (InvalidOperation, ValueError, TypeError):
            raise ProblemFileError(path, lineno, field, f"expected an integer, got {str(value)[:40]!r}") from None
    if not 0 <= number <= MAX_DIFFICULTY:
        raise ProblemFileError(path, lineno, field, f"difficulty {str(value).strip()[:40]} is outside 0..{MAX_DIFFICULTY}")
    return number


def _check_unique(path: Path, built: list[tuple[Problem, str]], lines: list[int]) -> None:
    """Refuse repeated ids, listing the first few with every line each occurs on."""
    where: dict[str, list[int]] = {}
    for (problem, _), lineno in zip(built, lines):
        where.setdefault(problem.problem_id, []).append(lineno)
    dupes = [(pid, ls) for pid, ls in where.items() if len(ls) > 1]
    if not dupes:
        return
    dupes.sort(key=lambda d: d[1][1])
    first_pid, first_lines = dupes[0]
    field = next(f for (p, f), ln in zip(built, lines) if ln == first_lines[1])
    listed = ", ".join(f"'{pid}' (lines {', '.join(map(str, ls[:5]))}{', ...' if len(ls) > 5 else ''})" for pid, ls in dupes[:5])
    more = f" and {len(dupes) - 5} more" if len(dupes) > 5 else ""
    derived = "" if field == "id" else f" (ids derived from the {field!r} text: the same question appears twice)"
    raise ProblemFileError(
        path, first_lines[1], field,
        f"duplicate problem id '{first_pid}' (first on line {first_lines[0]}); {len(dupes)} duplicated: {listed}{more}{derived}",
    )


def _collect(path: Path, rows: Iterable[tuple[int, dict]], build, suite: str) -> list[Problem]:
    """Build one problem per row (``build(lineno, row) -> (problem, id field)``) and refuse duplicate ids.

    Nothing is returned before the whole file has been read and checked.
    """
    if len(suite) > MAX_SUITE_CHARS:
        raise ProblemFileError(path, None, None, f"suite name {suite[:40]!r}... is {len(suite)} characters (at most "
                                                 f"{MAX_SUITE_CHARS}); rename the file or pass a suite name")
    built, lines = [], []
    for lineno, row in rows:
        problem, id_field = build(lineno, row)
        if len(problem.problem_id) > MAX_ID_CHARS:
            raise ProblemFileError(path, lineno, id_field, f"problem id is {len(problem.problem_id)} characters (at most {MAX_ID_CHARS})")
        built.append((problem, id_field))
        lines.append(lineno)
    _check_unique(path, built, lines)
    return [problem for problem, _ in built]


def _row_id(path: Path, lineno: int, row: Mapping, field: str, suite: str, question_field: str, question: str) -> tuple[str, str]:
    """The row's own id when it has one, else a stable hash of the question; and the field it came from."""
    if row.get(field) is not None:
        return _required_text(path, lineno, row, field).strip(), field
    return _stable_id(suite, question), question_field


def load_gsm8k_jsonl(path: Path | str, suite: str | None = None) -> list[Problem]:
    """GSM8K format: ``question`` and ``answer`` whose last line is ``#### <number>``.

    The lines before ``####`` become the reference steps (GSM8K's ``<<48/2=24>>`` calculator annotations are kept
    verbatim: they are what the original solution says).
    """
    path = Path(path)
    suite = suite or path.stem

    def build(lineno: int, row: dict) -> Problem:
        question = _required_text(path, lineno, row, "question")
        answer_text = _required_text(path, lineno, row, "answer")
        match = _GSM8K_ANSWER.search(answer_text)
        if not match:
            raise ProblemFileError(path, lineno, "answer", "does not end with '#### <final answer>'")
        gold = match.group(1).strip()
        if not gold:
            raise ProblemFileError(path, lineno, "answer", "final answer after '####' is empty")
        gold = _gold(path, lineno, "answer", gold)
        steps = tuple(s.strip() for s in answer_text[: match.start()].strip().splitlines() if s.strip())
        pid, id_field = _row_id(path, lineno, row, "id", suite, "question", question)
        return Problem(pid, suite, question, gold, steps), id_field

    return _collect(path, _read_jsonl(path), build, suite)


def load_math_jsonl(path: Path | str, suite: str | None = None) -> list[Problem]:
    r"""MATH format: ``problem`` and ``solution`` containing ``\boxed{answer}``; ``level`` (``Level 3``) if present."""
    path = Path(path)
    suite = suite or path.stem

    def build(lineno: int, row: dict) -> Problem:
        question = _required_text(path, lineno, row, "problem")
        solution = _required_text(path, lineno, row, "solution")
        gold = last_boxed(solution)
        if not gold:
            raise ProblemFileError(path, lineno, "solution", r"has no complete \boxed{...} answer")
        gold = _gold(path, lineno, "solution", gold)
        steps = tuple(s.strip() for s in re.split(r"(?<=[.!?])\s+", solution) if s.strip() and "\\boxed" not in s)
        level = row.get("level")
        difficulty = None
        if isinstance(level, str) and (m := re.search(r"\d+", level)):
            difficulty = _difficulty(path, lineno, "level", m.group())
        pid, id_field = _row_id(path, lineno, row, "id", suite, "problem", question)
        return Problem(pid, suite, question, gold, steps, difficulty=difficulty), id_field

    return _collect(path, _read_jsonl(path), build, suite)


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
    """Which column of a generic JSONL/CSV file holds what. Only ``question`` and ``answer`` are required."""

    question: str = "question"
    answer: str = "answer"
    id: str | None = None
    solution: str | None = None
    difficulty: str | None = None


def _iter_csv(path: Path) -> Iterator[tuple[int, dict]]:
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ProblemFileError(
            path, line, None, f"not valid UTF-8 ({exc.reason} at byte offset {exc.start} of the file: {raw[exc.start:exc.start + 4]!r})"
        ) from None
    # newline="" keeps quoted multi-line fields whole and does not split on U+2028 and friends as splitlines() does
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if reader.fieldnames is None:
            raise ProblemFileError(path, 1, None, "no header row")
        for row in reader:
            if None in row:
                raise ProblemFileError(path, reader.line_num, None, "more values than header columns")
            yield reader.line_num, row
    except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit
        raise ProblemFileError(path, reader.line_num, None, f"not valid CSV ({exc})") from None


def load_generic(path: Path | str, mapping: ColumnMapping = ColumnMapping(), suite: str | None = None) -> list[Problem]:
    """Any JSONL or CSV file with a question and a gold-answer column, named by ``mapping``."""
    path = Path(path)
    suite = suite or path.stem
    rows = _iter_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)

    def build(lineno: int, row: dict) -> Problem:
        question = _required_text(path, lineno, row, mapping.question)
        gold = _gold(path, lineno, mapping.answer, _required_text(path, lineno, row, mapping.answer))
        steps: tuple[str, ...] = ()
        if mapping.solution and row.get(mapping.solution):
            steps = tuple(s.strip() for s in str(row[mapping.solution]).splitlines() if s.strip())
        difficulty = None
        if mapping.difficulty and row.get(mapping.difficulty) not in (None, ""):
            difficulty = _difficulty(path, lineno, mapping.difficulty, row[mapping.difficulty])
        if mapping.id:
            pid, id_field = _required_text(path, lineno, row, mapping.id).strip(), mapping.id
        else:
            pid, id_field = _stable_id(suite, question), mapping.question
        return Problem(pid, suite, question, gold, steps, difficulty=difficulty), id_field

    return _collect(path, rows, build, suite)


BUILTIN_FORMATS = ("arith", "organism")
"""Suites generated in code, read from no file: the procedural arithmetic suite and the model organism's."""
PROBLEM_FORMATS = (*BUILTIN_FORMATS, "gsm8k", "math", "jsonl", "csv")


def load_problems(fmt: str, path: Path | str | None = None, mapping: ColumnMapping | None = None,
                  suite: str | None = None) -> list[Problem]:
    """Dispatch on a format name; the built-in ``arith`` and ``organism`` need no path. ``suite`` names the
    problems' suite (default: the file name without extension)."""
    if fmt == "arith":
        return arithmetic_suite()
    if fmt == "organism":
        return organism_suite()
    if path is None:
        raise ValueError(f"problem format '{fmt}' needs a file path")
    if fmt == "gsm8k":
        problems = load_gsm8k_jsonl(path, suite)
    elif fmt == "math":
        problems = load_math_jsonl(path, suite)
    elif fmt in ("jsonl", "csv"):
        problems = load_generic(path, mapping or ColumnMapping(), suite)
    else:
        raise ValueError(f"unknown problem format '{fmt}'; expected one of {', '.join(PROBLEM_FORMATS)}")
    if not problems:
        raise ProblemFileError(path, None, None, "contains no problems")
    return problems


@dataclasses.dataclass(frozen=True)
class GradingPair:
    """One (gold answer, model completion) row of a file to grade, with the line it came from."""

    line: int
    gold: str
    completion: str


def load_grading_pairs(path: Path | str, gold_field: str = "gold", completion_field: str = "completion") -> list[GradingPair]:
    """A JSONL file of ``{"gold": ..., "completion": ...}`` rows (``fixability grade``), checked whole first.

    The gold answer obeys the problem files' rules (non-empty, short, not ``NaN``); the completion may be empty (a
    model can write nothing) but must be text: a number or a list there is an export bug, not model output.
    """
    path = Path(path)
    pairs = []
    for lineno, row in _read_jsonl(path):
        gold = _gold(path, lineno, gold_field, _required_text(path, lineno, row, gold_field))
        if completion_field not in row or row[completion_field] is None:
            raise ProblemFileError(path, lineno, completion_field, "missing")
        completion = row[completion_field]
        if not isinstance(completion, str) or isinstance(completion, (_NumberText, _NonFinite)):
            kind = "a JSON number" if isinstance(completion, (_NumberText, _NonFinite)) else type(completion).__name__
            raise ProblemFileError(path, lineno, completion_field, f"expected text, got {kind}")
        pairs.append(GradingPair(lineno, gold, completion))
    if not pairs:
        raise ProblemFileError(path, None, None, "contains no rows")
    return pairs
