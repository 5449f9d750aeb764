"""The results database as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource, DagsterEventType, DagsterInstance, InitResourceContext
from pydantic import Field, PrivateAttr

from fixability_dag.storage.store import DB_URL_ENV, AuditStore, default_url, redact


class ResultsDatabase(ConfigurableResource):
    """SQLAlchemy URL of the results database.

    Leave ``url`` unset to read ``FIXABILITY_DB_URL`` at run time (so a password in it never lands in run config or
    the UI), falling back to the SQLite file ``.fixability/audit.db``. The schema is migrated to the newest Alembic
    revision when a run starts.
    """

    url: str | None = Field(default=None, description=f"SQLAlchemy URL; default: ${DB_URL_ENV} or SQLite .fixability/audit.db")

    _store: AuditStore | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: InitResourceContext) -> None:
        self._store = AuditStore(self.url or default_url())
        self._store.migrate()
        if context.log:
            context.log.info(f"results database: {redact(self._store.url)}")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Free the run's checkpoint leases once none of its steps is still running, then close the pool.

        The in-process executor tears resources down once, after the last step. The multiprocess and k8s
        executors tear them down after *each* step, in that step's process, while sibling steps of the same run
        (probe_rollouts next to rescue_rollouts) may still be writing under the lease: releasing there would fence
        those siblings out. So the run's own event log decides: the last step to finish releases.
        """
        if self._store is not None:
            run = context.run
            if run is not None and not steps_in_flight(context.instance, run.run_id):
                self._store.release_leases(run.run_id)
            self._store.dispose()

    def store(self) -> AuditStore:
        if self._store is None:  # used outside a run (sensor, schedule): no migration needed to read
            self._store = AuditStore(self.url or default_url())
        return self._store


_STEP_STATES = {
    DagsterEventType.STEP_START: True, DagsterEventType.STEP_RESTARTED: True,
    DagsterEventType.STEP_SUCCESS: False, DagsterEventType.STEP_FAILURE: False,
    DagsterEventType.STEP_UP_FOR_RETRY: False, DagsterEventType.STEP_SKIPPED: False,
}


def steps_in_flight(instance: DagsterInstance | None, run_id: str) -> set[str]:
    """Steps of the run that started and have not finished yet, per the run's event log (empty without one)."""
    if instance is None:
        return set()
    running: dict[str, bool] = {}
    for entry in instance.all_logs(run_id, of_type=set(_STEP_STATES)):
        event = entry.dagster_event
        if event is not None and event.step_key:
            running[event.step_key] = _STEP_STATES[event.event_type]
    return {step for step, is_running in running.items() if is_running}
