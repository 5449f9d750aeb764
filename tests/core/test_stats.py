import math
import subprocess
import sys
from itertools import combinations, product

import numpy as np
import pytest

from fixability_dag.core.stats import (
    bootstrap_ci,
    cohen_kappa,
    corrected_shift,
    expected_null_tv,
    fit_beta_binomial,
    hungarian_match,
    majority_share,
    matched_accuracy,
    mcnemar_exact,
    newcombe_paired_diff,
    normalized_entropy,
    pass_at_k,
    prob_success_within,
    shuffled_null,
    stratified_bootstrap_indices,
    total_variation,
    wilson_interval,
)


def test_normalized_entropy_known_values():
    assert normalized_entropy({"a": 16}) == 0.0
    assert normalized_entropy({str(i): 1 for i in range(16)}) == pytest.approx(1.0)
    # 8/8 split of 16 draws: H = log 2, normalized by log 16
    assert normalized_entropy({"a": 8, "b": 8}) == pytest.approx(math.log(2) / math.log(16))
    assert normalized_entropy([1]) == 0.0


def test_total_variation_known_values():
    assert total_variation({"a": 4}, {"a": 2}) == 0.0
    assert total_variation({"a": 4}, {"b": 3}) == 1.0
    assert total_variation({"a": 2, "b": 2}, {"a": 4}) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        total_variation({}, {"a": 1})


def brute_pass_at_k(n, c, k):
    items = [1] * c + [0] * (n - c)
    combos = list(combinations(range(n), k))
    return sum(any(items[i] for i in combo) for combo in combos) / len(combos)


@pytest.mark.parametrize("n, c, k", [(10, 0, 1), (10, 1, 1), (10, 3, 2), (8, 2, 5), (5, 5, 3), (6, 1, 6)])
def test_pass_at_k_matches_enumeration(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k))


def test_pass_at_k_known_values_and_errors():
    assert pass_at_k(16, 1, 1) == pytest.approx(1 / 16)
    assert pass_at_k(200, 0, 100) == 0.0
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


def test_hungarian_matching_is_one_to_one_and_optimal():
    clusters = [0, 0, 0, 1, 1, 2, 2, 2]
    labels = ["b", "b", "a", "a", "a", "c", "c", "b"]
    mapping = hungarian_match(clusters, labels)
    assert mapping == {0: "b", 1: "a", 2: "c"}
    assert matched_accuracy(clusters, labels) == pytest.approx(6 / 8)
    # relabelled clusters give the same accuracy
    assert matched_accuracy([5 - c for c in clusters], labels) == pytest.approx(6 / 8)


def test_majority_share():
    assert majority_share(["a", "a", "b"]) == pytest.approx(2 / 3)


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small, large = rng.normal(1.0, 1.0, 30), rng.normal(1.0, 1.0, 3000)
    lo_s, hi_s = bootstrap_ci(small, n_resamples=1000)
    lo_l, hi_l = bootstrap_ci(large, n_resamples=1000)
    assert lo_s < small.mean() < hi_s and lo_l < 1.0 < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


def test_cohen_kappa_textbook_example():
    # Wikipedia's 50 proposals: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> p_o = 0.7, p_e = 0.5, kappa = 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(b, a) == pytest.approx(0.4)
    assert cohen_kappa(a, a) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_cohen_kappa_matches_sklearn(seed):
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(seed)
    a = rng.choice(["x", "y", "z", "w"], size=80, p=[0.4, 0.3, 0.2, 0.1])
    b = np.where(rng.random(80) < 0.6, a, rng.choice(["x", "y", "z"], size=80))
    assert cohen_kappa(list(a), list(b)) == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_kappa_degenerate_cases_and_none_labels():
    assert math.isnan(cohen_kappa(["a"] * 5, ["a"] * 5))  # p_e = 1: undefined
    assert math.isnan(cohen_kappa([], []))
    assert cohen_kappa(["a"] * 4, ["a", "a", "b", "b"]) == 0.0  # one constant rater: no agreement beyond chance
    a, b = [None, "1", "2", None, "1", "2"], [None, "1", "1", None, "2", "2"]
    assert cohen_kappa(a, b) == pytest.approx(
        cohen_kappa(["none" if x is None else x for x in a], ["none" if y is None else y for y in b])
    )
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "b"])


def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)  # 2 * 0.5**5
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)  # 2 * (C(10,0) + C(10,1)) / 2**10
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)


def test_newcombe_paired_diff_published_example():
    """Cavo et al. (2012) complete response before/after consolidation, [[59, 6], [16, 80]]: Newcombe square-and-add
    interval -0.0621 (-0.1186 to -0.0046) in Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables
    (2017), ch. 8, as pinned by the contingencytables R package's tests. Without the phi correction the lower limit
    would be -0.1174 and the upper -0.0059, so this also checks the correction."""
    estimate, low, high = newcombe_paired_diff(59, 6, 16, 80)
    assert estimate == pytest.approx(-0.0621, abs=5e-5)
    assert low == pytest.approx(-0.1186, abs=5e-5)
    assert high == pytest.approx(-0.0046, abs=5e-5)


