"""The ``[database]`` section: where PostgreSQL is, how ingest writes to it, how long data is kept.

The application shell reads it once; the database URL is handed to each component that owns
connections, and :func:`database_answers` is the readiness probe's one query.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import psycopg
from msgspec import Meta

NonNegative = Annotated[int, Meta(ge=0)]


class DatabaseConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """PostgreSQL/TimescaleDB connection, write method and data retention."""

    url: str = "postgresql://postgres@127.0.0.1:5432/eldercare"
    write_method: Literal["copy", "unnest"] = "copy"
    timescale: Literal["auto", "on", "off"] = "auto"
    retention_readings_days: NonNegative = 180
    retention_accel_days: NonNegative = 7
    retention_dead_letter_days: NonNegative = 90
    compress_after_days: NonNegative = 7


def database_answers(url: str, *, timeout_s: int) -> bool:
    """Whether the database at ``url`` answers ``SELECT 1`` within ``timeout_s`` (connecting
    included): the readiness check of ``/readyz``."""
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=timeout_s,
                             options=f"-c statement_timeout={timeout_s * 1000}") as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False
