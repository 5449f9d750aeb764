"""Dagster resources: the thin layer between the pure audit code and the outside world."""

from resources.checkpoints import CheckpointDirectory
from resources.database import ResultsDatabase
from resources.remote_vllm import RemoteVLLMResource, engine_resource_from_env
from resources.rollout_engine import RolloutEngineResource
from resources.settings import AuditSettings
from resources.vllm_engine import VLLMResource

__all__ = ["AuditSettings", "CheckpointDirectory", "RemoteVLLMResource", "ResultsDatabase", "RolloutEngineResource",
           "VLLMResource", "engine_resource_from_env"]
