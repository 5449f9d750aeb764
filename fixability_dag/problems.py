"""Reasoning problems: the built-in arithmetic suite and loaders for user problem files.

A problem carries everything an audit needs and nothing about any model: the question, the gold answer, and,
where the source has one, a step-by-step reference solution. Interventions such as "solution prefix" read the
reference steps, so the loaders keep them whenever the format provides them.

Every loader fails loudly on bad input with a :class:`ProblemFileError` that names the file, the line and the
field, because a silently skipped row changes every pass rate downstream.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

PROMPT_TEMPLATE = "Q: {question}\nA: "
"""The prompt every problem is rendered with. The demo model was trained on exactly this frame."""

FINAL_ANSWER_MARKER = "#### "
"""The line prefix that introduces a final answer (GSM8K convention, also used by the demo model)."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One reasoning problem, independent of any model."""

    problem_id: str
    suite: str
    question: str
    gold_answer: str
    reference_steps: tuple[str, ...] = ()
    difficulty: int | None = None
    template_id: str | None = None

    @property
    def prompt(self) -> str:
        return PROMPT_TEMPLATE.format(question=self.question)

    @property
    def reference_solution(self) -> str:
        """The full worked solution in the completion format the demo model emits."""
        return "".join(step + "\n" for step in self.reference_steps) + FINAL_ANSWER_MARKER + self.gold_answer

    def as_row(self) -> dict:
        return {
            "problem_id": self.problem_id,
            "suite": self.suite,
            "question": self.question,
            "gold_answer": self.gold_answer,
            "reference_steps": list(self.reference_steps),
            "difficulty": self.difficulty,
            "template_id": self.template_id,
        }


class ProblemFileError(ValueError):
    """A problem file cannot be used; the message names the file, line and field at fault."""

    def __init__(self, path: Path | str, line: int | None, field: str | None, reason: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, reason
        where = self.path + (f", line {line}" if line is not None else "") + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {reason}")


# --------------------------------------------------------------------------------------------------------------
# The built-in procedural arithmetic suite
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ArithmeticSuiteSpec:
    """Knobs of the seeded arithmetic suite.

    A *template* is a fixed sequence of operators for one chain length; its *variants* remap the numbers. Variants of
    one template share their structure, so a regime that differs between variants is about numbers, not about the
    shape of the reasoning.
    """

    chain_lengths: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    templates_per_length: int = 4
    variants_per_template: int = 4
    digits: int = 2
    operators: tuple[str, ...] = ("+", "-")
    seed: int = 20261123
    name: str = "arith"

    def __post_init__(self) -> None:
        if not self.chain_lengths or min(self.chain_lengths) < 1:
            raise ValueError("chain_lengths must be positive integers")
        if self.digits < 1 or self.digits > 6:
            raise ValueError("digits must be between 1 and 6")
        if not set(self.operators) <= {"+", "-", "*"} or not self.operators:
            raise ValueError("operators must be a non-empty subset of '+', '-', '*'")
        if self.templates_per_length < 1 or self.variants_per_template < 1:
            raise ValueError("templates_per_length and variants_per_template must be >= 1")


def _apply(total: int, op: str, operand: int) -> int:
    if op == "+":
        return total + operand
    if op == "-":
        return total - operand
    return total * operand


def arithmetic_chain(numbers: list[int], ops: list[str]) -> tuple[str, tuple[str, ...], str]:
    """Question text, reference steps and answer for ``numbers[0] ops[0] numbers[1] ...``.

    Each step restates the running total and the next operand, e.g. ``68-12=56``: the chain is evaluated left to
    right, which is also how the demo model is taught to do it.
    """
    if len(numbers) != len(ops) + 1:
        raise ValueError("need exactly one more number than operators")
    question = str(numbers[0]) + "".join(f"{op}{n}" for op, n in zip(ops, numbers[1:]))
    total, steps = numbers[0], []
    for op, n in zip(ops, numbers[1:]):
        new_total = _apply(total, op, n)
        steps.append(f"{total}{op}{n}={new_total}")
        total = new_total
    if not ops:  # a chain of length 0 still needs an answer line
        steps = []
    return question, tuple(steps), str(total)


def random_operands(rng: random.Random, count: int, digits: int) -> list[int]:
    """``count`` numbers with exactly ``digits`` digits (0-9 for one digit)."""
    lo, hi = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    return [rng.randint(lo, hi) for _ in range(count)]


def random_chain(rng: random.Random, length: int, digits: int, ops: tuple[str, ...]) -> tuple[list[int], list[str]]:
    return random_operands(rng, length + 1, digits), [rng.choice(ops) for _ in range(length)]


def arithmetic_suite(spec: ArithmeticSuiteSpec = ArithmeticSuiteSpec()) -> list[Problem]:
    """The seeded suite: same spec, same problems, on every machine."""
    rng = random.Random(spec.seed)
    problems: list[Problem] = []
    for length in spec.chain_lengths:
        for t in range(spec.templates_per_length):
            ops = [rng.choice(spec.operators) for _ in range(length)]
            template_id = f"{spec.name}-L{length}-T{t}"
            for v in range(spec.variants_per_template):
                numbers = random_operands(rng, length + 1, spec.digits)
                question, steps, answer = arithmetic_chain(numbers, ops)
                problems.append(
                    Problem(
                        problem_id=f"{template_id}-V{v}",
                        suite=spec.name,
                        question=question,
                        gold_answer=answer,
                        reference_steps=steps,
                        difficulty=length,
                        template_id=template_id,
                    )
                )
    return problems


# --------------------------------------------------------------------------------------------------------------
# Loaders for user files
# --------------------------------------------------------------------------------------------------------------

_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.S)
_NUMBER_TEXT = re.compile(r"^[-+]?\$?\s*[\d,]*\.?\d+\s*%?$")


