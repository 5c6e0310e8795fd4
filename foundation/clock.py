"""Time as an input: services take a :class:`Clock`, pure logic takes ``now``."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Wall-clock source; tests pass a fake."""

    def now_ms(self) -> int:
        """Unix epoch milliseconds."""
        ...


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        """Unix epoch milliseconds from the system clock."""
        return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that moves only when told: tests of timers and escalation, replays."""

    def __init__(self, now_ms: int) -> None:
        self._now_ms = now_ms

    def now_ms(self) -> int:
        """The time last set."""
        return self._now_ms

    def advance(self, seconds: float) -> int:
        """Move forward ``seconds``; returns the new time in ms."""
        self._now_ms += round(seconds * 1000)
        return self._now_ms
