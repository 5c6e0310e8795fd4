"""The production broker configuration against a real Mosquitto (issue #7, Security: Broker).

Each test starts Mosquitto (the Debian 2.0 binary, as tests/services.py does) with the shipped
``deploy/mosquitto/production.conf`` itself, only its paths and ports replaced, a throwaway CA and
server certificate made with the openssl CLI, a ``password_file`` made with ``mosquitto_passwd``,
and the ACL that :func:`eldercare.broker_acl.render_acl` generates from a registry. Devices,
gateways and readers connect over TLS with paho-mqtt 2, as in the field; the ingest and alerts
accounts connect on the loopback listener, as the service does today.

Non-delivery is proved, never assumed from silence: the ACL under test gets one extra, test-only
user, ``audit``, that reads ``#``. Once a refused publish is answered (PUBACK, or the connection
closed), the publisher sends a marker it is allowed to publish. Mosquitto handles packets one at a
time and queues a PUBLISH's deliveries before it answers it, so once the auditor holds the marker,
anything the refused message could have reached would have arrived first. For a subscriber, a
QoS 1 publish of its own is the barrier: its PUBACK follows any delivery queued before it on that
connection, and paho handles them in that order.

Mosquitto 2.0 answers an unauthorised publish with PUBACK reason 135 (not authorised) under
MQTT 5 and with a plain PUBACK under 3.1.1 (the message is dropped silently); it grants an
unauthorised SUBSCRIBE and then filters every delivery. Mosquitto up to 2.0.21 then also closes
the publisher's connection when ``max_queued_messages`` is 0, as production.conf must set it
(upstream issue #3244: ``out_packet_count >= 0`` always reads as "quota exceeded"). The tests
accept each of these answers, send every refused publish on a connection of its own, and always
assert non-delivery.
"""

from __future__ import annotations

import os
import secrets
import socket
import ssl
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from eldercare.broker_acl import AlertReader, BrokerClients, GatewayEntry, render_acl
from schemas.registry import parse_registry
from schemas.topics import SUBSCRIPTIONS, device_topic, gateway_topic
from tests.tls_broker import (
    PRODUCTION_CONF,
    TIMEOUT_S,
    Peer,
    SecureMosquitto,
    make_pki,
    write_passwords,
)

NOT_AUTHORIZED = 135
AUDITOR = "audit"
#: Test-only: may write anywhere in eldercare/v1, as an over-broad grant some day might.
TOOL = "tool"
#: A city, a district of its region tree, and a street the registry names (D-S's wearer).
CITY, DISTRICT, STREET = "3710", "371002", "371002001"


# -- certificates, credentials, ACL (tests/tls_broker.py makes them) ------------------------

@dataclass(frozen=True, kw_only=True)
class Fleet:
    """The registry of the module's tests, its ACL, every user's password and the PKI."""

    r1: str
    r2: str
    acl: str
    passwords: dict[str, str]
    ca: Path
    cert: Path
    key: Path
    passwd: Path


def fleet_acl(r1: str, r2: str, *, devices: dict[str, str]) -> str:
    """The generated ACL for ``devices`` (id -> region), plus the test-only auditor."""
    registry = parse_registry(msgspec.json.encode({"wearers": [
        {"id": f"W-{dev}", "name": "test wearer", "region": region,
         "devices": [{"id": dev, "kind": "bracelet"}]} for dev, region in devices.items()
    ]}), fmt="json")
    clients = BrokerClients(
        gateways=[GatewayEntry(id="GW-A", region=r1), GatewayEntry(id="GW-B", region=r2)],
        alert_readers=[AlertReader(username="centre-r1", regions=(r1,)),
                       AlertReader(username="city-3710", regions=(CITY,))])
    return render_acl(registry, clients=clients, regions=[CITY, DISTRICT]) + (
        f"\n# test only: reads every topic, to prove a refused message reached no one\n"
        f"user {AUDITOR}\ntopic read #\n"
        f"\n# test only: writes anywhere in contract v1 (wrong topics, commands)\n"
        f"user {TOOL}\ntopic write eldercare/v1/#\n")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    d = tmp_path_factory.mktemp("broker-security")
    ca, cert, key = make_pki(d)
    r1, r2 = "t" + uuid.uuid4().hex[:8], "u" + uuid.uuid4().hex[:8]
    users = ["D-A", "D-B", "D-C", "D-S", "GW-A", "GW-B", "centre-r1", "city-3710",
             "eldercare-ingest",
             "eldercare-alerts", "eldercare-gateway", AUDITOR, TOOL]
    passwords = {u: secrets.token_urlsafe(16) for u in users}
    write_passwords(d / "passwd", passwords)
    acl = fleet_acl(r1, r2, devices={"D-A": r1, "D-B": r1, "D-C": r2, "D-S": STREET})
    return Fleet(r1=r1, r2=r2, acl=acl, passwords=passwords, ca=ca, cert=cert, key=key,
                 passwd=d / "passwd")


