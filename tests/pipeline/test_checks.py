"""The invariants behind the asset checks, on a stored audit: all hold, and each fails (naming what) when the rows it
guards are wrong. The same checks run in every real materialization (tests/system/test_ui.py)."""

import dataclasses

import pytest

from fixability_dag.pipeline import checks

from tests.support import FAKE_CFG, FakeEngine, behaviour, run_audit


def outcomes(store, cfg=FAKE_CFG, key="ck"):
    return {(asset, inv.name): outcome for asset in checks.CHECKS
            for inv, outcome in checks.evaluate(asset, store, key, cfg)}


def test_every_invariant_holds_on_a_consistent_audit(store):
    run_audit(store, FakeEngine(behaviour))
    found = outcomes(store)
    assert len(found) == sum(len(v) for v in checks.CHECKS.values())
    failed = {k: o.message for k, o in found.items() if not o.passed}
    assert not failed
    labels = found[("regime_labels", "every_failed_problem_has_evidence_and_a_label")]
    assert labels.numbers["expected"] == 12 and labels.numbers["missing"] == 0
    assert "not measured" in found[("regime_labels", "label_agreement")].message


def test_a_missing_rescue_outcome_fails_the_blocking_label_check(fake_audit, tmp_path):
    sqlite_store = fake_audit.copy(tmp_path)
    outcomes_table = sqlite_store.read("intervention_outcomes", "ck")
    dropped = outcomes_table[outcomes_table["intervention"] == "few_shot"].iloc[0]
    sqlite_store.replace("intervention_outcomes", "ck", outcomes_table.drop(index=dropped.name))
    found = outcomes(sqlite_store)
    for key in (("rescue_rollouts", "every_failed_problem_has_outcomes"),
                ("regime_labels", "every_failed_problem_has_evidence_and_a_label")):
        assert not found[key].passed
        assert f"{dropped.problem_id}/few_shot: 0 of 1" in found[key].message
    assert all(inv.blocking for inv in checks.CHECKS["regime_labels"][:1])


def test_wrong_row_counts_and_rates_are_named(fake_audit, tmp_path):
    sqlite_store = fake_audit.copy(tmp_path)
    diagnostic = sqlite_store.read("rollouts", "ck", phase="diagnostic")
    victim = diagnostic["problem_id"].iloc[0]
    sqlite_store.replace("rollouts", "ck", diagnostic[diagnostic["sample_index"] != 0], phase="diagnostic")
    evals = sqlite_store.read("rescue_evaluations", "ck")
    evals.loc[evals.index[0], "rescue_rate"] = 1.5
    sqlite_store.replace("rescue_evaluations", "ck", evals)
    plan = sqlite_store.read("routing_plans", "ck")
    sqlite_store.replace("routing_plans", "ck", plan.iloc[1:])
    found = outcomes(sqlite_store)
    rows = found[("base_rollouts", "rows_per_problem")]
    assert not rows.passed and f"{victim}: {FAKE_CFG.n_samples - 1} of {FAKE_CFG.n_samples}" in rows.message
    assert rows.numbers["wrong_groups"] == len(diagnostic["problem_id"].unique())
    rates = found[("rescue_evaluation", "rates_and_rows_consistent")]
    assert not rates.passed and "1 outside [0, 1]" in rates.message
    planned = found[("routing_plan", "every_failed_problem_has_a_plan")]
    assert not planned.passed and plan["problem_id"].iloc[0] in planned.message


