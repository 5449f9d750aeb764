"""Production mode (``label_subsample``) on a fake engine with planted regimes: the label phase covers the seeded
subsample only, the plan and the evaluation of routed, retry and best-single cover every failed problem, and the
weighted regime shares cover what the full audit counts (the real-engine run: tests/system/test_production_mode.py)."""

import dataclasses

import pytest

from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.rescue import SUBSAMPLE_POLICIES
from fixability_dag.core.subsample import draw_subsample
from fixability_dag.pipeline import audit, checks

from tests.support import FAKE_CFG, GOLD, FakeEngine, planted, run_audit

IDS = sorted(GOLD)
REGIME_OF = {pid: REGIMES[i % 3] for i, pid in enumerate(IDS[1:])}  # 15 failed: 5 per regime; the first solved
PRODUCTION = dataclasses.replace(FAKE_CFG, label_subsample=0.5)


@pytest.fixture(scope="module")
def audits(tmp_path_factory):
    """The same planted checkpoint audited in full and in production mode, each in its own SQLite database."""
    from fixability_dag.storage.store import AuditStore

    out = {}
    for name, cfg in (("full", FAKE_CFG), ("production", PRODUCTION)):
        store = AuditStore(f"sqlite:///{tmp_path_factory.mktemp(name) / 'audit.db'}")
        store.migrate()
        out[name] = (store, cfg, run_audit(store, FakeEngine(planted(REGIME_OF)), cfg))
    yield out
    for store, _, _ in out.values():
        store.dispose()


def test_production_mode_labels_only_the_subsample(audits):
    store, cfg, (diag, labels, report, plan, evaluations, summary) = audits["production"]
    failed = set(REGIME_OF)
    assert diag["failed_problems"] == len(failed) == 15
    sample = draw_subsample(failed, cfg.label_subsample, cfg.seed)
    drawn = set(sample.drawn)
    assert len(drawn) == 8  # 0.5 of 15, rounded up
    # the label phase ran on the sample only; probes and features on every failed problem
    assert set(store.read("rollouts", "ck", phase="label")["problem_id"]) == drawn
    assert set(store.read("intervention_outcomes", "ck")["problem_id"]) == drawn
    assert set(store.read("rollouts", "ck", phase="probe")["problem_id"]) == failed
    assert set(store.read("problem_features", "ck")["problem_id"]) == failed
    # a label row per failed problem: truth and weight on the sample, NULL elsewhere; a cluster for everyone
    stored = store.read("regime_labels", "ck").set_index("problem_id")
    assert set(stored.index) == failed and set(stored.index[stored["label_sample"]]) == drawn
    assert stored.loc[list(drawn), "true_regime"].notna().all() and stored.loc[list(failed - drawn), "true_regime"].isna().all()
    assert (stored.loc[list(drawn), "label_weight"] == 15 / 8).all() and stored.loc[list(failed - drawn), "label_weight"].isna().all()
    assert stored["cluster_id"].notna().all()
    assert {pid: stored.loc[pid, "true_regime"] for pid in drawn} == {pid: REGIME_OF[pid] for pid in drawn}
    # accuracies say what they rest on
    reports = store.read("regime_reports", "ck")
    assert (reports["failed_problems"] == 15).all() and (reports["labelled_problems"] == 8).all()
    assert report["label_subsample"]["accuracies_on"] == "8 of 15 failed problems (label subsample)"
    # the plan covers every failed problem
    assert set(plan["problem_id"]) == failed == set(store.read("routing_plans", "ck")["problem_id"])


def test_production_mode_evaluates_every_failed_problem_and_marks_the_subsample_rows(audits):
    store, cfg, (_, _, _, _, evaluations, summary) = audits["production"]
    drawn = draw_subsample(REGIME_OF, cfg.label_subsample, cfg.seed).drawn
    evals = store.read("rescue_evaluations", "ck")
    allrows = evals[(evals["regime"] == "all") & (evals["matching"] == "samples")].set_index("policy")
    for policy in ("routed", "uniform_retry", "best_single"):
        assert allrows.loc[policy, "problems"] == 15 and not allrows.loc[policy, "label_subsample"]
    for policy in SUBSAMPLE_POLICIES:
        assert allrows.loc[policy, "problems"] == len(drawn) and allrows.loc[policy, "label_subsample"]
    # per-regime rows exist on the subsample only, each saying so, with its n
    strata = evals[evals["regime"].isin(REGIMES)]
    assert strata["label_subsample"].all() and (strata["failed_problems"] == 15).all()
    per_policy = strata[strata["matching"] == "samples"].groupby("policy")["problems"].sum()
    assert (per_policy == len(drawn)).all()
    steer = strata[(strata["policy"] == "routed") & (strata["regime"] == "steerable_hard") & (strata["matching"] == "samples")]
    assert summary["steerable_hard_problems"] == int(steer["problems"].iloc[0]) == sum(
        REGIME_OF[p] == "steerable_hard" for p in drawn)
    assert steer["lift_ci_low"].iloc[0] <= steer["lift_vs_retry"].iloc[0] <= steer["lift_ci_high"].iloc[0]
    # the label tokens spent on the subsample are what best_single pays before choosing (once, not scaled to N)
    label_tokens = int(store.read("intervention_outcomes", "ck")["tokens"].sum())
    assert allrows.loc["best_single", "upfront_tokens"] == label_tokens == allrows.loc["label_informed", "upfront_tokens"]
    # equal-samples lift of a subsample policy is paired with retry on the same problems
    assert allrows.loc["label_informed", "baseline_rescued"] <= len(drawn)