# -- the broker ------------------------------------------------------------------------------

@pytest.fixture
def secure_broker(fleet: Fleet, tmp_path: Path) -> Iterator[SecureMosquitto]:
    b = SecureMosquitto(tmp_path / "mosquitto", acl=fleet.acl, passwd=fleet.passwd, ca=fleet.ca,
                        cert=fleet.cert, key=fleet.key)
    b.start()
    yield b
    b.stop()


# -- clients ---------------------------------------------------------------------------------

Connect = Callable[..., Peer]


@pytest.fixture
def peers(secure_broker: SecureMosquitto, fleet: Fleet) -> Iterator[Callable[..., Peer]]:
    """``peers(username, tls=True, **options)``: a Peer, not yet connected, closed at teardown."""
    with ExitStack() as stack:
        def make(username: str | None, *, tls: bool = True, password: str | None = None,
                 **options: Any) -> Peer:
            if password is None and username is not None:
                password = fleet.passwords[username]
            peer = Peer(port=secure_broker.port if tls else secure_broker.local_port, username=username,
                        password=password, ca=fleet.ca if tls else None, **options)
            stack.callback(peer.close)
            return peer
        yield make


@pytest.fixture
def connect(peers: Callable[..., Peer]) -> Connect:
    """``connect(username, tls=True, subscribe=(), **options)``: a connected Peer."""
    def make(username: str, *, subscribe: tuple[str, ...] = (), **options: Any) -> Peer:
        peer = peers(username, **options)
        rc = peer.connect()
        assert rc is not None and not rc.is_failure, f"{username} could not connect: {rc}"
        if subscribe:
            codes = peer.subscribe(*subscribe)
            assert all(not c.is_failure for c in codes), (username, subscribe, codes)
        return peer
    return make


def ingest_topics() -> tuple[str, ...]:
    """What the ingest service subscribes to."""
    return SUBSCRIPTIONS


def refused(peer: Peer, rc: ReasonCode | None) -> bool:
    """What an unauthorised publish may get: reason 135 under MQTT 5, a plain PUBACK under 3.1.1
    (dropped silently), or a closed connection (MQTT 3.1.1 allows it; see module docstring)."""
    return rc is None or rc.value == (NOT_AUTHORIZED if peer.protocol == mqtt.MQTTv5 else 0)


def assert_refused(connect: Connect, username: str, topics: list[str], payload: bytes,
                   **options: Any) -> None:
    """Publish ``payload`` on each of ``topics``, each on a connection of its own, all refused."""
    for topic in topics:
        peer = connect(username, **options)
        rc = peer.publish(topic, payload)
        assert refused(peer, rc), (username, topic, rc)
        peer.close()


# -- the tests -------------------------------------------------------------------------------

PROTOCOLS = pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311],
                                    ids=["mqtt5", "mqtt311"])


