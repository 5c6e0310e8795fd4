"""Detection events: what the detectors conclude, handed to the alert stage and stored.

An :class:`Event` names the device, the event type, the device time of the reading that triggered
it (``ts``, Unix ms), a severity, the region, and the evidence (the values that triggered it, and
the position when one is known). ``(device_id, type, ts)`` identifies an event: the store keeps one
row per identity, so a reading delivered twice can never raise an alert twice.

Types come in pairs where a condition can end by itself, so alerts can auto-resolve:
``geofence_exit``/``geofence_return``, ``device_removed``/``device_worn``, ``offline``/``online``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Literal, Protocol

import msgspec

EventType = Literal[
    "sos", "fall", "geofence_exit", "geofence_return", "low_battery", "offline", "online",
    "device_removed", "device_worn", "heart_rate", "home_alarm", "inactivity", "device_alarm",
]
EVENT_TYPES: Final[tuple[str, ...]] = EventType.__args__  # type: ignore[attr-defined]

Severity = Literal["critical", "high", "medium", "low", "info"]
#: Most urgent first; the alert stage and the console sort by this.
SEVERITY_RANK: Final[dict[str, int]] = {
    "critical": 0, "high": 1, "medium": 2, "low": 3, "info": 4,
}

Evidence = dict[str, float | int | str | bool | list[float]]


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One detection. ``ts`` is the device time (Unix ms) of the reading that triggered it."""

    device_id: str
    type: EventType
    ts: int
    severity: Severity
    region: str
    wearer_id: str | None = None
    lat: float | None = None
    lon: float | None = None
    evidence: Evidence = {}


class EventSink(Protocol):
    """The narrow interface to the alert stage: new events, in detection order."""

    def handle(self, events: Sequence[Event]) -> None:
        """Take responsibility for ``events`` (already stored when called by the service)."""
        ...


class ListSink:
    """An :class:`EventSink` that keeps what it is given (tests, replay)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle(self, events: Sequence[Event]) -> None:
        """Append the events."""
        self.events.extend(events)


EVENT_ENCODER: Final = msgspec.json.Encoder()
