"""Gateway and network delivery: turn a time-ordered SimReading stream into MQTT messages.

Pure and streaming: :func:`deliver` is a generator with no I/O and no clock; time is the
readings' own true time ``t_ms``. It runs as a small discrete-event loop. Each reading first fires
every timer due at or before it (a gateway's flush deadline, the end of an outage), then is
accepted; messages are formed when a batch closes and go to a heap keyed by publication time,
from which everything due at or before the current time is yielded. Nothing formed later can be
due earlier (every timer and every later reading lies at or after the current time, and the
mangling below only ever postpones), so the output's ``t_ms`` never decreases. Memory is bounded
by what is in flight: open batches, the heap (at most ``delay_max_s`` plus one flush window of
messages) and the readings held by outages.

Delivery rules (``DeliveryParams``; docs/simulator.md, "Delivery, recording and replay"):

* a device with no gateway publishes each reading at its own time, as a single object on its
  device topic;
* a gateway collects its devices' readings and publishes a JSON array on its gateway topic when it
  holds ``gateway_batch`` readings, ``gateway_flush_s`` after the first one, when an alarm
  (:data:`schemas.readings.ALARM_TYPES`) arrives (the alarm and what was waiting go at once), or
  before the payload would outgrow :data:`MAX_PAYLOAD_BYTES`; a fraction ``reorder_rate`` of the
  readings in a gateway message is shuffled out of order;
* an outage window ``[start_ms, end_ms)`` of a device holds its readings and releases them at
  ``end_ms`` as one array (its device topic, or its gateway's topic), never reordered: the
  device's own buffer keeps its order;
* then the network: a fraction ``delay_rate`` of messages is postponed by up to ``delay_max_s``
  (later messages overtake it) and a fraction ``duplicate_rate`` is published a second time
  :data:`DUPLICATE_AFTER_S` later (a QoS 1 resend).

Deterministic: one ``random.Random(seed)`` drawn in stream order, so the same readings and seed
give the same messages.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from device_sim.types import DeliveryParams, Publication, SimReading
from schemas.readings import ALARM_TYPES
from schemas.topics import device_topic, gateway_topic

#: The ingest service's default payload limit (``ingest.max_payload_bytes``): a larger message
#: would be dead-lettered whole, so batches and outage bursts are split below it.
MAX_PAYLOAD_BYTES: Final = 256 * 1024
#: A duplicate follows its original after a QoS 1 resend timeout drawn from this range (s).
DUPLICATE_AFTER_S: Final = (0.2, 3.0)

_ENCODER: Final = msgspec.json.Encoder()
_GW_TIMER, _OUTAGE_TIMER = 0, 1

GatewayKey = tuple[str, str]  # (region, gateway_id)


@dataclass(slots=True)
class _Batch:
    """Readings a gateway holds; ``generation`` invalidates the flush timer of a closed batch."""

    readings: list[dict[str, Any]] = field(default_factory=list)
    size: int = 2  # payload bytes so far: "[" + "]"
    generation: int = 0


@dataclass(slots=True)
class _Held:
    """Readings of one device held by one outage window, released at ``end_ms``."""

    region: str
    gateway_id: str | None
    readings: list[dict[str, Any]] = field(default_factory=list)


def deliver(readings: Iterable[SimReading], *, params: DeliveryParams, seed: int,
            outages: Mapping[str, Sequence[tuple[int, int]]] = {}) -> Iterator[Publication]:
    """The MQTT messages devices and gateways publish for ``readings``, in publication order.

    Parameters
    ----------
    readings
        In non-decreasing true time ``t_ms`` (a ``ValueError`` says where it is not).
    params
        Batching and network mangling; see the module docstring.
    seed
        Seed of the one random generator; same input and seed, same output.
    outages
        Per device id, true-time windows ``(start_ms, end_ms)`` whose readings are held and
        released together at ``end_ms``.

    Yields
    ------
    Publication
        In non-decreasing ``t_ms``; ``readings`` refers to the input's ``body`` dicts (copied
        only where a gateway adds the ``device_id`` a body lacks).
    """
    state = _Delivery(params, random.Random(seed), outages)
    last = None
    for r in readings:
        if last is not None and r.t_ms < last:
            raise ValueError(f"readings out of time order: t_ms {r.t_ms} after {last} "
                             f"(device {r.device_id})")
        last = r.t_ms
        state.fire_timers(until_ms=r.t_ms)
        state.accept(r)
        yield from state.due(r.t_ms)
    state.fire_timers(until_ms=None)
    yield from state.due(None)


class _Delivery:
    """State of one :func:`deliver` run: open batches, held outages, timers, formed messages."""

    def __init__(self, params: DeliveryParams, rng: random.Random,
                 outages: Mapping[str, Sequence[tuple[int, int]]]) -> None:
        self.p = params
        self.rng = rng
        self.outages = {dev: sorted(windows) for dev, windows in outages.items() if windows}
        self.flush_ms = round(params.gateway_flush_s * 1000)
        self.batches: dict[GatewayKey, _Batch] = {}
        self.held: dict[tuple[str, int], _Held] = {}  # (device_id, end_ms)
        # (time, order, kind, key, generation); ``order`` keeps equal times in creation order.
        self.timers: list[tuple[int, int, int, Any, int]] = []
        self.heap: list[tuple[int, int, Publication]] = []
        self.order = itertools.count()

    # -- input -------------------------------------------------------------------------------
    def accept(self, r: SimReading) -> None:
        """Route one reading: hold it (outage), publish it (own topic) or batch it (gateway)."""
        end = self._outage_end(r.device_id, r.t_ms)
        if end is not None:
            held = self.held.get((r.device_id, end))
            if held is None:
                held = self.held[(r.device_id, end)] = _Held(r.region, r.gateway_id)
                self._timer(end, _OUTAGE_TIMER, (r.device_id, end), 0)
            held.readings.append(self._with_id(r) if r.gateway_id else r.body)
        elif r.gateway_id is None:
            self._send(r.t_ms, device_topic(r.region, r.device_id), [r.body], as_array=False)
        else:
            self._batch(r)

    def _batch(self, r: SimReading) -> None:
        key = (r.region, r.gateway_id or "")
        batch = self.batches.setdefault(key, _Batch())
        body = self._with_id(r)
        size = len(_ENCODER.encode(body)) + 1
        if batch.readings and batch.size + size > MAX_PAYLOAD_BYTES:
            self._flush(key, r.t_ms)
        if not batch.readings:
            self._timer(r.t_ms + self.flush_ms, _GW_TIMER, key, batch.generation)
        batch.readings.append(body)
        batch.size += size
        if len(batch.readings) >= self.p.gateway_batch or body.get("type") in ALARM_TYPES:
            self._flush(key, r.t_ms)

    @staticmethod
    def _with_id(r: SimReading) -> dict[str, Any]:
        # Gateway payloads mix devices, so every reading must name its own.
        return r.body if "device_id" in r.body else {"device_id": r.device_id, **r.body}

    def _outage_end(self, device_id: str, t_ms: int) -> int | None:
        for start, end in self.outages.get(device_id, ()):
            if start <= t_ms < end:
                return end
            if start > t_ms:
                break
        return None

    # -- timers ------------------------------------------------------------------------------
    def _timer(self, at_ms: int, kind: int, key: Any, generation: int) -> None:
        heapq.heappush(self.timers, (at_ms, next(self.order), kind, key, generation))

    def fire_timers(self, *, until_ms: int | None) -> None:
        """Fire every timer due at or before ``until_ms`` (all of them for ``None``)."""
        while self.timers and (until_ms is None or self.timers[0][0] <= until_ms):
            at, _, kind, key, generation = heapq.heappop(self.timers)
            if kind == _GW_TIMER:
                batch = self.batches.get(key)
                if batch is not None and batch.generation == generation and batch.readings:
                    self._flush(key, at)
            else:
                self._release(key, at)

    def _flush(self, key: GatewayKey, at_ms: int) -> None:
        batch = self.batches[key]
        readings, batch.readings, batch.size = batch.readings, [], 2
        batch.generation += 1
        self._reorder(readings)
        self._send(at_ms, gateway_topic(*key), readings, as_array=True)

    def _release(self, key: tuple[str, int], at_ms: int) -> None:
        device_id, _ = key
        held = self.held.pop(key)
        topic = (gateway_topic(held.region, held.gateway_id) if held.gateway_id
                 else device_topic(held.region, device_id))
        for chunk in _chunks(held.readings):
            self._send(at_ms, topic, chunk, as_array=True)

    # -- network -----------------------------------------------------------------------------
    def _reorder(self, readings: list[dict[str, Any]]) -> None:
        """Move a fraction ``reorder_rate`` of the readings out of their time order, in place."""
        if len(readings) < 2 or self.p.reorder_rate <= 0:
            return
        picked = [i for i in range(len(readings)) if self.rng.random() < self.p.reorder_rate]
        if len(picked) == 1:  # one reading alone cannot move: swap it with another
            other = self.rng.randrange(len(readings) - 1)
            picked.append(other + (other >= picked[0]))
            picked.sort()
        if len(picked) >= 2:
            # A rotation moves every picked reading (a plain shuffle may leave some in place).
            moved = [readings[i] for i in picked]
            for i, body in zip(picked, moved[1:] + moved[:1], strict=True):
                readings[i] = body

    def _send(self, at_ms: int, topic: str, readings: list[dict[str, Any]], *,
              as_array: bool) -> None:
        if self.rng.random() < self.p.delay_rate:
            at_ms += round(self.rng.uniform(0.0, self.p.delay_max_s) * 1000)
        self._push(Publication(at_ms, topic, readings, as_array))
        if self.rng.random() < self.p.duplicate_rate:
            after = round(self.rng.uniform(*DUPLICATE_AFTER_S) * 1000)
            self._push(Publication(at_ms + after, topic, list(readings), as_array))

    def _push(self, pub: Publication) -> None:
        heapq.heappush(self.heap, (pub.t_ms, next(self.order), pub))

    def due(self, until_ms: int | None) -> Iterator[Publication]:
        """Pop the messages due at or before ``until_ms`` (all of them for ``None``)."""
        while self.heap and (until_ms is None or self.heap[0][0] <= until_ms):
            yield heapq.heappop(self.heap)[2]


def _chunks(readings: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Split a burst into arrays that each stay under :data:`MAX_PAYLOAD_BYTES`."""
    chunk: list[dict[str, Any]] = []
    size = 2
    for body in readings:
        n = len(_ENCODER.encode(body)) + 1
        if chunk and size + n > MAX_PAYLOAD_BYTES:
            yield chunk
            chunk, size = [], 2
        chunk.append(body)
        size += n
    if chunk:
        yield chunk
