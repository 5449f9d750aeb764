"""Small estimators used across the audit, each checked against known values in the tests."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from threadpoolctl import threadpool_limits


def normalized_entropy(counts: Mapping[Hashable, int] | Iterable[int]) -> float:
    """Shannon entropy of a categorical sample divided by ``log(n)``, the most ``n`` draws can show.

    Dividing by ``log(n)`` rather than ``log(#categories)`` keeps the value comparable across problems: 16 distinct
    answers out of 16 draws is 1.0, 16 identical answers is 0.0.
    """
    values = np.array(list(counts.values() if isinstance(counts, Mapping) else counts), dtype=float)
    values = values[values > 0]
    n = values.sum()
    if n <= 1:
        return 0.0
    p = values / n
    return float(-(p * np.log(p)).sum() / math.log(n))


def total_variation(p: Mapping[Hashable, int], q: Mapping[Hashable, int]) -> float:
    """Total-variation distance between two empirical categorical distributions given as counts."""
    np_, nq = sum(p.values()), sum(q.values())
    if np_ == 0 or nq == 0:
        raise ValueError("total variation needs two non-empty samples")
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0) / np_ - q.get(k, 0) / nq) for k in keys)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)``, in its numerically stable product form."""
    if not 0 <= c <= n or k < 1:
        raise ValueError(f"need 0 <= c <= n and k >= 1, got n={n}, c={c}, k={k}")
    if k > n:
        raise ValueError(f"pass@{k} is undefined with only {n} samples")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def hungarian_match(clusters: Sequence[int], labels: Sequence[Hashable]) -> dict[int, Hashable]:
    """Map each cluster id to the label it overlaps most, one-to-one, maximizing total agreement."""
    cluster_ids = sorted(set(clusters))
    label_ids = sorted(set(labels), key=str)
    overlap = np.zeros((len(cluster_ids), len(label_ids)))
    for c, y in zip(clusters, labels):
        overlap[cluster_ids.index(c), label_ids.index(y)] += 1
    rows, cols = linear_sum_assignment(-overlap)
    mapping = {cluster_ids[r]: label_ids[c] for r, c in zip(rows, cols)}
    # clusters left without a label (more clusters than labels) take their majority label
    for r, cid in enumerate(cluster_ids):
        if cid not in mapping:
            mapping[cid] = label_ids[int(overlap[r].argmax())]
    return mapping


def matched_accuracy(clusters: Sequence[int], labels: Sequence[Hashable]) -> float:
    """Accuracy of clusters as a classifier once matched to labels by the Hungarian assignment."""
    if len(clusters) == 0:
        return float("nan")
    mapping = hungarian_match(clusters, labels)
    return float(np.mean([mapping[c] == y for c, y in zip(clusters, labels)]))


def majority_share(labels: Sequence[Hashable]) -> float:
    """Accuracy of always predicting the most common label."""
    if not labels:
        return float("nan")
    return Counter(labels).most_common(1)[0][1] / len(labels)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over resamples of ``values`` (rows when 2-D)."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(data), size=(n_resamples, len(data)))
    stats = np.array([statistic(data[i]) for i in idx])
    alpha = (1 - confidence) / 2
    return float(np.quantile(stats, alpha)), float(np.quantile(stats, 1 - alpha))


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (well-behaved at 0 and n)."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run BLAS and OpenMP on one thread inside the block, restoring the previous limits after.

    The mixtures here are tiny (a few features, 3 components): each EM step is a handful of 3x3 Cholesky solves and
    a k-means init. Split over threads, every call pays thread wake-up and, on a busy machine (vLLM beside us), waits
    for a free core: at 10,000 problems the clustering took 1.3 s with 2 threads and 0.1 s with one, with identical
    labels. Large arrays are not computed inside such blocks.

    The loaded libraries are scanned on every call (about a millisecond) rather than once: a controller cached at
    the first call would miss an OpenMP or BLAS library loaded later (torch's libgomp, say) and leave it unlimited.
    """
    with threadpool_limits(limits=1):
        yield
