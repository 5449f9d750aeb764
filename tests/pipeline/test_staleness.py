"""The one re-audit policy the sensor, the schedule and the CLI share."""

from fixability_dag.pipeline.config import CODE_VERSION
from fixability_dag.pipeline.staleness import FINAL_ASSET, checkpoints_to_audit


def test_every_reason_to_re_audit_and_nothing_else(sqlite_store):
    s = sqlite_store
    for key, code, cfg in (("fresh", CODE_VERSION, "h"), ("old-code", "0.0.1", "h"), ("other-cfg", CODE_VERSION, "x"),
                           ("new-weights", CODE_VERSION, "h")):
        s.register_checkpoint(key, f"/ck/{key}", "fp")
        s.finish_run(s.start_run("r", key, FINAL_ASSET, code, cfg, {}), "success")
    s.register_checkpoint("failed-only", "/ck/failed-only", "fp")
    s.finish_run(s.start_run("r", "failed-only", FINAL_ASSET, CODE_VERSION, "h", {}), "failed")
    keys = ["fresh", "old-code", "other-cfg", "new-weights", "failed-only", "unknown"]
    assert checkpoints_to_audit(s, keys, "h") == {
        "failed-only": "never audited", "old-code": f"audited with code 0.0.1, now {CODE_VERSION}",
        "other-cfg": "audited with config x, now h", "unknown": "never audited"}
    with_disk = checkpoints_to_audit(s, ["fresh", "new-weights"], "h", fingerprints={"fresh": "fp", "new-weights": "fp2"})
    assert with_disk == {"new-weights": "weights changed since the last audit"}
