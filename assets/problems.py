"""The problem set each checkpoint is audited on, and the checkpoint's registration in the results database."""


from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from assets.partitions import checkpoint_partitions
from assets.tracking import audit_step, md_mapping
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase


@asset(partitions_def=checkpoint_partitions, group_name="audit", code_version=CODE_VERSION, kinds={"sql"})
def problem_set(context: AssetExecutionContext, checkpoints: CheckpointDirectory, database: ResultsDatabase,
                settings: AuditSettings) -> MaterializeResult:
    """Registers the checkpoint (path, recipe, fingerprint) and upserts the configured problems.

    Fails with a message naming file, line and field when a problem file is malformed, and with the list of what is
    missing when the checkpoint directory is incomplete; nothing already stored is touched in either case.
    """
    info = checkpoints.inspect(context.partition_key)
    database.store().hold_lease(info.checkpoint_id, context.run.run_id)  # before the first write of this run
    database.store().register_checkpoint(info.checkpoint_id, str(info.path), info.fingerprint, info.recipe,
                                         info.training_step, info.info)
    with audit_step(context, database, settings) as step:
        summary = audit.snapshot_problems(step.store, step.config)
        step.rows, step.summary = summary["problems"], summary
    return MaterializeResult(metadata={
        "problems": summary["problems"],
        "suite": summary["suite"],
        "checkpoint_path": MetadataValue.path(str(info.path)),
        "checkpoint_recipe": info.recipe or "unknown",
        "checkpoint_fingerprint": info.fingerprint,
        "problems_by_difficulty": md_mapping(summary["by_difficulty"], "difficulty", "problems"),
    })
