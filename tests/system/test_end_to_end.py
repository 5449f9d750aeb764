"""The whole asset graph for a demo checkpoint: real Dagster materializations, the real vLLM engine, real SQL."""

import shutil

import pytest
from dagster import DagsterInstance, materialize

from assets import ALL_ASSETS, CHECKPOINT_ASSETS
from fixability_dag.core.regimes import ground_truth, intervention_outcomes
from fixability_dag.core.stopping import replay
from fixability_dag.pipeline.figure_server import MARKDOWN_LIMIT
from fixability_dag.testing.scratch import reset_schema
from resources import AuditSettings, ResultsDatabase

from tests.support import SETTINGS, TINY, check_invariants, demo_checkpoint, real_resources

pytestmark = [pytest.mark.vllm, pytest.mark.postgres]

TABLES = ("rollouts", "problem_features", "intervention_outcomes", "regime_labels", "routing_plans", "rescue_evaluations")


def materialize_checkpoint(instance, key, url, selection=CHECKPOINT_ASSETS):
    result = materialize(selection, instance=instance, partition_key=key, resources=real_resources(url))
    assert result.success
    return result


def snapshot(store, key):
    counts = {t: store.count(t, key) for t in TABLES}
    rollouts = store.read("rollouts", key).sort_values(["phase", "problem_id", "intervention", "sample_index"])
    return counts, rollouts[["phase", "problem_id", "intervention", "sample_index", "seed", "text", "answer"]].reset_index(drop=True)


def check_rerun_is_idempotent(instance, key, url):
    """The same partition again: rows replaced, never duplicated, and the very same (seeded) samples."""
    store = ResultsDatabase(url=url).store()
    check_invariants(store, key, SETTINGS.config())
    counts, rollouts = snapshot(store, key)
    materialize_checkpoint(instance, key, url)
    counts_again, rollouts_again = snapshot(store, key)
    assert counts_again == counts
    assert rollouts_again.equals(rollouts)


def test_whole_graph_on_postgresql_is_idempotent(pg_server_url):
    reset_schema(pg_server_url)
    instance = DagsterInstance.ephemeral()
    key = demo_checkpoint().name
    instance.add_dynamic_partitions("checkpoints", [key])
    first = materialize_checkpoint(instance, key, pg_server_url)
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in first.get_asset_materialization_events()}
    store = ResultsDatabase(url=pg_server_url).store()
    assert metadata["base_rollouts"]["rollouts"].value == store.count("rollouts", key, phase="diagnostic")
    assert "difficulty |" in metadata["base_rollouts"]["pass_rate_by_difficulty"].value
    check_rerun_is_idempotent(instance, key, pg_server_url)

    report = materialize([*ALL_ASSETS], instance=instance, selection=["failure_topography"], resources=real_resources(pg_server_url))
    assert report.success
    [event] = report.get_asset_materialization_events()
    assert event.materialization.metadata["checkpoints"].value == 1


def test_the_shared_sqlite_audit_reruns_idempotently(audited_instance, tmp_path):
    """The session's audit (SQLite, tests/support.py) is the first run; a copy of its database takes the second."""
    shutil.copy(audited_instance.home / "audit.db", tmp_path / "audit.db")
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("checkpoints", [audited_instance.checkpoint_id])
    check_rerun_is_idempotent(instance, audited_instance.checkpoint_id, f"sqlite:///{tmp_path / 'audit.db'}")


