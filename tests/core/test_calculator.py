"""The calculator's parser: exact values, GSM8K's own annotations, and a clear refusal for everything else."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixability_dag.core import calculator
from fixability_dag.core.calculator import (
    MAX_DEPTH,
    MAX_EXPRESSION_CHARS,
    REASONS,
    CalculatorRefusal,
    calculate,
    evaluate,
    format_number,
)

GSM8K = Path(__file__).resolve().parents[1] / "data" / "gsm8k_train_first40.jsonl"


@pytest.mark.parametrize("expression, value", [
    ("23*17", "391"), ("2+3*4", "14"), ("(2+3)*4", "20"), ("10-3-2", "5"), ("48/2/3", "8"), ("-5+2", "-3"),
    ("--5", "5"), ("-(2+3)*-(1+1)", "10"), ("+30+46", "76"), (" 12 * ( 3 + 4 ) ", "84"), ("((((((1))))))", "1"),
    ("0.1+0.2", "0.3"), (".4*1000", "400"), ("2*20*.01", "0.4"), ("0.5*5", "2.5"), ("10/3", "3.333333"),
    ("2/3", "0.666667"), ("-2/3", "-0.666667"), ("1/8", "0.125"), ("1/3000000", "0"), ("-1/3000000", "0"),
    ("1,750+3,500", "5250"), ("1,000,000/4", "250000"), ("2.50*2", "5"), ("7.", "7"), ("007*2", "14"),
    ("999999999999999-1", "999999999999998"),
])
def test_values_are_exact_and_formatted_like_gsm8k(expression, value):
    assert calculate(expression) == value


def test_format_rounds_half_away_from_zero_at_six_places():
    assert format_number(Fraction(1, 2_000_000)) == "0.000001"
    assert format_number(Fraction(-1, 2_000_000)) == "-0.000001"
    assert format_number(Fraction(7, 2)) == "3.5" and format_number(Fraction(-12)) == "-12"


def test_every_annotation_of_the_gsm8k_sample_computes_to_its_stated_result():
    annotations = [m for line in GSM8K.read_text().splitlines()
                   for m in re.findall(r"<<([^=<>]*)=([^<>]*)>>", json.loads(line)["answer"])]
    assert len(annotations) > 100
    for expression, stated in annotations:
        assert evaluate(expression) == Fraction(stated.replace(",", "")), expression


@pytest.mark.parametrize("expression, reason", [
    ("", "empty"), ("   ", "empty"), ("2+", "malformed"), ("*3", "malformed"), ("2*/3", "malformed"),
    ("(2+3", "malformed"), ("2+3)", "malformed"), ("()", "malformed"), ("2 3", "malformed"), ("abc", "malformed"),
    ("2x3", "malformed"), ("9**9**9", "malformed"), ("2^10", "malformed"), ("50%", "malformed"),
    ("1e5", "malformed"), ("1=1", "malformed"), ("2\n+3", "malformed"), ("__import__('os')", "malformed"),
    (".", "malformed"), ("1.2.3", "malformed"), ("1,00", "malformed"), ("1234,567", "malformed"), ("1,2345", "malformed"),
    (",5", "malformed"), ("5,", "malformed"), ("½", "malformed"), ("٣+1", "malformed"),
    ("1/0", "division_by_zero"), ("5/(3-3)", "division_by_zero"), ("0/0.0", "division_by_zero"),
    ("9" * 16, "too_large"), ("9" * 40 + "*" + "9" * 40, "too_large"), ("99999999*99999999", "too_large"),
    ("1000000000000000", "too_large"), ("0.12345678901", "too_large"), ("1/7" + "/7" * 20, "too_large"),
    ("1" + "+1" * 100, "too_long"), ("(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1), "too_deep"),
])
def test_refusals_name_their_reason(expression, reason):
    with pytest.raises(CalculatorRefusal) as refused:
        calculate(expression)
    assert refused.value.reason == reason and str(refused.value).startswith(reason)
    if reason not in ("empty", "too_long"):
        assert repr(expression) in str(refused.value)  # the message quotes what was refused


def test_nesting_up_to_the_cap_computes_and_unary_chains_add_no_depth():
    assert calculate("(" * MAX_DEPTH + "2" + ")" * MAX_DEPTH) == "2"
    assert calculate("-" * (MAX_EXPRESSION_CHARS - 1) + "1") == "-1"  # 199 signs: odd, read in a loop


def test_intermediate_values_are_capped_not_just_the_result():
    with pytest.raises(CalculatorRefusal, match="too_large"):
        calculate("99999999*99999999/99999999")


def test_the_module_never_evaluates_text_as_python():
    source = Path(calculator.__file__).read_text()
    assert not re.search(r"\b(eval|exec|compile|literal_eval)\s*\(", source)


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="0123456789.,+-*/() x=", max_size=60) | st.text(max_size=60))
def test_any_string_computes_or_is_refused_with_a_known_reason(expression):
    try:
        result = calculate(expression)
    except CalculatorRefusal as refusal:
        assert refusal.reason in REASONS
    else:
        assert re.fullmatch(r"-?\d+(\.\d{1,6})?", result)


@settings(max_examples=200, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6), st.sampled_from("+-*/"))
def test_binary_operations_match_exact_fraction_arithmetic(a, b, op):
    expression = f"{a}{op}({b})"
    if op == "/" and b == 0:
        with pytest.raises(CalculatorRefusal, match="division_by_zero"):
            evaluate(expression)
        return
    expected = {"+": Fraction(a) + b, "-": Fraction(a) - b, "*": Fraction(a) * b, "/": Fraction(a, b or 1)}[op]
    assert evaluate(expression) == expected
