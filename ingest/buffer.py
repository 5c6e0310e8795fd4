"""A bounded, thread-safe hand-off from the MQTT network thread to the pipeline thread.

Bounded by message count and by payload bytes. When full, :meth:`MessageBuffer.put` blocks the
network thread: paho then stops reading the socket and the broker keeps the messages (and, with
MQTT 5, the receive maximum already stops the broker from sending more than we hold). The
consumer takes whole batches under one lock acquisition, which is what makes per-message
hand-off cheap enough for tens of thousands of messages per second.

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

#: Alarm reading types as they appear, undecoded, in a JSON or MessagePack payload
#: (schemas.ALARM_TYPES).
_ALARM_BYTES: Final = re.compile(rb"sos|fall|wear|home_alarm")


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
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items) + len(self._urgent)

    def put(self, msg: Message, *, abort: threading.Event, urgent: bool = False) -> bool:
        """Append ``msg``, waiting while full. Returns False if ``abort`` was set while waiting.

        A single message larger than ``max_bytes`` is admitted when the buffer is empty, so an
        oversized payload cannot wedge the service (it is dead-lettered downstream). An
        ``urgent`` message never waits: it goes into the urgent lane (module docstring).
        """
        size = len(msg.payload)
        with self._cond:
            if urgent:
                self._urgent.append(msg)
                self._bytes += size
                self._cond.notify_all()
                return True
            while self._items and (
                len(self) >= self.max_messages or self._bytes + size > self.max_bytes
            ):
                if abort.is_set():
                    return False
                self._cond.wait(0.1)
            self._items.append(msg)
            self._bytes += size
            self._cond.notify_all()
        return True

    def take(self, max_items: int, *, timeout_s: float) -> list[Message]:
        """Remove and return up to ``max_items`` messages, waiting up to ``timeout_s`` for one."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._items and not self._urgent:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            lane = self._urgent if self._urgent else self._items
            n = min(max_items, len(lane))
            out = [lane.popleft() for _ in range(n)]
            self._bytes -= sum(len(m.payload) for m in out)
            self._cond.notify_all()
        return out
