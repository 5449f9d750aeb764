import json
import shutil

from dagster import DagsterInstance, RunRequest, SensorResult, SkipReason

from assets.partitions import checkpoint_partitions
from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.pipeline.staleness import FINAL_ASSET
from resources import AuditSettings, ResultsDatabase

from tests.support import age, demo_checkpoint, evaluate, trained_copy


def test_half_written_checkpoint_waits_then_registers_once(tmp_path):
    instance = DagsterInstance.ephemeral()
    root = tmp_path / "ckpts"
    root.mkdir()
    src = demo_checkpoint()
    target = root / "run7-step100"

    # 1. nothing yet
    assert isinstance(evaluate(instance, root), SkipReason)

    # 2. being written: config and half the weights, no tokenizer
    target.mkdir()
    shutil.copy(src / "config.json", target)
    data = (src / "model.safetensors").read_bytes()
    (target / "model.safetensors").write_bytes(data[: len(data) // 3])
    age(target)
    assert isinstance(evaluate(instance, root), SkipReason)
    assert checkpoint_partitions.get_partition_keys(dynamic_partitions_store=instance) == []

    # 3. all files there but just modified: still settling
    for f in src.iterdir():
        shutil.copy(f, target)
    assert isinstance(evaluate(instance, root), SkipReason)

    # 4. quiet for longer than settle_seconds: registered and audited
    age(target)
    result = evaluate(instance, root)
    assert isinstance(result, SensorResult)
    [add] = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["run7-step100"]
    [request] = result.run_requests
    assert isinstance(request, RunRequest) and request.partition_key == "run7-step100"
    assert request.run_key.startswith("run7-step100:")
    cursor = json.loads(result.cursor)
    assert set(cursor) == {"run7-step100"}

    # 5. next tick with the cursor and the partition registered: nothing new
    instance.add_dynamic_partitions(checkpoint_partitions.name, ["run7-step100"])
    assert isinstance(evaluate(instance, root, cursor=result.cursor), SkipReason)

    # 6. the checkpoint is overwritten in place: re-audit under a new run key, no new partition
    cfg = json.loads((target / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-6
    (target / "config.json").write_text(json.dumps(cfg))
    age(target)
    again = evaluate(instance, root, cursor=result.cursor)
    assert again.dynamic_partitions_requests == []
    assert [r.partition_key for r in again.run_requests] == ["run7-step100"]
    assert again.run_requests[0].run_key != request.run_key


def test_unsafe_directory_names_are_not_registered(tmp_path):
    instance = DagsterInstance.ephemeral()
    root = tmp_path / "ckpts"
    shutil.copytree(demo_checkpoint(), root / "bad name;drop")
    age(root / "bad name;drop")
    assert isinstance(evaluate(instance, root, settle=0), SkipReason)


def test_checkpoints_already_audited_are_registered_but_not_rerun(tmp_path):
    """A fresh daemon (empty cursor) must not redo audits the results database already holds."""
    instance = DagsterInstance.ephemeral()
    root = tmp_path / "ckpts"
    shutil.copytree(demo_checkpoint(), root / "done")
    shutil.copytree(demo_checkpoint(), root / "todo")
    age(root / "done"), age(root / "todo")
    from fixability_dag.inputs.checkpoints import inspect_checkpoint

    db = ResultsDatabase(url=f"sqlite:///{tmp_path / 'sensor.db'}").store()
    db.migrate()
    done = inspect_checkpoint(root / "done")
    db.register_checkpoint("done", str(done.path), done.fingerprint)
    config_hash = AuditSettings().config().config_hash()
    db.finish_run(db.start_run("r", "done", FINAL_ASSET, CODE_VERSION, config_hash, {}), "success")

    result = evaluate(instance, root)
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == ["done", "todo"]
    assert [r.partition_key for r in result.run_requests] == ["todo"]


def test_rl_checkpoint_layouts_become_partitions(tmp_path):
    """Trainer/TRL checkpoint-N of a run directory and verl global_step_N/actor/huggingface: registered under keys
    that name run and step, each audited once it has settled."""
    instance = DagsterInstance.ephemeral()
    root = tmp_path / "ckpts"
    for model_dir in (trained_copy(root / "grpo" / "checkpoint-200"),
                      trained_copy(root / "global_step_40" / "actor" / "huggingface")):
        age(model_dir)
    result = evaluate(instance, root)
    assert isinstance(result, SensorResult)
    keys = ["global_step_40", "grpo.checkpoint-200"]
    assert sorted(result.dynamic_partitions_requests[0].partition_keys) == keys
    assert sorted(r.partition_key for r in result.run_requests) == keys
    instance.add_dynamic_partitions(checkpoint_partitions.name, keys)
    newest = trained_copy(root / "grpo" / "checkpoint-400")
    (newest / "model.safetensors").touch()  # just written (copytree keeps the source's mtimes): waits to settle
    assert isinstance(evaluate(instance, root, cursor=result.cursor), SkipReason)
    age(newest)
    later = evaluate(instance, root, cursor=result.cursor)
    assert [r.partition_key for r in later.run_requests] == ["grpo.checkpoint-400"]


def test_new_partitions_are_added_in_training_order(tmp_path):
    """The Plots tab draws partitions in the order they were added: by step, not by name."""
    instance = DagsterInstance.ephemeral()
    root = tmp_path / "ckpts"
    shutil.copytree(demo_checkpoint("arith-rft-s2300"), root / "a-rft-late")
    shutil.copytree(demo_checkpoint("arith-sft-s1000"), root / "b-sft-early")
    age(root / "a-rft-late"), age(root / "b-sft-early")
    [add] = evaluate(instance, root).dynamic_partitions_requests
    assert list(add.partition_keys) == ["b-sft-early", "a-rft-late"]
