"""The reports keep up: after any checkpoint's audit the automation sensor (on by default) requests them, even
while another registered checkpoint has not been audited yet."""

from dagster import AssetKey, AssetMaterialization, DefaultSensorStatus, evaluate_automation_conditions, instance_for_test

from assets.partitions import checkpoint_partitions
from fixability_dag.definitions import defs
from fixability_dag.orchestration.sensors import reports_automation

REPORTS = {"failure_topography", "regime_transfer"}


def requested(result) -> set[str]:
    return {report for report in REPORTS if result.get_num_requested(AssetKey(report))}


def audited(instance, key):
    for asset in ("regime_labels", "rescue_evaluation"):  # the reports' upstreams, as the audit's last steps write them
        instance.report_runless_asset_event(AssetMaterialization(asset, partition=key))


def test_reports_refresh_after_each_audit_while_other_checkpoints_wait():
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(checkpoint_partitions.name, ["rft-s2300", "sft-s0300", "sft-s1000"])
        nothing = evaluate_automation_conditions(defs=defs, instance=instance)
        assert requested(nothing) == set()  # nothing audited: nothing to report

        audited(instance, "sft-s0300")  # the others are registered, not audited: eager() alone would wait for them
        first = evaluate_automation_conditions(defs=defs, instance=instance, cursor=nothing.cursor)
        assert requested(first) == REPORTS
        for report in REPORTS:  # the sensor's run did its work
            instance.report_runless_asset_event(AssetMaterialization(report))
        quiet = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert requested(quiet) == set()

        audited(instance, "rft-s2300")
        after = evaluate_automation_conditions(defs=defs, instance=instance, cursor=quiet.cursor)
        assert requested(after) == REPORTS


def test_the_automation_sensor_runs_by_default_over_the_reports():
    sensor = defs.get_sensor_def("reports_automation")
    assert sensor is reports_automation and sensor.default_status == DefaultSensorStatus.RUNNING
    targeted = {k.to_user_string() for k in sensor.asset_selection.resolve(defs.resolve_asset_graph())}
    assert targeted == REPORTS
