"""A production-mode audit (``label_subsample``) of a committed demo checkpoint: real Dagster materializations, the
real vLLM engine, the shapes checked in SQL as a user would query them."""

import pytest
from dagster import DagsterInstance, materialize
from sqlalchemy import text

from assets import ALL_ASSETS, CHECKPOINT_ASSETS
from fixability_dag.core.rescue import SUBSAMPLE_POLICIES
from fixability_dag.core.regimes import REGIMES
from fixability_dag.pipeline.audit import label_subsample, topography
from resources import AuditSettings, ResultsDatabase

from tests.support import TINY, demo_checkpoint, real_resources

pytestmark = [pytest.mark.vllm]


def test_a_production_audit_labels_the_subsample_and_plans_and_evaluates_every_failed_problem(tmp_path):
    url = f"sqlite:///{tmp_path / 'production.db'}"
    key = demo_checkpoint().name
    settings = AuditSettings(**{**TINY, "label_subsample": 0.5})
    resources = {**real_resources(url), "settings": settings}
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("checkpoints", [key])
    result = materialize(CHECKPOINT_ASSETS, instance=instance, partition_key=key, resources=resources)
    report = materialize(ALL_ASSETS, selection=["failure_topography"], instance=instance, resources=resources)
    assert result.success and report.success
    checks = [e for r in (result, report) for e in r.get_asset_check_evaluations()]
    assert checks and all(e.passed for e in checks), [e.description for e in checks if not e.passed]

    store = ResultsDatabase(url=url).store()

    def sql(query: str, **params):
        with store.engine.connect() as conn:
            return conn.execute(text(query), {"ck": key, **params}).all()

    failed = {p for (p,) in sql("SELECT problem_id FROM problem_features WHERE checkpoint_id = :ck")}
    assert len(failed) >= 4, "the early demo checkpoint fails several problems"
    drawn = {p for (p,) in sql("SELECT problem_id FROM regime_labels WHERE checkpoint_id = :ck AND label_sample")}
    assert drawn == label_subsample(sorted(failed), settings.config()).drawn and len(drawn) == -(-len(failed) // 2)
    # the label phase and its outcomes: the subsample only; probes: every failed problem
    assert {p for (p,) in sql("SELECT DISTINCT problem_id FROM rollouts WHERE checkpoint_id = :ck AND phase = 'label'")} == drawn
    assert {p for (p,) in sql("SELECT DISTINCT problem_id FROM intervention_outcomes WHERE checkpoint_id = :ck")} == drawn
    assert {p for (p,) in sql("SELECT DISTINCT problem_id FROM rollouts WHERE checkpoint_id = :ck AND phase = 'probe'")} == failed
    # a label row per failed problem; truth and weight exactly on the subsample
    rows = sql("SELECT problem_id, label_sample, true_regime, label_weight, cluster_id FROM regime_labels "
               "WHERE checkpoint_id = :ck")
    assert {r[0] for r in rows} == failed and all(r[4] is not None for r in rows)
    assert all((r[2] is not None) == bool(r[1]) == (r[3] is not None) for r in rows)
    assert {round(r[3], 9) for r in rows if r[1]} == {round(len(failed) / len(drawn), 9)}
    # plan: every failed problem
    assert {p for (p,) in sql("SELECT problem_id FROM routing_plans WHERE checkpoint_id = :ck")} == failed
    # evaluation: routed, retry and best_single on every failed problem; label-phase policies and regimes on the sample
    evals = sql("SELECT policy, regime, problems, label_subsample, failed_problems FROM rescue_evaluations "
                "WHERE checkpoint_id = :ck AND matching = 'samples'")
    for policy, regime, problems, on_subsample, population in evals:
        assert population == len(failed)
        if regime == "all" and policy not in SUBSAMPLE_POLICIES:
            assert problems == len(failed) and not on_subsample, policy
        else:
            assert on_subsample and problems <= len(drawn), (policy, regime)
    assert {(p, n) for p, r, n, _, _ in evals if r == "all" and p in SUBSAMPLE_POLICIES} == {
        (p, len(drawn)) for p in SUBSAMPLE_POLICIES}
    per_regime = {}
    for policy, regime, problems, _, _ in evals:
        if regime != "all" and not regime.startswith("replicated:"):
            per_regime[policy] = per_regime.get(policy, 0) + problems
    assert set(per_regime.values()) == {len(drawn)}
    # accuracies say on how many of how many
    assert set(sql("SELECT failed_problems, labelled_problems FROM regime_reports WHERE checkpoint_id = :ck")) == {
        (len(failed), len(drawn))}
    # what a person sees says it too
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for r in (result, report)
                for e in r.get_asset_materialization_events()}
    described = f"{len(drawn)} of {len(failed)} failed problems (label subsample)"
    assert metadata["regime_labels"]["label_subsample"].value == described
    assert metadata["rescue_evaluation"]["label_subsample"].value == described
    assert described in metadata["regime_labels"]["cluster_accuracy"].value
    [row] = topography(store).to_dict("records")  # weighted shares with their intervals, every failed problem counted
    assert row["failed"] == len(failed) and row["labelled"] == len(drawn)
    assert all(row[f"share_{r}_ci_low"] <= row[f"share_{r}"] <= row[f"share_{r}_ci_high"] for r in REGIMES)
    store.dispose()
