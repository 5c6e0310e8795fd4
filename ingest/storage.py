"""Durable storage of batches in PostgreSQL/TimescaleDB with psycopg 3.

One batch is one transaction: readings, accelerometer chunks and dead letters commit together, and
only after the commit does the pipeline acknowledge the MQTT messages. Duplicates (QoS 1
redelivery) are dropped against the unique dedup key ``(device_id, type, ts, seq)``.

Deduplication is optimistic. Duplicates are rare (a redelivery after a crash or a lost PUBACK), and
``ON CONFLICT DO NOTHING`` makes PostgreSQL insert every row speculatively, which cost about 30% of
its per-row time in ``benchmarks/ingest.py``. So each insert first runs plain inside a savepoint;
the unique index still checks every row, and only if it reports a violation is the savepoint
rolled back and the same rows inserted again with ``ON CONFLICT DO NOTHING``. Either way the
outcome is the same rows.

Two write methods, chosen by configuration and compared in ``benchmarks/ingest.py``:

``copy`` (default)
    Binary ``COPY`` into a temporary staging table, then one ``INSERT ... SELECT``.
``unnest``
    One ``INSERT ... SELECT FROM unnest(arrays)`` per reading type; needs no COPY support
    (PGlite, some proxies).

Rows are built with ``operator.attrgetter`` over exactly the fields of each reading type, so no
per-column Python loop runs per reading. psycopg errors never leave this module: they become
:class:`~eldercare.errors.StorageError`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Final, Literal, Protocol

import psycopg

from eldercare.errors import StorageError
from ingest.batch import Batch
from schemas import READING_TYPES, TYPE_NAMES, Accel, Reading

log = logging.getLogger(__name__)

WriteMethod = Literal["copy", "unnest"]

#: PostgreSQL type of every measurement column, as staged (floats staged as float8, stored real).
_COLUMN_TYPES: Final = {
    "lat": "float8", "lon": "float8", "accuracy_m": "float8", "speed_mps": "float8",
    "battery_pct": "float8", "source": "text", "heart_rate_bpm": "float8", "spo2_pct": "float8",
    "body_temp_c": "float8", "systolic_mmhg": "float8", "diastolic_mmhg": "float8",
    "steps": "int8", "confidence": "float8", "rssi_dbm": "float8", "worn": "bool",
    "sensor": "text", "active": "bool",
}
_HEAD: Final = ("device_id", "ts", "seq")
_HEAD_TYPES: Final = ("text", "int8", "int8")
_TAIL: Final = ("type", "region", "received_ms")
_TAIL_TYPES: Final = ("text", "text", "int8")
_MS: Final = "timestamptz 'epoch' + {} * interval '1 millisecond'"


@dataclass(frozen=True, slots=True)
class _TypeLayout:
    """How one reading type maps onto columns: the getter and the staged column names/types."""

    name: str
    getter: attrgetter[Any]
    pg_types: tuple[str, ...]
    copy_sql: str    # COPY of this type's columns into the staging table
    unnest_sql: str  # INSERT ... SELECT FROM unnest(one array per column)


def _stored(columns: tuple[str, ...]) -> tuple[str, str]:
    """Stored column names and the SELECT expressions that produce them from staged columns.

    The one place that says how a staged row becomes a stored row: millisecond epochs become
    timestamptz, an absent ``seq`` becomes -1 (so the dedup key has no NULL), ``received_ms`` is
    stored as ``received_at``.
    """
    names = ", ".join("received_at" if c == "received_ms" else c for c in columns)
    exprs = ", ".join(
        _MS.format(c) if c in ("ts", "received_ms") else "coalesce(seq, -1)" if c == "seq" else c
        for c in columns
    )
    return names, exprs


def _layouts() -> dict[type, _TypeLayout]:
    out: dict[type, _TypeLayout] = {}
    for cls in READING_TYPES:
        if cls is Accel:
            continue
        fields = tuple(f for f in cls.__struct_fields__ if f not in _HEAD)
        columns = (*_HEAD, *fields, *_TAIL)
        pg_types = (*_HEAD_TYPES, *(_COLUMN_TYPES[f] for f in fields), *_TAIL_TYPES)
        names, exprs = _stored(columns)
        args = ", ".join(f"%s::{t}[]" for t in pg_types)
        out[cls] = _TypeLayout(
            name=TYPE_NAMES[cls],
            getter=attrgetter(*_HEAD, *fields),
            pg_types=pg_types,
            copy_sql=f"COPY readings_stage ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)",
            unnest_sql=(f"INSERT INTO readings ({names}) SELECT {exprs} FROM unnest({args})"
                        f" AS u({', '.join(columns)})"),
        )
    return out


_LAYOUTS: Final = _layouts()
_STAGE: Final = (("device_id", "text"), ("ts", "int8"), ("seq", "int8"),
                 *_COLUMN_TYPES.items(), *zip(_TAIL, _TAIL_TYPES, strict=True))
_STAGE_COLUMNS: Final = ", ".join(f"{c} {t}" for c, t in _STAGE)
_STAGE_INSERT_SQL: Final = "INSERT INTO readings ({}) SELECT {} FROM readings_stage".format(
    *_stored(tuple(c for c, _ in _STAGE)))
_DEDUP: Final = " ON CONFLICT DO NOTHING"
_ACCEL_GET: Final = attrgetter("device_id", "ts", "seq", "rate_hz", "x", "y", "z")
_ACCEL_SQL: Final = (
    "INSERT INTO accel_chunks (device_id, ts, seq, rate_hz, x, y, z, region, received_at,"
    f" n_samples) VALUES (%s, {_MS.format('%s')}, %s, %s, %s::float4[], %s::float4[],"
    f" %s::float4[], %s, {_MS.format('%s')}, %s) ON CONFLICT DO NOTHING"
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
                    f"CREATE TEMP TABLE IF NOT EXISTS readings_stage ({_STAGE_COLUMNS})"
                    " ON COMMIT DELETE ROWS"
                )
                self._conn.commit()
        return self._conn

    def write(self, batch: Batch) -> WriteResult:
        """Commit ``batch`` in one transaction. Raises StorageError, having committed nothing."""
        groups: dict[type, list[tuple[Any, ...]]] = defaultdict(list)
        accel: list[tuple[Any, ...]] = []
        rows = zip(batch.readings, batch.regions, batch.received_ms, strict=True)
        for reading, region, received in rows:
            layout = _LAYOUTS.get(type(reading))
            if layout is None:
                accel.append(_accel_row(reading, region, received))
            else:
                groups[type(reading)].append(
                    (*layout.getter(reading), layout.name, region, received)
                )
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
        if not groups:
            return 0
        with conn.cursor() as cur:
            for cls, rows in groups.items():
                layout = _LAYOUTS[cls]
                with cur.copy(layout.copy_sql) as copy:
                    copy.set_types(list(layout.pg_types))
                    for row in rows:
                        copy.write_row(row)
            return _insert_dedup(conn, cur, _STAGE_INSERT_SQL)

    def _unnest_readings(
        self, conn: psycopg.Connection, groups: dict[type, list[tuple[Any, ...]]]
    ) -> int:
        stored = 0
        with conn.cursor() as cur:
            for cls, rows in groups.items():
                stored += _insert_dedup(conn, cur, _LAYOUTS[cls].unnest_sql,
                                        [list(col) for col in zip(*rows, strict=True)])
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
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg.Error:  # pragma: no cover - closing a broken socket
                pass

    def close(self) -> None:
        """Close the connection (no batch is in flight: writes are synchronous)."""
        self._drop_broken_connection()


def _insert_dedup(
    conn: psycopg.Connection, cur: psycopg.Cursor[Any], sql: str, params: Any = None
) -> int:
    """Run ``sql`` (an INSERT) and return the rows inserted, skipping rows already stored.

    Plain first, in a savepoint; on a unique violation, again with ON CONFLICT DO NOTHING (see
    the module docstring for why).
    """
    try:
        with conn.transaction():
            cur.execute(sql, params)
    except psycopg.errors.UniqueViolation:
        cur.execute(sql + _DEDUP, params)
    return max(cur.rowcount, 0)


def _accel_row(reading: Reading, region: str, received_ms: int) -> tuple[Any, ...]:
    device_id, ts, seq, rate, x, y, z = _ACCEL_GET(reading)
    return (device_id, ts, -1 if seq is None else seq, rate, x, y, z, region, received_ms, len(x))
