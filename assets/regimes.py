"""Regime labels: ground truth from measured rescues, unsupervised clusters from the features."""


import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.features import failure_features
from assets.partitions import checkpoint_partitions
from assets.rollouts import rescue_rollouts
from assets.tracking import audit_step, md_mapping, md_table
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION
from resources import AuditSettings, ResultsDatabase


def _accuracy_table(report: dict) -> pd.DataFrame:
    rows = []
    for name in ("gmm", "kmeans"):
        if name in report:
            rows.append({"method": f"unsupervised {name} (Hungarian-matched)", "accuracy": report[name]["mean"], "std": report[name]["std"]})
    for name, label in (("majority_baseline", "majority class"), ("supervised_logreg", "supervised logistic regression (CV)"),
                        ("trace_reading_tfidf", "trace reading: TF-IDF of failed traces (CV)")):
        if name in report:
            rows.append({"method": label, "accuracy": report[name], "std": None})
    return pd.DataFrame(rows)


@asset(partitions_def=checkpoint_partitions, group_name="audit", code_version=CODE_VERSION,
       deps=[failure_features, rescue_rollouts], kinds={"scikitlearn", "sql"})
def regime_labels(context: AssetExecutionContext, database: ResultsDatabase, settings: AuditSettings) -> MaterializeResult:
    """Retry-recoverable / steerable-hard / structural per failed problem, and how well feature clusters
    recover those regimes compared with the majority class, a supervised model and a trace-reading classifier."""
    with audit_step(context, database, settings) as step:
        labels, report = audit.label(step.store, step.checkpoint_id, step.config)
        step.rows, step.summary = len(labels), report
    return MaterializeResult(metadata={
        "failed_problems": len(labels),
        "regime_shares": md_mapping(report["regime_shares"], "regime", "share"),
        "cluster_accuracy": md_table(_accuracy_table(report)),
    })
