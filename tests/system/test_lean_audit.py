"""An audit that generates only what its question needs (issue 15), on the real vLLM engine and a demo checkpoint:
the diagnostic phase stopped per problem once it is known not to be failed gives the fixed-budget failed set and
failed-problem features with fewer rows, and a step with nothing to generate starts no engine."""

import shutil

import pytest
from dagster import DagsterInstance, materialize

from assets import ALL_ASSETS
from fixability_dag.core.features import first_block_pass_rates
from fixability_dag.core.stopping import failed_cap, replay
from resources import AuditSettings, ResultsDatabase

from tests.support import TINY, demo_checkpoint, real_resources

pytestmark = pytest.mark.vllm

ENGINE_STARTED = "started the vLLM engine for checkpoint"
GPU_STEPS = ["base_rollouts", "probe_rollouts", "rescue_rollouts", "rescue_evaluation"]
KEYS = ["problem_id", "sample_index", "seed", "text", "answer", "is_correct"]


def engine_starts(instance: DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step, message) of every engine start the run's log records (the resource logs each one to its step)."""
    return [(entry.step_key, entry.user_message) for entry in instance.all_logs(run_id)
            if entry.dagster_event is None and ENGINE_STARTED in (entry.user_message or "")]


def test_a_step_with_everything_stored_starts_no_engine(audited_instance, tmp_path):
    """The session's audit started the engine once, in its first generating step; re-materializing every generating
    step on a copy of its database, with every rollout kept, starts none and rewrites nothing."""
    with audited_instance.instance() as first:
        starts = engine_starts(first, audited_instance.results[0].run_id)
    assert [step for step, _ in starts] == ["base_rollouts"], starts  # one engine per run, built when needed
    shutil.copy(audited_instance.home / "audit.db", tmp_path / "audit.db")
    url, key = f"sqlite:///{tmp_path / 'audit.db'}", audited_instance.checkpoint_id
    store = ResultsDatabase(url=url).store()
    before = store.read("rollouts", key).sort_values(["phase", "problem_id", "intervention", "sample_index"])
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("checkpoints", [key])
    again = materialize(ALL_ASSETS, selection=GPU_STEPS, instance=instance, partition_key=key,
                        resources=real_resources(url))
    assert again.success
    assert engine_starts(instance, again.run_id) == []
    runs = store.read("audit_runs", key)
    summaries = dict(zip(runs.loc[runs["run_id"] == again.run_id, "asset"], runs.loc[runs["run_id"] == again.run_id, "summary"]))
    assert set(summaries) == set(GPU_STEPS)
    for step, summary in summaries.items():
        assert summary["generated_requests"] == 0 and summary["kept_requests"] > 0, (step, summary)
    after = store.read("rollouts", key).sort_values(["phase", "problem_id", "intervention", "sample_index"])
    assert after[["id", "text", "run_id"]].reset_index(drop=True).equals(before[["id", "text", "run_id"]].reset_index(drop=True))


def audit_diagnostics(tmp_path, name: str, early_stop: bool):
    """problem_set .. failure_features of the demo checkpoint with the diagnostic phase in blocks of 2 (8 samples,
    failed at <= 2 successes), stopped or not; returns the store, the instance and the run."""
    url = f"sqlite:///{tmp_path / f'{name}.db'}"
    instance = DagsterInstance.ephemeral()
    key = demo_checkpoint("arith-sft-s2000").name  # solves the short chains, fails the long ones
    instance.add_dynamic_partitions("checkpoints", [key])
    settings = AuditSettings(**{**TINY, "fail_threshold": 0.25, "diagnostic_block": 2, "diagnostic_early_stop": early_stop})
    result = materialize(ALL_ASSETS, selection=["problem_set", "base_rollouts", "probe_rollouts", "failure_features"],
                         instance=instance, partition_key=key, resources={**real_resources(url), "settings": settings})
    assert result.success  # the rows_per_problem check (blocking) passed on each shape
    return ResultsDatabase(url=url).store(), instance, result, key


def test_a_stopped_diagnostic_phase_gives_the_fixed_budget_failed_set_and_features_on_real_output(tmp_path):
    """Two real audits of one checkpoint with the same diagnostic blocks, one stopping each problem once it is
    known not to be failed: the same failed problems with the same rows and features, fewer diagnostic rows in
    all, the same first-block pass rates; the stopped rows are what the rule keeps of the fixed ones."""
    fixed_store, fixed_instance, fixed_run, key = audit_diagnostics(tmp_path, "fixed", early_stop=False)
    stopped_store, stopped_instance, stopped_run, _ = audit_diagnostics(tmp_path, "stopped", early_stop=True)
    for instance, run in ((fixed_instance, fixed_run), (stopped_instance, stopped_run)):
        assert [step for step, _ in engine_starts(instance, run.run_id)] == ["base_rollouts"]  # lazy, and it generates
    order = ["problem_id", "sample_index"]
    full = fixed_store.read("rollouts", key, phase="diagnostic").sort_values(order).reset_index(drop=True)
    drawn = stopped_store.read("rollouts", key, phase="diagnostic").sort_values(order).reset_index(drop=True)
    assert len(drawn) < len(full), "no problem stopped: the test checkpoint must solve some problems early"
    features = lambda store: store.read("problem_features", key).drop(columns=["checkpoint_id"])  # noqa: E731
    failed = sorted(features(fixed_store)["problem_id"])
    assert failed and failed == sorted(features(stopped_store)["problem_id"])
    assert features(fixed_store).equals(features(stopped_store))
    mine = lambda f: f[f["problem_id"].isin(failed)][KEYS].reset_index(drop=True)  # noqa: E731
    assert mine(full).equals(mine(drawn))
    cap = failed_cap(TINY["n_samples"], 0.25)
    assert drawn[KEYS].equals(replay(full, 2, cap, ["problem_id"])[KEYS].reset_index(drop=True))
    assert first_block_pass_rates(full).equals(first_block_pass_rates(drawn))
    [shown] = stopped_run.asset_materializations_for_node("base_rollouts")
    assert shown.metadata["diagnostic_samples_saved"].value == len(full) - len(drawn)
