"""Race real audit runs against one results database.

* two runs of *different* checkpoints at once: both must complete with exactly their rows;
* two runs of the *same* checkpoint at once: one audits, the other is refused by the checkpoint lease (or, if it
  starts after the first ended, resumes with nothing to do); never interleaved, never duplicated.

    python -m fixability_dag.testing.reliability.concurrent --db-url sqlite:///race.db
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fixability_dag.testing.reliability.runs import REPO, dagster_home, failure_lines, spawn_run

CHECKPOINTS = REPO / "demo" / "checkpoints"
KEYS = ["phase", "problem_id", "intervention", "sample_index"]


def _race(db_url: str, checkpoints: list[Path], n_samples: int, timeout: float) -> tuple[list[int], list[str], float]:
    home = dagster_home(Path(tempfile.mkdtemp(prefix="fixability-race-")))
    started = time.monotonic()
    procs = [spawn_run(db_url, ck, n_samples, home) for ck in checkpoints]
    outputs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [p.returncode for p in procs], outputs, time.monotonic() - started


def _scenario(store, db_url: str, name: str, checkpoints: list[Path], expected_per_checkpoint: int, n_samples: int,
              timeout: float) -> dict:
    """Race one run per entry of ``checkpoints`` (a name twice = two runs of one checkpoint) and count the result."""
    codes, errors, seconds = _race(db_url, checkpoints, n_samples, timeout)
    frames = [store.read("rollouts", key) for key in dict.fromkeys(ck.name for ck in checkpoints)]
    return {
        "scenario": name, "runs": len(codes), "completed": codes.count(0),
        "refused": sum("CheckpointBusy" in e for e in errors),
        "rows": sum(int((f["phase"] == "diagnostic").sum()) for f in frames),
        "expected_rows": expected_per_checkpoint * len(frames),
        "duplicates": sum(int(f.duplicated(KEYS).sum()) for f in frames), "seconds": round(seconds, 1),
        "errors": [line for e, c in zip(errors, codes) if c != 0 for line in failure_lines(e)],
    }


def race(db_url: str, n_samples: int = 8, timeout: float = 1200.0) -> list[dict]:
    from fixability_dag.pipeline.config import AuditConfig
    from fixability_dag.storage.store import AuditStore

    store = AuditStore(db_url)
    store.migrate()
    expected = len(AuditConfig().load_problems()) * n_samples
    rows = [
        _scenario(store, db_url, "two checkpoints at once", [CHECKPOINTS / "arith-sft-s0300", CHECKPOINTS / "arith-sft-s1000"],
                  expected, n_samples, timeout),
        _scenario(store, db_url, "one checkpoint twice at once", [CHECKPOINTS / "arith-sft-s2000"] * 2,
                  expected, n_samples, timeout),
    ]
    store.dispose()
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()
    print(json.dumps(race(args.db_url, args.samples), indent=2))
