import numpy as np
import pandas as pd
import pytest

from fixability_dag.core.features import FEATURES, compute_features
from fixability_dag.core.regimes import (
    REGIMES,
    balanced_accuracy,
    cluster,
    clustering_accuracy,
    feature_matrix,
    fit_regime_model,
    ground_truth,
    intervention_outcomes,
    label_regimes,
    predict_regimes,
    supervised_accuracy,
    trace_reading_accuracy,
)
from fixability_dag.core.stats import majority_share
from fixability_dag.testing.synthetic import planted_rollouts


def outcome_rows(pid, rescued_by, interventions=("retry", "temp_low", "solution_prefix")):
    return [{"problem_id": pid, "intervention": name, "samples": 4, "correct": int(name in rescued_by),
             "rescued": name in rescued_by, "majority_answer": "1", "majority_correct": False, "tokens": 40}
            for name in interventions]


def test_ground_truth_rules():
    outcomes = pd.DataFrame(outcome_rows("a", {"retry", "solution_prefix"}) + outcome_rows("b", {"solution_prefix"}) + outcome_rows("c", set()))
    truth = ground_truth(outcomes, ["a", "b", "c"]).set_index("problem_id")
    assert truth.loc["a", "true_regime"] == "retry_recoverable"
    assert truth.loc["b", "true_regime"] == "steerable_hard"
    assert truth.loc["c", "true_regime"] == "structural"
    assert truth.loc["a", "rescued_by"] == ["retry", "solution_prefix"]
    with pytest.raises(ValueError, match="no rescue outcomes"):
        ground_truth(outcomes, ["missing"])


def test_intervention_outcomes_majority_vote():
    rows = pd.DataFrame({
        "problem_id": ["p"] * 5, "intervention": ["retry"] * 5, "answer": ["3", "3", "4", None, "3"],
        "is_correct": [False, False, True, False, False], "num_tokens": [5] * 5,
    })
    [out] = intervention_outcomes(rows).to_dict("records")
    assert out["rescued"] and out["correct"] == 1 and out["samples"] == 5 and out["tokens"] == 25
    assert out["majority_answer"] == "3" and not out["majority_correct"]


def planted(signal: bool, seed: int = 0):
    diag, probe, labels = planted_rollouts(per_regime=30, seed=seed, signal=signal)
    features = compute_features(diag, probe, sorted(labels))
    y = [labels[p] for p in features["problem_id"]]
    return features, y, diag


def test_planted_regimes_are_recovered_without_labels():
    features, y, _ = planted(signal=True)
    X = feature_matrix(features, FEATURES)
    result = clustering_accuracy(X, y, "gmm", seeds=3, bootstraps=5)
    assert result["accuracy"] >= 0.9 and result["balanced_accuracy"] >= 0.9, result
    assert result["accuracy"] >= majority_share(y) + 0.3
    assert result["accuracy"] > result["null_q95"] + 0.3 and result["null_p"] < 0.01  # far above the shuffled null
    assert result["seed_std"] >= 0 and result["accuracy_std"] >= 0 and result["runs"] == 3 + 5
    km = clustering_accuracy(X, y, "kmeans", seeds=3, bootstraps=5)
    assert km["accuracy"] >= 0.9, km


def test_without_regime_signal_accuracy_falls_to_majority_baseline():
    scores, nulls, p_values = [], [], []
    for seed in range(3):
        features, y, _ = planted(signal=False, seed=seed)
        X = feature_matrix(features, FEATURES)
        result = clustering_accuracy(X, y, "gmm", seeds=2, bootstraps=3)
        scores.append(result["accuracy"])
        nulls.append(result["null_mean"])
        p_values.append(result["null_p"])
    # Hungarian matching of 3 clusters to 3 balanced labels has a small optimistic bias; chance is 1/3.
    assert np.mean(scores) <= majority_share(y) + 0.12, scores
    # the shuffled-label null of the same procedure absorbs that bias: no signal, no margin over the null
    assert abs(np.mean(scores) - np.mean(nulls)) <= 0.05 and np.mean(p_values) > 0.1, (scores, nulls, p_values)


