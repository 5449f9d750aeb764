"""Two suites that reuse each other's ids, audited in one Dagster run on the real vLLM engine: every asset runs per
suite, its checks hold per suite, its numbers are shown per suite, and the trainer's export has one file per suite."""

from __future__ import annotations

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from assets import CHECKPOINT_ASSETS
from assets.partitions import checkpoint_partitions
from fixability_dag.pipeline.export import export_dir, export_path
from fixability_dag.pipeline.plots import figure_dir
from fixability_dag.storage.store import AuditStore
from resources import AuditSettings, CheckpointDirectory, ResultsDatabase, VLLMResource

from tests.support import DEMO_CHECKPOINTS, demo_checkpoint, write_jsonl

pytestmark = pytest.mark.vllm

TINY_SUITES = dict(problem_format="jsonl", id_field="id", n_samples=4, probe_samples=2, retry_budget=4, intervention_budget=2,
                   eval_budget=2, eval_retry_samples=4, label_block=2, max_tokens=24, cluster_seeds=2,
                   cluster_bootstraps=2, ablation_seeds=1, null_permutations=20, baseline_null_permutations=2)


PER_FILE = 6


def short_suite_files(tmp_path):
    """Two JSONL files of two-digit sums the demo model can read (its context is 512 bytes: GSM8K's few-shot prompts
    do not fit), with the same ids 0..5 and different questions."""
    paths = []
    for name, offset in (("first", 11), ("second", 23)):
        rows = [{"id": str(i), "question": f"{offset + i}+{10 + 3 * i}", "answer": str(offset + i + 10 + 3 * i)}
                for i in range(PER_FILE)]
        paths.append(write_jsonl(tmp_path / f"{name}.jsonl", rows))
    return paths


def test_one_run_audits_two_suites_with_shared_ids(tmp_path):
    first, second = short_suite_files(tmp_path)
    settings = AuditSettings(**TINY_SUITES, problem_path=str(first),
                             suites=[{"problem_path": str(first)}, {"problem_path": str(second), "max_tokens": 16}])
    db_url = f"sqlite:///{tmp_path / 'audit.db'}"
    key = demo_checkpoint().name
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(checkpoint_partitions.name, [key])
    result = materialize(CHECKPOINT_ASSETS, instance=instance, partition_key=key, resources={
        "database": ResultsDatabase(url=db_url), "vllm": VLLMResource(), "settings": settings,
        "checkpoints": CheckpointDirectory(root=str(DEMO_CHECKPOINTS), settle_seconds=0)})
    assert result.success

    store = AuditStore(db_url)
    problems = store.read("problems")
    assert problems.groupby("suite").size().to_dict() == {"first": PER_FILE, "second": PER_FILE}
    diagnostic = store.read("rollouts", key, phase="diagnostic")
    assert diagnostic.groupby("suite").size().to_dict() == {"first": 4 * PER_FILE, "second": 4 * PER_FILE}
    # each suite was prompted with its own questions (same ids, other text)
    questions = problems.set_index(["suite", "problem_id"])["question"]
    assert (diagnostic.groupby("suite")["num_tokens"].max() <= pd.Series({"first": 24, "second": 16})).all()  # own max_tokens
    assert questions.loc["first"].ne(questions.loc["second"]).all()

    for event in result.get_asset_materialization_events():
        metadata = event.materialization.metadata
        assert any(k.startswith("first.") for k in metadata) and any(k.startswith("second.") for k in metadata), \
            event.asset_key
    for check in result.get_asset_check_evaluations():
        assert check.passed or not check.blocking, (check.check_name, check.description)
    runs = store.read("audit_runs", key)
    assert (runs["status"] == "success").all()
    assert all(set(s["suites"]) == {"first", "second"} for s in runs["summary"])
    for suite in ("first", "second"):
        exported = pd.read_parquet(export_path(export_dir(db_url), key, suite, "parquet"))
        assert len(exported) == PER_FILE and set(exported["suite"]) == {suite}
        assert (figure_dir(db_url) / key / f"pass_rate_by_difficulty-{suite}.png").exists()
    store.dispose()
