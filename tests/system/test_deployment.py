"""The deployment profiles: the instance YAMLs in deploy/ loaded into real Dagster instances (SQLite and PostgreSQL),
audits run on them with the real vLLM engine, the run queue's limits, and the Kubernetes job variant.

Every PostgreSQL-backed test gets fresh databases on the test server (FIXABILITY_TEST_PG_URL), dropped afterwards.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, execute_job, materialize, reconstructable
from sqlalchemy import create_engine, inspect, select, table, text

from assets import CHECKPOINT_ASSETS
from assets.shape import GPU_STEP_TAGS
from fixability_dag.orchestration.jobs import EXECUTOR_ENV, build_audit_job
from fixability_dag.storage.store import DB_URL_ENV
from fixability_dag.testing.scratch import ScratchDatabases
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase, VLLMResource

from tests.support import DEMO_CHECKPOINTS, PG_ADMIN_URL, REPO, TINY, demo_checkpoint

DEPLOY = REPO / "deploy"
PASSWORD = "S3cret-XYZ"  # trust auth on the test server ignores it; it must never be stored or logged anywhere
PARTITION_TAG = "dagster/partition"
GPU_ASSETS = {"base_rollouts", "probe_rollouts", "rescue_rollouts", "rescue_evaluation"}


# ----------------------------------------------------------------------------------------------------------- fixtures

@pytest.fixture
def scratch_db():
    """Factory of fresh PostgreSQL databases; each returns its URL with ``PASSWORD`` in it, for ``driver``."""
    with ScratchDatabases(PG_ADMIN_URL, "fixability_deploy") as dbs:
        yield lambda driver="psycopg": dbs.create(drivername=f"postgresql+{driver}", password=PASSWORD)


def dagster_home(tmp_path: Path, profile: str) -> Path:
    """A DAGSTER_HOME holding a copy of ``deploy/<profile>`` as its dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((DEPLOY / profile).read_text())
    return home


@pytest.fixture
def pg_instance(tmp_path, scratch_db, monkeypatch):
    """deploy/dagster.postgres.yaml on a fresh database, with a password in DAGSTER_PG_URL."""
    monkeypatch.setenv("DAGSTER_PG_URL", scratch_db("psycopg2"))
    home = dagster_home(tmp_path, "dagster.postgres.yaml")
    with DagsterInstance.from_config(str(home)) as instance:
        yield instance


# ------------------------------------------------------------------------------------------------ password scanning

def _texts(value) -> list[str]:
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, bytes):  # Dagster stores snapshots zlib-compressed
        try:
            value = zlib.decompress(value)
        except zlib.error:
            pass
        return [value.decode("utf-8", "replace")]
    return [] if value is None else [str(value)]


def password_in_database(url: str) -> list[str]:
    """``table: rows`` for every table of the database where ``PASSWORD`` occurs in any column (blobs decompressed)."""
    engine = create_engine(url)
    hits = []
    with engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            rows = conn.execute(select(text("*")).select_from(table(name))).all()
            found = sum(any(PASSWORD in t for v in row for t in _texts(v)) for row in rows)
            if found:
                hits.append(f"{name}: {found} rows")
    engine.dispose()
    return hits


def password_in_files(root: Path) -> list[str]:
    """Files under ``root`` (compute logs, SQLite storage) holding ``PASSWORD``; SQLite files are read row by row."""
    hits = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".db":
            with sqlite3.connect(path) as conn:
                names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for name in names:
                    rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()  # name from sqlite_master, not input
                    if any(PASSWORD in t for row in rows for v in row for t in _texts(v)):
                        hits.append(f"{path.name}:{name}")
        elif PASSWORD.encode() in path.read_bytes():
            hits.append(str(path.relative_to(root)))
    return hits


def password_in_run_records(instance: DagsterInstance, run_id: str) -> list[str]:
    """Run config, tags, job and plan snapshots, and every event (including all materialization metadata)."""
    from dagster._serdes import serialize_value

    run = instance.get_run_by_id(run_id)
    parts = {
        "run_config": json.dumps(run.run_config, default=str),
        "tags": json.dumps(dict(run.tags)),
        "job_snapshot": serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
        "execution_plan_snapshot": serialize_value(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)),
    }
    for i, record in enumerate(instance.all_logs(run_id)):
        parts[f"event {i} ({record.dagster_event_type})"] = serialize_value(record)
    return [name for name, body in parts.items() if PASSWORD in body]


# ----------------------------------------------------------------------------------------------- instance profiles

