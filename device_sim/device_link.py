"""One simulated vendor device on its TCP connection to a gateway (:class:`DeviceLink`).

The I/O side of a protocol encoder (:mod:`device_sim.device_frames`), one asyncio task per
device, fed readings by :class:`device_sim.tcp_devices.DeviceFleet` through a bounded queue. It
behaves as the real device does (docs/simulator.md, "Through the device gateways"):

- it connects when its first frame is due, sends its opening frames (a GT06 login) and waits
  for their replies before anything else; it reconnects when the gateway closes the connection,
  and after an outage (whose backlog comes on a new connection, as from a device that lost the
  network), having first taken the replies still due on the old one;
- it sends at most ``max_frames_per_s`` frames a second (the gateway closes a connection that
  floods it), so at high ``--speed`` frames are late instead of refused;
- an alarm frame waits for its reply (the gateway answers only once the broker has the alarm)
  and is sent again, unchanged, every ``reply_timeout_s`` while unanswered, up to
  ``max_repeats`` times, like a real watch; any other reply a frame expects that does not come
  within ``reply_timeout_s`` is counted missing;
- at the end it waits for the replies still due (repeating alarms), then closes.

Replies are read by a task per connection with the gateway's own framer. Bounded: the replies
awaited each expire, and the framer holds one partial frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from device_sim.device_frames import DeviceEncoder, DeviceFrame
from device_sim.publisher import Pace
from foundation.broker import Backoff
from foundation.errors import ValidationError

log = logging.getLogger(__name__)

#: Readings one device may have waiting for its connection.
QUEUE_READINGS: Final = 256
_READ_BYTES: Final = 4096
_CONNECT_ATTEMPTS: Final = 3
_LOGIN_ATTEMPTS: Final = 3


class Endpoint(NamedTuple):
    """Where a device's gateway listens."""

    host: str
    port: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSettings:
    """How the simulated devices behave on their connections (wall-clock seconds: network
    behaviour does not scale with ``--speed``)."""

    #: An alarm unanswered this long is sent again; any other awaited reply is counted missing.
    reply_timeout_s: float = 10.0
    #: Repeats of an unanswered alarm before the device gives up on it (counted unanswered).
    max_repeats: int = 3
    #: A login unanswered this long is sent again (a GT06 tracker waits about 5 s).
    login_timeout_s: float = 5.0
    connect_timeout_s: float = 10.0
    #: Frames a second per connection, at most: under the gateway's default 20 (docs/gateway.md).
    max_frames_per_s: float = 15.0
    #: A frame sent this long after its due time counts as late.
    late_after_ms: float = 10.0
    close_timeout_s: float = 5.0


@dataclass(slots=True)
class DeviceStats:
    """What the devices did, so far (progress) or in all (the result)."""

    #: Devices that connected at least once; connections opened (their first and reconnects).
    devices: int = 0
    connections: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    readings: int = 0
    frames: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    replies: int = 0
    #: Commands from duty staff (locate now, call the watch) the devices acknowledged.
    commands_answered: int = 0
    #: Replies a frame expected that did not come within the reply timeout (not alarms).
    replies_missing: int = 0
    alarms: int = 0
    alarm_repeats: int = 0
    alarms_answered: int = 0
    #: Alarms whose reply never came, after every repeat (or when the run stopped).
    alarms_unanswered: int = 0
    #: Frames not sent: the device could not reach its gateway, or could not log in.
    frames_undelivered: int = 0
    #: Readings (or parts) the protocol cannot carry, by what ("gt06 vitals").
    not_carried: Counter[str] = field(default_factory=Counter)
    #: Fixes sent without a position (Wi-Fi or cell: the serving cell only).
    unlocated: int = 0
    #: Readings an encoder failed on (a bug: logged, skipped).
    errors: int = 0
    late_frames: int = 0
    max_late_ms: float = 0.0
    #: The simulated time reached (Unix ms), for progress.
    sim_ms: int = 0
    seconds: float = 0.0
    stopped: bool = False


class Outgoing(NamedTuple):
    """A reading for a device to send: its wire body, whether it is an outage's backlog, and
    when it was due (monotonic)."""

    body: Mapping[str, Any]
    backlog: bool
    due: float


#: Queue items: the run has ended; the device lost its network (an outage ends next).
END: Final = object()
RECONNECT: Final = object()


@dataclass(eq=False, slots=True)
class _Awaited:
    """A frame waiting for its reply."""

    frame: DeviceFrame
    deadline: float
    repeats: int = 0


