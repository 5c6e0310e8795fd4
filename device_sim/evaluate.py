"""A scored scenario run in one call: simulate, deliver, record, detect, score (issue #4).

``eldercare sim eval SCENARIO`` runs this. The detection half is ``eldercare detect``'s runner,
:func:`detectors.replay.run_detect` (the service's own engine, fed the recording in ingest-sized
batches with the simulation's registry), so what is scored is what the service would raise for
the same stream. Every intermediate file (recording, labels, registry, events) is written to
``workdir`` so a surprising score can be investigated with the other ``sim`` and ``detect``
commands.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from pathlib import Path

import msgspec

from detectors.params import DetectorParams
from detectors.replay import DetectReport, run_detect
from device_sim.recording import RecordingStats, write_recording
from device_sim.scenario import Scenario
from device_sim.score import ScoreReport, load_events, score
from device_sim.stream import build
from device_sim.types import LABEL_ENCODER


@dataclass(frozen=True, slots=True)
class Evaluation:
    """What a scored run produced, and where its files are."""

    report: ScoreReport
    recording: RecordingStats
    detect: DetectReport
    detect_errors: str          # what ``detect`` reported on stderr (rejected lines, failures)
    recording_path: Path
    labels_path: Path
    registry_path: Path
    events_path: Path


def evaluate(scenario: Scenario, *, workdir: Path,
             params: DetectorParams | None = None) -> Evaluation:
    """Simulate ``scenario`` into ``workdir``, detect over the recording and score the events.

    The detector time zone is the scenario's unless ``params`` say otherwise.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    sim = build(scenario)
    paths = {name: workdir / f"{name}.jsonl" for name in ("recording", "labels", "events")}
    registry_path = workdir / "registry.json"
    registry_path.write_bytes(msgspec.json.encode(sim.registry))
    with paths["labels"].open("wb") as f:
        for label in sim.labels:
            f.write(LABEL_ENCODER.encode(label) + b"\n")
    with paths["recording"].open("wb") as f:
        stats = write_recording(sim.publications(), f)
    detector_params = params or dataclasses.replace(DetectorParams(), timezone=scenario.timezone)
    err = io.StringIO()
    with paths["recording"].open("rb") as lines, paths["events"].open("w") as out:
        detected = run_detect(lines, out, err, registry=sim.registry, params=detector_params,
                              default_region=scenario.region)
    with paths["events"].open("rb") as f:
        events = load_events(f)
    return Evaluation(report=score(sim.labels, events), recording=stats, detect=detected,
                      detect_errors=err.getvalue(), recording_path=paths["recording"],
                      labels_path=paths["labels"], registry_path=registry_path,
                      events_path=paths["events"])
