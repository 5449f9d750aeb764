import math
import subprocess
import sys
from itertools import combinations

import numpy as np
import pytest

from fixability_dag.core.stats import (
    bootstrap_ci,
    hungarian_match,
    majority_share,
    matched_accuracy,
    normalized_entropy,
    pass_at_k,
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
