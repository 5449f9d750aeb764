"""Jobs: the per-checkpoint audit and the cross-checkpoint report."""

from dagster import AssetSelection, define_asset_job, in_process_executor

from assets import CHECKPOINT_ASSETS, REPORT_ASSETS

# In-process: every step of one checkpoint's audit shares the run's single vLLM engine (loading it once per step
# would dominate a small audit). Parallelism across checkpoints comes from running several audit runs at once.
audit_checkpoint_job = define_asset_job(
    name="audit_checkpoint",
    selection=AssetSelection.assets(*CHECKPOINT_ASSETS),
    executor_def=in_process_executor,
    description="Audit one checkpoint: rollouts, failure features, regimes, routing plan and rescue evaluation.",
)

topography_job = define_asset_job(
    name="failure_topography_report",
    selection=AssetSelection.assets(*REPORT_ASSETS),
    description="Rebuild the cross-checkpoint reports (failure topography, regime transfer) from the results database.",
)
