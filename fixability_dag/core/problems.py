"""Reasoning problems and the built-in arithmetic suite.

A problem carries everything an audit needs and nothing about any model: the question, the gold answer, and,
where the source has one, a step-by-step reference solution. Interventions such as "solution prefix" read the
reference steps, so the loaders (:mod:`fixability_dag.inputs.problem_files`) keep them whenever the format
provides them.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable

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
    family: str | None = None
    """The planted failure mechanism of a model-organism problem (:mod:`core.organism`); validation only."""

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
            "family": self.family,
        }


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

def problems_by_id(problems: Iterable[Problem]) -> dict[str, Problem]:
    return {p.problem_id: p for p in problems}
