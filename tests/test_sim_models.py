"""Device simulator models: scenario files, fleet and registry, device behaviour, labels, stream
(device_sim.scenario, .fleet, .devices, .battery, .motion, .wearables, .home, .fall_sensor,
.signals, .stream).

The checks that matter most run the project's own detectors over the simulated stream: every
scripted incident must raise the event its label names, and ordinary life must raise nothing.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pytest

from detectors.engine import DetectorEngine
from detectors.events import Event
from detectors.fall import AccelChunk, AccelFallDetector, FallHit, chunk_times
from detectors.geo import ZoneSet, haversine_m
from detectors.localtime import in_window, minute_of_day, parse_window
from device_sim.scenario import (
    FallIncident,
    FleetSpec,
    RandomIncidents,
    Scenario,
    load_scenario,
    parse_scenario,
)
from device_sim.stream import Simulation, build
from device_sim.types import Label, SimReading
from foundation.errors import ConfigError
from schemas.readings import Reading
from schemas.registry import parse_registry

SCENARIOS = Path(__file__).resolve().parent.parent / "deploy" / "scenarios"
DEMO = Path(__file__).resolve().parent.parent / "device_sim" / "scenarios" / "demo.yaml"
DECODER = msgspec.json.Decoder(Reading)
ENCODER = msgspec.json.Encoder()
CST = timezone(timedelta(hours=8))


@pytest.fixture(scope="module")
def small() -> Simulation:
    return build(load_scenario(SCENARIOS / "small.yaml"))


@pytest.fixture(scope="module")
def small_readings(small: Simulation) -> list[SimReading]:
    return list(small.readings())


@pytest.fixture(scope="module")
def daytime() -> Simulation:
    """An ordinary late morning: walks, outings, vitals, accelerometers; no incidents."""
    return build(Scenario(name="daytime", seed=7, start=datetime(2026, 3, 3, 10, 0, tzinfo=CST),
                          duration_s=3600, fleet=FleetSpec(bracelets=3, watches=3,
                                                           fall_sensors=2, homes=1)))


@pytest.fixture(scope="module")
def daytime_readings(daytime: Simulation) -> list[SimReading]:
    return list(daytime.readings())


def _scenario(text: str) -> Scenario:
    return parse_scenario(text.encode(), fmt="yaml")


def _feed_accel(readings: list[SimReading]) -> list[FallHit]:
    det = AccelFallDetector()
    hits: list[FallHit] = []
    for r in readings:
        b = r.body
        if b["type"] == "accel":
            t = chunk_times(b["ts"], b["rate_hz"], len(b["x"]))
            hits += det.feed([AccelChunk(r.device_id, t, np.array([b["x"], b["y"], b["z"]]).T)])
    return hits + det.expire(2**42)


def _detect(sim: Simulation, readings: list[SimReading], batch_ms: int = 5000) -> list[Event]:
    """The service's engine over the stream, in 5 s batches, with outage windows holding a
    device's readings until the window ends (as the delivery stage does)."""
    engine = DetectorEngine(registry=sim.registry)
    outages = sim.outages
    pending: list[tuple[int, SimReading]] = []
    for r in readings:
        windows = outages.get(r.device_id, ())
        release = next((b for a, b in windows if a <= r.t_ms < b), r.t_ms)
        pending.append((release, r))
    pending.sort(key=lambda p: p[0])
    events: list[Event] = []
    i = 0
    now = sim.start_ms
    while i < len(pending):
        now += batch_ms
        batch = []
        while i < len(pending) and pending[i][0] < now:
            batch.append(pending[i])
            i += 1
        if batch:
            events += engine.process([DECODER.decode(ENCODER.encode(r.body)) for _, r in batch],
                                     [r.region for _, r in batch], [t for t, _ in batch])
        events += engine.tick(now)
    assert not engine.errors, engine.errors
    return events


