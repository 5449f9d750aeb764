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


def test_a_report_is_stale_after_a_new_audit_until_it_refreshes():
    """What the UI's "Unsynced" marker on a report shows: Dagster's stale-status resolver (the one the webserver
    asks; built here by Dagster's own test helper) calls a report stale once any checkpoint has a newer audit, names
    that checkpoint's step as the cause, and fresh again after the report re-materializes. A checkpoint registered
    but not audited yet already makes it stale ("a new input"): the report does not cover it."""
    from dagster._core.definitions.data_version import StaleStatus
    from dagster._utils.test.data_versions import get_stale_status_resolver

    def status(report):
        resolver = get_stale_status_resolver(instance, list(defs.assets))
        causes = resolver.get_stale_causes(AssetKey(report))
        return resolver.get_status(AssetKey(report)), {(c.dependency.asset_key.to_user_string(), c.dependency.partition_key)
                                                       for c in causes}

    with instance_for_test() as instance:
        instance.add_dynamic_partitions(checkpoint_partitions.name, ["sft-s0300"])
        audited(instance, "sft-s0300")
        for report in REPORTS:
            instance.report_runless_asset_event(AssetMaterialization(report))
        assert {status(r)[0] for r in REPORTS} == {StaleStatus.FRESH}

        instance.add_dynamic_partitions(checkpoint_partitions.name, ["sft-s1000"])
        assert status("failure_topography") == (StaleStatus.STALE, {("rescue_evaluation", "sft-s1000")})
        audited(instance, "sft-s1000")
        assert {status(r)[0] for r in REPORTS} == {StaleStatus.STALE}
        assert ("regime_labels", "sft-s1000") in status("regime_transfer")[1]
        instance.report_runless_asset_event(AssetMaterialization("failure_topography"))
        assert status("failure_topography") == (StaleStatus.FRESH, set())
        assert status("regime_transfer")[0] == StaleStatus.STALE  # not refreshed yet: still says so
