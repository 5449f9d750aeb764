"""Where checkpoints land, and how long a directory must be quiet before it counts as written."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from fixability_dag.inputs.checkpoints import CheckpointInfo, inspect_checkpoint, locate, scan

DEMO_CHECKPOINTS = Path(__file__).resolve().parents[1] / "demo" / "checkpoints"
CHECKPOINT_DIR_ENV = "FIXABILITY_CHECKPOINT_DIR"


def default_checkpoint_dir() -> str:
    return os.environ.get(CHECKPOINT_DIR_ENV) or str(DEMO_CHECKPOINTS)


class CheckpointDirectory(ConfigurableResource):
    """A directory of Hugging Face checkpoints, one partition each: named subdirectories, Trainer/TRL
    ``checkpoint-<N>/`` and verl ``global_step_<N>/actor/huggingface/`` (see :mod:`fixability_dag.inputs.checkpoints`)."""

    root: str = Field(default_factory=default_checkpoint_dir, description=f"default: ${CHECKPOINT_DIR_ENV} or demo/checkpoints")
    settle_seconds: float = Field(default=60.0, description="a checkpoint must be unchanged this long to be audited")

    def scan(self) -> tuple[list[CheckpointInfo], dict[str, str]]:
        return scan(self.root, self.settle_seconds)

    def inspect(self, checkpoint_id: str) -> CheckpointInfo:
        """The checkpoint behind a partition key (settle time not applied: the key was registered already)."""
        return inspect_checkpoint(locate(self.root, checkpoint_id), key=checkpoint_id)
