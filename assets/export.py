"""The trainer's export: per checkpoint and suite, one row per problem (pass rate, failed, regime, routing) as
Parquet and JSONL beside the results database, for an RL data loader to filter the next epoch with."""

from assets.routing import routing_plan
from assets.shape import Step, checkpoint_asset
from fixability_dag.pipeline.audit import StageResult
from fixability_dag.pipeline.export import export_training_data


@checkpoint_asset(deps=[routing_plan], kinds={"parquet", "sql"})
def training_export(step: Step) -> StageResult:
    """``exports/<checkpoint>/<suite>.parquet`` and ``.jsonl`` beside the database: problem id, suite, pass rate,
    failed flag, regime, routing action, intervention and budget, read back from what the audit stored."""
    return export_training_data(step.store, step.checkpoint_id, step.config)
