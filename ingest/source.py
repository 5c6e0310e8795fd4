"""The MQTT side of ingest: a paho-mqtt 2 client with manual acknowledgement.

Why paho and a thread rather than asyncio here: paho's network thread parses PUBLISH packets in C-free
but tight code and hands them over with no event-loop hop; ``manual_ack=True`` lets the pipeline send
each PUBACK only after the batch holding the message is committed (nothing acknowledged is lost).

Sessions are persistent (fixed client id; MQTT 5 clean start off with a session expiry; MQTT 3.1.1
clean session off), so what devices publish while the service is down is queued by the broker and
delivered on return. ``protocol="auto"`` tries MQTT 5 and falls back to 3.1.1 when the broker answers
"unsupported protocol version" (amqtt, old brokers). With MQTT 5 the CONNECT's receive maximum
equals our buffer size, so the broker itself stops sending when we hold as many unacknowledged
messages as we can buffer.

A PUBACK only means something on the connection that received the PUBLISH: each connection has a
generation number, and acks of messages from an older generation are skipped (the broker will
redeliver those; the store drops the duplicates).

Where and as whom is :class:`foundation.broker.BrokerAddress`, shared with the alert channel and
the simulator. The first connection is dialled here rather
than in paho's thread, so that a refused certificate fails :meth:`MqttSource.start` at once with
its reason; the version probe logs in as no one, so it cannot take over our session.

Reconnects are paho's, paced by :class:`foundation.broker.ReconnectPacer`: jittered, at most
``reconnect_max_s`` (2 s) apart, so the service is back within about that once the broker is.
A reconnect on which the broker no longer holds our session (CONNACK session present = 0:
restarted without persistence, or the session expired) is logged as a warning and counted
(``eldercare_mqtt_sessions_lost_total``): what the broker had queued for us is gone. On the
first connection of a process that is normal (a new client id) and cannot be told apart.

Subscriptions (schemas/topics.py): all of ``eldercare/v1/#``, so that a message on a wrong topic
is dead-lettered rather than never seen. Messages on eldercare's own non-reading namespaces
(``alerts``, ``cmd``) are acknowledged and counted here, before the buffer, never dead-lettered.
With MQTT 5 the subscription asks for retained messages only when the broker creates it (retain
handling 1), so resuming a session does not pull every retained alert state again; the
subscriptions of earlier versions, which would deliver each reading twice, are unsubscribed.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from typing import Any, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from foundation import tls
from foundation.broker import (
    DEFAULT_RECONNECT_MAX_S,
    Backoff,
    BrokerAddress,
    ReconnectPacer,
    stop_client,
)
from foundation.clock import Clock
from foundation.errors import BrokerError
from ingest.buffer import Message, MessageBuffer, may_hold_alarm
from ingest.metrics import IngestMetrics
from schemas.topics import RETIRED_SUBSCRIPTIONS, service_namespace

log = logging.getLogger(__name__)

Protocol = Literal["auto", "5", "3.1.1"]
_UNSUPPORTED_PROTOCOL = 132
#: CONNACK "bad user name or password", "not authorized": how a broker answers the probe's
#: CONNECT without a login (see _probe_version), in MQTT 5.
_LOGIN_REFUSED = frozenset({134, 135})
_CLOSED_UNANSWERED = ("the broker closed the connection without answering (over TLS: a client"
                      " certificate it requires or refuses? its log says)")


class MqttSource:
    """Receives messages into a :class:`MessageBuffer` and acknowledges them on request.

    ``reconnect_max_s`` caps the jittered reconnect backoff (module docstring);
    ``retired_subscriptions`` are unsubscribed whenever a session is resumed.
    """

    def __init__(
        self,
        *,
        address: BrokerAddress,
        client_id: str,
        subscriptions: tuple[str, ...],
        buffer: MessageBuffer,
        clock: Clock,
        metrics: IngestMetrics,
        protocol: Protocol = "auto",
        session_expiry_s: int = 7 * 24 * 3600,
        keepalive_s: int = 30,
        reconnect_max_s: float = DEFAULT_RECONNECT_MAX_S,
        retired_subscriptions: tuple[str, ...] = RETIRED_SUBSCRIPTIONS,
    ) -> None:
        self.address = address
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.buffer = buffer
        self.clock = clock
        self.metrics = metrics
        self.protocol = protocol
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.backoff = Backoff(max_s=reconnect_max_s)
        self.retired_subscriptions = tuple(
            t for t in retired_subscriptions if t not in subscriptions)
        self.negotiated: Literal["5", "3.1.1"] | None = None
        self._client: mqtt.Client | None = None
        self._pacer = ReconnectPacer(self.backoff)
        self._mqtt5 = False
        self._generation = 0
        # Network thread only: whether this process had a session already (a fresh one then
        # means it was lost), and when the connection went (for the log).
        self._had_session = False
        self._lost_at: float | None = None
        self._closing = threading.Event()
        self._first_connack = threading.Event()
        self._first_rc: ReasonCode | None = None
        self._subscribed = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, timeout_s: float = 30.0) -> None:
        """Connect (with protocol fallback), subscribe, and start the network thread.

        Raises BrokerError when no successful CONNACK arrives within ``timeout_s``.
        """
        version: Literal["5", "3.1.1"]
        if self.protocol == "auto":
            version = self._probe_version(timeout_s)
        else:
            version = self.protocol
        rc = self._connect(version, timeout_s)
        what = None
        if rc is None:
            what = (_CLOSED_UNANSWERED if self._first_connack.is_set()
                    else f"no answer within {timeout_s:g} s")
        elif rc.is_failure:
            what = str(rc)
        # Until the SUBACK, a fresh session would miss what devices publish: wait for it, so
        # "started" means "receiving".
        elif not self._subscribed.wait(timeout_s):
            what = f"no SUBACK within {timeout_s:g} s"
        if what is not None:
            self._shutdown_client()
            raise BrokerError(
                f"cannot connect to MQTT broker {self.address} (MQTT {version}): {what}")
        self.negotiated = version
        log.info("connected to MQTT %s as %r (MQTT %s)", self.address, self.client_id, version)

    def _probe_version(self, timeout_s: float) -> Literal["5", "3.1.1"]:
        """Ask the broker with a bare MQTT 5 CONNECT (no properties) under a throwaway id.

        Some 3.1.1-only brokers (amqtt) answer "unsupported protocol version" to a bare CONNECT
        but hang on one that carries properties, so the real session is not used to probe.
        The probe sends no login either: a broker that names each session after its login
        (Mosquitto's ``use_username_as_clientid``, on the TLS listener of
        deploy/mosquitto/production.conf) would otherwise hand the probe our persistent session,
        and the probe's clean start would discard every reading queued in it. Refusing a CONNECT
        for want of a login is an MQTT 5 answer too; the real session then logs in.
        """
        answer: list[ReasonCode] = []
        got = threading.Event()

        def on_connect(client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Any = None) -> None:
            answer.append(rc)
            got.set()

        def on_disconnect(client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                          properties: Any = None) -> None:
            got.set()  # closed, answered or not: waiting longer cannot help

        probe = self._new_client(f"{self.client_id}-probe", login=False,
                                 protocol=mqtt.MQTTv5)
        probe.on_connect = on_connect
        probe.on_disconnect = on_disconnect
        self._dial(probe, timeout_s)
        # Driven from this thread: no network thread to stop, which would first sit out paho's
        # reconnect delay when the broker closes the refused probe.
        deadline = time.monotonic() + timeout_s
        try:
            while not got.is_set():
                if time.monotonic() > deadline:
                    raise BrokerError(
                        f"MQTT broker {self.address} did not answer within {timeout_s:.0f} s")
                if probe.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break  # closed: on_disconnect has run
        finally:
            probe.disconnect()
        if not answer or answer[0].value == _UNSUPPORTED_PROTOCOL:
            # Closing on an MQTT 5 CONNECT is how some 3.1.1 brokers answer it, too.
            log.info("broker does not speak MQTT 5; using 3.1.1")
            return "3.1.1"
        if answer[0].is_failure and answer[0].value not in _LOGIN_REFUSED:
            raise BrokerError(f"MQTT broker refused the connection: {answer[0]}")
        return "5"

    def _new_client(self, client_id: str, *, login: bool = True, **options: Any) -> mqtt.Client:
        """A paho client with our TLS settings and (with ``login``) credentials: the one place
        the probe and the real session get their connection settings from."""
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, **options)
        self.address.configure(client, login=login)
        return client

    def _dial(self, client: mqtt.Client, timeout_s: float, **kwargs: Any) -> None:
        """Open the first connection of ``client`` here rather than in paho's thread, so that
        its failure is ours to report: a TLS failure (certificate refused) at once, as paho's
        thread would retry it forever; a broker that refuses or cannot be reached (it may be
        starting too) is tried again until ``timeout_s``. Later reconnects are paho's."""
        deadline = time.monotonic() + timeout_s
        for attempt in itertools.count():
            try:
                client.connect(self.address.host, self.address.port, self.keepalive_s, **kwargs)
                return
            except OSError as exc:  # ssl.SSLError included
                final = tls.final_failure(exc, where=str(self.address))
                if final is not None:
                    raise final from exc
                delay = self.backoff.delay_s(attempt)  # jittered: a fleet of restarts
                if time.monotonic() + delay > deadline:
                    raise BrokerError(f"cannot reach MQTT broker {self.address}: {exc}") from exc
            time.sleep(delay)

    def _connect(self, version: Literal["5", "3.1.1"], timeout_s: float) -> ReasonCode | None:
        self._first_connack.clear()
        self._first_rc = None
        if version == "5":
            client = self._new_client(self.client_id, protocol=mqtt.MQTTv5, manual_ack=True)
        else:
            client = self._new_client(self.client_id, protocol=mqtt.MQTTv311,
                                      clean_session=False, manual_ack=True)
        self._pacer = ReconnectPacer(self.backoff)
        self._pacer.attach(client)
        self._mqtt5 = version == "5"
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        kwargs: dict[str, Any] = {}
        if version == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.session_expiry_s
            props.ReceiveMaximum = min(self.buffer.max_messages, 65535)
            kwargs = {"clean_start": False, "properties": props}
        try:
            self._dial(client, timeout_s, **kwargs)
        except BrokerError:
            self._client = None
            raise
        client.loop_start()
        self._first_connack.wait(timeout_s)
        return self._first_rc

    def close_intake(self) -> None:
        """Stop taking new messages; those still arriving are left unacknowledged (redelivered)."""
        self._closing.set()

    def stop(self) -> None:
        """Disconnect cleanly and stop the network thread."""
        self._closing.set()
        self._shutdown_client()
        self.metrics.connected.set(0)

    def _shutdown_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            stop_client(client)

    # -- acknowledgement -------------------------------------------------------------------
    def ack(self, messages: list[Message]) -> int:
        """Send PUBACK for committed messages of the current connection; returns how many."""
        client, gen, sent = self._client, self._generation, 0
        if client is None:
            return 0
        for m in messages:
            if m.qos > 0 and m.generation == gen:
                client.ack(m.mid, m.qos)
                sent += 1
        return sent

    # -- paho callbacks (network thread) ---------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                    properties: Any = None) -> None:
        if not self._first_connack.is_set():
            self._first_rc = rc
            self._first_connack.set()
        if rc.is_failure:
            log.warning("MQTT connection refused: %s", rc)
            return
        self._pacer.connected()
        self.metrics.connected.set(1)
        session_present = bool(getattr(flags, "session_present", False))
        self._log_session(session_present)
        self._had_session = True
        self._subscribe(client, resumed=session_present)

    def _log_session(self, session_present: bool) -> None:
        """Say whether the broker kept our session; "MQTT session resumed|started" starts each
        line (tests/faults wait for it)."""
        away = ("" if self._lost_at is None
                else f" after {time.monotonic() - self._lost_at:.1f} s away")
        self._lost_at = None
        if session_present:
            log.info("MQTT session resumed%s", away)
        elif self._had_session:
            # The broker restarted without persistence, or kept our session for less than the
            # outage: QoS 1 messages queued for us meanwhile are gone (what we had received
            # and not yet acknowledged is still stored from the buffer).
            self.metrics.sessions_lost.inc()
            log.warning("MQTT session started anew%s: the broker no longer held our persistent"
                        " session %r, so messages it had queued for us while we were away may"
                        " be lost (was it restarted without persistence, or is session_expiry_s"
                        " shorter than the outage?)", away, self.client_id)
        else:
            log.info("MQTT session started (the broker held no session for %r)", self.client_id)

    def _subscribe(self, client: mqtt.Client, *, resumed: bool) -> None:
        """(Re)subscribe on every connection: a new session has no subscriptions, and a resumed
        one may be an older version's (which lacks ours and holds the retired ones)."""
        if self._mqtt5:
            # Retained messages only when the subscription is new (a fresh session): a resumed
            # session had them already, and eldercare/v1/# holds every open alert's state.
            # MQTT 3.1.1 has no such option: there each reconnect brings the retained alert
            # states again (where the ACL lets them through), dropped and counted on receipt.
            options = SubscribeOptions(
                qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            client.subscribe([(t, options) for t in self.subscriptions])
        else:
            client.subscribe([(t, 1) for t in self.subscriptions])
        if resumed and self.retired_subscriptions:
            # After the SUBSCRIBE, in the same stream: no moment without a subscription.
            client.unsubscribe(list(self.retired_subscriptions))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        delay = self._pacer.next_wait(client)
        log.debug("MQTT reconnect to %s failed; next attempt in %.2f s", self.address, delay)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Any = None) -> None:
        refused = [str(rc) for rc in reason_codes if rc.is_failure]
        if refused:
            log.error("broker refused subscriptions %s: %s", self.subscriptions, refused)
            return
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode,
                       properties: Any = None) -> None:
        self._generation += 1
        self.metrics.connected.set(0)
        if not self._first_connack.is_set():  # cut before any CONNACK: start() says so now
            self._first_connack.set()
        if not self._closing.is_set():
            delay = self._pacer.next_wait(client)
            if self._lost_at is None:  # not for each failed attempt: once per outage
                self._lost_at = time.monotonic()
                log.warning("MQTT connection lost (%s); reconnecting in %.2f s", rc, delay)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if self._closing.is_set():
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers should refuse these; keep the bytes readable anyway
            topic = bytes(msg._topic).decode("utf-8", "backslashreplace")
        namespace = service_namespace(topic)
        if namespace is not None:
            # eldercare's own traffic (alert states, device commands), no reading: nothing will
            # ever store it, so it is acknowledged now, or the broker would resend it for ever.
            client.ack(msg.mid, msg.qos)
            self.metrics.ignored_messages.labels(namespace=namespace).inc()
            log.debug("ignored %s message on %s", namespace, topic)
            return
        props = msg.properties
        content_type = getattr(props, "ContentType", None) if props is not None else None
        payload = bytes(msg.payload)
        m = Message(topic, payload, msg.mid, msg.qos, content_type, self.clock.now_ms(),
                    self._generation, urgent=may_hold_alarm(payload))
        if self.buffer.put(m, abort=self._closing):
            self.metrics.messages_received.inc()
