"""Migrations and the PostgreSQL store against a real PostgreSQL."""

from __future__ import annotations

import dataclasses
import json

import psycopg
import pytest

from eldercare.schema import migrate
from foundation import migrations
from foundation.errors import MigrationError, StorageError
from ingest.batch import Batch
from ingest.storage import PostgresStore
from schemas import MessageDecoder
from tests.conftest import count, now_ms
from tests.test_decode import VALID


def _batch(now: int, *, seq0s: tuple[int, ...] = (0,)) -> Batch:
    """One reading of every type per entry of ``seq0s`` (their seq numbered from it), one dead letter."""
    dec = MessageDecoder()
    batch = Batch()
    for seq0 in seq0s:
        for i, (kind, (fields, _)) in enumerate(sorted(VALID.items())):
            payload = json.dumps({"type": kind, "ts": now, "seq": seq0 + i, **fields}).encode()
            out = dec.decode("eldercare/v1/371002/dev/BR-7", payload, now_ms=now)
            batch.add_readings(out.readings, region="371002", received_ms=now)
    batch.add_dead_letter("eldercare/v1/371002/dev/BR-7", b"\x00\xffraw", "why\x00", now)
    return batch


def test_migrations_are_idempotent_and_detect_edits(db_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        first = migrate(conn, timescale="off")
        again = migrate(conn, timescale="off")
        assert first.applied == ["0001_readings", "0002_registry", "0003_events",
                                 "0004_alerts", "0005_alert_folding", "0006_alert_routing",
                                 "0007_console", "0008_console_login_unlock",
                                 "0009_device_alarm", "0010_radio", "0011_registry_database",
                                 "0012_console_clerk", "0013_registry_search",
                                 "0014_registry_changes"]
        assert again.applied == []
        real_load = migrations.load_migrations
        monkeypatch.setattr(migrations, "load_migrations", lambda sources: [
            dataclasses.replace(m, sql=m.sql + "\n-- edited") for m in real_load(sources)])
        with pytest.raises(MigrationError, match="changed after it was applied"):
            migrate(conn, timescale="off")


def test_timescale_on_without_extension_is_a_clear_error(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
        if available:
            pytest.skip("this PostgreSQL has timescaledb; the error path cannot be shown here")
        with pytest.raises(MigrationError, match="timescaledb extension is not available"):
            migrate(conn, timescale="on")


@pytest.mark.parametrize("method", ["copy", "unnest"])
def test_store_writes_every_type_and_drops_duplicates(db_url: str, method: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
    now = now_ms()
    store = PostgresStore(db_url, method=method)  # type: ignore[arg-type]
    try:
        first = store.write(_batch(now))
        second = store.write(_batch(now))  # a redelivery: same device, type, ts, seq
        # Old and new rows mixed, and a duplicate inside the batch itself: only new rows land,
        # each once (the optimistic plain insert fails and the deduplicating one takes over).
        third = store.write(_batch(now, seq0s=(0, 100, 100)))
    finally:
        store.close()
    n = len(VALID)  # one reading of every type
    assert (first.readings, first.stored, first.dead_letters) == (n, n, 1)
    assert (second.readings, second.stored) == (n, 0)
    assert (third.readings, third.stored) == (3 * n, n)
    assert count(db_url, "SELECT count(*) FROM readings") == 2 * (n - 1)  # accel apart
    assert count(db_url, "SELECT count(*) FROM accel_chunks") == 2
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT payload, reason FROM dead_letters LIMIT 1").fetchone()
        loc = conn.execute(
            "SELECT lat, lon, source, region, seq, extract(epoch from ts) * 1000"
            " FROM readings WHERE type = 'location' ORDER BY seq LIMIT 1").fetchone()
        accel = conn.execute("SELECT n_samples, z FROM accel_chunks LIMIT 1").fetchone()
        radio = conn.execute("SELECT cells, wifi FROM readings WHERE type = 'radio'"
                             " ORDER BY seq LIMIT 1").fetchone()
        no_radio = conn.execute("SELECT count(*) FROM readings WHERE type <> 'radio'"
                                " AND (cells IS NOT NULL OR wifi IS NOT NULL)").fetchone()
    assert row == (b"\x00\xffraw", "why\\x00")
    # The scan's towers and access points as JSON, as they came (a signal left out stays out).
    assert radio == (VALID["radio"][0]["cells"], VALID["radio"][0]["wifi"])
    assert no_radio == (0,)
    assert loc is not None and loc[:5] == (37.5, 122.1, "gps", "371002", sorted(VALID).index("location")) and int(loc[5]) == now
    assert accel is not None and accel[0] == 2 and accel[1] == pytest.approx([1.0, 0.98])


def test_store_failure_is_a_storage_error_and_reconnects(db_url: str) -> None:
    store = PostgresStore(db_url)
    with pytest.raises(StorageError, match="not stored"):
        store.write(_batch(now_ms()))  # no tables yet: nothing committed
    with psycopg.connect(db_url, autocommit=True) as conn:
        migrate(conn, timescale="off")
    assert store.write(_batch(now_ms())).stored == len(VALID)
    store.close()
