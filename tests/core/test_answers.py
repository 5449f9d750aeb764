
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fixability_dag.core.answers import (
    MAX_ANSWER_CHARS,
    answer_region,
    answers_match,
    canonical_answer,
    extract_answer,
    grade,
)
from fixability_dag.testing.completion_styles import STYLES as COMPLETION_STYLES
from fixability_dag.testing.completion_styles import render, styles_for, wrong_answer

from tests.support import GSM8K_ROWS, MATH_ROWS

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


# -- the styles real post-trained models write (issue 13), one by one ----------------------------------------------
@pytest.mark.parametrize(
    "gold, completion, answer",
    [
        ("7.5", "So each costs 7.5 dollars. The answer is 7.5.", "7.5"),  # a lazy match once stopped at the first '.'
        ("18", "She earns 9 * 2 = 18 dollars.\nAnswer: 18", "18"),
        ("18", "She earns 9 * 2 = 18.\n\n**Final Answer:** 18", "18"),
        ("18", "She earns 9 * 2 dollars:\n\n**18**", "18"),
        ("18", "She earns 9 * 2 = 18. The answer is 18 dollars.", "18"),
        ("875", "500 + 375 = 875\n#### 875 apples", "875"),
        ("5", "Solving 2x = 10 gives x = 5.\nThe answer is x = 5.", "5"),
        ("4.5", "#### 9/2", "4.5"),
        (r"\frac{3}{4}", "The answer is 0.75.", "0.75"),
        ("3, 5, 7", "The primes are 3,5,7.\n#### 3,5,7", "3, 5, 7"),
        ("18", "9 * 2 = 18\n#### 18\n\nQ: Tom has 3 apples and buys 4 more. How many?\nA: 3 + 4 = 7\n#### 7", "18"),
        ("18", "<think>\nIs it 20? No, 9 * 2 = 18.\n</think>\n\nThe answer is 18.", "18"),
        ("18", "Final Answer: The final answer is $18$. I hope it is correct.", "18"),
        ("18", "So Janet makes **$18** every day at the farmers' market.", "18"),
        ("90^\\circ", "The angle is 90 degrees.\nThe answer is 90 degrees.", "90"),
        ("1,000", "#### $1,000.00", "1000"),
    ],
)
def test_real_completion_styles_grade_right(gold, completion, answer):
    assert grade(gold, completion) == (answer, True)


@pytest.mark.parametrize(
    "gold, completion",
    [
        ("18", "9 * 2 = 20\n#### 20\n\nQ: Tom has 3 apples and buys 4 more. How many?\nA: #### 18"),
        ("18", "<think>\nThe answer is 18.\n</think>\n\nThe answer is 20."),
        ("4.5", "#### 9/4"),
        ("3, 5, 7", "#### 3, 5"),
        ("5", "The answer is x = 6."),
        ("18", "The answer is 18.5 dollars."),
        ("1000", "#### 1, 000, 1"),
    ],
)
def test_near_misses_grade_wrong(gold, completion):
    assert grade(gold, completion)[1] is False


def test_answer_region_skips_thinking_and_invented_questions():
    assert answer_region("<think>x</think>A") == "A"
    assert answer_region("<think>still thinking, maybe 5") == ""  # stopped before answering: no answer
    assert extract_answer("<think>The answer is 5") is None
    assert answer_region("#### 3\n\nQuestion: next?\n#### 9").strip() == "#### 3"
    assert answer_region("Q: restated first\n#### 3") == "Q: restated first\n#### 3"  # only a *new* question cuts


def test_bold_headings_are_not_answers():
    assert extract_answer("**Step 1:** add them\nthen 18 in all") is None
    assert extract_answer("The total is **18** apples, then we add **2** more.") == "2"


# -- every real gold answer, in every style: GSM8K and MATH rows from tests/data ----------------------------------
REAL_GOLDS = [pytest.param(p.gold_answer, id=p.problem_id) for p in (*GSM8K_ROWS, *MATH_ROWS)]


@pytest.mark.parametrize("gold", REAL_GOLDS)
def test_every_real_gold_grades_right_in_every_style_and_wrong_answers_wrong(gold):
    assert answers_match(gold, gold) and answers_match(gold, f" {gold} ")
    wrong = wrong_answer(gold)
    assert not answers_match(gold, wrong), (gold, wrong)
    for style in styles_for(gold):
        right = render(style, gold, decoy=wrong)
        assert grade(gold, right)[1], (style, right)
        miss = render(style, wrong, decoy=gold)  # the gold sits where the grader must not look (think, run-on)
        assert not grade(gold, miss)[1], (style, miss)


def test_the_real_slices_cover_the_hard_shapes():
    """The fixture rows carry the shapes the grader must hold on; a smaller slice would silently test less."""
    golds = {p.gold_answer for p in MATH_ROWS}
    assert {"x=5", "3, 5, 7", "1,-2", "1.25", "90^\\circ", "\\text{Evelyn}", "\\frac{14}{3}", "52_8"} <= golds
    assert len(GSM8K_ROWS) == 40 and len(MATH_ROWS) == 60
    assert all(len(styles_for(p.gold_answer)) == len(COMPLETION_STYLES) for p in GSM8K_ROWS)


@pytest.mark.parametrize(
    "a, b, equal",
    [("9/2", "4.5", True), ("0.75", "3/4", True), (r"\frac{3}{4}", "0.75", True), (r"-\frac{1}{2}", "-0.5", True),
     ("1/3", "0.333", False), ("3,5,7", "3, 5, 7", True), ("3, 5, 7", "7,5,3", True), ("3,5,7", "3,5", False),
     ("x = 5", "5", True), ("x=5", "y = 6", False), ("**18**", "18", True), ("18 dollars", "$18", True),
     ("5 \\text{ cm}^2", "5", True), ("1,000", "1000", True), ("1,000", "1,0000", False), ("Evelyn", r"\text{Evelyn}", True)],
)
def test_values_compare_by_value_not_spelling(a, b, equal):
    assert answers_match(a, b) is equal and answers_match(b, a) is equal


def test_one_value_one_category():
    """The answer distribution's categories: every spelling of a value is one key."""
    assert canonical_answer("9/2") == canonical_answer("4.5") == canonical_answer(r"\frac{9}{2}") == "4.5"
    assert canonical_answer("1/3") == "1/3" and canonical_answer("2/6") == "1/3"
    assert canonical_answer("3,5,7") == canonical_answer("3, 5, 7") == "3, 5, 7"
    assert canonical_answer("x = 5") == canonical_answer("875 apples".replace("875", "5")) == "5"


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


def test_a_bare_marker_line_before_the_final_one_is_not_part_of_the_answer():
    """Found by the property test above (prefix "####"): the marker's whitespace ran over the line end."""
    assert extract_answer("####\n#### 0") == "0"
    assert extract_answer("#### #### 5") == "5"
    assert extract_answer("####\n42") == "42"
