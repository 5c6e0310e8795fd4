"""Publish a Publication stream to an MQTT broker at QoS 1, paced on the stream's own clock.

:class:`MqttLink` drives a paho-mqtt 2 client from the calling thread: no network thread, so
publishing, reading PUBACKs and sleeping are one loop on one core with no GIL hand-offs (the load
generator needs that speed; paced replay needs the precision). Waiting is a ``select`` on the
socket, so PUBACKs are handled while waiting for the next message to be due. The in-flight
window is bounded: at ``window`` unacknowledged messages, publishing waits for PUBACKs.

:func:`publish` paces by publication time: message *i* is due at
``start + (t_ms[i] - t_ms[0]) / speed``, all on ``time.monotonic()`` from one start, so sleeping
errors never add up (a late message does not delay the schedule of the next). ``speed=None``
publishes as fast as the window allows. It returns when every message is acknowledged, or when
``stop`` is set (after the PUBACKs of what was already sent).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, Self

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from device_sim.types import Publication
from foundation import tls
from foundation.broker import BrokerAddress
from foundation.errors import BrokerError

log = logging.getLogger(__name__)

_ENCODER: Final = msgspec.json.Encoder()
_UNSUPPORTED_PROTOCOL: Final = 132
_POLL_S: Final = 0.05  # longest single wait, so ``stop`` is seen promptly


def encode_payload(pub: Publication) -> bytes:
    """The MQTT payload of ``pub``: a JSON array, or its one reading as a bare object."""
    return _ENCODER.encode(pub.readings if pub.as_array else pub.readings[0])


class MqttLink:
    """A QoS 1 publishing connection driven from the calling thread; a context manager.

    ``protocol="auto"`` connects with MQTT 5 and falls back to 3.1.1 when the broker does not
    speak 5 (amqtt, used by ``eldercare demo``). :attr:`mqtt5` says which one was negotiated
    (user properties need 5). Connection loss while publishing is retried for
    ``reconnect_timeout_s``; paho resends unacknowledged messages after the reconnect.
    ``url`` may be a :class:`~foundation.broker.BrokerAddress`, for a login and TLS files beyond
    what a URL says.
    """

    def __init__(self, url: str | BrokerAddress, *, client_id: str | None = None,
                 window: int = 1000,
                 protocol: Literal["auto", "5", "3.1.1"] = "auto", connect_timeout_s: float = 10.0,
                 reconnect_timeout_s: float = 30.0) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self.address = BrokerAddress.from_url(url) if isinstance(url, str) else url
        self.client_id = client_id or "eldercare-sim-" + uuid.uuid4().hex[:8]
        self.window = window
        self.protocol = protocol
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self.mqtt5 = False
        self.sent = 0
        self.acked = 0
        #: PUBACKs with a failure reason code (MQTT 5: not authorized, quota exceeded...).
        self.refused = 0
        self._client: mqtt.Client | None = None
        self._connack: ReasonCode | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def connect(self) -> None:
        """Connect, falling back to MQTT 3.1.1 if asked to; raises BrokerError on failure."""
        rc = self._connect("3.1.1" if self.protocol == "3.1.1" else "5")
        if self.protocol == "auto" and (rc is None or rc.value == _UNSUPPORTED_PROTOCOL):
            log.info("broker does not answer MQTT 5; trying 3.1.1")
            rc = self._connect("3.1.1")
        if rc is None or rc.is_failure:
            self.close()
            raise BrokerError(f"cannot connect to MQTT broker {self.address.host}:"
                              f"{self.address.port}: {'no answer' if rc is None else rc}")

    def _connect(self, version: Literal["5", "3.1.1"]) -> ReasonCode | None:
        self.close()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311)
        self.address.configure(client)
        client.max_inflight_messages_set(self.window)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        self._client, self._connack, self.mqtt5 = client, None, version == "5"
        try:
            client.connect(self.address.host, self.address.port, keepalive=30)
        except OSError as exc:  # ssl.SSLError included: a refused certificate says so
            raise tls.final_failure(exc, where=str(self.address)) or BrokerError(
                f"cannot reach MQTT broker {self.address}: {exc}") from exc
        _no_delay(client)
        deadline = time.monotonic() + self.connect_timeout_s
        while self._connack is None and time.monotonic() < deadline:
            if self._poll(min(_POLL_S, deadline - time.monotonic())) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break  # closed before a CONNACK: some 3.1.1 brokers answer 5 that way
        return self._connack

    def close(self) -> None:
        """Disconnect (idempotent); unacknowledged messages are abandoned."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()  # with no network thread, this writes DISCONNECT at once

    # -- publishing --------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, properties: Properties | None = None) -> None:
        """Publish at QoS 1 without waiting for the PUBACK; waits first while the window is full."""
        while self.sent - self.acked >= self.window:
            self.poll(_POLL_S)
        assert self._client is not None, "publish on a closed MqttLink"
        self._client.publish(topic, payload, qos=1, properties=properties)
        self.sent += 1

    def poll(self, timeout_s: float) -> None:
        """Handle network traffic (PUBACKs, keep-alive) for up to ``timeout_s`` seconds."""
        if self._poll(timeout_s) != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._reconnect()

    def drain(self, timeout_s: float) -> None:
        """Wait until every published message is acknowledged; BrokerError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.acked < self.sent:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrokerError(f"{self.sent - self.acked} messages unacknowledged after "
                                  f"{timeout_s:.0f} s")
            self.poll(min(left, _POLL_S))

    def _poll(self, timeout_s: float) -> MQTTErrorCode:
        client = self._client
        sock = client.socket() if client is not None else None
        if client is None or sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        writing = [sock] if client.want_write() else []
        # Over TLS, bytes already decrypted into the SSL buffer leave the socket unreadable to
        # select: read them first (as paho's own loop does), or a PUBACK could wait there.
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        readable, writable, _ = select.select([sock], writing, [],
                                              0.0 if pending else max(timeout_s, 0.0))
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        if readable or pending:
            rc = client.loop_read()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and (writable or client.want_write()):
            rc = client.loop_write()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            rc = client.loop_misc()
        return rc

    def _reconnect(self) -> None:
        client = self._client
        if client is None:
            raise BrokerError("the MQTT link is closed")
        deadline = time.monotonic() + self.reconnect_timeout_s
        delay = 0.1
        log.warning("MQTT connection lost with %d messages unacknowledged; reconnecting",
                    self.sent - self.acked)
        while time.monotonic() < deadline:
            try:
                self._connack = None
                client.reconnect()
                _no_delay(client)
                while self._connack is None and time.monotonic() < deadline:
                    if self._poll(_POLL_S) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
                if self._connack is not None and not self._connack.is_failure:
                    return
            except OSError:
                pass
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
        raise BrokerError(f"lost the MQTT broker {self.address.host}:{self.address.port} "
                          f"for {self.reconnect_timeout_s:.0f} s")

    # -- paho callbacks (called from _poll, in this thread) ----------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Any = None) -> None:
        self._connack = rc

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    properties: Any = None) -> None:
        self.acked += 1
        if rc.is_failure:
            self.refused += 1


def _no_delay(client: mqtt.Client) -> None:
    """Turn Nagle off: paho leaves it on, and it would hold a message sent right after another
    until the broker's TCP ACK (up to a delayed-ACK 40 ms), spoiling replay timing."""
    sock = client.socket()
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True, slots=True)
class Pace:
    """When a message of simulated time ``t_ms`` is due on ``time.monotonic()``: ``start`` plus
    its distance from ``origin_ms`` divided by ``speed`` (``None``: at once). Computed from the
    one start, so sleeping errors never add up; shared, it keeps two senders of one run (MQTT
    and device connections) on one schedule."""

    speed: float | None
    origin_ms: int
    start: float

    def due(self, t_ms: int) -> float:
        """The monotonic time ``t_ms`` is due at."""
        if self.speed is None:
            return self.start
        return self.start + (t_ms - self.origin_ms) / 1000 / self.speed

    def sim_ms(self, now: float) -> int | None:
        """The simulated time due at monotonic ``now`` (None when unpaced)."""
        if self.speed is None:
            return None
        return self.origin_ms + round((now - self.start) * self.speed * 1000)


