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
from fixability_dag.core.stats import hungarian_match, majority_share, matched_accuracy, single_threaded

REGIMES = ("retry_recoverable", "steerable_hard", "structural")


def intervention_outcomes(label_rollouts: pd.DataFrame) -> pd.DataFrame:
    """Per (problem, intervention): samples, correct samples, rescued, majority-vote outcome and tokens spent."""
    rows = []
    for (pid, name), group in label_rollouts.groupby(["problem_id", "intervention"], sort=True):
        answers = Counter(a for a in group["answer"] if a is not None and not (isinstance(a, float) and np.isnan(a)))
        majority = min(answers.items(), key=lambda kv: (-kv[1], kv[0]))[0] if answers else None
        majority_correct = bool(majority is not None and group.loc[group["answer"] == majority, "is_correct"].any())
        correct = int(group["is_correct"].sum())
        rows.append(
            {
                "problem_id": pid,
                "intervention": name,
                "samples": len(group),
                "correct": correct,
                "rescued": correct > 0,
                "majority_answer": majority,
                "majority_correct": majority_correct,
                "tokens": int(group["num_tokens"].sum()),
            }
        )
    return pd.DataFrame(rows, columns=["problem_id", "intervention", "samples", "correct", "rescued", "majority_answer", "majority_correct", "tokens"])


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
    """Unsupervised cluster ids; fewer points than clusters gives one cluster per point."""
    k = max(1, min(k, len(X)))
    if len(X) == 0:
        return np.zeros(0, dtype=int)
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


def supervised_accuracy(X: np.ndarray, labels: list[str]) -> float:
    """Cross-validated logistic regression on the same features: an upper bound for the unsupervised match."""
    folds = _cv_folds(labels)
    if folds is None:
        return float("nan")
    pred = cross_val_predict(LogisticRegression(max_iter=2000), X, labels, cv=folds)
    return float(np.mean(pred == np.array(labels)))


def trace_reading_accuracy(texts: list[str], labels: list[str]) -> float:
    """The baseline under test: a classifier that *reads* the failed traces (TF-IDF of their text)."""
    folds = _cv_folds(labels)
    if folds is None:
        return float("nan")
    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4), min_df=1, sublinear_tf=True), LogisticRegression(max_iter=2000))
    pred = cross_val_predict(model, texts, labels, cv=folds)
    return float(np.mean(pred == np.array(labels)))


def clustering_accuracy(X: np.ndarray, labels: list[str], method: str = "gmm", seeds: int = 5, bootstraps: int = 20, k: int = 3) -> dict:
    """Matched accuracy of unsupervised clusters, as mean and std over seeds and bootstrap resamples."""
    scores = []
    rng = np.random.default_rng(0)
    y = np.array(labels)
    for seed in range(seeds):
        scores.append(matched_accuracy(cluster(X, k, method, seed), y))
    for b in range(bootstraps):
        idx = rng.integers(0, len(X), len(X))
        scores.append(matched_accuracy(cluster(X[idx], k, method, b), y[idx]))
    scores = np.array([s for s in scores if np.isfinite(s)])
    return {"mean": float(scores.mean()) if len(scores) else float("nan"), "std": float(scores.std()) if len(scores) else float("nan"), "runs": int(len(scores))}


def label_regimes(features: pd.DataFrame, truth: pd.DataFrame, columns: tuple[str, ...], method: str = "gmm", seed: int = 0) -> pd.DataFrame:
    """Per failed problem: ground-truth regime, unsupervised cluster, and the regime that cluster is matched to."""
    merged = features[["problem_id"]].merge(truth, on="problem_id", how="left", validate="one_to_one")
    X = feature_matrix(features, columns)
    clusters = cluster(X, len(REGIMES), method, seed)
    mapping = hungarian_match(list(clusters), list(merged["true_regime"])) if len(clusters) else {}
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
}
"""Every method :func:`regime_report` scores, in the order tables show them, with the label they are shown by."""


def regime_report(features: pd.DataFrame, truth: pd.DataFrame, texts: dict[str, str], columns: tuple[str, ...],
                  seeds: int = 5, bootstraps: int = 20) -> dict:
    """Accuracy of distributional clusters vs. the baselines, on one checkpoint's failed problems."""
    merged = features.merge(truth, on="problem_id", validate="one_to_one")
    labels = list(merged["true_regime"])
    X = feature_matrix(merged, columns)
    report = {"failed_problems": len(labels), "regime_counts": dict(Counter(labels))}
    for method in CLUSTER_METHODS:
        report[method] = clustering_accuracy(X, labels, method, seeds, bootstraps)
    report["majority_baseline"] = majority_share(labels)
    report["supervised_logreg"] = supervised_accuracy(X, labels)
    report["trace_reading_tfidf"] = trace_reading_accuracy([texts.get(p, "") for p in merged["problem_id"]], labels)
    return report


def accuracy_rows(report: dict) -> list[dict]:
    """One row per method of :data:`REPORT_METHODS` present in ``report``: accuracy, its std and runs (clusterings)."""
    rows = []
    for method in REPORT_METHODS:
        if method not in report:
            continue
        value = report[method]
        if method in CLUSTER_METHODS:
            rows.append({"method": method, "accuracy": value["mean"], "accuracy_std": value["std"], "runs": value["runs"]})
        else:
            rows.append({"method": method, "accuracy": value, "accuracy_std": None, "runs": None})
    return rows


def feature_ablation(features: pd.DataFrame, truth: pd.DataFrame, candidates: tuple[str, ...], size: int = 3,
                     method: str = "gmm", seeds: int = 3) -> pd.DataFrame:
    """Matched clustering accuracy of every ``size``-subset of candidate features, best first.

    Unsupervised like the headline triple; labels only score the match. With few failed problems the ranking is
    noisy, so the std over seeds is reported beside the mean.
    """
    from itertools import combinations

    merged = features.merge(truth[["problem_id", "true_regime"]], on="problem_id", validate="one_to_one")
    labels = list(merged["true_regime"])
    rows = []
    for subset in combinations(candidates, size):
        X = feature_matrix(merged, subset)
        scores = [matched_accuracy(cluster(X, len(REGIMES), method, seed), labels) for seed in range(seeds)]
        rows.append({"features": " + ".join(subset), "accuracy": float(np.mean(scores)), "std": float(np.std(scores))})
    return pd.DataFrame(rows).sort_values(["accuracy", "features"], ascending=[False, True]).reset_index(drop=True)


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
