"""The whole asset graph for a demo checkpoint: real Dagster materializations, the real vLLM engine, real SQL."""

import pytest
from dagster import DagsterInstance, materialize

from assets import ALL_ASSETS, CHECKPOINT_ASSETS
from fixability_dag.core.regimes import ground_truth, intervention_outcomes
from fixability_dag.core.stopping import replay
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase, VLLMResource

from tests.support import DEMO_CHECKPOINTS, SETTINGS, TINY, check_invariants, demo_checkpoint

pytestmark = [pytest.mark.vllm, pytest.mark.postgres]

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

    # The label phase stopped each group at its first block with a success. Drawn again to its full budget (same
    # block seeds: the stored blocks are kept, only the rest is drawn), the stored rows are what replaying the rule
    # on the full rows keeps, and every label comes out the same: on real vLLM output, not only on planted data.
    stopped = store.read("rollouts", key, phase="label").sort_values(["problem_id", "intervention", "sample_index"])
    outcomes = store.read("intervention_outcomes", key)
    undrawn = int((outcomes["budget"] - outcomes["samples"]).sum())
    full_settings = AuditSettings(**{**TINY, "label_early_stop": False})
    drawn = materialize([*ALL_ASSETS], instance=instance, selection=["rescue_rollouts"], partition_key=key,
                        resources={**resources(db_url), "settings": full_settings})
    assert drawn.success
    full = store.read("rollouts", key, phase="label").sort_values(["problem_id", "intervention", "sample_index"])
    assert undrawn > 0 and len(full) - len(stopped) == undrawn  # exactly what stopping saved, drawn now
    columns = ["problem_id", "intervention", "sample_index", "seed", "text", "is_correct"]
    block = SETTINGS.config().label_block
    assert replay(full, block)[columns].reset_index(drop=True).equals(stopped[columns].reset_index(drop=True))
    failed = sorted(full["problem_id"].unique())
    assert ground_truth(intervention_outcomes(full, block), failed).equals(
        ground_truth(intervention_outcomes(stopped, block), failed))


def test_a_checkpoint_failing_one_or_two_problems_completes_every_asset(tmp_path):
    """The small run of issue 13 on the real engine: two problems (chain lengths 1 and 5) on the late SFT
    checkpoint, which solves length 1 and fails length 5; every asset materializes and regime_labels says why
    there are no accuracies."""
    url = f"sqlite:///{tmp_path / 'small.db'}"
    instance = DagsterInstance.ephemeral()
    key = "arith-sft-s2000"
    instance.add_dynamic_partitions("checkpoints", [key])
    small = AuditSettings(**{**TINY, "chain_lengths": [1, 5], "templates_per_length": 1, "variants_per_template": 1})
    result = materialize(CHECKPOINT_ASSETS, instance=instance, partition_key=key,
                         resources={**resources(url), "settings": small})
    assert result.success
    store = ResultsDatabase(url=url).store()
    failed = len(store.read("regime_labels", key))
    assert 1 <= failed <= 2
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert f"{failed} failed problem" in metadata["regime_labels"]["not_computed"].value
    assert (store.read("audit_runs", key)["status"] == "success").all()
