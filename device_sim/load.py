"""``eldercare sim load``: synthetic readings at a fixed total rate, to load-test ingest.

``devices`` devices report ``location`` readings (every ``heartbeat_every``-th round a
``heartbeat`` instead) through gateways of ``gateway_batch`` devices each; every message is one
gateway batch of ``gateway_batch`` readings (with ``gateway_batch=1``: one reading on the device's
own topic). Messages go round the gateways, so each device reports at ``rate / devices``
readings/s and its ``seq`` counts up by one per round.

Latency probes: every reading's ``ts`` is the message's send time (wall clock, ms), so a receiver
can measure publish-to-store latency as ``stored_at - ts`` without any other channel; with MQTT 5
each message also carries the user property ``sent_ns`` (wall clock, ns) for finer figures.

Speed (benchmarks/sim_load.py): payloads are ``bytes %`` templates built once per gateway, so a
50-reading message costs one formatting call; the PUBLISH property is packed by hand once per
message (paho's ``Properties`` costs ~40 µs to build); everything runs in the calling thread on
:class:`device_sim.publisher.MqttLink` (no network thread to hand the GIL to).
"""

from __future__ import annotations

import math
import struct
import threading
import time
from dataclasses import dataclass
from typing import Final

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_sim.publisher import MqttLink
from schemas.topics import device_topic, gateway_topic

#: Weihai: where the synthetic devices stand (fixed fixes: load tests need no movement).
_ORIGIN: Final = (37.5131, 122.1204)
#: Where a reading template takes ``ts`` and ``seq``: ``"ts":<ts>,"seq":<seq>``.
_HOLE: Final = b"\x00"
#: MQTT 5 user property (0x26) named ``sent_ns``, before its value's length and bytes.
_SENT_NS_HEAD: Final = b"\x26" + struct.pack("!H", 7) + b"sent_ns"


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadParams:
    """What ``eldercare sim load`` sends. ``rate=None``: as fast as possible."""

    devices: int
    rate: float | None
    gateway_batch: int = 50
    duration_s: float | None = None
    region: str = "load"
    heartbeat_every: int = 10

    def __post_init__(self) -> None:
        if self.devices < 1 or self.gateway_batch < 1 or self.heartbeat_every < 1:
            raise ValueError("devices, gateway_batch and heartbeat_every must be >= 1")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0 (None: as fast as possible)")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be > 0")


@dataclass(frozen=True, slots=True)
class LoadStats:
    """What a load run sent; ``seconds`` runs from the first PUBLISH to the last PUBACK."""

    messages: int
    readings: int
    seconds: float
    cpu_seconds: float
    refused: int

    @property
    def rate(self) -> float:
        """Achieved readings per second."""
        return self.readings / self.seconds if self.seconds > 0 else 0.0


class _Slot:
    """One gateway (or lone device): its topic and payload templates (location, heartbeat)."""

    __slots__ = ("formats", "pieces", "seq_steps", "topic")

    def __init__(self, topic: str, templates: tuple[bytes, bytes],
                 seq_steps: tuple[tuple[int, int], ...] | None) -> None:
        self.topic = topic
        #: The templates cut at the ``ts``/``seq`` holes: joined with one rendered hole when
        #: every reading carries the same seq (each device once per message).
        self.pieces = tuple(t.split(_HOLE) for t in templates)
        #: The same as ``bytes %`` formats, for gateways that hold fewer devices than readings.
        self.formats = tuple(t.replace(_HOLE, b'%d,"seq":%d') for t in templates)
        #: Per reading (readings per round of its device, occurrence); None: each device once.
        self.seq_steps = seq_steps


