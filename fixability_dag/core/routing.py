"""The training-free routing rule: features of a failed problem -> retry, a bounded intervention, or skip.

No label is used. Thresholds come from the unsupervised structure of each feature across the checkpoint's failed
problems: the decision point of a two-component 1-D Gaussian mixture (where the two components are equally
likely), falling back to the median when the feature does not separate into two groups. The rule, in order:

1. ``probe_shift > shift_threshold``: the answer distribution moves under the probe nudge, so the problem is
   steerable: route to the probe's intervention.
2. ``answer_dispersion > dispersion_threshold`` or ``policy_confidence < confidence_threshold``: the policy is
   unsure, so more draws may land: retry.
3. otherwise (concentrated, confident, unmoved): skip, and save the compute.

Comparisons are strict so that a median threshold on tied values does not send every tied problem one way.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
from sklearn.mixture import GaussianMixture

from fixability_dag.core.interventions import RETRY
from fixability_dag.core.stats import single_threaded

RULE_VERSION = "threshold-v1"
ACTIONS = ("retry", "intervene", "skip")


@dataclasses.dataclass(frozen=True)
class RoutingThresholds:
    dispersion: float
    confidence: float
    shift: float
    method: dict[str, str]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def split_point(values: np.ndarray, seed: int = 0) -> tuple[float, str]:
    """Where a two-component 1-D Gaussian mixture switches component; the median when it cannot be fitted."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), "empty"
    if len(np.unique(x)) < 4:
        return float(np.median(x)), "median"
    with warnings.catch_warnings(), single_threaded():
        warnings.simplefilter("ignore")
        gmm = GaussianMixture(2, reg_covar=1e-4, n_init=3, random_state=seed).fit(x.reshape(-1, 1))
        lo, hi = sorted(gmm.means_.ravel())
        if hi - lo < 1e-9:
            return float(np.median(x)), "median"
        grid = np.linspace(lo, hi, 512).reshape(-1, 1)
        low_component = int(np.argmin(gmm.means_.ravel()))
        post = gmm.predict_proba(grid)[:, low_component]
    crossing = np.nonzero(post < 0.5)[0]
    if len(crossing) == 0:
        return float(np.median(x)), "median"
    return float(grid[crossing[0], 0]), "gmm"


def fit_thresholds(features: pd.DataFrame) -> RoutingThresholds:
    d, dm = split_point(features["answer_dispersion"].to_numpy())
    c, cm = split_point(features["policy_confidence"].to_numpy())
    s, sm = split_point(features["probe_shift"].to_numpy())
    return RoutingThresholds(dispersion=d, confidence=c, shift=s, method={"dispersion": dm, "confidence": cm, "shift": sm})


def _decide(r, thresholds: RoutingThresholds) -> tuple[str, str]:
    """The rule above for one problem: (action, reason in words)."""
    shift, disp, conf = r.probe_shift, r.answer_dispersion, r.policy_confidence
    if np.isfinite(shift) and np.isfinite(thresholds.shift) and shift > thresholds.shift:
        return "intervene", f"probe_shift {shift:.2f} > {thresholds.shift:.2f}: moves under a nudge"
    if (np.isfinite(disp) and disp > thresholds.dispersion) or (np.isfinite(conf) and conf < thresholds.confidence):
        return "retry", (f"unsure policy (dispersion {disp:.2f} vs {thresholds.dispersion:.2f}, "
                         f"confidence {conf:.2f} vs {thresholds.confidence:.2f})")
    return "skip", "concentrated, confident and unmoved by the probe"


def route_actions(features: pd.DataFrame, thresholds: RoutingThresholds) -> np.ndarray:
    """The action each problem is routed to, without interventions or budgets: for comparing two plans."""
    return np.array([_decide(r, thresholds)[0] for r in features.itertuples(index=False)], dtype=object)


def route(
    features: pd.DataFrame,
    thresholds: RoutingThresholds,
    steer_intervention: str,
    retry_budget: int,
    intervention_budget: int,
) -> pd.DataFrame:
    """One plan row per failed problem: action, intervention, sample budget and the reason, in words."""
    spend = {"intervene": (steer_intervention, intervention_budget), "retry": (RETRY, retry_budget), "skip": (None, 0)}
    rows = []
    for r in features.itertuples(index=False):
        action, reason = _decide(r, thresholds)
        name, budget = spend[action]
        rows.append({"problem_id": r.problem_id, "action": action, "intervention": name, "budget": budget, "reason": reason})
    return pd.DataFrame(rows, columns=["problem_id", "action", "intervention", "budget", "reason"])
