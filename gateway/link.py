"""The gateway's one connection to the broker: publish at QoS 1 and return after the PUBACK.

Every device connection publishes through one :class:`BrokerLink` (an aiomqtt client, the design
card's asyncio-mqtt). :meth:`BrokerLink.publish` returns only once the broker has acknowledged
the message (aiomqtt resolves a QoS 1 publish on paho's ``on_publish``, which paho calls on the
PUBACK): that is what lets the gateway answer a watch's alarm only after the alarm is safe with
the broker. While the broker is unreachable, publishes wait (the link reconnects with the
service's jittered backoff, ``foundation.broker.Backoff``), so an alarm's reply is held back and
the device repeats the alarm; a publish interrupted by a lost connection is sent again after the
reconnect (a duplicate at worst, which ingest drops by its dedup key).

With ``subscriptions`` (the command topics), the link keeps a persistent session
(``clean_session=False``) and hands every message to ``on_message``: the broker then holds
commands for the gateway through its own outage or restart and delivers them on reconnect
(the desk refuses those grown too old, gateway.commands).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Awaitable, Callable, Sequence

import aiomqtt

from foundation import tls
from foundation.broker import Backoff, BrokerAddress
from foundation.errors import EldercareError

log = logging.getLogger(__name__)


class BrokerLink:
    """Owns the gateway's MQTT connection; run :meth:`run` as a task for the process's life."""

    def __init__(self, address: BrokerAddress, *, client_id: str,
                 backoff: Backoff | None = None, subscriptions: Sequence[str] = (),
                 on_message: Callable[[str, bytes], Awaitable[None]] | None = None,
                 max_in_flight: int = 32) -> None:
        """``max_in_flight``: QoS 1 messages awaiting their PUBACK at once (paho's window;
        the batcher keeps its own below it)."""
        self.address = address
        self.client_id = client_id
        self.backoff = backoff or Backoff()
        self.subscriptions = tuple(subscriptions)
        self.on_message = on_message
        self.max_in_flight = max_in_flight
        self._client: aiomqtt.Client | None = None
        self._up = asyncio.Event()
        #: Set when the current connection is lost: a publish waiting for its PUBACK on it
        #: gives up at once and is sent again on the next connection (paho would otherwise
        #: hold it until its own timeout, and an alarm's reply with it).
        self._lost = asyncio.Event()
        self._closing = False
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    async def wait_connected(self) -> None:
        """Return once the link is connected (and its subscriptions made)."""
        await self._up.wait()

    def close(self) -> None:
        """Make :meth:`run` return instead of reconnecting (then cancel its task). Needed
        because aiomqtt may turn a cancellation during its connect into an ``MqttError``, which
        the reconnect loop would otherwise take for a lost connection and retry for ever."""
        self._closing = True

    async def run(self) -> None:
        """Connect, stay connected, reconnect after a loss; returns after :meth:`close`."""
        attempt = 0
        context = self._tls_context()
        while not self._closing:
            try:
                async with aiomqtt.Client(
                        self.address.host, self.address.port, identifier=self.client_id,
                        username=self.address.username, password=self.address.password,
                        protocol=aiomqtt.ProtocolVersion.V311,
                        clean_session=not self.subscriptions,
                        tls_context=context, keepalive=30, timeout=5,
                        max_inflight_messages=self.max_in_flight) as client:
                    # aiomqtt warns past 10 pending publishes; the batcher bounds them itself.
                    client.pending_calls_threshold = 10 * self.max_in_flight
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    self._client = client
                    self._lost = asyncio.Event()
                    self._up.set()
                    self.connects += 1
                    attempt = 0
                    log.info("gateway: connected to the broker at %s:%d", self.address.host,
                             self.address.port)
                    # Iterating ends (raising MqttError) when the connection is lost.
                    async for message in client.messages:
                        if self.on_message is not None and isinstance(
                                message.payload, bytes | bytearray):
                            await self.on_message(str(message.topic), bytes(message.payload))
            except aiomqtt.MqttError as exc:
                self._up.clear()
                self._lost.set()
                self._client = None
                task = asyncio.current_task()
                if self._closing or (task is not None and task.cancelling()):
                    return
                wait = self.backoff.delay_s(attempt)
                attempt += 1
                log.warning("gateway: broker connection lost or refused (%s); retrying in"
                            " %.1f s", exc, wait)
                await asyncio.sleep(wait)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1; returns after the broker's PUBACK, waiting through outages."""
        while True:
            await self._up.wait()
            client, lost = self._client, self._lost
            if client is None or lost.is_set():
                await asyncio.sleep(0.05)
                continue
            # No timeout of its own: a lost connection ends the wait (below), and a timeout on a
            # queued message made paho send it twice (once queued, once resent).
            sending = asyncio.ensure_future(client.publish(topic, payload, qos=1,
                                                           timeout=math.inf))
            losing = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({sending, losing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                losing.cancel()
                if not sending.done():
                    sending.cancel()
            try:
                if sending.done() and not sending.cancelled():
                    sending.result()
                    return
            except aiomqtt.MqttError as exc:
                log.info("gateway: publish to %s interrupted (%s); resending", topic, exc)
            # Lost before the PUBACK: the broker may or may not have it; send it again once
            # reconnected (ingest drops a duplicate by its dedup key).
            await asyncio.sleep(0.05)

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.address.tls:
            return None
        try:
            return tls.client_context(ca_file=self.address.ca_file,
                                      cert_file=self.address.cert_file,
                                      key_file=self.address.key_file, section="mqtt")
        except (OSError, ssl.SSLError) as exc:  # pragma: no cover - from_config checked them
            raise EldercareError(f"gateway: TLS files unusable: {exc}") from exc

