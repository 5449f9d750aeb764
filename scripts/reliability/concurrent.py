"""Race real audit runs against one results database.

* two runs of *different* checkpoints at once: both must complete with exactly their rows;
* two runs of the *same* checkpoint at once: one audits, the other is refused by the checkpoint lease (or, if it
  starts after the first ended, resumes with nothing to do); never interleaved, never duplicated.

    python -m scripts.reliability.concurrent --db-url sqlite:///race.db
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from scripts.reliability.runs import REPO, dagster_home, failure_lines, spawn_run

CHECKPOINTS = REPO / "demo" / "checkpoints"
KEYS = ["phase", "problem_id", "intervention", "sample_index"]


def _race(db_url: str, checkpoints: list[Path], n_samples: int, timeout: float) -> tuple[list[int], list[str], float]:
    home = dagster_home(Path(tempfile.mkdtemp(prefix="fixability-race-")))
    started = time.monotonic()
    procs = [spawn_run(db_url, ck, n_samples, home) for ck in checkpoints]
    outputs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [p.returncode for p in procs], outputs, time.monotonic() - started


def race(db_url: str, n_samples: int = 8, timeout: float = 1200.0) -> list[dict]:
    from fixability_dag.config import AuditConfig
    from fixability_dag.store import AuditStore

    store = AuditStore(db_url)
    store.migrate()
    expected = len(AuditConfig().load_problems()) * n_samples
    rows = []

    different = [CHECKPOINTS / "arith-sft-s0300", CHECKPOINTS / "arith-sft-s1000"]
    codes, errors, seconds = _race(db_url, different, n_samples, timeout)
    counts = {ck.name: store.count("rollouts", ck.name, phase="diagnostic") for ck in different}
    duplicates = sum(int(store.read("rollouts", ck.name).duplicated(KEYS).sum()) for ck in different)
    rows.append({
        "scenario": "two checkpoints at once", "runs": len(codes), "completed": codes.count(0),
        "refused": sum("CheckpointBusy" in e for e in errors), "rows": sum(counts.values()),
        "expected_rows": expected * len(different), "duplicates": duplicates, "seconds": round(seconds, 1),
        "errors": [line for e, c in zip(errors, codes) if c != 0 for line in failure_lines(e)],
    })

    same = [CHECKPOINTS / "arith-sft-s2000"] * 2
    codes, errors, seconds = _race(db_url, same, n_samples, timeout)
    frame = store.read("rollouts", same[0].name)
    rows.append({
        "scenario": "one checkpoint twice at once", "runs": len(codes), "completed": codes.count(0),
        "refused": sum("CheckpointBusy" in e for e in errors), "rows": int((frame["phase"] == "diagnostic").sum()),
        "expected_rows": expected, "duplicates": int(frame.duplicated(KEYS).sum()), "seconds": round(seconds, 1),
        "errors": [line for e, c in zip(errors, codes) if c != 0 for line in failure_lines(e)],
    })
    store.dispose()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(race(args.db_url, args.samples), indent=2))
