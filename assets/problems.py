"""The problem set each checkpoint is audited on, and the checkpoint's registration in the results database."""

from dagster import MetadataValue

from assets.shape import Step, checkpoint_asset
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.audit import StageResult


def register_checkpoint(step: Step) -> None:
    """Inspect the partition's checkpoint directory and register it: refused, with the list of what is missing,
    before anything is written (the lease too) when the directory is incomplete."""
    info = step.context.resources.checkpoints.inspect(step.checkpoint_id)
    step.store.hold_lease(info.checkpoint_id, step.run_id)  # before the first write of this run
    step.store.register_checkpoint(info.checkpoint_id, str(info.path), info.fingerprint, info.recipe,
                                   info.training_step, info.info)


@checkpoint_asset(resources=["checkpoints"], before=register_checkpoint)
def problem_set(step: Step) -> StageResult:
    """Registers the checkpoint (path, recipe, fingerprint) and upserts the configured problems.

    Fails with a message naming file, line and field when a problem file is malformed, and with the list of what is
    missing when the checkpoint directory is incomplete; nothing already stored is touched in either case.
    """
    result = audit.snapshot_problems(step.store, step.config)
    checkpoint = step.store.checkpoint(step.checkpoint_id)
    result.shown.update({"checkpoint_path": MetadataValue.path(checkpoint["path"]),
                         "checkpoint_fingerprint": checkpoint["fingerprint"]})
    return result
