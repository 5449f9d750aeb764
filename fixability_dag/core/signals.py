"""Routing signals tied to the intervention catalog, corrected for what sampling alone produces.

Two kinds of evidence decide where a failed problem's compute goes, both read without a label and without the
probes' correctness:

* ``shift_<intervention>`` - how far the answer distribution of a small probe batch under that intervention moved
  from the base distribution, *minus* the distance two samples of those sizes show when nothing moved. The raw
  total-variation distance between 16 base and 4 probe answers is 0.3 to 0.6 on a spread-out policy that did not
  move at all, so a raw threshold routes by sampling noise (issue 11). The null here is a permutation null
  (:func:`permutation_null_tv`), exact under exchangeability.
* ``retry_headroom`` - the empirical-Bayes chance that more base samples give at least one success, from a
  beta-binomial regression on answer dispersion fitted across the suite's rarely-solved problems
  (:func:`retry_headroom`).

Both are functions of the diagnostic and probe frames only: no fitted threshold, no label.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, logit, logsumexp

from fixability_dag.core.features import NO_ANSWER
from fixability_dag.core.stats import fit_beta_binomial, prob_success_within

_CHUNK_CELLS = 1 << 22
"""Most (pair x draw x sample) cells built at once: bounds memory at ~100 MB whatever the suite size."""


# -- permutation null of total variation -------------------------------------------------------------------------


def _answer_codes(answers: Iterable) -> np.ndarray:
    """One integer per answer, equal codes for equal ``features.answer_counts`` categories (None: no answer)."""
    values = pd.Series(list(answers) if not isinstance(answers, pd.Series) else answers, dtype=object)
    missing = values.isna().to_numpy()
    text = values.to_numpy(dtype=object).copy()
    text[~missing] = [str(a) for a in text[~missing]]
    text[missing] = NO_ANSWER
    codes, _ = pd.factorize(pd.Series(text, dtype=object))
    return codes.astype(np.int64)


def _local_codes(codes: np.ndarray) -> np.ndarray:
    """Relabel each row's codes as 0, 1, ... in sorted order, so a row of ``L`` samples needs only ``L`` bins."""
    order = np.argsort(codes, axis=1, kind="stable")
    ordered = np.take_along_axis(codes, order, axis=1)
    new = np.ones(ordered.shape, dtype=bool)
    new[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    local = np.empty_like(codes)
    np.put_along_axis(local, order, np.cumsum(new, axis=1) - 1, axis=1)
    return local


def _split_tv(codes: np.ndarray, n: int, draws: int, rng: np.random.Generator | None) -> np.ndarray:
    """TV between the first ``n`` and the last ``L - n`` samples of each row of ``codes`` (``G x L``), as a
    ``G x draws`` array: for ``rng=None`` the split as given (one draw), else ``draws`` uniform random re-splits.

    Each sample carries weight ``1/n`` in the first group and ``-1/m`` in the second; summing the weights per
    (row, draw, answer) gives the difference of the two shares, so one ``bincount`` does every row and draw.
    """
    groups, width = codes.shape
    m = width - n
    weights = np.r_[np.full(n, 1.0 / n), np.full(m, -1.0 / m)]
    draws = 1 if rng is None else draws
    local = _local_codes(codes)
    out = np.empty((groups, draws))
    per_chunk = max(1, _CHUNK_CELLS // (draws * width))
    for start in range(0, groups, per_chunk):
        rows = local[start : start + per_chunk]
        g = len(rows)
        w = np.broadcast_to(weights, (g * draws, width))
        if rng is not None:
            w = rng.permuted(w, axis=1)
        bins = (np.arange(g * draws)[:, None] * width + np.repeat(rows, draws, axis=0)).ravel()
        diff = np.bincount(bins, weights=np.ravel(w), minlength=g * draws * width)
        out[start : start + g] = 0.5 * np.abs(diff).reshape(g, draws, width).sum(axis=2)
    return out


def permutation_null_tv(base_answers: Sequence, probe_answers: Sequence, draws: int = 200, seed: int = 0) -> float:
    """Expected TV between samples of sizes ``n = len(base)`` and ``m = len(probe)`` when nothing shifted.

    Estimated by re-splitting the *pooled* answers at random into groups of ``n`` and ``m`` (``draws`` seeded
    splits). Under the null the ``n + m`` answers are exchangeable, so the observed split is one uniform split of
    the pool and this is its exact expectation, whatever the answer distribution. The parametric alternative
    (``stats.expected_null_tv``: both samples redrawn from the base's plug-in distribution) cannot produce answers
    the base never showed, so on long-tailed answer distributions its null is too small and the corrected shift
    reads +0.1 to +0.15 with nothing shifted; the pool contains the probe's new answers and does not. Under a real
    shift the pool mixes the two distributions and the null rises a little: the correction is conservative.
    None (no answer) is one more category.
    """
    base, probe = list(base_answers), list(probe_answers)
    if not base or not probe:
        raise ValueError("a permutation null needs a non-empty base and probe")
    codes = _answer_codes(base + probe)[None, :]
    return float(_split_tv(codes, len(base), draws, np.random.default_rng(seed)).mean())


# -- shift per catalog intervention ------------------------------------------------------------------------------


def _positions(problem_id: pd.Series, ids: pd.Index) -> np.ndarray:
    codes, uniques = pd.factorize(problem_id)
    position = ids.get_indexer(uniques)
    return np.where(codes >= 0, position[codes], -1)


def _sorted_runs(key: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of ``key >= 0`` sorted by key (stable): their order, the count per key and where each key starts."""
    rows = np.flatnonzero(key >= 0)
    order = rows[np.argsort(key[rows], kind="stable")]
    count = np.bincount(key[rows], minlength=size)
    return order, count, np.r_[0, np.cumsum(count)[:-1]]


def shift_features(
    diagnostic: pd.DataFrame,
    probe: pd.DataFrame,
    problem_ids: Sequence[str],
    interventions: Sequence[str],
    draws: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """Per problem, ``shift_<name>`` for each intervention: observed TV(base answers, that probe's answers) minus
    :func:`permutation_null_tv` at the same sample sizes. NaN where the problem has no probe of that intervention.

    Reads ``answer`` only (never ``is_correct``): the shift must be known before any rescue is. Probe rows name
    their intervention in ``intervention``. All (problem, intervention) pairs with the same sample sizes are done
    in one array operation (hundreds of problems x several interventions x 200 draws in well under a second).
    Seeded: the same frames give the same values.
    """
    ids = pd.Index(problem_ids).unique()
    names = list(interventions)
    base_pos = _positions(diagnostic["problem_id"], ids)
    absent = np.flatnonzero(np.bincount(base_pos[base_pos >= 0], minlength=len(ids)) == 0)
    if len(absent):
        raise ValueError(f"no diagnostic rollouts for problem {ids[absent[0]]!r}")
    probe_pos = _positions(probe["problem_id"], ids) if len(probe) else np.zeros(0, dtype=np.int64)
    which = pd.Index(names).get_indexer(probe["intervention"]) if len(probe) else np.zeros(0, dtype=np.int64)
    probe_key = np.where((probe_pos >= 0) & (which >= 0), probe_pos * len(names) + which, -1)
    codes = _answer_codes(pd.concat([diagnostic["answer"], probe["answer"]], ignore_index=True) if len(probe)
                          else diagnostic["answer"])
    base_codes, probe_codes = codes[: len(diagnostic)], codes[len(diagnostic):]
    b_order, b_count, b_start = _sorted_runs(base_pos, len(ids))
    p_order, p_count, p_start = _sorted_runs(probe_key, len(ids) * len(names))
    shift = np.full(len(ids) * len(names), np.nan)
    pairs = np.flatnonzero(p_count > 0)
    n_of, m_of = b_count[pairs // len(names)], p_count[pairs]
    rng = np.random.default_rng(seed)
    for n, m in sorted(set(zip(n_of.tolist(), m_of.tolist()))):
        group = pairs[(n_of == n) & (m_of == m)]
        base_rows = b_order[b_start[group // len(names)][:, None] + np.arange(n)]
        probe_rows = p_order[p_start[group][:, None] + np.arange(m)]
        pooled = np.concatenate([base_codes[base_rows], probe_codes[probe_rows]], axis=1)
        observed = _split_tv(pooled, n, draws, None)[:, 0]
        shift[group] = observed - _split_tv(pooled, n, draws, rng).mean(axis=1)
    frame = pd.DataFrame(shift.reshape(len(ids), len(names)), columns=[f"shift_{name}" for name in names])
    frame.insert(0, "problem_id", ids.to_numpy(dtype=object))
    return frame


# -- retry headroom: beta-binomial regression across the suite ---------------------------------------------------

_KAPPA_BOUNDS = (1e-2, 1e4)
_COEF_BOUND = 30.0
"""|a|, |b| at most this: a covariate that separates solved from unsolved problems perfectly would otherwise drive
``b`` to infinity; 30 on the logit scale is already a 1e-13 prior mean."""
COVARIATES = ("wrong_answers", "answers")


def answer_dispersion(rollouts: pd.DataFrame) -> pd.Series:
    """Normalised entropy of each problem's answers in ``rollouts`` (None a category; 0 for at most one answer),
    indexed by problem_id: ``features.answer_dispersion`` for every problem at once, from answers alone."""
    pid, uniques = pd.factorize(rollouts["problem_id"])
    answers = _answer_codes(rollouts["answer"])
    width = int(answers.max()) + 1 if len(answers) else 1
    keys, counts = np.unique(pid.astype(np.int64) * width + answers, return_counts=True)
    owner = keys // width
    n = np.bincount(pid, minlength=len(uniques)).astype(float)
    p = counts / n[owner]
    h = np.bincount(owner, weights=-p * np.log(p), minlength=len(uniques))
    x = np.divide(h, np.log(np.maximum(n, 1)), out=np.zeros(len(uniques)), where=n > 1)
    return pd.Series(x, index=pd.Index(uniques, name="problem_id"), name="answer_dispersion")


def headroom_covariate(diagnostic: pd.DataFrame, covariate: str = "wrong_answers") -> pd.Series:
    """The per-problem covariate of the headroom prior, indexed by problem_id.

    ``"wrong_answers"``: dispersion of the problem's *wrong* diagnostic answers (0 with at most one). For a failed
    problem every answer is wrong, so this is its plain answer dispersion, read without any label; for a solved
    problem it is the same property of the same kind of samples. ``"answers"``: dispersion of all its answers,
    correct ones included. That one is correctness-free for solved problems too, but a correct answer is one more
    category, so problems solved now and then are more dispersed *because* they were solved: the regression reads
    part of its slope from its own response, and a failed problem looks less like the solved ones it resembles.
    """
    if covariate not in COVARIATES:
        raise ValueError(f"covariate must be one of {COVARIATES}, got {covariate!r}")
    ids = pd.Index(pd.unique(diagnostic["problem_id"]), name="problem_id")
    rows = diagnostic if covariate == "answers" else diagnostic[~diagnostic["is_correct"].astype(bool)]
    return answer_dispersion(rows).reindex(ids, fill_value=0.0)


def _log_betabinom(c: np.ndarray, n: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``betabinom.logpmf`` from log-gamma functions: the same numbers, a fraction of the time (the fit calls it
    a few hundred times over every problem, and once per value below the cut for the truncation)."""
    return (gammaln(n + 1) - gammaln(c + 1) - gammaln(n - c + 1)
            + betaln(c + alpha, n - c + beta) - betaln(alpha, beta))


def _regression_nll(theta: np.ndarray, c: np.ndarray, n: np.ndarray, x: np.ndarray, cut: np.ndarray | None,
                    weight: np.ndarray) -> float:
    mu = np.clip(expit(theta[0] + theta[1] * x), 1e-12, 1 - 1e-12)
    kappa = np.exp(theta[2])
    alpha, beta = mu * kappa, (1 - mu) * kappa
    ll = _log_betabinom(c, n, alpha, beta)
    if cut is not None:  # the likelihood of c given that the problem is in the fitted set (c <= cut)
        j = np.arange(int(cut.max()) + 1)
        below = _log_betabinom(j[None, :], n[:, None], alpha[:, None], beta[:, None])
        ll = ll - logsumexp(np.where(j[None, :] <= cut[:, None], below, -np.inf), axis=1)
    return -float(ll @ weight)


def _fit_regression(c: np.ndarray, n: np.ndarray, x: np.ndarray, cut: np.ndarray | None) -> tuple[float, float, float]:
    """Maximum-likelihood ``(a, b, kappa)`` of ``c_i ~ BetaBinomial(n_i, mu_i kappa, (1 - mu_i) kappa)`` with
    ``logit(mu_i) = a + b x_i`` (truncated to ``c_i <= cut_i`` when ``cut`` is given). Started from the plain fit
    (``b = 0``) and from slopes of either sign; the best end point wins, never worse than the plain fit."""
    alpha, beta = fit_beta_binomial(c, n)
    a0, k0 = logit(np.clip(alpha / (alpha + beta), 1e-6, 1 - 1e-6)), np.log(np.clip(alpha + beta, *_KAPPA_BOUNDS))
    # problems with equal (c, n, x, cut) have equal terms: fit each distinct one once, weighted by its count
    rows = np.column_stack([c, n, x, cut if cut is not None else n])
    distinct, weight = np.unique(rows, axis=0, return_counts=True)
    args = (*distinct[:, :3].T, distinct[:, 3] if cut is not None else None, weight.astype(float))
    bounds = [(-_COEF_BOUND, _COEF_BOUND)] * 2 + [tuple(np.log(_KAPPA_BOUNDS))]
    best = np.array([a0, 0.0, k0])
    best_nll = _regression_nll(best, *args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for slope in (0.0, 3.0, -3.0):
            start = np.array([a0 - slope * float(np.mean(x)), slope, k0])
            fit = minimize(_regression_nll, start, args=args, method="L-BFGS-B", bounds=bounds)
            if fit.fun < best_nll:
                best, best_nll = fit.x, fit.fun
    return float(best[0]), float(best[1]), float(np.exp(best[2]))


def retry_headroom(
    diagnostic: pd.DataFrame,
    failed_ids: Sequence[str],
    k: int,
    covariate: str | pd.Series = "wrong_answers",
    max_pass_rate: float = 0.5,
    prior: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per failed problem, the empirical-Bayes chance of at least one success in ``k`` further base samples.

    Why a regression and not the plain beta-binomial of Schaeffer et al. (2025): with the default fail threshold
    every failed problem has 0 successes in its ``n`` samples, so under one suite-wide Beta prior every failed
    problem has the *same* posterior, and a number that is equal for all of them cannot route any of them. The
    prior is therefore allowed to depend on a covariate ``x_i`` of the problem's diagnostic answers:
    ``p_i ~ Beta(mu_i kappa, (1 - mu_i) kappa)``, ``logit(mu_i) = a + b x_i``, ``x_i`` the dispersion of the
    problem's wrong answers, which for a failed problem is its plain answer dispersion (:func:`headroom_covariate`
    says why wrong ones only; ``covariate="answers"`` takes all, a Series indexed by problem_id replaces it). ``(a, b, log kappa)`` are fitted by
    maximum likelihood across the suite, solved problems included: they are where the prior learns which kind of
    problem gets solved now and then. Each failed problem then gets ``stats.prob_success_within`` under its own
    prior, given its ``c_i`` successes in ``n_i`` trials.

    Why the fit stops at ``max_pass_rate``: a problem solved most of the time is concentrated on its right answer,
    as concentrated as a problem stuck on a wrong one, so the rate is not monotone in dispersion across a suite.
    A logit-linear link cannot hold both ends and escapes to a tiny ``kappa`` (a U-shaped prior), under which
    0 of ``n`` reads as "never solvable" for every failed problem: easy problems would erase every headroom. Only
    problems with ``c_i <= max_pass_rate * n_i`` are fitted, each with the likelihood of ``c_i`` *given* that bound
    (a truncated beta-binomial), so the selection on ``c`` does not bias the fit. ``max_pass_rate=1`` fits all.

    Degenerate suites (fewer than 3 problems below the cut, no success among them, a constant covariate) cannot
    identify ``b``: the plain beta-binomial (``b = 0``, untruncated, over the problems below the cut, or over all
    when none is) is used and the headroom is one number for all, which says honestly that the suite has no
    evidence to rank its failed problems by; when no rarely-solved problem was ever solved, that number is ~0.
    ``frame.attrs`` holds ``a``, ``b``, ``kappa``, ``k``, ``method`` ("regression" or "plain") and ``fitted``
    (how many problems the prior was fitted on).

    ``prior``: the rollouts the prior (its fit and every problem's covariate) is read from, default ``diagnostic``
    itself; each failed problem's own ``c_i`` of ``n_i`` always come from ``diagnostic``. The audit passes each
    problem's first block (:func:`~fixability_dag.core.stopping.first_seeded_block`): all of ``diagnostic``
    without diagnostic blocks; under the diagnostic stopping rule a fixed sample size per problem, where the counts
    of the solved problems that stopped early would be neither of a fixed size nor the same as without stopping.
    """
    if not 0 < max_pass_rate <= 1:
        raise ValueError(f"max_pass_rate must be in (0, 1], got {max_pass_rate}")
    prior = diagnostic if prior is None else prior
    rates = prior.groupby("problem_id", sort=False)["is_correct"].agg(["size", "sum"])
    if rates.empty:
        raise ValueError("retry headroom needs diagnostic rollouts")
    c, n = rates["sum"].to_numpy(dtype=float), rates["size"].to_numpy(dtype=float)
    values = covariate if isinstance(covariate, pd.Series) else headroom_covariate(prior, covariate)
    x = values.reindex(rates.index).to_numpy(dtype=float)
    if np.isnan(x).any():
        raise ValueError("the covariate must have a value for every problem of the diagnostic frame")
    cut = np.floor(max_pass_rate * n + 1e-9)
    fitted = c <= cut
    cf, nf, xf = c[fitted], n[fitted], x[fitted]
    identifiable = len(cf) >= 3 and (cf > 0).any() and (cf < nf).any() and np.ptp(xf) > 1e-9
    if identifiable:
        a, b, kappa = _fit_regression(cf, nf, xf, cut[fitted] if max_pass_rate < 1 else None)
    else:  # the same problems as the regression would fit (all of them if none is below the cut)
        alpha, beta = fit_beta_binomial(cf, nf) if len(cf) else fit_beta_binomial(c, n)
        a, b, kappa = float(logit(np.clip(alpha / (alpha + beta), 1e-12, 1 - 1e-12))), 0.0, alpha + beta
    position = rates.index.get_indexer(pd.Index(failed_ids))
    if np.any(position < 0):
        unknown = list(failed_ids)[np.flatnonzero(position < 0)[0]]
        raise ValueError(f"no diagnostic rollouts for failed problem {unknown!r}")
    own = rates if prior is diagnostic else diagnostic.groupby("problem_id", sort=False)["is_correct"].agg(["size", "sum"])
    mine = own.reindex(pd.Index(failed_ids))
    mu = np.clip(expit(a + b * x[position]), 1e-12, 1 - 1e-12)
    # one prior per problem: prob_success_within broadcasts over (c_i, n_i, alpha_i, beta_i)
    headroom = prob_success_within(mine["sum"].to_numpy(dtype=float), mine["size"].to_numpy(dtype=float), k,
                                   mu * kappa, (1 - mu) * kappa)
    frame = pd.DataFrame({"problem_id": list(failed_ids), "retry_headroom": np.asarray(headroom, dtype=float)})
    frame.attrs.update(a=a, b=b, kappa=kappa, k=int(k), method="regression" if identifiable else "plain",
                       fitted=int(fitted.sum()) if fitted.any() else len(c))
    return frame