def test_label_agreement_warns_below_the_threshold(sqlite_store):
    cfg = dataclasses.replace(FAKE_CFG, label_replicate=True)
    run_audit(sqlite_store, FakeEngine(behaviour), cfg)
    agreement = outcomes(sqlite_store, cfg)[("regime_labels", "label_agreement")]
    assert "Cohen's kappa" in agreement.message and agreement.numbers["problems"] == 12
    labels = sqlite_store.read("regime_labels", "ck")
    # the replicate disagrees everywhere: a rotation of the regimes
    rotate = {"retry_recoverable": "steerable_hard", "steerable_hard": "structural", "structural": "retry_recoverable"}
    sqlite_store.replace("regime_labels", "ck", labels.assign(replicate_regime=labels["true_regime"].map(rotate)))
    agreement = outcomes(sqlite_store, cfg)[("regime_labels", "label_agreement")]
    assert not agreement.passed and agreement.numbers["kappa"] < checks.KAPPA_THRESHOLD
    assert not next(inv for inv in checks.CHECKS["regime_labels"] if inv.name == "label_agreement").blocking


def test_accuracies_without_a_value_need_a_reason(fake_audit, tmp_path):
    sqlite_store = fake_audit.copy(tmp_path)
    reports = sqlite_store.read("regime_reports", "ck")
    assert outcomes(sqlite_store)[("regime_labels", "accuracies_finite_or_explained")].passed
    reports.loc[reports.index[0], ["accuracy", "note"]] = [None, None]
    sqlite_store.replace("regime_reports", "ck", reports)
    found = outcomes(sqlite_store)[("regime_labels", "accuracies_finite_or_explained")]
    assert not found.passed and reports["method"].iloc[0] in found.message


@pytest.mark.parametrize("shares, passed", [((0.2, 0.3, 0.5), True), ((0.2, 0.3, 0.4), False)])
def test_topography_shares_must_sum_to_one(shares, passed):
    import pandas as pd

    table = pd.DataFrame([{"checkpoint": "a", "pass_rate": 0.5, "share_retry_recoverable": shares[0],
                           "share_steerable_hard": shares[1], "share_structural": shares[2], "rescue_routed": 0.1},
                          {"checkpoint": "solved-all", "pass_rate": 1.0, "share_retry_recoverable": float("nan"),
                           "share_steerable_hard": float("nan"), "share_structural": float("nan")}])
    assert checks.topography_consistent(table).passed is passed


def test_the_row_check_accepts_a_stopped_diagnostic_phase_and_refuses_a_wrong_shape(sqlite_store):
    """With diagnostic_early_stop a problem has whole blocks up to the one that showed it is not failed: that
    passes; a problem cut short of its decision, a failed problem missing a block, or blocks drawn after a
    decision do not."""
    from fixability_dag.pipeline import audit

    cfg = dataclasses.replace(FAKE_CFG, fail_threshold=0.25, diagnostic_block=2, diagnostic_early_stop=True)
    run_audit(sqlite_store, FakeEngine(behaviour), cfg)
    assert all(o.passed for o in outcomes(sqlite_store, cfg).values())
    diagnostic = sqlite_store.read("rollouts", "ck", phase="diagnostic")
    sizes = diagnostic.groupby("problem_id").size()
    stopped, failed = sizes[sizes < cfg.n_samples].index[0], sizes[sizes == cfg.n_samples].index[0]
    check = lambda: outcomes(sqlite_store, cfg)[("base_rollouts", "rows_per_problem")]  # noqa: E731

    def without(pid):
        last = diagnostic[diagnostic["problem_id"] == pid]["sample_index"].max() // 2
        return diagnostic[~((diagnostic["problem_id"] == pid) & (diagnostic["sample_index"] // 2 == last))]

    for victim in (stopped, failed):
        sqlite_store.replace("rollouts", "ck", without(victim), phase="diagnostic")
        found = check()
        assert not found.passed and f"{victim}: {sizes[victim] - 2} of {cfg.n_samples}" in found.message
    # every block drawn (the fixed-budget run's rows) under the stopping settings: the stopped problems have too many
    audit.diagnose(sqlite_store, FakeEngine(behaviour), "ck", dataclasses.replace(cfg, diagnostic_early_stop=False))
    found = check()
    assert not found.passed and f"{stopped}: {cfg.n_samples} of {sizes[stopped]}" in found.message
