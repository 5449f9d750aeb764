"""Alembic migrations for the results database, runnable from code (the pipeline upgrades on start-up)."""

from __future__ import annotations

import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

HERE = Path(__file__).parent
MIGRATION_LOCK = 0x66697861  # PostgreSQL advisory lock id ("fixa") taken around every upgrade


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(HERE / "alembic.ini"))
    cfg.set_main_option("script_location", str(HERE))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head", attempts: int = 5) -> None:
    """Upgrade the database behind ``engine`` to ``revision``; a no-op when it is already there.

    Several audits start at once on a fresh database (the sensor queues one run per checkpoint), and each migrates
    on start-up. PostgreSQL serializes them with an advisory lock held for the upgrade's transaction. SQLite has no
    such lock: a run that loses the race fails its DDL with "locked" or "already exists", and simply tries again, by
    which time the winner has committed and the upgrade is a no-op.
    """
    for attempt in range(1, attempts + 1):
        try:
            cfg = alembic_config()
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                cfg.attributes["connection"] = connection
                command.upgrade(cfg, revision)
            return
        except DBAPIError as exc:
            lost_race = exc.connection_invalidated is False and any(
                s in str(exc.orig).lower() for s in ("locked", "already exists", "duplicate"))
            if attempt == attempts or not lost_race:
                raise
            time.sleep(0.2 * attempt)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