def test_the_weighted_shares_cover_the_full_audits_shares(audits):
    full = audits["full"][2][2]["regime_shares"]
    assert full == {r: 5 / 15 for r in REGIMES}  # the full audit counts the planted regimes
    report = audits["production"][2][2]
    for regime in REGIMES:
        low, high = report["regime_share_intervals"][regime]
        assert low <= full[regime] <= high, (regime, low, full[regime], high)
        assert low <= report["regime_shares"][regime] <= high
    assert abs(sum(report["regime_shares"].values()) - 1) < 1e-9
    # the topography shows the estimate and its interval, and still counts every failed problem
    topo = audit.topography(audits["production"][0]).iloc[0]
    assert topo["failed"] == 15 and topo["labelled"] == 8
    assert topo["share_structural_ci_low"] <= topo["share_structural"] <= topo["share_structural_ci_high"]


def test_the_full_audit_is_unchanged_by_the_new_columns(audits):
    store = audits["full"][0]
    labels = store.read("regime_labels", "ck")
    assert labels["label_sample"].all() and (labels["label_weight"] == 1).all() and labels["true_regime"].notna().all()
    evals = store.read("rescue_evaluations", "ck")
    assert not evals["label_subsample"].any() and (evals["failed_problems"] == 15).all()
    assert "label_subsample" not in audits["full"][2][2] and "labelled" not in audit.topography(store)


def test_checks_accept_the_production_shape_and_refuse_a_wrong_one(audits, tmp_path):
    store, cfg, _ = audits["production"]
    for asset in ("rescue_rollouts", "regime_labels", "routing_plan", "rescue_evaluation"):
        for invariant, outcome in checks.evaluate(asset, store, "ck", cfg):
            assert outcome.passed, (asset, invariant.name, outcome.message)
    # the production database checked as a full audit: outcomes and labels are missing for half the problems
    [(_, full_shape)] = checks.evaluate("rescue_rollouts", store, "ck", FAKE_CFG)
    assert not full_shape.passed and "0 of 1" in full_shape.message
    # a truth outside the subsample is a wrong shape too
    labels = store.read("regime_labels", "ck")
    outside = labels.index[~labels["label_sample"]][0]
    broken = labels.drop(columns=["checkpoint_id"]).copy()
    broken.loc[outside, "true_regime"] = "structural"
    store.replace("regime_labels", "ck", broken)
    try:
        results = {inv.name: o for inv, o in checks.evaluate("regime_labels", store, "ck", cfg)}
        assert not results["every_failed_problem_has_evidence_and_a_label"].passed
        assert "outside the label subsample has a regime" in results["every_failed_problem_has_evidence_and_a_label"].message
    finally:
        store.replace("regime_labels", "ck", labels.drop(columns=["checkpoint_id"]))


def test_rerunning_the_production_label_phase_generates_nothing(audits):
    store, cfg, _ = audits["production"]
    engine = FakeEngine(planted(REGIME_OF))
    again = audit.measure_rescues(store, engine, "ck", cfg, "run2")
    assert again.summary["generated_requests"] == 0 and not engine.calls
    assert again.summary["label_subsample"] == {"labelled": 8, "failed": 15, "setting": 0.5}


def test_the_subsample_does_not_depend_on_the_checkpoint(audits):
    """Same failed set, same seed: the same sample on another checkpoint (and on every re-run)."""
    store, cfg, _ = audits["production"]
    failed = audit.failed_ids(store, "ck", cfg)
    assert audit.label_subsample(failed, cfg).drawn == audit.label_subsample(list(reversed(failed)), cfg).drawn
    stored = store.read("regime_labels", "ck")
    assert set(stored.loc[stored["label_sample"], "problem_id"]) == audit.label_subsample(failed, cfg).drawn


def test_a_production_audit_stores_and_checks_alike_on_sqlite_and_postgresql(store):
    """The migrated columns (nullable truth, the booleans' server defaults) read back the same on both dialects."""
    run_audit(store, FakeEngine(planted(REGIME_OF)), PRODUCTION)
    labels = store.read("regime_labels", "ck")
    assert labels["label_sample"].map(type).eq(bool).all() and int(labels["label_sample"].sum()) == 8
    assert labels.loc[~labels["label_sample"], "true_regime"].isna().all()
    for asset in ("rescue_rollouts", "regime_labels", "rescue_evaluation"):
        assert all(o.passed for _, o in checks.evaluate(asset, store, "ck", PRODUCTION)), asset
