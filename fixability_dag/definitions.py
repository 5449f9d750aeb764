"""The one Definitions object of the code location (``workspace.yaml`` loads it)."""

from dagster import Definitions

from assets import ALL_ASSETS
from fixability_dag.orchestration.jobs import audit_checkpoint_job, topography_job
from fixability_dag.orchestration.schedules import nightly_audit
from fixability_dag.orchestration.sensors import checkpoint_sensor, reports_automation
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase, engine_resource_from_env


def default_resources() -> dict:
    return {
        "database": ResultsDatabase(),
        "vllm": engine_resource_from_env(),  # RemoteVLLMResource when $FIXABILITY_VLLM_URLS is set
        "settings": AuditSettings(),
        "checkpoints": CheckpointDirectory(),
    }


defs = Definitions(
    assets=ALL_ASSETS,
    jobs=[audit_checkpoint_job, topography_job],
    sensors=[checkpoint_sensor, reports_automation],
    schedules=[nightly_audit],
    resources=default_resources(),
)
