
import pytest

from fixability_dag.core.problems import ArithmeticSuiteSpec, arithmetic_chain, arithmetic_suite


def test_arithmetic_chain_steps_evaluate_left_to_right():
    question, steps, answer = arithmetic_chain([23, 45, 12], ["+", "-"])
    assert question == "23+45-12"
    assert steps == ("23+45=68", "68-12=56")
    assert answer == "56"


def test_suite_is_seeded_and_templates_share_operators():
    spec = ArithmeticSuiteSpec(chain_lengths=(2, 3), templates_per_length=2, variants_per_template=3)
    first, again = arithmetic_suite(spec), arithmetic_suite(spec)
    assert first == again
    assert len(first) == 2 * 2 * 3
    assert len({p.problem_id for p in first}) == len(first)
    by_template = {}
    for p in first:
        ops = "".join(ch for ch in p.question if ch in "+-*")
        by_template.setdefault(p.template_id, set()).add(ops)
        assert p.difficulty == len(p.reference_steps)
        assert p.reference_steps[-1].endswith("=" + p.gold_answer)
    assert all(len(ops) == 1 for ops in by_template.values())
    assert arithmetic_suite(ArithmeticSuiteSpec(seed=1)) != arithmetic_suite(ArithmeticSuiteSpec(seed=2))


def test_suite_spec_rejects_bad_knobs():
    with pytest.raises(ValueError):
        ArithmeticSuiteSpec(chain_lengths=(0,))
    with pytest.raises(ValueError):
        ArithmeticSuiteSpec(operators=("/",))