@PROTOCOLS
def test_device_publishes_its_own_topic_and_nothing_else(
        connect: Connect, fleet: Fleet, protocol: MQTTProtocolVersion) -> None:
    r1, r2 = fleet.r1, fleet.r2
    audit = connect(AUDITOR, tls=False, subscribe=("#",))
    # Over TLS, as it would from another host; the ACL is the same on both listeners.
    ingest = connect("eldercare-ingest", subscribe=ingest_topics())
    own, nonce = device_topic(r1, "D-A"), uuid.uuid4().hex.encode()

    connect("D-A", protocol=protocol).send(own, b"reading " + nonce)
    ingest.wait_for(b"reading " + nonce)
    assert_refused(connect, "D-A", [
        device_topic(r1, "D-B"),             # another device's readings: spoofing
        device_topic(r2, "D-A"),             # its own id in another region
        gateway_topic(r1, "D-A"),            # a gateway batch under its id
        gateway_topic(r1, "GW-A"),           # a real gateway's topic
        f"eldercare/v1/{r1}/alerts/forged",  # a forged alert
        own + "/extra",                      # below its own topic
        f"eldercare/v1/{r1}/dev",            # above it
        "elsewhere/entirely",
    ], b"forbidden " + nonce, protocol=protocol)
    connect("D-A", protocol=protocol).send(own, b"marker " + nonce)

    audit.wait_for(b"marker " + nonce)
    ingest.wait_for(b"marker " + nonce)
    assert audit.payloads() == [b"reading " + nonce, b"marker " + nonce]
    assert ingest.messages == [(own, b"reading " + nonce), (own, b"marker " + nonce)]


@PROTOCOLS
def test_device_reads_nothing_even_its_own_topic(
        connect: Connect, fleet: Fleet, protocol: MQTTProtocolVersion) -> None:
    r1 = fleet.r1
    audit = connect(AUDITOR, tls=False, subscribe=("#",))
    device = connect("D-A", protocol=protocol)
    for rc in device.subscribe("#", "eldercare/#", device_topic(r1, "D-A"),
                               device_topic(r1, "D-B"), f"eldercare/v1/{r1}/alerts/#",
                               "$SYS/#"):
        # Mosquitto 2.0 grants the SUBACK and filters each delivery; a refusal would do too.
        assert rc.value in (0, 1, 0x80, NOT_AUTHORIZED), rc
    other, gateway = connect("D-B"), connect("GW-A")
    alerts = connect("eldercare-alerts", tls=False)
    nonce = uuid.uuid4().hex.encode()
    sent = [(other, device_topic(r1, "D-B")), (gateway, gateway_topic(r1, "GW-A")),
            (alerts, f"eldercare/v1/{r1}/alerts/A-1"), (device, device_topic(r1, "D-A"))]
    for i, (peer, topic) in enumerate(sent):
        peer.send(topic, b"%d " % i + nonce)
        audit.wait_for(b"%d " % i + nonce)  # routed: every entitled subscriber got it
    # Barrier: deliveries for earlier messages precede this PUBACK on the device's connection.
    device.send(device_topic(r1, "D-A"), b"barrier " + nonce)
    assert device.messages == []


def test_gateway_publishes_its_own_gateway_topic_only(connect: Connect, fleet: Fleet) -> None:
    r1, r2 = fleet.r1, fleet.r2
    audit = connect(AUDITOR, tls=False, subscribe=("#",))
    ingest = connect("eldercare-ingest", tls=False, subscribe=ingest_topics())
    own, nonce = gateway_topic(r1, "GW-A"), uuid.uuid4().hex.encode()

    connect("GW-A").send(own, b"batch " + nonce)
    assert_refused(connect, "GW-A", [
        gateway_topic(r1, "GW-B"), gateway_topic(r2, "GW-A"), device_topic(r1, "D-A"),
        device_topic(r1, "GW-A"), f"eldercare/v1/{r1}/alerts/forged",
    ], b"forbidden " + nonce)
    connect("GW-A").send(own, b"marker " + nonce)

    audit.wait_for(b"marker " + nonce)
    ingest.wait_for(b"marker " + nonce)
    assert audit.payloads() == [b"batch " + nonce, b"marker " + nonce]
    assert ingest.messages == [(own, b"batch " + nonce), (own, b"marker " + nonce)]


