"""The one shape of a per-checkpoint asset: lease, ``audit_runs`` bookkeeping, a stage call, metadata.

Every audit step is a partitioned asset that holds the checkpoint's lease, records itself in ``audit_runs``
(config and the settings file it came from, code version, timing, status, rows and summary), calls one Dagster-free stage of
:mod:`fixability_dag.pipeline.audit` and shows what the stage returned. :func:`checkpoint_asset` writes that once;
an asset module only says what its step depends on and which stage it calls.
"""

import dataclasses
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.partitions import checkpoint_partitions
from fixability_dag.inputs.checkpoints import METADATA_FILE
from fixability_dag.pipeline import checks, figure_server, progress
from fixability_dag.pipeline.audit import StageResult, merge_suites
from fixability_dag.pipeline.config import CODE_VERSION, AuditConfig
from fixability_dag.pipeline.plots import Figure, figure_dir
from fixability_dag.pipeline.tables import markdown_table
from fixability_dag.storage.store import AuditStore

REPORT_AUTOMATION = AutomationCondition.eager().without(~AutomationCondition.any_deps_missing())
"""How the cross-checkpoint reports keep up: recomputed after any checkpoint's audit writes its last step, once
no audit is in progress. ``eager()`` alone would also wait until *every* partition upstream exists, and a report
over all checkpoints would then never refresh while one checkpoint is registered but not audited (or failed)."""

GPU_POOL = "gpu"
# One GPU per rollout step pod when the audit runs on the k8s_job_executor (FIXABILITY_EXECUTOR=k8s; see deploy/k8s/).
# It has to sit on the ops: job-level dagster-k8s/config tags reach only the run pod. Other executors ignore it.
GPU_STEP_TAG = "fixability/engine"
"""Op tag of the steps that load an engine: the multiprocess executor runs at most one of them at a time."""
GPU_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"requests": {"nvidia.com/gpu": "1"},
                                                                          "limits": {"nvidia.com/gpu": "1"}}}},
                 GPU_STEP_TAG: "gpu"}


@dataclasses.dataclass
class Step:
    """What a stage call needs from the run: the store, the config, the partition's checkpoint and the run id; in
    an audit of several suites, the body runs once per suite with ``store`` and ``config`` bound to ``suite``."""

    context: AssetExecutionContext
    store: AuditStore
    config: AuditConfig
    checkpoint_id: str
    run_id: str
    suite: str | None = None  # set only when the audit covers several suites

    def per_suite(self) -> list["Step"]:
        """This step once per suite of its config (itself when there is one)."""
        configs = self.config.suite_configs()
        if len(configs) == 1:
            return [self]
        return [dataclasses.replace(self, store=self.store.for_suite(c.suite_name), config=c, suite=c.suite_name)
                for c in configs]

    def checkpoint_path(self) -> str:
        row = self.store.checkpoint(self.checkpoint_id)
        if row is None:
            raise RuntimeError(f"checkpoint {self.checkpoint_id} is not registered; materialize problem_set first")
        return row["path"]

    def figure_path(self, name: str):
        """Where this checkpoint's figure ``name`` is written: beside the results database."""
        return figure_dir(self.store.url) / self.checkpoint_id / (f"{name}.png" if self.suite is None
                                                                  else f"{name}-{self.suite}.png")

    def engine(self):
        """The run's rollout engine for this checkpoint (one per run: the resource caches it). It starts at the
        first request there is to generate, and says so in this step's log."""
        return self.context.resources.vllm.engine(self.checkpoint_path(), log=self.context.log.info)


@contextmanager
def audit_step(context: AssetExecutionContext, before: Callable[[Step], None] | None = None,
               ) -> Iterator[tuple[Step, Callable[[StageResult], None]]]:
    """Hold the checkpoint's lease and record the step in ``audit_runs``; yields the step and a ``done(result)``.

    The lease (:mod:`fixability_dag.storage.leases`) makes a second run of the same checkpoint fail fast with the
    holder's name instead of interleaving its writes; it is released when the run's database resource is torn down.
    ``before(step)`` runs first, before the ``audit_runs`` row exists (which needs the checkpoint registered: the
    first step registers it there); if it writes, it takes the lease itself, after its checks.
    """
    settings = context.resources.settings
    figure_server.figure_base_url()  # a bad FIXABILITY_FIGURE_URL fails here, not after the step's work
    store, config = context.resources.database.store(), settings.config()
    step = Step(context, store, config, context.partition_key, context.run.run_id)
    if before is not None:
        before(step)
    how = store.hold_lease(step.checkpoint_id, step.run_id)
    if how != "refreshed":
        context.log.info(f"lease of checkpoint {step.checkpoint_id}: {how}")
    audit_id = store.start_run(step.run_id, step.checkpoint_id, context.asset_key.to_user_string(), CODE_VERSION,
                               config.config_hash(), config.as_dict(), settings.settings_file)
    finished = []
    try:
        with progress.reporting(context.log.info):  # generation's progress lines go to the run's log
            yield step, finished.append
    except BaseException:
        store.finish_run(audit_id, "failed")
        raise
    result = finished[-1] if finished else StageResult(0, {})
    store.finish_run(audit_id, "success", result.rows, result.summary)