@dataclass(frozen=True, slots=True)
class PublishStats:
    """What :func:`publish` did. ``late_*``: messages sent after their due time."""

    messages: int
    readings: int
    seconds: float
    late_messages: int
    max_late_ms: float
    refused: int
    stopped: bool


def publish(pubs: Iterable[Publication], *, url: str | BrokerAddress, speed: float | None = 1.0,
            stop: threading.Event | None = None, client_id: str | None = None,
            window: int = 1000, late_after_ms: float = 10.0,
            drain_timeout_s: float = 60.0, pace: Pace | None = None) -> PublishStats:
    """Publish ``pubs`` (in non-decreasing ``t_ms``) to the broker at ``url``, paced.

    ``url`` is an ``mqtt[s]://`` URL or a :class:`~foundation.broker.BrokerAddress` (login and TLS
    files from a configuration: ``eldercare sim run --ca-file ...``).

    ``speed``: 1.0 is real time, N is N times faster, ``None`` as fast as possible. A message
    sent more than ``late_after_ms`` after its due time counts as late. Runs in the calling
    thread; returns when all messages are acknowledged (BrokerError if that takes longer than
    ``drain_timeout_s``) or, with ``stop`` set, after the PUBACKs of those already sent.
    ``pace``: a schedule shared with another sender (its speed wins over ``speed``); by
    default the schedule starts when connected, at the first message's ``t_ms``.
    """
    if speed is not None and speed <= 0:
        raise ValueError("speed must be > 0 (None: as fast as possible)")
    stop = stop or threading.Event()
    messages = readings = late = 0
    max_late = 0.0
    with MqttLink(url, client_id=client_id, window=window) as link:
        start = time.monotonic()
        for pub in pubs:
            if stop.is_set():
                break
            pace = pace or Pace(speed=speed, origin_ms=pub.t_ms, start=start)
            if pace.speed is not None:
                due = pace.due(pub.t_ms)
                _wait_until(link, due, stop)
                if stop.is_set():
                    break
                late_ms = (time.monotonic() - due) * 1000
                if late_ms > late_after_ms:
                    late += 1
                max_late = max(max_late, late_ms)
            link.publish(pub.topic, encode_payload(pub))
            messages += 1
            readings += len(pub.readings)
            if messages % 64 == 0:
                link.poll(0)  # read PUBACKs as we go, so the window stays open
        link.drain(drain_timeout_s)
        seconds = time.monotonic() - start
        refused = link.refused
    if refused:
        log.warning("broker refused %d of %d messages", refused, messages)
    return PublishStats(messages=messages, readings=readings, seconds=seconds,
                        late_messages=late, max_late_ms=max(max_late, 0.0), refused=refused,
                        stopped=stop.is_set())


def _wait_until(link: MqttLink, due: float, stop: threading.Event) -> None:
    """Serve the network until the monotonic time ``due`` (or ``stop``)."""
    while not stop.is_set():
        left = due - time.monotonic()
        if left <= 0:
            return
        link.poll(min(left, _POLL_S))
