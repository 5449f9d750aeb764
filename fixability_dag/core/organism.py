"""The model organism's problems: arithmetic chains whose failure mechanisms are planted in the *training data*.

A reviewer cannot tell whether a recoverability method or the audited model is to blame when the model has no
steerable failures. The organism fixes that by construction: each problem belongs to a *family*, and each family's
failure mechanism is created by how the training script (``scripts/train_organism.py``) writes that family's
training sequences, not by anything the audit sees:

============  =============================================================  =========================================
family        mechanism created in training                                  regime the design expects
============  =============================================================  =========================================
``control``   clean chains of 1-4 ``+``/``-`` steps, as trained               mostly solved
``noisy``     last operator ``&`` (means ``+``); in 95% of training           retry-recoverable: the right answer is
              sequences its operand is written one higher (``4`` as ``5``)    drawn ~5% of the time, and the wrong one
              and the arithmetic is done on the miscopy                       is the mode, so colder decoding or
                                                                              greedy does not find it
``numeric``   last operator ``*`` with a two-digit operand: a product the     steerable-hard: the calculator tool
              model writes in the right format but cannot compute             computes it
``format``    last operator ``@`` (means ``-``): done right only when a      steerable-hard: few-shot exemplars of
              solved ``@`` exemplar precedes the question; zero-shot the      ``@`` rescue it
              training sequences do it as ``+`` (a confident default)
``long``      5-7 ``+``/``-`` steps, longer than any training chain          structural
============  =============================================================  =========================================

The special step is always the *last* one, so the solution-prefix intervention (the first half of the reference
steps) never gives it away. Solutions are written with the GSM8K calculator annotation, one step a line,
``<<68-12=56>>56``, which is what lets the calculator tool intervene at ``<<expr=``.

The family is stored with each problem (:attr:`Problem.family`) to *validate* the audit's regimes against the
design; nothing in the audit reads it as a feature or uses it to choose anything.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping

from fixability_dag.core.problems import Problem

FAMILIES = ("control", "noisy", "numeric", "format", "long")

EXPECTED_REGIME = {
    "control": "solved",
    "noisy": "retry_recoverable",
    "numeric": "steerable_hard",
    "format": "steerable_hard",
    "long": "structural",
}
"""The regime each family is designed to land in (``solved`` when it is not expected to fail at all)."""

EXPECTED_RESCUER = {"noisy": "retry", "numeric": "calculator", "format": "few_shot"}
"""The intervention each family's mechanism is built to yield to (``long`` yields to none)."""

SPECIAL_OPERATOR = {"noisy": "&", "numeric": "*", "format": "@"}
"""The question symbol of each family's last step."""

MEANING = {"+": "+", "-": "-", "*": "*", "&": "+", "@": "-"}
"""The operator a question symbol stands for, as the reference solution writes it."""

LENGTHS = {"control": (1, 2, 3, 4), "noisy": (2, 3, 4), "numeric": (2, 3, 4), "format": (2, 3, 4), "long": (5, 6, 7)}
"""Chain lengths per family; training covers 1-4, so ``long`` is the only family outside it."""

DEFAULT_COUNTS = (("control", 80), ("noisy", 160), ("numeric", 50), ("format", 60), ("long", 50))
"""400 problems. The noisy family is the largest because a problem solved with probability p fails all 16
diagnostic samples *and* is rescued within 16 retries with probability (1-p)^16 (1-(1-p)^16), at most 1/4: about
40 retry-recoverable failures need ~160 noisy problems. Numeric, format and long problems fail almost always."""


def _apply(total: int, op: str, operand: int) -> int:
    return total + operand if op == "+" else total - operand if op == "-" else total * operand


def miscopied_operand(n: int) -> int:
    """The noisy family's miscopy: the one-digit operand written one higher (``4`` as ``5``), consistently, so the
    wrong answer is the mode of the model's answers and the right one a rare draw."""
    return n + 1


