"""What the ingest source subscribes to, and what it drops before the buffer (schemas/topics.py).

The source subscribes to ``eldercare/v1/#``; eldercare's own non-reading namespaces (``alerts``,
``cmd``) are acknowledged and counted on receipt, never buffered. Against a private Mosquitto
per test, so that retained messages other tests leave on the shared broker cannot be counted
here. (tests/test_ingest_e2e.py shows the dead letters of wrong topics in the database.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from foundation.broker import BrokerAddress
from foundation.clock import SystemClock
from ingest.buffer import Message, MessageBuffer
from ingest.metrics import IngestMetrics
from ingest.source import MqttSource
from schemas.topics import (
    RETIRED_SUBSCRIPTIONS,
    SERVICE_NAMESPACES,
    SUBSCRIPTIONS,
    device_topic,
    service_namespace,
)
from tests.services import Mosquitto

PROTOCOLS = pytest.mark.parametrize("protocol", ["5", "3.1.1"])


class Sources:
    """Starts sources on one broker under one client id (one persistent session)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.client_id = "ingest-" + uuid.uuid4().hex[:8]
        self.running: list[MqttSource] = []

    def start(self, *, protocol: Literal["5", "3.1.1"] = "5", **options: Any) -> MqttSource:
        source = MqttSource(
            address=BrokerAddress.from_url(self.broker.url), client_id=self.client_id,
            subscriptions=options.pop("subscriptions", SUBSCRIPTIONS),
            buffer=MessageBuffer(max_messages=1000, max_bytes=1 << 24), clock=SystemClock(),
            metrics=IngestMetrics(), protocol=protocol, **options)
        source.start(timeout_s=10)
        self.running.append(source)
        return source

    def stop(self, source: MqttSource) -> None:
        source.stop()
        self.running.remove(source)


@pytest.fixture
def sources(private_broker: Mosquitto) -> Iterator[Sources]:
    s = Sources(private_broker)
    yield s
    for source in list(s.running):
        source.stop()


class Pub:
    """A QoS 1 publisher that waits for each PUBACK."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                                  client_id="pub-" + uuid.uuid4().hex[:8])
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def pub(private_broker: Mosquitto) -> Iterator[Pub]:
    p = Pub(private_broker)
    yield p
    p.close()


def drain_until(source: MqttSource, marker: bytes, timeout_s: float = 10.0) -> list[Message]:
    """Every message buffered up to and including the one whose payload is ``marker``, then
    anything more arriving within 0.3 s (a duplicate would); all acknowledged."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while not any(m.payload == marker for m in got):
        assert time.monotonic() < deadline, f"{marker!r} never arrived; got {got}"
        got += source.buffer.take(100, timeout_s=0.2)
    got += source.buffer.take(100, timeout_s=0.3)
    source.ack(got)
    return got


def ignored(source: MqttSource, namespace: str) -> float:
    return source.metrics.value("eldercare_mqtt_ignored_messages_total", namespace=namespace)


# -- the namespace test, unit ----------------------------------------------------------------

@pytest.mark.parametrize("topic", [
    "eldercare/v1/371002/alerts/17", "eldercare/v1/371002/alerts", "eldercare/v1/371002/alerts/",
    "eldercare/v1/x y/alerts/17/extra", "eldercare/v1//cmd/BR-1", "eldercare/v1/371002/cmd/BR-1",
    "eldercare/v1/371002/cmd/BR-1/result", "eldercare/v1/371002/dev/BR-1",
    "eldercare/v1/371002/gw/GW-1", "eldercare/v1/371002/foo/X", "eldercare/v1/371002",
    "eldercare/v1/alerts/17", "eldercare/v1/371002/x/alerts/17", "eldercare/v2/371002/alerts/1",
    "eldercare/v1/371002/Alerts/1", "eldercare/v1/371002/alertsx/1", "eldercare/v1",
    "Eldercare/v1/371002/alerts/1", "", "/", "eldercare/v1/371002/dev/alerts",
])
def test_service_namespace_draws_the_acl_filters_line(topic: str) -> None:
    """Exactly what eldercare/v1/+/alerts/# and eldercare/v1/+/cmd/# match (broker_acl.py)."""
    expected = next((ns for ns in SERVICE_NAMESPACES
                     if mqtt.topic_matches_sub(f"eldercare/v1/+/{ns}/#", topic)), None)
    assert service_namespace(topic) == expected


