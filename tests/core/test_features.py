import math
import string

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixability_dag.core.answers import (
    canonical_answer,
    extract_answer,
)
from fixability_dag.core.features import (
    NO_ANSWER,
    answer_counts,
    compute_features,
    failed_problem_ids,
    pass_rates,
    problem_features,
)
from fixability_dag.core.sampling import ROLLOUT_COLUMNS

FEATURE_PROPERTIES = settings(deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow])
"""Feature properties build DataFrames: 50 examples each keep the file under a minute."""


def rollouts(pid, answers, correct=None, logprob=-0.5, finish="stop", phase="diagnostic"):
    rows = []
    for i, a in enumerate(answers):
        rows.append({"problem_id": pid, "phase": phase, "intervention": "retry", "sample_index": i, "seed": 1,
                     "text": "", "answer": a, "is_correct": bool(correct and correct[i]), "num_tokens": 10 + i,
                     "cumulative_logprob": logprob * (10 + i), "mean_logprob": logprob,
                     "finish_reason": finish if not isinstance(finish, list) else finish[i]})
    return pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)


def test_no_answer_is_its_own_category():
    counts = answer_counts(pd.Series(["1", None, float("nan"), "1"]))
    assert counts == {"1": 2, NO_ANSWER: 2}


@pytest.mark.parametrize("spelled", ["<no answer>", "no answer", "None", "nan", ""])
def test_an_answer_spelled_like_missing_is_still_an_answer(spelled):

    answer = canonical_answer(extract_answer(f"#### {spelled}"))
    stated = [answer] * 3 if answer is not None else []
    base = rollouts("p", [*stated, None])
    expected = 1.0 if answer is None else 0.25
    assert problem_features(base, None)["no_answer_rate"] == expected
    vectorised = compute_features(base, base.iloc[:0], ["p"])
    assert vectorised.loc[0, "no_answer_rate"] == expected
    assert NO_ANSWER not in {a for a in base["answer"] if a is not None}


def test_problem_features_concentrated_vs_dispersed():
    concentrated = problem_features(rollouts("a", ["7"] * 8, logprob=-0.1), rollouts("a", ["7"] * 4, phase="probe"))
    dispersed = problem_features(rollouts("b", [str(i) for i in range(8)], logprob=-2.0), rollouts("b", ["x", "y", "z", "w"], phase="probe"))
    assert concentrated["answer_dispersion"] == 0.0 and dispersed["answer_dispersion"] == pytest.approx(1.0)
    assert concentrated["policy_confidence"] == pytest.approx(-0.1)
    assert dispersed["policy_confidence"] == pytest.approx(-2.0)
    assert concentrated["probe_shift"] == 0.0 and dispersed["probe_shift"] == 1.0
    assert concentrated["top_wrong_share"] == 1.0 and dispersed["top_wrong_share"] == pytest.approx(1 / 8)


def test_truncation_and_no_answer_rates():
    f = problem_features(rollouts("c", ["1", None, None, "2"], finish=["stop", "length", "length", "stop"]), None)
    assert f["no_answer_rate"] == 0.5 and f["truncation_rate"] == 0.5
    assert math.isnan(f["probe_shift"])


def test_failed_problem_ids_and_features_frame():
    diag = pd.concat([
        rollouts("solved", ["1", "1"], correct=[True, False]),
        rollouts("failed", ["2", "3"]),
    ])
    assert failed_problem_ids(diag) == ["failed"]
    assert failed_problem_ids(diag, max_pass_rate=0.5) == ["failed", "solved"]
    rates = pass_rates(diag).set_index("problem_id")
    assert rates.loc["solved", "pass_rate"] == 0.5
    frame = compute_features(diag, diag.iloc[0:0], ["failed"])
    assert list(frame["problem_id"]) == ["failed"] and frame.loc[0, "base_samples"] == 2


def test_every_registered_feature_is_stored():
    from fixability_dag.core.features import ALL_FEATURES, FEATURES
    from fixability_dag.storage.schema import ProblemFeatures

    assert ALL_FEATURES[:3] == FEATURES
    assert set(ALL_FEATURES) <= set(ProblemFeatures.__table__.columns.keys())


# --- properties (hypothesis): features stay in their documented ranges and depend only on the answer
# distribution (not row order, not what the answers are called); the pass rate agrees with the counts ---

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


@FEATURE_PROPERTIES
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


@FEATURE_PROPERTIES
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


@FEATURE_PROPERTIES
@given(rollout_frame(), st.one_of(st.none(), rollout_frame(phase="probe", max_rows=6)), st.permutations(LABELS),
       st.text(string.ascii_letters, min_size=1, max_size=5))
def test_features_ignore_what_answers_are_called(base, probe, permuted, tag):
    rename = {old: f"{tag}:{new}" for old, new in zip(LABELS, permuted)}
    renamed = lambda frame: None if frame is None else frame.assign(answer=[None if pd.isna(a) else rename[a] for a in frame["answer"]])  # noqa: E731
    assert same(problem_features(base, probe), problem_features(renamed(base), renamed(probe)))


@FEATURE_PROPERTIES
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


@FEATURE_PROPERTIES
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
