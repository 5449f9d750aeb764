"""The routing plan: which intervention, what budget, or skip, per failed problem."""

from assets.features import failure_features
from assets.shape import Step, checkpoint_asset
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.audit import StageResult


@checkpoint_asset(deps=[failure_features])
def routing_plan(step: Step) -> StageResult:
    """Training-free and label-free: each failed problem goes to the catalog intervention whose probe moved its
    answers beyond sampling noise, else to retry when a success within the retry budget is likely, else skip."""
    return audit.plan(step.store, step.checkpoint_id, step.config)
