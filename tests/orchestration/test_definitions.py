from fixability_dag.definitions import defs
from fixability_dag.pipeline.config import AuditConfig
from resources import AuditSettings


def test_definitions_load_with_the_whole_graph():
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert keys == {"problem_set", "base_rollouts", "probe_rollouts", "failure_features", "rescue_rollouts",
                    "regime_labels", "routing_plan", "rescue_evaluation", "training_export", "failure_topography",
                    "regime_transfer"}
    job = defs.resolve_job_def("audit_checkpoint")
    assert job.partitions_def is not None and job.partitions_def.name == "checkpoints"
    assert defs.resolve_job_def("failure_topography_report")
    assert defs.resolve_sensor_def("checkpoint_sensor") and defs.resolve_schedule_def("nightly_audit")


def test_generation_assets_share_the_gpu_pool():
    graph = defs.resolve_asset_graph()
    pools = {k.to_user_string(): graph.get(k).pools for k in graph.get_all_asset_keys()}
    assert {k for k, v in pools.items() if v and "gpu" in v} == {"base_rollouts", "probe_rollouts", "rescue_rollouts", "rescue_evaluation"}


def test_settings_resource_is_generated_from_audit_config():
    assert set(AuditSettings.model_fields) == {*AuditConfig.__dataclass_fields__, "settings_file"}
    assert AuditSettings().config() == AuditConfig()  # no $FIXABILITY_SETTINGS in the test environment
    assert AuditSettings(n_samples=4).config().config_hash() != AuditConfig().config_hash()