def metadata_value(value, figures: Path | None = None):
    """A shown value as Dagster metadata: numbers stay numbers (rounded for reading, so the UI can chart them; numpy
    scalars too, which are not ``int``), frames become markdown tables, a figure a short markdown entry that shows
    it (:func:`figure_markdown`; ``figures`` is the directory the figure server serves), anything else text.
    ``None`` and NaN become the text ``n/a`` (a stage that knows why says so itself:
    :func:`fixability_dag.pipeline.metrics.not_computable`)."""
    if isinstance(value, MetadataValue):
        return value
    if value is None or (isinstance(value, numbers.Real) and math.isnan(value)):
        return MetadataValue.text("n/a")
    if isinstance(value, (bool, np.bool_)):
        return MetadataValue.bool(bool(value))
    if isinstance(value, numbers.Integral):
        return MetadataValue.int(int(value))
    if isinstance(value, numbers.Real):
        return MetadataValue.float(round(float(value), 4))
    if isinstance(value, pd.DataFrame):
        return MetadataValue.md(markdown_table(value))
    if isinstance(value, Figure):
        return figure_markdown(value, figures if figures is not None else value.path.parent)
    return MetadataValue.text(str(value))


def figure_markdown(figure: Figure, figures: Path) -> MetadataValue:
    """The picture as the figure server serves it (``$FIXABILITY_FIGURE_URL``), caption and file path under it:
    short enough that the UI shows it in place (an inlined PNG is not: see
    :mod:`fixability_dag.pipeline.figure_server`)."""
    return MetadataValue.md(figure_server.figure_markdown(figure.caption, figure.path, figures, figure.png,
                                                          figure_server.figure_base_url()))


def as_metadata(shown: dict, figures: Path | None = None) -> dict:
    return {name: metadata_value(value, figures) for name, value in shown.items()}


def checkpoint_metadata(store: AuditStore, checkpoint_id: str) -> dict:
    """The partition's training step and recipe on every materialization, so a table or chart of its numbers can be
    ordered by step and grouped by recipe (the Plots tab draws partitions in the order they were added)."""
    row = store.checkpoint(checkpoint_id) or {}
    step = row.get("training_step")
    return {"training_step": MetadataValue.int(int(step)) if step is not None and not pd.isna(step)
            else MetadataValue.text(f"n/a (no \"step\" in the checkpoint's {METADATA_FILE})"),
            "recipe": MetadataValue.text(row.get("recipe") or "unknown")}


def check_specs(asset_name: str, invariants: Sequence[checks.Invariant]) -> list[AssetCheckSpec]:
    """The asset checks of ``invariants``; a blocking one stops the run's downstream steps when it fails."""
    return [AssetCheckSpec(inv.name, asset=asset_name, description=inv.description, blocking=inv.blocking)
            for inv in invariants]


def check_results(evaluated: Iterable[tuple[checks.Invariant, checks.Outcome]]) -> list[AssetCheckResult]:
    """Each outcome as an asset check result: a blocking invariant fails as an error, the others as a warning."""
    return [AssetCheckResult(check_name=inv.name, passed=outcome.passed, description=outcome.message,
                             severity=AssetCheckSeverity.ERROR if inv.blocking else AssetCheckSeverity.WARN,
                             metadata=as_metadata(outcome.numbers))
            for inv, outcome in evaluated]


def checkpoint_asset(*, deps: Sequence = (), gpu: bool = False, kinds: Iterable[str] = ("sql",),
                     resources: Iterable[str] = (), before: Callable[[Step], None] | None = None,
                     ) -> Callable[[Callable[[Step], StageResult]], AssetsDefinition]:
    """Make ``body(step) -> StageResult`` a partitioned audit asset (name and description from the function).

    ``gpu`` steps generate rollouts: they need the ``vllm`` resource, run in the ``gpu`` pool and ask Kubernetes
    for a GPU. Every step needs ``database`` and ``settings``; ``resources`` names any others the body or
    ``before`` (see :func:`audit_step`) use. The step's invariants (:data:`fixability_dag.pipeline.checks.CHECKS`)
    are its asset checks, evaluated on what it stored before the step counts as done.
    """
    def decorator(body: Callable[[Step], StageResult]) -> AssetsDefinition:
        name = body.__name__
        required = {"database", "settings", *resources} | ({"vllm"} if gpu else set())
        gpu_options = {"pool": GPU_POOL, "op_tags": GPU_STEP_TAGS} if gpu else {}

        @asset(name=name, description=body.__doc__, partitions_def=checkpoint_partitions, group_name="audit",
               code_version=CODE_VERSION, deps=list(deps), kinds=set(kinds), required_resource_keys=required,
               check_specs=check_specs(name, checks.CHECKS.get(name, ())), **gpu_options)
        def _asset(context: AssetExecutionContext) -> MaterializeResult:
            with audit_step(context, before) as (step, done):
                result = merge_suites([(s.suite, body(s)) for s in step.per_suite()])
                evaluated = checks.evaluate(name, step.store, step.checkpoint_id, step.config)
                # Dagster fails the step after this returns when a blocking check failed; audit_runs says which
                result.summary["failed_checks"] = [inv.name for inv, outcome in evaluated if not outcome.passed]
                done(result)
            return MaterializeResult(metadata={**checkpoint_metadata(step.store, step.checkpoint_id),
                                               **as_metadata(result.shown, figure_dir(step.store.url))}, check_results=check_results(evaluated))

        return _asset

    return decorator
