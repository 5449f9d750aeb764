"""Rollout generation on the checkpoint's vLLM engine: the GPU-bound steps of an audit (pool ``gpu``)."""

from assets.shape import Step, checkpoint_asset
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.audit import StageResult
from fixability_dag.pipeline.plots import pass_rate_by_difficulty_plot


@checkpoint_asset(deps=["problem_set"], gpu=True, kinds={"vllm", "sql", "matplotlib"})
def base_rollouts(step: Step) -> StageResult:
    """N samples per problem at the base decoding (one request per problem, ``n`` shared-prefix samples; with
    ``diagnostic_block``, seeded blocks, a problem stopping once it is known not to be failed under
    ``diagnostic_early_stop``)."""
    result = audit.diagnose(step.store, step.engine(), step.checkpoint_id, step.config, step.run_id)
    result.shown["pass_rate_by_difficulty_plot"] = pass_rate_by_difficulty_plot(
        result.shown["pass_rate_by_difficulty"], step.checkpoint_id, step.figure_path("pass_rate_by_difficulty"))
    return result


@checkpoint_asset(deps=[base_rollouts], gpu=True, kinds={"vllm", "sql"})
def probe_rollouts(step: Step) -> StageResult:
    """A small probe batch per failed problem under the cheapest bounded intervention (for probe shift)."""
    return audit.probe(step.store, step.engine(), step.checkpoint_id, step.config, step.run_id)


@checkpoint_asset(deps=[base_rollouts], gpu=True, kinds={"vllm", "sql"})
def rescue_rollouts(step: Step) -> StageResult:
    """Every catalog intervention on every failed problem with fresh seeds: the measured rescues behind the
    ground-truth regimes. Outcomes per (problem, intervention) land in ``intervention_outcomes``."""
    return audit.measure_rescues(step.store, step.engine(), step.checkpoint_id, step.config, step.run_id)
