"""``eldercare demo``: the whole ingest path on embedded defaults, nothing installed by hand.

Starts an embedded broker and PostgreSQL, the ingest service with its detectors, and the small
demo fleet; prints the stored counts per reading type, the detection events per type and the dead
letters every few seconds until interrupted (or for ``--duration`` seconds). Exit status 0 means
readings flowed end to end.
"""

from __future__ import annotations

import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import TextIO

import psycopg
from psycopg.conninfo import make_conninfo

from device_sim.demo_fleet import run_fleet
from eldercare.config import load_config
from eldercare.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from eldercare.loop_thread import LoopThread
from ingest.service import IngestService


def _report(url: str, out: TextIO, elapsed: float) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        per_type = conn.execute(
            "SELECT type, count(*) FROM readings GROUP BY type ORDER BY type").fetchall()
        accel = conn.execute("SELECT count(*) FROM accel_chunks").fetchone()
        dead = conn.execute(
            "SELECT count(*), (SELECT reason FROM dead_letters ORDER BY id DESC LIMIT 1)"
            " FROM dead_letters").fetchone()
        events = conn.execute(
            "SELECT type, count(*) FROM detection_events GROUP BY type ORDER BY type").fetchall()
    assert accel is not None and dead is not None
    counts = dict(per_type)
    counts["accel"] = accel[0]
    total = sum(counts.values())
    cells = "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"[{elapsed:5.1f}s] stored {total}: {cells} | dead letters {dead[0]}", file=out)
    if events:
        print("         detected: " + "  ".join(f"{k}={v}" for k, v in events), file=out)
    if dead[1]:
        print(f"         latest dead letter: {dead[1][:110]}", file=out)
    out.flush()
    return total, int(dead[0])


def run_demo(*, duration_s: float | None, out: TextIO, metrics_port: int | None = None) -> int:
    """Run the demo; returns a process exit status."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="eldercare-demo-") as tmp, \
            EmbeddedBroker() as broker, EmbeddedPostgres(Path(tmp) / "pgdata") as pg:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE eldercare")
        db_url = make_conninfo(pg.url, dbname="eldercare")
        port = metrics_port if metrics_port is not None else free_port()
        config = load_config(path=None, env={}, overrides={
            "mqtt.url": broker.url, "mqtt.client_id": "eldercare-demo",
            "database.url": db_url, "metrics.port": port,
        })
        with IngestService(config) as service:
            print(f"eldercare demo: broker {broker.url} (MQTT {service.source.negotiated}), "
                  f"metrics http://127.0.0.1:{service.metrics_port}/metrics; Ctrl-C stops",
                  file=out)
            fleet = LoopThread("eldercare-demo-fleet", lambda stop: run_fleet(
                host="127.0.0.1", port=broker.port, stop=stop))
            fleet.start()
            started = time.monotonic()
            total = dead = 0
            try:
                while not stop.wait(2.0):
                    elapsed = time.monotonic() - started
                    total, dead = _report(db_url, out, elapsed)
                    if duration_s is not None and elapsed >= duration_s:
                        break
            finally:
                fleet.stop()
        total, dead = _report(db_url, out, time.monotonic() - started)
        print(f"eldercare demo: {fleet.result or 0} messages published, {total} readings stored, "
              f"{dead} dead letters", file=out)
    return 0 if total > 0 else 1
