"""The model organism's problem generator: seeded, stable ids, each family built as its table says."""

from __future__ import annotations

import random
import re

import pytest

from fixability_dag.core.interventions import choose_exemplars, solution_prefix_text
from fixability_dag.core.organism import (
    DEFAULT_COUNTS, FAMILIES, LENGTHS, MEANING, SPECIAL_OPERATOR, OrganismSpec, annotated_steps, family_counts,
    miscopied_operand, organism_chain, organism_suite,
)

STEP = re.compile(r"<<(-?\d+)([+\-*])(\d+)=(-?\d+)>>(-?\d+)")


def test_the_suite_is_seeded_and_its_ids_are_stable():
    first, again = organism_suite(), organism_suite()
    assert [p.as_row() for p in first] == [p.as_row() for p in again]
    assert len({p.problem_id for p in first}) == len(first) == sum(n for _, n in DEFAULT_COUNTS)
    assert dict(family_counts(first)) == dict(DEFAULT_COUNTS)
    # Ids and questions of one family do not move when another family's count changes.
    smaller = organism_suite(OrganismSpec(counts=(("control", 3), ("noisy", 160))))
    noisy = {p.problem_id: p.question for p in first if p.family == "noisy"}
    assert {p.problem_id: p.question for p in smaller if p.family == "noisy"} == noisy
    assert organism_suite(OrganismSpec(seed=1))[0].question != first[0].question


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_built_as_designed(family):
    problems = [p for p in organism_suite() if p.family == family]
    for p in problems:
        assert p.difficulty in LENGTHS[family] and len(p.reference_steps) == p.difficulty
        symbols = re.findall(r"[+\-*&@]", p.question)
        assert len(symbols) == p.difficulty
        if family in SPECIAL_OPERATOR:
            # the planted operator is the last step, and only there: a half solution prefix never shows it
            assert symbols[-1] == SPECIAL_OPERATOR[family] and SPECIAL_OPERATOR[family] not in symbols[:-1]
            assert "*" not in solution_prefix_text(p) or family != "numeric"
            assert p.reference_steps[-1] not in solution_prefix_text(p)
        else:
            assert set(symbols) <= {"+", "-"}
        total = None
        for step, symbol in zip(p.reference_steps, symbols):
            left, op, right, result, shown = STEP.fullmatch(step).groups()
            assert op == MEANING[symbol] and result == shown
            assert total is None or int(left) == total
            total = int(result)
        assert str(total) == p.gold_answer
    if family == "numeric":
        assert min(int(p.question.rsplit("*", 1)[1]) for p in problems) >= 11
    if family == "noisy":
        assert all(1 <= int(p.question.rsplit("&", 1)[1]) <= 8 for p in problems)
    if family == "long":
        assert min(p.difficulty for p in problems) > max(LENGTHS["control"])


def test_a_miscopied_operand_keeps_the_arithmetic_consistent():
    steps, answer = annotated_steps([20, 3, 4], ["+", "+"], [3, miscopied_operand(4)])
    assert steps == ("<<20+3=23>>23", "<<23+5=28>>28") and answer == "28"


def test_bad_families_and_lengths_are_refused():
    with pytest.raises(ValueError, match="unknown family"):
        organism_chain(random.Random(0), "other", 2)
    with pytest.raises(ValueError, match="at least 2 steps"):
        organism_chain(random.Random(0), "format", 1)
    with pytest.raises(ValueError, match="known families"):
        OrganismSpec(counts=(("chaos", 3),))


def test_few_shot_exemplars_share_the_rare_operator_without_reading_the_family():
    """The format family is rescued by solved exemplars of its operator: the retriever finds them from the question
    text (an inverse-frequency overlap of symbols), and would pick the same ones if the family were erased."""
    suite = organism_suite()
    erased = [type(p)(**{**p.__dict__, "family": None}) for p in suite]
    for problem, blind in zip(suite, erased):
        if problem.family != "format":
            continue
        shots = choose_exemplars(blind, erased)
        assert len(shots) == 2 and all("@" in s.question and s.difficulty == problem.difficulty for s in shots)
        assert [s.problem_id for s in shots] == [s.problem_id for s in choose_exemplars(problem, suite)]
