"""The unit of work between receiving and storing: one batch of decoded messages.

Readings are kept as parallel lists (reading, region, receipt time) rather than wrapped one by one:
the batch is built once per message and read once by the store, so wrapping would only allocate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas import Reading


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message, or one reading of a message, that broke the contract."""

    topic: str
    payload: bytes
    reason: str
    received_ms: int


@dataclass(slots=True)
class Batch:
    """Decoded readings and dead letters of a group of MQTT messages, committed together."""

    readings: list[Reading] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    received_ms: list[int] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def add_readings(self, readings: list[Reading], *, region: str, received_ms: int) -> None:
        """Append readings that arrived together in one message of ``region``."""
        self.readings.extend(readings)
        n = len(readings)
        self.regions.extend([region] * n)
        self.received_ms.extend([received_ms] * n)

    def add_dead_letter(self, topic: str, payload: bytes, reason: str, received_ms: int) -> None:
        """Append a rejected message or reading. NULs are escaped: PostgreSQL text cannot hold them."""
        self.dead_letters.append(
            DeadLetter(topic.replace("\x00", "\\x00"), payload, reason.replace("\x00", "\\x00"),
                       received_ms)
        )

    def __len__(self) -> int:
        return len(self.readings) + len(self.dead_letters)
