"""What devices send, and exactly which of it the broker took.

- :class:`StreamPlan`: a deterministic stream (one seed) of readings over many devices, in the
  wire format: messages on device topics (one device, one to ten readings) and gateway batches
  (many devices), with a known number of SOS presses, each on its own device, mixed in.
  Every reading carries ``seq``, so its storage key ``(device_id, type, ts, seq)`` is unique.
- :class:`AckedPublisher`: a paho QoS 1 publisher that records which messages the broker
  acknowledged (PUBACK with a success code). Only those count as sent: a message the broker
  never acknowledged was never promised to anyone. paho keeps unacknowledged messages and sends
  them again after a reconnect, so the publisher rides out a broker restart.
- :class:`Stream`: publishes a plan from a background thread at a steady pace, so faults can
  be injected while it runs.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from schemas import device_topic, gateway_topic

#: Around Weihai, where the simulator's scenarios live.
_LAT, _LON = 37.5131, 122.1204


class ReadingKey(NamedTuple):
    """A reading's identity in storage: the unique index of ``readings``."""

    device_id: str
    type: str
    ts: int  # Unix ms
    seq: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One MQTT message: its topic, its bytes and the readings it carries."""

    topic: str
    payload: bytes
    keys: tuple[ReadingKey, ...]

    @property
    def sos_devices(self) -> tuple[str, ...]:
        return tuple(k.device_id for k in self.keys if k.type == "sos")


def encode(readings: Sequence[dict[str, Any]] | dict[str, Any]) -> bytes:
    return msgspec.json.encode(readings)


def key_of(reading: dict[str, Any], device_id: str | None = None) -> ReadingKey:
    """The storage key of a wire reading (``seq`` -1 when absent, as the store writes it)."""
    return ReadingKey(device_id or reading["device_id"], reading["type"], reading["ts"],
                      reading.get("seq", -1))


def device_message(region: str, device_id: str, readings: Sequence[dict[str, Any]]) -> Outgoing:
    """Readings of one device on its topic (a single object when there is one)."""
    body = readings[0] if len(readings) == 1 else list(readings)
    return Outgoing(device_topic(region, device_id), encode(body),
                    tuple(key_of(r, device_id) for r in readings))


def gateway_message(region: str, gateway_id: str,
                    readings: Sequence[dict[str, Any]]) -> Outgoing:
    """A gateway batch: readings of any devices, each naming its device."""
    return Outgoing(gateway_topic(region, gateway_id), encode(list(readings)),
                    tuple(key_of(r) for r in readings))


def periodic_reading(rng: random.Random, device_id: str, *, ts: int, seq: int) -> dict[str, Any]:
    """A location fix, heartbeat or vitals reading that raises no event: battery high, heart
    rate normal, and no zones in the registry (so no geofence exits)."""
    kind = rng.choices(("location", "heartbeat", "vitals"), weights=(6, 3, 1))[0]
    r: dict[str, Any] = {"device_id": device_id, "type": kind, "ts": ts, "seq": seq}
    if kind == "location":
        r.update(lat=round(_LAT + rng.uniform(-0.02, 0.02), 6),
                 lon=round(_LON + rng.uniform(-0.02, 0.02), 6),
                 accuracy_m=round(rng.uniform(3, 30), 1), battery_pct=rng.randint(50, 100),
                 source="gps")
    elif kind == "heartbeat":
        r.update(battery_pct=rng.randint(50, 100), rssi_dbm=rng.randint(-110, -50))
    else:
        r.update(heart_rate_bpm=rng.randint(60, 95), spo2_pct=rng.randint(95, 99))
    return r


@dataclass(frozen=True, slots=True)
class StreamPlan:
    """A deterministic stream; see the module docstring and :meth:`generate`."""

    region: str
    seed: int
    devices: tuple[str, ...]
    sos_devices: tuple[str, ...]
    messages: tuple[Outgoing, ...]

    @property
    def readings(self) -> int:
        return sum(len(m.keys) for m in self.messages)

    @classmethod
    def generate(cls, *, region: str, readings: int, sos: int, seed: int, start_ms: int,
                 devices: int | None = None, prefix: str = "FW",
                 gateway_share: float = 0.5) -> StreamPlan:
        """``readings`` readings in total (SOS presses included) from ``devices`` watches
        (default: one per 200 readings, 20 to 1,000), device time from ``start_ms`` on, one
        second apart per device. ``sos`` presses go on distinct devices, at random places in
        the stream, each a message of its own (a watch's button sends at once)."""
        rng = random.Random(seed)
        n_dev = devices or max(20, min(1000, readings // 200))
        if sos > n_dev:
            raise ValueError("one device per SOS press: more presses than devices")
        ids = tuple(f"{prefix}-{i:05d}" for i in range(n_dev))
        sos_devs = tuple(sorted(rng.sample(ids, sos)))
        seqs = dict.fromkeys(ids, 0)

        def take(device_id: str) -> dict[str, Any]:
            seq = seqs[device_id]
            seqs[device_id] = seq + 1
            return periodic_reading(rng, device_id, ts=start_ms + seq * 1000, seq=seq)

        messages: list[Outgoing] = []
        left = readings - sos
        while left > 0:
            if rng.random() < gateway_share:
                batch = [take(rng.choice(ids)) for _ in range(min(left, rng.randint(10, 40)))]
                messages.append(gateway_message(region, f"GW-{rng.randint(0, 9)}", batch))
            else:
                dev = rng.choice(ids)
                batch = [take(dev) for _ in range(min(left, rng.randint(1, 10)))]
                messages.append(device_message(region, dev, batch))
            left -= len(batch)
        for dev in sos_devs:
            seq = seqs[dev]
            seqs[dev] = seq + 1
            press = {"type": "sos", "ts": start_ms + seq * 1000, "seq": seq,
                     "lat": _LAT, "lon": _LON}
            messages.insert(rng.randint(0, len(messages)), device_message(region, dev, [press]))
        return cls(region=region, seed=seed, devices=ids, sos_devices=sos_devs,
                   messages=tuple(messages))

    def registry_yaml(self, *, contact_email: str | None = None) -> str:
        """A registry of these devices: one wearer per watch (so each SOS is its own alert),
        each with one family contact (SMS, or e-mail when ``contact_email`` is given)."""
        return registry_yaml(self.region, self.devices, contact_email=contact_email)


def registry_yaml(region: str, devices: Iterable[str], *, contact_email: str | None = None,
                  kind: str = "watch") -> str:
    """Registry YAML with one wearer ``W-<device>`` per device, in ``region``."""
    contact = ('{name: 家属, phone: "13800000001"}' if contact_email is None else
               f'{{name: 家属, phone: "13800000001", email: "{contact_email}",'
               ' channels: [email]}')
    lines = ["wearers:"]
    for dev in devices:
        lines += [f"  - id: W-{dev}", "    name: 测试老人", f'    region: "{region}"',
                  f"    devices: [{{id: {dev}, kind: {kind}}}]", f"    contacts: [{contact}]"]
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class _Sent:
    message: Outgoing
    published_at: float
    acked_at: float | None = None
    failure: str | None = None


@dataclass(slots=True)
class PublisherStats:
    """What the publisher saw of the broker."""

    connects: int = 0
    disconnects: int = 0
    ack_failures: int = 0
    connected: bool = False
    connected_at: list[float] = field(default_factory=list)


class AckedPublisher:
    """QoS 1 publisher that records which messages the broker acknowledged.

    ``publish`` never waits for the network: paho queues what cannot go out yet (broker down)
    and sends it after reconnecting. Thread-safe for one publishing thread.
    """

    def __init__(self, url: str, *, client_id: str | None = None, max_inflight: int = 200,
                 connect_timeout_s: float = 30.0) -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.client_id = client_id or "fault-pub-" + uuid.uuid4().hex[:8]
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id=self.client_id)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        self.client.on_publish = self._on_publish
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.stats = PublisherStats()
        self._sent: list[_Sent] = []
        self._outstanding: dict[int, int] = {}  # mid -> index in _sent
        self._early: dict[int, tuple[float, str | None]] = {}  # PUBACK before we knew its mid
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self.client.connect_async(host, int(port), keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(connect_timeout_s):
            self.close()
            raise AssertionError(f"publisher: no connection to {url} in {connect_timeout_s} s")

    # -- paho callbacks (network thread; paho holds its own lock here: take ours only briefly,
    # and never call paho while holding ours) --
    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int,
                    reason: ReasonCode, properties: object) -> None:
        now = time.monotonic()
        failure = str(reason) if reason.is_failure else None
        with self._lock:
            if failure is not None:
                self.stats.ack_failures += 1
            index = self._outstanding.pop(mid, None)
            if index is None:
                self._early[mid] = (now, failure)
            else:
                self._sent[index].acked_at = now
                self._sent[index].failure = failure

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object,
                    reason: ReasonCode, properties: object) -> None:
        if reason.is_failure:
            return
        with self._lock:
            self.stats.connects += 1
            self.stats.connected = True
            self.stats.connected_at.append(time.monotonic())
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object,
                       reason: ReasonCode, properties: object) -> None:
        with self._lock:
            self.stats.disconnects += 1
            self.stats.connected = False

    # -- publishing --
    def publish(self, message: Outgoing) -> None:
        """Hand ``message`` to paho (QoS 1); its PUBACK is recorded when it comes."""
        at = time.monotonic()
        info = self.client.publish(message.topic, message.payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise AssertionError(f"paho refused to queue a message: {mqtt.error_string(info.rc)}")
        with self._lock:
            self._sent.append(_Sent(message, at))
            index = len(self._sent) - 1
            early = self._early.pop(info.mid, None)
            if early is None:
                self._outstanding[info.mid] = index
            else:
                self._sent[index].acked_at, self._sent[index].failure = early

    def pending(self) -> int:
        """Messages published and not acknowledged yet."""
        with self._lock:
            return len(self._outstanding)

    def wait_acked(self, timeout_s: float = 60.0) -> None:
        """Wait until the broker has acknowledged everything published so far."""
        deadline = time.monotonic() + timeout_s
        while self.pending():
            if time.monotonic() > deadline:
                raise AssertionError(f"publisher: {self.pending()} messages without PUBACK after"
                                     f" {timeout_s:.0f} s (connected: {self.stats.connected})")
            time.sleep(0.05)

    def published(self) -> list[Outgoing]:
        with self._lock:
            return [s.message for s in self._sent]

    def acked(self) -> list[Outgoing]:
        """Messages the broker acknowledged with a success code."""
        with self._lock:
            return [s.message for s in self._sent if s.acked_at is not None and not s.failure]

    def acked_keys(self) -> set[ReadingKey]:
        return {k for m in self.acked() for k in m.keys}

    def published_keys(self) -> set[ReadingKey]:
        return {k for m in self.published() for k in m.keys}

    def ack_latency_max_s(self) -> float:
        with self._lock:
            waits = [s.acked_at - s.published_at for s in self._sent if s.acked_at is not None]
        return max(waits, default=0.0)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Stream:
    """Publishes a :class:`StreamPlan` from a background thread, paced evenly over
    ``duration_s`` (0: as fast as paho takes them)."""

    def __init__(self, publisher: AckedPublisher, plan: StreamPlan, *,
                 duration_s: float = 0.0) -> None:
        self.publisher = publisher
        self.plan = plan
        self.duration_s = duration_s
        self.published = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-stream", daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            n = len(self.plan.messages)
            t0 = time.monotonic()
            for i, message in enumerate(self.plan.messages):
                if self._stop.is_set():
                    return
                due = t0 + self.duration_s * i / max(1, n)
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self.publisher.publish(message)
                self.published = i + 1
        except Exception as exc:  # noqa: BLE001 - reported by join()
            self.error = exc
        finally:
            self._done.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def fraction(self) -> float:
        """How much of the plan is published."""
        return self.published / max(1, len(self.plan.messages))

    def join(self, timeout_s: float = 300.0) -> None:
        """Wait until every message is published (not necessarily acknowledged)."""
        if not self._done.wait(timeout_s):
            raise AssertionError(f"stream: {self.published} of {len(self.plan.messages)}"
                                 f" messages published after {timeout_s:.0f} s")
        if self.error is not None:
            raise AssertionError(f"stream failed: {self.error!r}") from self.error

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@contextmanager
def streaming(broker_url: str, plan: StreamPlan, *, duration_s: float,
              ack_timeout_s: float = 90.0) -> Iterator[AckedPublisher]:
    """Publish ``plan`` over ``duration_s`` while the block injects its faults; when the block
    ends normally, wait until the whole plan is published and acknowledged. The publisher is
    closed either way, and still answers ``acked_keys()`` afterwards."""
    publisher = AckedPublisher(broker_url)
    stream = Stream(publisher, plan, duration_s=duration_s).start()
    try:
        yield publisher
        stream.join(timeout_s=duration_s + 120)
        publisher.wait_acked(timeout_s=ack_timeout_s)
    finally:
        stream.stop()
        publisher.close()
