"""Regimes of failed problems: ground truth from measured rescues, and unsupervised clusters of the features.

Ground truth (needs correctness, used only to *evaluate*):

* ``retry_recoverable`` - retry at the base decoding with fresh seeds rescues it (at least one correct answer);
* ``steerable_hard`` - retry does not, but some bounded non-retry intervention does;
* ``structural`` - nothing in the catalog does within its budget.

The clusters never see a label: standardized features, a Gaussian mixture (or k-means) with one component per
regime. Labels enter only afterwards, to match clusters to regimes (Hungarian) and to score the match.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections import Counter
from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fixability_dag.core.interventions import RETRY
from fixability_dag.core.stopping import first_block
from fixability_dag.core.stats import (
    hungarian_match,
    majority_share,
    matched_accuracy,
    single_threaded,
    stratified_bootstrap_indices,
)

REGIMES = ("retry_recoverable", "steerable_hard", "structural")


OUTCOME_COLUMNS = ["problem_id", "intervention", "budget", "samples", "correct", "rescued", "majority_answer",
                   "majority_correct", "tokens", "first_block_samples", "first_block_correct", "first_block_tokens",
                   "tool_calls"]


def intervention_outcomes(label_rollouts: pd.DataFrame, block: int | None = None,
                          budgets: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Per (problem, intervention): samples drawn of the budget, correct samples, rescued, tokens spent (every token
    generated, over all the calls of a tool intervention's loop), tool calls, and the first block's samples,
    successes and tokens.

    ``rescued`` (any success) reads every drawn sample: a stopped group stopped because it was decided
    (:mod:`fixability_dag.core.stopping`). The majority vote and anything read as a rate come from the first
    ``block`` samples, which every group draws whatever the stopping rule does (``block=None``: the whole group,
    as in a fixed-budget phase). ``budgets`` maps an intervention to its fixed budget (default: what was drawn).
    """
    rows = []
    for (pid, name), group in label_rollouts.groupby(["problem_id", "intervention"], sort=True):
        head = first_block(group, block) if block else group
        answers = Counter(a for a in head["answer"] if a is not None and not (isinstance(a, float) and np.isnan(a)))
        majority = min(answers.items(), key=lambda kv: (-kv[1], kv[0]))[0] if answers else None
        majority_correct = bool(majority is not None and head.loc[head["answer"] == majority, "is_correct"].any())
        correct = int(group["is_correct"].sum())
        rows.append(
            {
                "problem_id": pid,
                "intervention": name,
                "budget": int((budgets or {}).get(name, len(group))),
                "samples": len(group),
                "correct": correct,
                "rescued": correct > 0,
                "majority_answer": majority,
                "majority_correct": majority_correct,
                "tokens": int(group["num_tokens"].sum()),
                "first_block_samples": len(head),
                "first_block_correct": int(head["is_correct"].sum()),
                "first_block_tokens": int(head["num_tokens"].sum()),
                "tool_calls": _tool_calls(group),
            }
        )
    return pd.DataFrame(rows, columns=OUTCOME_COLUMNS)


def _tool_calls(group: pd.DataFrame) -> int:
    """Tool calls of a group's samples; rows without the column or with NULL (before tool interventions) made none."""
    if "tool_calls" not in group:
        return 0
    return int(pd.to_numeric(group["tool_calls"], errors="coerce").fillna(0).sum())


def ground_truth(outcomes: pd.DataFrame, problem_ids: list[str]) -> pd.DataFrame:
    """The regime of every failed problem from its intervention outcomes."""
    by_problem = dict(tuple(outcomes.groupby("problem_id"))) if not outcomes.empty else {}
    rows = []
    for pid in problem_ids:
        group = by_problem.get(pid)
        if group is None:
            raise ValueError(f"no rescue outcomes for failed problem {pid}")
        retry = group[group["intervention"] == RETRY]
        others = group[(group["intervention"] != RETRY) & group["rescued"]]
        if not retry.empty and bool(retry["rescued"].any()):
            regime = "retry_recoverable"
        elif not others.empty:
            regime = "steerable_hard"
        else:
            regime = "structural"
        rows.append(
            {
                "problem_id": pid,
                "true_regime": regime,
                "rescued_by": sorted(group.loc[group["rescued"], "intervention"]),
                "majority_rescued_by": sorted(group.loc[group["majority_correct"], "intervention"]),
            }
        )
    return pd.DataFrame(rows, columns=["problem_id", "true_regime", "rescued_by", "majority_rescued_by"])


