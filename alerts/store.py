"""Alerts in PostgreSQL: folding detection events into alerts, and their lifecycle (issue #5).

The invariants live in the database, not in Python (``ingest/sql/0004_alerts.sql``):

- one unresolved alert per (subject, type): the partial unique index ``alerts_one_unresolved``.
  Folding an event is one ``INSERT ... ON CONFLICT ... DO UPDATE`` on that index, so two
  workers folding events of the same wearer at once update one alert instead of racing to
  create two (tested with concurrent connections);
- every step is a row of ``alert_audit`` written in the same transaction as the change, and a
  trigger makes that table append-only.

Lifecycle: ``open`` -> ``acknowledged`` (a person claimed it: by whom, when, note) ->
``resolved`` (by whom or by the system, with an outcome). A claim that two officers make at
once goes to the first; the second gets :class:`AlertConflict` naming the owner. Time comes in
as ``now_ms`` (the service's clock), so tests need no sleeping.

Routing, escalation and delivery (the rest of issue #5) build on this module; they are not here.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts.model import RESOLVES, Status, opens, priority, subject
from detectors.events import Event
from detectors.localtime import minute_of_day
from eldercare.errors import EldercareError, StorageError

SYSTEM: Final = "system"

_FOLD: Final = """
INSERT INTO alerts AS a (subject, type, status, severity, priority, region, device_id, wearer_id,
                         first_ts, last_ts, lat, lon, opened_at, updated_at)
VALUES (%(subject)s, %(type)s, 'open', %(severity)s, %(priority)s, %(region)s, %(device_id)s,
        %(wearer_id)s, %(ts)s, %(ts)s, %(lat)s, %(lon)s, %(now)s, %(now)s)
ON CONFLICT (subject, type) WHERE status <> 'resolved' DO UPDATE SET
    event_count = a.event_count + 1,
    last_ts = greatest(a.last_ts, excluded.last_ts),
    first_ts = least(a.first_ts, excluded.first_ts),
    device_id = excluded.device_id,
    lat = coalesce(excluded.lat, a.lat),
    lon = coalesce(excluded.lon, a.lon),
    priority = least(a.priority, excluded.priority),
    updated_at = excluded.updated_at
