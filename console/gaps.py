"""Holes in the audit id sequence, for the live feed (console/live.py): pure, no I/O.

Ids come from a sequence at INSERT but transactions commit in any order: id 11 can be visible
while id 10 is still in flight. Publishing 11 and moving on would lose 10 for good.
:class:`GapTracker` holds back rows above a hole until the hole is explained: the row shows up,
or every transaction that was running when the hole was seen has ended (read from
``pg_current_snapshot()``), so that id was rolled back. A hole still open after
``gap_timeout_s`` (a stuck writer) is given up with a warning, so one stuck transaction cannot
freeze every console; its ids stay watched for 10 minutes and are published late if they ever
commit. So ``id: N`` on the stream means "every change up to N you may see has been sent", and
resuming from ``Last-Event-ID`` is exact.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Self

log = logging.getLogger(__name__)

#: A writer takes its audit id microseconds before its transaction id; 0.2 s is ample margin.
GAP_GRACE_S: Final = 0.2
#: Alert transactions take milliseconds; a hole open this long is a stuck writer, and holding
#: every console behind it would be worse than publishing around it.
GAP_TIMEOUT_S: Final = 10.0
#: Given-up ids are watched this long (and at most this many ranges) for a late commit.
LATE_WATCH_S: Final = 600.0
LATE_MAX_RANGES: Final = 64


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The transactions in progress when a query's snapshot was taken (``pg_current_snapshot``)."""

    xmin: int
    xmax: int
    in_progress: frozenset[int]

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse PostgreSQL's text form ``xmin:xmax:xip,xip,...``."""
        xmin, xmax, xip = text.split(":")
        return cls(int(xmin), int(xmax), frozenset(int(x) for x in xip.split(",") if x))


@dataclass(slots=True)
class _Sighting:
    """Holes among ids up to ``upto`` (above the previous sighting's) were first seen ``at``,
    while ``suspects`` were running: one of them, if any, holds each missing id."""

    upto: int
    at: float
    suspects: set[int]
    armed: bool = False
    settled: bool = False


@dataclass(frozen=True, slots=True)
class Advance:
    """What one poll may publish: ``ready`` in id order, then ``late`` (given-up ids that did
    commit after all), and the new ``watermark``."""

    ready: list[int]
    late: list[int]
    watermark: int


class GapTracker:
    """Decides which visible audit ids may be published, so that published ids ascend without
    skipping a row that commits late. Pure: the caller passes each poll's ids, snapshot and time.

    A hole is settled when every transaction that was running when it was first seen has ended.
    One exception needs the grace period: a transaction whose audit INSERT is its first write
    takes the id a few microseconds before it gets a transaction id, so it may be missing from
    the first snapshot; the running set of a snapshot ``grace_s`` later is added to the suspects.
    """

    def __init__(self, watermark: int, *, grace_s: float = GAP_GRACE_S,
                 timeout_s: float = GAP_TIMEOUT_S, late_watch_s: float = LATE_WATCH_S) -> None:
        self.watermark = watermark
        self.grace_s = grace_s
        self.timeout_s = timeout_s
        self.late_watch_s = late_watch_s
        self._seen_max = watermark
        self._sightings: list[_Sighting] = []
        self._late: list[tuple[int, int, float]] = []   # (lo, hi, watched until)

    def late_ranges(self) -> list[tuple[int, int]]:
        """Given-up id ranges still watched, inclusive."""
        return [(lo, hi) for lo, hi, _ in self._late]

    def advance(self, ids: Sequence[int], snapshot: Snapshot, now: float) -> Advance:
        """``ids``: the audit ids visible in ``snapshot`` above the watermark, and any in the
        late ranges, ascending."""
        late = [i for i in ids if i <= self.watermark]
        for i in late:
            self._unwatch(i)
        fresh = [i for i in ids if i > self.watermark]
        self._observe(fresh, snapshot, now)
        ready: list[int] = []
        expected = self.watermark + 1
        for i in fresh:
            if i > expected and not self._hole_closed(expected, i - 1, now):
                break       # hold back everything above the hole
            ready.append(i)
            expected = i + 1
        self.watermark = expected - 1
        self._sightings = [s for s in self._sightings if s.upto > self.watermark]
        self._late = [r for r in self._late if r[2] > now]
        return Advance(ready, late, self.watermark)

    def _observe(self, fresh: Sequence[int], snapshot: Snapshot, now: float) -> None:
        for s in self._sightings:
            if not s.armed and now - s.at >= self.grace_s:
                s.suspects |= snapshot.in_progress
                s.armed = True
            if s.armed and not s.settled and s.suspects.isdisjoint(snapshot.in_progress):
                s.settled = True
        if fresh and fresh[-1] > self._seen_max:
            self._sightings.append(_Sighting(fresh[-1], now, set(snapshot.in_progress)))
            self._seen_max = fresh[-1]

    def _hole_closed(self, lo: int, hi: int, now: float) -> bool:
        floor = self.watermark
        covering = []
        for s in self._sightings:
            if s.upto >= lo and floor < hi:
                covering.append(s)
            floor = s.upto
        if all(s.settled for s in covering):
            return True
        if any(not s.settled and now - s.at < self.timeout_s for s in covering):
            return False
        log.warning("change feed: audit ids %d-%d still missing after %.0f s (a stuck "
                    "transaction?); publishing past them, watching for them", lo, hi,
                    self.timeout_s)
        self._late = [*self._late, (lo, hi, now + self.late_watch_s)][-LATE_MAX_RANGES:]
        return True

    def _unwatch(self, i: int) -> None:
        kept: list[tuple[int, int, float]] = []
        for lo, hi, until in self._late:
            if lo <= i <= hi:
                kept += [(a, b, until) for a, b in ((lo, i - 1), (i + 1, hi)) if a <= b]
            else:
                kept.append((lo, hi, until))
        self._late = kept
