"""A bounded, thread-safe hand-off from the MQTT network thread to the pipeline thread.

Bounded by message count and by payload bytes. When full, :meth:`MessageBuffer.put` blocks the
network thread: paho then stops reading the socket and the broker keeps the messages (and, with
MQTT 5, the receive maximum already stops the broker from sending more than we hold). The
consumer takes whole batches under one lock acquisition, which is what makes per-message
hand-off cheap enough for tens of thousands of messages per second.

The consumer is woken only when it has something worth waking for: ``take(min_items=N)`` sleeps
until N messages are there, an urgent one arrives, the buffer fills or its timeout passes, and
the producer signals only then. Waking it for every message (as a plain condition variable
would) makes the two threads hand the GIL back and forth once per message, and the pipeline
then decodes one message at a time instead of whole chunks.

Alarms first: a message whose payload may hold an alarm (:func:`may_hold_alarm`) goes into an
*urgent* lane that :meth:`MessageBuffer.take` empties before the ordinary one, and it is admitted
even when the buffer is full (the broker's receive maximum still bounds what we hold), so an SOS
never waits behind a backlog of periodic readings inside the service. A false match only means
an ordinary message is processed early; an alarm the byte test misses (a type spelled with JSON
``\\u`` escapes) is still processed, in arrival order.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Final

from schemas import ALARM_TYPES

#: Alarm reading types as they appear, undecoded, in a JSON or MessagePack payload
#: (schemas.ALARM_TYPES).
_ALARM_BYTES: Final = re.compile(b"|".join(re.escape(t.encode()) for t in sorted(ALARM_TYPES)))


def may_hold_alarm(payload: bytes) -> bool:
    """Whether ``payload`` may carry an alarm reading (a cheap byte test, no decoding)."""
    return _ALARM_BYTES.search(payload) is not None


@dataclass(frozen=True, slots=True)
class Message:
    """One received MQTT message, with what is needed to acknowledge it later."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    content_type: str | None
    received_ms: int
    generation: int  # connection generation: acks of an older connection are meaningless
    #: The message spool segment it was replayed from (``ingest/replay.py``); 0 for a message
    #: from the broker. Replayed messages carry ``qos`` 0: there is nothing to acknowledge.
    segment: int = 0
    #: Whether the payload may hold an alarm (:func:`may_hold_alarm`, decided once, on
    #: receipt): it takes the urgent lane here and is never deferred under overload.
    urgent: bool = False


class MessageBuffer:
    """Bounded FIFO of :class:`Message` between one producer and one consumer thread."""

    def __init__(self, *, max_messages: int, max_bytes: int) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("buffer bounds must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[Message] = deque()
        self._urgent: deque[Message] = deque()
        self._bytes = 0
        lock = threading.Lock()
        self._readable = threading.Condition(lock)  # the consumer waits here
        self._writable = threading.Condition(lock)  # a producer waits here while full
        #: How many ordinary messages the waiting consumer asked for (0: it is not waiting).
        self._wanted = 0
        #: A producer waits for room: the consumer must take what there is now.
        self._full = False

    def __len__(self) -> int:
        return len(self._items) + len(self._urgent)

    def put(self, msg: Message, *, abort: threading.Event) -> bool:
        """Append ``msg``, waiting while full. Returns False if ``abort`` was set while waiting.

        A single message larger than ``max_bytes`` is admitted when the buffer is empty, so an
        oversized payload cannot wedge the service (it is dead-lettered downstream). An
        ``urgent`` message never waits: it goes into the urgent lane (module docstring).
        """
        size = len(msg.payload)
        with self._readable:
            if msg.urgent:
                self._urgent.append(msg)
                self._bytes += size
                self._readable.notify()
                return True
            while self._items and (
                len(self) >= self.max_messages or self._bytes + size > self.max_bytes
            ):
                if abort.is_set():
                    self._full = False
                    return False
                self._full = True
                self._readable.notify()  # the consumer takes what there is
                self._writable.wait(0.1)
            self._full = False
            self._items.append(msg)
            self._bytes += size
            if self._wanted and len(self._items) >= self._wanted:
                self._readable.notify()
        return True

    def take(self, max_items: int, *, timeout_s: float, min_items: int = 1) -> list[Message]:
        """Remove and return up to ``max_items`` messages, urgent ones first.

        Waits up to ``timeout_s`` for ``min_items`` ordinary messages (or any urgent one, or a
        full buffer); at the timeout returns what there is, possibly nothing."""
        deadline = time.monotonic() + timeout_s
        want = max(1, min(min_items, max_items, self.max_messages))
        with self._readable:
            while not self._urgent and not self._full and len(self._items) < want:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wanted = want
                try:
                    self._readable.wait(remaining)
                finally:
                    self._wanted = 0
            lane = self._urgent if self._urgent else self._items
            n = min(max_items, len(lane))
            if n == 0:
                return []
            out = [lane.popleft() for _ in range(n)]
            self._bytes -= sum(len(m.payload) for m in out)
            self._writable.notify_all()
        return out
