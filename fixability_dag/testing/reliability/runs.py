"""A real audit run in its own process group, for the reliability harnesses to kill or race.

The run materializes ``problem_set`` and ``base_rollouts`` of one checkpoint on the real vLLM engine against a
persistent Dagster instance (``DAGSTER_HOME``), so what Dagster records about killed runs is real too.

    python -m fixability_dag.testing.reliability.runs --db-url URL --checkpoint DIR --samples N     # exit 0 = success
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
"""The checkout (fixability_dag/testing/reliability/ is three levels down): the demo checkpoints live there."""


def audit_settings(n_samples: int) -> dict:
    """96 problems x ``n_samples``, committed 8 requests at a time: 12 chunks to kill between."""
    return {"n_samples": n_samples, "commit_every": 8}


def dagster_home(path: Path) -> Path:
    """A fresh DAGSTER_HOME on Dagster's default SQLite storage, its databases created before any run starts.

    Two processes opening a *fresh* SQLite instance at once both run ``CREATE TABLE`` on the same files, and one dies
    with "table secondary_indexes already exists" before its run begins (seen in this harness). ``dagster dev`` and
    the daemon create those files once at start-up, so deployed runs never race on them; the harness does the same.
    """
    from dagster import DagsterInstance

    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.from_config(str(path)) as instance:
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions("checkpoints")
        instance.all_instigator_state()
    return path


def run(db_url: str, checkpoint: Path, n_samples: int) -> bool:
    from dagster import DagsterInstance, materialize

    from assets import base_rollouts, problem_set
    from resources import AuditSettings, CheckpointDirectory, ResultsDatabase, VLLMResource

    instance = DagsterInstance.get()
    if not instance.has_dynamic_partition("checkpoints", checkpoint.name):
        instance.add_dynamic_partitions("checkpoints", [checkpoint.name])
    result = materialize(
        [problem_set, base_rollouts], instance=instance, partition_key=checkpoint.name, raise_on_error=False,
        resources={"database": ResultsDatabase(url=db_url), "vllm": VLLMResource(),
                   "settings": AuditSettings(**audit_settings(n_samples)),
                   "checkpoints": CheckpointDirectory(root=str(checkpoint.parent), settle_seconds=0)})
    if not result.success:
        for event in result.all_events:
            if event.is_step_failure:
                error = event.step_failure_data.error
                cause = error.cause or error
                print(f"{FAILED} {event.step_key}: {cause.message.strip().splitlines()[0]}", file=sys.stderr)
    return result.success


FAILED = "fixability run failed in step"
"""Marks the one line per failed step that the harnesses report (the rest of stderr is Dagster's log)."""


def failure_lines(stderr: str) -> list[str]:
    """The failed steps' first message lines, or the last line of a crash outside any step."""
    marked = [line.split(FAILED, 1)[1].strip() for line in stderr.splitlines() if FAILED in line]
    return marked or stderr.strip().splitlines()[-1:]


def first_line(text: str, limit: int | None = 220) -> str:
    """The first line of an error message, cut to ``limit`` characters (None: whole) for a report table."""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if limit is None or len(line) <= limit else line[: limit - 3] + "..."


def _run_marked(db_url: str, checkpoint: Path, n_samples: int) -> bool:
    """:func:`run`, with a crash outside any step (instance storage, imports) marked like a step failure."""
    try:
        return run(db_url, checkpoint, n_samples)
    except Exception as error:
        print(f"{FAILED} <outside any step>: {type(error).__module__}.{type(error).__name__}: "
              f"{first_line(str(error), None)}", file=sys.stderr)
        raise


def spawn_run(db_url: str, checkpoint: Path, n_samples: int, home: Path) -> subprocess.Popen:
    """Start :func:`run` in a new session (process group), so one ``killpg`` takes vLLM's engine process too."""
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    cmd = [sys.executable, "-m", "fixability_dag.testing.reliability.runs", "--db-url", db_url,
           "--checkpoint", str(checkpoint), "--samples", str(n_samples)]
    return subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--samples", type=int, default=16)
    args = parser.parse_args()
    sys.exit(0 if _run_marked(args.db_url, Path(args.checkpoint), args.samples) else 1)
