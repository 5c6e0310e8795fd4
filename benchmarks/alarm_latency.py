"""SOS latency under load: from the device's publish to the event, and to the dispatch webhook.

A publisher process sends gateway batches of location fixes at a steady rate, and every 0.5 s one
SOS from a device of its own, stamping each SOS with its wall-clock publish time. The ingest
service runs in this process as in production (detection and alerts on, the dispatch webhook
pointing at a local HTTP server standing in for the 12349 platform). Two latencies, on the same
machine clock:

- *event*: SOS published -> detection event stored and handed to the alert stage;
- *dispatch*: SOS published -> the signed alert POST received by the platform (issue #5's
  publish-to-dispatch latency: ingest, detection, alert, outbox, webhook).

The baseline in the same run is the broker round trip: the time a bare subscriber takes to see
the same SOS messages, which no pipeline can beat.

Usage: python -m benchmarks.alarm_latency [--seconds N] [--rates 0,5000,20000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from detectors.events import Event
from eldercare.app import Application
from eldercare.config import load_config
from schemas import device_topic, gateway_topic


def _publisher(url: str, region: str, rate: int, seconds: float, out: mp.Queue[Any]) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="lat-pub-" + region,
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, int(port))
    c.loop_start()
    sent: dict[int, float] = {}
    start = time.time()
    next_sos = start + 0.25
    n_msgs = 0
    seq = 0
    while (now := time.time()) < start + seconds:
        due = int(rate * (now - start) / 50)  # gateway messages of 50 readings
        while n_msgs < due:
            ts = int(time.time() * 1000)
            body = [{"device_id": f"BR-{(seq + j) % 5000:05d}", "type": "location", "ts": ts,
                     "seq": seq + j, "lat": 37.5, "lon": 122.1, "accuracy_m": 10}
                    for j in range(50)]
            seq += 50
            c.publish(gateway_topic(region, f"GW-{n_msgs % 50:02d}"), json.dumps(body), qos=1)
            n_msgs += 1
        if now >= next_sos:
            ts = int(now * 1000)
            sent[ts] = time.time()
            # A device of its own per press: presses of one device within 2 min join one event.
            c.publish(device_topic(region, f"SOS-{len(sent)}"),
                      json.dumps({"type": "sos", "ts": ts}), qos=1)
            next_sos += 0.5
        time.sleep(0.002)
    c.disconnect()
    c.loop_stop()
    out.put({"sent": sent, "readings": n_msgs * 50})


def _publish(url: str, region: str, rate: int, seconds: float) -> dict[str, Any]:
    """Run :func:`_publisher` in its own process and return what it reports."""
    ctx = mp.get_context("spawn")
    q: mp.Queue[Any] = ctx.Queue()
    p = ctx.Process(target=_publisher, args=(url, region, rate, seconds, q))
    p.start()
    result: dict[str, Any] = q.get(timeout=seconds + 120)
    p.join()
    return result


class _Sink:
    def __init__(self) -> None:
        self.seen: dict[int, float] = {}

    def handle(self, events: Sequence[Event]) -> None:
        now = time.time()
        for e in events:
            if e.type == "sos":
                self.seen[e.ts] = now


def _broker_baseline(url: str, region: str, seconds: float) -> list[float]:
    """Publish-to-receive of SOS messages through the broker alone (bare subscriber)."""
    host, port = url.removeprefix("mqtt://").split(":")
    got: dict[int, float] = {}
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="lat-sub-" + region,
                      protocol=mqtt.MQTTv5)
    done = threading.Event()
    sub.on_subscribe = lambda *a, **k: done.set()
    sub.on_message = lambda c, u, m: got.__setitem__(json.loads(m.payload)["ts"], time.time())
    sub.connect(host, int(port))
    sub.loop_start()
    sub.subscribe(device_topic(region, "+"), qos=1)
    done.wait(10)
    sent = _publish(url, region, 0, seconds)["sent"]
    time.sleep(0.5)
    sub.disconnect()
    sub.loop_stop()
    return [1000 * (got[ts] - t) for ts, t in sent.items() if ts in got]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rates", default="0,5000,20000", help="background readings/s")
    parser.add_argument("--writers", default="2",
                        help="ingest.writers values to compare, e.g. 1,2 (each runs every rate)")
    args = parser.parse_args()
    from alerts.webhook_receiver import Receiver
    from tests.services import Mosquitto, Postgres

    tmp = Path(tempfile.mkdtemp(prefix="eldercare-latency-"))
    broker = Mosquitto(tmp / "mosquitto")
    broker.start()
    pg = Postgres(tmp)
    platform = Receiver()
    rows: list[tuple[str, int, list[float]]] = []
    try:
        base = _broker_baseline(broker.url, "b" + uuid.uuid4().hex[:8], args.seconds)
        rows.append(("broker only (baseline), no load", len(base), base))
        cases = [(int(w), int(r)) for r in args.rates.split(",") for w in args.writers.split(",")]
        for writers, rate in cases:
            region = "l" + uuid.uuid4().hex[:8]
            platform.requests.clear()
            with pg.database() as db_url:
                cfg = load_config(path=None, env={}, overrides={
                    "mqtt.url": broker.url, "mqtt.client_id": "lat-" + region,
                    "database.url": db_url, "metrics.port": 0, "ingest.writers": writers,
                    "api.port": 0, "alerts.webhook.url": platform.url,
                    "alerts.webhook.secret": "bench",
                    "spool.dir": tempfile.mkdtemp(prefix="eldercare-bench-spool-")})
                sink = _Sink()
                with Application(cfg, event_sink=sink):
                    res = _publish(broker.url, region, rate, args.seconds)
                    deadline = time.time() + 30
                    while (len(sink.seen) < len(res["sent"])
                           or len(platform.requests) < len(res["sent"])) and \
                            time.time() < deadline:
                        time.sleep(0.05)
                sent = res["sent"]
                dispatched = _dispatched(platform)
                lat = [1000 * (sink.seen[ts] - t) for ts, t in sent.items() if ts in sink.seen]
                disp = [1000 * (dispatched[ts] - t) for ts, t in sent.items() if ts in dispatched]
                what = (f"{writers} writer{'s' if writers > 1 else ''}, "
                        f"{rate:,} readings/s background")
                rows.append((f"SOS event stored, {what}", len(sent), lat))
                rows.append((f"**SOS at dispatch webhook**, {what}", len(sent), disp))
    finally:
        platform.close()
        broker.stop()
        pg.close()
    print("\n| case | SOS sent | received | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, n_sent, lat in rows:
        lat = sorted(lat)
        if not lat:
            print(f"| {name} | {n_sent} | 0 | - | - | - | - |")
            continue
        print(f"| {name} | {n_sent} | {len(lat)} | {statistics.median(lat):.1f} |"
              f" {_pct(lat, 0.95):.1f} | {_pct(lat, 0.99):.1f} | {lat[-1]:.1f} |")


def _pct(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _dispatched(platform: Any) -> dict[int, float]:
    """SOS device time (ms) -> arrival at the platform, from the alert documents received."""
    out: dict[int, float] = {}
    for r in list(platform.requests):
        doc = json.loads(r.body)
        if doc.get("event") == "alert.opened" and doc["alert"]["type"] == "sos":
            ts = round(datetime.fromisoformat(doc["alert"]["first_ts"]).timestamp() * 1000)
            out.setdefault(ts, r.at)
    return out


if __name__ == "__main__":
    main()
