"""``eldercare demo``: the whole path on embedded defaults, nothing installed by hand.

Starts an embedded broker and PostgreSQL, the ingest service with its detectors, and the
simulator's demo scenario (``device_sim/scenarios/demo.yaml``, shipped in the package) starting
now: within the first minute a watch wearer presses SOS, a fall sensor wearer falls and a
bracelet wearer walks out of the home zone, and each detection
is printed as it is stored. Alerts go, signed, to a stand-in 12349 dispatch platform (a local
HTTP server, ``alerts/webhook_receiver.py``) that prints what it receives; the duty console and
the alerts API are served with a demo login and token printed at start. A few deliberately invalid readings show the
dead-letter store at work. Counts per reading type are printed every few seconds until
interrupted (or for ``--duration`` seconds). Exit status 0 means readings flowed end to end.
"""

from __future__ import annotations

import heapq
import json
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TextIO

import msgspec
import psycopg
from psycopg.conninfo import make_conninfo

from alerts.auth import new_token
from alerts.channels.webhook import SignatureError, verify_signature
from alerts.webhook_receiver import Receiver, Recorded
from console.accounts import AccountStore
from device_sim.publisher import PublishStats, publish
from device_sim.scenario import Scenario, parse_scenario
from device_sim.stream import build
from device_sim.types import Publication
from eldercare.config import load_config
from eldercare.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from ingest.service import IngestService
from schemas import device_topic


def demo_scenario(start: datetime) -> Scenario:
    """The packaged demo scenario, starting at ``start``."""
    data = resources.files("device_sim").joinpath("scenarios/demo.yaml").read_bytes()
    return msgspec.structs.replace(parse_scenario(data, fmt="yaml"), start=start)


def _invalid(scenario: Scenario) -> Iterator[Publication]:
    """A few readings that break the wire contract, early on, so dead letters show up."""
    t0 = scenario.start_ms
    topic = device_topic(scenario.region, "BR-DEMO-BAD")
    yield Publication(t0 + 3_000, topic, [{"type": "location", "ts": t0, "lat": 137.5,
                                           "lon": 122.1}], False)
    yield Publication(t0 + 6_000, topic, [{"type": "sos", "ts": t0, "device_id": "BR-OTHER"}],
                      False)


def _report(url: str, out: TextIO, elapsed: float, seen: set[tuple[str, str, int]]) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        per_type = conn.execute(
            "SELECT type, count(*) FROM readings GROUP BY type ORDER BY type").fetchall()
        accel = conn.execute("SELECT count(*) FROM accel_chunks").fetchone()
        dead = conn.execute(
            "SELECT count(*), (SELECT reason FROM dead_letters ORDER BY id DESC LIMIT 1)"
            " FROM dead_letters").fetchone()
        events = conn.execute(
            "SELECT device_id, type, (extract(epoch FROM ts) * 1000)::bigint, severity"
            " FROM detection_events ORDER BY ts").fetchall()
    assert accel is not None and dead is not None
    counts = dict(per_type)
    counts["accel"] = accel[0]
    total = sum(counts.values())
    for device_id, kind, ts, severity in events:
        if (device_id, kind, ts) not in seen:
            seen.add((device_id, kind, ts))
            when = datetime.fromtimestamp(ts / 1000, UTC).astimezone().strftime("%H:%M:%S")
            print(f"[{elapsed:5.1f}s] DETECTED {kind} ({severity}) on {device_id} at {when}",
                  file=out)
    cells = "  ".join(f"{k}={v}" for k, v in sorted(counts.items()))
    print(f"[{elapsed:5.1f}s] stored {total}: {cells} | dead letters {dead[0]}", file=out)
    if events:
        by_type: dict[str, int] = {}
        for _, kind, _, _ in events:
            by_type[kind] = by_type.get(kind, 0) + 1
        print("         detected: " + "  ".join(f"{k}={v}" for k, v in sorted(by_type.items())),
              file=out)
    if dead[1]:
        print(f"         latest dead letter: {dead[1][:110]}", file=out)
    out.flush()
    return total, int(dead[0])


@contextmanager
def _platform(secret: str, began: list[float], out: TextIO) -> Iterator[Receiver]:
    """The stand-in 12349 platform: checks each webhook's signature and prints the alert."""
    platform = Receiver()

    def show(rec: Recorded) -> None:
        h = rec.headers
        try:
            verify_signature(secret=secret.encode(), timestamp=h.get("X-Eldercare-Timestamp", ""),
                             signature=h.get("X-Eldercare-Signature", ""), body=rec.body,
                             now_s=time.time())
            check = "signature ok"
        except SignatureError as exc:
            check = f"BAD SIGNATURE ({exc.reason})"
        doc = json.loads(rec.body)
        a = doc["alert"]
        step = doc.get("escalation", {}).get("action", "")
        print(f"[{time.monotonic() - began[0]:5.1f}s] DISPATCH {doc['event']} alert #{a['id']}"
              f" {a['type']} priority {a['priority']} {a['subject']} {step} ({check})",
              file=out, flush=True)

    platform.on_request = show
    try:
        yield platform
    finally:
        platform.close()