def imputed_matrix(features: pd.DataFrame, columns: tuple[str, ...], medians: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw feature values with each missing value (e.g. no probe) replaced by its column median, and the medians
    used (pass ``medians`` to impute another checkpoint's features the same way)."""
    X = features[list(columns)].astype(float).to_numpy(copy=True)
    if medians is None:
        medians = np.array([np.nanmedian(X[:, j]) if np.isfinite(X[:, j]).any() else 0.0 for j in range(X.shape[1])])
    for j in range(X.shape[1]):
        X[~np.isfinite(X[:, j]), j] = medians[j]
    return X, medians


def feature_matrix(features: pd.DataFrame, columns: tuple[str, ...]) -> np.ndarray:
    """Standardized features, missing values imputed with the column median."""
    X, _ = imputed_matrix(features, columns)
    return StandardScaler().fit_transform(X) if len(X) else X


def cluster(X: np.ndarray, k: int = 3, method: str = "gmm", seed: int = 0) -> np.ndarray:
    """Unsupervised cluster ids; fewer points than clusters gives one cluster per point.

    Fewer than two points is one cluster without a fit: sklearn refuses to fit a mixture to one sample, and a
    checkpoint that fails a single problem must still be labelled (issue 13: small runs finish)."""
    k = max(1, min(k, len(X)))
    if len(X) < 2:
        return np.zeros(len(X), dtype=int)
    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore")
        if method == "gmm":
            model = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-3, n_init=3, random_state=seed)
        elif method == "kmeans":
            model = KMeans(n_clusters=k, n_init=10, random_state=seed)
        else:
            raise ValueError(f"unknown clustering method '{method}'")
        return model.fit_predict(X).astype(int)


def _cv_folds(labels: list[str]) -> StratifiedKFold | None:
    smallest = min(Counter(labels).values()) if labels else 0
    if len(set(labels)) < 2 or smallest < 2:
        return None
    return StratifiedKFold(n_splits=min(5, smallest), shuffle=True, random_state=0)


def balanced_accuracy(predicted, labels) -> float:
    """Mean per-class recall: 1 / #classes for any constant guess, so a majority-class predictor cannot look good."""
    y, p = np.asarray(labels, dtype=object), np.asarray(predicted, dtype=object)
    if len(y) == 0:
        return float("nan")
    return float(np.mean([np.mean(p[y == c] == c) for c in set(y.tolist())]))


def matched_balanced_accuracy(clusters, labels) -> float:
    """Balanced accuracy of clusters read as a classifier through the Hungarian cluster -> label map."""
    return _matched_scores(clusters, labels)[1] if len(clusters) else float("nan")


def _matched_scores(clusters, labels) -> tuple[float, float]:
    """(accuracy, balanced accuracy) of clusters through one Hungarian cluster -> label map."""
    mapping = hungarian_match(list(clusters), list(labels))
    predicted = np.array([mapping[c] for c in clusters], dtype=object)
    return float(np.mean(predicted == np.asarray(labels, dtype=object))), balanced_accuracy(predicted, labels)


def _permutations(y: np.ndarray, count: int, seed: int) -> list[np.ndarray]:
    """The seeded label permutations a shuffled-label null reruns its procedure on."""
    rng = np.random.default_rng(seed)
    return [y[rng.permutation(len(y))] for _ in range(count)]


def _cv_predictions(model_factory, inputs, labels: list[str]) -> np.ndarray | None:
    folds = _cv_folds(labels)
    if folds is None:
        return None
    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore")
        return cross_val_predict(model_factory(), inputs, labels, cv=folds)


def _scored(score: float, balanced: float, null: dict | None, balanced_null: dict | None, **extra) -> dict:
    out = {"accuracy": score, "balanced_accuracy": balanced, **extra}
    for prefix, n in (("", null), ("balanced_", balanced_null)):
        out[f"{prefix}null_mean"] = n["mean"] if n else float("nan")
        out[f"{prefix}null_q95"] = n["q95"] if n else float("nan")
    out["null_p"] = (float((1 + np.sum(balanced_null["values"] >= balanced - 1e-12)) / (1 + len(balanced_null["values"])))
                     if balanced_null and np.isfinite(balanced) else float("nan"))
    return out


def _unavailable(note: str) -> dict:
    nan = float("nan")
    return {"accuracy": nan, "balanced_accuracy": nan, "null_mean": nan, "null_q95": nan, "balanced_null_mean": nan,
            "balanced_null_q95": nan, "null_p": nan, "note": note}


def cross_validated(model_factory, inputs, labels: list[str], permutations: int = 20, seed: int = 0) -> dict:
    """A class-weighted classifier's cross-validated accuracy and balanced accuracy, beside the same procedure
    (fit and cross-validate) rerun on shuffled labels."""
    predicted = _cv_predictions(model_factory, inputs, labels)
    if predicted is None:
        return _unavailable("too few problems per regime for cross-validation (needs >= 2 in each of >= 2 regimes)")
    y = np.array(labels, dtype=object)
    fitted = [(_cv_predictions(model_factory, inputs, list(perm)), perm) for perm in _permutations(y, permutations, seed)]
    plain = np.array([np.mean(p == perm) for p, perm in fitted])
    balanced = np.array([balanced_accuracy(p, perm) for p, perm in fitted])
    return _scored(float(np.mean(predicted == y)), balanced_accuracy(predicted, y), _summary(plain), _summary(balanced),
                   runs=permutations)


def _summary(values: np.ndarray) -> dict:
    return {"mean": float(values.mean()), "q95": float(np.quantile(values, 0.95)), "values": values}


def supervised_accuracy(X: np.ndarray, labels: list[str], permutations: int = 20) -> dict:
    """Cross-validated class-weighted logistic regression on the same features: a supervised bound for the clusters."""
    return cross_validated(lambda: LogisticRegression(max_iter=2000, class_weight="balanced"), X, labels, permutations)


def trace_reading_accuracy(texts: list[str], labels: list[str], permutations: int = 20) -> dict:
    """The baseline under test: a class-weighted classifier that *reads* the question and the failed traces."""
    def model():
        return make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=1, sublinear_tf=True),
                             LogisticRegression(max_iter=2000, class_weight="balanced"))
    return cross_validated(model, texts, labels, permutations)


