"""What the service did with what was sent: counted from PostgreSQL and the dispatch platform.

:class:`Ledger` reads one region's rows (each test has its own region, or its own database):
readings by their storage key ``(device_id, type, ts, seq)``, dead letters, detection events,
alerts, outbox rows and audit entries. It compares them with what the broker acknowledged
(:class:`~tests.faults.stream.AckedPublisher`) and with the POSTs the dispatch platform accepted
(:class:`~tests.faults.dispatch.DispatchPlatform`), and returns plain counts:

- :class:`ReadingCount`: acknowledged readings stored exactly once, missing (lost), duplicated,
  and stored without an acknowledgement (allowed: a PUBACK lost with the connection);
- :class:`AlarmCount`: per SOS press one event, one alert and one ``alert.opened`` accepted by
  the platform; duplicates of each, and duplicate deliveries by ``Idempotency-Key`` (expected
  now and then: delivery is at-least-once and the platform deduplicates).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.faults.dispatch import Post
from tests.faults.stream import ReadingKey


@dataclass(frozen=True, slots=True)
class ReadingCount:
    """Acknowledged readings against stored rows."""

    sent: int
    stored: int
    rows: int
    duplicates: int
    missing: tuple[ReadingKey, ...]
    unacked_stored: int

    @property
    def lost(self) -> int:
        return len(self.missing)


@dataclass(frozen=True, slots=True)
class AlarmCount:
    """SOS presses (one per device) against events, alerts and accepted webhook deliveries."""

    presses: int
    events: int
    duplicate_events: int
    alerts: int
    duplicate_alerts: int
    delivered: int
    #: Extra accepted POSTs of an Idempotency-Key already accepted (at-least-once delivery).
    duplicate_deliveries: int
    #: Alerts whose ``alert.opened`` reached the platform under more than one key: the same
    #: message queued twice (a real duplicate, which key-based deduplication cannot catch).
    reopened: int
    #: Escalation rungs (alert, step, cycle) that reached the platform under more than one
    #: key: a rung climbed twice.
    rungs_twice: int
    #: ``alert.provisional`` documents accepted (database-down path), by distinct key.
    provisional: int
    missing: tuple[str, ...]

    @property
    def lost(self) -> int:
        return len(self.missing)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    reason: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Delivery:
    """One outbox row (``alert_deliveries``)."""

    id: int
    alert_id: int
    kind: str
    recipient: str
    channel: str
    status: str
    attempts: int
    event: str
    action: str
    idempotency_key: str


class Ledger:
    """Counts of one region in one database; see the module docstring."""

    def __init__(self, database_url: str, *, region: str) -> None:
        self.url = database_url
        self.region = region

    def rows(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url) as conn:
            return conn.execute(sql, args).fetchall()

    def scalar(self, sql: str, *args: object) -> int:
        (row,) = self.rows(sql, *args)
        return int(row[0] or 0)

    # -- readings --
    def count_readings(self) -> int:
        """Rows in ``readings`` for the region (cheap: poll this, then compare keys)."""
        return self.scalar("SELECT count(*) FROM readings WHERE region = %s", self.region)

    def stored_keys(self) -> Counter[ReadingKey]:
        """Stored rows per storage key (more than 1 would be a duplicate)."""
        rows = self.rows(
            "SELECT device_id, type, round(extract(epoch FROM ts) * 1000)::bigint, seq"
            " FROM readings WHERE region = %s", self.region)
        return Counter(ReadingKey(d, t, int(ts), int(s)) for d, t, ts, s in rows)

    def readings(self, sent: Iterable[ReadingKey]) -> ReadingCount:
        """Compare the acknowledged keys ``sent`` with what is stored."""
        acked = set(sent)
        stored = self.stored_keys()
        missing = tuple(sorted(acked - stored.keys()))
        return ReadingCount(
            sent=len(acked), stored=len(acked) - len(missing), rows=sum(stored.values()),
            duplicates=sum(n - 1 for n in stored.values()), missing=missing,
            unacked_stored=len(stored.keys() - acked))

    def dead_letters(self) -> list[DeadLetter]:
        rows = self.rows("SELECT topic, reason, payload FROM dead_letters WHERE topic LIKE %s"
                         " ORDER BY id", f"eldercare/v1/{self.region}/%")
        return [DeadLetter(t, r, bytes(p)) for t, r, p in rows]

    # -- events, alerts, deliveries --
    def events(self, type: str = "sos") -> Counter[str]:
        """Detection events of ``type`` per device."""
        return Counter(d for (d,) in self.rows(
            "SELECT device_id FROM detection_events WHERE region = %s AND type = %s",
            self.region, type))

    def event_times(self, device_id: str, type: str = "sos") -> list[int]:
        """Device times (Unix ms) of a device's events of ``type``."""
        return [int(ts) for (ts,) in self.rows(
            "SELECT round(extract(epoch FROM ts) * 1000)::bigint FROM detection_events"
            " WHERE device_id = %s AND type = %s ORDER BY ts", device_id, type)]

    def unfolded_events(self) -> int:
        """Events stored but not yet folded into alerts."""
        return self.scalar("SELECT count(*) FROM detection_events WHERE region = %s"
                           " AND alerted_at IS NULL", self.region)

    def alerts(self, type: str = "sos") -> dict[str, list[int]]:
        """Alert ids of ``type`` per device (the device of the alert's latest event)."""
        out: dict[str, list[int]] = defaultdict(list)
        for d, i in self.rows("SELECT device_id, id FROM alerts WHERE region = %s AND type = %s"
                              " ORDER BY id", self.region, type):
            out[d].append(int(i))
        return dict(out)

    def deliveries(self, *, channel: str | None = None,
                   alert_id: int | None = None) -> list[Delivery]:
        rows = self.rows(
            "SELECT d.id, d.alert_id, d.kind, d.recipient, d.channel, d.status, d.attempts,"
            " d.body->>'event', coalesce(d.body->'escalation'->>'action', ''), d.idempotency_key"
            " FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id WHERE a.region = %s"
            " AND (%s::text IS NULL OR d.channel = %s) AND (%s::bigint IS NULL OR d.alert_id = %s)"
            " ORDER BY d.id", self.region, channel, channel, alert_id, alert_id)
        return [Delivery(*r) for r in rows]

    def audit(self, alert_id: int) -> list[tuple[str, dict[str, Any]]]:
        """(action, detail) of one alert's audit trail, in order."""
        return [(a, d) for a, d in self.rows(
            "SELECT action, detail FROM alert_audit WHERE alert_id = %s ORDER BY id", alert_id)]

    def alarms(self, devices: Sequence[str], posts: Sequence[Post], *,
               type: str = "sos") -> AlarmCount:
        """One press per device in ``devices``: its event, its alert and the ``alert.opened``
        POSTs the platform accepted (``posts``, as from ``DispatchPlatform.received()``)."""
        events = self.events(type)
        alerts = self.alerts(type)
        accepted = [p for p in posts if p.accepted]
        keys_per_alert: dict[int, set[str]] = defaultdict(set)
        keys_per_rung: dict[tuple[int, int, int], set[str]] = defaultdict(set)
        for p in accepted:
            if p.event == "alert.opened" and p.alert_id is not None:
                keys_per_alert[p.alert_id].add(p.idempotency_key)
            elif p.event == "alert.escalated" and p.alert_id is not None:
                esc = p.document.get("escalation") or {}
                rung = (p.alert_id, int(esc.get("step", -1)), int(esc.get("cycle", -1)))
                keys_per_rung[rung].add(p.idempotency_key)
        per_key = Counter(p.idempotency_key for p in accepted)
        delivered = [d for d in devices if any(keys_per_alert.get(a) for a in alerts.get(d, []))]
        return AlarmCount(
            presses=len(devices), events=sum(events[d] > 0 for d in devices),
            duplicate_events=sum(max(0, events[d] - 1) for d in devices),
            alerts=sum(bool(alerts.get(d)) for d in devices),
            duplicate_alerts=sum(max(0, len(alerts.get(d, [])) - 1) for d in devices),
            delivered=len(delivered),
            duplicate_deliveries=sum(n - 1 for n in per_key.values()),
            reopened=sum(max(0, len(k) - 1) for k in keys_per_alert.values()),
            rungs_twice=sum(max(0, len(k) - 1) for k in keys_per_rung.values()),
            provisional=len({p.idempotency_key for p in accepted
                             if p.event == "alert.provisional"}),
            missing=tuple(sorted(set(devices) - set(delivered))))
