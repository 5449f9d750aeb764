"""One audit per checkpoint at a time, many checkpoints at once: leases and concurrent writers on SQLite (WAL) and
PostgreSQL, with real processes."""

import multiprocessing
import subprocess
import sys
from datetime import timedelta

import pytest
from dagster import DagsterInstance, materialize

from assets import problem_set
from fixability_dag.storage import leases
from fixability_dag.storage.store import AuditStore
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase

from tests.support import FAKE_CFG, FakeEngine, behaviour, run_audit

pytestmark = pytest.mark.postgres
SPAWN = multiprocessing.get_context("spawn")


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lease_is_exclusive_reentrant_and_released(store):
    assert store.hold_lease("ck", "run-a") == "taken"
    assert store.hold_lease("ck", "run-a") == "refreshed"
    other = AuditStore(store.url)
    with pytest.raises(leases.CheckpointBusy, match="run-a"):
        other.hold_lease("ck", "run-b")
    assert other.hold_lease("ck-2", "run-b") == "taken"  # other checkpoints are free
    assert store.release_leases("run-a") == 1
    assert other.hold_lease("ck", "run-b") == "taken"
    other.dispose()


def test_dead_or_silent_holders_are_taken_over_and_their_runs_marked(store):
    store.register_checkpoint("ck", "/x", "fp")
    store.hold_lease("ck", "run-killed")
    store.start_run("run-killed", "ck", "base_rollouts", "v", "h", {})
    with store.engine.begin() as conn:  # the holder was a process that no longer exists (kill -9)
        conn.execute(leases._T.update().values(pid=dead_pid()))
    successor = AuditStore(store.url)
    assert successor.hold_lease("ck", "run-resume") == "dead-takeover"
    runs = store.read("audit_runs")
    assert list(runs["status"]) == ["abandoned"]
    # a live holder elsewhere that stopped heart-beating is taken over after the ttl
    with store.engine.begin() as conn:
        conn.execute(leases._T.update().values(host="another-host"))
    with pytest.raises(leases.CheckpointBusy):
        store.hold_lease("ck", "run-third")
    assert store.hold_lease("ck", "run-third", ttl=timedelta(0)) == "expired-takeover"
    successor.dispose()


def test_a_run_that_lost_its_lease_cannot_write(store):
    """Fencing: the write that discovers the lease is gone is rolled back, so two runs never interleave rows."""
    from tests.support import rollout_rows

    run_audit(store, FakeEngine(behaviour), FAKE_CFG, "ck")  # any rows to protect
    before = store.count("rollouts", "ck")
    store.hold_lease("ck", "stalled-run")
    AuditStore(store.url).hold_lease("ck", "new-run", ttl=timedelta(0))  # the stalled run looked dead
    with pytest.raises(leases.CheckpointBusy, match="rolled back"):
        store.replace("rollouts", "ck", rollout_rows(3), phase="diagnostic")
    with pytest.raises(leases.CheckpointBusy):
        store.delete_rollout_groups("ck", "diagnostic", [("arith-L1-T0-V0", "retry")])
    with pytest.raises(leases.CheckpointBusy):
        store.insert_rollouts("ck", rollout_rows(3))
    assert store.count("rollouts", "ck") == before


def _audit_in_process(url: str, checkpoint_id: str, barrier) -> None:
    store = AuditStore(url)
    store.migrate()  # both processes migrate the same fresh database at the same moment
    barrier.wait(timeout=120)
    store.hold_lease(checkpoint_id, f"run-{checkpoint_id}")
    run_audit(store, FakeEngine(behaviour), FAKE_CFG, checkpoint_id)
    store.release_leases(f"run-{checkpoint_id}")
    store.dispose()


def test_two_audits_of_different_checkpoints_at_once(db_url):
    """Two processes audit two checkpoints against one fresh database (SQLite WAL + busy timeout, or PostgreSQL)."""
    barrier = SPAWN.Barrier(2)
    procs = [SPAWN.Process(target=_audit_in_process, args=(db_url, ck, barrier)) for ck in ("ck-a", "ck-b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0, 0]

    # each checkpoint has exactly the rows its config asks for, and both the same (deterministic fake engine)
    store = AuditStore(db_url)
    n_problems = len(FAKE_CFG.load_problems())
    assert store.count("problems") == n_problems
    for ck in ("ck-a", "ck-b"):
        assert store.count("rollouts", ck, phase="diagnostic") == n_problems * FAKE_CFG.n_samples
        rollouts = store.read("rollouts", ck)
        assert not rollouts.duplicated(["phase", "problem_id", "intervention", "sample_index"]).any()
        failed = len(store.read("problem_features", ck))
        assert failed > 0 and store.count("routing_plans", ck) == failed and store.count("regime_labels", ck) == failed
    a, b = (store.read("rollouts", ck).drop(columns=["id", "checkpoint_id", "run_id"]).sort_values(
        ["phase", "problem_id", "intervention", "sample_index"]).reset_index(drop=True) for ck in ("ck-a", "ck-b"))
    assert a.equals(b), "same seeds, same fake engine: the two concurrent audits must agree row for row"
    assert store.read("checkpoint_leases").empty
    store.dispose()


def _hold(url: str, checkpoint_id: str, holding, done) -> None:
    store = AuditStore(url)
    store.hold_lease(checkpoint_id, "first-run")
    holding.set()
    done.wait(timeout=300)
    # exits without releasing: like a run killed mid-way


def test_second_dagster_run_of_a_busy_checkpoint_is_refused_until_the_holder_dies(db_url, checkpoint_copy):
    store = AuditStore(db_url)
    store.migrate()
    key = checkpoint_copy.name
    holding, done = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold, args=(db_url, key, holding, done))
    holder.start()
    assert holding.wait(timeout=120)

    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("checkpoints", [key])
    resources = {"database": ResultsDatabase(url=db_url), "checkpoints": CheckpointDirectory(root=str(checkpoint_copy.parent), settle_seconds=0),
                 "settings": AuditSettings(chain_lengths=[1], templates_per_length=1, variants_per_template=1)}
    refused = materialize([problem_set], instance=instance, partition_key=key, resources=resources, raise_on_error=False)
    assert not refused.success
    failure = next(e for e in refused.all_events if e.is_step_failure).step_failure_data.error
    cause = failure.cause  # the step error wraps ours
    assert cause.cls_name == "CheckpointBusy" and "first-run" in cause.message
    assert store.count("checkpoints") == 0 and store.count("audit_runs") == 0  # refused before any write

    done.set()
    holder.join(timeout=60)
    resumed = materialize([problem_set], instance=instance, partition_key=key, resources=resources)
    assert resumed.success and store.count("checkpoints") == 1
    assert store.read("checkpoint_leases").empty  # released at the end of the run
    store.dispose()
