"""The nightly audit: every checkpoint not yet audited, or audited with older code or another config."""


from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from assets.partitions import checkpoint_partitions
from fixability_dag.orchestration.jobs import audit_checkpoint_job
from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.pipeline.staleness import checkpoints_to_audit
from resources import AuditSettings, ResultsDatabase


@schedule(cron_schedule="0 2 * * *", job=audit_checkpoint_job, execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED)
def nightly_audit(context: ScheduleEvaluationContext, database: ResultsDatabase, settings: AuditSettings):
    """Re-reads the settings file at each tick, as the sensor does, and puts every setting into the run config."""
    settings = settings.reread()
    keys = checkpoint_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    config_hash = settings.config().config_hash()
    stale = checkpoints_to_audit(database.store(), keys, config_hash)
    if not stale:
        return SkipReason(f"all {len(keys)} checkpoints audited with code {CODE_VERSION} and config {config_hash}")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "adhoc"
    return [
        RunRequest(partition_key=key, run_key=f"nightly:{day}:{key}:{CODE_VERSION}:{config_hash}",
                   run_config=settings.run_config(), tags={"fixability/trigger": "nightly", "fixability/reason": why})
        for key, why in stale.items()
    ]
