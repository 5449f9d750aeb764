import json
import os
import shutil
import struct
import time

import pytest

from fixability_dag.inputs.checkpoints import (
    CheckpointError,
    discover,
    fingerprint,
    incompleteness,
    inspect_checkpoint,
    locate,
    partition_key,
    scan,
    step_from_name,
)
from resources import CheckpointDirectory

from tests.support import ORGANISM_CHECKPOINTS, trained_copy


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


def test_fingerprint_tells_retrained_weights_of_one_architecture_apart(tmp_path):
    """Two saves of one run have the same safetensors header (names, shapes, offsets) and sizes: only the tensor
    bytes differ, and an overwritten checkpoint must not pass for the one audited."""
    sft, rft = (ORGANISM_CHECKPOINTS / name for name in ("org-llama-seed7-sft-s1500", "org-llama-seed7-rft-s1700"))
    header = [(sft / "model.safetensors").read_bytes()[:2048], (rft / "model.safetensors").read_bytes()[:2048]]
    assert header[0] == header[1] and (sft / "model.safetensors").stat().st_size == (rft / "model.safetensors").stat().st_size
    assert fingerprint(sft) != fingerprint(rft)
    # the sft save overwritten in place by the rft weights (its own config and tokenizer kept): seen as changed
    twin = tmp_path / "twin"
    shutil.copytree(sft, twin)
    assert fingerprint(twin) == fingerprint(sft)
    shutil.copyfile(rft / "model.safetensors", twin / "model.safetensors")
    assert fingerprint(twin) != fingerprint(sft)
    # one byte in the middle of the tensors, where a sampled chunk lies, changes it too
    shutil.copyfile(sft / "model.safetensors", twin / "model.safetensors")
    data = bytearray((twin / "model.safetensors").read_bytes())
    (n,) = struct.unpack("<Q", data[:8])
    data[8 + n] ^= 0xFF  # the first tensor byte, always in the first chunk
    (twin / "model.safetensors").write_bytes(bytes(data))
    assert fingerprint(twin) != fingerprint(sft)


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


def rl_tree(root):
    """One checkpoint root holding every supported layout, as the training frameworks write them."""
    trained_copy(root / "checkpoint-500")  # HF Trainer / TRL, output_dir as root
    trained_copy(root / "grpo-run" / "checkpoint-1000")  # a directory of Trainer runs
    trained_copy(root / "grpo-run" / "checkpoint-1500")
    (root / "grpo-run" / "checkpoint-1500" / "tokenizer.json").unlink()  # Trainer saves no tokenizer without one
    (root / "grpo-run" / "runs").mkdir()  # TensorBoard logs beside the checkpoints: not a checkpoint
    trained_copy(root / "global_step_40" / "actor" / "huggingface")  # verl, experiment directory as root
    (root / "global_step_40" / "actor" / "model_world_size_1_rank_0.pt").write_bytes(b"fsdp shard")
    (root / "global_step_80" / "actor").mkdir(parents=True)  # verl without hf_model saved: nothing to load yet
    trained_copy(root / "ppo-exp" / "global_step_120" / "actor" / "huggingface")  # a directory of verl experiments
    trained_copy(root / "qwen-math-step1200")  # a flat directory of named checkpoints
    trained_copy(root / "baseline", with_metadata=True)  # our metadata file names the step
    return root


def test_every_supported_layout_is_found_with_its_step(tmp_path):
    root = rl_tree(tmp_path / "ckpts")
    complete, skipped = scan(root)
    found = {c.checkpoint_id: (c.training_step, c.path) for c in complete}
    assert found == {
        "checkpoint-500": (500, root / "checkpoint-500"),
        "grpo-run.checkpoint-1000": (1000, root / "grpo-run" / "checkpoint-1000"),
        "global_step_40": (40, root / "global_step_40" / "actor" / "huggingface"),
        "ppo-exp.global_step_120": (120, root / "ppo-exp" / "global_step_120" / "actor" / "huggingface"),
        "qwen-math-step1200": (1200, root / "qwen-math-step1200"),
        "baseline": (300, root / "baseline"),
    }
    assert set(skipped) == {"grpo-run.checkpoint-1500", "global_step_80"}
    assert "no tokenizer" in skipped["grpo-run.checkpoint-1500"]
    assert "actor/huggingface is not a directory" in skipped["global_step_80"]


def test_partition_keys_of_nested_layouts_resolve_back_to_their_directory(tmp_path):
    root = rl_tree(tmp_path / "ckpts")
    resource = CheckpointDirectory(root=str(root), settle_seconds=0)
    info = resource.inspect("ppo-exp.global_step_120")
    assert info.path == root / "ppo-exp" / "global_step_120" / "actor" / "huggingface" and info.training_step == 120
    assert resource.inspect("grpo-run.checkpoint-1000").fingerprint == fingerprint(root / "grpo-run" / "checkpoint-1000")
    with pytest.raises(CheckpointError, match="no checkpoint directory for partition key 'grpo-run.checkpoint-9'"):
        locate(root, "grpo-run.checkpoint-9")


def test_two_directories_with_one_key_are_both_refused(tmp_path):
    root = tmp_path / "ckpts"
    trained_copy(root / "run.checkpoint-5")
    trained_copy(root / "run" / "checkpoint-5")
    found, refused = discover(root)
    assert "run.checkpoint-5" not in found and "2 directories map" in refused["run.checkpoint-5"]
    with pytest.raises(CheckpointError, match="rename one"):
        locate(root, "run.checkpoint-5")


@pytest.mark.parametrize("name, step", [("checkpoint-500", 500), ("exp.global_step_40", 40), ("run7-step100", 100),
                                        ("arith-sft-s0300", 300), ("ckpt_12", 12), ("final", None), ("run7", None),
                                        ("llama-3.1-8b", None)])
def test_step_from_name(name, step):
    assert step_from_name(name) == step
