"""``eldercare detect``: run the service's detector engine over a recorded stream, offline.

Input: one reading per line in the wire format (the objects gateways publish, each with its
``device_id``); an optional ``region`` field on the line names its region (the service takes it
from the topic). Lines are processed in batches of ``batch_lines``, exactly like ingest batches,
so gateway-style disorder inside a batch is handled the way the service handles it. The engine's
clock is the data: after each batch, the timer rules run at the newest reading time seen.

Output: one JSON event per line. Memory is bounded by one batch plus the per-device state, so a
file of millions of readings streams through. Bad lines are reported on stderr with their line
number and reason, counted, and skipped; ``--strict`` makes any bad line a failure (exit 1). A
detector that fails on a batch is reported on stderr and makes the run fail (exit 1): the other
detectors' events are still written.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import msgspec

from detectors.engine import DetectorEngine
from detectors.events import EVENT_ENCODER, Event
from detectors.params import DetectorParams
from schemas.readings import Reading
from schemas.registry import Registry

_MAX_REPORTED = 20


class _Region(msgspec.Struct):
    region: str | None = None


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
               default_region: str = "unknown", batch_lines: int = 5000) -> DetectReport:
    """Detect over ``lines`` and write events to ``out``; see the module docstring."""
    engine = DetectorEngine(params=params, registry=registry)
    reading_dec = msgspec.json.Decoder(Reading)
    region_dec = msgspec.json.Decoder(_Region)
    report = DetectReport()
    clock = -1
    for batch in _batches(lines, batch_lines):
        readings: list[Reading] = []
        regions: list[str] = []
        for number, line in batch:
            report.lines = number
            try:
                reading = reading_dec.decode(line)
                if reading.device_id is None:
                    raise msgspec.ValidationError("Object missing required field `device_id`")
                region = region_dec.decode(line).region or default_region
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
                report.rejected += 1
                if report.rejected <= _MAX_REPORTED:
                    print(f"line {number}: rejected: {exc}", file=err)
                continue
            readings.append(reading)
            regions.append(region)
        if not readings:
            continue
        report.readings += len(readings)
        received = [r.ts for r in readings]  # replay: receipt time is the device time
        clock = max(clock, max(received))
        events = engine.process(readings, regions, received) + engine.tick(clock)
        for name, failure in engine.errors:  # the engine goes on without a failed one: say so
            report.detector_failures += 1
            print(f"lines up to {report.lines}: detector {name} failed: {failure!r}", file=err)
        engine.errors.clear()
        _write(events, out)
        report.events += len(events)
    if report.rejected > _MAX_REPORTED:
        print(f"... {report.rejected - _MAX_REPORTED} more rejected lines", file=err)
    return report


def _write(events: list[Event], out: IO[str]) -> None:
    for e in events:
        out.write(EVENT_ENCODER.encode(e).decode())
        out.write("\n")


def open_input(path: str) -> IO[bytes]:
    """The input file, or stdin for ``-``."""
    return sys.stdin.buffer if path == "-" else open(path, "rb")