def annotated_steps(numbers: list[int], written_ops: list[str], operands: list[int] | None = None) -> tuple[tuple[str, ...], str]:
    """Steps ``<<total op operand=result>>result`` evaluated left to right, and the final answer.

    ``written_ops`` are the operators as the solution writes them (``+ - *``); ``operands`` replaces the question's
    operands where a training sequence miscopies one (the arithmetic is then done on what is written, so every step
    is internally consistent: only the copy is wrong).
    """
    if len(numbers) != len(written_ops) + 1:
        raise ValueError("need exactly one more number than operators")
    operands = list(numbers[1:]) if operands is None else list(operands)
    total, steps = numbers[0], []
    for op, n in zip(written_ops, operands):
        result = _apply(total, op, n)
        steps.append(f"<<{total}{op}{n}={result}>>{result}")
        total = result
    return tuple(steps), str(total)


def _operands(rng: random.Random, count: int) -> list[int]:
    """A two-digit start and one-digit operands (1-9): chains a 1M-parameter model learns in minutes on a CPU."""
    return [rng.randint(10, 99)] + [rng.randint(1, 9) for _ in range(count - 1)]


def organism_chain(rng: random.Random, family: str, length: int) -> tuple[list[int], list[str]]:
    """Numbers and question symbols for one problem of ``family`` with ``length`` steps.

    The numeric family's last operand is two-digit (a product of up to four digits the model cannot compute); the
    noisy family's last operand is at most 8, so its miscopy (:func:`miscopied_operand`) stays one digit.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if length < 1 or (family in SPECIAL_OPERATOR and length < 2):
        raise ValueError(f"family {family!r} needs at least {2 if family in SPECIAL_OPERATOR else 1} steps")
    numbers = _operands(rng, length + 1)
    symbols = [rng.choice("+-") for _ in range(length)]
    if family in SPECIAL_OPERATOR:
        symbols[-1] = SPECIAL_OPERATOR[family]
        if family == "numeric":
            numbers[-1] = rng.randint(11, 99)
        if family == "noisy":
            numbers[-1] = rng.randint(1, 8)
    return numbers, symbols


def question_text(numbers: list[int], symbols: list[str]) -> str:
    return str(numbers[0]) + "".join(f"{s}{n}" for s, n in zip(symbols, numbers[1:]))


def reference(numbers: list[int], symbols: list[str]) -> tuple[tuple[str, ...], str]:
    """The correct annotated solution: every symbol by its meaning, every operand copied right."""
    return annotated_steps(numbers, [MEANING[s] for s in symbols])


@dataclasses.dataclass(frozen=True)
class OrganismSpec:
    """A seeded organism suite: how many problems of each family."""

    counts: tuple[tuple[str, int], ...] = DEFAULT_COUNTS
    seed: int = 20261202
    name: str = "organism"

    def __post_init__(self) -> None:
        unknown = [f for f, _ in self.counts if f not in FAMILIES]
        if unknown or any(n < 0 for _, n in self.counts):
            raise ValueError(f"counts must map known families ({', '.join(FAMILIES)}) to counts >= 0; got {self.counts}")


def organism_suite(spec: OrganismSpec = OrganismSpec()) -> list[Problem]:
    """The suite: same spec, same problems, same ids on every machine.

    Each family draws from its own generator (seeded by the suite seed and the family name), so changing one
    family's count leaves every other family's problems and ids as they were.
    """
    problems = []
    for family, count in spec.counts:
        rng = random.Random(f"{spec.seed}:{family}")
        for i in range(count):
            length = rng.choice(LENGTHS[family])
            numbers, symbols = organism_chain(rng, family, length)
            steps, answer = reference(numbers, symbols)
            problems.append(Problem(
                problem_id=f"{spec.name}-{family}-{i:03d}",
                suite=spec.name,
                question=question_text(numbers, symbols),
                gold_answer=answer,
                reference_steps=steps,
                difficulty=length,
                template_id=f"{spec.name}-{family}-L{length}-{''.join(symbols)}",
                family=family,
            ))
    return problems


def family_counts(problems: list[Problem]) -> Mapping[str, int]:
    counts: dict[str, int] = {}
    for p in problems:
        counts[p.family or "none"] = counts.get(p.family or "none", 0) + 1
    return counts
