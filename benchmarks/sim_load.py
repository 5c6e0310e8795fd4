"""Load-generator benchmark: ``eldercare sim load`` against the bare paho-mqtt ceiling.

Method (one run, one machine, a private Mosquitto started here as benchmarks/ingest.py does; no
subscriber, so the broker only acknowledges): each case publishes at QoS 1 for ``--seconds`` and
counts readings acknowledged per second of wall time, and the CPU seconds the publishing process
used (it has one thread, so CPU/wall is the share of one core). Cases, in one run:

  paho-loop-thread   bare paho with its network thread (loop_start), pre-encoded identical
                     payloads, 1000 in flight: the usual way to use paho, for reference
  paho-bare          bare paho driven from the calling thread like MqttLink, pre-encoded identical
                     payloads, 10000 in flight: the ceiling for the load generator
  load-max           device_sim.load.run_load unpaced: payload formatting, sent_ns property,
                     pacing checks
  load-50k           the same paced at 50,000 readings/s: must hold the rate, CPU share shown

All with gateway messages of ``--batch`` readings (default 50; the issue's figure) from
``--devices`` devices; ``vs ceiling`` is readings/s over paho-bare's.

Usage: python -m benchmarks.sim_load [--seconds S] [--batch B] [--devices N] [--repeat N]
"""

from __future__ import annotations

import argparse
import select
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from device_sim.load import LoadParams, PayloadFactory, run_load

Row = tuple[str, int, float, float]  # case, readings, seconds, cpu seconds


def _client(url: str, inflight: int) -> tuple[mqtt.Client, list[int]]:
    host, port = url.removeprefix("mqtt://").split(":")
    acked = [0]

    def on_publish(*_: Any) -> None:
        acked[0] += 1

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-" + uuid.uuid4().hex[:6],
                    protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(inflight)
    c.on_publish = on_publish
    c.connect(host, int(port))
    return c, acked


def _paho_thread(url: str, topic: str, payload: bytes, per: int, seconds: float) -> Row:
    c, acked = _client(url, 1000)
    c.loop_start()
    time.sleep(0.2)
    sent, cpu0, t0 = 0, time.process_time(), time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        for _ in range(100):
            if sent - acked[0] >= 1000:  # the same bounded window, or paho's queue grows
                time.sleep(0.0005)
                continue
            c.publish(topic, payload, qos=1)
            sent += 1
    while acked[0] < sent:
        time.sleep(0.001)
    row = ("paho-loop-thread", sent * per, time.monotonic() - t0, time.process_time() - cpu0)
    c.disconnect()
    c.loop_stop()
    return row


def _paho_bare(url: str, topic: str, payload: bytes, per: int, seconds: float) -> Row:
    c, acked = _client(url, 10_000)
    while not c.is_connected():
        c.loop(0.05)
    sock = c.socket()
    assert sock is not None
    sent, cpu0, t0 = 0, time.process_time(), time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        if sent - acked[0] >= 10_000:
            select.select([sock], [], [], 0.05)
            c.loop_read()
            continue
        c.publish(topic, payload, qos=1)
        sent += 1
        if sent % 64 == 0:
            if select.select([sock], [], [], 0)[0]:
                c.loop_read()
            c.loop_write()
    while acked[0] < sent:
        select.select([sock], [sock] if c.want_write() else [], [], 0.05)
        c.loop_read()
        c.loop_write()
    row = ("paho-bare", sent * per, time.monotonic() - t0, time.process_time() - cpu0)
    c.disconnect()
    return row


def _load(url: str, name: str, params: LoadParams) -> Row:
    s = run_load(params, url=url)
    assert s.refused == 0
    return (name, s.readings, s.seconds, s.cpu_seconds)


def _cases(url: str, args: argparse.Namespace) -> list[Row]:
    region = "b" + uuid.uuid4().hex[:8]
    base = LoadParams(devices=args.devices, rate=None, gateway_batch=args.batch,
                      duration_s=args.seconds, region=region)
    topic, payload = PayloadFactory(base).message(0, time.time_ns() // 1_000_000)
    paced = LoadParams(devices=args.devices, rate=50_000, gateway_batch=args.batch,
                       duration_s=args.seconds, region=region)
    return [
        _paho_thread(url, topic, payload, args.batch, args.seconds),
        _paho_bare(url, topic, payload, args.batch, args.seconds),
        _load(url, "load-max", base),
        _load(url, "load-50k", paced),
    ]


def _print(rows: list[Row]) -> None:
    ceiling = next(r / s for name, r, s, _ in rows if name == "paho-bare")
    print("\n| case | readings | seconds | readings/s | CPU share | vs ceiling |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, readings, seconds, cpu in rows:
        rate = readings / seconds
        print(f"| {name} | {readings} | {seconds:.2f} | {rate:,.0f} | {cpu / seconds:.0%} |"
              f" {rate / ceiling:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="per case (default 5)")
    parser.add_argument("--batch", type=int, default=50, help="readings per message (default 50)")
    parser.add_argument("--devices", type=int, default=5000, help="devices (default 5000)")
    parser.add_argument("--repeat", type=int, default=1, help="runs; >1 prints medians too")
    args = parser.parse_args()
    from tests.services import Mosquitto

    broker = Mosquitto(Path(tempfile.mkdtemp(prefix="eldercare-simload-")) / "mosquitto")
    broker.start()
    runs: list[list[Row]] = []
    try:
        for _ in range(args.repeat):
            runs.append(_cases(broker.url, args))
            _print(runs[-1])
    finally:
        broker.stop()
    if len(runs) > 1:
        print(f"\nmedian readings/s over {len(runs)} runs:")
        for i, (name, *_rest) in enumerate(runs[0]):
            print(f"  {name}: {statistics.median(r[i][1] / r[i][2] for r in runs):,.0f}")


if __name__ == "__main__":
    main()
