"""The trainer's export, on a real small audit (vLLM on a demo checkpoint, every asset materialized by Dagster):
its rows are the database's, in both formats, from the asset and from ``fixability export``; and the README's
example of dropping structural problems from the next epoch runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fixability_dag.cli import main
from fixability_dag.pipeline.export import COLUMNS, export_dir, export_path
from fixability_dag.storage.store import AuditStore

from tests.support import REPO, SETTINGS

pytestmark = pytest.mark.vllm


def expected_rows(store: AuditStore, checkpoint_id: str) -> pd.DataFrame:
    """The export computed another way: from the raw rollouts, labels and plans, in pandas."""
    diagnostic = store.read("rollouts", checkpoint_id, phase="diagnostic")
    rates = diagnostic.groupby(["suite", "problem_id"])["is_correct"].agg(["size", "mean"]).reset_index()
    labels = store.read("regime_labels", checkpoint_id).set_index("problem_id")["true_regime"]
    plans = store.read("routing_plans", checkpoint_id).set_index("problem_id")
    return pd.DataFrame({
        "checkpoint_id": checkpoint_id, "suite": rates["suite"], "problem_id": rates["problem_id"],
        "samples": rates["size"], "pass_rate": rates["mean"], "failed": rates["mean"] <= SETTINGS.fail_threshold,
        "regime": rates["problem_id"].map(labels), "action": rates["problem_id"].map(plans["action"]),
        "intervention": rates["problem_id"].map(plans["intervention"]), "budget": rates["problem_id"].map(plans["budget"]),
    })


def assert_matches(frame: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(frame.columns) == COLUMNS
    frame = frame.sort_values("problem_id").reset_index(drop=True)
    expected = expected.sort_values("problem_id").reset_index(drop=True)
    for column in COLUMNS:
        got, want = frame[column].tolist(), expected[column].tolist()
        assert [None if pd.isna(v) else v for v in got] == [None if pd.isna(v) else v for v in want], column


def test_the_asset_writes_the_databases_rows_as_parquet_and_jsonl(audited_instance):
    store, key = AuditStore(audited_instance.db_url), audited_instance.checkpoint_id
    runs = store.read("audit_runs", key)
    assert (runs.loc[runs["asset"] == "training_export", "status"] == "success").any(), "the asset materialized"
    expected = expected_rows(store, key)
    assert expected["failed"].any() and (~expected["failed"]).any() and expected["regime"].notna().any()
    parquet = pd.read_parquet(export_path(export_dir(store.url), key, "arith", "parquet"))
    jsonl = pd.read_json(export_path(export_dir(store.url), key, "arith", "jsonl"), lines=True, dtype=False)
    assert len(parquet) == len(jsonl) == store.count("problems")
    assert_matches(parquet, expected)
    assert_matches(jsonl, expected)
    assert parquet["budget"].dtype.name == "Int64" and parquet["failed"].dtype == bool
    solved = parquet[~parquet["failed"]]
    assert solved["regime"].isna().all() and solved["action"].isna().all() and solved["budget"].isna().all()


def test_fixability_export_writes_the_same_files_where_asked(audited_instance, tmp_path, capsys):
    store, key = AuditStore(audited_instance.db_url), audited_instance.checkpoint_id
    assert main(["export", key, "--db", store.url, "--out", str(tmp_path), "--format", "jsonl"]) == 0
    printed = capsys.readouterr().out
    assert re.search(rf"{key} / arith: \d+ problems, \d+ failed -> .*arith\.jsonl", printed)
    assert not (tmp_path / key / "arith.parquet").exists()
    assert_matches(pd.read_json(tmp_path / key / "arith.jsonl", lines=True, dtype=False), expected_rows(store, key))
    assert main(["export", key, "--db", store.url, "--out", str(tmp_path), "--suite", "gsm8k"]) == 2
    assert "audited on suites ['arith'], not 'gsm8k'" in capsys.readouterr().err
    assert main(["export", "no-such-checkpoint", "--db", store.url, "--out", str(tmp_path)]) == 2


def test_the_readme_example_drops_structural_problems(audited_instance):
    """The five lines under "Feeding the trainer" in README.md, run as a user would (in a fresh interpreter)."""
    readme = (REPO / "README.md").read_text()
    [code] = re.findall(r"<!-- trainer-example -->\n```python\n(.*?)```", readme, re.S)
    assert len(code.strip().splitlines()) == 5
    store, key = AuditStore(audited_instance.db_url), audited_instance.checkpoint_id
    path = export_path(export_dir(store.url), key, "arith", "parquet")
    script = code.replace(".fixability/exports/arith-sft-s0300/arith.parquet", str(path)) + "\nprint(len(keep), len(rows))\n"
    assert str(path) in script, "the example reads the export of the checkpoint the test audited"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=Path(REPO)).stdout
    kept, total = map(int, out.split()[-2:])
    rows = pd.read_parquet(path)
    assert total == len(rows) and kept == int((rows["regime"] != "structural").sum()) < total
