"""The TimescaleDB path for real: migrations, policies, continuous aggregate, writes.

TimescaleDB is not in this machine's package registries; PGlite (PostgreSQL 17 in WASM) built with
TimescaleDB 2.23 is, as an npm package, and tests/pglite/server.mjs serves it over the PostgreSQL
wire protocol. It serves one client at a time and cannot COPY FROM STDIN, so this test closes each
connection before opening the next and writes with the ``unnest`` method (docs/schema.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from eldercare.schema import migrate
from foundation.ports import free_port
from ingest.batch import Batch
from ingest.migrations import RetentionPolicy
from ingest.storage import PostgresStore
from schemas import MessageDecoder
from tests.conftest import now_ms

PGLITE_DIR = Path(__file__).parent / "pglite"


@pytest.fixture(scope="module")
def timescale_url() -> Iterator[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the PGlite TimescaleDB server needs it")
    if not (PGLITE_DIR / "node_modules" / "@unni-craftsman" / "pglite").exists():
        pytest.skip("tests/pglite/node_modules is missing: run `npm ci` there (scripts/test does)")
    port = free_port()
    proc = subprocess.Popen([node, str(PGLITE_DIR / "server.mjs"), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ready = threading.Event()

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("READY"):
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(60):
            pytest.fail("PGlite TimescaleDB server did not print READY within 60 s")
        yield f"postgresql://postgres:postgres@127.0.0.1:{port}/postgres"
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _jobs(url: str) -> dict[str, dict[str, object]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT proc_name, hypertable_name, config FROM timescaledb_information.jobs"
            " WHERE proc_name IN ('policy_retention', 'policy_compression',"
            " 'policy_refresh_continuous_aggregate')").fetchall()
    return {f"{p}:{h}": c for p, h, c in rows}


def test_timescale_migrations_policies_aggregate_and_writes(timescale_url: str) -> None:
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        report = migrate(conn, timescale="on")
    assert report.timescale
    assert "timescale/0001_hypertables" in report.applied
    assert "timescale/0002_hourly_aggregate" in report.applied
    with psycopg.connect(timescale_url) as conn:
        hypertables = {r[0]: r[1] for r in conn.execute(
            "SELECT hypertable_name, compression_enabled"
            " FROM timescaledb_information.hypertables").fetchall()}
        cagg = conn.execute("SELECT view_name FROM timescaledb_information.continuous_aggregates"
                            ).fetchall()
    assert hypertables.get("readings") is True and hypertables.get("accel_chunks") is True
    assert cagg == [("device_hourly",)]
    jobs = _jobs(timescale_url)
    assert jobs["policy_retention:readings"]["drop_after"] == "180 days"
    assert jobs["policy_retention:accel_chunks"]["drop_after"] == "7 days"
    assert "policy_compression:readings" in jobs

    # A restart with other retention settings replaces the policies, and applies no migration.
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        again = migrate(conn, timescale="auto",
                        retention=RetentionPolicy(readings_days=30, accel_days=0))
    assert again.applied == [] and again.timescale
    jobs = _jobs(timescale_url)
    assert jobs["policy_retention:readings"]["drop_after"] == "30 days"
    assert "policy_retention:accel_chunks" not in jobs

    now = now_ms()
    batch = Batch()
    out = MessageDecoder().decode("eldercare/v1/371002/gw/GW-1", json.dumps([
        {"device_id": "BR-1", "type": "location", "ts": now - 1000, "lat": 37.5, "lon": 122.1},
        {"device_id": "BR-1", "type": "location", "ts": now, "lat": 37.6, "lon": 122.2},
        {"device_id": "BR-1", "type": "accel", "ts": now, "rate_hz": 20, "x": [0.0], "y": [0.0],
         "z": [1.0]},
    ]).encode(), now_ms=now)
    batch.add_readings(out.readings, region="371002", received_ms=now)
    store = PostgresStore(timescale_url, method="unnest")
    try:
        assert store.write(batch).stored == 3
        assert store.write(batch).stored == 0  # dedup works on the hypertables too
    finally:
        store.close()
    with psycopg.connect(timescale_url, autocommit=True) as conn:
        conn.execute("CALL refresh_continuous_aggregate('device_hourly', NULL, NULL)")
        row = conn.execute("SELECT sum(readings), sum(fixes) FROM device_hourly"
                           " WHERE device_id = 'BR-1'").fetchone()
        last = conn.execute("SELECT lat, lon FROM device_last_position"
                            " WHERE device_id = 'BR-1'").fetchone()
    assert row == (2, 2)
    assert last == (37.6, 122.2)
