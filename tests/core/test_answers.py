import pytest
from hypothesis import given
from hypothesis import strategies as st

from fixability_dag.core.answers import answers_match, canonical_answer, extract_answer, grade


@pytest.mark.parametrize(
    "text, expected",
    [
        ("23+45=68\n#### 68", "68"),
        ("#### 1\nwait\n#### 2", "2"),
        (r"so the result is \boxed{\frac{3}{4}}", r"\frac{3}{4}"),
        ("The answer is 42.", "42"),
        ("23+45=68\n68-1=67", None),  # no stated final answer is its own category
        ("####   \n", None),
        ("#### ４２", "42"),  # fullwidth digits fold to ASCII
        ("#### 4\x002", "42"),  # control characters dropped
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_last_number_fallback_is_opt_in():
    assert extract_answer("we get 17 in the end") is None
    assert extract_answer("we get 17 in the end", last_number_fallback=True) == "17"


@pytest.mark.parametrize(
    "raw, canonical",
    [("1,000", "1000"), ("$1000", "1000"), ("1000.0", "1000"), ("-0", "0"), ("+7", "7"), ("0.50", "0.5"), ("12%", "12"),
     ("  x + 1 ", "x + 1"), (None, None)],
)
def test_canonical_answer(raw, canonical):
    assert canonical_answer(raw) == canonical


def test_answers_match_numbers_and_latex():
    assert answers_match("56", "56.0")
    assert answers_match("1,000", "$1000")
    assert not answers_match("56", "65")
    assert not answers_match("56", None)
    assert answers_match(r"\frac{1}{2}", "0.5")
    assert answers_match(r"\frac{1}{2}", r"\dfrac{1}{2}")
    assert not answers_match(r"\frac{1}{2}", r"\frac{1}{3}")


def test_model_output_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    payload = f"#### __import__('pathlib').Path({str(marker)!r}).touch()"
    answer, correct = grade("0", payload)
    assert not correct
    assert not marker.exists()
    assert answer.startswith("__import__")


def test_enormous_output_is_bounded():
    answer, correct = grade("7", "9" * 100_000 + "\n#### " + "1" * 5000)
    assert not correct and len(answer) <= 200


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_integer_spellings_agree(n):
    spelled = f"{n:,}"
    assert canonical_answer(spelled) == canonical_answer(str(n)) == str(n)
    assert grade(str(n), f"steps\n#### {spelled}") == (str(n), True)


@given(st.text(max_size=300))
def test_extraction_never_raises_on_arbitrary_text(text):
    answer = extract_answer(text)
    assert answer is None or (0 < len(answer) <= 200)
    grade("1", text)
