"""Alerts in PostgreSQL: folding detection events into alerts, and their lifecycle (issue #5).

The invariants live in the database, not in Python (``alerts/sql/0004_alerts.sql``):

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

Routing and escalation happen in the same transactions (docs/alerts.md): an alert that opens
gets its policy snapshot and climbs its first rung, and that rung's deliveries are written to
the outbox (``alerts/outbox.py``) before the commit; a claim sets the claim timeout as the
alert's timer; resolution clears the timer and cancels unsent ladder messages;
:meth:`AlertStore.escalate_due` climbs the next rung of every alert whose timer has run out.
After each commit that queued deliveries, ``wake`` gets what was queued (channels with work,
and messages leased to this process's workers to send at once), so an SOS reaches its channels
without waiting for a poll or a claim.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from alerts import escalation, outbox
from alerts.audit import SYSTEM
from alerts.audit import append as audit
from alerts.model import RESOLVES, Status, is_night, opens, priority, subject
from alerts.outbox import Queued, Routing
from alerts.policy import Policy, ladder_of, load_policy
from detectors.events import Event
from detectors.localtime import minute_of_day
from foundation.errors import EldercareError, StorageError
from foundation.pool import LazyPool, PooledStore

#: Claim stored, unfolded detection events by identity (the unique key of the table), in one
#: statement: the row lock orders this against a concurrent :meth:`AlertStore.fold_pending`
#: (which skips locked rows), and ``alerted_at IS NULL`` re-checked after the lock makes the
#: claim exactly-once.
_CLAIM: Final = (
    "UPDATE detection_events SET alerted_at = %s"
    " FROM unnest(%s::text[], %s::text[], %s::int8[]) AS u(d, t, ms)"
    " WHERE device_id = u.d AND type = u.t"
    " AND ts = timestamptz 'epoch' + u.ms * interval '1 millisecond' AND alerted_at IS NULL"
    " RETURNING device_id, type, (extract(epoch FROM ts) * 1000)::int8"
)
#: The outcome of alerts ended because their wearer was deactivated (:meth:`end_for_wearer`).
WEARER_DEACTIVATED: Final = "auto: wearer_deactivated"
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


class AlertStore(PooledStore):
    """Alerts on one psycopg connection per call (thread-safe: no shared connection).

    ``policy`` routes new alerts (the built-in default when None); ``routing`` says which
    channels and addresses exist; ``wake(channels)`` is called after a commit that queued
    deliveries on ``channels``.
    """

    def __init__(self, url: str, *, timezone: str = "Asia/Shanghai",
                 policy: Policy | None = None, routing: Routing | None = None,
                 wake: Callable[[Queued], None] | None = None, pool_size: int = 4) -> None:
        self.url = url
        self.tz = zoneinfo.ZoneInfo(timezone)
        self.policy = policy if policy is not None else load_policy()
        self.routing = routing if routing is not None else Routing()
        self.wake = wake
        # Pooled connections: a fresh connection costs milliseconds on the SOS path (fold,
        # then the delivery worker's claim), which the latency target cannot spare.
        self._db = LazyPool(url, name="eldercare-alerts", max_size=pool_size)

    @contextmanager
    def transaction(self) -> Iterator[tuple[psycopg.Connection, Queued]]:
        """A transaction, and what it queued for delivery (handed to ``wake`` after the
        commit, never before: a worker must find the rows). psycopg errors become
        StorageError. In pipeline mode: audit rows, outbox rows and timer updates, whose
        results nobody reads, go out without a round trip each."""
        touched = Queued()
        try:
            with self._db.transaction(pipeline=True) as conn:
                yield conn, touched
        except psycopg.Error as exc:
            raise StorageError(f"alert store: {exc}".strip()) from exc
        if touched and self.wake is not None:
            self.wake(touched)

    def fold(self, events: Sequence[Event], *, now_ms: int) -> list[AlertChange]:
        """Open, update or resolve alerts for ``events`` (in order), in one transaction."""
        if not events:
            return []
        with self.transaction() as (conn, touched):
            return self._fold(conn, events, now_ms=now_ms, touched=touched)

    def _fold(self, conn: psycopg.Connection, events: Sequence[Event], *, now_ms: int,
              touched: Queued) -> list[AlertChange]:
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
                audit(conn, int(row[0]), now, action, _evidence(e))
                if row[1]:
                    self._route(conn, int(row[0]), e.type, night=is_night(minute), now=now,
                                touched=touched)
            elif e.type in RESOLVES:
                for (alert_id,) in conn.execute(
                        "UPDATE alerts SET status = 'resolved', resolved_at = %s,"
                        " resolved_by = %s, outcome = %s, updated_at = %s,"
                        " next_action_at = NULL"
                        " WHERE subject = %s AND type = %s AND status <> 'resolved'"
                        " RETURNING id",
                        (now, SYSTEM, f"auto: {e.type}", now, subject(e),
                         RESOLVES[e.type])).fetchall():
                    changes.append(AlertChange(int(alert_id), "resolved", e))
                    audit(conn, int(alert_id), now, "resolved",
                          {"outcome": f"auto: {e.type}", **_evidence(e)})
                    self._ended(conn, int(alert_id), now=now, touched=touched)
        return changes

    def _route(self, conn: psycopg.Connection, alert_id: int, alert_type: str, *, night: bool,
               now: datetime, touched: Queued) -> None:
        """A new alert: snapshot its ladder and climb the first rung, in this transaction."""
        snapshot = self.policy.snapshot(alert_type, night=night)
        ladder = ladder_of(snapshot)
        d = escalation.on_open(ladder, now_ms=_ms(now))
        conn.execute("UPDATE alerts SET policy = %s, step = %s, cycle = %s, next_action_at = %s"
                     " WHERE id = %s", (Jsonb(snapshot), d.step, d.cycle,
                                        _timer(d.next_action_at_ms), alert_id))
        self._apply(conn, alert_id, d, ladder=ladder, event="alert.opened", now=now,
                    touched=touched)

    def _apply(self, conn: psycopg.Connection, alert_id: int, d: escalation.Decision, *,
               ladder: Any, event: str, now: datetime, touched: Queued) -> None:
        for action, detail in d.audit:
            audit(conn, alert_id, now, action, detail)
        row = outbox.alert_row(conn, alert_id)
        outbox.notify(
            conn, row, targets=d.notify, ladder=ladder, routing=self.routing, now=now,
            event=event, escalation={"step": d.rung, "cycle": d.cycle, "action": d.action},
            queued=touched)
        outbox.announce(conn, row, event=event, routing=self.routing, now=now, queued=touched)

    def _ended(self, conn: psycopg.Connection, alert_id: int, *, now: datetime,
               touched: Queued) -> None:
        outbox.cancel_pending(conn, alert_id, now=now)
        outbox.announce(conn, outbox.alert_row(conn, alert_id), event="alert.resolved",
                        routing=self.routing, now=now, queued=touched)

    def escalate_due(self, *, now_ms: int, limit: int = 100) -> int:
        """Climb the next rung of every alert whose timer has run out (claims that expired
        included), each with its deliveries in the same transaction. Returns how many."""
        now = _ts(now_ms)
        with self.transaction() as (conn, touched):
            rows = conn.execute(
                "SELECT id, status, step, cycle, policy FROM alerts WHERE next_action_at <= %s"
                " AND status <> 'resolved' AND policy IS NOT NULL ORDER BY next_action_at"
                " LIMIT %s FOR UPDATE SKIP LOCKED", (now, limit)).fetchall()
            for alert_id, status, step, cycle, snapshot in rows:
                ladder = ladder_of(snapshot)
                d = escalation.on_due(ladder, status=status, step=step, cycle=cycle,
                                      now_ms=now_ms)
                conn.execute(
                    "UPDATE alerts SET status = %s, step = %s, cycle = %s, next_action_at = %s,"
                    " priority = CASE WHEN %s THEN greatest(priority - 1, 1) ELSE priority END,"
                    " acknowledged_by = CASE WHEN %s = 'open' THEN NULL ELSE acknowledged_by END,"
                    " acknowledged_at = CASE WHEN %s = 'open' THEN NULL ELSE acknowledged_at END,"
                    " updated_at = %s WHERE id = %s",
                    (d.status, d.step, d.cycle, _timer(d.next_action_at_ms), d.raise_priority,
                     d.status, d.status, now, alert_id))
                event = "alert.claim_expired" if status == "acknowledged" else "alert.escalated"
                self._apply(conn, alert_id, d, ladder=ladder, event=event, now=now,
                            touched=touched)
        return len(rows)

    def next_timer_ms(self) -> int | None:
        """When the earliest escalation timer runs out (for the escalator's sleep)."""
        with self.transaction() as (conn, _):
            row = conn.execute("SELECT min(next_action_at) FROM alerts"
                               " WHERE next_action_at IS NOT NULL").fetchone()
        return None if row is None or row[0] is None else _ms(row[0])

    def fold_pending(self, *, now_ms: int, limit: int = 1000) -> list[AlertChange]:
        """Fold up to ``limit`` stored detection events not folded yet, oldest first, and mark
        them, all in one transaction: an event is folded exactly once even across crashes.

        Events are taken in ``id`` order with ``FOR UPDATE SKIP LOCKED``; one folder per
        database keeps each subject's events in order (a return after its exit).
        """
        with self.transaction() as (conn, touched):
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
            changes = self._fold(conn, events, now_ms=now_ms, touched=touched)
            conn.execute("UPDATE detection_events SET alerted_at = %s WHERE id = ANY(%s)",
                         (_ts(now_ms), [r[0] for r in rows]))
        return changes

    def fold_stored(self, events: Sequence[Event], *, now_ms: int) -> list[AlertChange]:
        """Fold ``events`` just stored in ``detection_events`` (the detection stage's hand-off,
        so they cross once, from memory): each is claimed by its identity
        ``(device_id, type, ts)`` where not folded yet, and those claimed are folded in order,
        in the same transaction. An event another folder (or :meth:`fold_pending`) folded
        first is not claimed, so each is folded exactly once; one not stored is ignored.
        """
        if not events:
            return []
        with self.transaction() as (conn, touched):
            rows = conn.execute(_CLAIM, (
                _ts(now_ms), [e.device_id for e in events], [e.type for e in events],
                [e.ts for e in events])).fetchall()
            claimed = {(d, t, int(ms)) for d, t, ms in rows}
            mine = []
            for e in events:
                key = (e.device_id, e.type, e.ts)
                if key in claimed:
                    claimed.discard(key)  # the same identity twice is one stored event
                    mine.append(e)
            return self._fold(conn, mine, now_ms=now_ms, touched=touched) if mine else []

    def acknowledge(self, alert_id: int, *, by: str, now_ms: int, note: str | None = None) -> None:
        """``by`` claims the alert. Claiming one's own claim again is a no-op; anyone else's
        claim, or a resolved alert, raises :class:`AlertConflict`. The claim pauses escalation
        for the ladder's ``claim_timeout_s``."""
        now = _ts(now_ms)
        with self.transaction() as (conn, touched):
            row = conn.execute(
                "UPDATE alerts SET status = 'acknowledged', acknowledged_at = %s,"
                " acknowledged_by = %s, updated_at = %s WHERE id = %s AND status = 'open'"
                " RETURNING step, cycle, policy", (now, by, now, alert_id)).fetchone()
            if row is None:
                status, owner = self._state(conn, alert_id)
                if status == "acknowledged" and owner == by:
                    return
                raise AlertConflict(
                    f"alert {alert_id} is {status}" + (f" by {owner}" if owner else ""),
                    owner=owner, status=status)
            audit(conn, alert_id, now, "acknowledged", {"note": note} if note else {}, actor=by)
            if row[2] is not None:
                d = escalation.on_claim(ladder_of(row[2]), step=row[0], cycle=row[1],
                                        now_ms=now_ms)
                conn.execute("UPDATE alerts SET next_action_at = %s WHERE id = %s",
                             (_timer(d.next_action_at_ms), alert_id))
            outbox.announce(conn, outbox.alert_row(conn, alert_id), event="alert.acknowledged",
                            routing=self.routing, now=now, queued=touched)

    def resolve(self, alert_id: int, *, by: str, outcome: str, now_ms: int,
                note: str | None = None, owner_only: bool = False) -> None:
        """Resolve the alert (the person is safe, help is there, false alarm...): escalation
        ends and ladder messages not yet sent are cancelled. ``owner_only``: refuse (with
        :class:`AlertConflict` naming the owner) when someone else has claimed it; checked in
        the same statement, so a claim made a moment earlier is respected."""
        now = _ts(now_ms)
        with self.transaction() as (conn, touched):
            row = conn.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = %s, resolved_by = %s,"
                " outcome = %s, updated_at = %s, next_action_at = NULL"
                " WHERE id = %s AND status <> 'resolved' AND (NOT %s OR status = 'open'"
                " OR acknowledged_by = %s) RETURNING id",
                (now, by, outcome, now, alert_id, owner_only, by)).fetchone()
            if row is None:
                status, owner = self._state(conn, alert_id)
                raise AlertConflict(
                    f"alert {alert_id} is {status}" + (f" by {owner}" if owner else ""),
                    owner=owner, status=status)
            detail: dict[str, Any] = {"outcome": outcome}
            if note:
                detail["note"] = note
            audit(conn, alert_id, now, "resolved", detail, actor=by)
            self._ended(conn, alert_id, now=now, touched=touched)

    def end_for_wearer(self, wearer_id: str, *, by: str, reason: str, now_ms: int) -> list[int]:
        """The wearer was deactivated (moved away, deceased: docs/registry-database.md):
        resolve each of their unresolved alerts, in one transaction, exactly as a resolution
        does (timer cleared, unsent ladder messages cancelled, the state announced), with the
        outcome ``auto: wearer_deactivated`` and ``reason`` in the trail. Resolution is the one
        state that ends escalation for good (a claim only pauses it), and it keeps every alert
        and its history. Returns the ids resolved."""
        now = _ts(now_ms)
        with self.transaction() as (conn, touched):
            ids = [int(r[0]) for r in conn.execute(
                "UPDATE alerts SET status = 'resolved', resolved_at = %s, resolved_by = %s,"
                " outcome = %s, updated_at = %s, next_action_at = NULL"
                " WHERE wearer_id = %s AND status <> 'resolved' RETURNING id",
                (now, by, WEARER_DEACTIVATED, now, wearer_id)).fetchall()]
            for alert_id in ids:
                audit(conn, alert_id, now, "resolved",
                      {"outcome": WEARER_DEACTIVATED, "reason": reason}, actor=by)
                self._ended(conn, alert_id, now=now, touched=touched)
        return ids

    def add_note(self, alert_id: int, *, by: str, note: str, now_ms: int) -> None:
        """Append a note to the alert's trail (any status: notes after resolution are kept)."""
        with self.transaction() as (conn, _):
            self._state(conn, alert_id)
            audit(conn, alert_id, _ts(now_ms), "note", {"note": note}, actor=by)

    def record_command(self, alert_id: int, *, action: str, detail: dict[str, Any], by: str,
                       now_ms: int) -> None:
        """Append a step of a device command to the alert's trail (alerts.device_commands);
        any status: a watch may be located after its alert is resolved."""
        with self.transaction() as (conn, _):
            self._state(conn, alert_id)
            audit(conn, alert_id, _ts(now_ms), action, detail, actor=by)

    def get(self, alert_id: int) -> dict[str, Any]:
        """The alert as a dict, with its audit trail (oldest first) under ``audit``."""
        with self.transaction() as (conn, _), conn.cursor(row_factory=dict_row) as cur:
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


def _timer(ms: int | None) -> datetime | None:
    return None if ms is None else _ts(ms)


def _ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _evidence(e: Event) -> dict[str, Any]:
    return {"event_type": e.type, "device_id": e.device_id, "ts": e.ts, "severity": e.severity,
            "evidence": dict(e.evidence)}
