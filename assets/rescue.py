"""Rescue evaluation of the routing plan against baselines, on fresh seeds at matched per-problem budget."""


from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.partitions import checkpoint_partitions
from assets.regimes import regime_labels
from assets.rollouts import GPU_POOL, GPU_STEP_TAGS
from assets.routing import routing_plan
from assets.tracking import audit_step, md_table
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION
from resources import AuditSettings, ResultsDatabase, RolloutEngineResource


@asset(partitions_def=checkpoint_partitions, group_name="audit", code_version=CODE_VERSION, pool=GPU_POOL,
       op_tags=GPU_STEP_TAGS, deps=[routing_plan, regime_labels], kinds={"vllm", "sql"})
def rescue_evaluation(context: AssetExecutionContext, vllm: RolloutEngineResource, database: ResultsDatabase,
                      settings: AuditSettings) -> MaterializeResult:
    """Routed vs. uniform retry vs. best single intervention vs. oracle: rescue rate per ground-truth regime,
    tokens spent, and the routed lift over retry on steerable-hard problems with a bootstrap interval."""
    with audit_step(context, database, settings) as step:
        engine = vllm.engine(step.checkpoint_path())
        evaluations, summary = audit.evaluate(step.store, engine, step.checkpoint_id, step.config, step.run_id)
        step.rows, step.summary = len(evaluations), summary
    shown = evaluations[["policy", "regime", "problems", "rescued", "rescue_rate", "tokens", "lift_vs_retry"]] if len(evaluations) else evaluations
    return MaterializeResult(metadata={
        "failed_problems": summary["failed_problems"],
        "steerable_hard_lift": summary.get("steerable_hard_lift"),
        "compute_saved_routed_vs_retry": summary.get("compute_saved_routed_vs_retry"),
        "evaluation": md_table(shown),
    })
