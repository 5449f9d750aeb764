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

from collections import Counter

import numpy as np
import pandas as pd

from fixability_dag.stats import normalized_entropy, total_variation

NO_ANSWER = "<no answer>"
FEATURES = ("answer_dispersion", "policy_confidence", "probe_shift")
CANDIDATE_FEATURES = (
    "top_wrong_share",
    "no_answer_rate",
    "truncation_rate",
    "mean_tokens",
    "tokens_cv",
    "distinct_answers",
    "probe_dispersion",
)
ALL_FEATURES = FEATURES + CANDIDATE_FEATURES


def answer_counts(answers: pd.Series) -> Counter:
    return Counter(NO_ANSWER if a is None or (isinstance(a, float) and np.isnan(a)) else str(a) for a in answers)


def problem_features(base: pd.DataFrame, probe: pd.DataFrame | None) -> dict[str, float]:
    """Features of one problem from its base rollouts and (optionally) its probe rollouts."""
    if base.empty:
        raise ValueError("a problem needs base rollouts to have features")
    counts = answer_counts(base["answer"])
    n = len(base)
    failed = base[~base["is_correct"].astype(bool)]
    confidence = failed["mean_logprob"].dropna().mean() if not failed.empty else base["mean_logprob"].dropna().mean()
    wrong = Counter({k: v for k, v in counts.items() if k != NO_ANSWER})
    tokens = base["num_tokens"].astype(float)
    row = {
        "answer_dispersion": normalized_entropy(counts),
        "policy_confidence": float(confidence) if pd.notna(confidence) else float("nan"),
        "probe_shift": float("nan"),
        "top_wrong_share": (wrong.most_common(1)[0][1] / n) if wrong else 0.0,
        "no_answer_rate": counts.get(NO_ANSWER, 0) / n,
        "truncation_rate": float((base["finish_reason"] == "length").mean()),
        "mean_tokens": float(tokens.mean()),
        "tokens_cv": float(tokens.std(ddof=0) / tokens.mean()) if tokens.mean() > 0 else 0.0,
        "distinct_answers": float(len(counts)),
        "probe_dispersion": float("nan"),
    }
    if probe is not None and not probe.empty:
        probe_counts = answer_counts(probe["answer"])
        row["probe_shift"] = total_variation(counts, probe_counts)
        row["probe_dispersion"] = normalized_entropy(probe_counts)
    return row


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