@pytest.mark.parametrize("a, d", [(0, 5), (1, 4), (2, 3), (5, 0), (2, 2)])
def test_newcombe_paired_diff_keeps_a_width_without_discordant_pairs(a, d):
    # (2, 2): an uncorrected phi would be 1 with both margins at 1/2, a zero-width interval
    estimate, low, high = newcombe_paired_diff(a, 0, 0, d)
    assert estimate == 0.0 and low < 0.0 < high and high - low > 0.2


def test_newcombe_paired_diff_range_order_and_symmetry_on_all_small_tables():
    for n in range(1, 11):
        for a, b, c in product(range(n + 1), repeat=3):
            d = n - a - b - c
            if d < 0:
                continue
            estimate, low, high = newcombe_paired_diff(a, b, c, d)
            assert -1.0 - 1e-12 <= low <= estimate <= high <= 1.0 + 1e-12
            assert np.allclose(newcombe_paired_diff(a, c, b, d), (-estimate, -high, -low))
    with pytest.raises(ValueError):
        newcombe_paired_diff(0, 0, 0, 0)


@pytest.mark.parametrize("cells", [(0.3, 0.2, 0.1, 0.4), (0.45, 0.05, 0.05, 0.45)])
def test_newcombe_paired_diff_covers_the_true_difference(cells):
    rng = np.random.default_rng(7)
    true_diff = cells[1] - cells[2]
    tables = rng.multinomial(20, cells, size=2000)
    covered = [low <= true_diff <= high for _, low, high in (newcombe_paired_diff(*t) for t in tables)]
    assert np.mean(covered) >= 0.93


def test_fit_beta_binomial_recovers_a_simulated_prior():
    rng = np.random.default_rng(0)
    p = rng.beta(0.3, 3.0, size=2000)
    alpha, beta = fit_beta_binomial(rng.binomial(16, p), np.full(2000, 16))
    assert alpha == pytest.approx(0.3, rel=0.15) and beta == pytest.approx(3.0, rel=0.15)


def test_fit_beta_binomial_with_unequal_trials_recovers_mean_and_variance():
    rng = np.random.default_rng(1)
    p = rng.beta(2.0, 5.0, size=3000)
    trials = rng.choice([4, 8, 64], size=3000)
    alpha, beta = fit_beta_binomial(rng.binomial(trials, p), trials)
    s = alpha + beta
    assert alpha / s == pytest.approx(2 / 7, abs=0.01)
    assert alpha * beta / (s * s * (s + 1)) == pytest.approx(10 / (49 * 8), rel=0.15)  # Beta(2, 5) variance


def test_fit_beta_binomial_degenerate_data_does_not_raise():
    alpha, beta = fit_beta_binomial(np.zeros(50), np.full(50, 16))
    assert np.isfinite([alpha, beta]).all() and alpha / (alpha + beta) < 0.05
    alpha, beta = fit_beta_binomial(np.full(50, 16), np.full(50, 16))
    assert np.isfinite([alpha, beta]).all() and alpha / (alpha + beta) > 0.95
    alpha, beta = fit_beta_binomial([3], [10])
    assert alpha / (alpha + beta) == pytest.approx(0.3, abs=0.01)
    for value in (alpha, beta):
        assert 1e-3 <= value <= 1e4
    # a problem never tried adds nothing
    assert fit_beta_binomial([3, 0, 5], [10, 0, 8]) == pytest.approx(fit_beta_binomial([3, 5], [10, 8]))
    with pytest.raises(ValueError):
        fit_beta_binomial([5], [4])


def test_prob_success_within_closed_forms():
    assert np.all(prob_success_within([0, 3, 16], [16, 16, 16], 0, 0.3, 3.0) == 0.0)
    # uniform prior, no data: 1 - E[(1-p)^k] = 1 - 1/(k+1)
    k = np.arange(1, 6)
    assert prob_success_within(0, 0, k, 1.0, 1.0) == pytest.approx(k / (k + 1))
    # k = 1 is the posterior mean (alpha + c) / (alpha + beta + n)
    c, n = np.array([0, 2, 7]), np.array([16, 4, 7])
    assert prob_success_within(c, n, 1, 0.3, 3.0) == pytest.approx((0.3 + c) / (3.3 + n))


def test_prob_success_within_is_monotone_and_stable_in_k():
    k = np.array([1, 2, 4, 16, 256, 10**6])
    p = prob_success_within(0, 16, k, 0.3, 3.0)
    assert np.all(np.diff(p) > 0) and np.all((p > 0) & (p < 1))
    assert prob_success_within(0, 10**6, 1, 0.3, 3.0) > 0  # tiny, not rounded to zero


def test_prob_success_within_matches_monte_carlo():
    rng = np.random.default_rng(3)
    alpha, beta, c, n, k = 0.3, 3.0, 1, 16, 50
    p = rng.beta(alpha + c, beta + n - c, size=200_000)
    hits = rng.binomial(k, p) > 0
    assert float(prob_success_within(c, n, k, alpha, beta)) == pytest.approx(hits.mean(), abs=4 * hits.std() / 447)


