"""One audit per checkpoint at a time: a lease row in the results database.

Two runs auditing the same checkpoint would interleave their deletes and inserts of the same rows; the Dagster run
queue serializes them per partition (``deploy/``), but runs can also come from the CLI, a second deployment or a
backfill racing a sensor. So every audit step takes the checkpoint's lease first:

* free -> taken; held by the same run -> refreshed (steps of one run share it);
* held by another run whose heartbeat is older than ``ttl`` -> taken over (the holder died or hangs);
* held by another run on *this* host whose process is gone (killed with SIGKILL) -> taken over at once;
* otherwise -> :class:`CheckpointBusy`, naming the holder.

Every transition is one conditional ``INSERT``/``UPDATE`` whose row count says who won, so two racing runs cannot
both believe they hold it, on SQLite or PostgreSQL alike. The lease is released when the run's last running step
tears its resources down (``resources.database``: with one process per step, siblings share the lease); a killed
run leaves it behind for the rules above. Runs whose lease was taken over have their unfinished
``audit_runs`` rows marked ``abandoned``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from datetime import datetime, timedelta, timezone

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from fixability_dag.storage.schema import AuditRun, CheckpointLease

DEFAULT_TTL = timedelta(minutes=30)
"""Longer than any single chunk of generation takes (the heartbeat is refreshed at every chunk commit)."""

_T = CheckpointLease.__table__


class CheckpointBusy(RuntimeError):
    """Another live run holds this checkpoint's lease."""


@dataclasses.dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int

    @classmethod
    def me(cls, run_id: str) -> Holder:
        return cls(run_id, socket.gethostname(), os.getpid())


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder_of(engine, checkpoint_id: str) -> dict | None:
    with engine.connect() as conn:
        row = conn.execute(select(_T).where(_T.c.checkpoint_id == checkpoint_id)).mappings().first()
    return dict(row) if row else None


def refresh(conn, checkpoint_id: str, run_id: str) -> bool:
    """Inside ``conn``'s transaction: if ``run_id`` holds the lease, beat its heartbeat and record this process as
    the holder (with one process per step, the recorded pid stays a live one); False if it does not hold it."""
    me = Holder.me(run_id)
    return conn.execute(update(_T).where(_T.c.checkpoint_id == checkpoint_id, _T.c.run_id == run_id)
                        .values(host=me.host, pid=me.pid, heartbeat_at=_now())).rowcount == 1


def acquire(engine, checkpoint_id: str, run_id: str, ttl: timedelta = DEFAULT_TTL) -> str:
    """Take or refresh the lease; returns how: ``taken``, ``refreshed``, ``expired-takeover``, ``dead-takeover``."""
    with engine.begin() as conn:
        if refresh(conn, checkpoint_id, run_id):
            return "refreshed"
    me, now = Holder.me(run_id), _now()
    values = {"run_id": me.run_id, "host": me.host, "pid": me.pid, "heartbeat_at": now}
    try:
        with engine.begin() as conn:
            conn.execute(insert(_T).values(checkpoint_id=checkpoint_id, acquired_at=now, **values))
        return "taken"
    except IntegrityError:
        pass  # someone holds it: can we take it over?
    current = holder_of(engine, checkpoint_id)
    if current is None:  # released between our insert and our read: try once more from the top
        return acquire(engine, checkpoint_id, run_id, ttl)
    stale = _aware(current["heartbeat_at"]) < now - ttl
    dead = current["host"] == me.host and not pid_alive(current["pid"])
    if not (stale or dead):
        raise CheckpointBusy(
            f"checkpoint {checkpoint_id} is being audited by run {current['run_id']} (host {current['host']}, "
            f"pid {current['pid']}, last heartbeat {_aware(current['heartbeat_at']).isoformat(timespec='seconds')}); "
            "re-run it when that run has finished, or after it stops heart-beating")
    # compare-and-swap on the holder we judged stale or dead: if someone else swapped first, we lose
    with engine.begin() as conn:
        swapped = conn.execute(update(_T).where(
            _T.c.checkpoint_id == checkpoint_id, _T.c.run_id == current["run_id"], _T.c.pid == current["pid"]).values(acquired_at=now, **values)).rowcount == 1
        if swapped:
            runs = AuditRun.__table__
            conn.execute(update(runs).where(runs.c.run_id == current["run_id"], runs.c.checkpoint_id == checkpoint_id,
                                            runs.c.status == "running").values(status="abandoned"))
    if not swapped:
        raise CheckpointBusy(f"checkpoint {checkpoint_id}: another run took over the stale lease of run {current['run_id']} first")
    return "dead-takeover" if dead else "expired-takeover"


def release(engine, run_id: str, checkpoint_id: str | None = None) -> int:
    """Drop the leases this run holds (all of them, or one checkpoint's); returns how many."""
    where = [_T.c.run_id == run_id] + ([_T.c.checkpoint_id == checkpoint_id] if checkpoint_id else [])
    with engine.begin() as conn:
        return conn.execute(delete(_T).where(and_(*where))).rowcount
