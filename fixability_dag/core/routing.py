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

:func:`route_catalog` is the catalog router (issue 11): it chooses among every catalog intervention, retry or skip,
from noise-corrected signals (``core.signals``) against fixed thresholds (:class:`CatalogRule`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

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


# -- the catalog router: every intervention, retry or skip, from noise-corrected signals ------------------------

CATALOG_RULE_VERSION = "catalog-v1"


@dataclasses.dataclass(frozen=True)
class CatalogRule:
    """Fixed thresholds of the catalog router, set from what the signals mean, not fitted to any labels.

    * ``shift_threshold = 0.35`` (corrected TV): the 99th percentile of the corrected shift of a probe that moved
      nothing, at 16 base against 4 probe samples, simulated without any label over typical answer shapes (0.26 for
      13 spread answers, 0.32 to 0.34 for one answer at 85-90%, 0.38 to 0.39 for four balanced answers or a long
      tail). The router compares the *largest* shift over the catalog's five probes, so 1% per probe keeps the
      chance that any of them fires on an unmoved problem near 5% (Bonferroni); it also asks for a third of the
      answer mass to move beyond noise. 0.25, a quarter of the mass, is about the 95th percentile of one probe:
      with five probes it sends about one unmoved, stuck problem in eight to an intervention by noise alone. The
      percentiles depend on the sample sizes and the number of probes: re-derive the bar when they change.
    * ``headroom_threshold = 0.5``: retry when a success within the retry budget is more likely than not.
    * ``retry_budget = 16``, ``intervention_budget = 8``: the audit's label-phase budgets (``AuditConfig``), so the
      headroom predicts the very event that defines "retry-recoverable", one success in 16 fresh retries. The
      headroom must be computed with ``k = retry_budget``.
    """

    shift_threshold: float = 0.35
    headroom_threshold: float = 0.5
    retry_budget: int = 16
    intervention_budget: int = 8

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _catalog_decision(
    shifts: np.ndarray, headroom: float, names: Sequence[str], rule: CatalogRule
) -> tuple[str, str | None, str]:
    """(action, intervention, reason) for one problem: the strongest corrected shift if it clears the bar, else
    retry if the headroom does, else skip. NaN never clears a bar."""
    finite = np.isfinite(shifts)
    if finite.any():
        best = int(np.nanargmax(np.where(finite, shifts, -np.inf)))
        if shifts[best] > rule.shift_threshold:
            return "intervene", names[best], (f"shift_{names[best]} {shifts[best]:.2f} > {rule.shift_threshold:.2f}: "
                                              "its probe moves the answers beyond sampling noise")
        shift_words = f"largest shift {shifts[best]:.2f} (shift_{names[best]}) <= {rule.shift_threshold:.2f}"
    else:
        shift_words = "no probe shift measured"
    if np.isfinite(headroom) and headroom > rule.headroom_threshold:
        return "retry", RETRY, (f"{shift_words}; retry_headroom {headroom:.2f} > {rule.headroom_threshold:.2f}: "
                                f"a success within {rule.retry_budget} retries is more likely than not")
    return "skip", None, f"{shift_words}; retry_headroom {headroom:.2f} <= {rule.headroom_threshold:.2f}"


def route_catalog(features: pd.DataFrame, rule: CatalogRule, interventions: Sequence[str]) -> pd.DataFrame:
    """One plan row per problem, choosing among every catalog intervention in ``interventions``, retry or skip.

    ``features`` needs ``problem_id``, ``retry_headroom`` and ``shift_<name>`` for each intervention
    (``signals.shift_features`` and ``signals.retry_headroom``). Training-free: no label and no fitted threshold.
    Ties between shifts go to the intervention listed first.
    """
    names = list(interventions)
    missing = [c for c in ("problem_id", "retry_headroom", *(f"shift_{n}" for n in names)) if c not in features]
    if missing:
        raise ValueError(f"catalog routing needs feature columns {missing}")
    shifts = features[[f"shift_{n}" for n in names]].to_numpy(dtype=float)
    headroom = features["retry_headroom"].to_numpy(dtype=float)
    spend = {"intervene": rule.intervention_budget, "retry": rule.retry_budget, "skip": 0}
    rows = []
    for pid, row, h in zip(features["problem_id"], shifts, headroom):
        action, name, reason = _catalog_decision(row, h, names, rule)
        rows.append({"problem_id": pid, "action": action, "intervention": name, "budget": spend[action],
                     "reason": reason})
    plan = pd.DataFrame(rows, columns=["problem_id", "action", "intervention", "budget", "reason"])
    # object dtype, so that "no intervention" stays None instead of becoming a NaN of a string column
    plan["intervention"] = pd.Series([r["intervention"] for r in rows], index=plan.index, dtype=object)
    return plan
