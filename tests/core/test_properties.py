"""Property-based tests (hypothesis): answer extraction on arbitrary model output, and the feature math.

Answer extraction must never raise on anything a model can emit, must read back any number it is shown in any of
the spellings we accept, and must grade equivalent spellings symmetrically. The features must stay in their
documented ranges and depend only on the answer *distribution*: not on row order, not on what the answers are
called, and the pass rate must agree with the counts.
"""

import math
import string

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fixability_dag.core.answers import MAX_ANSWER_CHARS, answers_match, canonical_answer, extract_answer, grade
from fixability_dag.core.features import compute_features, failed_problem_ids, pass_rates, problem_features
from fixability_dag.core.sampling import ROLLOUT_COLUMNS

ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())  # surrogates and controls too
SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEATURES = settings(deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow])
"""Feature properties build DataFrames: 50 examples each keep the file under a minute."""


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
LABELS = ["1", "2", "3", "17", "x+1", "-4"]


@st.composite
def rollout_frame(draw, problems=("p0",), phase="diagnostic", min_rows=1, max_rows=20):
    rows = []
    for pid in problems:
        n = draw(st.integers(min_rows, max_rows))
        for i in range(n):
            answer = draw(st.one_of(st.none(), st.sampled_from(LABELS)))
            tokens = draw(st.integers(1, 512))
            mean_lp = draw(st.floats(-20.0, 0.0, allow_nan=False))
            rows.append({"problem_id": pid, "phase": phase, "intervention": "retry", "sample_index": i, "seed": 1, "text": "",
                         "answer": answer, "is_correct": draw(st.booleans()), "num_tokens": tokens,
                         "cumulative_logprob": mean_lp * tokens, "mean_logprob": mean_lp,
                         "finish_reason": draw(st.sampled_from(["stop", "length"]))})
    return pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)


def same(a: dict, b: dict) -> bool:
    return all((math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) for k in a)


UNIT = ("answer_dispersion", "probe_shift", "top_wrong_share", "no_answer_rate", "truncation_rate", "probe_dispersion")


@FEATURES
@given(rollout_frame(), st.one_of(st.none(), rollout_frame(phase="probe", max_rows=6)))
def test_features_stay_in_their_ranges(base, probe):
    f = problem_features(base, probe)
    for name in UNIT:
        assert math.isnan(f[name]) or 0.0 <= f[name] <= 1.0 + 1e-12, (name, f[name])
    assert math.isnan(f["probe_shift"]) == math.isnan(f["probe_dispersion"]) == (probe is None)
    distinct = base["answer"].nunique(dropna=True) + int(base["answer"].isna().any())  # "no answer" is a category
    assert f["distinct_answers"] == distinct and 1 <= distinct <= len(base)
    assert (f["answer_dispersion"] == 0.0) == (distinct == 1)
    assert (f["answer_dispersion"] > 1 - 1e-9) == (distinct == len(base) > 1)
    assert base["num_tokens"].min() - 1e-9 <= f["mean_tokens"] <= base["num_tokens"].max() + 1e-9
    assert f["tokens_cv"] >= 0.0
    assert -20.0 - 1e-9 <= f["policy_confidence"] <= 1e-9
    assert math.isclose(f["no_answer_rate"], base["answer"].isna().mean())
    assert math.isclose(f["truncation_rate"], (base["finish_reason"] == "length").mean())


@FEATURES
@given(rollout_frame(), st.one_of(st.none(), rollout_frame(phase="probe", max_rows=6)), st.randoms(use_true_random=False))
def test_features_ignore_row_order(base, probe, rnd):
    order = list(range(len(base)))
    rnd.shuffle(order)
    shuffled_probe = None
    if probe is not None:
        probe_order = list(range(len(probe)))
        rnd.shuffle(probe_order)
        shuffled_probe = probe.iloc[probe_order].reset_index(drop=True)
    assert same(problem_features(base, probe), problem_features(base.iloc[order].reset_index(drop=True), shuffled_probe))


@FEATURES
@given(rollout_frame(), st.one_of(st.none(), rollout_frame(phase="probe", max_rows=6)), st.permutations(LABELS),
       st.text(string.ascii_letters, min_size=1, max_size=5))
def test_features_ignore_what_answers_are_called(base, probe, permuted, tag):
    rename = {old: f"{tag}:{new}" for old, new in zip(LABELS, permuted)}
    renamed = lambda frame: None if frame is None else frame.assign(answer=[None if pd.isna(a) else rename[a] for a in frame["answer"]])  # noqa: E731
    assert same(problem_features(base, probe), problem_features(renamed(base), renamed(probe)))


@FEATURES
@given(st.integers(1, 5).flatmap(lambda k: rollout_frame(problems=tuple(f"p{i}" for i in range(k)))), st.floats(0.0, 1.0))
def test_pass_rates_agree_with_counts_and_thresholds(diagnostic, threshold):
    rates = pass_rates(diagnostic).set_index("problem_id")
    for pid, group in diagnostic.groupby("problem_id"):
        assert rates.loc[pid, "n"] == len(group) and rates.loc[pid, "correct"] == group["is_correct"].sum()
        assert math.isclose(rates.loc[pid, "pass_rate"], group["is_correct"].sum() / len(group))
        assert 0.0 <= rates.loc[pid, "pass_rate"] <= 1.0
    failed = failed_problem_ids(diagnostic, threshold)
    assert failed == sorted(pid for pid in rates.index if rates.loc[pid, "pass_rate"] <= threshold)
    if failed:
        frame = compute_features(diagnostic, diagnostic.iloc[0:0], failed).set_index("problem_id")
        assert list(frame.index) == failed
        assert np.allclose(frame["base_pass_rate"], rates.loc[failed, "pass_rate"])
        assert (frame["base_samples"] == rates.loc[failed, "n"]).all()


@FEATURES
@given(st.integers(1, 4).flatmap(lambda k: rollout_frame(problems=tuple(f"p{i}" for i in range(k)))),
       st.integers(1, 4).flatmap(lambda k: rollout_frame(problems=tuple(f"p{i}" for i in range(k)), phase="probe", max_rows=5)),
       st.randoms(use_true_random=False))
def test_batch_features_ignore_row_order_and_match_per_problem_features(diagnostic, probe, rnd):
    ids = sorted(diagnostic["problem_id"].unique())
    order = list(range(len(diagnostic)))
    rnd.shuffle(order)
    first = compute_features(diagnostic, probe, ids).set_index("problem_id")
    again = compute_features(diagnostic.iloc[order].reset_index(drop=True), probe.iloc[::-1].reset_index(drop=True), ids).set_index("problem_id")
    pd.testing.assert_frame_equal(first, again.loc[first.index], check_exact=False, rtol=1e-9)
    for pid in ids:
        single = problem_features(diagnostic[diagnostic["problem_id"] == pid], probe[probe["problem_id"] == pid] if pid in set(probe["problem_id"]) else None)
        assert same(single, {k: float(first.loc[pid, k]) for k in single})
