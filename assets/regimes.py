"""Regime labels: ground truth from measured rescues, unsupervised clusters from the features."""

from assets.features import failure_features
from assets.rollouts import rescue_rollouts
from assets.shape import Step, checkpoint_asset
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.audit import StageResult


@checkpoint_asset(deps=[failure_features, rescue_rollouts], kinds={"scikitlearn", "sql"})
def regime_labels(step: Step) -> StageResult:
    """Retry-recoverable / steerable-hard / structural per failed problem, and how well feature clusters
    recover those regimes compared with the majority class, a supervised model and a trace-reading classifier."""
    return audit.label(step.store, step.checkpoint_id, step.config)
