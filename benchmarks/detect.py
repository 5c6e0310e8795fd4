"""Detector engine throughput: readings/s through ``DetectorEngine.process`` on one core.

A fleet of bracelets and watches around Weihai, each wearer with a home circle and a night-time
polygon, sends a realistic mix (location 60 %, heartbeat 20 %, vitals 15 %, wear 4 %, SOS 1 %) in
ingest-sized batches of 5,000. The baseline, measured in the same run on the same readings, is
msgspec decoding them from JSON: the work ingest does anyway for every reading. The ratio says
what detection costs relative to decoding.

Usage: python -m benchmarks.detect [--devices N] [--batches N]
"""

from __future__ import annotations

import argparse
import time

import msgspec
import numpy as np

from detectors.engine import DetectorEngine
from schemas.readings import Heartbeat, Location, Reading, Sos, Vitals, Wear
from schemas.registry import Registry

T0 = 1_795_000_000_000
BATCH = 5000


def _registry(n: int, rng: np.random.Generator) -> tuple[Registry, np.ndarray]:
    homes = np.column_stack((37.45 + rng.random(n) * 0.1, 122.05 + rng.random(n) * 0.15))
    wearers = []
    for i, (lat, lon) in enumerate(homes.tolist()):
        d = 0.002
        wearers.append({
            "id": f"W{i}", "name": "x", "region": "371002",
            "devices": [{"id": f"BR-{i}", "kind": "bracelet"}],
            "zones": [
                {"id": "home", "kind": "circle", "center": {"lat": lat, "lon": lon},
                 "radius_m": 300},
                {"id": "night", "kind": "polygon", "active": "20:00-06:00",
                 "points": [[lat - d, lon - d], [lat - d, lon + d], [lat + d, lon + d],
                            [lat + d, lon - d], [lat, lon - 1.5 * d]]},
            ]})
    return msgspec.convert({"wearers": wearers}, Registry), homes


def _batches(n_dev: int, n_batches: int, homes: np.ndarray, rng: np.random.Generator
             ) -> list[list[Reading]]:
    out = []
    for b in range(n_batches):
        dev = rng.integers(0, n_dev, BATCH)
        kind = rng.random(BATCH)
        ts = T0 + b * 1000 + np.arange(BATCH)
        walk = rng.normal(0, 0.002, (BATCH, 2))
        batch: list[Reading] = []
        for i in range(BATCH):
            d, t, k = f"BR-{dev[i]}", int(ts[i]), kind[i]
            if k < 0.60:
                lat, lon = homes[dev[i]] + walk[i]
                batch.append(Location(device_id=d, ts=t, lat=float(lat), lon=float(lon),
                                      accuracy_m=15.0, battery_pct=float(50 + dev[i] % 50)))
            elif k < 0.80:
                batch.append(Heartbeat(device_id=d, ts=t, battery_pct=float(50 + dev[i] % 50)))
            elif k < 0.95:
                batch.append(Vitals(device_id=d, ts=t, heart_rate_bpm=float(60 + i % 70),
                                    steps=int(b * 10 + i % 7)))
            elif k < 0.99:
                batch.append(Wear(device_id=d, ts=t, worn=bool(i % 2)))
            else:
                batch.append(Sos(device_id=d, ts=t))
        out.append(batch)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    registry, homes = _registry(args.devices, rng)
    batches = _batches(args.devices, args.batches, homes, rng)
    n = sum(len(b) for b in batches)
    encoded = [msgspec.json.encode(b) for b in batches]
    decoder = msgspec.json.Decoder(list[Reading])

    t = time.perf_counter()
    for payload in encoded:
        decoder.decode(payload)
    decode_s = time.perf_counter() - t

    engine = DetectorEngine(registry=registry)
    regions = ["371002"] * BATCH
    events = 0
    t = time.perf_counter()
    for batch in batches:
        recv = [r.ts for r in batch]
        events += len(engine.process(batch, regions[:len(batch)], recv))
    engine_s = time.perf_counter() - t
    t = time.perf_counter()
    engine.tick(T0 + args.batches * 1000)
    tick_ms = 1000 * (time.perf_counter() - t)

    print(f"\n{n:,} readings, {args.devices:,} devices with 2 zones each, batches of {BATCH}, "
          f"one core\n")
    print("| stage | seconds | readings/s | vs decode |")
    print("|---|---:|---:|---:|")
    print(f"| msgspec decode (baseline) | {decode_s:.2f} | {n / decode_s:,.0f} | 1.00 |")
    print(f"| detector engine | {engine_s:.2f} | {n / engine_s:,.0f} |"
          f" {(n / engine_s) / (n / decode_s):.2f} |")
    print(f"\n{events:,} events; tick over {len(engine.devices):,} devices: {tick_ms:.1f} ms")


if __name__ == "__main__":
    main()
