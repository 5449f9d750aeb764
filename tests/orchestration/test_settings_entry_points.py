"""One settings file for every entry point: the code location's load, the sensor, the nightly schedule, a UI
launch (the resource's defaults) and the run config they hand to the audit job; one engine per run."""

import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import yaml
from dagster import DagsterInstance, Definitions, build_schedule_context, instance_for_test, validate_run_config
from dagster._core.system_config.objects import ResolvedRunConfig

from assets import ALL_ASSETS
from assets.partitions import checkpoint_partitions
from assets.shape import GPU_STEP_TAG
from fixability_dag.definitions import default_resources, defs
from fixability_dag.orchestration.jobs import build_audit_job
from fixability_dag.orchestration.schedules import nightly_audit
from fixability_dag.pipeline.settings import SETTINGS_ENV, SettingsError
from resources import AuditSettings, ResultsDatabase

from tests.support import REPO, TINY, age, demo_checkpoint, evaluate


def write_settings(path, values):
    path.write_text(yaml.safe_dump(values))
    return path


def load_definitions(env_file) -> subprocess.CompletedProcess:
    """Import the code location in a fresh interpreter (module import is where Dagster loads it), printing the
    settings a UI launch would get: the resource's defaults."""
    code = ("from fixability_dag.definitions import defs; from resources import AuditSettings; "
            "s = AuditSettings(); print(s.settings_file, s.n_samples, s.config().config_hash())")
    env = {**os.environ, SETTINGS_ENV: str(env_file)}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_the_code_location_loads_the_file_and_refuses_a_bad_one(tmp_path):
    good = write_settings(tmp_path / "audit.yaml", {**TINY, "n_samples": 6})
    loaded = load_definitions(good)
    assert loaded.returncode == 0, loaded.stderr
    path, n_samples, config_hash = loaded.stdout.split()
    assert (path, n_samples) == (str(good), "6")  # a UI launch's defaults are the file's
    assert config_hash == AuditSettings.from_file(good).config().config_hash()

    bad = write_settings(tmp_path / "bad.yaml", {**TINY, "n_sample": 6})
    refused = load_definitions(bad)
    assert refused.returncode != 0
    assert f"SettingsError: {bad}: unknown setting 'n_sample' (did you mean 'n_samples'?)" in refused.stderr


def test_a_run_with_one_changed_setting_keeps_the_files_other_settings(tmp_path):
    """Dagster replaces a bound resource with the launch's run config: the file's values must be the defaults."""
    good = write_settings(tmp_path / "audit.yaml", {"n_samples": 6})
    code = ("from resources import AuditSettings; s = AuditSettings(retry_budget=12); "
            "print(s.n_samples, s.retry_budget, s.settings_file)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, SETTINGS_ENV: str(good)},
                         capture_output=True, text=True, timeout=300, check=True).stdout.split()
    assert out == ["6", "12", str(good)]


def test_sensor_run_requests_carry_the_files_settings_and_a_bad_edit_fails_the_tick(tmp_path):
    instance = DagsterInstance.ephemeral()
    root = tmp_path / "ckpts"
    shutil.copytree(demo_checkpoint(), root / "ck-s100")
    age(root / "ck-s100")
    path = write_settings(tmp_path / "audit.yaml", TINY)
    settings = AuditSettings.from_file(path)

    [request] = evaluate(instance, root, settings=settings).run_requests
    carried = request.run_config["resources"]["settings"]["config"]
    assert carried["settings_file"] == str(path) and carried["n_samples"] == TINY["n_samples"]
    assert AuditSettings(**carried).config() == settings.config()
    assert config_hash_in(request.run_key) == settings.config().config_hash()
    assert validate_run_config(defs.resolve_job_def("audit_checkpoint"), request.run_config)

    write_settings(path, {**TINY, "n_samples": 8, "eval_budget": 0})  # edited under a running daemon
    with pytest.raises(SettingsError, match=f"{path}: eval_budget must be >= 1"):
        evaluate(instance, root, settings=settings)


def config_hash_in(run_key: str) -> str:
    return run_key.rsplit(":", 1)[1]


def test_schedule_run_requests_carry_the_files_settings(tmp_path):
    path = write_settings(tmp_path / "audit.yaml", {**TINY, "seed": 3})
    settings = AuditSettings.from_file(path)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with instance_for_test() as instance, build_schedule_context(
            instance=instance, resources={"database": ResultsDatabase(url=url), "settings": settings},
            scheduled_execution_time=datetime(2026, 12, 2, 2, tzinfo=timezone.utc)) as context:
        instance.add_dynamic_partitions(checkpoint_partitions.name, ["a", "b"])
        requests = nightly_audit(context)
    assert [r.partition_key for r in requests] == ["a", "b"]
    for request in requests:
        assert request.run_config == settings.run_config() and request.run_config["resources"]["settings"]["config"]["seed"] == 3
        assert settings.config().config_hash() in request.run_key


def test_every_way_to_run_the_gpu_steps_uses_one_engine_at_a_time():
    """The audit job and whatever the UI or a backfill builds from an asset selection run in one process, so the
    run's single engine is shared; the opt-in multiprocess variant runs at most one engine step at a time."""
    assert defs.resolve_job_def("audit_checkpoint").executor_def.name == "in_process"
    assert defs.resolve_implicit_global_asset_job_def().executor_def.name == "in_process"
    assert defs.resolve_job_def("failure_topography_report").executor_def.name == "in_process"
    graph = defs.resolve_asset_graph()
    engine_steps = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).pools}
    tagged = {node.name for node in defs.resolve_job_def("audit_checkpoint").graph.node_dict.values()
              if node.tags.get(GPU_STEP_TAG) == "gpu"}
    assert tagged == engine_steps == {"base_rollouts", "probe_rollouts", "rescue_rollouts", "rescue_evaluation"}
    # the opt-in multiprocess variant: the run config its executor resolves to caps engine steps at one
    multi = Definitions(assets=ALL_ASSETS, jobs=[build_audit_job("multiprocess")],
                        resources=default_resources()).resolve_job_def("audit_checkpoint")
    resolved = ResolvedRunConfig.build(multi, {}).execution.execution_engine_config
    assert resolved["tag_concurrency_limits"] == [{"key": GPU_STEP_TAG, "value": "gpu", "limit": 1}]
