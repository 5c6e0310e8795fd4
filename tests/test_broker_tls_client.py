"""eldercare's own MQTT clients over TLS, against the production broker (issue #7).

Mosquitto runs the shipped ``deploy/mosquitto/production.conf`` (tests/tls_broker.py: a throwaway
CA, a password file, the ACL :func:`eldercare.broker_acl.render_acl` generates). The ingest source,
the MQTT alert channel and the device simulator connect to its TLS listener configured as an
operator would ([mqtt] ``url = "mqtts://localhost:<port>"``, ``username``, ``password_file``,
``ca_file``; [alerts.mqtt] for the alert channel's own login), each with the account the ACL
names. Refused certificates must fail at once with the reason, never as a time-out. The second
half checks the options themselves, without a broker.
"""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from alerts.channels.base import DeliveryFailed, Message
from alerts.channels.mqtt import MqttAlertChannel, channel_address
from alerts.service import build_channels
from device_sim.publisher import MqttLink
from device_sim.recording import write_recording
from device_sim.types import Publication
from eldercare.broker_acl import AlertReader, BrokerClients, render_acl
from eldercare.config import Config, load_config
from foundation.broker import BrokerAddress
from foundation.clock import SystemClock
from foundation.errors import BrokerError, ConfigError
from ingest.buffer import Message as BufferedMessage
from ingest.buffer import MessageBuffer
from ingest.metrics import IngestMetrics
from ingest.source import MqttSource
from schemas import SUBSCRIPTIONS
from schemas.registry import parse_registry
from schemas.topics import device_topic
from tests.tls_broker import (
    TIMEOUT_S,
    Peer,
    SecureMosquitto,
    make_client_cert,
    make_pki,
    write_passwords,
)

ROOT = Path(__file__).parent.parent
DEVICE = "D-1"
READER = "centre"
USERS = ("eldercare-ingest", "eldercare-alerts", DEVICE, READER)


@dataclass(frozen=True, kw_only=True)
class Site:
    """The module's PKI, logins (one password file each, as the service reads them) and ACL."""

    region: str
    ca: Path
    cert: Path
    key: Path
    other_ca: Path
    client_cert: Path
    client_key: Path
    passwords: dict[str, str]
    passwd: Path
    acl: str
    dir: Path

    def password_file(self, user: str) -> Path:
        return self.dir / f"{user}.password"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    d = tmp_path_factory.mktemp("tls-client")
    ca, cert, key = make_pki(d)
    other_ca, _, _ = make_pki(tmp_path_factory.mktemp("other-ca"))
    client_cert, client_key = make_client_cert(d, "eldercare-ingest")
    passwords = {u: secrets.token_urlsafe(16) for u in USERS}
    write_passwords(d / "passwd", passwords)
    for user, password in passwords.items():
        (d / f"{user}.password").write_text(password + "\n")  # as `echo ... >` leaves it
    region = "t" + uuid.uuid4().hex[:8]
    registry = parse_registry(msgspec.json.encode({"wearers": [
        {"id": "W-1", "name": "test wearer", "region": region,
         "devices": [{"id": DEVICE, "kind": "bracelet"}]}]}), fmt="json")
    acl = render_acl(registry, clients=BrokerClients(
        alert_readers=[AlertReader(username=READER, regions=(region,))]))
    return Site(region=region, ca=ca, cert=cert, key=key, other_ca=other_ca,
                client_cert=client_cert, client_key=client_key, passwords=passwords,
                passwd=d / "passwd", acl=acl, dir=d)


@pytest.fixture
def broker(site: Site, tmp_path: Path) -> Iterator[SecureMosquitto]:
    b = SecureMosquitto(tmp_path / "mosquitto", acl=site.acl, passwd=site.passwd, ca=site.ca,
                        cert=site.cert, key=site.key)
    b.start()
    yield b
    b.stop()


def service_config(site: Site, port: int, tmp_path: Path, *, host: str = "localhost",
                   extra: str = "") -> Config:
    """The service's configuration file as deploy/mosquitto/README.md writes it."""
    path = tmp_path / "eldercare.toml"
    path.write_text(f"""
[mqtt]
url = "mqtts://{host}:{port}"
username = "eldercare-ingest"
password_file = "{site.password_file('eldercare-ingest')}"
ca_file = "{site.ca}"
client_id = "eldercare-ingest"
{extra}
[alerts.mqtt]
username = "eldercare-alerts"
password_file = "{site.password_file('eldercare-alerts')}"
""")
    return load_config(path=path, env={})


