"""What the RL trainer reads: one row per audited problem of a checkpoint and suite, as Parquet and JSONL.

The audit's answer to "which problems are worth training on next epoch?" lives in four tables (diagnostic
rollouts, regime labels, routing plans, problems). A data loader should not need SQL, the schema or this package
to act on it, so each (checkpoint, suite) gets two flat files with one row per problem of the suite:

``checkpoint_id, suite, problem_id, samples, pass_rate, failed, regime, action, intervention, budget``

``failed`` is the audit's own definition (base pass rate at most ``fail_threshold``, over every sample drawn);
``samples`` is how many were drawn and ``pass_rate`` is read from the problem's first block (all of its samples
unless the diagnostic phase was drawn in blocks: then a fixed-size sample, unbiased under early stopping); ``regime``, ``action``,
``intervention`` and ``budget`` are null for a problem that did not fail (nothing was planned for it), so a
filter such as ``regime != "structural"`` keeps the solved problems. Files are written whole to a temporary name
and renamed, so a loader never reads half a file, and a re-export replaces both.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fixability_dag.pipeline.audit import StageResult, per_suite
from fixability_dag.pipeline.config import AuditConfig
from fixability_dag.storage.store import AuditStore, beside_database

COLUMNS = ["checkpoint_id", "suite", "problem_id", "samples", "pass_rate", "failed", "regime", "action",
           "intervention", "budget"]
FORMATS = ("parquet", "jsonl")


def export_dir(db_url: str) -> Path:
    """Where exports go by default: ``exports/`` beside a SQLite file (``.fixability/exports`` for a server)."""
    return beside_database(db_url, "exports")


def export_path(root: Path, checkpoint_id: str, suite: str, fmt: str) -> Path:
    return Path(root) / checkpoint_id / f"{suite}.{fmt}"


def training_rows(store: AuditStore, checkpoint_id: str, cfg: AuditConfig) -> pd.DataFrame:
    """The export's rows for a store bound to one suite, read from the database, in problem id order."""
    counts = store.pass_counts(checkpoint_id)
    if counts.empty:
        raise ValueError(f"checkpoint {checkpoint_id} has no diagnostic rollouts of suite {store.suite}: "
                         "materialize base_rollouts (or audit it) first")
    labels = store.read("regime_labels", checkpoint_id)[["problem_id", "true_regime"]]
    plans = store.read("routing_plans", checkpoint_id)[["problem_id", "action", "intervention", "budget"]]
    rows = (counts.merge(labels.rename(columns={"true_regime": "regime"}), on="problem_id", how="left",
                         validate="one_to_one")
            .merge(plans, on="problem_id", how="left", validate="one_to_one"))
    rows["samples"] = rows["samples"].astype("int64")
    # failed: over every drawn sample (exact under the diagnostic stopping rule); the rate: over the first block,
    # which is every sample without diagnostic blocks and a fixed-size, unbiased sample with them
    rows["failed"] = rows["correct"].astype(float) / rows["samples"] <= cfg.fail_threshold
    rows["pass_rate"] = rows["first_block_correct"].astype(float) / rows["first_block_samples"]
    rows["budget"] = rows["budget"].astype("Int64")  # null where nothing was planned
    for column in ("regime", "action", "intervention"):
        rows[column] = rows[column].astype(object).where(rows[column].notna(), None)
    return rows.assign(checkpoint_id=checkpoint_id)[COLUMNS]


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if fmt == "parquet":
        frame.to_parquet(partial, engine="pyarrow", index=False)
    else:
        frame.to_json(partial, orient="records", lines=True, force_ascii=False)
    os.replace(partial, path)


@per_suite
def export_training_data(store: AuditStore, checkpoint_id: str, cfg: AuditConfig, root: Path | None = None,
                         formats: tuple[str, ...] = FORMATS) -> StageResult:
    """Write the checkpoint's export of each suite (``<root>/<checkpoint>/<suite>.parquet`` and ``.jsonl``)."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; known: {list(FORMATS)}")
    root = Path(root) if root is not None else export_dir(store.url)
    rows = training_rows(store, checkpoint_id, cfg)
    paths = {fmt: export_path(root, checkpoint_id, store.suite, fmt) for fmt in formats}
    for fmt, path in paths.items():
        _write(rows, path, fmt)
    regimes = rows["regime"].fillna("not failed").value_counts().to_dict()
    summary = {"problems": len(rows), "failed": int(rows["failed"].sum()), "regimes": regimes,
               "paths": {fmt: str(p) for fmt, p in paths.items()}}
    return StageResult(len(rows), summary, rows, {
        "problems": len(rows), "failed_problems": summary["failed"],
        **{f"{fmt}_path": str(p) for fmt, p in paths.items()},
        "by_regime": pd.DataFrame({"regime": list(regimes), "problems": list(regimes.values())})})
