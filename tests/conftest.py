"""Shared fixtures: tiny real inputs (databases, checkpoints, problem files) and a deterministic fake engine.

PostgreSQL is real: each test session creates its own database on FIXABILITY_TEST_PG_URL's server (default
127.0.0.1:5432, trust auth, as on every developer and CI machine) and drops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from fixability_dag.testing.scratch import ScratchDatabases, reset_schema, server_url
from fixability_dag.storage.store import AuditStore

REPO = Path(__file__).resolve().parents[1]
DEMO_CHECKPOINTS = REPO / "demo" / "checkpoints"
PG_ADMIN_URL = server_url()

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (free when this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_checkpoint(name: str | None = None) -> Path:
    """A committed demo checkpoint (the earliest SFT one unless named)."""
    candidates = sorted(p for p in DEMO_CHECKPOINTS.iterdir() if p.is_dir() and not p.name.endswith(".partial"))
    if name:
        return DEMO_CHECKPOINTS / name
    return next(p for p in candidates if "sft" in p.name)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """A fresh PostgreSQL database for this session (dropped at the end)."""
    try:
        dbs = ScratchDatabases(PG_ADMIN_URL, "fixability_test")
        url = dbs.create()
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {make_url(PG_ADMIN_URL).render_as_string(hide_password=True)} is required: {exc}")
    yield url
    dbs.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """Each test using it runs twice: on a fresh SQLite file and on a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    url = request.getfixturevalue("pg_server_url")
    reset_schema(url)
    return url


@pytest.fixture
def store(db_url) -> AuditStore:
    s = AuditStore(db_url)
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def sqlite_store(tmp_path) -> AuditStore:
    s = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    s.migrate()
    yield s
    s.dispose()


@pytest.fixture
def checkpoint_copy(tmp_path) -> Path:
    """A writable copy of a real demo checkpoint inside a fresh checkpoint root."""
    root = tmp_path / "checkpoints"
    root.mkdir()
    src = demo_checkpoint()
    dst = root / src.name
    shutil.copytree(src, dst)
    return dst
