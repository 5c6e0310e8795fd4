"""The gateway server: device TCP connections in, wire-contract readings out over MQTT.

asyncio, one task per connection (started by ``asyncio.start_server``, owned by the server,
cancelled on stop). A connection's task reads bytes, frames them with its protocol's
:class:`~gateway.codec.Framer`, decodes each frame with the :class:`~gateway.codec.Codec`, and:

- answers at once what must be answered at once (a keepalive: a watch reboots after several
  unanswered ones; a GT06 login within 5 s);
- publishes the frame's readings as one JSON array at QoS 1 on
  ``eldercare/v1/<region>/dev/<device id>`` (the region from the registry, else the configured
  one), in frame order: frames of one connection are handled one after the other;
- answers an alarm only after the broker acknowledged its readings (``reply_when`` =
  ``after_publish``): a device repeats an unanswered alarm, so an alarm is never lost between
  the device and the broker. While the broker is away the reply waits (bounded by
  ``publish_timeout_s``, then the connection is closed unanswered and the device repeats).

What a connection may not do, each logged with the device id only and counted: send a frame over
the codec's size limit or more frames a second than allowed (closed), stay silent past the idle
timeout (closed), open more connections from one address than allowed (refused). A frame that
does not decode is counted and skipped, the connection kept. A device the registry does not know
is published under the configured region, where ingest's registry admission decides as for any
device (alarms admitted, the rest dead-lettered and shown as unregistered); without a configured
region its connection is closed. The same device id connected from two addresses at once is
flagged (a device id is the only credential these protocols have: SECURITY.md).

The server is also the command desk's way to the devices (:class:`gateway.commands.DeviceLinks`):
it knows which connection holds each device, tells the desk when a device is ready for what
waits for it, and hands it the device's answers to commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgspec
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from foundation.errors import ValidationError
from gateway.batcher import Batcher
from gateway.codec import Codec, Decoded, FrameError
from gateway.commands import CommandDesk
from gateway.geolocate import Geolocator
from gateway.settings import GatewayConfig
from schemas import gateway_topic
from schemas.readings import ALARM_TYPES, TYPE_NAMES, Location, RadioScan, Reading

log = logging.getLogger(__name__)

#: Bytes read from a socket at once.
_READ_BYTES: Final = 4096
#: Frames with readings one connection may have waiting for the broker; beyond, reading from
#: the device pauses (TCP back-pressure) until the broker takes them.
_OUTBOX_FRAMES: Final = 64
#: A command written to a device whose TCP window stays shut this long is not delivered.
_COMMAND_WRITE_S: Final = 5.0


class Publisher(Protocol):
    """Publishes at QoS 1 and returns after the broker's PUBACK
    (:class:`gateway.link.BrokerLink`)."""

    async def publish(self, topic: str, payload: bytes) -> None: ...


class GatewayMetrics:
    """The gateway's Prometheus metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.connections = Gauge("eldercare_gateway_connections", "Open device connections",
                                 registry=r)
        self.accepted = Counter("eldercare_gateway_connections_accepted",
                                "Device connections accepted", registry=r)
        self.closed = Counter("eldercare_gateway_connections_closed",
                              "Device connections closed, by reason", ["reason"], registry=r)
        self.frames = Counter("eldercare_gateway_frames", "Frames decoded, by command",
                              ["command"], registry=r)
        self.unknown = Counter("eldercare_gateway_unknown_commands",
                               "Frames whose command the codec does not know", registry=r)
        self.errors = Counter("eldercare_gateway_decode_errors", "Frames that did not decode",
                              registry=r)
        self.replies = Counter("eldercare_gateway_replies", "Replies sent, by when",
                               ["when"], registry=r)
        self.readings = Counter("eldercare_gateway_readings_published",
                                "Readings published to the broker", registry=r)
        self.unregistered = Counter("eldercare_gateway_unregistered_devices",
                                    "Frames from devices the registry does not name", registry=r)
        self.duplicates = Counter("eldercare_gateway_duplicate_connections",
                                  "A device id connected from two addresses at once", registry=r)
        self.commands = Counter("eldercare_gateway_command_results",
                                "Results of commands to devices, by status", ["status"],
                                registry=r)
        self.publish_latency = Histogram(
            "eldercare_gateway_publish_seconds", "Frame decoded -> broker PUBACK",
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r)
        self.lookups = Counter("eldercare_gateway_geolocation_lookups",
                               "Radio scans looked up, by outcome (hit, miss, rate_limited,"
                               " failed)", ["outcome"], registry=r)
        self.lookup_latency = Histogram(
            "eldercare_gateway_geolocation_seconds", "A lookup's request to the provider",
            buckets=(0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 30), registry=r)
        self.positions = Counter("eldercare_gateway_positions_published",
                                 "Locations resolved from radio scans and published, by source",
                                 ["source"], registry=r)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels or None) or 0.0