def _stable_id(suite: str, text: str) -> str:
    return f"{suite}-{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProblemFileError(path, None, None, "file not found") from None
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProblemFileError(path, lineno, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
        try:
            row = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProblemFileError(path, lineno, None, f"not valid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(row, dict):
            raise ProblemFileError(path, lineno, None, f"expected a JSON object, got {type(row).__name__}")
        yield lineno, row


def _required_text(path: Path, lineno: int, row: Mapping, field: str) -> str:
    if field not in row or row[field] is None:
        raise ProblemFileError(path, lineno, field, "missing")
    value = row[field]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ProblemFileError(path, lineno, field, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise ProblemFileError(path, lineno, field, "empty")
    return value


def _check_unique(path: Path, problems: list[Problem], lines: list[int]) -> None:
    seen: dict[str, int] = {}
    for problem, lineno in zip(problems, lines):
        if problem.problem_id in seen:
            raise ProblemFileError(
                path, lineno, "id", f"duplicate problem id '{problem.problem_id}' (first on line {seen[problem.problem_id]})"
            )
        seen[problem.problem_id] = lineno


def _collect(path: Path, rows: Iterable[tuple[int, dict]], build) -> list[Problem]:
    """Build one problem per row (``build(lineno, row)``) and refuse duplicate ids, naming both lines."""
    problems, lines = [], []
    for lineno, row in rows:
        problems.append(build(lineno, row))
        lines.append(lineno)
    _check_unique(path, problems, lines)
    return problems


def _row_id(row: Mapping, field: str, suite: str, question: str) -> str:
    return str(row[field]) if row.get(field) is not None else _stable_id(suite, question)


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
        steps = tuple(s.strip() for s in answer_text[: match.start()].strip().splitlines() if s.strip())
        return Problem(_row_id(row, "id", suite, question), suite, question, gold, steps)

    return _collect(path, _read_jsonl(path), build)


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
        steps = tuple(s.strip() for s in re.split(r"(?<=[.!?])\s+", solution) if s.strip() and "\\boxed" not in s)
        level = row.get("level")
        difficulty = None
        if isinstance(level, str) and (m := re.search(r"\d+", level)):
            difficulty = int(m.group())
        return Problem(_row_id(row, "id", suite, question), suite, question, gold, steps, difficulty=difficulty)

    return _collect(path, _read_jsonl(path), build)


@dataclasses.dataclass(frozen=True)
class ColumnMapping:
    """Which column of a generic JSONL/CSV file holds what. Only ``question`` and ``answer`` are required."""

    question: str = "question"
    answer: str = "answer"
    id: str | None = None
    solution: str | None = None
    difficulty: str | None = None


def _iter_csv(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise ProblemFileError(path, None, None, "file not found") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ProblemFileError(path, line, None, f"not valid UTF-8 ({exc.reason})") from None
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None:
        raise ProblemFileError(path, 1, None, "no header row")
    for row in reader:
        if None in row:
            raise ProblemFileError(path, reader.line_num, None, "more values than header columns")
        yield reader.line_num, row


def load_generic(path: Path | str, mapping: ColumnMapping = ColumnMapping(), suite: str | None = None) -> list[Problem]:
    """Any JSONL or CSV file with a question and a gold-answer column, named by ``mapping``."""
    path = Path(path)
    suite = suite or path.stem
    rows = _iter_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)

    def build(lineno: int, row: dict) -> Problem:
        question = _required_text(path, lineno, row, mapping.question)
        gold = _required_text(path, lineno, row, mapping.answer).strip()
        if len(gold) > 200:
            raise ProblemFileError(path, lineno, mapping.answer, f"gold answer is {len(gold)} characters; expected a short final answer")
        steps: tuple[str, ...] = ()
        if mapping.solution and row.get(mapping.solution):
            steps = tuple(s.strip() for s in str(row[mapping.solution]).splitlines() if s.strip())
        difficulty = None
        if mapping.difficulty and row.get(mapping.difficulty) not in (None, ""):
            try:
                difficulty = int(row[mapping.difficulty])
            except (TypeError, ValueError):
                raise ProblemFileError(path, lineno, mapping.difficulty, f"expected an integer, got {row[mapping.difficulty]!r}") from None
        pid = _required_text(path, lineno, row, mapping.id) if mapping.id else _stable_id(suite, question)
        return Problem(pid, suite, question, gold, steps, difficulty=difficulty)

    return _collect(path, rows, build)


PROBLEM_FORMATS = ("arith", "gsm8k", "math", "jsonl", "csv")


def load_problems(fmt: str, path: Path | str | None = None, mapping: ColumnMapping | None = None) -> list[Problem]:
    """Dispatch on a format name; ``arith`` needs no path."""
    if fmt == "arith":
        return arithmetic_suite()
    if path is None:
        raise ValueError(f"problem format '{fmt}' needs a file path")
    if fmt == "gsm8k":
        problems = load_gsm8k_jsonl(path)
    elif fmt == "math":
        problems = load_math_jsonl(path)
    elif fmt in ("jsonl", "csv"):
        problems = load_generic(path, mapping or ColumnMapping())
    else:
        raise ValueError(f"unknown problem format '{fmt}'; expected one of {', '.join(PROBLEM_FORMATS)}")
    if not problems:
        raise ProblemFileError(path, None, None, "contains no problems")
    return problems


def problems_by_id(problems: Iterable[Problem]) -> dict[str, Problem]:
    return {p.problem_id: p for p in problems}
