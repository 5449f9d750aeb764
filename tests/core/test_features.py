import math

import pandas as pd
import pytest

from fixability_dag.core.features import NO_ANSWER, answer_counts, compute_features, failed_problem_ids, pass_rates, problem_features
from fixability_dag.core.sampling import ROLLOUT_COLUMNS


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
    from fixability_dag.core.answers import canonical_answer, extract_answer

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
