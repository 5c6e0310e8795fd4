"""A small built-in fleet for ``eldercare demo``: bracelets and watches around Weihai.

It publishes every reading type over MQTT with aiomqtt (device topics and one gateway), plus a
trickle of deliberately bad messages so the dead-letter store has something to show. The full
simulator (scenarios, recording, replay, load) is issue #4; this stays deliberately small.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import aiomqtt

from schemas import device_topic, gateway_topic

WEIHAI = (37.5131, 122.1204)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _reading(kind: str, device_id: str, rng: random.Random, seq: int) -> dict[str, Any]:
    base: dict[str, Any] = {"device_id": device_id, "ts": _now_ms(), "seq": seq, "type": kind}
    if kind == "location":
        base.update(lat=WEIHAI[0] + rng.gauss(0, 0.01), lon=WEIHAI[1] + rng.gauss(0, 0.01),
                    accuracy_m=round(rng.uniform(5, 60), 1), battery_pct=rng.randint(20, 100),
                    source=rng.choice(["gps", "gps", "wifi", "cell"]))
    elif kind == "vitals":
        base.update(heart_rate_bpm=rng.randint(55, 100), spo2_pct=rng.randint(93, 99),
                    steps=rng.randint(0, 8000))
    elif kind == "heartbeat":
        base.update(battery_pct=rng.randint(20, 100), rssi_dbm=rng.randint(-110, -50))
    elif kind == "accel":
        n = 50
        base.update(rate_hz=50, x=[round(rng.gauss(0, 0.05), 3) for _ in range(n)],
                    y=[round(rng.gauss(0, 0.05), 3) for _ in range(n)],
                    z=[round(1 + rng.gauss(0, 0.05), 3) for _ in range(n)])
    elif kind == "sos":
        base.update(lat=WEIHAI[0], lon=WEIHAI[1])
    elif kind == "fall":
        base.update(confidence=0.9)
    elif kind == "wear":
        base.update(worn=rng.random() > 0.3)
    elif kind == "home_alarm":
        base.update(sensor=rng.choice(["smoke", "gas", "door", "bed_exit"]), active=True)
    return base


def _bad_messages(region: str, now: int) -> list[tuple[str, bytes]]:
    return [
        (device_topic(region, "BR-0001"), b'{"type": "location", "ts": '),
        (device_topic(region, "BR-0002"),
         json.dumps({"type": "sos", "ts": now, "device_id": "BR-0009"}).encode()),
        (device_topic(region, "BR-0003"),
         json.dumps({"type": "location", "ts": now, "lat": 137.5, "lon": 122.1}).encode()),
    ]


async def run_fleet(
    *, host: str, port: int, region: str = "371002", devices: int = 20,
    interval_s: float = 1.0, seed: int = 12349, stop: asyncio.Event,
) -> int:
    """Publish until ``stop`` is set; returns the number of messages published."""
    rng = random.Random(seed)
    ids = [f"BR-{i:04d}" for i in range(1, devices + 1)]
    seq = 0
    published = 0
    async with aiomqtt.Client(host, port, identifier=f"eldercare-demo-fleet-{seed}",
                              protocol=aiomqtt.ProtocolVersion.V311) as client:
        tick = 0
        while not stop.is_set():
            tick += 1
            for dev in ids:
                seq += 1
                kind = rng.choices(["location", "vitals", "heartbeat", "accel"], [4, 2, 2, 1])[0]
                await client.publish(device_topic(region, dev),
                                     json.dumps(_reading(kind, dev, rng, seq)), qos=1)
                published += 1
            batch = [_reading(rng.choice(["location", "heartbeat"]), f"HS-{i:03d}", rng, seq + i)
                     for i in range(10)]
            await client.publish(gateway_topic(region, "GW-01"), json.dumps(batch), qos=1)
            published += 1
            if tick % 5 == 0:
                dev = rng.choice(ids)
                kind = rng.choice(["sos", "fall", "wear", "home_alarm"])
                await client.publish(device_topic(region, dev),
                                     json.dumps(_reading(kind, dev, rng, seq)), qos=1)
                for topic, payload in _bad_messages(region, _now_ms()):
                    await client.publish(topic, payload, qos=1)
                published += 4
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass
    return published
