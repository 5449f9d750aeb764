"""The failure topography across checkpoints: how regimes and rescue move over training and recipes."""


from pathlib import Path

from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, MetadataValue, asset

from assets.rescue import rescue_evaluation
from assets.shape import metadata_value
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.pipeline.plots import topography_plot
from resources import ResultsDatabase


@asset(group_name="reports", code_version=CODE_VERSION, deps=[rescue_evaluation], kinds={"sql", "matplotlib"},
       automation_condition=AutomationCondition.eager())
def failure_topography(context: AssetExecutionContext, database: ResultsDatabase) -> MaterializeResult:
    """Regime shares, pass rate, rescue rates and mean features for every audited checkpoint, side by side."""
    table = audit.topography(database.store())
    metadata = {"checkpoints": len(table), "topography": metadata_value(table)}
    if len(table):
        path = Path(".fixability") / "topography.png"
        topography_plot(table, path)
        metadata["plot"] = MetadataValue.path(str(path.resolve()))
    return MaterializeResult(metadata=metadata)
