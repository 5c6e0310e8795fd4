"""The gateway's command desk: duty staff's commands to devices over their live connections.

Commands arrive from the broker (``eldercare/v1/<region>/cmd/<device>``, QoS 1,
:mod:`schemas.commands`); results go back on ``.../cmd/<device>/result``:

- a command for a device connected to this gateway is written to its connection at once, in
  the device's own words (:meth:`gateway.codec.Codec.encode_command`), and reported ``sent``;
  the device's answer (:attr:`gateway.codec.Decoded.acknowledges`) makes it ``acknowledged``;
  no answer within ``ack_timeout_s`` makes it ``failed``. A command the protocol has no word for
  fails at once, ``unsupported``;
- a command for a device not connected waits, bounded (``wait_s``, ``max_waiting_per_device``,
  ``max_waiting``), and goes out, in order, when the device connects (watches reconnect every
  few minutes; a tracker after its power-save sleep). If the device does not come, the command
  fails with that reason, but only from a gateway that has seen the device since it started:
  one gateway runs per protocol and each reads every command, so a gateway that never saw a
  device says nothing and leaves the answer to the gateway that holds it. The requester takes
  "no result at all" as "no gateway holds this device" (docs/gateway.md);
- a command older than ``max_age_s`` when it arrives (queued by the broker through an outage)
  fails as expired rather than surprise a family hours later.

Pure bookkeeping plus one owned task that publishes results and sweeps deadlines; time comes
from the ``now_ms`` and ``monotonic`` callables the server gives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from foundation.errors import ValidationError
from gateway.codec import Codec, UnsupportedCommand
from gateway.settings import CommandsConfig
from schemas.commands import (
    CommandResult,
    CommandStatus,
    DeviceCommand,
    decode_command,
    encode,
    parse_command_topic,
    result_topic,
)

log = logging.getLogger(__name__)

#: Devices remembered as "seen by this gateway" (an LRU: far more than one process serves).
_SEEN_DEVICES: Final = 1_000_000
#: Results waiting for the broker; beyond, the oldest is dropped (logged): the requester then
#: reports "no result", which is true enough after that many.
_RESULTS_QUEUED: Final = 10_000
_SWEEP_S: Final = 1.0


class Publisher(Protocol):
    async def publish(self, topic: str, payload: bytes) -> None: ...


class DeviceLinks(Protocol):
    """What the desk needs of the server: the devices' live connections."""

    def connected(self, device: str) -> bool: ...

    def context(self, device: str) -> Mapping[str, object]:
        """The ``extra`` of the device's last frame (a watch's vendor code and index field)."""
        ...

    async def write(self, device: str, frame: bytes) -> None:
        """Write to the device's connection; ``ConnectionError`` if it is gone."""
        ...


@dataclass(slots=True)
class _Pending:
    region: str
    device: str
    command: DeviceCommand
    #: monotonic deadline: of waiting for the device, then of waiting for its answer.
    deadline: float
    ack: str | None = None


