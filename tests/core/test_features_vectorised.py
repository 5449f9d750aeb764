"""The vectorised ``compute_features`` must equal the per-problem definitions (``compute_features_per_problem``,
the pre-vectorisation code unchanged) on awkward frames."""

import numpy as np
import pandas as pd
import pytest

from fixability_dag.core import features as F
from fixability_dag.core.features import ALL_FEATURES, compute_features
from fixability_dag.core.features import compute_features_per_problem as per_problem
from fixability_dag.core.sampling import ROLLOUT_COLUMNS
from fixability_dag.testing.synthetic import planted_frames


def random_frame(rng, problems, phase, answer_pool, max_samples, missing_logprob=0.1):
    """Rollouts with 1..max_samples samples per problem, answers drawn from a small pool with None/NaN holes."""
    rows = []
    for pid in problems:
        for j in range(int(rng.integers(1, max_samples + 1))):
            answer = answer_pool[int(rng.integers(len(answer_pool)))]
            rows.append({
                "problem_id": pid, "phase": phase, "intervention": "retry", "sample_index": j, "seed": 0,
                "text": "x", "answer": answer, "is_correct": bool(rng.random() < 0.2),
                "num_tokens": int(rng.integers(1, 90)), "cumulative_logprob": None,
                "mean_logprob": None if rng.random() < missing_logprob else float(rng.normal(-1, 0.5)),
                "finish_reason": ["stop", "length", None][int(rng.integers(3))],
            })
    return pd.DataFrame(rows, columns=ROLLOUT_COLUMNS)


def assert_same(fast, slow, skip=()):
    assert list(fast.columns) == list(slow.columns)
    assert list(fast["problem_id"]) == list(slow["problem_id"])
    assert list(fast["base_samples"]) == list(slow["base_samples"])
    for column in ["base_pass_rate", *(f for f in ALL_FEATURES if f not in skip)]:
        np.testing.assert_allclose(fast[column].to_numpy(float), slow[column].to_numpy(float), rtol=1e-12, atol=1e-15,
                                   equal_nan=True, err_msg=column)


POOLS = {
    "strings": ["1", "2", "3", "17", "-4", None, float("nan"), "<no answer>"],
    "mixed_types": [1, "1", 1.0, True, "True", None, 2, "2.0"],  # equal under ==, different under str()
}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("pool", sorted(POOLS))
def test_vectorised_equals_per_problem_on_random_frames(seed, pool):
    rng = np.random.default_rng(seed)
    pids = [f"p{i}" for i in range(40)]
    diagnostic = random_frame(rng, pids, "diagnostic", POOLS[pool], max_samples=12)
    probe = random_frame(rng, pids[::3] + ["not-failed"], "probe", POOLS[pool], max_samples=5)
    wanted = sorted(rng.choice(pids, size=30, replace=False).tolist())
    assert_same(compute_features(diagnostic, probe, wanted), per_problem(diagnostic, probe, wanted))
    # without any probe rollouts, and with an all-correct problem (confidence then averages every sample)
    diagnostic.loc[diagnostic["problem_id"] == wanted[0], "is_correct"] = True
    empty = diagnostic.iloc[0:0]
    assert_same(compute_features(diagnostic, empty, wanted), per_problem(diagnostic, empty, wanted))


def test_vectorised_equals_per_problem_on_planted_frames_with_string_dtype():
    diagnostic, probe, labels = planted_frames(problems=60, n_samples=16, probe_samples=4, seed=3, no_answer_rate=0.2)
    wanted = sorted(labels)[5:]
    assert_same(compute_features(diagnostic, probe, wanted), per_problem(diagnostic, probe, wanted))


def test_repeated_ids_and_missing_problem():
    rng = np.random.default_rng(0)
    diagnostic = random_frame(rng, ["a", "b"], "diagnostic", POOLS["strings"], max_samples=4)
    fast = compute_features(diagnostic, diagnostic.iloc[0:0], ["b", "a", "b"])
    assert_same(fast, per_problem(diagnostic, diagnostic.iloc[0:0], ["b", "a", "b"]))
    with pytest.raises(ValueError, match="'zzz'"):
        compute_features(diagnostic, diagnostic.iloc[0:0], ["a", "zzz"])


def test_feature_without_vectorised_twin_falls_back_to_its_function(monkeypatch):
    rng = np.random.default_rng(1)
    diagnostic = random_frame(rng, ["a", "b", "c"], "diagnostic", POOLS["strings"], max_samples=8)
    probe = random_frame(rng, ["a", "c"], "probe", POOLS["strings"], max_samples=4)
    expected = per_problem(diagnostic, probe, ["a", "b", "c"])
    for name in ("probe_shift", "policy_confidence"):
        monkeypatch.delitem(F.VECTORISED, name)
    monkeypatch.setitem(F.FEATURE_FUNCTIONS, "probe_shift", lambda g: -1.0)  # proves the function is the one called
    fast = compute_features(diagnostic, probe, ["a", "b", "c"])
    assert (fast["probe_shift"] == -1.0).all()
    assert_same(fast, expected, skip=("probe_shift",))
