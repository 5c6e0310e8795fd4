"""Ingest benchmark: full pipeline against the raw ceiling of a bare paho-mqtt subscriber.

Method (one run, one machine, local Mosquitto and PostgreSQL started here): for each case a
persistent session is created, the consumer goes away, N messages are published at QoS 1 and
queued by the broker, then the consumer starts and we time how long it takes to drain them. This
measures the consumer, not the load generator. Each consumer runs in its own process, so peak RSS
is its own. Cases:

  raw-single     bare paho subscriber (QoS 1, auto-ack), counts single-reading messages
  full-single    eldercare ingest (receive, validate, store, ack), single-reading messages
  raw-gateway    bare subscriber, gateway messages of 50 readings
  full-gateway   eldercare ingest, gateway messages of 50 readings (write method copy)
  full-1writer-* the same with one writer (one connection) instead of the default two: the
                 baseline of the concurrent-writers change, measured in the same run
  full-gateway-detect   the same with the detector engine on (as the service runs by default)
  full-gateway-unnest   the same with write method unnest (the measured reason copy is default)

Issue #2 defines the full pipeline as receive, validate, store, acknowledge: the ``full-*`` cases
run with detection off, and ``full-gateway-detect`` shows what detection adds.

Zero loss is checked by counting rows. Usage: python -m benchmarks.ingest [--messages N]
[--gateway-messages N] [--repeat N] (on a noisy host, --repeat 5 prints medians and ranges).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_sim.load import LoadParams, PayloadFactory

RECEIVE_MAXIMUM = 10_000


def _peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: that survives execve, so a spawned child would
    report its parent's peak (which holds the pre-built payloads)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _client(url: str, client_id: str, **kw: Any) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kw)
    return c


def _connect(c: mqtt.Client, url: str) -> None:
    host, port = url.removeprefix("mqtt://").split(":")
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    c.connect(host, int(port), 30, clean_start=False, properties=props)


def _create_session(url: str, client_id: str, topic: str) -> None:
    c = _client(url, client_id)
    done = threading.Event()
    c.on_subscribe = lambda *a, **k: done.set()
    _connect(c, url)
    c.loop_start()
    c.subscribe(topic, qos=1)
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def _preload(url: str, payloads: list[tuple[str, bytes]]) -> float:
    c = _client(url, "bench-pub-" + uuid.uuid4().hex[:6])
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    _connect(c, url)
    c.loop_start()
    t0 = time.perf_counter()
    infos = [c.publish(t, p, qos=1) for t, p in payloads]
    for info in infos:
        info.wait_for_publish(60)
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return elapsed


def _raw_consumer(url: str, client_id: str, expected: int, out: mp.Queue[dict[str, Any]]) -> None:
    got = 0
    done = threading.Event()

    def on_message(client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        nonlocal got
        got += 1
        if got >= expected:
            done.set()

    c = _client(url, client_id)
    c.on_message = on_message
    t0 = time.perf_counter()
    _connect(c, url)
    c.loop_start()
    ok = done.wait(600)
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    out.put({"seconds": elapsed, "received": got, "ok": ok,
             "rss_mb": _peak_rss_mb()})


def _full_consumer(url: str, client_id: str, db_url: str, method: str, detect: bool,
                   writers: int, expected_readings: int, out: mp.Queue[dict[str, Any]]) -> None:
    from eldercare.app import Application, prepare_database
    from eldercare.config import load_config

    cfg = load_config(path=None, env={}, overrides={
        "mqtt.url": url, "mqtt.client_id": client_id, "mqtt.protocol": "5",
        "database.url": db_url, "database.write_method": method, "metrics.port": 0,
        "ingest.buffer_messages": RECEIVE_MAXIMUM, "detectors.enabled": detect,
        "ingest.writers": writers,
        # Capacity of the database path: no deferral to the spool (which would hide it).
        "spool.dir": tempfile.mkdtemp(prefix="eldercare-bench-spool-"),
        "spool.defer_after_ms": 0,
    })
    prepare_database(cfg)
    svc = Application(cfg)
    metrics = svc.ingest.metrics
    t0 = time.perf_counter()
    svc.start()
    deadline = time.monotonic() + 600
    while metrics.value("eldercare_readings_stored_total") < expected_readings:
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    svc.stop()
    latency = metrics.registry.get_sample_value("eldercare_batch_latency_seconds_sum") or 0.0
    batches = metrics.value("eldercare_batches_total")
    out.put({"seconds": elapsed, "stored": metrics.value("eldercare_readings_stored_total"),
             "rss_mb": _peak_rss_mb(),
             "batches": batches, "mean_batch_latency_ms": 1000 * latency / max(batches, 1)})


def _run(target: Any, *args: Any) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q: mp.Queue[dict[str, Any]] = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get(timeout=900)
    p.join(60)
    return result


def _payloads(region: str, kind: str, n_messages: int, now: int) -> list[tuple[str, bytes]]:
    """The load generator's messages (``eldercare sim load``): 5,000 devices, location fixes with
    a heartbeat every tenth round, on device topics (single) or in gateway batches of 50."""
    factory = PayloadFactory(LoadParams(devices=5000, rate=None, region=region,
                                        gateway_batch=1 if kind == "single" else 50))
    return [factory.message(i, now) for i in range(n_messages)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=60_000, help="single-reading messages")
    parser.add_argument("--gateway-messages", type=int, default=4_000, help="50-reading messages")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run every case this many times and print the median (noisy hosts)")
    args = parser.parse_args()
    from tests.services import Mosquitto, Postgres

    tmp = Path(tempfile.mkdtemp(prefix="eldercare-bench-"))
    broker = Mosquitto(tmp / "mosquitto")
    broker.start()
    pg = Postgres(tmp)
    now = time.time_ns() // 1_000_000
    runs: list[list[tuple[str, int, int, dict[str, Any], float, str | None]]] = []
    try:
        for _ in range(args.repeat):
            runs.append(_cases(broker, pg, args, now))
            _print(runs[-1])  # as soon as it is measured: a later failure must not lose it
    finally:
        broker.stop()
        pg.close()
    if len(runs) > 1:
        _summary(runs)


def _cases(broker: Any, pg: Any, args: argparse.Namespace, now: int
           ) -> list[tuple[str, int, int, dict[str, Any], float, str | None]]:
    rows: list[tuple[str, int, int, dict[str, Any], float, str | None]] = []
    for kind, n_msgs, per in (("single", args.messages, 1),
                              ("gateway", args.gateway_messages, 50)):
        consumers = ("raw", "full", "full-1writer", "full-detect", "full-unnest") \
            if kind == "gateway" else ("raw", "full", "full-1writer")
        for consumer in consumers:
            region = "b" + uuid.uuid4().hex[:8]
            client_id = f"bench-{consumer}-{region}"
            topic = f"eldercare/v1/{region}/#" if consumer == "raw" else "eldercare/v1/+/+/+"
            if consumer == "raw":
                _create_session(broker.url, client_id, topic)
                pub_s = _preload(broker.url, _payloads(region, kind, n_msgs, now))
                r = _run(_raw_consumer, broker.url, client_id, n_msgs)
                assert r["ok"], f"raw consumer lost messages: {r}"
                rows.append((f"raw-{kind}", n_msgs, n_msgs * per, r, pub_s, None))
                continue
            with pg.database() as db_url:
                method = "unnest" if consumer == "full-unnest" else "copy"
                detect = consumer == "full-detect"
                writers = 1 if consumer == "full-1writer" else 2
                # First run creates the session and subscriptions, then we go away.
                _run(_full_consumer, broker.url, client_id, db_url, method, detect, writers, 0)
                pub_s = _preload(broker.url, _payloads(region, kind, n_msgs, now))
                r = _run(_full_consumer, broker.url, client_id, db_url, method, detect, writers,
                         n_msgs * per)
                with psycopg.connect(db_url) as conn:
                    row = conn.execute("SELECT count(*) FROM readings").fetchone()
                stored = int(row[0]) if row else 0
                assert stored == n_msgs * per, f"loss: stored {stored} of {n_msgs * per}"
                rows.append((f"{consumer}-{kind}", n_msgs, stored, r, pub_s, method))
    return rows


def _summary(runs: list[list[tuple[str, int, int, dict[str, Any], float, str | None]]]) -> None:
    """Median and range of readings/s and of the ratio to the same run's raw ceiling."""
    print(f"\nover {len(runs)} runs:\n")
    print("| case | readings/s median | min-max | vs raw median |")
    print("|---|---:|---:|---:|")
    for i, (name, *_rest) in enumerate(runs[0]):
        kind = "single" if name.endswith("single") else "gateway"
        rates, ratios = [], []
        for rows in runs:
            _, n, readings, r, _, _ = rows[i]
            raw = next(rr for rr in rows if rr[0] == f"raw-{kind}")
            rates.append(readings / r["seconds"])
            ratios.append((n / r["seconds"]) / (raw[1] / raw[3]["seconds"]))
        print(f"| {name} | {statistics.median(rates):,.0f} | {min(rates):,.0f}-{max(rates):,.0f}"
              f" | {statistics.median(ratios):.0%} |")


def _print(rows: list[tuple[str, int, int, dict[str, Any], float, str | None]]) -> None:
    raw = {name.split("-", 1)[1]: n / r["seconds"] for name, n, _, r, _, _ in rows
           if name.startswith("raw-")}
    print()
    print("| case | messages | readings | seconds | messages/s | readings/s | vs raw | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, readings, r, _pub, _method in rows:
        kind = "single" if name.endswith("single") else "gateway"
        mps = n / r["seconds"]
        ratio = mps / raw[kind]
        print(f"| {name} | {n} | {readings} | {r['seconds']:.2f} | {mps:,.0f} |"
              f" {readings / r['seconds']:,.0f} | {ratio:.0%} | {r['rss_mb']:.0f} |")
    for name, _, _, r, _, _ in rows:
        if "mean_batch_latency_ms" in r:
            print(f"{name}: {r['batches']:.0f} batches, mean receipt-to-commit "
                  f"{r['mean_batch_latency_ms']:.0f} ms (queue drain: includes waiting in buffer)")


if __name__ == "__main__":
    main()
