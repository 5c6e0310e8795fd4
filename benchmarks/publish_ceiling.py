"""The baseline of ``benchmarks.gateway``: what one aiomqtt client can publish, measured the same run.

The gateway publishes one QoS 1 message per frame through one aiomqtt client
(:class:`gateway.link.BrokerLink`) and awaits its PUBACK. This measures that path with no gateway
around it: a process of its own publishes the gateway's own payloads (watch UD frames decoded by
:class:`gateway.watch3g.WatchCodec` and encoded as the server encodes them) to the same private
Mosquitto from ``concurrency`` tasks, each awaiting its PUBACK before the next, for ``seconds``:

- as BrokerLink configures it: paho's default window of 20 messages in flight, and aiomqtt's
  default ``pending_calls_threshold`` of 10, beyond which every publish lists all pending calls
  and logs a warning (logged here as the gateway logs, formatted, to a file: /dev/null);
- the same with that threshold out of reach: what the warning costs;
- and with paho's window widened to 1000 as well: what that setting is worth.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import time
import uuid
from typing import Any

import aiomqtt
import msgspec

from benchmarks.watch_fleet import report_parts, stamp
from schemas import gateway_topic


def gateway_payloads(region: str, devices: int) -> list[tuple[str, bytes]]:
    """(topic, payload) of one UD frame per device, exactly as the gateway would publish it."""
    from gateway.watch3g import WatchCodec

    codec, encoder = WatchCodec(), msgspec.json.Encoder()
    now = time.time()
    out = []
    for i in range(devices):
        pre, post = report_parts(i, "UD", 0)
        decoded = codec.decode(pre + stamp(now) + post, now_ms=int(now * 1000),
                               session_device=None)
        out.append((gateway_topic(region, "bench-ceiling"), encoder.encode(list(decoded.readings))))
    return out


async def _publish(host: str, port: int, payloads: list[tuple[str, bytes]], seconds: float,
                   concurrency: int, inflight: int | None, warn: bool) -> dict[str, Any]:
    done = 0
    async with aiomqtt.Client(host, port, identifier="bench-ceiling-" + uuid.uuid4().hex[:6],
                              protocol=aiomqtt.ProtocolVersion.V311, clean_session=True,
                              keepalive=30, timeout=5, max_inflight_messages=inflight) as client:
        if not warn:
            client.pending_calls_threshold = 1 << 30
        cpu0, t0 = time.process_time(), time.monotonic()
        end = t0 + seconds

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < end:
                topic, payload = payloads[i % len(payloads)]
                await client.publish(topic, payload, qos=1, timeout=60)
                done += 1
                i += concurrency

        async with asyncio.TaskGroup() as tg:
            for k in range(concurrency):
                tg.create_task(worker(k), name=f"bench-ceiling-{k}")
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {"messages": done, "seconds": wall, "per_s": done / wall, "cpu_pct": 100 * cpu / wall}


def _child(host: str, port: int, region: str, devices: int, seconds: float, concurrency: int,
           inflight: int | None, warn: bool, out: mp.Queue[dict[str, Any]]) -> None:
    # As eldercare.cli configures logging, into the void instead of a terminal.
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"),  # noqa: SIM115
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    payloads = gateway_payloads(region, devices)
    out.put(asyncio.run(_publish(host, port, payloads, seconds, concurrency, inflight, warn)))


#: The cases: name, paho's window (None: its default, 20), aiomqtt's pending-calls warning on.
CASES = (("aiomqtt as BrokerLink (20 in flight, warnings)", None, True),
         ("aiomqtt, no pending-calls warning", None, False),
         ("aiomqtt, no warning, 1000 in flight", 1000, False))


def measure(url: str, *, region: str, seconds: float, inflight: int | None, warn: bool,
            devices: int = 1000, concurrency: int = 1000) -> dict[str, Any]:
    """Run one ceiling case in a process of its own; its messages, seconds, rate and CPU %."""
    host, port = url.removeprefix("mqtt://").split(":")
    ctx = mp.get_context("spawn")
    q: mp.Queue[dict[str, Any]] = ctx.Queue()
    p = ctx.Process(target=_child, args=(host, int(port), region, devices, seconds,
                                         concurrency, inflight, warn, q))
    p.start()
    try:
        result: dict[str, Any] = q.get(timeout=seconds + 120)
    finally:
        p.join(30)
    return result
