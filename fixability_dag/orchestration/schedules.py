"""The nightly audit: every checkpoint not yet audited, or audited with older code or another config."""


from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from assets.partitions import checkpoint_partitions
from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.orchestration.jobs import audit_checkpoint_job
from resources import AuditSettings, ResultsDatabase

FINAL_ASSET = "rescue_evaluation"


def stale_checkpoints(keys: list[str], latest, config_hash: str) -> dict[str, str]:
    """Checkpoint -> why it needs an audit, given the newest successful audit of each (a frame)."""
    by_key = {r.checkpoint_id: r for r in latest.itertuples(index=False)}
    stale = {}
    for key in keys:
        row = by_key.get(key)
        if row is None:
            stale[key] = "never audited"
        elif row.code_version != CODE_VERSION:
            stale[key] = f"audited with code {row.code_version}, now {CODE_VERSION}"
        elif row.config_hash != config_hash:
            stale[key] = f"audited with config {row.config_hash}, now {config_hash}"
    return stale


@schedule(cron_schedule="0 2 * * *", job=audit_checkpoint_job, execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED)
def nightly_audit(context: ScheduleEvaluationContext, database: ResultsDatabase, settings: AuditSettings):
    keys = checkpoint_partitions.get_partition_keys(dynamic_partitions_store=context.instance)
    store = database.store()
    store.migrate()
    config_hash = settings.config().config_hash()
    stale = stale_checkpoints(keys, store.latest_audits(FINAL_ASSET), config_hash)
    if not stale:
        return SkipReason(f"all {len(keys)} checkpoints audited with code {CODE_VERSION} and config {config_hash}")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d") if context.scheduled_execution_time else "adhoc"
    return [
        RunRequest(partition_key=key, run_key=f"nightly:{day}:{key}:{CODE_VERSION}:{config_hash}",
                   tags={"fixability/trigger": "nightly", "fixability/reason": why})
        for key, why in sorted(stale.items())
    ]
