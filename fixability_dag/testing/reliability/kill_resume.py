"""Kill a real audit run with SIGKILL in the middle of generation, re-run it, and count what was lost or duplicated.

The run is a real Dagster materialization (persistent instance in a temporary DAGSTER_HOME) of ``problem_set`` and
``base_rollouts`` on the real vLLM engine, in its own process group; the kill takes down the run process and vLLM's
engine process together, as an OOM killer or a pre-empted node would. Then the same materialization runs again.

Used by ``tests/system/test_kill_resume.py`` (asserts) and ``python -m scripts.reliability_report`` (figures).

    python -m fixability_dag.testing.reliability.kill_resume --db-url sqlite:///kill.db     # prints the figures as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path

from fixability_dag.testing.reliability.runs import REPO, audit_settings, dagster_home, spawn_run

KEYS = ["problem_id", "intervention", "sample_index"]


def kill_and_resume(db_url: str, checkpoint: Path, n_samples: int = 16, min_committed_chunks: int = 2,
                    timeout: float = 900.0) -> dict:
    """Returns the figures of one kill-and-resume cycle; raises if the cycle itself could not be staged."""
    from dagster import DagsterInstance

    from fixability_dag.pipeline.config import AuditConfig
    from fixability_dag.storage.store import AuditStore

    store = AuditStore(db_url)
    store.migrate()
    key = checkpoint.name
    cfg = AuditConfig(**audit_settings(n_samples))
    total = len(cfg.load_problems()) * n_samples
    per_chunk = cfg.commit_every * n_samples
    home = dagster_home(Path(tempfile.mkdtemp(prefix="fixability-kill-")))

    started = time.monotonic()
    victim = spawn_run(db_url, checkpoint, n_samples, home)
    committed = 0
    while committed < min_committed_chunks * per_chunk:
        if victim.poll() is not None:
            raise RuntimeError(f"the run to kill ended by itself (exit {victim.returncode}): {victim.stderr.read()[-2000:]}")
        if time.monotonic() - started > timeout:
            os.killpg(victim.pid, signal.SIGKILL)
            raise TimeoutError("no rollouts were committed in time")
        time.sleep(0.2)
        committed = store.count("rollouts", key, phase="diagnostic")
    if committed >= total:
        raise RuntimeError("generation finished before the kill; use more samples")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait()
    seconds_to_kill = time.monotonic() - started

    after_kill = store.read("rollouts", key, phase="diagnostic").sort_values(KEYS).reset_index(drop=True)
    groups = after_kill.groupby(["problem_id", "intervention"]).size()
    lease = store.read("checkpoint_leases", key)

    started = time.monotonic()
    resumer = spawn_run(db_url, checkpoint, n_samples, home)
    _, stderr = resumer.communicate(timeout=timeout)
    if resumer.returncode != 0:
        raise RuntimeError(f"the resumed run failed (exit {resumer.returncode}): {stderr[-3000:]}")
    resume_seconds = time.monotonic() - started

    final = store.read("rollouts", key, phase="diagnostic").sort_values(KEYS).reset_index(drop=True)
    kept = final.merge(after_kill[KEYS + ["id", "text"]], on=KEYS, suffixes=("", "_before"))
    runs = store.read("audit_runs", key)
    resumed_summary = runs[(runs["asset"] == "base_rollouts") & (runs["status"] == "success")]["summary"].iloc[-1]
    with DagsterInstance.from_config(str(home)) as instance:
        dagster_runs = [r.status for r in instance.get_runs()]
    store.dispose()
    return {
        "checkpoint": key,
        "database": store.dialect,
        "expected_rows": total,
        "rows_at_kill": len(after_kill),
        "partial_groups_at_kill": int((groups != n_samples).sum()),
        "lease_left_by_killed_run": len(lease),
        "seconds_to_kill": round(seconds_to_kill, 1),
        "resume_seconds": round(resume_seconds, 1),
        "kept_requests": resumed_summary.get("kept_requests"),
        "generated_requests": resumed_summary.get("generated_requests"),
        "rows_after_resume": len(final),
        "lost_rows": int(total - final[KEYS].drop_duplicates().shape[0]),
        "duplicate_rows": int(final.duplicated(KEYS).sum()),
        "committed_rows_rewritten": int((kept["id"] != kept["id_before"]).sum()),
        "abandoned_audit_runs": int((runs["status"] == "abandoned").sum()),
        "leases_after_resume": int(store.count("checkpoint_leases")),
        "dagster_runs": sorted(str(s.value) for s in dagster_runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--checkpoint", default=str(REPO / "demo" / "checkpoints" / "arith-sft-s1000"))
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    print(json.dumps(kill_and_resume(args.db_url, Path(args.checkpoint), args.samples), indent=2))


if __name__ == "__main__":
    main()
