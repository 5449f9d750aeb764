"""The whole asset graph for a demo checkpoint: real Dagster materializations, the real vLLM engine, real SQL."""

import pytest
from dagster import DagsterInstance, materialize

from assets import ALL_ASSETS, CHECKPOINT_ASSETS
from fixability_dag.core.regimes import REGIMES
from fixability_dag.core.rescue import POLICIES
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase, VLLMResource

from tests.conftest import DEMO_CHECKPOINTS, demo_checkpoint

pytestmark = [pytest.mark.vllm, pytest.mark.postgres]

TINY = dict(chain_lengths=[1, 2, 4, 6], templates_per_length=2, variants_per_template=2, n_samples=8,
            probe_samples=4, retry_budget=8, intervention_budget=4, eval_budget=4,
            cluster_seeds=2, cluster_bootstraps=3, ablation_seeds=1)
"""A small audit that still has failures in every regime (as run config too: ``tests/system/test_deployment.py``)."""
SETTINGS = AuditSettings(**TINY)
TABLES = ("rollouts", "problem_features", "intervention_outcomes", "regime_labels", "routing_plans", "rescue_evaluations")


def resources(url):
    return {"database": ResultsDatabase(url=url), "vllm": VLLMResource(), "settings": SETTINGS,
            "checkpoints": CheckpointDirectory(root=str(DEMO_CHECKPOINTS), settle_seconds=0)}


def materialize_checkpoint(instance, key, url, selection=CHECKPOINT_ASSETS):
    result = materialize(selection, instance=instance, partition_key=key, resources=resources(url))
    assert result.success
    return result


def snapshot(store, key):
    counts = {t: store.count(t, key) for t in TABLES}
    rollouts = store.read("rollouts", key).sort_values(["phase", "problem_id", "intervention", "sample_index"])
    return counts, rollouts[["phase", "problem_id", "intervention", "sample_index", "seed", "text", "answer"]].reset_index(drop=True)


def check_invariants(store, key, cfg):
    n_problems = len(cfg.load_problems())
    assert store.count("problems") == n_problems
    assert store.count("rollouts", key, phase="diagnostic") == n_problems * cfg.n_samples
    features = store.read("problem_features", key)
    diag = store.read("rollouts", key, phase="diagnostic")
    failed = set(diag.groupby("problem_id")["is_correct"].sum().loc[lambda s: s == 0].index)
    assert set(features["problem_id"]) == failed and failed, "the demo checkpoint must fail some problems"
    assert features["answer_dispersion"].between(0, 1).all() and features["probe_shift"].between(0, 1).all()
    assert (features["policy_confidence"] <= 0).all()
    assert store.count("rollouts", key, phase="probe") == len(failed) * cfg.probe_samples
    assert store.count("intervention_outcomes", key) == len(failed) * len(cfg.interventions)
    labels = store.read("regime_labels", key)
    assert set(labels["problem_id"]) == failed and set(labels["true_regime"]) <= set(REGIMES)
    plan = store.read("routing_plans", key)
    assert set(plan["problem_id"]) == failed
    assert ((plan["action"] == "skip") == (plan["budget"] == 0)).all()
    evals = store.read("rescue_evaluations", key)
    assert len(evals) == len(POLICIES) * (1 + len(REGIMES))
    allrows = evals[evals["regime"] == "all"].set_index("policy")
    assert (allrows["problems"] == len(failed)).all()
    assert allrows.loc["oracle", "rescued"] >= 0 and allrows["rescue_rate"].between(0, 1).all()
    if len(labels) >= 6 and labels["true_regime"].nunique() >= 2:
        assert {"gmm", "kmeans", "majority_baseline"} <= set(store.read("regime_reports", key)["method"])
        assert store.count("feature_ablations", key) == 120
    runs = store.read("audit_runs", key)
    assert set(runs["asset"]) == {a.key.to_user_string() for a in CHECKPOINT_ASSETS} and (runs["status"] == "success").all()


def test_whole_graph_on_a_demo_checkpoint_is_idempotent(db_url):
    instance = DagsterInstance.ephemeral()
    key = demo_checkpoint().name
    instance.add_dynamic_partitions("checkpoints", [key])
    first = materialize_checkpoint(instance, key, db_url)
    store = ResultsDatabase(url=db_url).store()
    check_invariants(store, key, SETTINGS.config())
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in first.get_asset_materialization_events()}
    assert metadata["base_rollouts"]["rollouts"].value == store.count("rollouts", key, phase="diagnostic")
    assert "difficulty |" in metadata["base_rollouts"]["pass_rate_by_difficulty"].value

    counts, rollouts = snapshot(store, key)
    materialize_checkpoint(instance, key, db_url)  # the same partition again: replaced, never duplicated
    counts_again, rollouts_again = snapshot(store, key)
    assert counts_again == counts
    assert rollouts_again.equals(rollouts)  # seeded requests: the very same samples

    report = materialize([*ALL_ASSETS], instance=instance, selection=["failure_topography"], resources=resources(db_url))
    assert report.success
    [event] = report.get_asset_materialization_events()
    assert event.materialization.metadata["checkpoints"].value == 1
