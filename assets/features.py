"""The distributional features of each failed problem."""

from assets.rollouts import base_rollouts, probe_rollouts
from assets.shape import Step, checkpoint_asset
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.audit import StageResult


@checkpoint_asset(deps=[base_rollouts, probe_rollouts], kinds={"pandas", "sql"})
def failure_features(step: Step) -> StageResult:
    """Answer dispersion, policy confidence and probe shift (plus candidate features) per failed problem,
    computed from answers, token counts, log-probabilities and finish reasons only: never the trace text."""
    return audit.featurize(step.store, step.checkpoint_id, step.config)
