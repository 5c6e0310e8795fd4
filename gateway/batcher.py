"""Many connections' readings, one MQTT message per region: what lets one gateway keep up.

Publishing every frame as its own QoS 1 message costs a round of the broker's acknowledgement
and a pending call in the MQTT client per frame, and aiomqtt's bookkeeping grows with the calls
pending: at 10,000 watch connections the gateway delivered under 800 frames a second and its
alarms' replies waited for tens of seconds (benchmarks/gateway.py, issue #10). So the
connections hand their frames' readings to one :class:`Batcher`:

- readings wait in their region's open batch for at most ``linger_s`` (a few milliseconds),
  or until the batch holds ``max_readings``; a batch holding an alarm goes at once;
- a batch is published as one JSON array on the gateway's topic
  ``eldercare/v1/<region>/gw/<gateway id>`` (each reading names its device, which is what the
  wire contract's gateway topic carries; ingest admits each reading by its device);
- at most ``max_in_flight`` batches wait for their PUBACK at once (the MQTT client's own window
  is set to match): the publisher's pending calls stay few whatever the number of connections;
- every submitter waits for its batch's PUBACK, so a connection still answers an alarm only
  once the broker has it, and a device's frames still reach the broker in order (a connection
  submits its next frame after the previous one's PUBACK);
- an encoded batch larger than ``max_bytes`` (radio scans are ~2 KB) is split in two until it
  fits under ingest's payload limit.

One owned task (:meth:`run`) forms and publishes batches; :meth:`submit` is called from the
connections' tasks. Time is the event loop's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

import msgspec

from schemas.readings import Reading

log = logging.getLogger(__name__)

_ENCODER: Final = msgspec.json.Encoder()


class Publisher(Protocol):
    async def publish(self, topic: str, payload: bytes) -> None: ...


@dataclass(slots=True)
class _Batch:
    region: str
    readings: list[Reading] = field(default_factory=list)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)
    urgent: bool = False
    opened: float = 0.0


class Batcher:
    """See the module docstring."""

    def __init__(self, *, publisher: Publisher, topic_of: Callable[[str], str],
                 linger_s: float = 0.005, max_readings: int = 500,
                 max_bytes: int = 192 * 1024, max_in_flight: int = 16,
                 on_published: Callable[[int], None] | None = None) -> None:
        self.publisher = publisher
        self.topic_of = topic_of
        self.linger_s = linger_s
        self.max_readings = max_readings
        self.max_bytes = max_bytes
        self.on_published = on_published
        self._open: dict[str, _Batch] = {}
        self._ready: asyncio.Queue[_Batch] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._flights: set[asyncio.Task[None]] = set()
        self.batches = 0

    async def submit(self, region: str, readings: Sequence[Reading], *, urgent: bool) -> None:
        """Publish ``readings`` with others of ``region``; returns after the broker's PUBACK of
        the message that carried them (raises what the publish raised)."""
        loop = asyncio.get_running_loop()
        batch = self._open.get(region)
        if batch is None:
            batch = self._open[region] = _Batch(region, opened=loop.time())
        batch.readings.extend(readings)
        done: asyncio.Future[None] = loop.create_future()
        batch.waiters.append(done)
        batch.urgent |= urgent
        if batch.urgent or len(batch.readings) >= self.max_readings:
            self._close(batch)
        else:
            self._wake.set()
        await done

    def _close(self, batch: _Batch) -> None:
        if self._open.get(batch.region) is batch:
            del self._open[batch.region]
            self._ready.put_nowait(batch)

    async def run(self) -> None:
        """The batcher's task: close batches as they fill or linger out, publish them."""
        closer = asyncio.create_task(self._linger_loop(), name="gateway-batch-linger")
        try:
            while True:
                batch = await self._ready.get()
                await self._slots.acquire()
                task = asyncio.create_task(self._fly(batch), name="gateway-batch-publish")
                self._flights.add(task)
                task.add_done_callback(self._flights.discard)
        finally:
            closer.cancel()
            for task in [closer, *self._flights]:
                task.cancel()
            await asyncio.gather(closer, *self._flights, return_exceptions=True)
            for batch in [*self._open.values(), *_drain(self._ready)]:
                for w in batch.waiters:
                    if not w.done():
                        w.cancel()

    async def _linger_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._open:
                self._wake.clear()
                await self._wake.wait()
            now = loop.time()
            due = [b for b in self._open.values() if now - b.opened >= self.linger_s]
            for batch in due:
                self._close(batch)
            if self._open:
                first = min(b.opened for b in self._open.values())
                await asyncio.sleep(max(first + self.linger_s - loop.time(), 0.0005))

    async def _fly(self, batch: _Batch) -> None:
        try:
            for part in self._parts(batch.readings):
                await self.publisher.publish(self.topic_of(batch.region), part)
            self.batches += 1
            if self.on_published is not None:
                self.on_published(len(batch.readings))
        except BaseException as exc:
            for w in batch.waiters:
                if not w.done():
                    if isinstance(exc, asyncio.CancelledError):
                        w.cancel()
                    else:
                        w.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            log.warning("gateway: a batch of %d readings was not published: %s",
                        len(batch.readings), exc)
        else:
            for w in batch.waiters:
                if not w.done():
                    w.set_result(None)
        finally:
            self._slots.release()

    def _parts(self, readings: list[Reading]) -> list[bytes]:
        """The batch encoded, split in halves until each part fits ``max_bytes``."""
        payload = _ENCODER.encode(readings)
        if len(payload) <= self.max_bytes or len(readings) == 1:
            return [payload]
        half = len(readings) // 2
        return self._parts(readings[:half]) + self._parts(readings[half:])


def _drain(queue: asyncio.Queue[_Batch]) -> list[_Batch]:
    out: list[_Batch] = []
    with contextlib.suppress(asyncio.QueueEmpty):
        while True:
            out.append(queue.get_nowait())
    return out