def new_source(address: BrokerAddress) -> MqttSource:
    return MqttSource(address=address, client_id="eldercare-ingest", subscriptions=SUBSCRIPTIONS,
                      buffer=MessageBuffer(max_messages=100, max_bytes=1 << 20),
                      clock=SystemClock(), metrics=IngestMetrics())


@contextmanager
def running(source: MqttSource) -> Iterator[MqttSource]:
    source.start(timeout_s=TIMEOUT_S)
    try:
        yield source
    finally:
        source.stop()


def receive(source: MqttSource, n: int) -> list[bytes]:
    """``n`` payloads from the source's buffer, acknowledged."""
    got: list[BufferedMessage] = []
    deadline = time.monotonic() + TIMEOUT_S
    while len(got) < n and time.monotonic() < deadline:
        got += source.buffer.take(n - len(got), timeout_s=0.1)
    source.ack(got)
    assert len(got) == n, f"{len(got)} of {n} messages"
    return [m.payload for m in got]


def device(site: Site, broker: SecureMosquitto) -> Peer:
    peer = Peer(port=broker.port, username=DEVICE, password=site.passwords[DEVICE], ca=site.ca)
    rc = peer.connect()
    assert rc is not None and not rc.is_failure, rc
    return peer


# -- against the broker ----------------------------------------------------------------------

def test_ingest_receives_a_reading_over_tls_under_its_own_login(
        site: Site, broker: SecureMosquitto, tmp_path: Path) -> None:
    config = service_config(site, broker.port, tmp_path)
    with running(new_source(BrokerAddress.from_config(config.mqtt))) as source:
        peer = device(site, broker)
        try:
            peer.send(device_topic(site.region, DEVICE), b"reading")
        finally:
            peer.close()
        assert receive(source, 1) == [b"reading"]
        assert source.negotiated == "5"
    assert "u'eldercare-ingest'" in broker.log()


def test_readings_queued_while_ingest_is_down_survive_its_restart(
        site: Site, broker: SecureMosquitto, tmp_path: Path) -> None:
    """The TLS listener names sessions after the login: a version probe logging in as
    eldercare-ingest with a clean start would discard the queue (ingest/source.py)."""
    address = BrokerAddress.from_config(service_config(site, broker.port, tmp_path).mqtt)
    with running(new_source(address)):
        pass  # the persistent session and its subscriptions now exist
    peer = device(site, broker)
    try:
        for i in range(3):
            peer.send(device_topic(site.region, DEVICE), b"queued %d" % i)
    finally:
        peer.close()
    with running(new_source(address)) as source:  # protocol "auto": probes first
        assert receive(source, 3) == [b"queued 0", b"queued 1", b"queued 2"]


@pytest.mark.parametrize("wrong", ["ca", "host"])
def test_a_refused_certificate_fails_every_client_at_once_with_its_reason(
        site: Site, broker: SecureMosquitto, tmp_path: Path, wrong: str) -> None:
    config = service_config(site, broker.port, tmp_path,
                            host="127.0.0.2" if wrong == "host" else "localhost")
    mqtt = config.mqtt
    if wrong == "ca":
        mqtt = msgspec.structs.replace(mqtt, ca_file=str(site.other_ca))
    reason = ("self-signed certificate in certificate chain" if wrong == "ca"
              else "IP address mismatch")
    address = BrokerAddress.from_config(mqtt)
    started = time.monotonic()
    source = new_source(address)
    with pytest.raises(BrokerError, match=f"certificate was refused.*{reason}"):
        source.start(timeout_s=30)  # fails at once, not after 30 s
    with pytest.raises(BrokerError, match=reason):
        MqttAlertChannel(channel_address(mqtt, config.alerts.mqtt), client_id="alerts-x")
    with pytest.raises(BrokerError, match=reason), MqttLink(address):
        pass
    assert time.monotonic() - started < 5


