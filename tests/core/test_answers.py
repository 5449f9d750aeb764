
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fixability_dag.core.answers import (
    MAX_ANSWER_CHARS,
    answers_match,
    canonical_answer,
    extract_answer,
    grade,
)

ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())  # surrogates and controls too
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


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


# --- properties (hypothesis): extraction never raises on anything a model can emit, reads back any number in
# any spelling we accept, and grades equivalent spellings symmetrically ---

# -- answer extraction ------------------------------------------------------------------------------------------
@SLOW
@given(st.text(ANY_CHAR, max_size=400), st.booleans())
def test_extraction_never_raises_and_stays_bounded(text, fallback):
    answer = extract_answer(text, last_number_fallback=fallback)
    assert answer is None or 0 < len(answer) <= MAX_ANSWER_CHARS
    canonical = canonical_answer(answer)
    assert canonical is None or len(canonical) <= MAX_ANSWER_CHARS
    assert "\x00" not in (canonical or "")
    grade("1", text, fallback)


@settings(deadline=None, max_examples=25)
@given(st.text(ANY_CHAR, min_size=1, max_size=40), st.integers(2_000, 8_000), st.sampled_from(["", "\n#### 12", "\\boxed{", "answer is "]))
def test_huge_outputs_are_handled(chunk, repeat, tail):
    text = chunk * repeat + tail
    answer = extract_answer(text)
    assert answer is None or len(answer) <= MAX_ANSWER_CHARS
    if tail == "\n#### 12" and "\n" not in chunk[-1:]:
        assert canonical_answer(answer) in ("12", None) or answer.endswith("12")


ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
FULLWIDTH = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19")


@st.composite
def numbers(draw):
    """(canonical text, decimal-free integer part, fractional digits) of a random number."""
    integer = draw(st.integers(min_value=-10**40, max_value=10**40))
    fraction = draw(st.text("0123456789", max_size=8))
    fraction = fraction.rstrip("0")
    if integer == 0 and not fraction:
        return "0", 0, ""
    sign = "-" if integer < 0 or (integer == 0 and draw(st.booleans())) else ""
    canonical = f"{sign}{abs(integer)}" + (f".{fraction}" if fraction else "")
    return canonical, integer, fraction


def spell(integer: int, fraction: str, negative: bool, style: str, zeros: int) -> str:
    body = f"{abs(integer):,}" if style == "commas" else str(abs(integer))
    if fraction or zeros:
        body += "." + fraction + "0" * zeros
    body = ("-" if negative else "") + body
    if style == "dollar":
        body = ("-$" + body[1:]) if negative else "$" + body
    elif style == "plus" and not negative:
        body = "+" + body
    elif style == "arabic":
        body = body.translate(ARABIC_INDIC)
    elif style == "fullwidth":
        body = body.translate(FULLWIDTH)
    elif style == "unicode_minus" and negative:
        body = "\u2212" + body[1:]
    return body


STYLES = st.sampled_from(["plain", "commas", "dollar", "plus", "arabic", "fullwidth", "unicode_minus"])
PREFIX = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@SLOW
@given(numbers(), STYLES, st.integers(0, 4), PREFIX, st.sampled_from(["", " ", "\n", "  \n"]))
def test_a_number_embedded_in_random_text_reads_back(number, style, zeros, prefix, suffix):
    canonical, integer, fraction = number
    negative = canonical.startswith("-")
    spelled = spell(integer, fraction, negative, style, zeros)
    text = f"{prefix}\n#### {spelled}{suffix}"
    assert canonical_answer(extract_answer(text)) == canonical, (text, spelled)
    assert grade(canonical, text) == (canonical, True)


@SLOW
@given(numbers(), STYLES, STYLES, st.integers(0, 3), st.integers(0, 3))
def test_grading_is_symmetric_across_equivalent_spellings(number, style_a, style_b, zeros_a, zeros_b):
    canonical, integer, fraction = number
    negative = canonical.startswith("-")
    a, b = spell(integer, fraction, negative, style_a, zeros_a), spell(integer, fraction, negative, style_b, zeros_b)
    assert answers_match(a, b) and answers_match(b, a)
    assert canonical_answer(a) == canonical_answer(b) == canonical


@given(st.integers(-10**80, 10**80), st.integers(-10**80, 10**80))
def test_different_numbers_never_match_however_long(x, y):
    assume(x != y)
    assert not answers_match(str(x), str(y)) and not answers_match(str(y), str(x))
    assert answers_match(str(x), f"{x}.000") and answers_match(f"{x:,}", str(x))


@given(st.sampled_from(["3", "3.0", "3.00", "+3", "03", "3.", "$3", "3%"]), st.sampled_from(["3", "3.0", "3.00", "+3", "03", "$3"]))
def test_three_is_three(a, b):
    assert answers_match(a, b) == answers_match(b, a) is True


# -- feature math ---------------------------------------------------------------------------------------------------
