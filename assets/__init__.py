"""Dagster assets of the audit, one module per domain step."""

from assets.export import training_export
from assets.features import failure_features
from assets.partitions import checkpoint_partitions
from assets.problems import problem_set
from assets.regimes import regime_labels
from assets.rescue import rescue_evaluation
from assets.rollouts import base_rollouts, probe_rollouts, rescue_rollouts
from assets.routing import routing_plan
from assets.topography import failure_topography
from assets.transfer import regime_transfer

CHECKPOINT_ASSETS = [problem_set, base_rollouts, probe_rollouts, failure_features, rescue_rollouts, regime_labels,
                     routing_plan, rescue_evaluation, training_export]
REPORT_ASSETS = [failure_topography, regime_transfer]
ALL_ASSETS = [*CHECKPOINT_ASSETS, *REPORT_ASSETS]

__all__ = ["ALL_ASSETS", "CHECKPOINT_ASSETS", "REPORT_ASSETS", "checkpoint_partitions"]