class PayloadFactory:
    """Builds message ``i`` of a load run: pure, and cheap (one ``bytes.join`` per message)."""

    def __init__(self, params: LoadParams) -> None:
        self.params = params
        b = params.gateway_batch
        self.slots = [self._slot(g, list(range(g * b, min((g + 1) * b, params.devices))))
                      for g in range(math.ceil(params.devices / b))]

    def _slot(self, g: int, devices: list[int]) -> _Slot:
        p = self.params
        if p.gateway_batch == 1:
            return _Slot(device_topic(p.region, _device_id(devices[0])),
                         (_reading(devices[0], "location"), _reading(devices[0], "heartbeat")),
                         None)
        # A gateway with fewer devices than readings per message cycles through them.
        order = [devices[j % len(devices)] for j in range(p.gateway_batch)]
        steps = None if len(devices) == p.gateway_batch else tuple(
            (order.count(d), j // len(devices)) for j, d in enumerate(order))
        location, heartbeat = (b"[" + b",".join(_reading(d, kind) for d in order) + b"]"
                               for kind in ("location", "heartbeat"))
        return _Slot(gateway_topic(p.region, f"LGW-{g:04d}"), (location, heartbeat), steps)

    def message(self, i: int, ts_ms: int) -> tuple[str, bytes]:
        """Topic and payload of message ``i``, its readings stamped ``ts_ms``."""
        slot = self.slots[i % len(self.slots)]
        k = i // len(self.slots)  # the round: each device's seq
        kind = 1 if k % self.params.heartbeat_every == 0 else 0
        if slot.seq_steps is None:
            return slot.topic, (b'%d,"seq":%d' % (ts_ms, k)).join(slot.pieces[kind])
        args: list[int] = []
        for per_round, occurrence in slot.seq_steps:
            args += (ts_ms, k * per_round + occurrence)
        return slot.topic, slot.formats[kind] % tuple(args)


def _device_id(n: int) -> str:
    return f"LD-{n:06d}"


def _reading(n: int, kind: str) -> bytes:
    """One reading's JSON with a hole (:data:`_HOLE`) for ``ts`` and ``seq``."""
    head = f'{{"device_id":"{_device_id(n)}","type":"{kind}","ts":\x00,'
    if kind == "heartbeat":
        return (head + f'"battery_pct":80,"rssi_dbm":{-60 - n % 40}}}').encode()
    lat = _ORIGIN[0] + (n % 100) * 1e-4
    lon = _ORIGIN[1] + (n // 100 % 100) * 1e-4
    return (head + f'"lat":{lat:.6f},"lon":{lon:.6f},"accuracy_m":12.5,"battery_pct":80,'
            '"source":"gps"}').encode()


class SentNs(Properties):
    """MQTT 5 PUBLISH properties holding only the user property ``sent_ns``, packed at once.

    paho only ever calls ``pack()`` (and ``str()`` when debug-logging) on a message's
    properties; building a real ``Properties`` costs ~40 µs, this ~1 µs.
    """

    def __init__(self, sent_ns: int) -> None:  # no super().__init__(): that is the slow part
        value = b"%d" % sent_ns
        body = _SENT_NS_HEAD + struct.pack("!H", len(value)) + value
        # Properties.__setattr__ only admits MQTT property names: write the instance dict.
        self.__dict__["packetType"] = PacketTypes.PUBLISH
        self.__dict__["_packed"] = bytes((len(body),)) + body  # < 128: a one-byte varint

    def pack(self) -> bytes:
        """The packed property block (length prefix included)."""
        packed: bytes = self.__dict__["_packed"]
        return packed

    def __str__(self) -> str:
        return f"[UserProperty : [('sent_ns', '{self.__dict__['_packed'][13:].decode()}')]]"


def run_load(params: LoadParams, *, url: str, stop: threading.Event | None = None,
             client_id: str | None = None, window: int = 10_000) -> LoadStats:
    """Send the load described by ``params`` to the broker at ``url``; see the module docstring.

    Paced on ``time.monotonic()``: message *i* is due at ``start + i * gateway_batch / rate``
    (behind schedule it sends at once, so the average rate holds). Stops after ``duration_s``
    or when ``stop`` is set, then waits for the outstanding PUBACKs. Runs in the calling thread.
    """
    if params.rate is None and params.duration_s is None and stop is None:
        raise ValueError("an unpaced run needs duration_s or a stop event")
    stop = stop or threading.Event()
    factory = PayloadFactory(params)
    interval = params.gateway_batch / params.rate if params.rate else 0.0
    i = 0
    with MqttLink(url, client_id=client_id, window=window) as link:
        cpu0, start = time.process_time(), time.monotonic()
        end = start + params.duration_s if params.duration_s is not None else math.inf
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            if interval and now < start + i * interval:
                link.poll(min(start + i * interval - now, 0.05))
                continue
            sent_ns = time.time_ns()
            topic, payload = factory.message(i, sent_ns // 1_000_000)
            link.publish(topic, payload, SentNs(sent_ns) if link.mqtt5 else None)
            i += 1
            if i % 64 == 0:
                link.poll(0)
        link.drain(60.0)
        seconds, cpu = time.monotonic() - start, time.process_time() - cpu0
        refused = link.refused
    return LoadStats(messages=i, readings=i * params.gateway_batch, seconds=seconds,
                     cpu_seconds=cpu, refused=refused)


def format_stats(stats: LoadStats) -> str:
    """A Markdown table of ``stats``."""
    return ("| messages | readings | seconds | readings/s | CPU s |\n"
            "|---:|---:|---:|---:|---:|\n"
            f"| {stats.messages} | {stats.readings} | {stats.seconds:.2f} | {stats.rate:,.0f} |"
            f" {stats.cpu_seconds:.2f} |")