def test_the_stopped_label_phase_is_the_replay_of_the_full_one_on_real_output(audited_instance, tmp_path):
    """The label phase stopped each group at its first block with a success. Drawn again to its full budget (same
    block seeds: the stored blocks are kept, only the rest is drawn), the stored rows are what replaying the rule
    on the full rows keeps, and every label comes out the same: on real vLLM output, not only on planted data."""
    shutil.copy(audited_instance.home / "audit.db", tmp_path / "audit.db")
    url, key = f"sqlite:///{tmp_path / 'audit.db'}", audited_instance.checkpoint_id
    store = ResultsDatabase(url=url).store()
    order = ["problem_id", "intervention", "sample_index"]
    stopped = store.read("rollouts", key, phase="label").sort_values(order)
    outcomes = store.read("intervention_outcomes", key)
    undrawn = int((outcomes["budget"] - outcomes["samples"]).sum())
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("checkpoints", [key])
    drawn = materialize([*ALL_ASSETS], instance=instance, selection=["rescue_rollouts"], partition_key=key,
                        resources={**real_resources(url), "settings": AuditSettings(**{**TINY, "label_early_stop": False})})
    assert drawn.success
    full = store.read("rollouts", key, phase="label").sort_values(order)
    assert undrawn > 0 and len(full) - len(stopped) == undrawn  # exactly what stopping saved, drawn now
    columns = [*order, "seed", "text", "is_correct"]
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
                         resources={**real_resources(url), "settings": small})
    assert result.success
    store = ResultsDatabase(url=url).store()
    failed = len(store.read("regime_labels", key))
    assert 1 <= failed <= 2
    metadata = {e.asset_key.to_user_string(): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert f"{failed} failed problem" in metadata["regime_labels"]["not_computed"].value
    assert (store.read("audit_runs", key)["status"] == "success").all()


def materializations(results) -> dict:
    return {e.asset_key.to_user_string(): e.materialization.metadata
            for r in results for e in r.get_asset_materialization_events()}


def test_every_check_passes_and_the_numbers_can_be_charted(audited_instance):
    from dagster import FloatMetadataValue, IntMetadataValue, MarkdownMetadataValue

    from fixability_dag.core.regimes import REGIMES
    from fixability_dag.core.rescue import POLICIES
    from fixability_dag.pipeline.checks import CHECKS

    evaluations = [e for r in audited_instance.results for e in r.get_asset_check_evaluations()]
    assert {(e.asset_key.to_user_string(), e.check_name) for e in evaluations} == {
        *((asset, inv.name) for asset, invariants in CHECKS.items() for inv in invariants),
        ("failure_topography", "shares_and_rates_consistent")}
    assert all(e.passed for e in evaluations), [e.description for e in evaluations if not e.passed]

    metadata = materializations(audited_instance.results)
    labels, evaluation, base = metadata["regime_labels"], metadata["rescue_evaluation"], metadata["base_rollouts"]
    shares = [labels[f"share_{r}"] for r in REGIMES]
    assert all(isinstance(s, FloatMetadataValue) for s in shares) and abs(sum(s.value for s in shares) - 1) < 1e-3
    assert all(isinstance(evaluation[f"rescue_rate_{p}"], FloatMetadataValue) for p in POLICIES)
    for name in ("solved_by_most", "solved_by_few", "solved_by_none", "failed_problems", "generated_tokens",
                 "kept_requests", "generated_requests"):
        assert isinstance(base[name], IntMetadataValue), name
    assert all(m["training_step"] == IntMetadataValue(300) for m in metadata.values() if "training_step" in m)
    assert sum("training_step" in m for m in metadata.values()) == len(CHECKPOINT_ASSETS)
    accuracy = labels["accuracy_supervised_logreg"]  # too few problems per class on this tiny audit, or a number
    assert isinstance(accuracy, FloatMetadataValue) or accuracy.value.startswith("n/a (")
    assert "nan" not in labels["cluster_accuracy"].value

    figures = audited_instance.home / "figures"
    for asset, entry, path in (("failure_topography", "plot", figures / "topography.png"),
                               ("base_rollouts", "pass_rate_by_difficulty_plot",
                                figures / audited_instance.checkpoint_id / "pass_rate_by_difficulty.png"),
                               ("rescue_evaluation", "rescue_by_policy_plot",
                                figures / audited_instance.checkpoint_id / "rescue_by_policy.png")):
        value = metadata[asset][entry]
        link = f"](http://127.0.0.1:{audited_instance.figure_port}/{path.relative_to(figures).as_posix()}?v="
        assert isinstance(value, MarkdownMetadataValue) and link in value.value  # served by fixability figures serve
        assert len(value.value) < MARKDOWN_LIMIT  # so the UI shows it in place
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(path) in value.value


def test_a_blocking_check_stops_the_steps_that_would_read_wrong_rows(audited_instance, tmp_path):
    """One rescue outcome lost: labels would call its problem's regime from partial evidence. The regime_labels
    check fails and rescue_evaluation, which scores per regime, does not run."""
    db = tmp_path / "audit.db"
    shutil.copy(audited_instance.home / "audit.db", db)
    url = f"sqlite:///{db}"
    store = ResultsDatabase(url=url).store()
    outcomes = store.read("intervention_outcomes", audited_instance.checkpoint_id)
    lost = outcomes[outcomes["intervention"] == "few_shot"].index[0]
    store.replace("intervention_outcomes", audited_instance.checkpoint_id, outcomes.drop(index=lost))
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("checkpoints", [audited_instance.checkpoint_id])
    result = materialize([*ALL_ASSETS], selection=["regime_labels", "rescue_evaluation"], instance=instance,
                         partition_key=audited_instance.checkpoint_id, resources=real_resources(url),
                         raise_on_error=False)
    assert not result.success
    [failed] = [e for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed.check_name == "every_failed_problem_has_evidence_and_a_label"
    assert f"{outcomes.loc[lost, 'problem_id']}/few_shot: 0 of 1" in failed.description
    assert {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()} == {"regime_labels"}
    [row] = store.read("audit_runs", audited_instance.checkpoint_id, asset="regime_labels", run_id=result.run_id).to_dict("records")
    assert row["summary"]["failed_checks"] == [failed.check_name]
