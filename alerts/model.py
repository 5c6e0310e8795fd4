"""What detection events mean for alerts: which open one, which resolve one, how urgent (pure).

Issue #5's alert model. An alert is about a *subject* (the wearer, or the device when no wearer
is registered) and an event type; at most one per (subject, type) is unresolved at a time, and
repeated events update it. Some events end an alert instead of opening one: a geofence return
resolves the open exit, the device coming back online resolves "offline", the strap closed again
resolves "bracelet removed". Informational events open nothing.

Priorities (1 most urgent) order the duty console and the dispatch queue:

====  ===========================================================  =====================
 1    sos, fall, home_alarm (smoke, gas, water, bed exit at night)  life safety
 2    geofence_exit at night (local 20:00-06:00: an elder with     someone may be lost
      dementia outside alone after dark); heart_rate;              or cannot call
      device_alarm (a device's own alarm the gateway could not
      map to another type, a tracker's power cut)
 3    geofence_exit by day, device_removed, inactivity              needs a check soon
 4    low_battery, offline                                         supervision
====  ===========================================================  =====================
"""

from __future__ import annotations

from typing import Final, Literal

from detectors.events import Event

Status = Literal["open", "acknowledged", "resolved"]

#: Event type -> priority, for the event types that open alerts.
PRIORITY: Final[dict[str, int]] = {
    "sos": 1, "fall": 1, "home_alarm": 1,
    "heart_rate": 2, "device_alarm": 2, "geofence_exit": 3, "device_removed": 3, "inactivity": 3,
    "low_battery": 4, "offline": 4,
}
#: Priority of a geofence exit at night (local time, see :func:`priority`).
NIGHT_EXIT_PRIORITY: Final = 2
#: Event type that resolves -> the alert type it resolves.
RESOLVES: Final[dict[str, str]] = {
    "geofence_return": "geofence_exit", "online": "offline", "device_worn": "device_removed",
}
#: Night for geofence exits: 20:00-06:00 local, the "stay home at night" window of the
#: registry's default night zones (docs/registry.md).
NIGHT: Final = (20 * 60, 6 * 60)


def subject(event: Event) -> str:
    """Who the alert is about: the wearer, else the device."""
    return event.wearer_id if event.wearer_id else f"device:{event.device_id}"


def opens(event: Event) -> bool:
    """Whether ``event`` opens (or updates) an alert."""
    return event.type in PRIORITY


def is_night(local_minute: int) -> bool:
    """Whether a local time of day (0-1439) is in :data:`NIGHT`."""
    return local_minute >= NIGHT[0] or local_minute < NIGHT[1]


def priority(event: Event, *, local_minute: int) -> int:
    """Priority of the alert ``event`` opens; ``local_minute`` is its time of day (0-1439) in
    the wearer's time zone."""
    if event.type == "geofence_exit" and is_night(local_minute):
        return NIGHT_EXIT_PRIORITY
    return PRIORITY[event.type]