def test_alerts_user_publishes_alerts_and_the_ingest_user_cannot(
        connect: Connect, fleet: Fleet) -> None:
    r1, r2 = fleet.r1, fleet.r2
    nonce = uuid.uuid4().hex.encode()
    a1, a2 = f"eldercare/v1/{r1}/alerts/A-{nonce[:6].decode()}", f"eldercare/v1/{r2}/alerts/A-2"
    audit = connect(AUDITOR, tls=False, subscribe=("#",))
    # First: the TLS listener names sessions by login, so a second centre-r1 connection would
    # take over the subscribed one below.
    assert_refused(connect, "centre-r1", [a1], b"forged by a reader " + nonce)
    reader = connect("centre-r1", subscribe=("eldercare/v1/+/alerts/#",))
    ingest = connect("eldercare-ingest", tls=False, subscribe=ingest_topics())
    alerts = connect("eldercare-alerts", tls=False)

    # The alert channel publishes each alert's state retained.
    alerts.send(a1, b"open " + nonce, retain=True)
    alerts.send(a2, b"other region " + nonce)
    assert_refused(connect, "eldercare-ingest", [a1, device_topic(r1, "D-A")],
                   b"forged by ingest " + nonce, tls=False)
    assert_refused(connect, "eldercare-alerts", [device_topic(r1, "D-A"), gateway_topic(r1, "X")],
                   b"forged by alerts " + nonce, tls=False)
    alerts.send(a1, b"marker " + nonce)

    audit.wait_for(b"marker " + nonce)
    reader.wait_for(b"marker " + nonce)
    assert audit.payloads() == [b"open " + nonce, b"other region " + nonce, b"marker " + nonce]
    # A reader of region r1 sees r1's alerts only, although it subscribed to every region.
    assert reader.payloads() == [b"open " + nonce, b"marker " + nonce]
    assert ingest.messages == []  # the ingest account reads readings, never alerts
    reader.close()  # the TLS listener names sessions by login: the late reader would take over
    # A reader arriving later gets the retained state (check_retain_source: its publisher may).
    alerts.send(a1, b"claimed " + nonce, retain=True)
    late = connect("centre-r1", subscribe=(a1,))
    late.wait_for(b"claimed " + nonce)


def test_a_city_reader_reads_its_streets_alerts_and_no_other_region(
        connect: Connect, fleet: Fleet) -> None:
    """Region codes are a hierarchy: the ACL names each code below the reader's (a wildcard
    cannot), so the city's dashboard gets its street's alerts over MQTT."""
    nonce = uuid.uuid4().hex.encode()
    reader = connect("city-3710", subscribe=("eldercare/v1/+/alerts/#",))
    alerts = connect("eldercare-alerts", tls=False)
    for region in (STREET, DISTRICT, CITY, fleet.r1, "3711"):
        alerts.send(f"eldercare/v1/{region}/alerts/A-1", region.encode() + b" " + nonce)
    alerts.send(f"eldercare/v1/{STREET}/alerts/A-2", b"marker " + nonce)
    reader.wait_for(b"marker " + nonce)
    assert reader.payloads() == [f"{r} ".encode() + nonce for r in (STREET, DISTRICT, CITY)] + [
        b"marker " + nonce]


def test_the_device_gateway_speaks_for_devices_and_answers_commands_and_nothing_more(
        connect: Connect, fleet: Fleet) -> None:
    """The vendor-protocol gateway (issue #10) publishes its devices' readings in batches on
    gateway topics (not as any device itself), reads commands
    the alerts account asks and answers on their result topics; it cannot publish alerts or
    commands, and a device cannot command another."""
    r1, nonce = fleet.r1, uuid.uuid4().hex.encode()
    cmd, result = f"eldercare/v1/{r1}/cmd/D-A", f"eldercare/v1/{r1}/cmd/D-A/result"
    audit = connect(AUDITOR, tls=False, subscribe=("#",))
    ingest = connect("eldercare-ingest", tls=False, subscribe=ingest_topics())
    gateway = connect("eldercare-gateway", tls=False, subscribe=("eldercare/v1/+/cmd/+",))
    alerts = connect("eldercare-alerts", tls=False,
                     subscribe=("eldercare/v1/+/cmd/+/result",))
    gateway.send(gateway_topic(r1, "eldercare-gateway-watch"), b"reading " + nonce)
    ingest.wait_for(b"reading " + nonce)
    alerts.send(cmd, b"locate " + nonce)
    gateway.wait_for(b"locate " + nonce)
    gateway.send(result, b"sent " + nonce)
    alerts.wait_for(b"sent " + nonce)
    assert_refused(connect, "eldercare-gateway", [f"eldercare/v1/{r1}/alerts/A-1", cmd,
                                                  device_topic(r1, "D-A")],
                   b"forged by the gateway " + nonce, tls=False)
    assert_refused(connect, "D-A", [f"eldercare/v1/{r1}/cmd/D-B", result],
                   b"forged by a device " + nonce)
    alerts.send(cmd, b"marker " + nonce)
    audit.wait_for(b"marker " + nonce)
    assert [p for p in audit.payloads() if nonce in p] == [
        b"reading " + nonce, b"locate " + nonce, b"sent " + nonce, b"marker " + nonce]
    assert all(b"locate" not in p and b"sent" not in p for p in ingest.payloads())


