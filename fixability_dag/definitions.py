"""The one Definitions object of the code location (``workspace.yaml`` loads it).

Importing it reads and checks the settings file ``$FIXABILITY_SETTINGS`` names (:mod:`resources.settings`): a bad
file stops the code location from loading, with the file and the key named.
"""

from dagster import Definitions

from assets import ALL_ASSETS
from fixability_dag.orchestration.jobs import audit_checkpoint_job, default_executor, topography_job
from fixability_dag.orchestration.schedules import nightly_audit
from fixability_dag.orchestration.sensors import checkpoint_sensor, reports_automation
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase, engine_resource_from_env


def default_resources() -> dict:
    return {
        "database": ResultsDatabase(),
        "vllm": engine_resource_from_env(),  # RemoteVLLMResource when $FIXABILITY_VLLM_URLS is set
        "settings": AuditSettings(),  # the settings file's values (checked when resources.settings was imported)
        "checkpoints": CheckpointDirectory(),
    }


defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[audit_checkpoint_job, topography_job],
    sensors=[checkpoint_sensor, reports_automation],
    schedules=[nightly_audit],
    resources=default_resources(),
    # Runs that are not the audit job (assets selected in the UI, a backfill, `dagster asset materialize`) use the
    # audit job's executor too: Dagster's default, multiprocess, ran probe_rollouts and rescue_rollouts at once,
    # each loading its own engine.
    executor=default_executor(),
)