def clustering_accuracy(X: np.ndarray, labels: list[str], method: str = "gmm", seeds: int = 5, bootstraps: int = 20,
                        k: int = 3, permutations: int = 200) -> dict:
    """Matched (and balanced matched) accuracy of unsupervised clusters, beside the shuffled-label null.

    ``accuracy`` and ``balanced_accuracy`` are means over mixture seeds on all problems; ``seed_std`` is their
    spread over seeds (initialisation) and ``accuracy_std`` the spread over stratified bootstrap resamples
    (sampling: every resample keeps every regime with its count, so a missing class never lets a spare cluster
    map many-to-one). The null reruns the same procedure's label-dependent part, the Hungarian matching, on
    shuffled labels for the same clusterings: what 3 forced clusters score against imbalanced labels by chance.
    """
    y = np.array(labels, dtype=object)
    if len(y) == 0:
        return {**_unavailable("no failed problems"), "seed_std": float("nan"), "accuracy_std": float("nan"), "runs": 0}
    clusterings = [cluster(X, k, method, seed) for seed in range(seeds)]
    plain = [matched_accuracy(c, y) for c in clusterings]
    balanced = [matched_balanced_accuracy(c, y) for c in clusterings]
    resampled = [matched_accuracy(cluster(X[idx], k, method, b), y[idx])
                 for b, idx in enumerate(stratified_bootstrap_indices(list(y), bootstraps, seed=0))]
    per_perm = max(1, permutations // len(clusterings))
    null = np.array([_matched_scores(c, perm) for s, c in enumerate(clusterings)
                     for perm in _permutations(y, per_perm, seed=s)]).reshape(-1, 2)
    return _scored(float(np.mean(plain)), float(np.mean(balanced)), _summary(null[:, 0]), _summary(null[:, 1]),
                   seed_std=float(np.std(plain)), accuracy_std=float(np.std(resampled)) if resampled else float("nan"),
                   runs=len(clusterings) + len(resampled))


def label_regimes(features: pd.DataFrame, truth: pd.DataFrame, columns: tuple[str, ...], method: str = "gmm", seed: int = 0) -> pd.DataFrame:
    """Per failed problem: ground-truth regime (None where ``truth`` has none), unsupervised cluster, and the regime
    that cluster is matched to."""
    merged = features[["problem_id"]].merge(truth, on="problem_id", how="left", validate="one_to_one")
    X = feature_matrix(features, columns)
    clusters = cluster(X, len(REGIMES), method, seed)
    # clusters are fitted on every failed problem; the map to regimes is learned where a truth exists (all of them,
    # or the label subsample of production mode), and carries a regime to every problem of a matched cluster
    known = merged["true_regime"].notna().to_numpy()
    mapping = hungarian_match(list(clusters[known]), list(merged.loc[known, "true_regime"])) if known.any() else {}
    merged["cluster_id"] = clusters
    merged["cluster_regime"] = [mapping.get(c) for c in clusters]
    merged["cluster_method"] = method
    return merged


CLUSTER_METHODS = ("gmm", "kmeans")
"""Unsupervised methods: Hungarian-matched accuracy, mean and std over seeds and resamples."""
REPORT_METHODS = {
    "gmm": "unsupervised GMM (Hungarian-matched)",
    "kmeans": "unsupervised k-means (Hungarian-matched)",
    "majority_baseline": "majority class",
    "supervised_logreg": "supervised logistic regression (CV)",
    "trace_reading_tfidf": "trace reading: TF-IDF of failed traces (CV)",
    "gmm_replicated": "unsupervised GMM, problems whose label replicated",
}
"""Every method :func:`regime_report` scores, in the order tables show them, with the label they are shown by."""


def regime_report(features: pd.DataFrame, truth: pd.DataFrame, texts: dict[str, str], columns: tuple[str, ...],
                  seeds: int = 5, bootstraps: int = 20, permutations: int = 200, baseline_permutations: int = 20) -> dict:
    """Accuracy of distributional clusters vs. the baselines, on one checkpoint's failed problems."""
    merged = features.merge(truth, on="problem_id", validate="one_to_one")
    labels = list(merged["true_regime"])
    X = feature_matrix(merged, columns)
    report = {"failed_problems": len(labels), "regime_counts": dict(Counter(labels))}
    for method in CLUSTER_METHODS:
        report[method] = clustering_accuracy(X, labels, method, seeds, bootstraps, permutations=permutations)
    majority, constant = majority_share(labels), 1 / len(set(labels))  # a constant guess ignores the labels' order
    report["majority_baseline"] = {"accuracy": majority, "balanced_accuracy": constant, "null_mean": majority,
                                   "null_q95": majority, "balanced_null_mean": constant, "balanced_null_q95": constant,
                                   "null_p": 1.0}
    report["supervised_logreg"] = supervised_accuracy(X, labels, baseline_permutations)
    report["trace_reading_tfidf"] = trace_reading_accuracy([texts.get(p, "") for p in merged["problem_id"]], labels,
                                                           baseline_permutations)
    return report


REPORT_COLUMNS = ("accuracy", "balanced_accuracy", "accuracy_std", "seed_std", "null_mean", "null_q95",
                  "balanced_null_mean", "balanced_null_q95", "null_p", "runs", "note")
"""What ``regime_reports`` stores per method (missing ones as NULL)."""


def accuracy_rows(report: dict) -> list[dict]:
    """One row per method of :data:`REPORT_METHODS` present in ``report``, with the :data:`REPORT_COLUMNS`."""
    rows = []
    for method in REPORT_METHODS:
        if method in report:
            value = report[method]
            rows.append({"method": method, **{c: _finite_or_none(value.get(c)) for c in REPORT_COLUMNS}})
    return rows


def _finite_or_none(value):
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def feature_ablation(features: pd.DataFrame, truth: pd.DataFrame, candidates: tuple[str, ...], size: int = 3,
                     method: str = "gmm", seeds: int = 3, split_seed: int = 0) -> pd.DataFrame:
    """Every ``size``-subset of candidate features, ranked on one half of the problems and scored on the other.

    Unsupervised like the headline triple; labels only score the match. Ranking 120 triples and reporting the
    winner's accuracy on the same labels is a selection effect (the best of 120 noisy scores is optimistic), so the
    problems are split in two, stratified by regime: ``selection_accuracy`` (half A) orders the triples and
    ``accuracy`` is the same triple's matched accuracy on half B, where it was not chosen. ``std`` is over seeds.
    """
    from itertools import combinations

    merged = features.merge(truth[["problem_id", "true_regime"]], on="problem_id", validate="one_to_one")
    half_a, half_b = _stratified_halves(list(merged["true_regime"]), split_seed)
    rows = []
    for subset in combinations(candidates, size):
        scores = {}
        for name, idx in (("a", half_a), ("b", half_b)):
            part = merged.iloc[idx]
            X, labels = feature_matrix(part, subset), list(part["true_regime"])
            scores[name] = [matched_accuracy(cluster(X, len(REGIMES), method, seed), labels) for seed in range(seeds)]
        rows.append({"features": " + ".join(subset), "selection_accuracy": float(np.mean(scores["a"])),
                     "accuracy": float(np.mean(scores["b"])), "std": float(np.std(scores["b"]))})
    frame = pd.DataFrame(rows, columns=["features", "selection_accuracy", "accuracy", "std"])
    return frame.sort_values(["selection_accuracy", "features"], ascending=[False, True]).reset_index(drop=True)


def _stratified_halves(labels: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of the positions, each regime split as evenly as its count allows (seeded)."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for regime in sorted(set(labels)):
        members = rng.permutation([i for i, y in enumerate(labels) if y == regime])
        cut = (len(members) + rng.integers(2)) // 2  # an odd count gives its extra problem to a random half
        a += list(members[:cut])
        b += list(members[cut:])
    return np.sort(np.array(a, dtype=int)), np.sort(np.array(b, dtype=int))


@dataclasses.dataclass
class RegimeModel:
    """Everything fitted on one checkpoint that can be carried to another: feature scaling, the mixture, and the
    cluster -> regime map learned on the source's own ground truth."""

    columns: tuple[str, ...]
    medians: np.ndarray
    scaler: StandardScaler
    mixture: GaussianMixture
    regime_of_cluster: dict[int, str]


def fit_regime_model(features: pd.DataFrame, truth: pd.DataFrame, columns: tuple[str, ...], seed: int = 0) -> RegimeModel:
    merged = features.merge(truth[["problem_id", "true_regime"]], on="problem_id", validate="one_to_one")
    X, medians = imputed_matrix(merged, columns)
    scaler = StandardScaler().fit(X)
    k = max(1, min(len(REGIMES), len(X)))
    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore")
        mixture = GaussianMixture(k, covariance_type="full", reg_covar=1e-3, n_init=3, random_state=seed).fit(scaler.transform(X))
    clusters = mixture.predict(scaler.transform(X))
    return RegimeModel(columns, medians, scaler, mixture, hungarian_match(list(clusters), list(merged["true_regime"])))


def predict_regimes(model: RegimeModel, features: pd.DataFrame) -> list[str]:
    """Regimes of another checkpoint's failed problems under a model fitted elsewhere (no target labels used)."""
    X, _ = imputed_matrix(features, model.columns, model.medians)
    clusters = model.mixture.predict(model.scaler.transform(X))
    return [model.regime_of_cluster.get(int(c), REGIMES[-1]) for c in clusters]
