"""The ingest source's reconnects against a real Mosquitto, restarted under it (issue #7 review).

Each broker test starts a private Mosquitto (tests/services.py), because restarting the
session's shared broker would cut every other test's connection. Time to reconnect is measured
from the broker listening again to a reading, published the moment it is back, reaching the
buffer: what an SOS waiting in the broker would see.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from foundation.broker import DEFAULT_RECONNECT_MAX_S, Backoff, BrokerAddress, ReconnectPacer
from foundation.clock import SystemClock
from foundation.errors import ConfigError
from ingest.buffer import Message, MessageBuffer
from ingest.metrics import IngestMetrics
from ingest.source import MqttSource
from schemas import SUBSCRIPTIONS, device_topic
from tests.conftest import wait_for
from tests.services import Mosquitto

#: Connection set-up and delivery on a loaded 2-core machine, on top of the backoff ceiling.
SLACK_S = 1.5


@pytest.fixture
def forgetful_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private Mosquitto without persistence: a restart forgets every session."""
    b = Mosquitto(tmp_path / "mosquitto")
    b.conf.write_text(b.conf.read_text().replace("persistence true", "persistence false"))
    b.start()
    yield b
    b.stop()


def make_source(broker: Mosquitto, **options: Any) -> MqttSource:
    return MqttSource(
        address=BrokerAddress.from_url(broker.url), client_id="ingest-" + uuid.uuid4().hex[:8],
        subscriptions=SUBSCRIPTIONS, buffer=MessageBuffer(max_messages=1000, max_bytes=1 << 24),
        clock=SystemClock(), metrics=IngestMetrics(), **options)