# -- scenario files -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["small", "demo", "weihai-1000"])
def test_shipped_scenarios_load_and_build(name: str) -> None:
    scenario = load_scenario(DEMO if name == "demo" else SCENARIOS / f"{name}.yaml")
    sim = build(scenario)
    assert sim.labels
    assert {lab.device_id for lab in sim.labels} <= set(sim.devices)
    if name == "weihai-1000":
        assert len(sim.devices) == 1000
        assert {lab.detail["source"] for lab in sim.labels} == {"random"}
        assert len({lab.incident for lab in sim.labels}) >= 8


@pytest.mark.parametrize(("text", "where"), [
    ("name: x\nfleet: {bracelets: -1}", "$.fleet.bracelets"),
    ("name: x\nfleet: {bracelet: 1}", "$.fleet"),
    ("name: x\nregion: 371002", "$.region"),
    ("name: x\nstart: 2026-03-02T07:55:00", "$.start"),
    ("name: x\ntimezone: Mars/Olympus", "$.timezone"),
    ("name: x\ndelivery: {duplicate_rate: 2}", "$.delivery"),
    ("name: x\nincidents: [{type: sos, at_s: 1, device: 0}]", "$.incidents[0].device"),
    ("name: x\nfleet: {watches: 1}\nincidents: [{type: fall, at_s: 1, device: {watch: 0}}]",
     "$.incidents[0].device"),
    ("name: x\nfleet: {watches: 1}\nincidents: [{type: sos, at_s: 5000}]",
     "$.incidents[0].at_s"),
    ("name: x\nfleet: {homes: 1}\nincidents: [{type: bed_exit, at_s: 60}]",  # 07:56
     "$.incidents[0].at_s"),
    ("name: x\nfleet: {bracelets: 1}\nincidents: [{type: wander, at_s: 1, speed: 2}]",
     "$.incidents[0]"),
    ("name: x\nincidents: [{type: meteor, at_s: 1}]", "$.incidents[0].type"),
])
def test_invalid_scenarios_name_the_field(text: str, where: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"- at `{where}`")):
        _scenario(text)


