"""The MQTT alert channel: each alert's current state as a retained message (issue #5).

Other systems on the broker (a 12349 platform's dashboard, a community centre's display)
subscribe to ``eldercare/v1/<region>/alerts/#``; ``message.address`` is the alert's topic
``eldercare/v1/<region>/alerts/<alert_id>`` and ``message.body`` the alert document as compact
UTF-8 JSON. The document is published retained at QoS 1, so a subscriber that arrives late sees
every open alert's latest state at once. ``alert.resolved`` is published non-retained and then the
retained message is cleared (an empty retained payload), so resolved alerts do not accumulate in
the broker; live subscribers therefore see the resolved document followed by an empty message,
which they ignore. Both go out on one connection, in order, so the clear cannot overtake the
document.

One paho-mqtt 2 client with its network thread (``loop_start``) serves the channel's worker
threads: paho's publish is thread-safe, and each ``send`` waits for its own PUBACK with
``wait_for_publish``. paho reconnects by itself (backoff 1-30 s); while it is disconnected a
``send`` waits up to ``timeout_s`` for the connection and then fails retryable, without queueing
anything, so an outage does not pile alerts up in memory. A message already handed to paho when
the connection drops is re-sent by paho on reconnect, in order: at worst a duplicate of the same
state, which retained state tolerates. The outbox worker orders sends of one alert, so a
retry of an old state never follows a newer one.

The broker is [mqtt]'s, reached as :class:`foundation.broker.BrokerAddress` says (``mqtts://``:
TLS, always verified); the login is the channel's own, ``[alerts.mqtt]`` (the broker ACL grants
alerts to ``eldercare-alerts``, readings to ``eldercare-ingest``), see :func:`channel_address`.
The first dial happens in the constructor: a refused certificate stops the start with its
reason, while a broker that is down does not. ``client_id`` must differ from the ingest
client's, or the broker would disconnect one session each time the other connects.

``protocol="auto"`` (the default) connects with MQTT 5 and switches to 3.1.1 for good when the
broker answers "unsupported protocol version" (amqtt, used by ``eldercare demo``). With MQTT 5 a
PUBACK can carry a refusal (not authorized, quota exceeded): that is a failed delivery, not a
published one.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.channels.base import DeliveryFailed, Message, Receipt
from foundation import tls
from foundation.broker import BrokerAddress, stop_client
from foundation.errors import BrokerError, ConfigError

if TYPE_CHECKING:
    from foundation.broker import BrokerSettings

log = logging.getLogger(__name__)

_RESOLVED = "alert.resolved"
_UNSUPPORTED_PROTOCOL = 132  # CONNACK: unsupported protocol version
# PUBACK reason codes that no retry can change: not authorized, topic name invalid, payload
# format invalid. Others (quota exceeded, implementation specific) may pass later.
_PERMANENT_REFUSALS = frozenset({135, 144, 153})


#: The name this module used for :class:`foundation.broker.BrokerAddress`, which parses the same
#: URLs and also carries the TLS files.
MqttEndpoint = BrokerAddress


class AlertsMqttConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The MQTT alert channel's own identity on the broker (``[alerts.mqtt]``).

    The broker (``url``) and the CA are [mqtt]'s. Unset, the login and the client certificate
    are [mqtt]'s too; but the broker ACL grants alerts to ``eldercare-alerts`` and readings to
    ``eldercare-ingest`` (eldercare/broker_acl.py), and a TLS listener that names sessions after
    the login would let one login's two connections take each other's session, so production
    sets its own ``username`` here (alerts/channels/mqtt.py).
    """

    username: str | None = None
    password_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    #: Default: [mqtt] ``client_id`` + ``-alerts``.
    client_id: str | None = None


