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