def test_alert_channel_publishes_over_tls_under_its_own_login(
        site: Site, broker: SecureMosquitto, tmp_path: Path) -> None:
    config = service_config(site, broker.port, tmp_path)
    topic = f"eldercare/v1/{site.region}/alerts/{uuid.uuid4().hex[:8]}"
    reader = Peer(port=broker.port, username=READER, password=site.passwords[READER],
                  ca=site.ca)
    channels = build_channels(config.alerts, broker=config.mqtt, clock=SystemClock())
    # The ingest login, which the ACL does not let publish alerts.
    as_ingest = MqttAlertChannel(BrokerAddress.from_config(config.mqtt), client_id="x",
                                 timeout_s=TIMEOUT_S)
    try:
        assert reader.connect() is not None
        reader.subscribe(f"eldercare/v1/{site.region}/alerts/#")
        [channel] = [c for c in channels if c.name == "mqtt"]
        receipt = channel.send(alert_message(topic, {"event": "alert.opened"}))
        assert receipt.detail == {"topic": topic, "retained": True}
        reader.wait_for(b'{"event":"alert.opened"}')
        with pytest.raises(DeliveryFailed):
            as_ingest.send(alert_message(topic, {"event": "alert.forged"}))
    finally:
        as_ingest.close()
        for c in channels:
            c.close()
        reader.close()
    assert "u'eldercare-alerts'" in broker.log()
    assert reader.payloads() == [b'{"event":"alert.opened"}']


def alert_message(topic: str, body: dict[str, object]) -> Message:
    return Message(delivery_id=1, alert_id=1, channel="mqtt", recipient="platform",
                   address=topic, language="zh", idempotency_key=uuid.uuid4().hex, attempt=1,
                   body=body)


