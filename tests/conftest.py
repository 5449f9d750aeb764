"""Fixtures for every test; they live in tests/support.py with the shared helpers."""

from tests.support import audited_instance, checkpoint_copy, fake_audit, db_url, pg_server_url, sqlite_store, store  # noqa: F401 (fixtures)
