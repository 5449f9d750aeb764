"""Launch a job through the Dagster instance, as the UI does, and follow its event log from the command line.

``execute_in_process`` runs a job without a code location: the run has no repository origin, so the UI's Overview
timeline does not show it and it cannot be re-executed from there (issue 14). Here the code location is loaded
from ``workspace.yaml`` (a code server, as ``dagster dev`` starts one), the run is created from that location's job,
with its origin, and handed to the instance: to the run queue when the Dagster daemon is running (so the ``gpu``
pool and the one-run-per-checkpoint limit of ``deploy/dagster.yaml`` hold against the sensor's and the UI's runs),
else to the run launcher directly (nothing else would dequeue it). The caller then reads the run's event log until
it ends: step starts and ends, the generating phases' progress lines
(:mod:`fixability_dag.pipeline.progress`) and a failure's error, once; a progress bar gets the run's state
(:class:`RunState`) instead of the progress lines.

Dagster has no public API for this in 1.13; these are the calls ``dagster job launch`` makes
(``dagster._cli.job.execute_launch_command``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.workspace.context import BaseWorkspaceRequestContext, WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from fixability_dag.pipeline import progress

WORKSPACE = Path(__file__).resolve().parents[2] / "workspace.yaml"
"""The workspace the UI loads (``make ui``): the CLI's runs belong to the same code location."""

QUEUE_DAEMON = "QUEUED_RUN_COORDINATOR"


class LaunchError(RuntimeError):
    """The code location did not load, or the run could not be created or launched."""


@contextmanager
def code_location(instance: DagsterInstance, workspace: Path = WORKSPACE) -> Iterator[BaseWorkspaceRequestContext]:
    """The workspace's one code location, loaded in a code server for as long as the block runs (the runs it
    launches are served by it: leave the block only after they end)."""
    with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(workspace)]),
                                 code_server_log_level="WARNING") as process:
        request = process.create_request_context()
        for name in request.code_location_names:
            error = request.get_code_location_error(name)
            if error is not None:
                raise LaunchError(f"code location {name} ({workspace}) did not load: {error.message.strip()}")
        yield request


def _daemon_running(instance: DagsterInstance) -> bool:
    from dagster._daemon.controller import get_daemon_statuses

    return bool(get_daemon_statuses(instance, [QUEUE_DAEMON], ignore_errors=True)[QUEUE_DAEMON].healthy)


def launch(instance: DagsterInstance, request: BaseWorkspaceRequestContext, job_name: str, run_config: dict,
           partition_key: str | None = None, tags: dict | None = None) -> tuple[str, str]:
    """Create the run of ``job_name`` from the code location (with its origin) and submit it; returns the run id and
    how it was started ("queued" for the daemon, or "launched")."""
    from dagster._cli.job import _create_run

    [location_name] = request.code_location_names
    location = request.get_code_location(location_name)
    [repository] = location.get_repositories().values()
    if not repository.has_job(job_name):
        raise LaunchError(f"code location {location_name} has no job {job_name!r}")
    tags = {**(tags or {}), **({PARTITION_NAME_TAG: partition_key} if partition_key else {})}
    run = _create_run(instance=instance, code_location=location, remote_repo=repository,
                      remote_job=repository.get_full_job(job_name), run_config=run_config, tags=tags,
                      op_selection=None, run_id=None)
    if _daemon_running(instance):
        instance.submit_run(run.run_id, request)
        return run.run_id, "queued"
    instance.launch_run(run.run_id, request)
    return run.run_id, "launched"


def describe(entry: EventLogEntry) -> str | None:
    """The line a person following the run wants for this event, or None: step starts and ends, the run's own log
    lines at INFO and above (progress, lease takeovers), and a failure's error message without its traceback."""
    event = entry.dagster_event
    step = entry.step_key
    if event is None:  # the run's own log line (a resource's outside any step)
        if entry.level < 20 or not entry.user_message:
            return None
        return f"{step}: {entry.user_message}" if step else entry.user_message
    if event.is_step_start:
        return f"{step}: started"
    if event.is_step_success:
        return f"{step}: done"
    if event.is_step_failure:
        error = event.step_failure_data.error
        cause = error.cause if error and error.cause else error
        return f"{step}: FAILED: {(cause.message if cause else 'no error recorded').strip()}"
    if event.is_run_failure:
        return f"run failed: {entry.message}"
    return None


@dataclasses.dataclass
class RunState:
    """How far a followed run is, for a progress bar: steps done of the run's steps, the step running now and the
    latest progress of its generating phase (None outside one)."""

    steps_total: int
    started: float = dataclasses.field(default_factory=time.monotonic)
    steps_done: int = 0
    step: str | None = None
    update: progress.Update | None = None

    def read(self, entry: EventLogEntry) -> progress.Update | None:
        """Take in one event; the progress update it carries, if any."""
        event = entry.dagster_event
        if event is None:
            update = progress.parse(entry.user_message or "") if entry.step_key else None
            if update is not None:
                self.step, self.update = entry.step_key, update
            return update
        if event.is_step_start:
            self.step, self.update = entry.step_key, None
        elif event.is_step_success or event.is_step_skipped:
            self.steps_done += 1
        return None


def _steps_total(instance: DagsterInstance, run) -> int:
    if not run.execution_plan_snapshot_id:
        return 0
    return len(instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id).step_keys_to_execute)


def follow(instance: DagsterInstance, run_id: str, emit: Callable[[str], None], poll: float = 1.0,
           queued_notice: float = 30.0, show: Callable[[RunState], None] | None = None) -> DagsterRunStatus:
    """Print ``describe``'d lines of the run's event log as they arrive, until the run ends; its final status.

    With ``show`` (a progress bar), a generating phase's progress lines go to ``show(state)`` instead, except the
    phase's last one, and ``show`` is called once per poll, so a bar's clock moves between lines."""
    cursor, started, noticed = None, time.monotonic(), False
    state = None
    while True:
        run = instance.get_run_by_id(run_id)
        if state is None:
            state = RunState(_steps_total(instance, run), started)
        batch = instance.get_records_for_run(run_id, cursor=cursor)
        for record in batch.records:
            update = state.read(record.event_log_entry)
            line = describe(record.event_log_entry)
            if line and (show is None or update is None or update.final):
                emit(line)
        cursor = batch.cursor
        if run.is_finished and not batch.has_more:
            return run.status
        if run.status == DagsterRunStatus.QUEUED and not noticed and time.monotonic() - started > queued_notice:
            emit("queued behind other runs (the gpu pool and one run per checkpoint, deploy/dagster.yaml); waiting")
            noticed = True
        if show is not None and not batch.has_more:
            show(state)
        if not batch.has_more:
            time.sleep(poll)