def test_label_regimes_matches_clusters_to_regimes():
    features, y, _ = planted(signal=True)
    truth = pd.DataFrame({"problem_id": features["problem_id"], "true_regime": y, "rescued_by": [[]] * len(y), "majority_rescued_by": [[]] * len(y)})
    labels = label_regimes(features, truth, FEATURES)
    assert set(labels["cluster_regime"]) <= set(REGIMES)
    assert (labels["cluster_regime"] == labels["true_regime"]).mean() >= 0.9


def test_trace_reading_baseline_runs_on_text():
    features, y, diag = planted(signal=True)
    texts = diag.groupby("problem_id")["text"].apply(" ".join).to_dict()
    result = trace_reading_accuracy([texts[p] for p in features["problem_id"]], y, permutations=5)
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["balanced_accuracy"] <= 1.0
    assert 0.0 <= result["balanced_null_mean"] <= 1.0 and result["runs"] == 5


def test_balanced_accuracy_gives_any_constant_guess_one_over_the_classes():
    labels = ["structural"] * 8 + ["retry_recoverable"] + ["steerable_hard"]
    assert balanced_accuracy(["structural"] * 10, labels) == pytest.approx(1 / 3)
    assert balanced_accuracy(labels, labels) == 1.0
    assert balanced_accuracy(["structural"] * 9 + ["steerable_hard"], labels) == pytest.approx((1 + 0 + 1) / 3)


def test_the_null_of_forced_clusters_is_neither_a_third_nor_the_majority_share():
    # 3 forced clusters Hungarian-matched to 80/10/10 labels: the matching's pick of the best label map puts chance
    # above 1/3, and the cluster sizes, not the majority share (0.8), bound it; only the null says what noise scores
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    y = ["structural"] * 48 + ["retry_recoverable"] * 6 + ["steerable_hard"] * 6
    result = clustering_accuracy(X, y, "gmm", seeds=2, bootstraps=3, permutations=100)
    assert 0.38 <= result["null_mean"] <= 0.7 and result["null_q95"] >= result["null_mean"]
    assert result["null_p"] > 0.05 and result["accuracy"] <= result["null_q95"] + 0.05  # noise does not beat its null


def test_too_few_problems_per_class_says_why_instead_of_nan():
    result = supervised_accuracy(np.zeros((3, 2)), ["a", "a", "b"], permutations=2)
    assert np.isnan(result["accuracy"]) and "too few problems per regime" in result["note"]


def test_a_regime_model_transfers_between_checkpoints_with_the_same_regimes():
    source, y_src, _ = planted(signal=True, seed=0)
    target, y_tgt, _ = planted(signal=True, seed=1)
    truth = pd.DataFrame({"problem_id": source["problem_id"], "true_regime": y_src})
    model = fit_regime_model(source, truth, FEATURES)
    predicted = predict_regimes(model, target)
    assert np.mean([p == y for p, y in zip(predicted, y_tgt)]) >= 0.9
    # a source without regime structure carries nothing useful to the target
    flat, y_flat, _ = planted(signal=False, seed=2)
    flat_model = fit_regime_model(flat, pd.DataFrame({"problem_id": flat["problem_id"], "true_regime": y_flat}), FEATURES)
    assert np.mean([p == y for p, y in zip(predict_regimes(flat_model, target), y_tgt)]) < 0.7


@pytest.mark.parametrize("method", ["gmm", "kmeans"])
@pytest.mark.parametrize("points", [0, 1, 2])
def test_clustering_fewer_points_than_regimes_never_raises(method, points):
    """sklearn refuses to fit a mixture to one sample; a checkpoint failing one problem must still be labelled."""
    X = np.arange(points * 3, dtype=float).reshape(points, 3)
    clusters = cluster(X, 3, method)
    assert len(clusters) == points and len(set(clusters)) == points  # one cluster per point, as documented
