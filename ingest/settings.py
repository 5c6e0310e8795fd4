"""Ingest's configuration sections: ``[ingest]`` (batching, buffering, validation limits),
``[spool]`` (the local spool, docs/spool.md) and ``[metrics]`` (the Prometheus endpoint)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from foundation.database import DatabaseConfig
from ingest.migrations import RetentionPolicy

Positive = Annotated[int, Meta(ge=1)]
NonNegative = Annotated[int, Meta(ge=0)]


class IngestConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Batching, buffering and validation limits."""

    max_batch_readings: Positive = 5000
    linger_ms: Annotated[int, Meta(ge=1, le=10_000)] = 50
    #: Batches committed concurrently, one database connection each (README, Performance).
    writers: Annotated[int, Meta(ge=1, le=16)] = 2
    buffer_messages: Annotated[int, Meta(ge=1, le=65535)] = 10_000
    buffer_bytes: Positive = 64 * 1024 * 1024
    max_payload_bytes: Positive = 256 * 1024
    max_future_s: NonNegative = 300


class MetricsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Prometheus endpoint; ``port = 0`` disables it."""

    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 9108


class SpoolConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The local spool (docs/spool.md): where messages and events wait, durably, while
    the database is down or ingest is overloaded, and the provisional alerts sent meanwhile."""

    enabled: bool = True
    #: A local directory of this process alone; "" is
    #: ``$XDG_STATE_HOME/eldercare/spool/<mqtt.client_id>`` (``~/.local/state/...``).
    dir: str = ""
    #: Bound over all segments; when reached, ingest falls back to leaving messages with the
    #: broker (slower, loses nothing).
    max_bytes: Positive = 1024 * 1024 * 1024
    segment_bytes: Positive = 8 * 1024 * 1024
    #: Overload: alarm-free messages that waited longer than this in the buffer are deferred
    #: to the spool and stored later; 0 never defers.
    defer_after_ms: NonNegative = 500
    #: While the database is down, how often a real commit is tried.
    probe_ms: Annotated[int, Meta(ge=10, le=60_000)] = 1000
    #: Send SOS, falls and home alarms the database cannot take to the dispatch webhook at
    #: once, as provisional alerts (docs/alerts.md).
    provisional_alerts: bool = True


def retention_of(database: DatabaseConfig) -> RetentionPolicy:
    """The retention policy of the ``[database]`` section."""
    return RetentionPolicy(
        readings_days=database.retention_readings_days, accel_days=database.retention_accel_days,
        dead_letter_days=database.retention_dead_letter_days,
        compress_after_days=database.compress_after_days)


def spool_directory(spool: SpoolConfig, *, client_id: str) -> Path:
    """The spool directory: ``[spool] dir``, or one per MQTT client id under the XDG state
    home (one spool per persistent session: two services must never share one)."""
    if spool.dir:
        return Path(spool.dir)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "eldercare" / "spool" / client_id
