"""Offline detection over a recorded stream of readings: the engine of ``eldercare detect``.

Why here, in ``detectors``: this is the service's own detector engine driven by a stream of JSON
lines instead of MQTT, and both the shell's ``eldercare detect`` and the simulator's scored runs
(``device_sim.evaluate``) need it; both sit above ``detectors``, so the runner lives below them.
It is the one detectors module that reads a stream and writes one: the lines are an iterable
given to :func:`run_detect` and the events go to a text stream given to it. It opens no file,
reads no clock and logs nothing (``eldercare/detect.py`` opens the file or stdin).

Input: one reading per line in the wire format (the objects gateways publish, each with its
``device_id``). The service takes a reading's region from its MQTT topic; here an optional
``region`` field names it, else an optional ``topic`` field (``eldercare/v1/<region>/...``), else
``default_region``. So simulator recordings (device_sim.recording: each line a reading plus the
envelope ``topic``, ``sent_ms``, ``msg``) are read as they are; a reading from a device topic may
then omit ``device_id`` (the topic names the device) but may not contradict it, as in the
service. The envelope's other keys are unknown fields to the reading structs, which ignore them.

Lines are processed in batches of ``batch_lines``, exactly like ingest batches, so gateway-style
disorder inside a batch is handled the way the service handles it. The engine's clock is the
data: a line's receipt time is its envelope ``sent_ms`` (when it was published) or, without one,
its own ``ts``; the clock is the newest receipt time seen. As in the service, the timer rules
(offline, inactivity, falls whose stream stopped) run every ``tick_s`` of that clock: a batch is
cut where the clock passes the next tick, so a device that falls silent mid-file is noticed
then, not only at the end of the batch or the file.

Output: one JSON event per line. Memory is bounded by one batch plus the per-device state, so a
file of millions of readings streams through. Bad lines are reported on ``err`` with their line
number and reason, counted in the :class:`DetectReport`, and skipped. A detector that fails on a
batch is reported on ``err`` and counted (``detector_failures``): the other detectors' events are
still written. What counts as failure (``--strict``, the exit status) is the caller's decision.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import msgspec

from detectors.engine import DetectorEngine
from detectors.events import EVENT_ENCODER, Event
from detectors.params import DetectorParams
from foundation.errors import ValidationError
from schemas.readings import Reading
from schemas.registry import Registry
from schemas.topics import parse_topic

_MAX_REPORTED = 20


class _Envelope(msgspec.Struct):
    region: str | None = None
    topic: str | None = None
    sent_ms: int | None = None


@dataclass(slots=True)
class DetectReport:
    """Counts of one run."""

    lines: int = 0
    readings: int = 0
    rejected: int = 0
    events: int = 0
    detector_failures: int = 0


def _batches(lines: Iterable[bytes], size: int) -> Iterator[list[tuple[int, bytes]]]:
    batch: list[tuple[int, bytes]] = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            batch.append((number, line))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_detect(lines: Iterable[bytes], out: IO[str], err: IO[str], *,
               registry: Registry | None = None, params: DetectorParams | None = None,
               default_region: str = "unknown", batch_lines: int = 5000,
               tick_s: float = 5.0) -> DetectReport:
    """Detect over ``lines`` and write events to ``out``; see the module docstring."""
    engine = DetectorEngine(params=params, registry=registry)
    reading_dec = msgspec.json.Decoder(Reading)
    envelope_dec = msgspec.json.Decoder(_Envelope)
    report = DetectReport()
    tick_ms = max(1, round(tick_s * 1000))
    clock = -1
    next_tick: int | None = None
    readings: list[Reading] = []
    regions: list[str] = []
    received: list[int] = []

    def flush() -> None:
        nonlocal next_tick
        events = engine.process(readings, regions, received) if readings else []
        events += engine.tick(clock)
        next_tick = clock + tick_ms
        for name, failure in engine.errors:  # the engine goes on without a failed one: say so
            report.detector_failures += 1
            print(f"lines up to {report.lines}: detector {name} failed: {failure!r}", file=err)
        engine.errors.clear()
        _write(events, out)
        report.readings += len(readings)
        report.events += len(events)
        readings.clear()
        regions.clear()
        received.clear()

    for batch in _batches(lines, batch_lines):
        for number, line in batch:
            try:
                reading, region, sent_ms = _decode(line, reading_dec, envelope_dec,
                                                   default_region)
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError,
                    ValidationError) as exc:
                report.lines = number
                report.rejected += 1
                if report.rejected <= _MAX_REPORTED:
                    print(f"line {number}: rejected: {exc}", file=err)
                continue
            at = sent_ms if sent_ms is not None else reading.ts
            if next_tick is None:
                next_tick = at + tick_ms
            elif at >= next_tick and readings:
                flush()  # the clock passed a tick: what came before is processed at that tick
            report.lines = number
            clock = max(clock, at)
            readings.append(reading)
            regions.append(region)
            received.append(at)
        if readings:
            flush()
    if report.rejected > _MAX_REPORTED:
        print(f"... {report.rejected - _MAX_REPORTED} more rejected lines", file=err)
    return report


def _decode(line: bytes, reading_dec: msgspec.json.Decoder[Reading],
            envelope_dec: msgspec.json.Decoder[_Envelope],
            default_region: str) -> tuple[Reading, str, int | None]:
    """One line's reading (``device_id`` filled in from a device topic), its region (the line's
    ``region``, else its topic's, else ``default_region``) and its envelope ``sent_ms``."""
    reading = reading_dec.decode(line)
    envelope = envelope_dec.decode(line)
    topic = parse_topic(envelope.topic) if envelope.topic is not None else None
    if topic is not None and topic.kind == "dev":
        if reading.device_id is None:
            reading = msgspec.structs.replace(reading, device_id=topic.source_id)
        elif reading.device_id != topic.source_id:
            raise ValidationError(f"device_id {reading.device_id!r} does not match the topic's"
                                  f" device {topic.source_id!r}")
    if reading.device_id is None:
        raise msgspec.ValidationError("Object missing required field `device_id`")
    region = envelope.region or (topic.region if topic is not None else default_region)
    return reading, region, envelope.sent_ms


def _write(events: list[Event], out: IO[str]) -> None:
    for e in events:
        out.write(EVENT_ENCODER.encode(e).decode())
        out.write("\n")

