"""Progress of a generating phase, reported at a bounded rate: requests done of total, rollouts, tokens/s, time left.

A long audit is otherwise silent until a step ends. Generation reports here; *where* the line goes is the caller's
business (:func:`reporting`): the Dagster layer sends it to the run's log (the UI's run page), anything else gets
Python logging. At most one line per ``interval`` seconds, plus the last one, so a 10,000-request phase does not
flood the event log.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

INTERVAL = 30.0
"""Seconds between two progress lines of one phase."""

_reporter: contextvars.ContextVar[tuple[Callable[[str], None], float]] = contextvars.ContextVar(
    "progress_reporter", default=(log.info, INTERVAL))


@contextlib.contextmanager
def reporting(report: Callable[[str], None], interval: float = INTERVAL) -> Iterator[None]:
    """Send the progress lines of what runs inside to ``report``, at most one per ``interval`` seconds."""
    token = _reporter.set((report, interval))
    try:
        yield
    finally:
        _reporter.reset(token)


class Progress:
    """Counts one phase's generated requests; :meth:`advance` after each committed chunk."""

    def __init__(self, phase: str, total: int, kept: int = 0, clock: Callable[[], float] = time.monotonic):
        self.phase, self.total, self.kept, self.clock = phase, total, kept, clock
        self.report, self.interval = _reporter.get()
        self.done = self.rollouts = self.tokens = 0
        self.started = self.last = clock()
        if total:
            self.report(f"{phase}: generating {total} requests ({kept} kept from an earlier run)")

    def advance(self, requests: int, rows: list[dict]) -> None:
        self.done += requests
        self.rollouts += len(rows)
        self.tokens += sum(int(r.get("num_tokens") or 0) for r in rows)
        now = self.clock()
        if now - self.last >= self.interval or self.done >= self.total:
            self.last = now
            self.report(self.line(now))

    def finish(self) -> None:
        """The last line of a phase that stopped before its bound (a blocked phase whose groups were decided)."""
        if self.total and self.done < self.total:
            now = self.clock()
            self.report(f"{self.phase}: {self.done} of at most {self.total} requests (the rest were not needed), "
                        f"{self.rollouts} rollouts, {now - self.started:.0f} s elapsed, done")

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate else float("inf")
        eta = "done" if self.done >= self.total else (f"~{left:.0f} s left" if left != float("inf") else "time left unknown")
        return (f"{self.phase}: {self.done}/{self.total} requests ({100 * self.done / max(self.total, 1):.0f}%), "
                f"{self.rollouts} rollouts, {self.tokens / elapsed:.0f} tokens/s, {elapsed:.0f} s elapsed, {eta}")
