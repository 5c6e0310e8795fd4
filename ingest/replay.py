"""Spooled messages back into the pipeline, once the database can take them.

The message spool (``ingest/spool.py``) holds raw MQTT messages that were acknowledged to the
broker without being stored: during a database outage, and the periodic readings deferred under
overload. :class:`SpoolReplay` hands them back to the pipeline as ordinary :class:`Message`\\ s
(``segment`` set, ``qos`` 0, so no PUBACK is sent for them), at the lowest priority: the
pipeline takes them only when the broker has nothing waiting. A segment is released (deleted)
when every one of its messages was committed; if any was not (the database went away again),
the whole segment is replayed later. Replaying twice is harmless: readings and events are
unique in the store.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable

from ingest.buffer import Message
from ingest.spool import SegmentLog, SpoolError

log = logging.getLogger(__name__)

#: The spool record of one message: (topic, payload, content type, receipt time in Unix ms).
SpoolRecord = tuple[str, bytes, str | None, int]


def spool_records(messages: Iterable[Message]) -> list[SpoolRecord]:
    """The spool records of broker messages (what :meth:`SegmentLog.append` takes)."""
    return [(m.topic, m.payload, m.content_type, m.received_ms) for m in messages]


class _Segment:
    __slots__ = ("failed", "outstanding", "pending")

    def __init__(self, messages: list[Message]) -> None:
        self.pending = deque(messages)   # not yet taken by the pipeline
        self.outstanding = len(messages)  # taken or not, not yet completed
        self.failed = False


class SpoolReplay:
    """A cursor over the sealed segments of the message spool; thread-safe.

    :meth:`take` is called by the pipeline thread; :meth:`done` by whichever thread completes
    a batch holding replayed messages.
    """

    def __init__(self, spool: SegmentLog) -> None:
        self.spool = spool
        self._lock = threading.Lock()
        self._open: dict[int, _Segment] = {}   # segments being replayed
        self._queue: list[int] = []           # sealed segments waiting, oldest first
        self.replayed = 0                     # messages completed from the spool

    def has_work(self) -> bool:
        """Whether anything is spooled (cheap: no disk access when nothing is)."""
        with self._lock:
            if any(s.pending for s in self._open.values()) or self._queue:
                return True
        return any(size and s not in self._open for s, size in self.spool.held().items())

    def take(self, max_items: int) -> list[Message]:
        """Up to ``max_items`` spooled messages, oldest segment first; [] when none."""
        with self._lock:
            for seg in self._open.values():
                if seg.pending:
                    return _pop(seg.pending, max_items)
            if not self._queue:
                busy = set(self._open)
                self._queue = [s for s in self.spool.sealed(seal_current=True) if s not in busy]
            while self._queue:
                segment = self._queue.pop(0)
                try:
                    records = self.spool.read(segment)
                except SpoolError as exc:
                    log.error("spool segment %d unreadable, left in place: %s", segment, exc)
                    continue
                messages = [Message(topic, payload, 0, 0, content_type, received_ms, -1, segment)
                            for topic, payload, content_type, received_ms in records]
                if not messages:
                    self.spool.release(segment)  # only a torn frame: nothing was acknowledged
                    continue
                seg = _Segment(messages)
                self._open[segment] = seg
                log.info("replaying spool segment %d (%d messages)", segment, len(messages))
                return _pop(seg.pending, max_items)
            return []

    def done(self, messages: Iterable[Message], *, stored: bool) -> None:
        """Replayed ``messages`` were completed: ``stored`` or not (the database failed)."""
        counts: dict[int, int] = {}
        for m in messages:
            if m.segment:
                counts[m.segment] = counts.get(m.segment, 0) + 1
        if not counts:
            return
        with self._lock:
            for segment, n in counts.items():
                seg = self._open.get(segment)
                if seg is None:
                    continue
                seg.outstanding -= n
                seg.failed = seg.failed or not stored
                if stored:
                    self.replayed += n
                if seg.outstanding > 0:
                    continue
                del self._open[segment]
                if seg.failed:
                    self._queue.insert(0, segment)  # whole segment again, later; dedup holds
                else:
                    self.spool.release(segment)


def _pop(items: deque[Message], n: int) -> list[Message]:
    return [items.popleft() for _ in range(min(n, len(items)))]
