"""SOS latency under load: from the device's publish to the stored event handed to the alert stage.

A publisher process sends gateway batches of location fixes at a steady rate, and every 0.5 s one
SOS from a device of its own, stamping each SOS with its wall-clock publish time. The ingest
service (detection on, as in production) runs in this process with an event sink that notes when
each SOS event reaches it. Latency = event handed on - SOS published, on the same machine clock.
The baseline in the same run is the broker round trip: the time a bare subscriber takes to see the
same SOS messages, which no pipeline can beat.

Usage: python -m benchmarks.alarm_latency [--seconds N] [--rates 0,20000,50000]
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
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from detectors.events import Event
from eldercare.config import load_config
from ingest.service import IngestService
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
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--rates", default="0,20000,50000", help="background readings/s")
    parser.add_argument("--writers", default="2",
                        help="ingest.writers values to compare, e.g. 1,2 (each runs every rate)")
    args = parser.parse_args()
    from tests.services import Mosquitto, Postgres

    tmp = Path(tempfile.mkdtemp(prefix="eldercare-latency-"))
    broker = Mosquitto(tmp / "mosquitto")
    broker.start()
    pg = Postgres(tmp)
    rows = []
    try:
        base = _broker_baseline(broker.url, "b" + uuid.uuid4().hex[:8], args.seconds)
        rows.append(("broker only (baseline), no load", 0, len(base), len(base), base))
        cases = [(int(w), int(r)) for r in args.rates.split(",") for w in args.writers.split(",")]
        for writers, rate in cases:
            region = "l" + uuid.uuid4().hex[:8]
            with pg.database() as db_url:
                cfg = load_config(path=None, env={}, overrides={
                    "mqtt.url": broker.url, "mqtt.client_id": "lat-" + region,
                    "database.url": db_url, "metrics.port": 0, "ingest.writers": writers})
                sink = _Sink()
                with IngestService(cfg, event_sink=sink):
                    res = _publish(broker.url, region, rate, args.seconds)
                    deadline = time.time() + 30
                    while len(sink.seen) < len(res["sent"]) and time.time() < deadline:
                        time.sleep(0.05)
                sent = res["sent"]
                lat = [1000 * (sink.seen[ts] - t) for ts, t in sent.items() if ts in sink.seen]
                name = (f"full service ({writers} writer{'s' if writers > 1 else ''}), "
                        f"{rate:,} readings/s background")
                rows.append((name, rate, len(sent), len(lat), lat))
    finally:
        broker.stop()
        pg.close()
    print("\n| case | SOS sent | SOS events | p50 ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, _rate, n_sent, n_got, lat in rows:
        lat = sorted(lat)
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")
        print(f"| {name} | {n_sent} | {n_got} | {statistics.median(lat):.1f} | {p95:.1f} |"
              f" {max(lat):.1f} |")


if __name__ == "__main__":
    main()
