"""Reading and writing the results database (SQLite by default, PostgreSQL in production).

All writes go through two primitives:

* :meth:`AuditStore.upsert` for shared reference rows (checkpoints, problems), keyed by their primary key;
* :meth:`AuditStore.replace` for one asset's rows of one checkpoint: delete-then-insert inside one transaction, so a
  re-run replaces rather than duplicates, and a failed write leaves the previous rows untouched;
* :meth:`AuditStore.insert_rollouts` for rollouts, committed chunk by chunk as they are generated, each request's
  whole sample group in one transaction, so a killed run leaves whole groups only and a re-run resumes
  (:mod:`fixability_dag.pipeline.resume`); what a re-run regenerates is removed first by
  :meth:`AuditStore.delete_rollout_groups`.

A store that holds a checkpoint's lease (:meth:`AuditStore.hold_lease`) refreshes it in the same transaction as
every write for that checkpoint and refuses the write if the lease was taken over: a run that stalled past its
lease can never interleave its rows with the run that replaced it.

A problem is identified by its suite and its id. A store bound to a suite (:meth:`AuditStore.for_suite`) reads and
writes that suite's rows only: every query on a table with a ``suite`` column is filtered on it, every row it writes
is stamped with it, and every replace or delete is scoped to it, so auditing a second suite on a checkpoint (or a
second file that reuses the first one's ids) never touches the first suite's rows.

Only bound parameters reach the database: no SQL is ever built from values.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, case, create_engine, delete, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError

from fixability_dag.core.problems import Problem
from fixability_dag.storage import leases
from fixability_dag.storage.bulk import frame_records, insert_rows
from fixability_dag.storage.schema import TABLES, AuditRun

DB_URL_ENV = "FIXABILITY_DB_URL"
DEFAULT_DB_PATH = Path(".fixability") / "audit.db"
INSERT_BATCH = 5000


class DatabaseUnavailable(RuntimeError):
    """The results database cannot be reached or written; the message names it without its password, and the
    operation. A failed write is a rolled-back transaction: rows already stored are untouched."""


@contextmanager
def _database_errors(url: str, operation: str):
    """Translate "cannot connect", "read-only", "disk full", "locked" into :class:`DatabaseUnavailable`."""
    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise DatabaseUnavailable(f"cannot {operation}: results database {redact(url)}: {reason}") from None
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != "25006":  # PostgreSQL read_only_sql_transaction
            raise
        reason = str(exc.orig).strip().splitlines()[0]
        raise DatabaseUnavailable(f"cannot {operation}: results database {redact(url)} is read-only: {reason}") from None


def default_url() -> str:
    return os.environ.get(DB_URL_ENV) or f"sqlite:///{DEFAULT_DB_PATH}"


def beside_database(url: str, folder: str) -> Path:
    """Where files derived from the database go (figures, exports): ``folder`` beside a SQLite file, else under
    ``.fixability/`` in the working directory."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        return Path(parsed.database).resolve().parent / folder
    return Path(".fixability").resolve() / folder


def redact(url: str) -> str:
    """The URL with its password masked, for logs and metadata."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers (the UI, SQL users) do not block the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    # WAL with synchronous=NORMAL stays consistent after a crash of the process or the machine; a power cut can lose
    # the last commits (never corrupt the file), which a re-run regenerates. FULL cost ~5% of bulk write speed.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.query.get("uri"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _clean(value: Any) -> Any:
    """NaN and numpy scalars are not SQL values: map to None and Python types."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def records(frame: pd.DataFrame | Sequence[Mapping]) -> list[dict]:
    if isinstance(frame, pd.DataFrame):
        return frame_records(frame, _clean)  # same rows, built column by column (~10x faster)
    return [{k: _clean(v) for k, v in dict(row).items()} for row in frame]


def _stamped(payload: list[dict], **columns: Any) -> list[dict]:
    for row in payload:
        row.update(columns)
    return payload


