"""Rescue evaluation of the routing plan against baselines, on fresh seeds at matched per-problem budget."""

from assets.regimes import regime_labels
from assets.routing import routing_plan
from assets.shape import Step, checkpoint_asset
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.audit import StageResult
from fixability_dag.pipeline.plots import rescue_plot


@checkpoint_asset(deps=[routing_plan, regime_labels], gpu=True, kinds={"vllm", "sql", "matplotlib"})
def rescue_evaluation(step: Step) -> StageResult:
    """Routed vs. uniform retry vs. best single vs. label-informed vs. hindsight oracle: rescue rate per ground-truth regime,
    tokens spent, and the routed lift over retry on steerable-hard problems with a bootstrap interval."""
    result = audit.evaluate(step.store, step.engine(), step.checkpoint_id, step.config, step.run_id)
    if result.frame is not None and len(result.frame):
        result.shown["rescue_by_policy_plot"] = rescue_plot(result.frame, step.checkpoint_id,
                                                            step.figure_path("rescue_by_policy"))
    return result
