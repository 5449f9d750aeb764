"""Progress of a generating phase, reported at a bounded rate: requests done of total, rollouts, tokens/s, time left.

A long audit is otherwise silent until a step ends. Generation reports here; *where* the line goes is the caller's
business (:func:`reporting`): the Dagster layer sends it to the run's log (the UI's run page), anything else gets
Python logging. At most one line per ``interval`` seconds, plus the last one, so a 10,000-request phase does not
flood the event log. :func:`parse` reads a line back (the command line draws its progress bar from the run's log).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
import re
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


@dataclasses.dataclass(frozen=True)
class Update:
    """One progress line read back (:func:`parse`): what a progress bar draws. ``left`` is None when unknown."""

    phase: str
    done: int
    total: int
    rollouts: int = 0
    tokens_per_s: float | None = None
    left: float | None = None
    final: bool = False

    @property
    def fraction(self) -> float:
        return 1.0 if self.final else min(self.done / self.total, 1.0) if self.total else 0.0


_START = re.compile(r"^(?P<phase>.+?): generating (?P<total>\d+) requests \((?P<kept>\d+) kept from an earlier run\)$")
_LINE = re.compile(r"^(?P<phase>.+?): (?P<done>\d+)/(?P<total>\d+) requests \(\d+%\), (?P<rollouts>\d+) rollouts, "
                   r"(?P<tps>\d+) tokens/s, \d+ s elapsed, (?:(?P<final>done)|~(?P<left>\d+) s left|time left unknown)$")
_STOPPED = re.compile(r"^(?P<phase>.+?): (?P<done>\d+) of at most (?P<total>\d+) requests \(the rest were not needed\), "
                      r"(?P<rollouts>\d+) rollouts, \d+ s elapsed, done$")


def parse(line: str) -> Update | None:
    """The :class:`Update` a line of :class:`Progress` says, or None for any other line (the follower of a run
    reads them back from its event log to draw a bar; the format is this module's, so is the parser)."""
    if m := _START.match(line):
        return Update(m["phase"], 0, int(m["total"]))
    if m := _LINE.match(line):
        return Update(m["phase"], int(m["done"]), int(m["total"]), int(m["rollouts"]), float(m["tps"]),
                      None if m["left"] is None else float(m["left"]), final=m["final"] is not None)
    if m := _STOPPED.match(line):
        return Update(m["phase"], int(m["done"]), int(m["total"]), int(m["rollouts"]), final=True)
    return None