RETURNING id, (xmax = 0) AS inserted
"""


class AlertConflict(EldercareError):
    """The alert is not in a state that allows the action (claimed by someone else, resolved)."""

    def __init__(self, message: str, *, owner: str | None, status: str) -> None:
        super().__init__(message)
        self.owner = owner
        self.status = status


@dataclass(frozen=True, slots=True)
class AlertChange:
    """What folding one event did."""

    alert_id: int
    action: str          # opened, updated, resolved
    event: Event


class AlertStore:
    """Alerts on one psycopg connection per call (thread-safe: no shared connection)."""

    def __init__(self, url: str, *, timezone: str = "Asia/Shanghai") -> None:
        self.url = url
        self.tz = zoneinfo.ZoneInfo(timezone)

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        try:
            with psycopg.connect(self.url) as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise StorageError(f"alert store: {exc}".strip()) from exc

    def fold(self, events: Sequence[Event], *, now_ms: int) -> list[AlertChange]:
        """Open, update or resolve alerts for ``events`` (in order), in one transaction."""
        if not events:
            return []
        with self._tx() as conn:
            return self._fold(conn, events, now_ms=now_ms)

    def _fold(self, conn: psycopg.Connection, events: Sequence[Event], *,
              now_ms: int) -> list[AlertChange]:
        changes: list[AlertChange] = []
        minutes = minute_of_day(np.array([e.ts for e in events], dtype=np.int64), self.tz)
        now = _ts(now_ms)
        for e, minute in zip(events, minutes.tolist(), strict=True):
            if opens(e):
                row = conn.execute(_FOLD, {
                    "subject": subject(e), "type": e.type, "severity": e.severity,
                    "priority": priority(e, local_minute=minute), "region": e.region,
                    "device_id": e.device_id, "wearer_id": e.wearer_id, "ts": _ts(e.ts),
                    "lat": e.lat, "lon": e.lon, "now": now}).fetchone()
                assert row is not None
                action = "opened" if row[1] else "updated"
                changes.append(AlertChange(int(row[0]), action, e))
                _audit(conn, int(row[0]), now, SYSTEM, action, _evidence(e))
            elif e.type in RESOLVES:
                for (alert_id,) in conn.execute(
                        "UPDATE alerts SET status = 'resolved', resolved_at = %s,"
                        " resolved_by = %s, outcome = %s, updated_at = %s"
                        " WHERE subject = %s AND type = %s AND status <> 'resolved'"
                        " RETURNING id",
                        (now, SYSTEM, f"auto: {e.type}", now, subject(e),
                         RESOLVES[e.type])).fetchall():
                    changes.append(AlertChange(int(alert_id), "resolved", e))
                    _audit(conn, int(alert_id), now, SYSTEM, "resolved",
                           {"outcome": f"auto: {e.type}", **_evidence(e)})
        return changes

    def fold_pending(self, *, now_ms: int, limit: int = 1000) -> list[AlertChange]:
        """Fold up to ``limit`` stored detection events not folded yet, oldest first, and mark
        them, all in one transaction: an event is folded exactly once even across crashes.

        Events are taken in ``id`` order with ``FOR UPDATE SKIP LOCKED``; one folder per
        database keeps each subject's events in order (a return after its exit).
        """
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id, device_id, type, (extract(epoch FROM ts) * 1000)::bigint, severity,"
                " region, wearer_id, lat, lon, evidence FROM detection_events"
                " WHERE alerted_at IS NULL ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
                (limit,)).fetchall()
            if not rows:
                return []
            events = [Event(device_id=r[1], type=r[2], ts=int(r[3]), severity=r[4], region=r[5],
                            wearer_id=r[6], lat=r[7], lon=r[8], evidence=r[9] or {})
                      for r in rows]
            changes = self._fold(conn, events, now_ms=now_ms)
            conn.execute("UPDATE detection_events SET alerted_at = %s WHERE id = ANY(%s)",
                         (_ts(now_ms), [r[0] for r in rows]))
        return changes

    def acknowledge(self, alert_id: int, *, by: str, now_ms: int, note: str | None = None) -> None:
        """``by`` claims the alert. Claiming one's own claim again is a no-op; anyone else's
        claim, or a resolved alert, raises :class:`AlertConflict`."""
        now = _ts(now_ms)
        with self._tx() as conn:
            row = conn.execute(
                "UPDATE alerts SET status = 'acknowledged', acknowledged_at = %s,"
                " acknowledged_by = %s, updated_at = %s WHERE id = %s AND status = 'open'"
                " RETURNING id", (now, by, now, alert_id)).fetchone()
            if row is None:
                status, owner = self._state(conn, alert_id)
                if status == "acknowledged" and owner == by:
                    return
                raise AlertConflict(
                    f"alert {alert_id} is {status}" + (f" by {owner}" if owner else ""),
                    owner=owner, status=status)
            _audit(conn, alert_id, now, by, "acknowledged", {"note": note} if note else {})

    def resolve(self, alert_id: int, *, by: str, outcome: str, now_ms: int,
                note: str | None = None) -> None:
        """Resolve the alert (the person is safe, help is there, false alarm...)."""
        now = _ts(now_ms)
        with self._tx() as conn:
            row = conn.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = %s, resolved_by = %s,"
                " outcome = %s, updated_at = %s WHERE id = %s AND status <> 'resolved'"
                " RETURNING id", (now, by, outcome, now, alert_id)).fetchone()
            if row is None:
                status, owner = self._state(conn, alert_id)
                raise AlertConflict(f"alert {alert_id} is {status}", owner=owner, status=status)
            detail: dict[str, Any] = {"outcome": outcome}
            if note:
                detail["note"] = note
            _audit(conn, alert_id, now, by, "resolved", detail)

    def add_note(self, alert_id: int, *, by: str, note: str, now_ms: int) -> None:
        """Append a note to the alert's trail (any status: notes after resolution are kept)."""
        with self._tx() as conn:
            self._state(conn, alert_id)
            _audit(conn, alert_id, _ts(now_ms), by, "note", {"note": note})

    def get(self, alert_id: int) -> dict[str, Any]:
        """The alert as a dict, with its audit trail (oldest first) under ``audit``."""
        with self._tx() as conn, conn.cursor(row_factory=dict_row) as cur:
            alert = cur.execute("SELECT * FROM alerts WHERE id = %s", (alert_id,)).fetchone()
            if alert is None:
                raise AlertConflict(f"alert {alert_id} does not exist", owner=None,
                                    status="missing")
            alert["audit"] = cur.execute(
                "SELECT at, actor, action, detail FROM alert_audit WHERE alert_id = %s"
                " ORDER BY id", (alert_id,)).fetchall()
        return alert

    @staticmethod
    def _state(conn: psycopg.Connection, alert_id: int) -> tuple[Status, str | None]:
        row = conn.execute("SELECT status, acknowledged_by FROM alerts WHERE id = %s",
                           (alert_id,)).fetchone()
        if row is None:
            raise AlertConflict(f"alert {alert_id} does not exist", owner=None, status="missing")
        return row[0], row[1]


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _evidence(e: Event) -> dict[str, Any]:
    return {"event_type": e.type, "device_id": e.device_id, "ts": e.ts, "severity": e.severity,
            "evidence": dict(e.evidence)}


def _audit(conn: psycopg.Connection, alert_id: int, at: datetime, actor: str, action: str,
           detail: dict[str, Any]) -> None:
    conn.execute("INSERT INTO alert_audit (alert_id, at, actor, action, detail)"
                 " VALUES (%s, %s, %s, %s, %s)", (alert_id, at, actor, action, Jsonb(detail)))