def test_ingest_reads_all_of_v1_except_alert_states_and_commands(
        connect: Connect, fleet: Fleet) -> None:
    """The ingest account subscribes to eldercare/v1/#: what is published on a wrong topic
    reaches it, to be dead-lettered, instead of being dropped by the broker unseen; alert
    states (retained ones included) and device commands never reach it (the ACL denies them)."""
    r1, nonce = fleet.r1, uuid.uuid4().hex.encode()
    alerts = connect("eldercare-alerts", tls=False)
    alerts.send(f"eldercare/v1/{r1}/alerts/R-1", b"retained " + nonce, retain=True)
    ingest = connect("eldercare-ingest", tls=False, subscribe=ingest_topics())
    tool = connect(TOOL)
    wrong = [f"eldercare/v1/{r1}/foo/D-A", device_topic(r1, "D-A") + "/extra",
             f"eldercare/v1/{r1}", f"eldercare/v1/{r1}/x/alerts"]
    ours = [f"eldercare/v1/{r1}/cmd/D-A", f"eldercare/v1/{r1}/cmd/D-A/result",
            f"eldercare/v1/{r1}/alerts/R-2", f"eldercare/v1/{r1}/alerts"]
    for topic in wrong + ours:
        tool.send(topic, b"sent " + nonce)
    alerts.send(f"eldercare/v1/{r1}/alerts/R-1", b"live " + nonce)
    tool.send(device_topic(r1, "D-A"), b"marker " + nonce)

    ingest.wait_for(b"marker " + nonce)
    assert [topic for topic, _ in ingest.messages] == [*wrong, device_topic(r1, "D-A")]