def run_demo(*, duration_s: float | None, out: TextIO, metrics_port: int | None = None,
             speed: float = 1.0) -> int:
    """Run the demo; returns a process exit status. ``speed`` > 1 runs the scenario faster than
    real time (readings then carry future times: keep ``speed * duration`` within the
    service's ``max_future_s`` of 300 s)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    scenario = demo_scenario(datetime.now(UTC))
    sim = build(scenario)
    secret = secrets.token_hex(16)
    began = [time.monotonic()]  # the fleet's start, once known: one time base for all lines
    with tempfile.TemporaryDirectory(prefix="eldercare-demo-") as tmp, \
            EmbeddedBroker() as broker, EmbeddedPostgres(Path(tmp) / "pgdata") as pg, \
            _platform(secret, began, out) as platform:
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE eldercare")
        db_url = make_conninfo(pg.url, dbname="eldercare")
        registry = Path(tmp) / "registry.json"
        registry.write_bytes(msgspec.json.encode(sim.registry))
        port = metrics_port if metrics_port is not None else free_port()
        token, digest = new_token()
        tokens = Path(tmp) / "tokens.yaml"
        tokens.write_text(f"- {{name: demo-officer, token_sha256: {digest}, role: officer,"
                          " regions: ['*']}\n")
        config = load_config(path=None, env={}, overrides={
            "mqtt.url": broker.url, "mqtt.client_id": "eldercare-demo",
            "database.url": db_url, "metrics.port": port, "registry": str(registry),
            "detectors.timezone": scenario.timezone, "api.port": free_port(),
            "api.tokens_file": str(tokens), "alerts.webhook.url": platform.url,
            "alerts.webhook.secret": secret,
            "console.secure_cookies": False,  # plain HTTP on localhost
            "spool.dir": str(Path(tmp) / "spool"),  # the demo's database lives in tmp too
        })
        with IngestService(config) as service:
            print(f"eldercare demo: broker {broker.url} (MQTT {service.source.negotiated}), "
                  f"metrics http://127.0.0.1:{service.metrics_port}/metrics; Ctrl-C stops",
                  file=out)
            password = secrets.token_urlsafe(9)
            with AccountStore(db_url) as accounts:
                accounts.add_user("duty", password, role="officer", regions=["*"],
                                  display_name="值班员")
            print(f"eldercare demo: duty console http://127.0.0.1:{config.api.port}/"
                  f"  (log in as duty / {password})", file=out)
            print(f"eldercare demo: alerts API http://127.0.0.1:{config.api.port}/api/v1"
                  f" (docs at /api/v1/docs); demo token: {token}\n"
                  f"    curl -H 'Authorization: Bearer {token}'"
                  f" http://127.0.0.1:{config.api.port}/api/v1/alerts", file=out)
            print(f"eldercare demo: scenario {scenario.name!r}, {len(sim.devices)} devices, "
                  f"{len(sim.labels)} scripted incidents; SOS, a fall and a wandering wearer "
                  "within the first minute", file=out)
            pubs = heapq.merge(sim.publications(), _invalid(scenario))
            published: list[PublishStats] = []
            fleet_stop = threading.Event()
            fleet = threading.Thread(
                target=lambda: published.append(publish(pubs, url=broker.url, speed=speed,
                                                         stop=fleet_stop)),
                name="eldercare-demo-fleet", daemon=True)
            fleet.start()
            started = began[0] = time.monotonic()
            seen: set[tuple[str, str, int]] = set()
            total = dead = 0
            try:
                while not stop.wait(2.0) and fleet.is_alive():
                    elapsed = time.monotonic() - started
                    total, dead = _report(db_url, out, elapsed, seen)
                    if duration_s is not None and elapsed >= duration_s:
                        break
            finally:
                fleet_stop.set()
                fleet.join(30)
        # After the service's clean stop, which commits what it had received.
        total, dead = _report(db_url, out, time.monotonic() - started, seen)
        sent = published[0].messages if published else 0
        print(f"eldercare demo: {sent} messages published, {total} readings stored, "
              f"{dead} dead letters", file=out)
    return 0 if total > 0 else 1
