from datetime import datetime, timezone

from dagster import SkipReason, build_schedule_context, instance_for_test

from assets.partitions import checkpoint_partitions
from fixability_dag.orchestration.schedules import nightly_audit
from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.pipeline.staleness import FINAL_ASSET
from resources import AuditSettings, ResultsDatabase


def run_schedule(instance, url, settings):
    with build_schedule_context(
        instance=instance, scheduled_execution_time=datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc),
        resources={"database": ResultsDatabase(url=url), "settings": settings},
    ) as context:
        return nightly_audit(context)


def test_nightly_audits_new_old_code_and_changed_config(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with instance_for_test() as instance:
        check_schedule(instance, url)


def check_schedule(instance, url):
    settings = AuditSettings()
    config_hash = settings.config().config_hash()

    assert isinstance(run_schedule(instance, url, settings), SkipReason)  # no partitions at all

    instance.add_dynamic_partitions(checkpoint_partitions.name, ["fresh", "current", "old-code", "old-config"])
    store = ResultsDatabase(url=url).store()
    store.migrate()
    for key, code, cfg in (("current", CODE_VERSION, config_hash), ("old-code", "0.0.1", config_hash), ("old-config", CODE_VERSION, "other")):
        store.register_checkpoint(key, f"/x/{key}", "fp")
        store.finish_run(store.start_run("r", key, FINAL_ASSET, code, cfg, {}), "success")
    store.register_checkpoint("fresh", "/x/fresh", "fp")
    store.finish_run(store.start_run("r", "fresh", FINAL_ASSET, CODE_VERSION, config_hash, {}), "failed")

    requests = run_schedule(instance, url, settings)
    by_key = {r.partition_key: r for r in requests}
    assert set(by_key) == {"fresh", "old-code", "old-config"}
    assert by_key["fresh"].tags["fixability/reason"] == "never audited"
    assert "0.0.1" in by_key["old-code"].tags["fixability/reason"]
    assert "2026-11-24" in by_key["old-config"].run_key

    # a different config makes every checkpoint stale
    assert len(run_schedule(instance, url, AuditSettings(n_samples=32))) == 4
