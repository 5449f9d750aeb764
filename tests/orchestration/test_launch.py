"""Launching through the instance from the command line: a failed run is reported once, with its cause."""

from dagster import DagsterInstance, DagsterRunStatus

from assets.partitions import checkpoint_partitions
from fixability_dag.orchestration.launch import code_location, follow, launch
from resources import AuditSettings


def test_a_failed_run_is_followed_to_its_end_and_its_error_printed_once(tmp_path, monkeypatch):
    """The checkpoint directory has no such checkpoint: problem_set fails before any engine loads."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("FIXABILITY_DB_URL", f"sqlite:///{tmp_path / 'audit.db'}")
    (tmp_path / "empty").mkdir()
    run_config = {**AuditSettings().run_config(), "loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    run_config["resources"]["checkpoints"] = {"config": {"root": str(tmp_path / "empty"), "settle_seconds": 0}}
    lines = []
    with DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions(checkpoint_partitions.name, ["ghost"])
        with code_location(instance) as workspace:
            run_id, how = launch(instance, workspace, "audit_checkpoint", run_config, partition_key="ghost")
            assert how == "launched"  # no daemon heart-beating in this instance: nothing would dequeue it
            assert follow(instance, run_id, lines.append, poll=0.5) == DagsterRunStatus.FAILURE
        run = instance.get_run_by_id(run_id)
        assert run.remote_job_origin is not None and run.tags["dagster/partition"] == "ghost"
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1 and failed[0].startswith("problem_set: FAILED: ")
    assert "no checkpoint directory for partition key 'ghost'" in failed[0] and "Traceback" not in failed[0]
    assert "problem_set: started" in lines
    assert any(line.startswith("run failed: ") for line in lines)