@pytest.mark.postgres
def test_postgres_profile_loads_into_a_postgres_instance(pg_instance):
    from dagster import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    text_of_profile = (DEPLOY / "dagster.postgres.yaml").read_text()
    assert "password" not in yaml.safe_load(text_of_profile)["storage"]["postgres"]  # only `postgres_url: {env: ...}`
    assert isinstance(pg_instance.run_storage, PostgresRunStorage)
    assert isinstance(pg_instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(pg_instance.schedule_storage, PostgresScheduleStorage)
    assert isinstance(pg_instance.run_coordinator, QueuedRunCoordinator)

    concurrency = pg_instance.get_concurrency_config()
    queue = concurrency.run_queue_config
    assert queue.max_concurrent_runs == 8
    assert queue.tag_concurrency_limits == [{"key": PARTITION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
    assert concurrency.pool_config.pool_granularity.value == "run"
    assert concurrency.pool_config.default_pool_limit == 1
    assert pg_instance.event_log_storage.get_concurrency_info("gpu").limit == 1
    assert (pg_instance.run_retries_enabled, pg_instance.run_retries_max_retries) == (True, 2)
    assert pg_instance.run_retries_retry_on_asset_or_op_failure is False
    assert pg_instance.run_monitoring_enabled and not pg_instance.telemetry_enabled

    # The storage really is the database: a second instance on the same URL sees what the first wrote.
    pg_instance.add_dynamic_partitions("checkpoints", ["ck-a"])
    with DagsterInstance.from_config(str(pg_instance.root_directory)) as other:
        assert other.get_dynamic_partitions("checkpoints") == ["ck-a"]


def test_local_profile_loads_into_a_sqlite_instance(tmp_path):
    from dagster import QueuedRunCoordinator
    from dagster._core.storage.runs import SqliteRunStorage

    with DagsterInstance.from_config(str(dagster_home(tmp_path, "dagster.yaml"))) as instance:
        assert isinstance(instance.run_storage, SqliteRunStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)  # Dagster's default, which enforces the limits
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 4
        assert queue.tag_concurrency_limits == [{"key": PARTITION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


@pytest.mark.postgres
def test_run_queue_serializes_a_checkpoint_and_holds_the_gpu_pool(pg_instance):
    """What the daemon would launch from a queue of three audits (ck-a twice, ck-b once), decided by its own dequeue
    logic on the PostgreSQL instance: one run per checkpoint, and no more gpu runs than the pool's slots."""
    import logging

    from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.storage.dagster_run import DagsterRunStatus
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    from fixability_dag.definitions import defs

    job = defs.resolve_job_def("audit_checkpoint")
    location = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="fixability_dag.definitions"))
    origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "audit_checkpoint")
    pg_instance.add_dynamic_partitions("checkpoints", ["ck-a", "ck-b"])
    queued = [pg_instance.create_run_for_job(job, status=DagsterRunStatus.QUEUED, tags={PARTITION_TAG: key},
                                             remote_job_origin=origin) for key in ("ck-a", "ck-a", "ck-b")]
    assert all(run.run_op_concurrency.all_pools == {"gpu"} for run in queued)

    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    daemon._logger = logging.getLogger(__name__)  # set by the daemon controller when it runs for real

    def dequeued(gpu_slots: int) -> list[str]:
        pg_instance.event_log_storage.set_concurrency_slots("gpu", gpu_slots)
        runs = daemon._get_runs_to_dequeue(pg_instance, pg_instance.get_concurrency_config(), None)
        return [run.run_id for run in runs]

    first_a, second_a, only_b = (run.run_id for run in queued)
    assert dequeued(gpu_slots=2) == [first_a, only_b]  # the second ck-a waits for the first: tag limit
    assert dequeued(gpu_slots=1) == [first_a]  # one GPU: one audit at a time


# ------------------------------------------------------------------------------------- audits on the real profiles

def _resources():
    return {"database": ResultsDatabase(), "vllm": VLLMResource(cpu_kvcache_space_gib=2), "settings": AuditSettings(**TINY),
            "checkpoints": CheckpointDirectory(root=str(DEMO_CHECKPOINTS), settle_seconds=0)}


@pytest.mark.vllm
@pytest.mark.postgres
@pytest.mark.parametrize("profile", ["dagster.yaml", "dagster.postgres.yaml"])
def test_audit_on_each_profile_keeps_the_password_out(profile, tmp_path, scratch_db, monkeypatch, capfd):
    """The whole graph with the real engine, Dagster on SQLite or PostgreSQL, results on PostgreSQL; the password in
    both URLs appears in no table of either database, no file of the instance, no run record and no output."""
    results_url = scratch_db("psycopg")
    monkeypatch.setenv(DB_URL_ENV, results_url)  # the production path: the URL never enters run config
    dagster_url = scratch_db("psycopg2")
    monkeypatch.setenv("DAGSTER_PG_URL", dagster_url)
    home = dagster_home(tmp_path, profile)
    key = demo_checkpoint().name
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("checkpoints", [key])
        result = materialize(CHECKPOINT_ASSETS, instance=instance, partition_key=key, resources=_resources())
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run.tags[PARTITION_TAG] == key  # the tag the per-checkpoint run limit keys on
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized == {a.key.to_user_string() for a in CHECKPOINT_ASSETS}
        leaks = password_in_run_records(instance, result.run_id)

    store = ResultsDatabase().store()
    n_problems = len(AuditSettings(**TINY).config().load_problems())
    assert store.count("rollouts", key, phase="diagnostic") == n_problems * TINY["n_samples"]
    runs = store.read("audit_runs", key)
    assert set(runs["asset"]) == materialized and (runs["status"] == "success").all()
    store.dispose()

    out, err = capfd.readouterr()
    assert leaks == []
    assert password_in_database(results_url) == []
    assert password_in_database(dagster_url) == []  # untouched by the SQLite profile: empty, hence trivially clean
    assert password_in_files(home) == []
    assert PASSWORD not in out and PASSWORD not in err
    assert "results database: postgresql+psycopg://postgres:***@" in err + out  # the redacted URL is what gets logged


@pytest.mark.postgres
def test_the_scan_finds_a_password_put_in_resource_config(pg_instance, scratch_db):
    """Control for the test above: a URL set on the resource is baked into the job snapshot, and the scan sees it.
    (This is why ResultsDatabase reads FIXABILITY_DB_URL at run time instead.) Only problem_set runs: no engine."""
    results_url = scratch_db("psycopg")
    key = demo_checkpoint().name
    pg_instance.add_dynamic_partitions("checkpoints", [key])
    resources = {**_resources(), "database": ResultsDatabase(url=results_url)}
    result = materialize(CHECKPOINT_ASSETS, instance=pg_instance, partition_key=key, resources=resources,
                         selection=["problem_set"])
    assert result.success
    assert "job_snapshot" in password_in_run_records(pg_instance, result.run_id)


# ------------------------------------------------------------------------------------ parallel audits, PostgreSQL

def _audit_job():
    """The deployed audit job, as a code location loads it (reconstructable in another process)."""
    from fixability_dag.definitions import defs

    return defs.resolve_job_def("audit_checkpoint")


def run_audit_in_this_process(home: str, key: str) -> None:
    """What a run worker does: execute the audit job for one checkpoint on the instance at ``home``."""
    run_config = {"resources": {"settings": {"config": TINY}, "vllm": {"config": {"cpu_kvcache_space_gib": 1, "cpu_threads": 1}}}}
    with DagsterInstance.from_config(home) as instance:
        result = execute_job(reconstructable(_audit_job), instance=instance, run_config=run_config, tags={PARTITION_TAG: key})
    sys.exit(0 if result.success else 1)


@pytest.mark.vllm
@pytest.mark.postgres
def test_two_checkpoints_audited_at_once_on_postgres(tmp_path, scratch_db, monkeypatch):
    """Two run workers (separate processes, as the run launcher starts them) audit two checkpoints at the same time
    against one PostgreSQL instance and one PostgreSQL results database; the second run uses the multiprocess
    executor (one process per step), the first the default in-process one."""
    monkeypatch.setenv(DB_URL_ENV, scratch_db("psycopg"))
    monkeypatch.setenv("DAGSTER_PG_URL", scratch_db("psycopg2"))
    home = dagster_home(tmp_path, "dagster.postgres.yaml")
    keys = [demo_checkpoint().name, demo_checkpoint("arith-sft-s2000").name]
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("checkpoints", keys)

    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
    env.pop(EXECUTOR_ENV, None)
    workers = []
    for key, executor in zip(keys, ("in_process", "multiprocess")):
        log = open(tmp_path / f"{key}.log", "w")  # noqa: SIM115 - closed below
        code = f"from tests.system.test_deployment import run_audit_in_this_process as r; r({str(home)!r}, {key!r})"
        worker_env = {**env, EXECUTOR_ENV: executor}
        workers.append((key, log, subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=worker_env, stdout=log, stderr=subprocess.STDOUT)))
    for key, log, proc in workers:
        code = proc.wait(timeout=900)
        log.close()
        assert code == 0, f"audit of {key} failed:\n" + (tmp_path / f"{key}.log").read_text()[-4000:]

    with DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        assert sorted(r.dagster_run.tags[PARTITION_TAG] for r in records) == sorted(keys)
        assert all(r.dagster_run.is_success for r in records)
        step_pids = {r.dagster_run.tags[PARTITION_TAG]: {e.dagster_event.pid for e in instance.all_logs(r.dagster_run.run_id)
                                                          if e.step_key and e.dagster_event and e.dagster_event.pid}
                     for r in records}
        assert len(step_pids[keys[0]]) == 1 and len(step_pids[keys[1]]) > 1, "in-process vs one process per step"
        first, second = sorted(records, key=lambda r: r.start_time)
        assert second.start_time < first.end_time, "the two audits did not overlap in time"

    store = ResultsDatabase().store()
    n_problems = len(AuditSettings(**TINY).config().load_problems())
    for key in keys:
        assert store.count("rollouts", key, phase="diagnostic") == n_problems * TINY["n_samples"]
        assert set(store.read("audit_runs", key)["status"]) == {"success"}
        assert store.count("rescue_evaluations", key) > 0
    assert store.count("problems") == n_problems  # shared rows upserted by both runs, never duplicated
    # sibling steps in separate processes shared the lease; the last one to finish released it
    assert store.count("checkpoint_leases") == 0
    store.dispose()


# ------------------------------------------------------------------------------------------------------ Kubernetes

def test_k8s_job_variant_asks_for_a_gpu_on_the_rollout_steps_only():
    k8s = pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (pip install -e '.[k8s]')")
    from dagster import Definitions
    from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

    from assets import ALL_ASSETS
    from fixability_dag.definitions import default_resources

    defs = Definitions(assets=ALL_ASSETS, jobs=[build_audit_job("k8s")], resources=default_resources())
    job = defs.resolve_job_def("audit_checkpoint")
    assert job.executor_def is k8s.k8s_job_executor
    assert {n.name for n in job.graph.nodes if "dagster-k8s/config" in n.tags} == GPU_ASSETS

    # The pod spec dagster-k8s would submit for each step (no cluster needed to build it).
    job_config = DagsterK8sJobConfig(job_image="registry.example/fixability-dag:gpu", dagster_home="/opt/dagster/dagster_home",
                                     instance_config_map="dagster-instance")
    for node in job.graph.nodes:
        user_config = get_user_defined_k8s_config(node.tags)
        pod = construct_dagster_k8s_job(job_config, ["dagster", "api", "execute_step"], f"dagster-step-{node.name}".replace("_", "-"),
                                        user_config, component="step_worker")
        resources = pod.spec.template.spec.containers[0].resources
        limits = (resources.limits or {}) if resources else {}
        assert (limits.get("nvidia.com/gpu") == "1") == (node.name in GPU_ASSETS), node.name
    assert json.loads(json.dumps(GPU_STEP_TAGS)) == GPU_STEP_TAGS  # op tag values must survive JSON (Dagster stores them so)


def test_executor_choice_is_validated():
    with pytest.raises(ValueError, match="FIXABILITY_EXECUTOR must be one of"):
        build_audit_job("celery")


def test_k8s_example_files_parse():
    values = yaml.safe_load((DEPLOY / "k8s" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["enabled"] is False  # bring your own PostgreSQL; the chart's password comes from a secret
    [deployment] = values["dagster-user-deployments"]["deployments"]
    assert {"name": EXECUTOR_ENV, "value": "k8s"} in deployment["env"]


def test_k8s_example_run_config_is_valid_for_the_k8s_job():
    pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed (pip install -e '.[k8s]')")
    from dagster import Definitions, validate_run_config

    from assets import ALL_ASSETS
    from fixability_dag.definitions import default_resources

    job = Definitions(assets=ALL_ASSETS, jobs=[build_audit_job("k8s")], resources=default_resources()).resolve_job_def("audit_checkpoint")
    run_config = yaml.safe_load((DEPLOY / "k8s" / "audit_run_config.yaml").read_text())
    validated = validate_run_config(job, run_config)  # raises on an unknown or mistyped field
    assert validated["execution"]["k8s"]["max_concurrent"] == 2