def tls_handshake(port: int, ctx: ssl.SSLContext) -> str | None:
    """Complete a TLS handshake with the broker; the negotiated version."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        return tls.version()


def test_wrong_password_anonymous_and_plain_mqtt_are_refused(
        secure_broker: SecureMosquitto, peers: Callable[..., Peer], fleet: Fleet) -> None:
    not_authorized = ReasonCode(PacketTypes.CONNACK, "Not authorized")
    assert peers("D-A", password="not-" + fleet.passwords["D-A"]).connect() == not_authorized
    assert peers("D-UNKNOWN", password="x").connect() == not_authorized
    for tls in (True, False):  # the loopback listener is no back door
        assert peers(None, tls=tls).connect() == not_authorized, tls
        rc = peers(None, tls=tls, protocol=mqtt.MQTTv311).connect()
        assert rc is not None and rc.is_failure, (tls, rc)
    # Plain MQTT on the TLS port, valid credentials: the TLS listener never answers a CONNECT.
    plain = Peer(port=secure_broker.port, username="D-A", password=fleet.passwords["D-A"], ca=None)
    try:
        assert plain.connect() is None
    finally:
        plain.close()
    # A client trusting only the system CAs refuses the broker: devices pin the eldercare CA.
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(secure_broker.port, ssl.create_default_context())


def test_tls_1_2_and_1_3_are_accepted_and_1_1_is_refused_by_the_broker(
        secure_broker: SecureMosquitto, fleet: Fleet) -> None:
    def context(version: ssl.TLSVersion) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(fleet.ca))
        # Security level 0 lets this client offer TLS 1.1, so a refusal is the broker's.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = version
        return ctx

    assert tls_handshake(secure_broker.port, context(ssl.TLSVersion.TLSv1_2)) == "TLSv1.2"
    assert tls_handshake(secure_broker.port, context(ssl.TLSVersion.TLSv1_3)) == "TLSv1.3"
    # The alert comes from the broker: "tlsv1 alert protocol version".
    with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
        tls_handshake(secure_broker.port, context(ssl.TLSVersion.TLSv1_1))


def test_a_device_cannot_take_over_the_service_session(
        peers: Callable[..., Peer], connect: Connect, fleet: Fleet) -> None:
    """Without use_username_as_clientid, a device connecting with the service's client id and a
    clean start would end the service's persistent session, and what it had queued with it."""
    r1, nonce = fleet.r1, uuid.uuid4().hex.encode()
    session = "eldercare-ingest-" + uuid.uuid4().hex[:8]
    ingest = connect("eldercare-ingest", tls=False, client_id=session, clean=False,
                     session_expiry_s=3600, subscribe=ingest_topics())
    ingest.close()
    device = connect("D-A")
    device.send(device_topic(r1, "D-A"), b"queued " + nonce)

    thief = peers("D-B", client_id=session, clean=True)
    rc = thief.connect()
    assert rc is not None and not rc.is_failure  # accepted, but under its own session

    back = connect("eldercare-ingest", tls=False, client_id=session, clean=False,
                   session_expiry_s=3600)
    assert back.session_present
    back.wait_for(b"queued " + nonce)
    assert thief.messages == []


def test_reload_applies_a_registry_change_without_restart(
        secure_broker: SecureMosquitto, peers: Callable[..., Peer], connect: Connect,
        fleet: Fleet, tmp_path: Path) -> None:
    """The documented workflow: regenerate ACL and password file, SIGHUP. D-C leaves, D-N joins."""
    r1 = fleet.r1
    passwords = {u: p for u, p in fleet.passwords.items() if u != "D-C"}
    passwords["D-N"] = secrets.token_urlsafe(16)
    write_passwords(tmp_path / "passwd.new", passwords)
    acl = fleet_acl(r1, fleet.r2, devices={"D-A": r1, "D-B": r1, "D-N": r1})
    assert "user D-C\n" not in acl and "user D-N\n" in acl
    (tmp_path / "acl.new").write_text(acl)
    # Renamed into place, as `eldercare broker acl --out` does: never a half-written file.
    os.replace(tmp_path / "passwd.new", secure_broker.passwd_file)
    os.replace(tmp_path / "acl.new", secure_broker.acl_file)
    secure_broker.reload()
    deadline = time.monotonic() + TIMEOUT_S
    while True:  # the reload is asynchronous: retry until it has happened
        newcomer = peers("D-N", password=passwords["D-N"])
        rc = newcomer.connect()
        if (rc is not None and not rc.is_failure) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert rc is not None and not rc.is_failure, rc
    audit = connect(AUDITOR, tls=False, subscribe=("#",))
    newcomer.send(device_topic(r1, "D-N"), b"hello")
    audit.wait_for(b"hello")
    gone = peers("D-C")
    assert gone.connect() == ReasonCode(PacketTypes.CONNACK, "Not authorized")


def test_shipped_configuration_has_no_plain_listener_off_loopback() -> None:
    listeners: list[list[str]] = []
    settings: dict[str, str] = {}
    for line in PRODUCTION_CONF.read_text().splitlines():
        key, _, value = line.partition(" ")
        if key == "listener":
            listeners.append(value.split())
        elif key and not key.startswith("#"):
            settings.setdefault(key, value)
            if key == "certfile":
                listeners[-1].append("tls")
    assert all(lst[-1] == "tls" or lst[1:] == ["127.0.0.1"] for lst in listeners), listeners
    assert settings["allow_anonymous"] == "false"
    assert settings["per_listener_settings"] == "false"
    assert settings["tls_version"] == "tlsv1.2"
    assert {"password_file", "acl_file", "persistence"} <= settings.keys()