class _Connection:
    """One TCP connection of a device; ``lost`` once either side ended it."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.reader: asyncio.Task[None] | None = None
        self.lost = False


class DeviceLink:
    """One device's task (:meth:`run`): its queue of readings, its connection, the replies it
    awaits. ``stats`` is shared by every device of a run; ``stop`` ends the run early."""

    def __init__(self, device_id: str, encoder: DeviceEncoder, endpoint: Endpoint, *,
                 settings: DeviceSettings, stats: DeviceStats, pace: Pace,
                 stop: threading.Event) -> None:
        self.id = device_id
        self.encoder = encoder
        self.endpoint = endpoint
        self.settings = settings
        self.stats = stats
        self.pace = pace
        self.stop = stop
        self.queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_READINGS)
        self.task: asyncio.Task[None] | None = None
        self._conn: _Connection | None = None
        self._connected_before = False
        #: Reply key -> frames awaiting it, oldest first (a watch's AL replies name no frame).
        self._awaited: dict[str, deque[_Awaited]] = {}
        self._replied = asyncio.Event()
        self._tokens = 1.0
        self._refilled = time.monotonic()

    # -- the task ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Take readings until the end; repeat alarms meanwhile; settle; close."""
        getter: asyncio.Future[object] | None = None
        try:
            while True:
                wait = self._next_deadline_in()
                if wait == 0.0:  # overdue replies first, however busy the queue is
                    await self._expire()
                    continue
                if getter is None:
                    getter = asyncio.ensure_future(self.queue.get())
                # Waiting on the same get across timeouts: cancelling a get could lose an item.
                await asyncio.wait({getter}, timeout=wait)
                if not getter.done():
                    continue
                item, getter = getter.result(), None
                if item is END:
                    break
                if self.stop.is_set():
                    continue  # stopping: what was not sent stays unsent
                if item is RECONNECT:
                    # The outage began long (in simulated time) after the replies still due
                    # would have come: take them, then lose the connection.
                    await self._settle()
                    await self._disconnect()
                elif isinstance(item, Outgoing):
                    await self._reading(item)
            await self._settle()
        finally:
            if getter is not None:
                getter.cancel()
            await self._disconnect()

    async def _reading(self, item: Outgoing) -> None:
        try:
            encoded = self.encoder.encode(item.body, backlog=item.backlog)
        except Exception:  # one bad reading must not end the device
            self.stats.errors += 1
            log.exception("simulated %s device %s: cannot encode a %s reading",
                          self.encoder.protocol, self.id, item.body.get("type"))
            return
        self.stats.readings += 1
        self.stats.unlocated += encoded.unlocated
        for what in encoded.not_carried:
            self.stats.not_carried[f"{self.encoder.protocol} {what}"] += 1
        for frame in encoded.frames:
            if not await self._send(frame, due=item.due):
                self.stats.frames_undelivered += 1

    # -- sending -----------------------------------------------------------------------------
    async def _send(self, frame: DeviceFrame, *, due: float | None) -> bool:
        """Send one frame (connecting first if need be), awaiting its reply if it has one; on
        a connection lost while writing, once more on a new one. False: not sent."""
        for _ in range(2):
            if not await self._connect():
                return False
            await self._rate()
            if due is not None and self.pace.speed is not None:
                late_ms = (time.monotonic() - due) * 1000
                self.stats.late_frames += late_ms > self.settings.late_after_ms
                self.stats.max_late_ms = max(self.stats.max_late_ms, late_ms)
            if frame.reply is not None and due is not None:
                self._await(frame)
            if await self._write(frame):
                if frame.alarm and due is not None:
                    self.stats.alarms += 1
                return True
            due = None  # already counted and awaited; a repeat of the same frame
        return False

    def _await(self, frame: DeviceFrame) -> None:
        assert frame.reply is not None
        timeout = self.settings.reply_timeout_s
        self._awaited.setdefault(frame.reply, deque()).append(
            _Awaited(frame, time.monotonic() + timeout))

    async def _write(self, frame: DeviceFrame) -> bool:
        conn = self._conn
        if conn is None or conn.lost:
            return False
        try:
            conn.writer.write(frame.data)
            await asyncio.wait_for(conn.writer.drain(), self.settings.connect_timeout_s)
        except (OSError, TimeoutError):
            conn.lost = True
            return False
        self.stats.frames += 1
        self.stats.commands[frame.command] += 1
        return True

    async def _rate(self) -> None:
        """A token bucket of ``max_frames_per_s``, bursts of one second's worth."""
        rate = self.settings.max_frames_per_s
        now = time.monotonic()
        self._tokens = min(max(rate, 1.0), self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1.0:
            await asyncio.sleep((1.0 - self._tokens) / rate)
            self._tokens, self._refilled = 1.0, time.monotonic()
        self._tokens -= 1.0

    # -- connecting --------------------------------------------------------------------------
    async def _connect(self) -> bool:
        if self._conn is not None and not self._conn.lost:
            return True
        await self._disconnect()
        backoff = Backoff(first_s=0.2, max_s=2.0)
        for attempt in range(_CONNECT_ATTEMPTS):
            if self.stop.is_set():
                return False
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.endpoint), self.settings.connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                self.stats.connect_failures += 1
                log.info("simulated device %s cannot reach its %s gateway at %s:%d: %s",
                         self.id, self.encoder.protocol, *self.endpoint, exc)
                await asyncio.sleep(backoff.delay_s(attempt))
                continue
            conn = self._conn = _Connection(writer)
            conn.reader = asyncio.create_task(self._read_loop(conn, reader),
                                              name=f"sim-device-{self.id}-replies")
            self.stats.connections += 1
            if self._connected_before:
                self.stats.reconnects += 1
            else:
                self.stats.devices += 1
                self._connected_before = True
            if await self._open(conn):
                return True
            await self._disconnect()
        log.warning("simulated device %s: no connection to its %s gateway at %s:%d after %d"
                    " attempts", self.id, self.encoder.protocol, *self.endpoint,
                    _CONNECT_ATTEMPTS)
        return False

    async def _open(self, conn: _Connection) -> bool:
        """Send the opening frames (a login), each answered before the next."""
        for frame in self.encoder.opening():
            for _ in range(_LOGIN_ATTEMPTS):
                awaited = _Awaited(frame, time.monotonic() + self.settings.login_timeout_s)
                if frame.reply is not None:
                    self._awaited.setdefault(frame.reply, deque()).append(awaited)
                if not await self._write(frame):
                    return False
                if frame.reply is None or await self._answered(awaited, conn):
                    break
            else:
                log.warning("simulated device %s: its %s login was not answered",
                            self.id, self.encoder.protocol)
                return False
        return True

    async def _answered(self, awaited: _Awaited, conn: _Connection) -> bool:
        """Wait for ``awaited`` to be answered (True) or to expire (False, withdrawn)."""
        key = awaited.frame.reply
        assert key is not None
        while awaited in self._awaited.get(key, ()):
            left = awaited.deadline - time.monotonic()
            if left <= 0 or conn.lost:
                self._withdraw(awaited)
                return False
            self._replied.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replied.wait(), left)
        return True

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn.lost = True
        conn.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(conn.writer.wait_closed(), self.settings.close_timeout_s)
        if conn.reader is not None:
            conn.reader.cancel()
            await asyncio.wait({conn.reader})

    # -- replies -----------------------------------------------------------------------------
    async def _read_loop(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        framer = self.encoder.framer()
        try:
            while True:
                data = await reader.read(_READ_BYTES)
                if not data:
                    break
                for frame in framer.feed(data):
                    self._reply(frame)
        except (OSError, ValidationError):
            pass  # reset, or a reply stream we cannot frame: the connection is done
        finally:
            conn.lost = True
            self._replied.set()

    def _reply(self, frame: bytes) -> None:
        answer = self.encoder.answer(frame)
        if answer is not None:  # a command from duty staff: acknowledged, like a real device
            self.stats.commands_answered += 1
            if self._conn is not None and not self._conn.lost:
                self._conn.writer.write(answer)
            return
        self.stats.replies += 1
        key = self.encoder.reply_key(frame)
        waiting = self._awaited.get(key) if key is not None else None
        if key is not None and waiting:
            awaited = waiting.popleft()
            if not waiting:
                del self._awaited[key]
            if awaited.frame.alarm:
                self.stats.alarms_answered += 1
        self._replied.set()

    def _withdraw(self, awaited: _Awaited) -> None:
        key = awaited.frame.reply
        assert key is not None
        waiting = self._awaited.get(key)
        if waiting is not None and awaited in waiting:
            waiting.remove(awaited)
            if not waiting:
                del self._awaited[key]

    def _next_deadline_in(self) -> float | None:
        deadlines = [a.deadline for waiting in self._awaited.values() for a in waiting]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    async def _expire(self) -> None:
        """Replies overdue: an alarm is sent again (or given up after its repeats, or when the
        run is stopping); any other expected reply is counted missing."""
        now = time.monotonic()
        overdue = [a for waiting in self._awaited.values() for a in waiting if a.deadline <= now]
        for awaited in overdue:
            if awaited not in self._awaited.get(awaited.frame.reply or "", ()):
                continue  # answered while an earlier one was being sent again
            if not awaited.frame.alarm:
                self._withdraw(awaited)
                self.stats.replies_missing += 1
            elif awaited.repeats >= self.settings.max_repeats or self.stop.is_set():
                self._withdraw(awaited)
                self.stats.alarms_unanswered += 1
                log.warning("simulated device %s: an alarm (%s) was never answered",
                            self.id, awaited.frame.command)
            else:
                awaited.repeats += 1
                awaited.deadline = time.monotonic() + self.settings.reply_timeout_s
                self.stats.alarm_repeats += 1
                if not await self._send(awaited.frame, due=None):
                    self.stats.frames_undelivered += 1

    async def _settle(self) -> None:
        """Wait for the replies still due, repeating alarms meanwhile."""
        while self._awaited:
            wait = self._next_deadline_in()
            self._replied.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._replied.wait(), wait)
            await self._expire()
