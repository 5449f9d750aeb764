"""Small estimators used across the audit, each checked against known values in the tests."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment, minimize
from scipy.special import betaln
from scipy.stats import betabinom, binomtest, norm
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


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two raters: their agreement beyond what their own label frequencies give by chance.

    ``(p_o - p_e) / (1 - p_e)`` with ``p_e`` from the two marginal distributions, kept in integer counts so the one
    undefined case is caught exactly: when both raters put every item in the same single category, ``p_e = 1`` and
    kappa is 0/0 (there is no disagreement left for chance to explain), so the result is NaN rather than a made-up 0
    or 1. A rater who is constant while the other is not gets 0. Labels are any hashables, None being one more label.
    """
    if len(a) != len(b):
        raise ValueError(f"kappa needs two ratings of the same items, got {len(a)} and {len(b)}")
    n = len(a)
    if n == 0:
        return float("nan")
    index: dict[Hashable, int] = {}
    rows = [index.setdefault(x, len(index)) for x in a]
    cols = [index.setdefault(y, len(index)) for y in b]
    table = np.zeros((len(index), len(index)), dtype=np.int64)
    np.add.at(table, (rows, cols), 1)
    chance = int(table.sum(axis=1) @ table.sum(axis=0))  # n^2 * p_e
    if chance == n * n:
        return float("nan")
    return (n * int(np.trace(table)) - chance) / (n * n - chance)


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value from the discordant counts ``b`` and ``c`` of a paired 2x2 table.

    With no difference between the paired conditions each discordant pair falls either way with probability 1/2, so
    ``b`` is Binomial(b + c, 1/2); the concordant pairs carry no information about the difference. Exact rather than
    the chi-squared approximation because audits compare a handful of discordant problems, where the approximation
    is poor. No discordant pair at all is no evidence of a difference: 1.0.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    if b + c == 0:
        return 1.0
    return float(binomtest(int(b), int(b + c), 0.5).pvalue)


