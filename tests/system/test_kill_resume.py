"""SIGKILL a real audit run (Dagster + vLLM engine process) mid-generation, re-run it: nothing lost, nothing
duplicated, only the missing requests generated (issue: crash-safe, resumable rollouts)."""

import pytest

from fixability_dag.testing.reliability.kill_resume import kill_and_resume

from tests.support import demo_checkpoint

pytestmark = [pytest.mark.vllm, pytest.mark.postgres]


def test_sigkill_mid_generation_then_resume(db_url):
    figures = kill_and_resume(db_url, demo_checkpoint("arith-sft-s1000"), n_samples=16)
    assert 0 < figures["rows_at_kill"] < figures["expected_rows"]
    assert figures["partial_groups_at_kill"] == 0, "a chunk is committed whole or not at all"
    assert figures["lease_left_by_killed_run"] == 1
    assert figures["lost_rows"] == 0 and figures["duplicate_rows"] == 0
    assert figures["rows_after_resume"] == figures["expected_rows"]
    assert figures["kept_requests"] * 16 == figures["rows_at_kill"], "every committed group is kept"
    assert figures["kept_requests"] + figures["generated_requests"] == figures["expected_rows"] // 16
    assert figures["committed_rows_rewritten"] == 0, "kept rows are not deleted and re-inserted"
    assert figures["abandoned_audit_runs"] == 1 and figures["leases_after_resume"] == 0
    assert figures["dagster_runs"] == ["STARTED", "SUCCESS"], "the killed run never reported an end to Dagster"
