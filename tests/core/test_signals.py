from collections import Counter

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit
from scipy.stats import betabinom
from sklearn.metrics import roc_auc_score

from fixability_dag.core.signals import (
    _log_betabinom,
    answer_dispersion,
    permutation_null_tv,
    retry_headroom,
    shift_features,
)
from fixability_dag.core.stats import corrected_shift, normalized_entropy, prob_success_within, total_variation
from fixability_dag.testing.synthetic import planted_catalog_frames

FOUR_ANSWERS = (["12", "8", None, "7"], [0.3, 0.3, 0.2, 0.2])
LONG_TAIL = (["top", *(f"rare{i}" for i in range(50))], [0.5] + [0.01] * 50)


def permutation_corrected(base, probe, seed=0, draws=200):
    return total_variation(Counter(base), Counter(probe)) - permutation_null_tv(base, probe, draws=draws, seed=seed)


def test_permutation_null_known_values():
    assert permutation_null_tv(["a"], ["b"]) == 1.0  # a pool of two distinct answers split 1/1: always TV 1
    # pool {a, a, b} split 2/1: the single one is b (1/3, TV 1) or a (2/3, TV 1/2): E = 2/3
    assert permutation_null_tv(["a", "a"], ["b"], draws=20_000) == pytest.approx(2 / 3, abs=0.01)
    assert permutation_null_tv(["a"] * 16, ["a"] * 4) == 0.0
    # None is one more answer, and only equality of answers matters
    assert permutation_null_tv([None, None, "3"], ["3"], seed=4) == permutation_null_tv(["x", "x", "y"], ["y"], seed=4)
    with pytest.raises(ValueError):
        permutation_null_tv([], ["a"])


@pytest.mark.parametrize("answers, probs", [FOUR_ANSWERS, LONG_TAIL], ids=["four answers", "long tail"])
def test_permutation_corrected_shift_is_unbiased_without_a_shift(answers, probs):
    """Base (16) and probe (4) from one distribution: observed TV minus the permutation null averages to 0, also
    on the long-tailed distribution where the parametric plug-in null (stats.corrected_shift) reads about +0.1."""
    rng = np.random.default_rng(0)
    index = np.arange(len(answers))
    permutation, parametric = [], []
    for rep in range(400):
        base = [answers[i] for i in rng.choice(index, 16, p=probs)]
        probe = [answers[i] for i in rng.choice(index, 4, p=probs)]
        permutation.append(permutation_corrected(base, probe, seed=rep))
        parametric.append(corrected_shift(Counter(base), Counter(probe), seed=rep))
    assert abs(np.mean(permutation)) < 0.02
    if answers is LONG_TAIL[0]:
        assert np.mean(parametric) > 0.07  # the reason the permutation null was chosen


def test_permutation_corrected_shift_sees_a_real_shift():
    assert permutation_corrected(["12"] * 12 + [None] * 4, ["new"] * 4) > 0.5
    assert permutation_corrected(["12"] * 14 + ["9", "8"], ["new", "new", "other", "new"]) > 0.5
    assert permutation_corrected(["12"] * 16, ["12"] * 4) == 0.0


def rollouts(problem_ids, answers, **columns):
    return pd.DataFrame({"problem_id": problem_ids, "answer": pd.Series(answers, dtype=object), **columns})


def test_shift_features_per_intervention_and_missing_probes():
    rng = np.random.default_rng(1)
    base_answers = {"p0": ["a"] * 14 + ["b", None], "p1": list("abcdefgh") * 2, "p2": ["z"] * 16}
    diagnostic = rollouts([p for p in base_answers for _ in range(16)], sum(base_answers.values(), []))
    probe_answers = {("p0", "few_shot"): ["q", "r", "q", "a"], ("p0", "greedy"): ["a"] * 4,
                     ("p1", "few_shot"): list(rng.choice(list("abcdefgh"), 4)), ("p2", "greedy"): ["z", "z", "z", "y"]}
    probe = rollouts([p for (p, _) in probe_answers for _ in range(4)], sum(probe_answers.values(), []),
                     intervention=[i for (_, i) in probe_answers for _ in range(4)])
    frame = shift_features(diagnostic, probe, ["p0", "p1", "p2"], ["few_shot", "greedy"], draws=4000)
    frame = frame.set_index("problem_id")
    assert list(frame.columns) == ["shift_few_shot", "shift_greedy"]
    assert np.isnan(frame.loc["p2", "shift_few_shot"]) and np.isnan(frame.loc["p1", "shift_greedy"])
    for (pid, name), answers in probe_answers.items():
        expected = permutation_corrected(base_answers[pid], answers, draws=4000)
        assert frame.loc[pid, f"shift_{name}"] == pytest.approx(expected, abs=0.02), (pid, name)
    assert frame.loc["p0", "shift_few_shot"] > 0.3 and abs(frame.loc["p0", "shift_greedy"]) < 0.1


def test_shift_features_never_read_correctness_and_are_seeded():
    plant = planted_catalog_frames(n_per_regime=6, n_easy=0, seed=3)
    names = sorted(set(plant.probe["intervention"]))
    first = shift_features(plant.diagnostic, plant.probe, plant.failed, names, seed=5)
    shuffled = plant.probe.assign(is_correct=np.random.default_rng(0).permutation(plant.probe["is_correct"].to_numpy()))
    blind = shift_features(plant.diagnostic.drop(columns="is_correct"), shuffled, plant.failed, names, seed=5)
    assert first.equals(blind)
    assert not first.equals(shift_features(plant.diagnostic, plant.probe, plant.failed, names, seed=6))
    with pytest.raises(ValueError, match="no diagnostic rollouts"):
        shift_features(plant.diagnostic, plant.probe, [*plant.failed, "unknown"], names)


