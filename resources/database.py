"""The results database as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from fixability_dag.store import DB_URL_ENV, AuditStore, default_url, redact


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
        if self._store is not None:
            self._store.dispose()

    def store(self) -> AuditStore:
        if self._store is None:  # used outside a run (sensor, schedule): no migration needed to read
            self._store = AuditStore(self.url or default_url())
        return self._store
