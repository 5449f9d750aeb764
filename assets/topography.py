"""The failure topography across checkpoints: how regimes and rescue move over training and recipes."""

from dagster import AssetCheckSpec, AssetExecutionContext, MaterializeResult, asset

from assets.rescue import rescue_evaluation
from assets.shape import REPORT_AUTOMATION, check_results, metadata_value
from fixability_dag.pipeline import audit, checks, metrics
from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.pipeline.plots import figure_dir, topography_order, topography_plot
from resources import ResultsDatabase

TOKEN_COLUMNS = ("generated_tokens", "generated_tokens_per_failed", "prompt_tokens_per_failed")

CONSISTENT = checks.Invariant("shares_and_rates_consistent", "Each checkpoint's regime shares sum to 1; pass and "
                              "rescue rates lie in [0, 1].", False, checks.topography_consistent)


@asset(group_name="reports", code_version=CODE_VERSION, deps=[rescue_evaluation], kinds={"sql", "matplotlib"},
       automation_condition=REPORT_AUTOMATION,
       check_specs=[AssetCheckSpec(CONSISTENT.name, asset="failure_topography", description=CONSISTENT.description)])
def failure_topography(context: AssetExecutionContext, database: ResultsDatabase) -> MaterializeResult:
    """Regime shares, pass rate, rescue rates, tokens per failed problem and mean features for every audited
    checkpoint, side by side: grouped by recipe, ordered by training step. The figure is on this page and in
    ``figures/`` beside the database."""
    store = database.store()
    table = topography_order(audit.topography(store))
    metadata = {"checkpoints": len(table), "topography": metadata_value(metrics.explained_table(table))}
    if len(table):
        figures = figure_dir(store.url)
        metadata["plot"] = metadata_value(topography_plot(table, figures / "topography.png"), figures)
        latest = table.iloc[-1]
        metadata.update({f"latest_{k}": metadata_value(metrics.rounded(latest[k])) for k in table.columns
                         if k.startswith(("share_", "rescue_")) or k in ("pass_rate", *TOKEN_COLUMNS)})
    return MaterializeResult(metadata=metadata, check_results=check_results([(CONSISTENT, CONSISTENT.test(table))]))