def channel_address(ingest: BrokerSettings, own: AlertsMqttConfig) -> BrokerAddress:
    """[mqtt]'s broker and CA under the channel's own login and client certificate from
    [alerts.mqtt], each falling back to [mqtt]'s when unset; raises ConfigError.

    The fallback is refused over TLS: a TLS listener that names sessions after the login (as
    deploy/mosquitto/production.conf does, so that no device can take over another's session)
    would give this connection, with its clean start, the ingest's persistent session, discarding
    the readings queued there, and the two would then disconnect each other for ever. Setting
    [alerts.mqtt] ``username`` to the ingest's own login remains possible, for a broker that
    keeps client ids.
    """
    base = BrokerAddress.from_config(ingest)
    shared = own.username is None and own.cert_file is None and own.key_file is None
    if shared and base.tls and (base.username is not None or base.cert_file is not None):
        raise ConfigError(
            "[alerts.mqtt] username is not set: over mqtts:// the MQTT alert channel needs a"
            " broker login of its own (eldercare-alerts in deploy/mosquitto/README.md), or it"
            " would take over the ingest session")
    return base.with_identity(username=own.username, password_file=own.password_file,
                              cert_file=own.cert_file, key_file=own.key_file,
                              section="alerts.mqtt")


class MqttAlertChannel:
    """Publishes alert states as retained MQTT messages (see module docstring)."""

    name = "mqtt"

    def __init__(self, address: str | BrokerAddress, *, client_id: str, timeout_s: float = 5.0,
                 protocol: Literal["auto", "5", "3.1.1"] = "auto",
                 keepalive_s: int = 30) -> None:
        self.endpoint = (BrokerAddress.from_url(address) if isinstance(address, str)
                         else address)
        self.client_id = client_id
        self.timeout_s = timeout_s
        self.keepalive_s = keepalive_s
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._outcome_lock = threading.Lock()
        # mid -> PUBACK reason code, written by the network thread before it marks the message
        # published. Bounded by the 16-bit mid space; each send pops its own entries.
        self._outcomes: dict[int, ReasonCode] = {}
        self._mqtt5 = protocol != "3.1.1"
        self._may_fall_back = protocol == "auto"  # until the first answer settles the version
        self._client_lock = threading.Lock()  # the client is replaced once on fallback
        # Held until assigned: the first CONNACK may start the fallback thread before that.
        with self._client_lock:
            self._client = self._start_client()

    def _start_client(self) -> mqtt.Client:
        client = self._new_client()
        try:
            # The first dial is ours, so that a TLS failure (certificate refused) stops the
            # start with its reason, rather than paho's thread retrying it silently for ever.
            client.connect(self.endpoint.host, self.endpoint.port, self.keepalive_s)
        except OSError as exc:  # ssl.SSLError included
            final = tls.final_failure(exc, where=str(self.endpoint))
            if final is not None:
                raise final from exc
            # A broker that is down at start-up does not stop the service: the network
            # thread keeps retrying, and send() reports the outage per message.
            log.warning("MQTT alert channel: broker %s unreachable (%s); retrying",
                        self.endpoint, exc)
            client.connect_async(self.endpoint.host, self.endpoint.port, self.keepalive_s)
        client.loop_start()
        return client

    def _fall_back_to_311(self) -> None:
        """Replace the MQTT 5 client by a 3.1.1 one. Runs in its own thread: paho cannot stop
        its network thread from a callback running on it."""
        with self._client_lock:
            if self._closing.is_set() or not self._mqtt5:
                return
            self._mqtt5 = False
            stop_client(self._client)
            try:
                self._client = self._start_client()
            except BrokerError as exc:  # TLS worked a moment ago; a person must look
                log.error("MQTT alert channel: cannot reconnect with MQTT 3.1.1: %s", exc)
                return
        log.info("MQTT alert channel: broker does not speak MQTT 5; using 3.1.1")

    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=mqtt.MQTTv5 if self._mqtt5 else mqtt.MQTTv311)
        self.endpoint.configure(client)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up right now (for health reporting)."""
        return self._connected.is_set()

    def send(self, message: Message) -> Receipt:
        """Publish ``message.body`` on ``message.address``; raises :class:`DeliveryFailed`."""
        if self._closing.is_set():
            raise DeliveryFailed("MQTT channel is closed", retryable=True)
        try:
            payload = msgspec.json.encode(message.body, order="sorted")
        except (TypeError, msgspec.EncodeError) as exc:
            raise DeliveryFailed(f"alert document is not JSON-able: {exc}",
                                 retryable=False) from exc
        deadline = time.monotonic() + self.timeout_s
        if not self._connected.wait(self.timeout_s):
            raise DeliveryFailed(
                f"not connected to MQTT broker {self.endpoint.host}:{self.endpoint.port}",
                retryable=True)
        topic = message.address
        if message.body.get("event") == _RESOLVED:
            infos = [self._publish(topic, payload, retain=False),
                     self._publish(topic, b"", retain=True)]
        else:
            infos = [self._publish(topic, payload, retain=True)]
        for info in infos:
            self._await_puback(info, deadline)
        log.debug("mqtt delivery %d (alert %d) published, mids %s", message.delivery_id,
                  message.alert_id, [i.mid for i in infos])
        # No provider id: packet ids are reused per connection and mean nothing afterwards.
        return Receipt(detail={"topic": topic, "retained": len(infos) == 1})

    def _publish(self, topic: str, payload: bytes, *, retain: bool) -> mqtt.MQTTMessageInfo:
        properties = None
        if self._mqtt5 and payload:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.ContentType = "application/json"
        try:
            return self._client.publish(topic, payload, qos=1, retain=retain,
                                        properties=properties)
        except ValueError as exc:  # wildcards or an empty topic: the address itself is wrong
            raise DeliveryFailed(f"bad MQTT topic: {exc}", retryable=False) from exc

    def _await_puback(self, info: mqtt.MQTTMessageInfo, deadline: float) -> None:
        """Wait until ``deadline`` for the PUBACK of ``info``; raise unless it is a success."""
        try:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (RuntimeError, ValueError) as exc:
            # The connection dropped between the check and the publish; paho keeps the
            # message and re-sends it on reconnect, the outbox retries meanwhile.
            raise DeliveryFailed(f"MQTT publish failed: {exc}", retryable=True) from exc
        with self._outcome_lock:
            reason = self._outcomes.pop(info.mid, None)
        if not info.is_published():
            raise DeliveryFailed(f"no PUBACK within {self.timeout_s:g} s", retryable=True)
        if reason is not None and reason.is_failure:
            raise DeliveryFailed(f"broker refused the publish: {reason}",
                                 retryable=reason.value not in _PERMANENT_REFUSALS)

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Any = None) -> None:
        if rc.is_failure:
            if self._may_fall_back and rc.value == _UNSUPPORTED_PROTOCOL:
                self._may_fall_back = False
                threading.Thread(target=self._fall_back_to_311, daemon=True,
                                 name="eldercare-mqtt-alerts-fallback").start()
                return
            log.warning("MQTT alert channel: connection refused: %s", rc)
            return
        self._may_fall_back = False  # MQTT 5 works: later refusals are not about the version
        log.info("MQTT alert channel connected to %s:%d as %r", self.endpoint.host,
                 self.endpoint.port, self.client_id)
        self._connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Any = None) -> None:
        self._connected.clear()
        # A stale client (closed, or the MQTT 5 one being replaced) is no news worth a warning.
        stale = self._closing.is_set() or (client.protocol == mqtt.MQTTv5) != self._mqtt5
        if stale:
            return
        if self._may_fall_back and client.protocol == mqtt.MQTTv5:
            # Never connected yet: a broker that speaks only 3.1.1 (amqtt) may drop an MQTT 5
            # CONNECT instead of refusing it; the retry gets the refusal and falls back.
            log.info("MQTT alert channel: MQTT 5 connection dropped before CONNACK (%s);"
                     " retrying", rc)
        else:
            log.warning("MQTT alert channel: connection lost (%s); paho reconnects", rc)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode,
                    properties: Any = None) -> None:
        with self._outcome_lock:
            self._outcomes[mid] = rc

    def close(self) -> None:
        """Disconnect and stop the network thread; later sends fail retryable."""
        with self._client_lock:
            self._closing.set()
            stop_client(self._client)
        self._connected.clear()
