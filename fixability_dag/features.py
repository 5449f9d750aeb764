"""Distributional features of a failed problem, computed from many rollouts without reading any trace.

Inputs are only extracted answers, token counts, log-probabilities and finish reasons, of the base rollouts and of
a small probe batch under the cheapest bounded intervention. The three headline features:

* ``answer_dispersion`` - normalized entropy of the base answer distribution, "no answer" being a category.
  Unlucky sampling looks dispersed (the model wanders); a systematic error looks concentrated.
* ``policy_confidence`` - mean per-token log-probability of the failed base rollouts. A confident wrong policy
  is unlikely to be fixed by more samples.
* ``probe_shift`` - total-variation distance between the base and the probe answer distributions. It measures how
  much the policy *moves* under a nudge, without using correctness, so it can route before any rescue is known.

Other candidates are stored beside them so that the ablation can ask which triple separates regimes best.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd

from fixability_dag.stats import normalized_entropy, total_variation

NO_ANSWER = "<no answer>"


@dataclasses.dataclass
class RolloutGroup:
    """The rollouts of one failed problem that features may look at: base samples and (maybe) a probe batch."""

    base: pd.DataFrame
    probe: pd.DataFrame | None

    @functools.cached_property
    def counts(self) -> Counter:
        return answer_counts(self.base["answer"])

    @functools.cached_property
    def probe_counts(self) -> Counter | None:
        return answer_counts(self.probe["answer"]) if self.probe is not None and not self.probe.empty else None

    @functools.cached_property
    def tokens(self) -> pd.Series:
        return self.base["num_tokens"].astype(float)


FeatureFunction = Callable[[RolloutGroup], float]
FEATURE_FUNCTIONS: dict[str, FeatureFunction] = {}


def feature(name: str) -> Callable[[FeatureFunction], FeatureFunction]:
    """Register a feature. To store a new one, also add its column to ``problem_features`` (schema + migration);
    the ablation then ranks it with the others automatically."""

    def register(fn: FeatureFunction) -> FeatureFunction:
        FEATURE_FUNCTIONS[name] = fn
        return fn

    return register


@feature("answer_dispersion")
def _answer_dispersion(g: RolloutGroup) -> float:
    return normalized_entropy(g.counts)


@feature("policy_confidence")
def _policy_confidence(g: RolloutGroup) -> float:
    failed = g.base[~g.base["is_correct"].astype(bool)]
    values = (failed if not failed.empty else g.base)["mean_logprob"].dropna()
    return float(values.mean()) if len(values) else float("nan")


@feature("probe_shift")
def _probe_shift(g: RolloutGroup) -> float:
    return total_variation(g.counts, g.probe_counts) if g.probe_counts else float("nan")


@feature("top_wrong_share")
def _top_wrong_share(g: RolloutGroup) -> float:
    wrong = Counter({k: v for k, v in g.counts.items() if k != NO_ANSWER})
    return wrong.most_common(1)[0][1] / len(g.base) if wrong else 0.0


@feature("no_answer_rate")
def _no_answer_rate(g: RolloutGroup) -> float:
    return g.counts.get(NO_ANSWER, 0) / len(g.base)


@feature("truncation_rate")
def _truncation_rate(g: RolloutGroup) -> float:
    return float((g.base["finish_reason"] == "length").mean())


@feature("mean_tokens")
def _mean_tokens(g: RolloutGroup) -> float:
    return float(g.tokens.mean())


@feature("tokens_cv")
def _tokens_cv(g: RolloutGroup) -> float:
    mean = g.tokens.mean()
    return float(g.tokens.std(ddof=0) / mean) if mean > 0 else 0.0


@feature("distinct_answers")
def _distinct_answers(g: RolloutGroup) -> float:
    return float(len(g.counts))


@feature("probe_dispersion")
def _probe_dispersion(g: RolloutGroup) -> float:
    return normalized_entropy(g.probe_counts) if g.probe_counts else float("nan")


FEATURES = ("answer_dispersion", "policy_confidence", "probe_shift")
ALL_FEATURES = tuple(FEATURE_FUNCTIONS)
CANDIDATE_FEATURES = tuple(f for f in ALL_FEATURES if f not in FEATURES)


def answer_counts(answers: pd.Series) -> Counter:
    return Counter(NO_ANSWER if a is None or (isinstance(a, float) and np.isnan(a)) else str(a) for a in answers)


def problem_features(base: pd.DataFrame, probe: pd.DataFrame | None) -> dict[str, float]:
    """Every registered feature of one problem, from its base rollouts and (optionally) its probe rollouts."""
    if base.empty:
        raise ValueError("a problem needs base rollouts to have features")
    group = RolloutGroup(base, probe)
    return {name: fn(group) for name, fn in FEATURE_FUNCTIONS.items()}


def pass_rates(rollouts: pd.DataFrame) -> pd.DataFrame:
    """Per-problem samples, correct samples and pass rate of one phase's rollouts."""
    grouped = rollouts.groupby("problem_id")["is_correct"].agg(["size", "sum"]).rename(columns={"size": "n", "sum": "correct"})
    grouped["pass_rate"] = grouped["correct"] / grouped["n"]
    return grouped.reset_index()


def failed_problem_ids(diagnostic: pd.DataFrame, max_pass_rate: float = 0.0) -> list[str]:
    """Problems whose base pass rate is at most ``max_pass_rate`` (0: no correct sample, the zero-signal group)."""
    rates = pass_rates(diagnostic)
    return sorted(rates.loc[rates["pass_rate"] <= max_pass_rate, "problem_id"])


def compute_features(diagnostic: pd.DataFrame, probe: pd.DataFrame, problem_ids: list[str]) -> pd.DataFrame:
    """One row of features per failed problem."""
    base_groups = dict(tuple(diagnostic.groupby("problem_id")))
    probe_groups = dict(tuple(probe.groupby("problem_id"))) if not probe.empty else {}
    rows = []
    for pid in problem_ids:
        row = problem_features(base_groups[pid], probe_groups.get(pid))
        row["problem_id"] = pid
        row["base_samples"] = len(base_groups[pid])
        row["base_pass_rate"] = float(base_groups[pid]["is_correct"].mean())
        rows.append(row)
    return pd.DataFrame(rows, columns=["problem_id", "base_samples", "base_pass_rate", *ALL_FEATURES])