class AuditStore:
    """A handle on the results database. Cheap to create; one engine (connection pool) per store."""

    def __init__(self, url: str | None = None):
        self.url = url or default_url()
        self.engine = make_engine(self.url)
        self._lease: tuple[str, str] | None = None  # (checkpoint_id, run_id) this store writes under
        self.suite: str | None = None  # the suite this store reads and writes (None: every suite)

    def for_suite(self, suite: str) -> AuditStore:
        """A store over the same engine (and lease) that reads and writes ``suite``'s rows only."""
        scoped = copy.copy(self)
        scoped.suite = suite
        return scoped

    def _scope(self, table) -> list:
        """The suite filter for ``table``: empty when the store is not bound or the table has no suite column."""
        return [table.c.suite == self.suite] if self.suite is not None and "suite" in table.c else []

    def _stamp(self, table, payload: list[dict], checkpoint_id: str | None = None) -> list[dict]:
        """Rows as written: with their checkpoint, and with the store's suite where the table has one."""
        columns = {} if checkpoint_id is None else {"checkpoint_id": checkpoint_id}
        if self.suite is not None and "suite" in table.c:
            columns["suite"] = self.suite
        return _stamped(payload, **columns)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"AuditStore({redact(self.url)})"

    # -- schema --------------------------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        from fixability_dag.storage.migrations import upgrade

        try:
            upgrade(self.engine)
        except OperationalError as exc:
            raise DatabaseUnavailable(f"cannot reach the results database {redact(self.url)}: {exc.orig}") from None

    def dispose(self) -> None:
        self.engine.dispose()

    # -- writes --------------------------------------------------------------------------------------------------
    def _insert(self, table):
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    def upsert(self, table_name: str, rows: Iterable[Mapping]) -> int:
        table = TABLES[table_name]
        rows = records(list(rows))
        if not rows:
            return 0
        keys = [c.name for c in table.primary_key.columns]
        with _database_errors(self.url, f"upsert {len(rows)} rows into {table_name}"), self.engine.begin() as conn:
            for start in range(0, len(rows), INSERT_BATCH):
                batch = rows[start : start + INSERT_BATCH]
                stmt = self._insert(table)
                update = {c: stmt.excluded[c] for c in batch[0] if c not in keys}
                stmt = stmt.on_conflict_do_update(index_elements=keys, set_=update) if update else stmt.on_conflict_do_nothing(index_elements=keys)
                conn.execute(stmt, batch)
        return len(rows)

    def replace(self, table_name: str, checkpoint_id: str, rows: pd.DataFrame | Sequence[Mapping], **scope: Any) -> int:
        """Replace the rows of ``table_name`` for one checkpoint (and optional column scope) atomically."""
        table = TABLES[table_name]
        where = [table.c.checkpoint_id == checkpoint_id, *self._scope(table)] + [table.c[k] == v for k, v in scope.items()]
        return self._rewrite(table, where, self._stamp(table, records(rows), checkpoint_id), checkpoint_id)

    def replace_all(self, table_name: str, rows: pd.DataFrame | Sequence[Mapping]) -> int:
        """Replace a cross-checkpoint table's whole content (a bound store: its suite's content) atomically."""
        table = TABLES[table_name]
        return self._rewrite(table, self._scope(table), self._stamp(table, records(rows)))

    def _rewrite(self, table, where: list, payload: list[dict], checkpoint_id: str | None = None) -> int:
        """Delete the rows matching ``where`` (all rows when empty) and insert ``payload``, in one transaction."""
        with _database_errors(self.url, f"replace rows of {table.name} with {len(payload)} rows"), self.engine.begin() as conn:
            self._fence(conn, checkpoint_id)
            conn.execute(delete(table).where(*where))
            insert_rows(conn, table, payload)  # COPY on PostgreSQL, big executemany on SQLite
        return len(payload)

    # -- rollouts, chunk by chunk -----------------------------------------------------------------------------------
    def rollout_groups(self, checkpoint_id: str, phase: str) -> dict[tuple[str, str], tuple[str | None, int]]:
        """Committed sample groups of a phase: (problem, intervention) -> (request hash, samples)."""
        t = TABLES["rollouts"]
        query = (select(t.c.problem_id, t.c.intervention, func.min(t.c.request_hash), func.max(t.c.request_hash), func.count())
                 .where(t.c.checkpoint_id == checkpoint_id, t.c.phase == phase, *self._scope(t))
                 .group_by(t.c.problem_id, t.c.intervention))
        with _database_errors(self.url, f"read the committed rollouts of {checkpoint_id}"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        # a group whose rows disagree on the hash cannot be kept: report it with no hash
        return {(p, i): (lo if lo == hi else None, int(n)) for p, i, lo, hi, n in rows}

    def rollout_blocks(self, checkpoint_id: str, phase: str) -> dict[tuple[str, str], dict[str | None, tuple[int, int]]]:
        """Committed blocks of a phase drawn in seeded blocks: (problem, intervention) -> request hash -> (samples,
        correct samples). Each block has its own seed, hence its own hash."""
        t = TABLES["rollouts"]
        query = (select(t.c.problem_id, t.c.intervention, t.c.request_hash, func.count(),
                        func.sum(case((t.c.is_correct, 1), else_=0)))
                 .where(t.c.checkpoint_id == checkpoint_id, t.c.phase == phase, *self._scope(t))
                 .group_by(t.c.problem_id, t.c.intervention, t.c.request_hash))
        with _database_errors(self.url, f"read the committed rollout blocks of {checkpoint_id}"), self.engine.connect() as conn:
            rows = conn.execute(query).all()
        out: dict[tuple[str, str], dict[str | None, tuple[int, int]]] = {}
        for p, i, h, n, correct in rows:
            out.setdefault((p, i), {})[h] = (int(n), int(correct or 0))
        return out

    def delete_rollout_tails(self, checkpoint_id: str, phase: str, tails: Sequence[tuple[str, str, int]]) -> None:
        """Delete, in one transaction, each (problem, intervention) group's samples from a sample index on: the
        blocks a re-run of a blocked phase does not keep."""
        table = TABLES["rollouts"]
        with _database_errors(self.url, f"delete stale rollout blocks of {checkpoint_id}"), self.engine.begin() as conn:
            self._fence(conn, checkpoint_id)
            for problem_id, intervention, first in tails:
                conn.execute(delete(table).where(
                    table.c.checkpoint_id == checkpoint_id, *self._scope(table), table.c.phase == phase,
                    table.c.problem_id == problem_id,
                    table.c.intervention == intervention, table.c.sample_index >= first))

    def insert_rollouts(self, checkpoint_id: str, rows: pd.DataFrame | Sequence[Mapping]) -> int:
        """Insert one chunk of rollouts in one transaction, under the checkpoint's lease.

        Nothing is deleted here: what a re-run regenerates went first, in one :meth:`delete_rollout_groups`. A row
        that would duplicate a stored one is refused by the unique key, so a caller that forgot to delete a stored
        group fails loudly rather than duplicating it.
        """
        payload = self._stamp(TABLES["rollouts"], records(rows), checkpoint_id)
        with _database_errors(self.url, f"commit {len(payload)} rollouts of {checkpoint_id}"), self.engine.begin() as conn:
            self._fence(conn, checkpoint_id)
            insert_rows(conn, TABLES["rollouts"], payload)
        return len(payload)

    def delete_rollout_groups(self, checkpoint_id: str, phase: str, groups: Sequence[tuple[str, str]],
                              whole_phase: bool = False) -> None:
        """Delete sample groups of one phase in one transaction; ``whole_phase`` when they are all it stores (one
        statement on the index prefix instead of batches of IN lists)."""
        table = TABLES["rollouts"]
        with _database_errors(self.url, f"delete stale rollouts of {checkpoint_id}"), self.engine.begin() as conn:
            self._fence(conn, checkpoint_id)
            if whole_phase:
                conn.execute(delete(table).where(table.c.checkpoint_id == checkpoint_id, *self._scope(table),
                                                 table.c.phase == phase))
                return
            by_intervention: dict[str, list[str]] = {}
            for problem_id, intervention in groups:
                by_intervention.setdefault(intervention, []).append(problem_id)
            for intervention, problem_ids in by_intervention.items():
                for start in range(0, len(problem_ids), 500):  # bounded IN lists
                    conn.execute(delete(table).where(
                        table.c.checkpoint_id == checkpoint_id, *self._scope(table), table.c.phase == phase,
                        table.c.intervention == intervention,
                        table.c.problem_id.in_(problem_ids[start : start + 500])))

    # -- the checkpoint lease ----------------------------------------------------------------------------------------
    def hold_lease(self, checkpoint_id: str, run_id: str, ttl=leases.DEFAULT_TTL) -> str:
        """Take (or refresh) the checkpoint's lease for ``run_id``; later writes for it are fenced by the lease."""
        with _database_errors(self.url, f"take the lease of checkpoint {checkpoint_id}"):
            how = leases.acquire(self.engine, checkpoint_id, run_id, ttl)
        self._lease = (checkpoint_id, run_id)
        return how

    def release_leases(self, run_id: str) -> int:
        self._lease = None
        with _database_errors(self.url, f"release the leases of run {run_id}"):
            return leases.release(self.engine, run_id)

    def _fence(self, conn, checkpoint_id: str | None) -> None:
        """Inside a write's transaction: refresh our lease, or abort the write if it is no longer ours."""
        if self._lease is None or checkpoint_id is None or self._lease[0] != checkpoint_id:
            return
        if not leases.refresh(conn, checkpoint_id, self._lease[1]):
            raise leases.CheckpointBusy(f"run {self._lease[1]} no longer holds the lease of checkpoint {checkpoint_id} "
                                        "(taken over as stale); this write was rolled back")

    def register_checkpoint(self, checkpoint_id: str, path: str, fingerprint: str, recipe: str | None = None,
                            training_step: int | None = None, info: dict | None = None) -> None:
        self.upsert("checkpoints", [{
            "checkpoint_id": checkpoint_id, "path": path, "fingerprint": fingerprint, "recipe": recipe,
            "training_step": training_step, "info": info, "registered_at": datetime.now(timezone.utc),
        }])

    def upsert_problems(self, problems: Sequence[Problem]) -> int:
        rows = []
        for p in problems:
            row = p.as_row()
            hashed = {k: v for k, v in row.items() if not (k == "family" and v is None)}  # hashes before families
            row["content_hash"] = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
            rows.append(row)
        return self.upsert("problems", rows)

    # -- audit runs ----------------------------------------------------------------------------------------------
    def start_run(self, run_id: str, checkpoint_id: str, asset: str, code_version: str, config_hash: str, config: dict,
                  settings_file: str | None = None) -> int:
        with _database_errors(self.url, f"record the start of {asset} for {checkpoint_id}"), self.engine.begin() as conn:
            result = conn.execute(AuditRun.__table__.insert().values(
                run_id=run_id, checkpoint_id=checkpoint_id, asset=asset, code_version=code_version,
                config_hash=config_hash, config=config, settings_file=settings_file,
                started_at=datetime.now(timezone.utc), status="running"))
            return int(result.inserted_primary_key[0])

    def finish_run(self, audit_run_id: int, status: str, rows_written: int | None = None, summary: dict | None = None) -> None:
        table = AuditRun.__table__
        with _database_errors(self.url, f"record the end of audit run {audit_run_id}"), self.engine.begin() as conn:
            started = conn.execute(select(table.c.started_at).where(table.c.id == audit_run_id)).scalar_one()
            now = datetime.now(timezone.utc)
            if started.tzinfo is None:
                started = started.replace(tzinfo=timezone.utc)
            conn.execute(table.update().where(table.c.id == audit_run_id).values(
                status=status, finished_at=now, seconds=(now - started).total_seconds(), rows_written=rows_written,
                summary=_json_safe(summary)))

    def latest_audits(self, asset: str) -> pd.DataFrame:
        """Newest successful run of ``asset`` per checkpoint: what the nightly schedule compares against."""
        t = AuditRun.__table__
        query = select(t.c.checkpoint_id, t.c.code_version, t.c.config_hash, t.c.finished_at).where(
            t.c.asset == asset, t.c.status == "success").order_by(t.c.checkpoint_id, t.c.finished_at.desc())
        frame = self.read_sql(query)
        return frame.drop_duplicates("checkpoint_id", keep="first").reset_index(drop=True)

    # -- reads ---------------------------------------------------------------------------------------------------
    def read_sql(self, query) -> pd.DataFrame:
        with _database_errors(self.url, "read"), self.engine.connect() as conn:
            result = conn.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

    def read(self, table_name: str, checkpoint_id: str | None = None, **filters: Any) -> pd.DataFrame:
        table = TABLES[table_name]
        query = select(table).where(*self._scope(table))
        if checkpoint_id is not None:
            filters["checkpoint_id"] = checkpoint_id
        for column, value in filters.items():
            query = query.where(table.c[column].in_(value) if isinstance(value, (list, tuple, set)) else table.c[column] == value)
        return self.read_sql(query)

    def problems(self, problem_ids: Iterable[str] | None = None) -> list[Problem]:
        frame = self.read("problems", problem_id=list(problem_ids)) if problem_ids is not None else self.read("problems")
        return [
            Problem(r.problem_id, r.suite, r.question, r.gold_answer, tuple(r.reference_steps or ()), r.difficulty, r.template_id,
                    r.family)
            for r in frame.itertuples(index=False)
        ]

    def suites(self) -> list[str]:
        """The suites any checkpoint has rollouts of (a bound store: its own, if it has any)."""
        t = TABLES["rollouts"]
        with _database_errors(self.url, "read the audited suites"), self.engine.connect() as conn:
            return sorted(conn.execute(select(t.c.suite).where(*self._scope(t)).distinct()).scalars())

    def pass_counts(self, checkpoint_id: str | None, phase: str = "diagnostic") -> pd.DataFrame:
        """Per (checkpoint, suite, problem): samples and correct samples of a phase, and those of the problem's
        first block (the rows drawn with its sample 0's seed: every row of a phase drawn in one request per group),
        counted in SQL (texts are not read). ``checkpoint_id`` None: every checkpoint's."""
        t = TABLES["rollouts"]
        where = [t.c.phase == phase, *self._scope(t)] + ([t.c.checkpoint_id == checkpoint_id] if checkpoint_id else [])
        keys = [t.c.checkpoint_id, t.c.suite, t.c.problem_id]
        blocks = (select(*keys, func.count().label("n"), func.sum(case((t.c.is_correct, 1), else_=0)).label("c"),
                         func.min(t.c.sample_index).label("first"))
                  .where(*where).group_by(*keys, t.c.intervention, t.c.seed).subquery())
        b = blocks.c
        first = b.first == 0
        query = (select(b.checkpoint_id, b.suite, b.problem_id, func.sum(b.n).label("samples"),
                        func.sum(b.c).label("correct"), func.sum(case((first, b.n), else_=0)).label("first_block_samples"),
                        func.sum(case((first, b.c), else_=0)).label("first_block_correct"))
                 .group_by(b.checkpoint_id, b.suite, b.problem_id).order_by(b.checkpoint_id, b.suite, b.problem_id))
        frame = self.read_sql(query)
        counts = ["samples", "correct", "first_block_samples", "first_block_correct"]
        frame[counts] = frame[counts].astype("int64")  # PostgreSQL's sum of a count is numeric
        return frame

    def token_sums(self, checkpoint_id: str | None = None) -> pd.DataFrame:
        """Per (checkpoint, phase): rollouts, generated tokens, prompt tokens (of the rows that have a count) and
        the rows without one, summed in SQL (texts are not read). ``checkpoint_id`` None: every checkpoint's."""
        t = TABLES["rollouts"]
        where = [*self._scope(t)] + ([t.c.checkpoint_id == checkpoint_id] if checkpoint_id else [])
        query = (select(t.c.checkpoint_id, t.c.phase, func.count().label("rollouts"),
                        func.coalesce(func.sum(t.c.num_tokens), 0).label("generated_tokens"),
                        func.coalesce(func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
                        func.sum(case((t.c.prompt_tokens.is_(None), 1), else_=0)).label("prompt_unknown"))
                 .where(*where).group_by(t.c.checkpoint_id, t.c.phase).order_by(t.c.checkpoint_id, t.c.phase))
        frame = self.read_sql(query)
        counts = ["rollouts", "generated_tokens", "prompt_tokens", "prompt_unknown"]
        frame[counts] = frame[counts].astype("int64")  # PostgreSQL's sum of a count is numeric
        return frame

    def checkpoint(self, checkpoint_id: str) -> dict | None:
        frame = self.read("checkpoints", checkpoint_id=checkpoint_id)
        return frame.iloc[0].to_dict() if len(frame) else None

    def count(self, table_name: str, checkpoint_id: str | None = None, **filters: Any) -> int:
        table = TABLES[table_name]
        query = select(func.count()).select_from(table).where(*self._scope(table))
        if checkpoint_id is not None:
            query = query.where(table.c.checkpoint_id == checkpoint_id)
        for column, value in filters.items():
            query = query.where(table.c[column] == value)
        with _database_errors(self.url, f"count {table_name}"), self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return _clean(value)