def test_the_subscription_takes_every_v1_topic_and_the_retired_ones_are_inside_it() -> None:
    assert SUBSCRIPTIONS == ("eldercare/v1/#",)
    for retired in RETIRED_SUBSCRIPTIONS:  # so unsubscribing them loses nothing
        concrete = retired.replace("+", "x")
        assert mqtt.topic_matches_sub(SUBSCRIPTIONS[0], concrete)


# -- against Mosquitto ---------------------------------------------------------------------------

@PROTOCOLS
def test_own_namespaces_are_acknowledged_and_counted_never_buffered(
        sources: Sources, pub: Pub, protocol: Literal["5", "3.1.1"]) -> None:
    region = "r" + uuid.uuid4().hex[:8]
    source = sources.start(protocol=protocol)
    for topic in (f"eldercare/v1/{region}/alerts/1", f"eldercare/v1/{region}/cmd/BR-1",
                  f"eldercare/v1/{region}/cmd/BR-1/result"):
        pub.send(topic, b"not a reading")
    pub.send(f"eldercare/v1/{region}/foo/BR-1", b"wrong topic")  # to the buffer: dead letter
    pub.send(device_topic(region, "BR-1"), b"marker")
    got = drain_until(source, b"marker")
    assert [m.topic for m in got] == [f"eldercare/v1/{region}/foo/BR-1", device_topic(region, "BR-1")]
    assert (ignored(source, "alerts"), ignored(source, "cmd")) == (1, 2)
    assert source.metrics.value("eldercare_messages_received_total") == 2
    # They were acknowledged: a resumed session gets nothing of them again.
    sources.stop(source)
    again = sources.start(protocol=protocol)
    pub.send(device_topic(region, "BR-1"), b"marker 2")
    assert [m.payload for m in drain_until(again, b"marker 2")] == [b"marker 2"]
    assert (ignored(again, "alerts"), ignored(again, "cmd")) == (0, 0)


@PROTOCOLS
def test_retained_alert_states_come_once_per_new_session_with_mqtt_5(
        sources: Sources, pub: Pub, protocol: Literal["5", "3.1.1"]) -> None:
    """eldercare/v1/# matches every retained alert state (one per open alert). With MQTT 5 the
    subscription asks for them only when it is new; 3.1.1 has no such option, and there each
    reconnect brings them again, dropped on receipt (the production ACL keeps them away)."""
    region = "r" + uuid.uuid4().hex[:8]
    states = [f"eldercare/v1/{region}/alerts/{i}" for i in range(5)]
    for topic in states:
        pub.send(topic, b'{"event":"alert.opened"}', retain=True)
    first = sources.start(protocol=protocol)
    pub.send(device_topic(region, "BR-1"), b"marker")
    assert [m.payload for m in drain_until(first, b"marker")] == [b"marker"]
    assert ignored(first, "alerts") == len(states)
    sources.stop(first)
    resumed = sources.start(protocol=protocol)
    pub.send(device_topic(region, "BR-1"), b"marker 2")
    assert [m.payload for m in drain_until(resumed, b"marker 2")] == [b"marker 2"]
    assert ignored(resumed, "alerts") == (0 if protocol == "5" else len(states))


@PROTOCOLS
def test_a_session_of_an_earlier_version_loses_its_retired_subscriptions(
        sources: Sources, pub: Pub, protocol: Literal["5", "3.1.1"]) -> None:
    """Upgrade: the persistent session still holds eldercare/v1/+/dev/+ and +/gw/+. Beside
    eldercare/v1/# they would make Mosquitto deliver each reading twice under MQTT 5."""
    region = "r" + uuid.uuid4().hex[:8]
    old = sources.start(protocol=protocol, subscriptions=RETIRED_SUBSCRIPTIONS)
    sources.stop(old)
    pub.send(device_topic(region, "BR-1"), b"queued while upgrading")
    new = sources.start(protocol=protocol)
    pub.send(device_topic(region, "BR-1"), b"marker")
    got = [m.payload for m in drain_until(new, b"marker")]
    assert got == [b"queued while upgrading", b"marker"]  # nothing lost, nothing twice
    # Without the clean-up, the overlap is real (this is what the test guards against).
    sources.stop(new)
    kept = sources.start(protocol=protocol, subscriptions=SUBSCRIPTIONS + RETIRED_SUBSCRIPTIONS)
    sources.stop(kept)
    overlap = sources.start(protocol=protocol, retired_subscriptions=())
    pub.send(device_topic(region, "BR-1"), b"marker 2")
    twice = [m.payload for m in drain_until(overlap, b"marker 2")]
    assert twice == [b"marker 2"] * (2 if protocol == "5" else 1)
