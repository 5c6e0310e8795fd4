"""A bounded, thread-safe hand-off from the MQTT network thread to the pipeline thread.

Bounded by message count and by payload bytes. When full, :meth:`MessageBuffer.put` blocks the
network thread: paho then stops reading the socket and the broker keeps the messages (and, with
MQTT 5, the receive maximum already stops the broker from sending more than we hold). The
consumer takes whole batches under one lock acquisition, which is what makes per-message
hand-off cheap enough for tens of thousands of messages per second.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass


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


class MessageBuffer:
    """Bounded FIFO of :class:`Message` between one producer and one consumer thread."""

    def __init__(self, *, max_messages: int, max_bytes: int) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("buffer bounds must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[Message] = deque()
        self._bytes = 0
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, msg: Message, *, abort: threading.Event) -> bool:
        """Append ``msg``, waiting while full. Returns False if ``abort`` was set while waiting.

        A single message larger than ``max_bytes`` is admitted when the buffer is empty, so an
        oversized payload cannot wedge the service (it is dead-lettered downstream).
        """
        size = len(msg.payload)
        with self._cond:
            while self._items and (
                len(self._items) >= self.max_messages or self._bytes + size > self.max_bytes
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
            while not self._items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            n = min(max_items, len(self._items))
            out = [self._items.popleft() for _ in range(n)]
            self._bytes -= sum(len(m.payload) for m in out)
            self._cond.notify_all()
        return out