def test_simulator_replays_over_tls_with_the_devices_login(
        site: Site, broker: SecureMosquitto, tmp_path: Path) -> None:
    topic = device_topic(site.region, DEVICE)
    pubs = [Publication(1_700_000_000_000 + i, topic,
                        [{"type": "heartbeat", "ts": 1_700_000_000_000 + i, "seq": i}], False)
            for i in range(3)]
    out = io.BytesIO()
    write_recording(pubs, out)
    (tmp_path / "rec.jsonl").write_bytes(out.getvalue())
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELDERCARE_")}
    address = BrokerAddress.from_config(service_config(site, broker.port, tmp_path).mqtt)
    with running(new_source(address)) as source:
        done = subprocess.run(
            [sys.executable, "-m", "eldercare.cli", "sim", "replay", str(tmp_path / "rec.jsonl"),
             "--mqtt-url", f"mqtts://localhost:{broker.port}", "--ca-file", str(site.ca),
             "--username", DEVICE, "--password-file", str(site.password_file(DEVICE)),
             "--max-speed"], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert [msgspec.json.decode(p)["seq"] for p in receive(source, 3)] == [0, 1, 2]
    assert f"u'{DEVICE}'" in broker.log()


def test_a_client_certificate_is_presented_when_the_broker_requires_one(
        site: Site, tmp_path: Path) -> None:
    broker = SecureMosquitto(tmp_path / "mosquitto", acl=site.acl, passwd=site.passwd,
                             ca=site.ca, cert=site.cert, key=site.key, require_certificate=True)
    broker.start()
    try:
        config = service_config(site, broker.port, tmp_path, extra=(
            f'cert_file = "{site.client_cert}"\nkey_file = "{site.client_key}"\n'))
        with running(new_source(BrokerAddress.from_config(config.mqtt))) as source:
            assert source.negotiated == "5"
        # Without one, TLS 1.3 completes the handshake and the broker then closes the
        # connection: that ends the start at once too, saying where to look.
        without = service_config(site, broker.port, tmp_path)
        started = time.monotonic()
        with pytest.raises(BrokerError, match="closed the connection without answering"):
            new_source(BrokerAddress.from_config(without.mqtt)).start(timeout_s=30)
        assert time.monotonic() - started < 5
    finally:
        broker.stop()


# -- the options, without a broker -----------------------------------------------------------

def mqtt_options(**options: str) -> Config:
    return load_config(path=None, env={},
                       overrides={f"mqtt.{k}": v for k, v in options.items()})


@pytest.mark.parametrize(("url", "tls", "port"), [
    ("mqtts://broker.example", True, 8883), ("mqtt://broker.example", False, 1883),
    ("mqtts://broker.example:9883", True, 9883), ("ssl://broker.example", True, 8883),
])
def test_scheme_sets_tls_and_the_default_port(url: str, tls: bool, port: int) -> None:
    address = BrokerAddress.from_url(url)
    assert (address.tls, address.port) == (tls, port)


def test_password_comes_from_its_file_and_stays_out_of_repr(site: Site, tmp_path: Path) -> None:
    config = service_config(site, 8883, tmp_path)
    address = BrokerAddress.from_config(config.mqtt)
    assert address.username == "eldercare-ingest"
    assert address.password == site.passwords["eldercare-ingest"]  # without the newline
    assert site.passwords["eldercare-ingest"] not in repr(address)
    assert str(address) == "mqtts://localhost:8883"


def test_alert_channel_login_falls_back_to_ingest_only_without_tls(
        site: Site, tmp_path: Path) -> None:
    config = service_config(site, 8883, tmp_path)
    own = channel_address(config.mqtt, config.alerts.mqtt)
    assert (own.username, own.password) == ("eldercare-alerts", site.passwords["eldercare-alerts"])
    assert (own.host, own.port, own.ca_file) == ("localhost", 8883, str(site.ca))
    plain = mqtt_options(url="mqtt://eldercare-ingest:pw@127.0.0.1")
    shared = channel_address(plain.mqtt, plain.alerts.mqtt)
    assert (shared.username, shared.password) == ("eldercare-ingest", "pw")
    without = msgspec.structs.replace(config.alerts.mqtt, username=None, password_file=None)
    with pytest.raises(ConfigError, match=r"\[alerts.mqtt\] username is not set"):
        channel_address(config.mqtt, without)


def test_bad_tls_and_login_options_are_config_errors(site: Site, tmp_path: Path) -> None:
    encrypted = tmp_path / "encrypted.key"
    subprocess.run(["openssl", "pkey", "-in", str(site.client_key), "-aes256", "-passout",
                    "pass:secret", "-out", str(encrypted)], check=True, capture_output=True)
    (tmp_path / "two-lines").write_text("a\nb\n")
    url = "mqtts://localhost"
    cases: list[tuple[dict[str, str], str]] = [
        ({"url": url, "ca_file": str(tmp_path / "missing.pem")},
         r"\[mqtt\] ca_file .*missing.pem: No such file"),
        ({"url": url, "ca_file": str(site.client_key)}, "no PEM certificate"),
        ({"url": url, "cert_file": str(site.client_cert)},
         "cert_file is set but key_file is not"),
        ({"url": url, "key_file": str(site.client_key)}, "key_file is set but cert_file is not"),
        ({"url": url, "cert_file": str(site.cert), "key_file": str(site.client_key)},
         "the key does not belong to the certificate"),
        ({"url": url, "cert_file": str(site.client_cert), "key_file": str(encrypted)},
         "is encrypted"),
        ({"url": "mqtt://localhost", "ca_file": str(site.ca)}, "not mqtts://"),
        ({"url": url, "username": "u", "password_file": str(tmp_path / "missing")},
         r"\[mqtt\] password_file .*No such file"),
        ({"url": url, "username": "u", "password_file": str(tmp_path / "two-lines")},
         "one line"),
        ({"url": "mqtts://a@localhost", "username": "b"}, "give the login once"),
        ({"url": url, "password_file": str(site.password_file(DEVICE))}, "needs a username"),
        ({"url": "http://localhost"}, "must look like mqtt://"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            BrokerAddress.from_config(mqtt_options(**options).mqtt)


def test_the_ingest_service_stores_a_reading_received_over_tls(
        site: Site, broker: SecureMosquitto, tmp_path: Path, db_url: str) -> None:
    """`eldercare run` as deployed: the whole service takes its broker login and TLS files from
    [mqtt], and its alert channel its own login from [alerts.mqtt]."""
    from eldercare.app import Application
    from tests.conftest import count, now_ms, wait_for

    config = service_config(site, broker.port, tmp_path, extra=f"""
[database]
url = "{db_url}"
[metrics]
port = 0
[api]
port = 0
""")
    with Application(config) as svc:
        assert svc.ingest.source.negotiated == "5"
        peer = device(site, broker)
        try:
            peer.send(device_topic(site.region, DEVICE), msgspec.json.encode(
                {"type": "heartbeat", "ts": now_ms(), "battery_pct": 80}))
        finally:
            peer.close()
        wait_for(lambda: count(db_url, "SELECT count(*) FROM readings WHERE device_id = %s",
                               DEVICE) == 1, TIMEOUT_S, "the reading stored")
