"""Dagster resources: the thin layer between the pure audit code and the outside world."""

from resources.checkpoints import CheckpointDirectory
from resources.database import ResultsDatabase
from resources.settings import AuditSettings
from resources.vllm_engine import VLLMResource

__all__ = ["AuditSettings", "CheckpointDirectory", "ResultsDatabase", "VLLMResource"]
