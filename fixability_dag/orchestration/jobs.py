"""Jobs: the per-checkpoint audit and the cross-checkpoint report.

The audit job exists in three executor variants, chosen when the code location loads (``FIXABILITY_EXECUTOR``), so
the sensor and the schedule target the same job name in both:

* ``in_process`` (default): every step of one checkpoint's audit shares the run's single vLLM engine (loading it
  once per step would dominate a small audit). Parallelism across checkpoints comes from running several audit
  runs at once, each in its own process (the run launcher), bounded by the run queue and the ``gpu`` pool.
* ``multiprocess``: Dagster's multiprocess executor, one process per step on this host (steps that do not depend on
  each other overlap). Each GPU step loads its own engine, so it pays off only when the CPU steps dominate; at most
  one GPU step runs at a time (a tag concurrency limit on :data:`GPU_STEP_TAG`), so two engines never share the
  GPU; the checkpoint lease is re-taken by each step process of the run.
* ``k8s``: ``dagster_k8s.k8s_job_executor``, one Kubernetes pod per step. The GPU steps ask for a GPU through their
  ``dagster-k8s/config`` op tags (``assets.shape.GPU_STEP_TAGS``); the CPU steps (features, clustering, routing)
  run on CPU pods and never hold a GPU. Each GPU step loads its own engine. See ``deploy/k8s/``.
"""

from __future__ import annotations

import os

from dagster import AssetSelection, ExecutorDefinition, define_asset_job, in_process_executor, multiprocess_executor

from assets import CHECKPOINT_ASSETS, REPORT_ASSETS
from assets.shape import GPU_STEP_TAG, GPU_STEP_TAGS

EXECUTOR_ENV = "FIXABILITY_EXECUTOR"
EXECUTORS = ("in_process", "multiprocess", "k8s")


def audit_executor(name: str) -> ExecutorDefinition:
    """The executor behind ``name``; dagster-k8s is imported only when asked for (it is the ``k8s`` extra)."""
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        limit = [{"key": GPU_STEP_TAG, "value": GPU_STEP_TAGS[GPU_STEP_TAG], "limit": 1}]
        return multiprocess_executor.configured({"tag_concurrency_limits": limit}, name="multiprocess")
    if name == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ImportError(f"{EXECUTOR_ENV}=k8s needs dagster-k8s: pip install -e '.[k8s]'") from exc
        return k8s_job_executor
    raise ValueError(f"{EXECUTOR_ENV} must be one of {', '.join(EXECUTORS)}, got {name!r}")


def build_audit_job(executor: str = "in_process"):
    """The ``audit_checkpoint`` asset job on the named executor (an unresolved job: ``Definitions`` binds it)."""
    return define_asset_job(
        name="audit_checkpoint",
        selection=AssetSelection.assets(*CHECKPOINT_ASSETS),
        executor_def=audit_executor(executor),
        description="Audit one checkpoint: rollouts, failure features, regimes, routing plan and rescue evaluation.",
    )


def default_executor() -> ExecutorDefinition:
    """The executor ``$FIXABILITY_EXECUTOR`` names (default ``in_process``: one engine per run)."""
    return audit_executor(os.environ.get(EXECUTOR_ENV) or "in_process")


audit_checkpoint_job = build_audit_job(os.environ.get(EXECUTOR_ENV) or "in_process")

topography_job = define_asset_job(
    name="failure_topography_report",
    selection=AssetSelection.assets(*REPORT_ASSETS),
    description="Rebuild the cross-checkpoint reports (failure topography, regime transfer) from the results database.",
)
