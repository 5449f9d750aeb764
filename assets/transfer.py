"""Cross-checkpoint probes: regime models and routing thresholds fitted on one checkpoint, applied to another."""

from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.regimes import regime_labels
from assets.shape import REPORT_AUTOMATION, metadata_value
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION
from resources import ResultsDatabase


@asset(group_name="reports", code_version=CODE_VERSION, deps=[regime_labels], kinds={"scikitlearn", "sql"},
       automation_condition=REPORT_AUTOMATION)
def regime_transfer(context: AssetExecutionContext, database: ResultsDatabase) -> MaterializeResult:
    """For every ordered pair of audited checkpoints: accuracy of the source's clusters (and its cluster -> regime
    map) on the target's failed problems, next to the target's own clusters and majority class, and how often the
    source's routing thresholds route the target's problems as the target's own thresholds do."""
    frame = audit.transfer(database.store())
    return MaterializeResult(metadata={"pairs": len(frame), "transfers": metadata_value(frame)})