class CommandDesk:
    """See the module docstring. Call :meth:`receive` for each command message, and the
    server calls :meth:`device_ready` and :meth:`answered`; :meth:`run` is the owned task."""

    def __init__(self, *, codec: Codec, links: DeviceLinks, publisher: Publisher,
                 settings: CommandsConfig, now_ms: Callable[[], int],
                 monotonic: Callable[[], float] = time.monotonic,
                 on_result: Callable[[CommandStatus], None] | None = None) -> None:
        self.codec = codec
        self.links = links
        self.publisher = publisher
        self.settings = settings
        self.now_ms = now_ms
        self.monotonic = monotonic
        self.on_result = on_result
        self._waiting: dict[str, deque[_Pending]] = {}
        self._waiting_count = 0
        self._unanswered: dict[tuple[str, str], _Pending] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._serial = 0
        self._results: asyncio.Queue[tuple[str, CommandResult]] = asyncio.Queue()
        self._lock = asyncio.Lock()

    # --- From the broker -----------------------------------------------------------------

    async def receive(self, topic: str, payload: bytes) -> None:
        """One command message. A malformed one is logged and dropped (there may be no id to
        answer with); everything else ends in a result or, for another gateway's device, in
        silence (module docstring)."""
        try:
            region, device = parse_command_topic(topic)
            command = decode_command(payload)
        except ValidationError as exc:
            log.warning("gateway: dropped a device command on %s: %s", topic[:120], exc.reason)
            return
        age_s = (self.now_ms() - command.ts) / 1000
        if age_s > self.settings.max_age_s:
            self._result(region, device, command, "failed",
                         f"expired: requested {age_s:.0f} s ago, over the gateway's"
                         f" {self.settings.max_age_s:.0f} s")
            return
        pending = _Pending(region=region, device=device, command=command,
                           deadline=self.monotonic() + self.settings.wait_s)
        async with self._lock:
            if self.links.connected(device) and not self._waiting.get(device):
                await self._send(pending)
                return
            self._wait(pending)

    def _wait(self, pending: _Pending) -> None:
        queue = self._waiting.setdefault(pending.device, deque())
        full = (len(queue) >= self.settings.max_waiting_per_device
                or self._waiting_count >= self.settings.max_waiting)
        if full:
            if not queue:
                del self._waiting[pending.device]
            self._fail_or_ignore(pending, "too many commands already waiting for this device"
                                 " to connect" if queue else "the gateway holds too many"
                                 " waiting commands")
            return
        queue.append(pending)
        self._waiting_count += 1

    # --- From the server -----------------------------------------------------------------

    async def device_ready(self, device: str) -> None:
        """``device`` connected (or named itself on a connection): send what waits for it."""
        self._remember(device)
        if device not in self._waiting:
            return
        async with self._lock:
            queue = self._waiting.pop(device, deque())
            self._waiting_count -= len(queue)
            while queue:
                await self._send(queue.popleft())

    def answered(self, device: str, ack: str) -> None:
        """The device answered a command (``ack``: :attr:`Decoded.acknowledges`)."""
        pending = self._unanswered.pop((device, ack), None)
        if pending is None:
            log.info("gateway: %s answered %r, which no waiting command expects", device,
                     ack[:32])
            return
        self._result(pending.region, device, pending.command, "acknowledged")

    # --- Sending -------------------------------------------------------------------------

    async def _send(self, pending: _Pending) -> None:
        self._serial = (self._serial + 1) & 0xFFFF or 1
        device, command = pending.device, pending.command
        try:
            outgoing = self.codec.encode_command(command, device_id=device,
                                                 context=self.links.context(device),
                                                 serial=self._serial)
        except UnsupportedCommand as exc:
            self._result(pending.region, device, command, "failed",
                         f"unsupported: {exc.reason}")
            return
        try:
            await self.links.write(device, outgoing.frame)
        except ConnectionError:
            # Gone between the check and the write: it waits for the next connection.
            pending.deadline = self.monotonic() + self.settings.wait_s
            self._wait(pending)
            return
        pending.ack = outgoing.ack
        pending.deadline = self.monotonic() + self.settings.ack_timeout_s
        # One command per answer key at a time: a second "locate" before the first answer
        # replaces it (the device's single "CR" answer cannot say which it was).
        earlier = self._unanswered.pop((device, outgoing.ack), None)
        if earlier is not None:
            self._result(earlier.region, device, earlier.command, "failed",
                         "superseded by a later command of the same kind before the device"
                         " answered")
        self._unanswered[(device, outgoing.ack)] = pending
        self._result(pending.region, device, command, "sent")

    # --- Deadlines and results -----------------------------------------------------------

    def sweep(self) -> None:
        """Fail what has waited too long (called every second by :meth:`run`)."""
        now = self.monotonic()
        for device in [d for d, q in self._waiting.items() if q[0].deadline <= now]:
            queue = self._waiting[device]
            while queue and queue[0].deadline <= now:
                self._waiting_count -= 1
                self._fail_or_ignore(queue.popleft(), "the device did not connect within"
                                     f" {self.settings.wait_s:.0f} s")
            if not queue:
                del self._waiting[device]
        for key in [k for k, p in self._unanswered.items() if p.deadline <= now]:
            p = self._unanswered.pop(key)
            self._result(p.region, p.device, p.command, "failed", "sent, but the device did"
                         f" not answer within {self.settings.ack_timeout_s:.0f} s")

    def _fail_or_ignore(self, pending: _Pending, reason: str) -> None:
        if pending.device in self._seen:
            self._result(pending.region, pending.device, pending.command, "failed", reason)
        else:
            log.debug("gateway: command %s for %s left to the gateway that holds it (%s)",
                      pending.command.id, pending.device, reason)

    def _remember(self, device: str) -> None:
        self._seen[device] = None
        self._seen.move_to_end(device)
        if len(self._seen) > _SEEN_DEVICES:
            self._seen.popitem(last=False)

    def _result(self, region: str, device: str, command: DeviceCommand, status: CommandStatus,
                reason: str | None = None) -> None:
        result = CommandResult(id=command.id, device_id=device, command=command.command,
                               status=status, ts=self.now_ms(),
                               reason=reason[:300] if reason else None)
        if self._results.qsize() >= _RESULTS_QUEUED:
            dropped = self._results.get_nowait()[1]
            log.warning("gateway: dropped the %s result of command %s: the broker is behind",
                        dropped.status, dropped.id)
        self._results.put_nowait((result_topic(region, device), result))
        if self.on_result is not None:
            self.on_result(status)
        log.info("gateway: command %s (%s) for %s: %s%s", command.id, command.command, device,
                 status, f" ({reason})" if reason else "")

    @property
    def waiting(self) -> int:
        return self._waiting_count

    async def run(self) -> None:
        """The desk's task: publish results in order, sweep deadlines."""
        sweeping = asyncio.create_task(self._sweep_loop(), name="gateway-commands-sweep")
        try:
            while True:
                topic, result = await self._results.get()
                await self.publisher.publish(topic, encode(result))
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(_SWEEP_S)
            self.sweep()
