"""The invariants a user relies on, checked against the results database right after each step writes.

The tests check these on planted data; a production audit runs on checkpoints and problem files nobody has seen, so
the same invariants are checked again on every materialization and shown in the UI's Checks tab (the Dagster layer
turns each :class:`Invariant` into an asset check). A *blocking* invariant guards input a later step reads: when it
fails, the rest of the run is not computed on wrong input (labels from a missing rescue outcome would call a
steerable problem structural without a word). The others are warnings: the numbers are shown, but suspect.

Everything is read back from SQL, not taken from the stage's return value: the check is of what was stored.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable

import pandas as pd

from fixability_dag.core.features import failed_problem_ids
from fixability_dag.core.interventions import RETRY
from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.rescue import HINDSIGHT, POLICIES, SUBSAMPLE_POLICIES, TOKEN_MATCHED
from fixability_dag.core.stats import cohen_kappa
from fixability_dag.core.stopping import failed_cap, rule_samples
from fixability_dag.core.subsample import draw_subsample, hajek_mean
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.storage.store import AuditStore

KAPPA_THRESHOLD = 0.6
"""Label agreement between the two label phases (Cohen's kappa) below this is a warning: "substantial" agreement
starts at 0.6 on the Landis-Koch scale; under it, a regime label is closer to a coin than to a measurement."""

SHOWN_IDS = 5
"""How many offending ids a failed check names (the count says how many there are)."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a check found: pass or fail, one sentence saying what, and numbers for the UI."""

    passed: bool
    message: str
    numbers: dict = dataclasses.field(default_factory=dict)


class Facts:
    """What several checks of one checkpoint read, read once: the failed problems, the configured ones."""

    def __init__(self, store: AuditStore, checkpoint_id: str | None, cfg: AuditConfig):
        self.store, self.checkpoint_id, self.cfg = store, checkpoint_id, cfg

    @functools.cached_property
    def problem_ids(self) -> list[str]:
        return [p.problem_id for p in self.cfg.load_problems()]

    @functools.cached_property
    def failed(self) -> set[str]:
        diagnostic = self.store.read("rollouts", self.checkpoint_id, phase="diagnostic")
        return set(failed_problem_ids(diagnostic, self.cfg.fail_threshold)) if len(diagnostic) else set()

    @functools.cached_property
    def sampled(self) -> set[str]:
        """The failed problems the label phase covers: all of them, or the label subsample (production mode)."""
        return set(draw_subsample(self.failed, self.cfg.label_subsample, self.cfg.seed).drawn)

    @functools.cached_property
    def skipped(self) -> set[tuple[str, str, str]]:
        """(phase, problem, intervention) groups the context could not hold: missing by design, not by fault."""
        rows = self.read("skipped_requests")
        return set(zip(rows["phase"], rows["problem_id"], rows["intervention"])) if len(rows) else set()

    def expected(self, phase: str, groups: dict) -> dict:
        """``groups`` ((problem, intervention) -> rows, or problem -> rows for the retry-only diagnostic phase)
        without those skipped in ``phase``."""
        return {k: n for k, n in groups.items()
                if (phase, *(k if isinstance(k, tuple) else (k, RETRY))) not in self.skipped}

    def read(self, table: str, **filters) -> pd.DataFrame:
        return self.store.read(table, self.checkpoint_id, **filters)


@dataclasses.dataclass(frozen=True)
class Invariant:
    """One asset check: ``test`` gets the :class:`Facts` of a checkpoint (a report's gets its table)."""

    name: str
    description: str
    blocking: bool
    test: Callable[..., Outcome]


def _listing(ids: Iterable) -> str:
    ids = sorted(map(str, ids))
    return ", ".join(ids[:SHOWN_IDS]) + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def _same_set(what: str, expected: set, found: set) -> Outcome:
    """``found`` must be exactly ``expected`` (ids of problems)."""
    missing, extra = expected - found, found - expected
    numbers = {"expected": len(expected), "missing": len(missing), "unexpected": len(extra)}
    if not missing and not extra:
        return Outcome(True, f"{what}: all {len(expected)} present, none extra", numbers)
    parts = ([f"{len(missing)} missing ({_listing(missing)})"] if missing else []) + (
        [f"{len(extra)} not expected ({_listing(extra)})"] if extra else [])
    return Outcome(False, f"{what}: " + "; ".join(parts), numbers)


def _group_sizes(what: str, frame: pd.DataFrame, keys: list[str], expected: dict) -> Outcome:
    """Each group of ``frame`` by ``keys`` must have exactly ``expected[group]`` rows, and no other group exist."""
    sizes = frame.groupby(keys).size().to_dict() if len(frame) else {}
    wrong = {k: (sizes.get(k, 0), n) for k, n in expected.items() if sizes.get(k, 0) != n}
    extra = set(sizes) - set(expected)
    numbers = {"groups": len(expected), "rows": int(sum(sizes.values())), "wrong_groups": len(wrong) + len(extra)}
    if not wrong and not extra:
        return Outcome(True, f"{what}: every one of {len(expected)} has the rows the settings ask for", numbers)
    named = [f"{'/'.join(k) if isinstance(k, tuple) else k}: {got} of {want}" for k, (got, want) in sorted(wrong.items())]
    text = "; ".join(named[:SHOWN_IDS]) + (f" and {len(named) - SHOWN_IDS} more" if len(named) > SHOWN_IDS else "")
    if extra:
        text += ("; " if text else "") + f"{len(extra)} groups no setting asks for ({_listing(map(str, extra))})"
    return Outcome(False, f"{what}: {text}", numbers)


def _in_unit_interval(what: str, values: pd.Series, allow_missing: bool = False) -> Outcome:
    numeric = pd.to_numeric(values, errors="coerce")
    missing = numeric.isna()
    outside = ~missing & ~numeric.between(0, 1)
    bad = outside | (missing & (not allow_missing))
    numbers = {"values": len(values), "outside": int(outside.sum()), "missing": int(missing.sum())}
    if not bad.any():
        return Outcome(True, f"{what}: all {len(values)} in [0, 1]", numbers)
    return Outcome(False, f"{what}: {int(outside.sum())} outside [0, 1], {int((missing & bad).sum())} missing", numbers)


def _all(*outcomes: Outcome) -> Outcome:
    """Several sub-checks as one: passes when all do; the message lists the failures (or every part when none)."""
    failed = [o for o in outcomes if not o.passed]
    shown = failed or outcomes
    numbers = {k: v for o in outcomes for k, v in o.numbers.items()}
    return Outcome(not failed, "; ".join(o.message for o in shown), numbers)


# --- the invariants, per asset ---------------------------------------------------------------------------------

def diagnostic_rows(f: Facts) -> Outcome:
    """``n_samples`` rows per problem; with ``diagnostic_early_stop``, the rows the stopping rule draws given the
    outcomes stored: whole blocks up to the one that showed the problem is not failed, all of them if none did. A
    problem stopped before it was decided, or drawn on after it, has another count and fails the check."""
    rows, cfg = f.read("rollouts", phase="diagnostic"), f.cfg
    expected = {pid: cfg.n_samples for pid in f.problem_ids}
    if cfg.diagnostic_early_stop and len(rows):
        drawn = rule_samples(rows, cfg.n_samples, cfg.diagnostic_block, failed_cap(cfg.n_samples, cfg.fail_threshold),
                             ["problem_id"])
        expected = {pid: int(drawn.get(pid, n)) for pid, n in expected.items()}
    return _group_sizes("diagnostic rollouts per problem", rows, ["problem_id"], f.expected("diagnostic", expected))


def probe_rows(f: Facts) -> Outcome:
    expected = {(pid, name): f.cfg.probe_samples for pid in f.failed for name in f.cfg.probe_interventions}
    return _group_sizes("probe rollouts per failed problem and probe", f.read("rollouts", phase="probe"),
                        ["problem_id", "intervention"], f.expected("probe", expected))


def features_complete(f: Facts) -> Outcome:
    features = f.read("problem_features")
    return _all(_same_set("failed problems with features", f.failed, set(features["problem_id"])),
                *(_in_unit_interval(name, features[name]) for name in ("answer_dispersion", "probe_shift", "retry_headroom")))


def outcomes_complete(f: Facts) -> Outcome:
    """One outcome per labelled failed problem (every failed one, or the label subsample) and intervention."""
    expected = {(pid, name): 1 for pid in f.sampled for name in f.cfg.interventions}
    what = "rescue outcomes per failed problem and intervention" if f.sampled == f.failed else (
        f"rescue outcomes per problem of the label subsample ({len(f.sampled)} of {len(f.failed)} failed) and intervention")
    return _group_sizes(what, f.read("intervention_outcomes"), ["problem_id", "intervention"], f.expected("label", expected))


def labels_complete(f: Facts) -> Outcome:
    """Every failed problem has features and one label row; every problem of the label subsample (every failed one
    outside production mode) an outcome per intervention and exactly one known regime, and no other a regime."""
    labels = f.read("regime_labels")
    drawn = labels["label_sample"].fillna(True).astype(bool) if len(labels) else pd.Series(dtype=bool)
    unknown = set(labels.loc[drawn, "true_regime"]) - set(REGIMES) if len(labels) else set()
    regimes = Outcome(not unknown, f"regimes: {sorted(unknown)} unknown" if unknown else "regimes: all known")
    outside = labels[~drawn] if len(labels) else labels
    truthless = Outcome(bool(outside["true_regime"].isna().all() and outside["label_weight"].isna().all()),
                        f"{len(outside)} failed problems outside the label subsample, none with a regime or weight"
                        if outside["true_regime"].isna().all() and outside["label_weight"].isna().all()
                        else "a problem outside the label subsample has a regime or a weight")
    weighted = labels.loc[drawn, "label_weight"] if len(labels) else pd.Series(dtype=float)
    weights = Outcome(bool((pd.to_numeric(weighted, errors="coerce") >= 1).all()),
                      "every labelled problem has a weight >= 1" if (pd.to_numeric(weighted, errors="coerce") >= 1).all()
                      else "a labelled problem has no weight or one below 1")
    return _all(features_complete(f), outcomes_complete(f),
                _same_set("failed problems with a label row", f.failed, set(labels["problem_id"])),
                _same_set("problems of the label subsample", f.sampled, set(labels.loc[drawn, "problem_id"])),
                Outcome(not labels["problem_id"].duplicated().any(), "one label per problem"), regimes, truthless, weights)


def shares_sum_to_one(shares: pd.DataFrame, where: str) -> Outcome:
    """Rows of regime shares (``share_<regime>`` columns); rows with no failed problem (NaN shares) are exempt."""
    columns = [f"share_{r}" for r in REGIMES]
    rows = shares.dropna(subset=columns, how="all") if len(shares) else shares
    sums = rows[columns].sum(axis=1) if len(rows) else pd.Series(dtype=float)
    off = sums[(sums - 1).abs() > 1e-6]
    numbers = {"rows": len(rows), "rows_off": len(off)}
    if off.empty:
        return Outcome(True, f"regime shares sum to 1 in {where} ({len(rows)} with failed problems)", numbers)
    return Outcome(False, f"regime shares do not sum to 1 in {where}: {', '.join(f'{s:.4f}' for s in off[:SHOWN_IDS])}",
                   numbers)


def label_shares(f: Facts) -> Outcome:
    labels = f.read("regime_labels")
    if labels.empty:
        return Outcome(True, "no failed problem: no regime shares to sum", {"rows": 0, "rows_off": 0})
    drawn = labels[labels["label_sample"].fillna(True).astype(bool)]
    probabilities = 1 / pd.to_numeric(drawn["label_weight"], errors="coerce").fillna(1.0).to_numpy()
    shares = pd.DataFrame([{f"share_{r}": hajek_mean((drawn["true_regime"] == r).to_numpy(), probabilities)
                            for r in REGIMES}])  # weighted (Hajek): plain shares when every failed problem is labelled
    return shares_sum_to_one(shares, "this checkpoint's labels")


def accuracies_explained(f: Facts) -> Outcome:
    """Every accuracy shown is a finite number in [0, 1] or carries a note saying why it cannot be computed."""
    reports = f.read("regime_reports")
    accuracy = pd.to_numeric(reports["accuracy"], errors="coerce") if len(reports) else pd.Series(dtype=float)
    noted = reports["note"].fillna("").astype(str).str.len() > 0 if len(reports) else pd.Series(dtype=bool)
    unexplained = reports[accuracy.isna() & ~noted] if len(reports) else reports
    outside = reports[accuracy.notna() & ~accuracy.between(0, 1)] if len(reports) else reports
    numbers = {"methods": len(reports), "not_computable": int(accuracy.isna().sum()), "unexplained": len(unexplained)}
    if unexplained.empty and outside.empty:
        return Outcome(True, f"{len(reports)} method accuracies: {int(accuracy.notna().sum())} in [0, 1], "
                             f"{int(accuracy.isna().sum())} not computable, each with its reason", numbers)
    return Outcome(False, f"accuracies without a value or a reason: {_listing(unexplained['method'])}; "
                          f"outside [0, 1]: {_listing(outside['method'])}", numbers)


def label_agreement(f: Facts) -> Outcome:
    labels = f.read("regime_labels")
    replicated = labels[labels["replicate_regime"].notna()] if len(labels) else labels
    if replicated.empty:
        return Outcome(True, "not measured: the audit ran without label_replicate", {"problems": 0})
    kappa = cohen_kappa(list(replicated["true_regime"]), list(replicated["replicate_regime"]))
    agreement = float((replicated["true_regime"] == replicated["replicate_regime"]).mean())
    numbers = {"problems": len(replicated), "agreement": agreement, "kappa": None if math.isnan(kappa) else kappa}
    if math.isnan(kappa):
        return Outcome(True, f"kappa undefined (one regime only in both phases); raw agreement {agreement:.3f}", numbers)
    passed = kappa >= KAPPA_THRESHOLD
    return Outcome(passed, f"Cohen's kappa {kappa:.3f} {'>=' if passed else '<'} {KAPPA_THRESHOLD} between label "
                           f"phases on {len(replicated)} problems (raw agreement {agreement:.3f})", numbers)


def plan_complete(f: Facts) -> Outcome:
    plan = f.read("routing_plans")
    consistent = ((plan["action"] == "skip") == (plan["budget"] == 0)).all() if len(plan) else True
    return _all(_same_set("failed problems with a plan", f.failed, set(plan["problem_id"])),
                Outcome(bool(consistent), "budget 0 exactly when the plan skips" if consistent
                        else "some plans skip with a budget, or spend nothing without skipping"))


def evaluation_consistent(f: Facts) -> Outcome:
    """One row per policy and regime at each matching of compute (every policy at equal samples, the token-matched
    ones at equal tokens), every rate in [0, 1], and the hindsight oracle rescues at least as many as any policy at
    equal samples (it sees every draw: a policy beating it means the rows were mixed up)."""
    evals = f.read("rescue_evaluations")
    if not f.failed:
        return Outcome(evals.empty, "no failed problem: nothing to evaluate" if evals.empty else "rows without failures")
    base = evals[~evals["regime"].astype(str).str.startswith("replicated:")]
    strata = ("all", *REGIMES)
    expected = {**{(p, r, "samples"): 1 for p in POLICIES for r in strata},
                **{(p, r, "tokens"): 1 for p in TOKEN_MATCHED for r in strata}}
    rows = _group_sizes("evaluation rows per policy, regime and matching", base, ["policy", "regime", "matching"], expected)
    everything = evals[(evals["regime"] == "all") & (evals["matching"] == "samples")].set_index("policy")
    bounded = everything["rescued"].max() <= everything["rescued"].get(HINDSIGHT, -1) if len(everything) else False
    if f.sampled != f.failed and len(everything):
        # production mode: the oracle is built on the label subsample, so it bounds the rows on the same problems:
        # the subsample policies' and every policy's per-regime rows (regimes exist on the subsample only)
        samples = evals[evals["matching"] == "samples"]
        on_subsample = samples[samples["label_subsample"].fillna(False).astype(bool)]
        bound = on_subsample[on_subsample["policy"] == HINDSIGHT].set_index("regime")["rescued"]
        most = on_subsample.groupby("regime")["rescued"].max()
        bounded = bool(len(bound)) and all(most[r] <= bound.get(r, -1) for r in most.index)
    # a policy's choice the context cannot hold is not scored on that problem (at most one skip per eval group)
    unscored = sum(phase == "eval" for phase, _, _ in f.skipped)
    problems = everything["problems"] if len(everything) else pd.Series(dtype=int)
    # production mode: the policies that need each problem's label-phase outcomes are scored on the label subsample
    wanted = pd.Series({p: len(f.sampled) if p in SUBSAMPLE_POLICIES else len(f.failed) for p in problems.index},
                       dtype=int)
    counted = bool(len(everything) and ((problems <= wanted) & (problems >= wanted - unscored)).all()
                   and everything["problems"].get("uniform_retry", -1) == len(f.failed))
    return _all(rows, _in_unit_interval("rescue rates", evals["rescue_rate"], allow_missing=True),
                Outcome(bool(bounded), "no policy rescues more than the hindsight oracle" if bounded
                        else "a policy rescues more than the hindsight oracle"),
                Outcome(counted, f"every policy scored on all {len(f.failed)} failed problems"
                        + ("" if f.sampled == f.failed else f" (the label-phase policies on the {len(f.sampled)} of "
                           "the label subsample)") + f" but the {unscored} choices skipped for the context"
                        if counted
                        else "some policy was not scored on every failed problem"))


def topography_consistent(table: pd.DataFrame) -> Outcome:
    rates = [c for c in table.columns if c == "pass_rate" or c.startswith("rescue_")] if len(table) else []
    return _all(shares_sum_to_one(table, "the topography"),
                *(_in_unit_interval(c, table[c], allow_missing=True) for c in rates))


CHECKS: dict[str, tuple[Invariant, ...]] = {
    "base_rollouts": (Invariant("rows_per_problem", "Every configured problem has exactly n_samples diagnostic "
                                "rollouts (the pass rates and features read them), except those in skipped_requests "
                                "(prompt too long for the context); with diagnostic_early_stop, whole blocks up to "
                                "the one that showed it is not failed (all of them for a failed problem).", True,
                                diagnostic_rows),),
    "probe_rollouts": (Invariant("rows_per_failed_problem", "Every failed problem has probe_samples rollouts under "
                                 "each probe intervention, and nothing else is stored.", True, probe_rows),),
    "failure_features": (Invariant("every_failed_problem_has_features", "Features exist for exactly the failed "
                                   "problems; dispersion, probe shift and retry headroom lie in [0, 1].", True,
                                   features_complete),),
    "rescue_rollouts": (Invariant("every_failed_problem_has_outcomes", "One rescue outcome per failed problem (production "
                                  "mode: per problem of the label subsample) and catalog intervention: the "
                                  "ground-truth regimes are read from them.", True,
                                  outcomes_complete),),
    "regime_labels": (
        Invariant("every_failed_problem_has_evidence_and_a_label", "Every failed problem has features and a label row; "
                  "every one of the label subsample (production mode; else every failed problem) an outcome per "
                  "intervention, one known regime and a weight, no other a regime (the evaluation scores per regime).",
                  True, labels_complete),
        Invariant("regime_shares_sum_to_one", "The regime shares of the failed problems (weighted "
                  "estimates from the label subsample in production mode) sum to 1.", True, label_shares),
        Invariant("accuracies_finite_or_explained", "Every regime-recovery accuracy is in [0, 1] or carries the "
                  "reason it cannot be computed (too few problems per class, one regime only).", False,
                  accuracies_explained),
        Invariant("label_agreement", f"Cohen's kappa between the label phase and its replicate on independent seeds "
                  f"is at least {KAPPA_THRESHOLD} (a warning; measured only with label_replicate).", False,
                  label_agreement),
    ),
    "routing_plan": (Invariant("every_failed_problem_has_a_plan", "Exactly the failed problems are planned; the "
                               "budget is 0 exactly when the plan skips.", True, plan_complete),),
    "rescue_evaluation": (Invariant("rates_and_rows_consistent", "One row per policy, regime and matching, every rescue rate in "
                                    "[0, 1], no policy above the hindsight oracle.", True, evaluation_consistent),),
}
"""Per-checkpoint asset name -> its invariants, evaluated in this order after the step."""


def evaluate(asset: str, store: AuditStore, checkpoint_id: str, cfg: AuditConfig) -> list[tuple[Invariant, Outcome]]:
    """The asset's invariants on what it stored, suite by suite (as the stages wrote it); an invariant holds when
    it holds for every suite, and its message and numbers name the suite when there are several."""
    per_suite = []
    for suite_cfg in cfg.suite_configs():
        facts = Facts(store.for_suite(suite_cfg.suite_name), checkpoint_id, suite_cfg)
        per_suite.append((suite_cfg.suite_name, [inv.test(facts) for inv in CHECKS.get(asset, ())]))
    if len(per_suite) == 1:
        return list(zip(CHECKS.get(asset, ()), per_suite[0][1]))
    return [(inv, Outcome(all(o[i].passed for _, o in per_suite), "; ".join(f"{s}: {o[i].message}" for s, o in per_suite),
                          {f"{s}.{k}": v for s, o in per_suite for k, v in o[i].numbers.items()}))
            for i, inv in enumerate(CHECKS.get(asset, ()))]
