"""Throwaway PostgreSQL databases, for the test suite, the benchmarks and the reliability report.

Each database gets a generated name (never input: it is spliced into ``CREATE DATABASE``, which takes no bound
parameters) and is dropped on exit, its open connections terminated first.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

SERVER_URL_ENV = "FIXABILITY_TEST_PG_URL"
DEFAULT_SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    """The PostgreSQL server scratch databases go on: ``$FIXABILITY_TEST_PG_URL``, else the local trust-auth one."""
    return os.environ.get(SERVER_URL_ENV, DEFAULT_SERVER_URL)


def reset_schema(url: str) -> None:
    """Empty the database at ``url``: drop its ``public`` schema with everything in it and create it again."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


class ScratchDatabases:
    """Creates databases on the server of ``server_url`` (an admin connection) and drops them all on close."""

    def __init__(self, server_url: str, prefix: str = "fixability_scratch"):
        self.server_url, self.prefix = server_url, prefix
        self.admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
        self.names: list[str] = []

    def create(self, **url_parts) -> str:
        """A new empty database; its URL, with ``url_parts`` (drivername, password, ...) set on the server's URL."""
        name = f"{self.prefix}_{uuid.uuid4().hex[:10]}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.names.append(name)
        return make_url(self.server_url).set(database=name, **url_parts).render_as_string(hide_password=False)

    def close(self) -> None:
        with self.admin.connect() as conn:
            for name in self.names:
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = :n AND pid <> pg_backend_pid()"), {"n": name})
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        self.names.clear()
        self.admin.dispose()

    def __enter__(self) -> ScratchDatabases:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def scratch_postgres(server_url: str, prefix: str = "fixability_scratch") -> Iterator[str]:
    """One throwaway database: its URL inside the ``with``, gone after it."""
    with ScratchDatabases(server_url, prefix) as dbs:
        yield dbs.create()
