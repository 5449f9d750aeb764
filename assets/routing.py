"""The routing plan: which intervention, what budget, or skip, per failed problem."""


from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.features import failure_features
from assets.partitions import checkpoint_partitions
from assets.tracking import audit_step, md_mapping
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION
from resources import AuditSettings, ResultsDatabase


@asset(partitions_def=checkpoint_partitions, group_name="audit", code_version=CODE_VERSION,
       deps=[failure_features], kinds={"sql"})
def routing_plan(context: AssetExecutionContext, database: ResultsDatabase, settings: AuditSettings) -> MaterializeResult:
    """Training-free: thresholds come from the unsupervised structure of the features, never from labels."""
    with audit_step(context, database, settings) as step:
        plan, thresholds = audit.plan(step.store, step.checkpoint_id, step.config)
        step.rows, step.summary = len(plan), {"thresholds": thresholds}
    counts = plan["action"].value_counts().to_dict() if len(plan) else {}
    return MaterializeResult(metadata={
        "planned_problems": len(plan),
        "actions": md_mapping(counts, "action", "problems"),
        "thresholds": md_mapping({k: v for k, v in thresholds.items() if k != "method"}, "feature", "threshold"),
    })