def publish(broker: Mosquitto, topic: str, payload: bytes) -> None:
    """One QoS 1 publish on a connection of its own, PUBACK awaited."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5,
                         client_id="pub-" + uuid.uuid4().hex[:8])
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def take_one(source: MqttSource, timeout_s: float) -> Message:
    got = source.buffer.take(1, timeout_s=timeout_s)
    assert got, f"nothing reached the buffer within {timeout_s} s"
    return got[0]


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "ingest.source" and r.levelno >= logging.WARNING]


# -- against a real broker ---------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_after_a_broker_restart_a_waiting_sos_arrives_within_the_backoff_ceiling(
        private_broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """8 s down: paho's old 1-30 s doubling retried at 1, 3, 7 and 15 s, 7 s after the broker was
    back (an outage of 20 s cost 11 s); with the 2 s ceiling at most 2 s pass."""
    caplog.set_level(logging.INFO, logger="ingest.source")
    source = make_source(private_broker, protocol="5")
    source.start(timeout_s=10)
    topic = device_topic("r" + uuid.uuid4().hex[:8], "WT-1")
    try:
        private_broker.stop()
        time.sleep(8.0)  # long enough for the backoff to reach its ceiling
        private_broker.start()  # returns once the port listens
        back = time.monotonic()
        publish(private_broker, topic, b'{"type":"sos","ts":1790000000000}')  # queued in our session
        message = take_one(source, timeout_s=30)
        took = time.monotonic() - back
    finally:
        source.stop()
    assert message.topic == topic
    assert took <= DEFAULT_RECONNECT_MAX_S + SLACK_S, f"reconnected {took:.2f} s after the broker"
    assert source.metrics.value("eldercare_mqtt_sessions_lost_total") == 0
    resumed = [r.getMessage() for r in caplog.records if "MQTT session resumed" in r.getMessage()]
    assert len(resumed) == 1 and " s away" in resumed[0], resumed
    assert [w for w in warnings_of(caplog) if "session" in w] == []


def test_a_session_the_broker_lost_is_warned_about_and_counted(
        forgetful_broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ingest.source")
    source = make_source(forgetful_broker, protocol="5")
    source.start(timeout_s=10)
    try:
        # The first session of a client id is new, not lost: no warning, nothing counted.
        assert warnings_of(caplog) == []
        assert source.metrics.value("eldercare_mqtt_sessions_lost_total") == 0
        forgetful_broker.stop()
        forgetful_broker.start()
        wait_for(lambda: source.metrics.value("eldercare_mqtt_sessions_lost_total") == 1,
                 timeout_s=10, what="the lost session counted")
        lost = [w for w in warnings_of(caplog) if "session" in w]
        assert len(lost) == 1 and "MQTT session started anew" in lost[0], lost
        assert "may be lost" in lost[0] and source.client_id in lost[0]
        # The new session has our subscription again: readings flow.
        wait_for(lambda: source.metrics.value("eldercare_mqtt_connected") == 1, timeout_s=10,
                 what="connected")
        topic = device_topic("r" + uuid.uuid4().hex[:8], "WT-1")
        deadline = time.monotonic() + 10
        while True:  # the SUBSCRIBE follows the CONNACK: retry until it is in place
            publish(forgetful_broker, topic, b'{"type":"sos","ts":1790000000000}')
            got = source.buffer.take(1, timeout_s=0.5)
            if got or time.monotonic() > deadline:
                break
        assert got and got[0].topic == topic
    finally:
        source.stop()


def test_a_broker_that_never_comes_back_is_retried_at_the_ceiling(
        private_broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    """The configured ceiling holds: attempts keep coming (not one per 30 s), and the outage is
    logged once, not once per attempt."""
    caplog.set_level(logging.DEBUG, logger="ingest.source")
    source = make_source(private_broker, protocol="5", reconnect_max_s=0.3)
    source.start(timeout_s=10)
    try:
        private_broker.stop()
        time.sleep(3.0)
    finally:
        source.stop()
    attempts = [r for r in caplog.records if "reconnect to" in r.getMessage()]
    # 3 s at <= 0.3 s apart, after a start at 0.1 s: 10 attempts at least.
    assert len(attempts) >= 8, len(attempts)
    assert len([w for w in warnings_of(caplog) if "connection lost" in w]) == 1


# -- the backoff alone ---------------------------------------------------------------------------

class FakeClient:
    """Records what a pacer sets, as paho's ``reconnect_delay_set`` would keep it."""

    def __init__(self) -> None:
        self.delays: list[tuple[float, float]] = []

    def reconnect_delay_set(self, min_delay: float, max_delay: float) -> None:
        self.delays.append((min_delay, max_delay))


def test_backoff_doubles_with_jitter_up_to_its_ceiling() -> None:
    backoff = Backoff(first_s=0.1, max_s=2.0)
    for attempt, ceiling in enumerate([0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0]):
        delays = [backoff.delay_s(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays))
        assert max(delays) - min(delays) > ceiling / 10  # jittered
    assert backoff.delay_s(10_000) <= 2.0  # no overflow however long the outage


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_backoff_refuses_a_ceiling_that_is_not_a_positive_number(bad: float) -> None:
    with pytest.raises(ConfigError, match="reconnect_max_s"):
        Backoff(max_s=bad)


def test_pacer_restarts_the_count_only_after_a_stable_connection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("foundation.broker.time.monotonic", lambda: now[0])
    pacer = ReconnectPacer(Backoff(first_s=0.1, max_s=2.0), stable_s=10.0)
    client = FakeClient()
    pacer.attach(client)  # type: ignore[arg-type]
    waits = [pacer.next_wait(client) for _ in range(6)]  # type: ignore[arg-type]
    assert waits[-1] >= 1.0  # climbed towards the ceiling
    assert all(lo == hi for lo, hi in client.delays)  # min = max: paho doubles nothing itself
    pacer.connected()
    now[0] += 1.0  # accepted, then dropped at once (a session taken over): keep climbing
    assert pacer.next_wait(client) >= 1.0  # type: ignore[arg-type]
    pacer.connected()
    now[0] += 10.0  # a connection that held: the next outage starts from the first delay
    assert pacer.next_wait(client) <= 0.1  # type: ignore[arg-type]
