"""The distributional features of each failed problem."""


from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.partitions import checkpoint_partitions
from assets.rollouts import base_rollouts, probe_rollouts
from assets.tracking import audit_step, md_table
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.core.features import ALL_FEATURES
from resources import AuditSettings, ResultsDatabase


@asset(partitions_def=checkpoint_partitions, group_name="audit", code_version=CODE_VERSION,
       deps=[base_rollouts, probe_rollouts], kinds={"pandas", "sql"})
def failure_features(context: AssetExecutionContext, database: ResultsDatabase, settings: AuditSettings) -> MaterializeResult:
    """Answer dispersion, policy confidence and probe shift (plus candidate features) per failed problem,
    computed from answers, token counts, log-probabilities and finish reasons only: never the trace text."""
    with audit_step(context, database, settings) as step:
        features = audit.featurize(step.store, step.checkpoint_id, step.config)
        step.rows = len(features)
    described = features[list(ALL_FEATURES)].describe().T[["mean", "std", "min", "max"]].reset_index(names="feature") if len(features) else features
    return MaterializeResult(metadata={"failed_problems": len(features), "feature_summary": md_table(described)})
