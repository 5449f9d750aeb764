"""The label subsample of production mode and its survey estimators, on planted populations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fixability_dag.core.subsample import (
    check_setting,
    draw_subsample,
    hajek_mean,
    horvitz_thompson_total,
    regime_shares,
    sample_size,
    weighted_share,
)
from fixability_dag.pipeline.config import AuditConfig

IDS = [f"p{i:03d}" for i in range(40)]


@pytest.mark.parametrize("failed, setting, expected", [
    (40, None, 40),       # no subsample: every failed problem
    (40, 0.25, 10),       # a fraction ...
    (41, 0.25, 11),       # ... rounded up
    (30, 0.1, 3),         # 0.1 * 30 is 3.0000000000000004 in floating point: still 3
    (5, 0.01, 1),         # at least one
    (40, 12, 12),         # a count
    (10, 50, 10),         # capped at the failed count
    (10, 1, 1),           # 1 is a count of one, not 100%
    (0, 0.5, 0),          # nothing failed: nothing to label
    (0, None, 0),
])
def test_the_sample_size_of_a_fraction_or_a_count(failed, setting, expected):
    assert sample_size(failed, setting) == expected


@pytest.mark.parametrize("bad", [0, 0.0, -1, -0.5, 1.5, 2.5, float("nan"), float("inf"), True, "0.5"])
def test_a_setting_that_is_neither_fraction_nor_count_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="label_subsample must be null"):
        check_setting(bad)
    with pytest.raises(ValueError, match="label_subsample"):
        AuditConfig(label_subsample=bad)


def test_a_count_written_as_int_or_float_is_one_setting_and_none_keeps_the_hash():
    assert AuditConfig(label_subsample=50).config_hash() == AuditConfig(label_subsample=50.0).config_hash()
    assert AuditConfig(label_subsample=50).label_subsample == 50.0
    assert AuditConfig(label_subsample=None).config_hash() == AuditConfig().config_hash()
    assert AuditConfig(label_subsample=0.5).config_hash() != AuditConfig().config_hash()


def test_the_subsample_is_seeded_stable_and_independent_of_row_order():
    a = draw_subsample(IDS, 0.25, seed=0)
    assert len(a.drawn) == 10 and a.drawn <= set(IDS)
    assert draw_subsample(list(reversed(IDS)), 0.25, seed=0) == a  # same failed set, any order: same sample
    assert draw_subsample(IDS + IDS[:5], 0.25, seed=0).drawn == a.drawn  # duplicates are one problem
    assert draw_subsample(IDS, 0.25, seed=1).drawn != a.drawn  # another audit seed, another sample
    assert all(math.isclose(a.probability[p], 10 / 40) for p in IDS)
    assert all(math.isclose(a.weight(p), 4.0) for p in a.drawn)
    assert a.describe() == "10 of 40 failed problems (label subsample)" and not a.complete
    full = draw_subsample(IDS, None, seed=0)
    assert full.complete and full.drawn == set(IDS) and full.describe() == "all 40 failed problems"


def test_a_larger_subsample_contains_the_smaller_one():
    """Problems are ranked by their own seeded hash: raising the count adds problems, never swaps them (so two
    checkpoints that fail overlapping sets label overlapping subsamples)."""
    small, large = draw_subsample(IDS, 5, seed=3), draw_subsample(IDS, 15, seed=3)
    assert small.drawn < large.drawn
    overlap = draw_subsample(IDS[:30], 10, seed=3).drawn & draw_subsample(IDS[5:], 10, seed=3).drawn
    assert overlap  # the shared 25 problems keep their ranks in both


def test_every_problem_is_drawn_with_probability_n_over_N_across_seeds():
    """A simple random sample: over 2,000 seeds each problem's inclusion frequency is n/N within 4 standard errors,
    and the sizes of the overlap of two fixed problems match the SRS joint probability n(n-1)/(N(N-1))."""
    seeds, n, N = 2000, 10, 40
    counts = np.zeros(N)
    both = 0
    for seed in range(seeds):
        drawn = draw_subsample(IDS, n, seed).drawn
        counts += [pid in drawn for pid in IDS]
        both += {"p000", "p001"} <= drawn
    p = n / N
    assert np.all(np.abs(counts / seeds - p) < 4 * math.sqrt(p * (1 - p) / seeds))
    joint = n * (n - 1) / (N * (N - 1))
    assert abs(both / seeds - joint) < 4 * math.sqrt(joint * (1 - joint) / seeds)


def _planted_population(N: int = 2000, seed: int = 0):
    """Regimes whose share differs between two strata of very different inclusion probability: the unweighted
    sample mean is biased there, the weighted estimators are not."""
    rng = np.random.default_rng(seed)
    stratum = rng.random(N) < 0.3  # 30% of problems in stratum A
    y = np.where(stratum, rng.random(N) < 0.8, rng.random(N) < 0.1)  # A: mostly the regime, B: rarely
    pi = np.where(stratum, 0.6, 0.05)  # A oversampled twelve-fold
    return y.astype(float), pi, rng


def test_horvitz_thompson_and_hajek_are_right_under_unequal_probabilities():
    y, pi, rng = _planted_population()
    totals, shares, naive = [], [], []
    for _ in range(400):
        drawn = rng.random(len(y)) < pi  # Poisson sampling: unit i drawn with probability pi_i
        totals.append(horvitz_thompson_total(y[drawn], pi[drawn]))
        shares.append(hajek_mean(y[drawn], pi[drawn]))
        naive.append(y[drawn].mean())
    truth_total, truth_share = y.sum(), y.mean()
    assert abs(np.mean(totals) - truth_total) < 0.02 * truth_total
    assert abs(np.mean(shares) - truth_share) < 0.01
    assert np.mean(naive) - truth_share > 0.2  # the unweighted mean over-counts the oversampled stratum
    # the interval, at Kish's effective n, covers the population share in most draws
    covered = 0
    for _ in range(300):
        drawn = rng.random(len(y)) < pi
        _, lo, hi = weighted_share(y[drawn].astype(bool), pi[drawn], len(y))
        covered += lo <= truth_share <= hi
    assert covered / 300 > 0.85


def test_the_share_interval_covers_under_simple_random_sampling_and_is_exact_for_a_census():
    rng = np.random.default_rng(1)
    N, n = 200, 40
    y = np.zeros(N, dtype=bool)
    y[:40] = True  # share 0.2
    covered = 0
    for _ in range(500):
        drawn = rng.choice(N, n, replace=False)
        estimate, lo, hi = weighted_share(y[drawn], np.full(n, n / N), N)
        assert math.isclose(estimate, y[drawn].mean())  # equal weights: the sample share
        covered += lo <= 0.2 <= hi
    assert covered / 500 >= 0.93
    assert weighted_share(y, np.ones(N), N) == (0.2, 0.2, 0.2)
    # the finite-population correction narrows the interval as the sample approaches the population
    y[::5] = True  # spread the regime so every prefix holds some
    widths = []
    for m in (20, 100, 180):
        _, lo, hi = weighted_share(y[:m], np.full(m, m / N), N)
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2] > 0


def test_regime_shares_sum_to_one_and_refuse_bad_probabilities():
    regimes = ["a", "b", "a", "c", "a", "b"]
    pi = [0.5, 0.25, 0.5, 1.0, 0.5, 0.25]
    shares = regime_shares(regimes, pi, 12, ("a", "b", "c"))
    assert math.isclose(sum(est for est, _, _ in shares.values()), 1.0)
    assert math.isclose(shares["b"][0], (2 / 0.25) / (3 / 0.5 + 2 / 0.25 + 1))  # weighted, not 2/6
    assert all(lo <= est <= hi for est, lo, hi in shares.values())
    with pytest.raises(ValueError, match="inclusion probabilities must be in"):
        hajek_mean([1.0], [0.0])
    with pytest.raises(ValueError, match="one inclusion probability per value"):
        hajek_mean([1.0, 0.0], [0.5])
