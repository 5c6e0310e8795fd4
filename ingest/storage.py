"""Durable storage of batches in PostgreSQL/TimescaleDB with psycopg 3.

One batch is one transaction: readings, accelerometer chunks and dead letters commit together, and
only after the commit does the pipeline acknowledge the MQTT messages. Duplicates (QoS 1
redelivery) are dropped against the unique dedup key ``(device_id, type, ts, seq)``.

Deduplication is optimistic. Duplicates are rare (a redelivery after a crash or a lost PUBACK),
while ``ON CONFLICT DO NOTHING`` makes PostgreSQL insert every row speculatively (about 30% of its
per-row time), and ``COPY`` cannot skip conflicts at all. So rows are first written plainly inside
a savepoint; the unique index still checks every row, and only if it reports a violation is the
savepoint rolled back and the same rows written again the deduplicating way. Either way the
outcome is the same rows.

Two write methods, chosen by configuration and compared in ``benchmarks/ingest.py``:

``copy`` (default)
    Binary ``COPY`` straight into ``readings``; on a duplicate, ``COPY`` into a temporary staging
    table and one ``INSERT ... SELECT ... ON CONFLICT DO NOTHING``.
``unnest``
    One ``INSERT ... SELECT FROM unnest(arrays)`` per reading type (``ON CONFLICT`` on a
    duplicate); needs no COPY support (PGlite, some proxies).

Rows are built with ``operator.attrgetter`` over exactly the fields of each reading type, so no
per-column Python loop runs per reading. psycopg errors never leave this module: they become
:class:`~foundation.errors.StorageError`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from operator import attrgetter
from typing import Any, Final, Literal, Protocol

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from foundation.errors import StorageError
from ingest.batch import Batch
from schemas import READING_TYPES, TYPE_NAMES, Accel, Reading

log = logging.getLogger(__name__)

WriteMethod = Literal["copy", "unnest"]

#: Stored PostgreSQL type of every measurement column (binary COPY needs the exact type).
_COLUMN_TYPES: Final = {
    "lat": "float8", "lon": "float8", "accuracy_m": "float4", "speed_mps": "float4",
    "battery_pct": "float4", "source": "text", "heart_rate_bpm": "float4", "spo2_pct": "float4",
    "body_temp_c": "float4", "systolic_mmhg": "float4", "diastolic_mmhg": "float4",
    "steps": "int4", "confidence": "float4", "rssi_dbm": "float4", "worn": "bool",
    "sensor": "text", "active": "bool", "alarm": "text", "code": "text",
    "cells": "jsonb", "wifi": "jsonb",
}
_HEAD: Final = ("device_id", "ts", "seq")
_TAIL: Final = ("type", "region", "received_at")
# Times travel as int8 microseconds since 2000-01-01 UTC: that is PostgreSQL's own binary format
# of timestamptz (integer datetimes, the only kind since PostgreSQL 10), so binary COPY stores
# them into timestamptz columns with psycopg's C int8 dumper instead of a Python datetime per
# value. The unnest method converts them in SQL.
_HEAD_TYPES: Final = ("text", "int8", "int8")
_TAIL_TYPES: Final = ("text", "text", "int8")
_PG_EPOCH_MS: Final = 946_684_800_000
_US: Final = "timestamptz '2000-01-01 00:00:00+00' + {} * interval '1 microsecond'"


@dataclass(frozen=True, slots=True)
class _TypeLayout:
    """How one reading type maps onto columns: the getter and the column names/wire types."""

    name: str
    getter: Callable[[Any], tuple[Any, ...]]  # the type's own fields, always as a tuple
    pg_types: tuple[str, ...]
    copy_sql: str    # binary COPY of this type's columns into readings
    stage_sql: str   # the same into the staging table (the deduplicating path)
    unnest_sql: str  # INSERT ... SELECT FROM unnest(one array per column)


def _one(field: str) -> Callable[[Any], tuple[Any, ...]]:
    get = attrgetter(field)
    return lambda reading: (get(reading),)


def _json(value: Any) -> Jsonb | None:
    """A list of structs (a radio scan's towers or access points) as a jsonb value; an empty
    list as NULL, like any field a reading does not carry."""
    return Jsonb(msgspec.to_builtins(value)) if value else None


def _getter(fields: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    """The row values of ``fields``: plain attributes straight through ``attrgetter`` (the hot
    path), jsonb columns through :func:`_json`."""
    get = attrgetter(*fields) if len(fields) > 1 else _one(fields[0])
    json_at = [i for i, f in enumerate(fields) if _COLUMN_TYPES[f] == "jsonb"]
    if not json_at:
        return get

    def row(reading: Any) -> tuple[Any, ...]:
        values = list(get(reading))
        for i in json_at:
            values[i] = _json(values[i])
        return tuple(values)
    return row


def _layouts() -> dict[type, _TypeLayout]:
    out: dict[type, _TypeLayout] = {}
    for cls in READING_TYPES:
        if cls is Accel:
            continue
        fields = tuple(f for f in cls.__struct_fields__ if f not in _HEAD)
        columns = (*_HEAD, *fields, *_TAIL)
        names = ", ".join(columns)
        pg_types = (*_HEAD_TYPES, *(_COLUMN_TYPES[f] for f in fields), *_TAIL_TYPES)
        exprs = ", ".join(_US.format(c) if c in ("ts", "received_at") else c for c in columns)
        args = ", ".join(f"%s::{t}[]" for t in pg_types)
        out[cls] = _TypeLayout(
            name=TYPE_NAMES[cls],
            getter=_getter(fields),
            pg_types=pg_types,
            copy_sql=f"COPY readings ({names}) FROM STDIN (FORMAT BINARY)",
            stage_sql=f"COPY readings_stage ({names}) FROM STDIN (FORMAT BINARY)",
            unnest_sql=f"INSERT INTO readings ({names}) SELECT {exprs} FROM unnest({args})"
                       f" AS u({names})",
        )
    return out


_LAYOUTS: Final = _layouts()
_ALL_COLUMNS: Final = ", ".join((*_HEAD, *_COLUMN_TYPES, *_TAIL))
_STAGE_INSERT_SQL: Final = (f"INSERT INTO readings ({_ALL_COLUMNS}) SELECT {_ALL_COLUMNS}"
                            " FROM readings_stage")
_DEDUP: Final = " ON CONFLICT DO NOTHING"
_ACCEL_GET: Final = attrgetter("device_id", "ts", "rate_hz", "x", "y", "z")
_ACCEL_SQL: Final = (
    "INSERT INTO accel_chunks (device_id, ts, seq, rate_hz, x, y, z, region, received_at,"
    f" n_samples) VALUES (%s, {_US.format('%s')}, %s, %s, %s::float4[], %s::float4[],"
    f" %s::float4[], %s, {_US.format('%s')}, %s) ON CONFLICT DO NOTHING"
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of one committed batch."""

    readings: int       # valid readings in the batch
    stored: int         # new rows (readings minus duplicates)
    dead_letters: int


class TelemetryStore(Protocol):
    """Where the ingest pipeline commits batches. Implementations must be all-or-nothing."""

    def write(self, batch: Batch) -> WriteResult:
        """Commit the batch atomically; raise StorageError and commit nothing on failure."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class PostgresStore:
    """A :class:`TelemetryStore` on one psycopg connection, reconnecting after failures.

    Used from one thread (the pipeline's); not thread-safe.
    """

    def __init__(
        self, url: str, *, method: WriteMethod = "copy", connect_timeout_s: float = 5.0
    ) -> None:
        self.url = url
        self.method = method
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection | None = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.url, connect_timeout=max(1, round(self.connect_timeout_s)),
                application_name="eldercare-ingest",
            )
            if self.method == "copy":
                self._conn.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS readings_stage (LIKE readings"
                    " INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
                )
                self._conn.commit()
        return self._conn

    def write(self, batch: Batch) -> WriteResult:
        """Commit ``batch`` in one transaction. Raises StorageError, having committed nothing."""
        groups: dict[type, list[tuple[Any, ...]]] = defaultdict(list)
        accel: list[tuple[Any, ...]] = []
        rows = zip(batch.readings, batch.regions, batch.received_ms, strict=True)
        for r, region, received in rows:
            layout = _LAYOUTS.get(type(r))
            us = (received - _PG_EPOCH_MS) * 1000
            seq = -1 if r.seq is None else r.seq  # the dedup key has no NULL
            if layout is None:
                accel.append(_accel_row(r, seq, region, us))
            else:
                groups[type(r)].append((r.device_id, (r.ts - _PG_EPOCH_MS) * 1000, seq,
                                        *layout.getter(r), layout.name, region, us))
        try:
            conn = self._connection()
            with conn.transaction():
                if self.method == "copy":
                    stored = self._copy_readings(conn, groups)
                else:
                    stored = self._unnest_readings(conn, groups)
                stored += self._write_accel(conn, accel)
                self._write_dead_letters(conn, batch)
        except psycopg.Error as exc:
            self._drop_broken_connection()
            raise StorageError(f"batch of {len(batch)} not stored: {exc}".strip()) from exc
        return WriteResult(len(batch.readings), stored, len(batch.dead_letters))

    def _copy_readings(
        self, conn: psycopg.Connection, groups: dict[type, list[tuple[Any, ...]]]
    ) -> int:
        """Binary COPY straight into ``readings``, in a savepoint; if a row is already stored
        (a redelivery), the savepoint is rolled back and the rows go through the staging table
        and a deduplicating INSERT instead (see the module docstring)."""
        if not groups:
            return 0
        with conn.cursor() as cur:
            def plain() -> int:
                self._copy_groups(cur, groups, staged=False)
                return sum(len(rows) for rows in groups.values())

            def dedup() -> int:
                self._copy_groups(cur, groups, staged=True)
                cur.execute(_STAGE_INSERT_SQL + _DEDUP)
                return max(cur.rowcount, 0)

            return _optimistic(conn, plain, dedup)

    @staticmethod
    def _copy_groups(cur: psycopg.Cursor[Any], groups: dict[type, list[tuple[Any, ...]]],
                     *, staged: bool) -> None:
        for cls, rows in groups.items():
            layout = _LAYOUTS[cls]
            with cur.copy(layout.stage_sql if staged else layout.copy_sql) as copy:
                copy.set_types(list(layout.pg_types))
                for row in rows:
                    copy.write_row(row)

    def _unnest_readings(
        self, conn: psycopg.Connection, groups: dict[type, list[tuple[Any, ...]]]
    ) -> int:
        stored = 0
        with conn.cursor() as cur:
            for cls, rows in groups.items():
                sql, params = _LAYOUTS[cls].unnest_sql, [list(c) for c in zip(*rows, strict=True)]
                stored += _optimistic(conn, partial(_execute, cur, sql, params),
                                      partial(_execute, cur, sql + _DEDUP, params))
        return stored

    @staticmethod
    def _write_accel(conn: psycopg.Connection, rows: list[tuple[Any, ...]]) -> int:
        # Accelerometer chunks are few (about one per device-second) but wide: one prepared
        # INSERT each keeps this path free of COPY, so it works on every backend.
        stored = 0
        with conn.cursor() as cur:
            for row in rows:
                cur.execute(_ACCEL_SQL, row)
                stored += max(cur.rowcount, 0)
        return stored

    @staticmethod
    def _write_dead_letters(conn: psycopg.Connection, batch: Batch) -> None:
        if not batch.dead_letters:
            return
        dl = batch.dead_letters
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason)"
            " SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::bytea[], %s::text[])",
            (
                [datetime.fromtimestamp(d.received_ms / 1000, UTC) for d in dl],
                [d.topic for d in dl], [d.payload for d in dl], [d.reason for d in dl],
            ),
        )

    def _drop_broken_connection(self) -> None:
        conn, self._conn = self._conn, None
        close_quietly(conn)

    def close(self) -> None:
        """Close the connection (no batch is in flight: writes are synchronous)."""
        self._drop_broken_connection()


def close_quietly(conn: psycopg.Connection | None) -> None:
    """Close a connection that may already be broken; errors of a dead socket are moot."""
    if conn is not None and not conn.closed:
        try:
            conn.close()
        except psycopg.Error:  # pragma: no cover - closing a broken socket
            pass


def _optimistic(conn: psycopg.Connection, plain: Callable[[], int],
                dedup: Callable[[], int]) -> int:
    """Rows stored by ``plain`` run in a savepoint, or, if the unique index reports a row
    already stored, by ``dedup`` after rolling the savepoint back (see the module docstring)."""
    try:
        with conn.transaction():
            return plain()
    except psycopg.errors.UniqueViolation:
        return dedup()


def _execute(cur: psycopg.Cursor[Any], sql: str, params: Any) -> int:
    cur.execute(sql, params)
    return max(cur.rowcount, 0)


def _accel_row(reading: Reading, seq: int, region: str, received_us: int) -> tuple[Any, ...]:
    device_id, ts, rate, x, y, z = _ACCEL_GET(reading)
    return (device_id, (ts - _PG_EPOCH_MS) * 1000, seq, rate, x, y, z, region, received_us,
            len(x))