@dataclass(slots=True)
class _Session:
    """One device connection's state."""

    peer: str
    writer: asyncio.StreamWriter
    device: str | None = None
    tokens: float = 0.0
    refilled: float = 0.0
    #: Frames with readings, in arrival order, for the connection's publishing task.
    outbox: asyncio.Queue[tuple[str, Decoded, float]] = field(
        default_factory=lambda: asyncio.Queue(maxsize=_OUTBOX_FRAMES))
    #: One writer, three tasks (immediate replies, replies after the PUBACK, commands).
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The ``extra`` of the device's last frame, for commands to it (a watch's vendor code).
    context: Mapping[str, object] = field(default_factory=dict)


class _Closed(Exception):
    """Close this connection (the reason is the message, for logs and metrics)."""


class GatewayServer:
    """Accepts device connections for one protocol; see the module docstring."""

    def __init__(self, *, codec: Codec, settings: GatewayConfig, publisher: Publisher,
                 regions: Mapping[str, str] | None = None,
                 now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
                 metrics: GatewayMetrics | None = None,
                 locator: Geolocator | None = None) -> None:
        """``regions``: device id -> region (the registry); None admits every device id under
        ``settings.region``. ``locator`` resolves radio scans to positions (none: a scan is
        published as it is)."""
        self.codec = codec
        self.settings = settings
        self.locator = locator
        self.publisher = publisher
        self.regions = regions
        self.now_ms = now_ms
        self.metrics = metrics or GatewayMetrics()
        self._per_address: Tally[str] = Tally()
        self._where: dict[str, set[str]] = {}
        self._server: asyncio.Server | None = None
        #: Device id -> the connection that holds it (the latest, if two claim it).
        self._sessions: dict[str, _Session] = {}
        self.desk: CommandDesk | None = None
        if settings.commands.enabled:
            self.desk = CommandDesk(codec=codec, links=self, publisher=publisher,
                                    settings=settings.commands, now_ms=now_ms,
                                    on_result=lambda status: self.metrics.commands.labels(
                                        status).inc())
        self._desk_task: asyncio.Task[None] | None = None
        g = settings.batch
        self.batcher = Batcher(publisher=publisher,
                               topic_of=lambda region: gateway_topic(region, settings.gateway_id),
                               linger_s=g.linger_ms / 1000, max_readings=g.max_readings,
                               max_in_flight=g.max_in_flight)
        self._batcher_task: asyncio.Task[None] | None = None
        self._stopping = False
        #: The connections' tasks, so a stop ends them (closing the listener does not).
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`; ``listen`` may name port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        host, _, port = self.settings.listen.rpartition(":")
        self._server = await asyncio.start_server(self._handle, host or None, int(port),
                                                  limit=max(_READ_BYTES,
                                                            self.codec.max_frame_bytes))
        self._batcher_task = asyncio.create_task(self.batcher.run(), name="gateway-batcher")
        if self.desk is not None:
            self._desk_task = asyncio.create_task(self.desk.run(), name="gateway-commands")
        log.info("gateway (%s) listening on %s", self.codec.name, self.settings.listen)

    async def stop(self) -> None:
        """Stop accepting, end every connection (an alarm waiting for its PUBACK goes
        unanswered: the device repeats it to the next gateway), and wait for them."""
        if self._server is not None:
            self._server.close()
        self._stopping = True
        tasks = list(self._tasks)
        tasks += [t for t in (self._batcher_task, self._desk_task) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer_info = writer.get_extra_info("peername")
        address = str(peer_info[0]) if peer_info else "unknown"
        if self._per_address[address] >= self.settings.max_connections_per_address:
            self.metrics.closed.labels("address_limit").inc()
            log.warning("gateway: refused a connection from %s: over %d at once", address,
                        self.settings.max_connections_per_address)
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._per_address[address] += 1
        self.metrics.accepted.inc()
        self.metrics.connections.inc()
        session = _Session(peer=address, writer=writer,
                           tokens=2 * self.settings.max_frames_per_s, refilled=time.monotonic())
        reason = "eof"
        try:
            await self._serve(session, reader, writer)
        except _Closed as closed:
            reason = str(closed)
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = "reset"
        except asyncio.CancelledError:
            reason = "stopped"
            # Cancelled by stop(), which waits for it: ending quietly spares asyncio's stream
            # callback a traceback per connection at every shutdown. Anything else propagates.
            if not self._stopping:
                raise
        finally:
            self._tasks.discard(task)
            self.metrics.closed.labels(reason).inc()
            self.metrics.connections.dec()
            self._per_address[address] -= 1
            if self._per_address[address] <= 0:
                del self._per_address[address]
            if session.device is not None:
                self._leave(session.device, address)
                if self._sessions.get(session.device) is session:
                    del self._sessions[session.device]
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            if reason not in ("eof", "reset"):
                log.info("gateway: closed the connection of %s from %s: %s",
                         session.device or "an unidentified device", address, reason)

    async def _serve(self, session: _Session, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        """Read and decode here, answering what must be answered at once; publish in a task
        of the connection's own, in order, answering alarms after their PUBACK. So a keepalive
        is answered even while an earlier alarm waits for an absent broker (a watch reboots
        after a few unanswered keepalives), and the device's readings keep their order."""
        framer = self.codec.framer()
        publishing = asyncio.create_task(self._publish_loop(session),
                                         name=f"gateway-publish-{session.peer}")
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(_READ_BYTES),
                                                  self.settings.idle_timeout_s)
                except TimeoutError:
                    raise _Closed("idle") from None
                if not data:
                    break
                try:
                    frames = framer.feed(data)
                except FrameError as exc:
                    raise _Closed(f"frame: {exc.reason}") from None
                for frame in frames:
                    self._spend(session)
                    await self._frame(session, frame)
                if publishing.done():
                    break  # it ended the connection (its reason is raised below)
            # The device hung up: what it sent is still published (its alarms reach the
            # broker); their replies have nobody to go to.
            joining = asyncio.ensure_future(session.outbox.join())
            await asyncio.wait({joining, publishing}, return_when=asyncio.FIRST_COMPLETED)
            joining.cancel()
        finally:
            if publishing.done() and not publishing.cancelled():
                publishing.result()  # raises its _Closed: the reason the connection ends
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError, _Closed):
                await publishing

    async def _publish_loop(self, session: _Session) -> None:
        """The connection's publishing task. A publish the broker does not acknowledge in time,
        or a device with no region, ends the connection: the writer is closed, so the reading
        side stops at once and reports this task's reason."""
        while True:
            device, decoded, started = await session.outbox.get()
            try:
                await self._publish(device, decoded, started)
                if decoded.reply is not None and decoded.reply_when == "after_publish":
                    with contextlib.suppress(ConnectionError):
                        await self._send(session, decoded.reply, "after_publish")
            except _Closed:
                session.writer.close()
                raise
            finally:
                session.outbox.task_done()

    def _spend(self, session: _Session) -> None:
        """A token bucket per connection: ``max_frames_per_s``, bursts of twice that."""
        rate = self.settings.max_frames_per_s
        now = time.monotonic()
        session.tokens = min(2 * rate, session.tokens + (now - session.refilled) * rate)
        session.refilled = now
        if session.tokens < 1:
            raise _Closed("rate")
        session.tokens -= 1

    async def _frame(self, session: _Session, frame: bytes) -> None:
        received = self.now_ms()
        started = time.perf_counter()
        try:
            decoded = self.codec.decode(frame, now_ms=received, session_device=session.device)
        except ValidationError as exc:
            self.metrics.errors.inc()
            log.info("gateway: a frame from %s did not decode: %s",
                     session.device or session.peer, exc.reason)
            return
        self.metrics.frames.labels(decoded.command).inc()
        if decoded.unknown:
            self.metrics.unknown.inc()
            log.info("gateway: unknown command %r from %s", decoded.command[:32],
                     decoded.device_id or session.device)
        device = decoded.device_id or session.device
        if device is not None and device != session.device:
            self._join(session, device)
        if decoded.reply is not None and decoded.reply_when == "now":
            await self._send(session, decoded.reply, "now")
        if device is None:
            return
        session.context = decoded.extra
        # An alarm with nothing to publish (a code that is routine state) is answered in
        # turn too, after what the device sent before it.
        if decoded.readings or (decoded.reply is not None
                                and decoded.reply_when == "after_publish"):
            await session.outbox.put((device, decoded, started))
        # Commands after the frame's readings are on their way: a command waiting for this
        # device never holds back an alarm it just sent.
        if self.desk is not None:
            if decoded.acknowledges is not None:
                self.desk.answered(device, decoded.acknowledges)
            await self.desk.device_ready(device)

    async def _publish(self, device: str, decoded: Decoded, started: float) -> None:
        if not decoded.readings:
            return
        region = self._region(device)
        readings: tuple[Reading, ...] = decoded.readings
        urgent = decoded.reply_when == "after_publish" or any(
            TYPE_NAMES[type(r)] in ALARM_TYPES for r in readings)
        try:
            async with asyncio.timeout(self.settings.publish_timeout_s):
                await self.batcher.submit(region, readings, urgent=urgent)
        except TimeoutError:
            raise _Closed("broker") from None
        self.metrics.readings.inc(len(readings))
        self.metrics.publish_latency.observe(time.perf_counter() - started)
        self._locate_later(device, region, readings)

    def _locate_later(self, device: str, region: str, readings: tuple[Reading, ...]) -> None:
        """Resolve the frame's radio scan, if any, in a task of its own, once its readings are
        with the broker: an alarm is never held for a lookup, and neither is any frame behind
        it on the connection (an alarm may be next). The position follows as a ``location``
        of its own, a lookup's time later (bounded by the provider's timeout). The task joins
        the connections' so a stop ends it too. A device the registry does not name is not
        looked up: its readings are dead-lettered by ingest, and its radios are no business
        of the provider's (nor of our quota)."""
        if self.locator is None or (self.regions is not None and device not in self.regions):
            return
        scan = next((r for r in readings if isinstance(r, RadioScan)), None)
        if scan is None:
            return
        task = asyncio.create_task(self._publish_position(device, region, scan),
                                   name=f"gateway-locate-{device}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_position(self, device: str, region: str, scan: RadioScan) -> None:
        """Look ``scan`` up and publish its position. Nothing here ends the connection or
        raises: a scan without a position is a normal outcome (counted by the locator)."""
        assert self.locator is not None
        try:
            fix = await self.locator.locate(scan)
            if fix is None:
                return
            # Built through the contract's limits: a provider's answer is outside input.
            location = msgspec.convert(
                {"device_id": device, "ts": scan.ts, "lat": fix.lat, "lon": fix.lon,
                 "accuracy_m": fix.accuracy_m, "source": fix.source}, Location)
            async with asyncio.timeout(self.settings.publish_timeout_s):
                await self.batcher.submit(region, [location], urgent=False)
        except TimeoutError:
            log.warning("gateway: the position of %s from its radio scan was not published:"
                        " no PUBACK within %g s", device, self.settings.publish_timeout_s)
            return
        except Exception as exc:  # noqa: BLE001 - one position lost, never the gateway
            log.warning("gateway: the position of %s from its radio scan was not published:"
                        " %s", device, type(exc).__name__)
            return
        self.metrics.readings.inc()
        self.metrics.positions.labels(fix.source).inc()

    def _region(self, device: str) -> str:
        region = self.regions.get(device) if self.regions is not None else None
        if region is None and self.regions is not None:
            self.metrics.unregistered.inc()
        region = region or self.settings.region
        if region is None:
            raise _Closed("unregistered")
        return region

    async def _send(self, session: _Session, reply: bytes, when: str) -> None:
        async with session.write_lock:
            session.writer.write(reply)
            await session.writer.drain()
        self.metrics.replies.labels(when).inc()

    def _join(self, session: _Session, device: str) -> None:
        if session.device is not None:
            self._leave(session.device, session.peer)
            if self._sessions.get(session.device) is session:
                del self._sessions[session.device]
        session.device = device
        self._sessions[device] = session
        where = self._where.setdefault(device, set())
        if where and session.peer not in where:
            self.metrics.duplicates.inc()
            log.warning("gateway: device %s is connected from two addresses at once (ids are"
                        " the only credential these protocols carry: SECURITY.md)", device)
        where.add(session.peer)

    def _leave(self, device: str, peer: str) -> None:
        where = self._where.get(device)
        if where is not None:
            where.discard(peer)
            if not where:
                del self._where[device]

    # --- gateway.commands.DeviceLinks ----------------------------------------------------

    def connected(self, device: str) -> bool:
        return device in self._sessions

    def context(self, device: str) -> Mapping[str, object]:
        session = self._sessions.get(device)
        return session.context if session is not None else {}

    async def write(self, device: str, frame: bytes) -> None:
        session = self._sessions.get(device)
        if session is None or session.writer.is_closing():
            raise ConnectionError(f"{device} is not connected")
        try:
            await asyncio.wait_for(self._send(session, frame, "command"), _COMMAND_WRITE_S)
        except TimeoutError:
            raise ConnectionError(f"{device} did not take the command within"
                                  f" {_COMMAND_WRITE_S:.0f} s") from None