def test_answer_dispersion_is_the_feature_definition():
    diagnostic = rollouts(["a"] * 4 + ["b"] * 3 + ["c"], ["1", "2", None, "1", "5", "5", "5", "9"])
    x = answer_dispersion(diagnostic)
    assert x["a"] == pytest.approx(normalized_entropy({"1": 2, "2": 1, None: 1}))
    assert x["b"] == 0.0 and x["c"] == 0.0


def test_log_betabinom_is_scipys():
    c, n = np.array([0, 3, 16, 5.0]), np.array([16, 16, 16, 20.0])
    alpha, beta = np.array([0.5, 2, 3, 0.01]), np.array([5, 1, 0.2, 9.0])
    assert _log_betabinom(c, n, alpha, beta) == pytest.approx(betabinom.logpmf(c, n, alpha, beta))


def spread_suite(problems=600, link=True, seed=0):
    """A suite where a latent spread sets how dispersed the wrong answers are and (with ``link``) the mean of the
    problem's Beta success rate; without the link the rate comes from an independent spread."""
    rng = np.random.default_rng(seed)
    spread = rng.uniform(0, 1, problems)
    drive = spread if link else rng.uniform(0, 1, problems)
    mu = expit(-4 + 5 * drive)
    rate = rng.beta(mu * 50, (1 - mu) * 50)
    ids, answers, correct = [], [], []
    for i in range(problems):
        right = rng.random(16) < rate[i]
        on_top = rng.random(16) < 1 - 0.85 * spread[i]
        alt = rng.integers(12, size=16)
        ids += [f"q{i}"] * 16
        answers += ["gold" if r else "top" if t else f"alt{a}" for r, t, a in zip(right, on_top, alt)]
        correct += right.tolist()
    diagnostic = rollouts(ids, answers, is_correct=correct)
    successes = diagnostic.groupby("problem_id", sort=False)["is_correct"].sum()
    return diagnostic, pd.Series(rate, index=[f"q{i}" for i in range(problems)]), list(successes[successes == 0].index)


@pytest.mark.parametrize("seed", [0, 1])
def test_retry_headroom_ranks_dispersed_failed_problems_above_stuck_ones(seed):
    diagnostic, rate, failed = spread_suite(seed=seed)
    headroom = retry_headroom(diagnostic, failed, k=16)
    assert headroom.attrs["method"] == "regression" and headroom.attrs["b"] > 1.0, headroom.attrs
    truly_solvable = (rate[failed] > 0.05).to_numpy()
    assert 0.2 < truly_solvable.mean() < 0.8  # both kinds among the failed problems
    assert roc_auc_score(truly_solvable, headroom["retry_headroom"]) >= 0.75
    assert headroom["retry_headroom"].std() > 0.1  # it does vary across failed problems
    # each failed problem is prob_success_within under its own regression prior
    a, b, kappa = (headroom.attrs[key] for key in ("a", "b", "kappa"))
    first = failed[0]
    mu = expit(a + b * answer_dispersion(diagnostic)[first])
    expected = float(prob_success_within(0, 16, 16, mu * kappa, (1 - mu) * kappa))
    assert headroom["retry_headroom"].iloc[0] == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1])
def test_retry_headroom_without_the_covariate_link_is_nearly_constant(seed):
    diagnostic, _, failed = spread_suite(link=False, seed=seed)
    headroom = retry_headroom(diagnostic, failed, k=16)
    assert abs(headroom.attrs["b"]) < 1.0, headroom.attrs  # about 4 with the link
    assert headroom["retry_headroom"].std() < 0.05


def test_retry_headroom_degenerate_suites_fall_back_to_the_plain_fit():
    none_solved = rollouts(np.repeat(["a", "b", "c"], 8), list("xxxxyyzz") * 3, is_correct=False)
    plain = retry_headroom(none_solved, ["a", "b", "c"], k=16)
    assert plain.attrs["method"] == "plain" and plain.attrs["b"] == 0.0
    assert plain["retry_headroom"].nunique() == 1 and plain["retry_headroom"].iloc[0] < 0.05
    one = retry_headroom(rollouts(["a"] * 4, list("xyzw"), is_correct=False), ["a"], k=8)
    assert one.attrs["method"] == "plain" and len(one) == 1
    all_solved = rollouts(np.repeat(["a", "b", "c"], 4), list("gggg") * 3, is_correct=True)
    assert retry_headroom(all_solved, [], k=4).empty
    constant = retry_headroom(none_solved.assign(is_correct=[True] + [False] * 23), ["b", "c"], k=16,
                              covariate=pd.Series(0.5, index=["a", "b", "c"]))
    assert constant.attrs["method"] == "plain"  # a constant covariate cannot rank: the constant posterior
    with pytest.raises(ValueError, match="no diagnostic rollouts"):
        retry_headroom(none_solved, ["zzz"], k=16)


def test_literal_headroom_variant_would_retry_stuck_problems_on_a_realistic_suite():
    """On the planted catalog suite (easy problems included) the default headroom sends every planted retry-
    recoverable problem above 0.5 and every stuck one below; the literal variant (dispersion of all answers, all
    problems fitted) puts the stuck problems above 0.5 too, so it would retry the structural ones."""
    plant = planted_catalog_frames(seed=0)
    retry = np.array([plant.labels[p] == "retry" for p in plant.failed])
    default = retry_headroom(plant.diagnostic, plant.failed, k=16)["retry_headroom"].to_numpy()
    assert (default[retry] > 0.5).all() and (default[~retry] < 0.5).all()
    literal = retry_headroom(plant.diagnostic, plant.failed, k=16, covariate="answers", max_pass_rate=1.0)
    assert np.median(literal["retry_headroom"].to_numpy()[~retry]) > 0.5
