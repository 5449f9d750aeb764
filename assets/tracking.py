"""Shared plumbing of the per-checkpoint assets: config, audit-run bookkeeping and UI metadata."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue

from fixability_dag.pipeline.config import CODE_VERSION, AuditConfig
from fixability_dag.storage.store import AuditStore
from resources import AuditSettings, ResultsDatabase


@dataclasses.dataclass
class Step:
    """What an asset body works with; set ``rows`` and ``summary`` to have them recorded in ``audit_runs``."""

    store: AuditStore
    config: AuditConfig
    checkpoint_id: str
    run_id: str
    rows: int | None = None
    summary: dict | None = None

    def checkpoint_path(self) -> str:
        row = self.store.checkpoint(self.checkpoint_id)
        if row is None:
            raise RuntimeError(f"checkpoint {self.checkpoint_id} is not registered; materialize problem_set first")
        return row["path"]


@contextmanager
def audit_step(context: AssetExecutionContext, database: ResultsDatabase, settings: AuditSettings) -> Iterator[Step]:
    """Hold the checkpoint's lease and record the step in ``audit_runs`` (config, code version, timing, status).

    The lease (:mod:`fixability_dag.storage.leases`) makes a second run of the same checkpoint fail fast with the holder's
    name instead of interleaving its writes; it is released when the run's database resource is torn down.
    """
    store, config = database.store(), settings.config()
    step = Step(store, config, context.partition_key, context.run.run_id)
    asset = context.asset_key.to_user_string()
    how = store.hold_lease(step.checkpoint_id, step.run_id)
    if how != "refreshed":
        context.log.info(f"lease of checkpoint {step.checkpoint_id}: {how}")
    audit_id = store.start_run(context.run.run_id, step.checkpoint_id, asset, CODE_VERSION, config.config_hash(), config.as_dict())
    try:
        yield step
    except BaseException:
        store.finish_run(audit_id, "failed")
        raise
    store.finish_run(audit_id, "success", step.rows, step.summary)


def md_table(frame: pd.DataFrame, floatfmt: str = ".3f") -> MetadataValue:
    if frame.empty:
        return MetadataValue.md("_(no rows)_")
    return MetadataValue.md(frame.to_markdown(index=False, floatfmt=floatfmt))


def md_mapping(values: dict, key: str, value: str) -> MetadataValue:
    return md_table(pd.DataFrame({key: list(values), value: list(values.values())}))
