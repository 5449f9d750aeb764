import json
import os
import shutil
import time

import pytest

from fixability_dag.inputs.checkpoints import (
    CheckpointError,
    fingerprint,
    incompleteness,
    inspect_checkpoint,
    partition_key,
    scan,
)


def test_demo_checkpoint_is_complete(checkpoint_copy):
    info = inspect_checkpoint(checkpoint_copy)
    assert info.checkpoint_id == checkpoint_copy.name
    assert info.recipe == "sft" and isinstance(info.training_step, int)
    assert len(info.fingerprint) == 32


def test_missing_parts_are_each_named(checkpoint_copy):
    (checkpoint_copy / "tokenizer.json").unlink()
    (checkpoint_copy / "config.json").write_text("{ not json")
    reasons = incompleteness(checkpoint_copy)
    assert "no tokenizer (tokenizer.json or tokenizer.model)" in reasons
    assert "config.json is not valid JSON" in reasons
    with pytest.raises(CheckpointError, match="not complete"):
        inspect_checkpoint(checkpoint_copy)


def test_truncated_weights_are_detected(checkpoint_copy):
    weights = checkpoint_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert any("truncated" in r for r in incompleteness(checkpoint_copy))
    weights.write_bytes(data[:4])
    assert any("shorter than a safetensors header" in r for r in incompleteness(checkpoint_copy))


def test_temp_files_and_settle_time(checkpoint_copy):
    (checkpoint_copy / "model.safetensors.tmp").write_bytes(b"x")
    assert any("temporary files" in r for r in incompleteness(checkpoint_copy))
    (checkpoint_copy / "model.safetensors.tmp").unlink()
    (checkpoint_copy / "model.safetensors").touch()  # just written (copytree keeps the source's mtimes)
    assert any("waiting" in r for r in incompleteness(checkpoint_copy, settle_seconds=3600))
    old = time.time() - 7200
    for f in checkpoint_copy.iterdir():
        os.utime(f, (old, old))
    assert incompleteness(checkpoint_copy, settle_seconds=3600) == []


def test_fingerprint_changes_with_weights(checkpoint_copy, tmp_path):
    before = fingerprint(checkpoint_copy)
    twin = tmp_path / "twin"
    shutil.copytree(checkpoint_copy, twin)
    assert fingerprint(twin) == before
    cfg = json.loads((twin / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6
    (twin / "config.json").write_text(json.dumps(cfg))
    assert fingerprint(twin) != before


@pytest.mark.parametrize("name", ["../etc", "a b", "-rf", "x" * 129, "ck;drop", "ck/1", ""])
def test_unsafe_names_are_refused(name):
    with pytest.raises(CheckpointError, match="not a safe partition key"):
        partition_key(name)


def test_scan_reports_why_directories_are_skipped(checkpoint_copy):
    root = checkpoint_copy.parent
    (root / "half").mkdir()
    (root / "half" / "config.json").write_text("{}")
    (root / "bad name").mkdir()
    complete, skipped = scan(root)
    assert [c.checkpoint_id for c in complete] == [checkpoint_copy.name]
    assert "no weights" in skipped["half"] and "safe partition key" in skipped["bad name"]