def test_build_rejects_unknown_ids_and_overlapping_incidents(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no device 'BR-00009'.*\$\.incidents\[0\]\.device"):
        build(_scenario("name: x\nfleet: {bracelets: 1}\n"
                        "incidents: [{type: sos, at_s: 1, device: BR-00009}]"))
    with pytest.raises(ConfigError, match=r"\$\.incidents\[1\]\.at_s"):
        build(_scenario("name: x\nfleet: {bracelets: 1}\nincidents:\n"
                        " - {type: wander, at_s: 10}\n - {type: strap_removed, at_s: 100}"))
    path = tmp_path / "s.txt"
    path.write_text("name: x")
    with pytest.raises(ConfigError, match="expected a .yaml"):
        load_scenario(path)


def test_quoted_and_unquoted_start_and_json_agree() -> None:
    a = _scenario('name: x\nstart: "2026-03-02T21:55:00+08:00"')
    b = _scenario("name: x\nstart: 2026-03-02T21:55:00+08:00")
    c = parse_scenario(b'{"name": "x", "start": "2026-03-02T21:55:00+08:00"}', fmt="json")
    assert a == b == c
    assert a.start_ms == 1772459700000


# -- determinism ----------------------------------------------------------------------------

def test_same_seed_same_stream_and_labels(small: Simulation,
                                          small_readings: list[SimReading]) -> None:
    again = build(load_scenario(SCENARIOS / "small.yaml"))
    assert list(again.readings()) == small_readings
    assert again.labels == small.labels
    assert msgspec.json.encode(again.registry) == msgspec.json.encode(small.registry)
    assert list(small.readings()) == small_readings   # each call starts afresh


def test_different_seed_different_stream(small: Simulation,
                                         small_readings: list[SimReading]) -> None:
    other = build(msgspec.structs.replace(small.scenario, seed=small.scenario.seed + 1))
    assert [r.body for r in other.readings()] != [r.body for r in small_readings]
    assert other.labels != small.labels
    assert msgspec.json.encode(other.registry) != msgspec.json.encode(small.registry)


def test_adding_devices_leaves_every_other_device_unchanged() -> None:
    text = ("name: x\nseed: 5\nstart: 2026-03-03T10:00:00+08:00\nduration_s: 300\n"
            "fleet: {{bracelets: {b}, watches: {w}, fall_sensors: {f}, homes: {h}}}\n"
            "incidents: [{{type: sos, at_s: 30, device: {{watch: 1}}}},"
            " {{type: fall, at_s: 100, device: {{fall_sensor: 0}}}}]")
    base = build(_scenario(text.format(b=3, w=2, f=1, h=1)))
    more = build(_scenario(text.format(b=5, w=4, f=2, h=3)))
    by_dev: dict[str, list[SimReading]] = defaultdict(list)
    for r in more.readings():
        by_dev[r.device_id].append(r)
    mine: dict[str, list[SimReading]] = defaultdict(list)
    for r in base.readings():
        mine[r.device_id].append(r)
    assert set(mine) < set(by_dev)
    for dev, readings in mine.items():
        assert by_dev[dev] == readings, dev
    assert base.labels == [lab for lab in more.labels if lab.device_id in mine]
    wearers = {w.id: w for w in more.registry.wearers}
    for w in base.registry.wearers:
        assert wearers[w.id] == w


# -- what is produced ---------------------------------------------------------------------------

def test_every_reading_validates_against_the_wire_schema(
        small_readings: list[SimReading], daytime_readings: list[SimReading]) -> None:
    kinds: Counter[tuple[str, str]] = Counter()
    for r in small_readings + daytime_readings:
        reading = DECODER.decode(ENCODER.encode(r.body))
        assert reading.device_id == r.device_id
        kinds[(r.device_id[:2], r.body["type"])] += 1
        if r.body["type"] == "accel":
            assert len(r.body["x"]) == r.body["rate_hz"] == 50
    assert {t for _, t in kinds} == {"location", "vitals", "sos", "fall", "accel", "heartbeat",
                                     "wear", "home_alarm"}
    assert {k for k, _ in kinds} == {"BR", "WT", "FS", "HS"}
    for prefix, kind in [("BR", "location"), ("BR", "heartbeat"), ("WT", "vitals"),
                         ("WT", "location"), ("FS", "accel"), ("FS", "heartbeat"),
                         ("HS", "heartbeat"), ("HS", "home_alarm")]:
        assert kinds[(prefix, kind)] > 0, (prefix, kind)


def test_registry_validates_and_matches_the_devices(small: Simulation) -> None:
    for data, fmt in ((msgspec.json.encode(small.registry), "json"),
                      (msgspec.yaml.encode(small.registry), "yaml")):
        assert parse_registry(data, fmt=fmt) == small.registry  # type: ignore[arg-type]
    registered = {d.id: d.kind for w in small.registry.wearers for d in w.devices}
    assert registered == {d: s.kind for d, s in small.devices.items()}
    for w in small.registry.wearers:
        assert w.contacts and w.home is not None and w.region == "371002"
        if w.id.startswith("W-B-"):
            home = next(z for z in w.zones if z.id == "home")
            assert home.kind == "circle" and home.radius_m is not None
            assert 150 <= home.radius_m <= 300
    gateways = {d.gateway_id for d in small.devices.values() if d.kind == "home_sensor"}
    assert gateways == {"GW-00001", "GW-00002"}
    assert all(d.gateway_id is None for d in small.devices.values() if d.kind != "home_sensor")
    assert "HS-00002-bed_exit" in small.devices and "FS-00002" in small.devices


def test_homes_cluster_in_villages() -> None:
    sim = build(_scenario("name: x\nfleet: {bracelets: 300}"))
    homes = np.array([(w.home.lat, w.home.lon) for w in sim.registry.wearers if w.home])
    d = haversine_m(homes[:, None, 0], homes[:, None, 1], homes[None, :, 0], homes[None, :, 1])
    np.fill_diagonal(d, np.inf)
    # Uniform over an 8 km disc, the nearest neighbour of 300 homes is ~230 m away on average;
    # in villages it is far closer.
    assert float(np.median(d.min(axis=1))) < 120
    assert float(d[np.isfinite(d)].max()) > 4000


def test_readings_are_in_true_time_order_with_device_clocks() -> None:
    sim = build(_scenario("name: x\nseed: 3\nduration_s: 600\nclock_skew: {fraction: 1, max_s: 60}"
                          "\nfleet: {bracelets: 4, watches: 4, fall_sensors: 1, homes: 1}\n"
                          "incidents: [{type: sos, at_s: 100, device: {watch: 2}}]"))
    readings = list(sim.readings())
    keys = [(r.t_ms, r.device_id) for r in readings]
    assert keys == sorted(keys)
    skews: dict[str, set[int]] = defaultdict(set)
    seqs: dict[str, list[int]] = defaultdict(list)
    for r in readings:
        skews[r.device_id].add(r.body["ts"] - r.t_ms)
        seqs[r.device_id].append(r.body["seq"])
    assert all(len(s) == 1 and abs(next(iter(s))) <= 60_000 for s in skews.values())
    assert len({next(iter(s)) for s in skews.values()}) > 5
    assert all(s == list(range(s[0], s[0] + len(s))) for s in seqs.values())
    (sos,) = [lab for lab in sim.labels if lab.type == "sos"]
    press = next(r for r in readings if r.body["type"] == "sos")
    assert sos.start_ms == press.body["ts"] == sim.start_ms + 100_000 + next(
        iter(skews[sos.device_id]))


# -- labels and incidents -----------------------------------------------------------------------

def test_small_has_a_label_for_every_incident(small: Simulation) -> None:
    got = Counter((lab.incident, lab.type) for lab in small.labels)
    assert got == Counter({
        ("wander", "geofence_exit"): 1, ("sos", "sos"): 2, ("low_battery", "low_battery"): 1,
        ("tachycardia", "heart_rate"): 1, ("fall", "fall"): 2, ("device_fall", "fall"): 1,
        ("smoke", "home_alarm"): 1, ("gas", "home_alarm"): 1, ("water", "home_alarm"): 1,
        ("bed_exit", "home_alarm"): 1, ("strap_removed", "device_removed"): 1,
        ("outage", "offline"): 1})
    for lab in small.labels:
        assert small.start_ms - 60_000 <= lab.start_ms < small.end_ms
        assert lab.wearer_id is not None and lab.detail["source"] == "scenario"


def test_outages_are_listed_and_labelled(small: Simulation,
                                         small_readings: list[SimReading]) -> None:
    start = small.start_ms
    assert small.outages == {"BR-00004": [(start + 300_000, start + 1_300_000)]}
    (offline,) = [lab for lab in small.labels if lab.type == "offline"]
    last = max(r.body["ts"] for r in small_readings
               if r.device_id == "BR-00004" and r.t_ms < start + 300_000)
    assert offline.start_ms == last
    # A short outage holds readings but is no offline incident.
    sim = build(_scenario("name: x\nfleet: {watches: 1}\n"
                          "incidents: [{type: outage, at_s: 60, duration_s: 600,"
                          " device: {watch: 0}}]"))
    assert sim.outages == {"WT-00001": [(sim.start_ms + 60_000, sim.start_ms + 660_000)]}
    assert sim.labels == []


def test_reading_driven_labels_point_at_the_first_reading(
        small: Simulation, small_readings: list[SimReading]) -> None:
    def first(device: str, pred: str) -> int:
        return next(int(r.body["ts"]) for r in small_readings if r.device_id == device and (
            (pred == "battery" and r.body.get("battery_pct", 100) < 20)
            or (pred == "hr" and r.body.get("heart_rate_bpm", 0) > 120)))
    labels = {lab.type: lab for lab in small.labels}
    assert labels["low_battery"].start_ms == first("BR-00003", "battery")
    assert labels["heart_rate"].start_ms == first("WT-00003", "hr")
    hr = [r.body["heart_rate_bpm"] for r in small_readings
          if r.device_id == "WT-00003" and r.body["type"] == "vitals"]
    high = [i for i, h in enumerate(hr) if h > 120]
    assert len(high) >= 3 and high == list(range(high[0], high[0] + len(high)))  # consecutive


def _outside_all(sim: Simulation, device: str, fixes: list[SimReading]) -> np.ndarray:
    wearer = next(w for w in sim.registry.wearers if any(d.id == device for d in w.devices))
    zones = ZoneSet.build(wearer.zones)
    lat = np.array([f.body["lat"] for f in fixes])
    lon = np.array([f.body["lon"] for f in fixes])
    ts = np.array([f.body["ts"] for f in fixes], dtype=np.int64)
    minute = minute_of_day(ts, ZoneInfo(wearer.timezone))
    outside = np.ones(len(fixes), dtype=bool)
    for i, z in enumerate(wearer.zones):
        d = zones.signed_distance_m(np.full(len(fixes), i), lat, lon)
        start, end = parse_window(z.active) if z.active else (0, 0)
        outside &= ~(in_window(minute, start, end) & (d <= 0))
    return outside


def test_wandering_bracelet_leaves_its_zones_at_the_labelled_time(
        small: Simulation, small_readings: list[SimReading]) -> None:
    (label,) = [lab for lab in small.labels if lab.type == "geofence_exit"]
    fixes = [r for r in small_readings
             if r.device_id == label.device_id and r.body["type"] == "location"]
    outside = _outside_all(small, label.device_id, fixes)
    k = next(i for i, f in enumerate(fixes) if f.body["ts"] >= label.start_ms)
    # The first fix from which the wearer stays outside (GPS noise may flip one fix either way).
    first = next(i for i in range(len(fixes)) if outside[i:i + 5].all())
    assert abs(first - k) <= 1, (first, k)
    assert not outside[:max(0, k - 1)].any()
    # ...and keeps going: still walking away ten minutes later.
    home = next(w.home for w in small.registry.wearers if w.id == label.wearer_id)
    assert home is not None
    dist = [haversine_m(home.lat, home.lon, f.body["lat"], f.body["lon"]) for f in fixes
            if f.body["ts"] in (fixes[k].body["ts"], fixes[-1].body["ts"])]
    assert dist[1] > dist[0] + 500
    assert fixes[-1].body["ts"] - label.start_ms > 600_000


def test_scripted_falls_are_detected_at_the_impact(small: Simulation,
                                                   small_readings: list[SimReading]) -> None:
    hits = _feed_accel(small_readings)
    falls = sorted((lab.device_id, lab.start_ms) for lab in small.labels
                   if lab.incident == "fall")
    assert len(hits) == len(falls) == 2
    for (dev, start), hit in zip(falls, sorted(hits), strict=True):
        assert hit.device_id == dev and abs(hit.ts - start) <= 60
        assert hit.evidence["partial"] == 0.0


@pytest.mark.parametrize("rate", [20, 100])
def test_falls_are_detected_at_other_rates(rate: int) -> None:
    sim = build(_scenario(f"name: x\nduration_s: 120\nfleet: {{fall_sensors: 1, accel_rate_hz:"
                          f" {rate}}}\nincidents: [{{type: fall, at_s: 60, get_up: true}}]"))
    hits = _feed_accel(list(sim.readings()))
    assert [(h.device_id, abs(h.ts - sim.labels[0].start_ms) <= 60) for h in hits] == [
        ("FS-00001", True)]


def test_ordinary_activity_raises_no_fall(daytime_readings: list[SimReading]) -> None:
    accel = [r for r in daytime_readings if r.body["type"] == "accel"]
    assert len(accel) >= 2 * 3500          # two sensors, an hour each
    assert _feed_accel(daytime_readings) == []
    spread = [float(np.std(np.linalg.norm(np.array([r.body["x"], r.body["y"], r.body["z"]]),
                                          axis=0))) for r in accel]
    # Not vacuous: they walked (spread of the magnitude well above the 0.05 g motion level)
    # and sat still.
    assert sum(s > 0.1 for s in spread) > 60 and sum(s < 0.03 for s in spread) > 600


def test_detectors_raise_every_label_and_nothing_else(
        small: Simulation, small_readings: list[SimReading]) -> None:
    events = _detect(small, small_readings)
    alarms = [e for e in events if e.type not in ("online", "geofence_return", "device_worn")]
    assert {(e.device_id, e.type) for e in alarms} == {
        (lab.device_id, lab.type) for lab in small.labels}
    latency = {"geofence_exit": 150_000, "heart_rate": 660_000, "fall": 5_000}
    for lab in small.labels:
        (first, *_) = sorted(e.ts for e in alarms
                             if (e.device_id, e.type) == (lab.device_id, lab.type))
        if lab.type == "offline":
            assert first == lab.start_ms + 900_000     # the bracelet's offline period
        else:
            assert 0 <= first - lab.start_ms <= latency.get(lab.type, 1000), lab


@pytest.mark.parametrize("hour", [7, 13, 23, 3])
def test_demo_raises_sos_fall_and_exit_within_the_first_minute(hour: int) -> None:
    demo = load_scenario(DEMO)
    start = datetime(2026, 3, 2, hour, 55 if hour == 7 else 30, tzinfo=CST)
    sim = build(msgspec.structs.replace(demo, start=start))
    events = _detect(sim, list(itertools.takewhile(lambda r: r.t_ms < sim.start_ms + 90_000,
                                                   sim.readings())))
    first = {e.type: e.ts - sim.start_ms for e in reversed(events)}
    assert first["sos"] <= 15_000 and first["fall"] <= 30_000
    assert first["geofence_exit"] <= 62_000, first


def test_random_incidents_are_drawn_per_device_and_reproducible() -> None:
    rates = {k: 2.0 for k in RandomIncidents.__struct_fields__}
    scenario = Scenario(name="r", seed=9, start=datetime(2026, 3, 2, 20, 0, tzinfo=CST),
                        duration_s=6 * 3600, fleet=FleetSpec(bracelets=10, watches=10,
                                                             fall_sensors=3, homes=4),
                        random_incidents=RandomIncidents(**rates))
    sim = build(scenario)
    assert build(scenario).labels == sim.labels
    kinds = Counter(lab.incident for lab in sim.labels)
    assert set(kinds) >= {"sos", "wander", "fall", "device_fall", "smoke", "bed_exit",
                          "strap_removed", "low_battery", "tachycardia"}
    tz = ZoneInfo("Asia/Shanghai")
    for lab in sim.labels:
        assert lab.detail["source"] == "random"
        assert sim.start_ms <= lab.start_ms < sim.end_ms
        if lab.incident == "bed_exit":
            hour = datetime.fromtimestamp(lab.start_ms / 1000, tz).hour
            assert hour >= 22 or hour < 6
    # One device's incidents do not overlap (a wander and a removed strap never coincide).
    per_device: dict[str, list[Label]] = defaultdict(list)
    for lab in sim.labels:
        per_device[lab.device_id].append(lab)
    for labs in per_device.values():
        wanders = [lab.start_ms for lab in labs if lab.incident in ("wander", "strap_removed")]
        assert all(b - a > 600_000 for a, b in itertools.pairwise(wanders))
    # Adding incidents on other devices leaves an explicitly scripted one alone.
    extra = msgspec.structs.replace(scenario, incidents=[FallIncident(at_s=600, device=0)])
    assert [lab for lab in build(extra).labels if lab.device_id != "FS-00001"] == [
        lab for lab in sim.labels if lab.device_id != "FS-00001"]