def newcombe_paired_diff(a: int, b: int, c: int, d: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """``p1 - p2`` of two paired proportions with Newcombe's (1998, Stat Med 17:2635) method 10 interval.

    The table is a = both succeed, b = first only, c = second only, d = neither; ``p1 = (a+b)/n``, ``p2 = (a+c)/n``.
    Returns ``(estimate, low, high)``. The Wald interval collapses to a single point when b = c = 0 (no discordant
    pair: "certainly no difference" from five problems) and undercovers at small n. Method 10 instead combines the
    Wilson interval of each margin, square-and-add, with the correlation ``phi`` of the pair discounting the sum.
    ``phi`` is the corrected one Newcombe uses: ``ad - bc`` is reduced by ``n/2`` when larger than ``n/2`` and set
    to 0 between 0 and ``n/2``. Without it perfect agreement gives ``phi = 1`` and, for a margin at 1/2, a zero-width
    interval again; with it the interval keeps a positive width. The limits stay in [-1, 1] by construction.
    """
    n = a + b + c + d
    if min(a, b, c, d) < 0 or n == 0:
        raise ValueError(f"need a non-empty table of non-negative counts, got {(a, b, c, d)}")
    z = float(norm.ppf(0.5 + confidence / 2))
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(a + b, n, z)
    l2, u2 = wilson_interval(a + c, n, z)
    cross = a * d - b * c
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    phi = cross / math.sqrt(margins) if margins else 0.0
    down = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    up = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    estimate = (b - c) / n
    return estimate, estimate - math.sqrt(max(down, 0.0)), estimate + math.sqrt(max(up, 0.0))


_BETA_BOUNDS = (1e-3, 1e4)


def fit_beta_binomial(successes: Sequence[int] | np.ndarray, trials: Sequence[int] | np.ndarray) -> tuple[float, float]:
    """Maximum-likelihood ``(alpha, beta)`` of the Beta distribution of per-problem success rates.

    Schaeffer et al. (2025) forecast pass@k from a Beta distribution of the problems' success rates. Fitting a Beta
    to the observed rates ``c/n`` would take the binomial noise of ``n`` draws for spread between problems and fail on
    the many exact zeros; the beta-binomial likelihood integrates that noise out, and lets ``n`` differ per problem.
    The search runs on log-parameters from a method-of-moments start, within ``_BETA_BOUNDS``: all-zero (or all-full)
    data has no finite maximum (the likelihood grows as the mean goes to 0), and the bound returns a fit with a tiny
    mean instead of a diverging one; a single problem, or rates with no spread beyond binomial noise, ends at a large
    concentration ``alpha + beta``. Problems with no trials carry no information and do not change the fit.
    """
    c, n = np.asarray(successes, dtype=float), np.asarray(trials, dtype=float)
    if c.shape != n.shape or c.ndim != 1 or np.any(c < 0) or np.any(c > n) or n.sum() == 0:
        raise ValueError("need 1-D successes and trials with 0 <= successes <= trials and some trials")
    rate = c[n > 0] / n[n > 0]
    mean = float(np.clip(rate.mean(), 1e-3, 1 - 1e-3))
    spread = rate.var() - np.mean(mean * (1 - mean) / n[n > 0])  # between-problem variance: minus binomial noise
    size = mean * (1 - mean) / spread - 1 if spread > 0 else _BETA_BOUNDS[1]
    start = np.log(np.clip([mean * size, (1 - mean) * size], *_BETA_BOUNDS))
    fit = minimize(
        lambda x: -betabinom.logpmf(c, n, *np.exp(x)).sum(),
        start,
        method="L-BFGS-B",
        bounds=[tuple(np.log(_BETA_BOUNDS))] * 2,
    )
    alpha, beta = np.exp(fit.x)
    return float(alpha), float(beta)


def prob_success_within(
    successes: Sequence[int] | np.ndarray | int,
    trials: Sequence[int] | np.ndarray | int,
    k: int | np.ndarray,
    alpha: float,
    beta: float,
) -> np.ndarray:
    """Per problem, the posterior predictive chance of at least one success in ``k`` further independent trials.

    After ``c`` successes in ``n`` trials under a Beta(alpha, beta) prior the problem's rate is Beta(alpha + c,
    beta + n - c), and ``P(some success in k) = 1 - E[(1-p)^k] = 1 - B(alpha+c, beta+n-c+k) / B(alpha+c, beta+n-c)``.
    Unlike the unbiased ``pass_at_k`` it extrapolates past the ``n`` samples drawn: a problem never solved in 16
    tries still gets the chance the population prior leaves it. Evaluated through ``betaln`` and ``expm1`` so large
    ``k`` and ``n`` neither overflow nor lose the small probabilities; broadcasts over its array arguments.
    """
    c, n, k = (np.asarray(x, dtype=float) for x in (successes, trials, k))
    if np.any(k < 0) or np.any(c < 0) or np.any(c > n):
        raise ValueError("need k >= 0 and 0 <= successes <= trials")
    a_post, b_post = alpha + c, beta + n - c
    return 0.0 - np.expm1(betaln(a_post, b_post + k) - betaln(a_post, b_post))  # 0.0 - : k = 0 gives 0, not -0


def _count_array(counts: Mapping[Hashable, int] | Sequence[int] | np.ndarray) -> np.ndarray:
    values = np.array(list(counts.values()) if isinstance(counts, Mapping) else counts, dtype=float)
    if values.ndim != 1 or np.any(values < 0) or values.sum() == 0:
        raise ValueError("need a non-empty 1-D set of non-negative counts")
    return values


def expected_null_tv(
    counts: Mapping[Hashable, int] | Sequence[int] | np.ndarray, m: int, draws: int = 200, seed: int = 0
) -> float:
    """Expected total variation between two samples of sizes ``n = sum(counts)`` and ``m`` from one distribution.

    Two empirical answer distributions are far apart in TV even when nothing shifted: 16 base rollouts against 4
    probe rollouts of the same model differ by ~0.3 to 0.6 on spread-out answers. This is the level a real shift has
    to clear: a parametric bootstrap under the null of no shift, drawing both samples (as in the real comparison,
    where the base is a sample too) as independent multinomials from the plug-in distribution ``counts / n``.
    Seeded Monte Carlo over ``draws`` pairs. Counts are a mapping answer -> count (None a category as any other) or
    an array. The plug-in has no mass on answers the base never showed, so with many rare answers (``n`` not much
    larger than the number of distinct answers) the null is too small and ``corrected_shift`` reads high.
    """
    values = _count_array(counts)
    n = int(values.sum())
    if m < 1:
        raise ValueError(f"the probe needs at least one sample, got m={m}")
    rng = np.random.default_rng(seed)
    base = rng.multinomial(n, values / n, size=draws) / n
    probe = rng.multinomial(m, values / n, size=draws) / m
    return float(0.5 * np.abs(base - probe).sum(axis=1).mean())


def corrected_shift(
    base_counts: Mapping[Hashable, int] | Sequence[int] | np.ndarray,
    probe_counts: Mapping[Hashable, int] | Sequence[int] | np.ndarray,
    draws: int = 200,
    seed: int = 0,
) -> float:
    """Observed TV(base, probe) minus the TV expected from sampling noise alone (``expected_null_tv``).

    About 0 when the probe answers like the base, about the real distance when it does not. It is negative when the
    two samples happen to agree more than two samples of those sizes usually do; keep the sign (clipping at 0 would
    bias averages over problems upward). Counts are mappings answer -> count, or arrays aligned by position.
    """
    base, probe = (
        c if isinstance(c, Mapping) else dict(enumerate(_count_array(c))) for c in (base_counts, probe_counts)
    )
    observed = total_variation(base, probe)
    return observed - expected_null_tv(base, int(sum(probe.values())), draws=draws, seed=seed)


def stratified_bootstrap_indices(labels: Sequence[Hashable], n_boot: int, seed: int = 0) -> np.ndarray:
    """``(n_boot, len(labels))`` bootstrap indices that resample within each class, keeping every class count.

    A plain bootstrap of a small, imbalanced problem set can drop a rare class from a resample, and a statistic that
    matches clusters to labels then changes meaning between resamples. Here position ``i`` of every resample holds
    an item of the same class as item ``i`` (``labels[idx[r]] == labels``), drawn with replacement within that class,
    so the interval reflects sampling within classes and not the class mix.
    """
    rng = np.random.default_rng(seed)
    groups: dict[Hashable, list[int]] = {}
    for i, y in enumerate(labels):
        groups.setdefault(y, []).append(i)
    out = np.empty((n_boot, len(labels)), dtype=np.intp)
    for members in groups.values():
        out[:, members] = rng.choice(members, size=(n_boot, len(members)))
    return out


def shuffled_null(
    statistic: Callable[[np.ndarray], float], labels: Sequence[Hashable], n_perm: int = 200, seed: int = 0
) -> dict[str, float | np.ndarray]:
    """The same procedure rerun on seeded permutations of the labels: ``{"mean", "q95", "values"}``.

    The chance level of a score is rarely ``1 / #classes``: imbalance, Hungarian matching (which picks the best of
    all label maps) or a fitted probe all score above it on noise. Permuting the labels breaks their link with the
    data but keeps their frequencies and the procedure's freedom, so ``statistic(permuted labels)`` is the level the
    real score has to beat; ``q95`` is its one-sided 5% threshold.
    """
    y = np.asarray(labels)
    if y.ndim != 1:  # tuple labels: keep them whole
        y = np.fromiter(labels, dtype=object, count=len(labels))
    rng = np.random.default_rng(seed)
    values = np.array([statistic(y[rng.permutation(len(y))]) for _ in range(n_perm)], dtype=float)
    return {"mean": float(values.mean()), "q95": float(np.quantile(values, 0.95)), "values": values}


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