def test_expected_null_tv_known_values():
    assert expected_null_tv({"a": 16}, 4) == 0.0
    # counts (1, 1), m = 1: the resampled base is split (prob 1/2, TV 1/2) or doubled (TV 0 or 1): E = 1/2
    assert expected_null_tv([1, 1], 1, draws=20_000) == pytest.approx(0.5, abs=0.01)
    # None is one more answer; mapping and array forms agree
    assert expected_null_tv({None: 8, "7": 8}, 4) == expected_null_tv([8, 8], 4)
    with pytest.raises(ValueError):
        expected_null_tv({}, 4)
    with pytest.raises(ValueError):
        expected_null_tv([3, 1], 0)


def test_corrected_shift_is_near_zero_without_a_shift():
    """Base and probe both drawn from one answer distribution: the raw TV is large, the corrected shift is not."""
    answers, probs = ["12", "8", None, "7"], [0.3, 0.3, 0.2, 0.2]
    rng = np.random.default_rng(0)
    raw, corrected = [], []
    for rep in range(1000):
        base = dict(zip(answers, rng.multinomial(16, probs).tolist()))
        probe = dict(zip(answers, rng.multinomial(4, probs).tolist()))
        raw.append(total_variation(base, probe))
        corrected.append(corrected_shift(base, probe, seed=rep))
    assert np.mean(raw) > 0.3
    assert abs(np.mean(corrected)) < 0.03


def test_corrected_shift_sees_a_real_shift():
    assert corrected_shift({"12": 10, None: 6}, {"new": 4}) > 0.5
    assert corrected_shift([10, 6, 0], [0, 0, 4]) > 0.5
    assert corrected_shift({None: 16}, {None: 4}) == 0.0


def test_corrected_shift_reads_high_when_the_base_misses_rare_answers():
    """Documents the plug-in null's known limit: with one common answer and a long tail of rare ones, 16 base draws
    miss most of the tail, the null cannot produce it, and the corrected shift stays well above 0 without a shift."""
    probs = [0.5] + [0.01] * 50
    rng = np.random.default_rng(0)
    corrected = [corrected_shift(rng.multinomial(16, probs), rng.multinomial(4, probs), seed=r) for r in range(300)]
    assert np.mean(corrected) > 0.05


def test_stratified_bootstrap_keeps_every_class_count():
    labels = ["a"] * 10 + ["b"] * 3 + [None] * 1 + ["c"] * 6
    idx = stratified_bootstrap_indices(labels, n_boot=500, seed=0)
    assert idx.shape == (500, 20)
    y = np.array(labels, dtype=object)
    assert (y[idx] == y).all()  # position i always holds an item of item i's class
    assert len({tuple(row) for row in idx}) > 400  # and resamples do vary, with repeats inside a class
    assert np.mean([len(set(row[:10])) for row in idx]) < 8
    assert (stratified_bootstrap_indices(labels, 5, seed=1) == stratified_bootstrap_indices(labels, 5, seed=1)).all()


def test_shuffled_null_of_a_fixed_prediction_is_the_exact_chance_agreement():
    labels = np.array([0] * 30 + [1] * 20 + [2] * 10)
    prediction = np.array([0] * 40 + [1] * 15 + [2] * 5)
    null = shuffled_null(lambda y: float(np.mean(y == prediction)), labels, n_perm=2000, seed=0)
    # a random permutation puts label k at position i with probability n_k / n
    chance = (40 * 30 + 15 * 20 + 5 * 10) / 60**2
    assert null["mean"] == pytest.approx(chance, abs=0.006)
    assert null["values"].shape == (2000,) and null["q95"] > null["mean"]
    assert null["mean"] < float(np.mean(labels == prediction))  # the real agreement beats the shuffled one


def test_single_threaded_limits_blas_inside_and_restores_after():
    from threadpoolctl import threadpool_info

    from fixability_dag.core.stats import single_threaded

    before = [(p["filepath"], p["num_threads"]) for p in threadpool_info()]
    with single_threaded():
        assert all(p["num_threads"] == 1 for p in threadpool_info())
    assert [(p["filepath"], p["num_threads"]) for p in threadpool_info()] == before


def test_single_threaded_also_limits_libraries_loaded_after_its_first_use():
    """CI once ran torch's libgomp unlimited: the first call had cached a scan made before torch was imported.

    A fresh interpreter fixes the order (first use, then torch) whatever the test order in this process is.
    """
    script = (
        "from threadpoolctl import threadpool_info\n"
        "from fixability_dag.core.stats import single_threaded\n"
        "with single_threaded():\n"
        "    pass\n"
        "import torch\n"
        "with single_threaded():\n"
        "    pools = threadpool_info()\n"
        "assert any(p['internal_api'] == 'openmp' for p in pools), pools\n"
        "assert all(p['num_threads'] == 1 for p in pools), pools\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
