"""The checkpoint sensor: register each complete checkpoint as a partition and request its audit."""

import json

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets import REPORT_ASSETS
from assets.partitions import checkpoint_partitions
from fixability_dag.inputs.checkpoints import CheckpointInfo
from fixability_dag.orchestration.jobs import audit_checkpoint_job
from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.pipeline.staleness import checkpoints_to_audit
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase


def in_training_order(checkpoints: list[CheckpointInfo]) -> list[CheckpointInfo]:
    """Checkpoints by training step (unknown steps last, then by name). Dagster lists dynamic partitions in the order
    they were added, and the asset Plots tab draws them in that order: added alphabetically, an RFT checkpoint
    would sit between SFT steps."""
    return sorted(checkpoints, key=lambda c: (c.training_step is None, c.training_step or 0, c.checkpoint_id))


def audit_run_key(checkpoint_id: str, fingerprint: str, config_hash: str) -> str:
    """Dagster drops a run request whose key it has seen: the key changes with the weights, code and config."""
    return f"{checkpoint_id}:{fingerprint}:{CODE_VERSION}:{config_hash}"


@sensor(job=audit_checkpoint_job, minimum_interval_seconds=60, default_status=DefaultSensorStatus.RUNNING)
def checkpoint_sensor(context: SensorEvaluationContext, checkpoints: CheckpointDirectory, database: ResultsDatabase,
                      settings: AuditSettings):
    """Watches the checkpoint directory. A directory becomes a partition only once it is complete (config, weights
    whole, tokenizer, no temporary files, quiet for ``settle_seconds``). Its audit is requested when the results
    database has no successful audit of these weights under the current code and config, so restarting the
    daemon, or a checkpoint audited by ``make demo``, costs nothing; an overwritten checkpoint is re-audited.

    The cursor maps checkpoint id to the fingerprint last requested. A directory that is incomplete, corrupt or
    has an unsafe name (see :mod:`fixability_dag.inputs.checkpoints`) is never added as a partition: each tick logs why,
    and a tick that requests nothing says so in its skip reason (first three, visible in the UI).

    Each tick re-reads the settings file (``$FIXABILITY_SETTINGS``): a file that became invalid fails the tick with
    the key named, before any run is requested; each run request carries every setting in its run config, so the
    run audits with what the tick checked and hashed.
    """
    settings = settings.reread()
    complete, skipped = checkpoints.scan()
    requested: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    known = set(checkpoint_partitions.get_partition_keys(dynamic_partitions_store=context.instance))
    config_hash = settings.config().config_hash()
    for name, why in skipped.items():
        context.log.info(f"not auditable (not registered as a partition): {name}: {why}")

    new_keys = [c.checkpoint_id for c in in_training_order(complete) if c.checkpoint_id not in known]
    candidates = [c for c in complete if requested.get(c.checkpoint_id) != c.fingerprint]
    if candidates:
        on_disk = {c.checkpoint_id: c.fingerprint for c in candidates}
        stale = checkpoints_to_audit(database.store(), on_disk, config_hash, fingerprints=on_disk)
        candidates = [c for c in candidates if c.checkpoint_id in stale]
    if not candidates and not new_keys:
        why = "; ".join(f"{name}: {reason}" for name, reason in list(skipped.items())[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        return SkipReason(f"no new or changed complete checkpoint in {checkpoints.root} ({len(skipped)} not auditable"
                          f"{': ' + why[:1500] + more if skipped else ''})")
    for c in candidates:
        requested[c.checkpoint_id] = c.fingerprint
    return SensorResult(
        run_requests=[RunRequest(partition_key=c.checkpoint_id, run_key=audit_run_key(c.checkpoint_id, c.fingerprint, config_hash),
                                 run_config=settings.run_config(), tags={"fixability/trigger": "sensor"})
                      for c in candidates],
        dynamic_partitions_requests=[checkpoint_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=json.dumps(requested, sort_keys=True),
    )


reports_automation = AutomationConditionSensorDefinition(
    "reports_automation", target=AssetSelection.assets(*REPORT_ASSETS), default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the reports' automation conditions (assets.shape.REPORT_AUTOMATION): after any "
                "checkpoint's audit, failure_topography and regime_transfer are recomputed without a click. On by "
                "default; Dagster's own default automation sensor starts stopped, which left the reports stale.",
)
