"""The MQTT alert channel against a real Mosquitto: retained state, clearing, outages."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from alerts.channels.base import DeliveryFailed, Message
from alerts.channels.mqtt import MqttAlertChannel, MqttEndpoint
from eldercare.embedded import EmbeddedBroker
from foundation.errors import ConfigError
from foundation.ports import free_port
from tests.conftest import stop_paho
from tests.services import Mosquitto

SENTINEL = "sentinel"


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 15.0) -> None:
    """Poll ``predicate`` (tests/conftest.py has the same; mypy --strict stays file-local)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


class Subscriber:
    """Subscribes to ``<prefix>/#`` and records (topic, payload, retain flag) in order."""

    def __init__(self, url: str, prefix: str,
                 protocol: MQTTProtocolVersion = mqtt.MQTTv5) -> None:
        self.prefix = prefix
        self.got: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        host, port = url.removeprefix("mqtt://").split(":")
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=protocol,
                                  client_id="sub-" + uuid.uuid4().hex[:8])
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Any = None) -> None:
        client.subscribe(self.prefix + "/#", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def messages(self) -> list[tuple[str, bytes, bool]]:
        with self._lock:
            return list(self.got)

    def settle(self) -> list[tuple[str, bytes, bool]]:
        """Everything received before a sentinel published now: the broker sends retained
        messages while handling SUBSCRIBE, so they precede the sentinel; no sleeping."""
        marker = f"{self.prefix}/{SENTINEL}-{uuid.uuid4().hex[:8]}"
        self.client.publish(marker, b"", qos=1).wait_for_publish(10)
        wait_for(lambda: any(t == marker for t, _, _ in self.messages()), what="sentinel")
        return [m for m in self.messages() if SENTINEL not in m[0]]

    def close(self) -> None:
        stop_paho(self.client)


def body(event: str, alert_id: int, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"event": event, "alert": {"id": alert_id, "status": "open",
                                                     "wearer": {"id": 7, "name": "张三"}}}
    doc.update(extra)
    return doc


def message(topic: str, doc: dict[str, Any]) -> Message:
    return Message(delivery_id=1, alert_id=doc["alert"]["id"], channel="mqtt",
                   recipient="platform", address=topic, language="zh",
                   idempotency_key=uuid.uuid4().hex, attempt=1, body=doc)


@pytest.fixture
def prefix(region: str) -> str:
    return f"eldercare/v1/{region}/alerts"


@pytest.fixture
def channel(broker: Mosquitto) -> Iterator[MqttAlertChannel]:
    c = MqttAlertChannel(broker.url, client_id="alerts-" + uuid.uuid4().hex[:8], timeout_s=5)
    yield c
    c.close()


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    """The subscribers a test made with :func:`subscribe`, closed at teardown."""
    made: list[Subscriber] = []
    yield made
    for s in made:
        s.close()


def subscribe(broker: Mosquitto, prefix: str, made: list[Subscriber]) -> Subscriber:
    s = Subscriber(broker.url, prefix)
    made.append(s)
    return s


def test_state_is_published_retained_and_reaches_late_subscribers(
        broker: Mosquitto, channel: MqttAlertChannel, prefix: str,
        subscribers: list[Subscriber]) -> None:
    early = subscribe(broker, prefix, subscribers)
    topic = f"{prefix}/101"
    doc = body("alert.opened", 101)
    receipt = channel.send(message(topic, doc))
    assert receipt.detail == {"topic": topic, "retained": True}

    wait_for(lambda: early.messages(), what="live message")
    [(t, payload, _)] = early.messages()
    assert t == topic and json.loads(payload) == doc

    late = subscribe(broker, prefix, subscribers)
    assert late.settle() == [(topic, payload, True)]


def test_newer_state_replaces_the_retained_one(
        broker: Mosquitto, channel: MqttAlertChannel, prefix: str,
        subscribers: list[Subscriber]) -> None:
    topic = f"{prefix}/102"
    channel.send(message(topic, body("alert.opened", 102)))
    escalated = body("alert.escalated", 102, escalation={"step": 1, "cycle": 0, "action": "call"})
    channel.send(message(topic, escalated))
    [(t, payload, retained)] = subscribe(broker, prefix, subscribers).settle()
    assert (t, retained) == (topic, True)
    assert json.loads(payload) == escalated


def test_resolve_publishes_the_document_then_clears_the_retained_state(
        broker: Mosquitto, channel: MqttAlertChannel, prefix: str,
        subscribers: list[Subscriber]) -> None:
    topic, other = f"{prefix}/103", f"{prefix}/104"
    channel.send(message(topic, body("alert.opened", 103)))
    channel.send(message(other, body("alert.opened", 104)))
    live = subscribe(broker, prefix, subscribers)
    live.settle()  # drains the two retained states

    resolved = body("alert.resolved", 103)
    receipt = channel.send(message(topic, resolved))
    assert receipt.detail == {"topic": topic, "retained": False}

    after = [m for m in live.settle() if not m[2]]
    # Live: the resolved document, then the empty clearing message, in that order.
    assert [(t, json.loads(p) if p else None) for t, p, _ in after] == [
        (topic, resolved), (topic, None)]
    # A newcomer sees only the alert still open.
    fresh = subscribe(broker, prefix, subscribers).settle()
    assert [t for t, _, _ in fresh] == [other]


def test_chinese_text_survives_as_utf8(
        broker: Mosquitto, channel: MqttAlertChannel, prefix: str,
        subscribers: list[Subscriber]) -> None:
    topic = f"{prefix}/105"
    doc = body("alert.opened", 105, note="老人在卫生间跌倒，请立即上门查看")
    channel.send(message(topic, doc))
    [(_, payload, _)] = subscribe(broker, prefix, subscribers).settle()
    assert "老人在卫生间跌倒".encode() in payload  # raw UTF-8, not \\u escapes
    assert json.loads(payload.decode("utf-8")) == doc


def test_concurrent_sends_from_worker_threads(
        broker: Mosquitto, channel: MqttAlertChannel, prefix: str,
        subscribers: list[Subscriber]) -> None:
    errors: list[BaseException] = []

    def work(start: int) -> None:
        try:
            for i in range(start, start + 10):
                channel.send(message(f"{prefix}/{i}", body("alert.opened", i)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n * 100,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    got = subscribe(broker, prefix, subscribers).settle()
    assert sorted(int(t.rsplit("/", 1)[1]) for t, _, _ in got) == sorted(
        n * 100 + i for n in range(4) for i in range(10))


def test_broker_down_fails_retryable_then_reconnects(tmp_path: Path, prefix: str) -> None:
    own = Mosquitto(tmp_path / "mosquitto")  # our own broker: the shared one keeps running
    own.start()
    channel = MqttAlertChannel(own.url, client_id="alerts-" + uuid.uuid4().hex[:8],
                               timeout_s=0.5)
    try:
        topic = f"{prefix}/106"
        channel.send(message(topic, body("alert.opened", 106)))
        own.stop()
        wait_for(lambda: not channel.connected, what="disconnect noticed")
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as err:
            channel.send(message(topic, body("alert.escalated", 106)))
        assert err.value.retryable is True
        assert time.monotonic() - started < 1.0  # bounded by timeout_s, not by reconnects

        own.start()  # same port and persistence: paho reconnects on its own
        wait_for(lambda: channel.connected, what="reconnect")
        channel.send(message(topic, body("alert.acknowledged", 106)))
    finally:
        channel.close()
        own.stop()


def test_broker_unreachable_at_start_fails_retryable_within_timeout(prefix: str) -> None:
    channel = MqttAlertChannel(f"mqtt://127.0.0.1:{free_port()}", client_id="alerts-x",
                               timeout_s=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryFailed) as err:
            channel.send(message(f"{prefix}/107", body("alert.opened", 107)))
        assert err.value.retryable is True
        assert time.monotonic() - started < 1.0
    finally:
        channel.close()


def test_wildcard_topic_is_a_permanent_failure(channel: MqttAlertChannel, prefix: str) -> None:
    wait_for(lambda: channel.connected, what="connect")
    with pytest.raises(DeliveryFailed) as err:
        channel.send(message(f"{prefix}/#", body("alert.opened", 108)))
    assert err.value.retryable is False


def test_closed_channel_refuses_retryable(channel: MqttAlertChannel, prefix: str) -> None:
    channel.close()
    with pytest.raises(DeliveryFailed) as err:
        channel.send(message(f"{prefix}/109", body("alert.opened", 109)))
    assert err.value.retryable is True


def test_falls_back_to_mqtt_311_for_amqtt(prefix: str) -> None:
    with EmbeddedBroker() as amqtt:  # speaks 3.1.1 only, like ``eldercare demo``
        strict = MqttAlertChannel(amqtt.url, client_id="alerts-" + uuid.uuid4().hex[:8],
                                  protocol="5", timeout_s=0.3)
        auto = MqttAlertChannel(amqtt.url, client_id="alerts-" + uuid.uuid4().hex[:8])
        sub = Subscriber(amqtt.url, prefix, protocol=mqtt.MQTTv311)
        try:
            with pytest.raises(DeliveryFailed):
                strict.send(message(f"{prefix}/110", body("alert.opened", 110)))
            auto.send(message(f"{prefix}/110", body("alert.opened", 110)))
            [(topic, payload, _)] = sub.settle()
            assert topic == f"{prefix}/110"
            assert json.loads(payload) == body("alert.opened", 110)
        finally:
            sub.close()
            auto.close()
            strict.close()


@pytest.mark.parametrize(("url", "expected"), [
    ("mqtt://127.0.0.1:1884", MqttEndpoint(host="127.0.0.1", port=1884)),
    ("mqtts://broker.example", MqttEndpoint(host="broker.example", port=8883, tls=True)),
    ("mqtt://u%40x:p%3Aw@h", MqttEndpoint(host="h", port=1883, username="u@x", password="p:w")),
])
def test_urls_parse(url: str, expected: MqttEndpoint) -> None:
    assert MqttEndpoint.from_url(url) == expected


@pytest.mark.parametrize("url", ["http://h:1883", "mqtt://", "mqtt://h:notaport"])
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        MqttEndpoint.from_url(url)
