"""Durable storage of detection events; the store, not Python, decides what is new.

``write`` inserts a list of events in one statement with ``ON CONFLICT DO NOTHING`` on the event
identity ``(device_id, type, ts)`` and ``RETURNING`` the identities it inserted: only those are
handed on to the alert stage. A reading redelivered after a crash, which the restarted engine has
no memory of, therefore raises its event again harmlessly: it is already stored, so it is not new.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final, Protocol

import psycopg
from psycopg.types.json import Jsonb

from detectors.events import EVENT_ENCODER, Event
from foundation.errors import StorageError
from ingest.storage import close_quietly

_INSERT: Final = (
    "INSERT INTO detection_events"
    " (device_id, type, ts, severity, region, wearer_id, lat, lon, evidence, detected_at)"
    " SELECT d, t, timestamptz 'epoch' + ms * interval '1 millisecond', s, r, w, la, lo, e, %s"
    " FROM unnest(%s::text[], %s::text[], %s::int8[], %s::text[], %s::text[], %s::text[],"
    " %s::float8[], %s::float8[], %s::jsonb[]) AS u(d, t, ms, s, r, w, la, lo, e)"
    " ON CONFLICT (device_id, type, ts) DO NOTHING"
    " RETURNING device_id, type, (extract(epoch from ts) * 1000)::int8"
)


class EventStore(Protocol):
    """Where the detection stage persists events."""

    def write(self, events: Sequence[Event], *, detected_ms: int) -> list[Event]:
        """Store events; return those not stored before, in input order. Raises StorageError."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class PostgresEventStore:
    """An :class:`EventStore` on its own psycopg connection (reconnects after failures)."""

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection | None = None

    def write(self, events: Sequence[Event], *, detected_ms: int) -> list[Event]:
        """See :class:`EventStore`."""
        if not events:
            return []
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self.url, autocommit=True, application_name="eldercare-detect",
                    connect_timeout=max(1, round(self.connect_timeout_s)))
            rows = self._conn.execute(_INSERT, (
                datetime.fromtimestamp(detected_ms / 1000, UTC),
                [e.device_id for e in events], [e.type for e in events], [e.ts for e in events],
                [e.severity for e in events], [e.region for e in events],
                [e.wearer_id for e in events], [e.lat for e in events], [e.lon for e in events],
                [Jsonb(e.evidence, dumps=lambda o: EVENT_ENCODER.encode(o).decode())
                 for e in events],
            )).fetchall()
        except psycopg.Error as exc:
            self.close()
            raise StorageError(f"{len(events)} detection events not stored: {exc}") from exc
        inserted = {(d, t, int(ms)) for d, t, ms in rows}
        new = []
        for e in events:
            key = (e.device_id, e.type, e.ts)
            if key in inserted:
                inserted.discard(key)  # the same identity twice in one call is new once
                new.append(e)
        return new

    def close(self) -> None:
        """Close the connection."""
        conn, self._conn = self._conn, None
        close_quietly(conn)
