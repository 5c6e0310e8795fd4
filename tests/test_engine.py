"""The detector engine on synthetic streams with known answers, including the nasty cases."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.engine import DetectorEngine
from detectors.events import Event
from detectors.params import DetectorParams, GeofenceParams
from eldercare.config import load_config
from foundation.errors import ConfigError
from schemas.readings import (
    Accel,
    Fall,
    Heartbeat,
    HomeAlarm,
    Location,
    Reading,
    Sos,
    Vitals,
    Wear,
)
from schemas.registry import Registry

SHANGHAI = ZoneInfo("Asia/Shanghai")
HOME = (37.5, 122.1)
M_PER_DEG_LAT = 111_195.0


def local_ms(day: int, hh: int, mm: int = 0) -> int:
    """Unix ms of 2026-11-<day> hh:mm in Asia/Shanghai."""
    return int(datetime(2026, 11, day, hh, mm, tzinfo=SHANGHAI).timestamp() * 1000)


T0 = local_ms(20, 10)  # a weekday morning


def registry(*, zones: list[dict[str, object]] | None = None) -> Registry:
    home_zone = {"id": "home", "kind": "circle", "center": {"lat": HOME[0], "lon": HOME[1]},
                 "radius_m": 200}
    return msgspec.convert({"wearers": [{
        "id": "W1", "name": "Zhang", "region": "371002",
        "devices": [{"id": "BR-1", "kind": "bracelet"}, {"id": "HOME-1", "kind": "home_sensor"},
                    {"id": "WATCH-1", "kind": "watch"}, {"id": "PEND-1", "kind": "pendant"}],
        "zones": zones if zones is not None else [home_zone],
    }]}, Registry)


def north(metres: float) -> tuple[float, float]:
    """A position ``metres`` north of the zone centre (negative: south)."""
    return HOME[0] + metres / M_PER_DEG_LAT, HOME[1]


def fix(ts: int, metres: float, *, acc: float | None = 10.0, dev: str = "BR-1",
        battery: float | None = None) -> Location:
    lat, lon = north(metres)
    return Location(device_id=dev, ts=ts, lat=lat, lon=lon, accuracy_m=acc, battery_pct=battery)


def run(engine: DetectorEngine, readings: Sequence[Reading], *, received: int | None = None
        ) -> list[Event]:
    recv = [received if received is not None else r.ts for r in readings]
    return engine.process(list(readings), ["371002"] * len(readings), recv)


def kinds(events: Sequence[Event]) -> list[tuple[str, int]]:
    return [(e.type, e.ts) for e in events]


# -- SOS and alarms ---------------------------------------------------------------------------

def test_sos_without_fix_with_stale_timestamp_and_low_battery_is_raised() -> None:
    eng = DetectorEngine(registry=registry())
    run(eng, [fix(T0 - 3_600_000, 0.0)])
    stale = T0 - 3 * 86_400_000
    events = run(eng, [Heartbeat(device_id="BR-1", ts=stale, battery_pct=3),
                       Sos(device_id="BR-1", ts=stale)], received=T0)
    sos = [e for e in events if e.type == "sos"]
    assert len(sos) == 1 and sos[0].ts == stale and sos[0].severity == "critical"
    assert sos[0].wearer_id == "W1" and sos[0].region == "371002"
    # No fix in the press: the last known position, with its time, goes with the event.
    assert sos[0].lat == pytest.approx(HOME[0]) and sos[0].evidence["position_ts"] == T0 - 3_600_000


def test_repeated_presses_join_duplicates_and_late_presses_never_retrigger() -> None:
    eng = DetectorEngine()
    presses = [Sos(device_id="W-9", ts=T0 + s * 1000) for s in (0, 30, 100)]
    assert kinds(run(eng, presses)) == [("sos", T0)]
    assert run(eng, presses) == []                                  # redelivered batch
    assert run(eng, [Sos(device_id="W-9", ts=T0 + 50_000)]) == []   # late, inside the episode
    assert kinds(run(eng, [Sos(device_id="W-9", ts=T0 + 600_000)])) == [("sos", T0 + 600_000)]
    # An old press a gateway buffered for an hour, never seen: raised, not filtered.
    assert kinds(run(eng, [Sos(device_id="W-9", ts=T0 - 3_600_000)])) == [("sos", T0 - 3_600_000)]


def test_a_failing_detector_does_not_cost_the_batch_its_sos(
        monkeypatch: pytest.MonkeyPatch) -> None:
    eng = DetectorEngine(registry=registry())

    def broken(*args: object) -> list[Event]:
        raise ValueError("geofence bug")

    monkeypatch.setattr(eng, "_locations", broken)
    events = run(eng, [fix(T0, 500.0), Sos(device_id="BR-1", ts=T0 + 1000)])
    assert kinds(events) == [("sos", T0 + 1000)]
    assert eng.stats["geofence_failures"] == 1
    assert [(name, str(exc)) for name, exc in eng.errors] == [("geofence", "geofence bug")]


def test_presses_of_many_devices_in_one_batch_each_raise_once() -> None:
    eng = DetectorEngine()
    batch = [Sos(device_id=f"D{i % 500}", ts=T0 + (i // 500) * 1000) for i in range(2000)]
    events = run(eng, batch)
    assert len(events) == 500 and {e.device_id for e in events} == {f"D{i}" for i in range(500)}


def test_home_alarms_panic_is_sos_and_bed_exit_only_at_night() -> None:
    eng = DetectorEngine(registry=registry())

    def home(ts: int, sensor: str, active: bool = True) -> HomeAlarm:
        return HomeAlarm(device_id="HOME-1", ts=ts, sensor=sensor, active=active)  # type: ignore[arg-type]

    assert kinds(run(eng, [home(T0, "panic")])) == [("sos", T0)]
    smoke = run(eng, [home(T0, "smoke"), home(T0 + 60_000, "smoke")])
    assert [(e.type, e.evidence["sensor"], e.severity) for e in smoke] == [
        ("home_alarm", "smoke", "critical")]
    # Cleared, then smoke again a minute later: a new alarm.
    again = run(eng, [home(T0 + 120_000, "smoke", False), home(T0 + 180_000, "smoke")])
    assert kinds(again) == [("home_alarm", T0 + 180_000)]
    assert run(eng, [home(local_ms(20, 14), "bed_exit")]) == []
    night = run(eng, [home(local_ms(20, 23, 30), "bed_exit")])
    assert [e.evidence["sensor"] for e in night] == ["bed_exit"]


def test_device_reported_fall_is_raised_once() -> None:
    eng = DetectorEngine()
    falls = [Fall(device_id="P-1", ts=T0, confidence=0.9), Fall(device_id="P-1", ts=T0 + 5000)]
    events = run(eng, falls)
    assert kinds(events) == [("fall", T0)] and events[0].evidence["confidence"] == 0.9


# -- geofence ----------------------------------------------------------------------------------

def test_exit_needs_two_outside_fixes_and_return_needs_inside_by_margin() -> None:
    eng = DetectorEngine(registry=registry())
    t = [T0 + i * 20_000 for i in range(8)]
    events = run(eng, [fix(t[0], 0), fix(t[1], 400), fix(t[2], 0)])   # one wild fix: nothing
    assert events == []
    events = run(eng, [fix(t[3], 420), fix(t[4], 450)])
    assert kinds(events) == [("geofence_exit", t[4])]
    assert events[0].evidence["zone_id"] == "home"
    assert events[0].evidence["distance_m"] == pytest.approx(250, abs=2)
    # Back at the boundary (within the return margin): still out. Then well inside: return.
    assert run(eng, [fix(t[5], 190)]) == []
    assert kinds(run(eng, [fix(t[6], 100)])) == [("geofence_return", t[6])]


def test_gps_jitter_along_the_boundary_never_flaps() -> None:
    rng = np.random.default_rng(7)
    eng = DetectorEngine(registry=registry())
    dist = 200 + rng.normal(0, 20, size=500)   # a person standing at the edge of the zone
    readings = [fix(T0 + i * 10_000, float(d)) for i, d in enumerate(dist)]
    assert run(eng, readings) == []


def test_a_fix_with_huge_accuracy_cannot_declare_an_exit() -> None:
    eng = DetectorEngine(registry=registry())
    readings = [fix(T0 + i * 30_000, 1500, acc=2000, dev="BR-1") for i in range(10)]
    assert run(eng, readings) == []
    assert kinds(run(eng, [fix(T0 + 400_000, 2500, acc=20), fix(T0 + 430_000, 2500, acc=20)]))[0][0] \
        == "geofence_exit"


def test_exit_after_time_outside_when_fixes_are_slow_to_accumulate() -> None:
    params = DetectorParams(geofence=GeofenceParams(exit_fixes=5, exit_after_s=60))
    eng = DetectorEngine(params=params, registry=registry())
    t = [T0 + i * 30_000 for i in range(4)]
    assert kinds(run(eng, [fix(x, 500) for x in t])) == [("geofence_exit", t[2])]


def test_night_zone_only_watches_at_night() -> None:
    night_zone = {"id": "night-home", "kind": "polygon", "active": "20:00-06:00",
                  "points": [[37.499, 122.099], [37.499, 122.101], [37.501, 122.101],
                             [37.501, 122.099]]}
    eng = DetectorEngine(registry=registry(zones=[night_zone]))
    day = [fix(local_ms(20, 15) + i * 20_000, 1000) for i in range(3)]
    assert run(eng, day) == []                       # out by day: no zone active, free to walk
    night = [fix(local_ms(20, 22) + i * 20_000, 1000) for i in range(3)]
    events = run(eng, night)
    assert kinds(events) == [("geofence_exit", local_ms(20, 22) + 20_000)]
    assert events[0].evidence["zone_id"] == "night-home"


def test_batch_split_and_disorder_give_the_same_events() -> None:
    rng = np.random.default_rng(11)
    path = np.concatenate([np.zeros(20), np.linspace(0, 900, 30), np.linspace(900, 0, 30),
                           np.zeros(20)])
    readings = [fix(T0 + i * 15_000, float(d + rng.normal(0, 8))) for i, d in enumerate(path)]
    whole = run(DetectorEngine(registry=registry()), readings)
    assert [e.type for e in whole] == ["geofence_exit", "geofence_return"]
    eng = DetectorEngine(registry=registry())
    pieces: list[Event] = []
    for k in range(0, len(readings), 7):
        chunk = readings[k:k + 7]
        pieces += run(eng, list(reversed(chunk)))   # a gateway delivering each batch backwards
    assert kinds(pieces) == kinds(whole)
    # Late fixes (older than what was processed) and duplicates are counted, not replayed.
    assert run(eng, readings[10:40]) == []
    assert eng.stats["location_late_or_repeated"] == 30


# -- supervision -------------------------------------------------------------------------------

def test_low_battery_once_per_discharge_rearmed_by_charging() -> None:
    eng = DetectorEngine()
    levels = [50, 30, 19, 18, 22, 15, 45, 10]
    events = run(eng, [Heartbeat(device_id="B-2", ts=T0 + i * 60_000, battery_pct=b)
                       for i, b in enumerate(levels)])
    assert [(e.type, e.evidence["battery_pct"]) for e in events] == [
        ("low_battery", 19.0), ("low_battery", 10.0)]


def test_bracelet_removed_and_worn_again() -> None:
    eng = DetectorEngine()
    wear = [Wear(device_id="B-3", ts=T0 + i * 1000, worn=w)
            for i, w in enumerate([True, False, False, True])]
    assert kinds(run(eng, wear)) == [("device_removed", T0 + 1000), ("device_worn", T0 + 3000)]


def test_heart_rate_needs_a_sustained_run_not_a_spike() -> None:
    eng = DetectorEngine()
    bpm = [130, 130, 80, 130, 131, 132, 135, 80, 40, 41, 42]
    events = run(eng, [Vitals(device_id="W-4", ts=T0 + i * 60_000, heart_rate_bpm=b)
                       for i, b in enumerate(bpm)])
    assert [(e.ts, e.evidence["direction"]) for e in events] == [
        (T0 + 5 * 60_000, "high"), (T0 + 10 * 60_000, "low")]
    assert events[0].evidence["bpm"] == [130.0, 131.0, 132.0]


def test_offline_on_the_clock_per_device_kind_then_online() -> None:
    eng = DetectorEngine(registry=registry())
    run(eng, [Heartbeat(device_id="BR-1", ts=T0), Heartbeat(device_id="X-1", ts=T0)],
        received=T0)
    assert eng.tick(T0 + 14 * 60_000) == []
    off = eng.tick(T0 + 16 * 60_000)             # the bracelet: 15 min
    assert kinds(off) == [("offline", T0 + 15 * 60_000)]
    assert eng.tick(T0 + 20 * 60_000) == []      # once
    # X-1 is not in the registry: admission stores only its alarms, so its silence means
    # nothing and it is never declared offline.
    assert eng.tick(T0 + 10 * 86_400_000) == []
    back = run(eng, [Heartbeat(device_id="BR-1", ts=T0 + 40 * 60_000)])
    assert kinds(back) == [("online", T0 + 40 * 60_000)]


def test_without_a_registry_every_device_is_watched_with_the_default_period() -> None:
    eng = DetectorEngine()
    run(eng, [Heartbeat(device_id="X-1", ts=T0)], received=T0)
    assert eng.tick(T0 + 29 * 60_000) == []
    assert [e.device_id for e in eng.tick(T0 + 31 * 60_000)] == ["X-1"]


def test_registered_devices_silent_since_a_restart_go_offline_after_their_period() -> None:
    eng = DetectorEngine(registry=registry())
    assert eng.tick(T0 + 86_400_000) == []          # never heard of: nothing to say yet
    assert eng.watch_registered(T0) == 4              # BR-1, HOME-1, WATCH-1, PEND-1
    run(eng, [Heartbeat(device_id="WATCH-1", ts=T0 + 60_000)])
    off = eng.tick(T0 + 16 * 60_000)
    assert [(e.device_id, e.evidence["heard_since_start"]) for e in off] == [("BR-1", False)]
    assert eng.watch_registered(T0 + 20 * 60_000) == 0   # once armed, never re-armed


def test_inactivity_in_the_daytime_only_for_devices_that_report_activity() -> None:
    eng = DetectorEngine(registry=registry())
    t9 = local_ms(20, 9)
    run(eng, [Vitals(device_id="WATCH-1", ts=t9, steps=100), fix(t9, 0.0)])
    run(eng, [Vitals(device_id="WATCH-1", ts=t9 + 3_600_000, steps=100),
              Heartbeat(device_id="WATCH-1", ts=t9 + 3_600_000)])
    # Keep both devices online (heartbeats) so only inactivity can fire.
    for h in range(2, 5):
        run(eng, [Heartbeat(device_id=d, ts=t9 + h * 3_600_000) for d in ("WATCH-1", "BR-1")])
    assert eng.tick(local_ms(20, 12, 50)) == []
    events = eng.tick(local_ms(20, 13, 10))
    assert [(e.type, e.device_id) for e in events] == [("inactivity", "WATCH-1")]
    assert eng.tick(local_ms(20, 13, 12)) == []     # once
    run(eng, [Vitals(device_id="WATCH-1", ts=local_ms(20, 14), steps=180)])
    eng2 = DetectorEngine(registry=registry())
    run(eng2, [Vitals(device_id="WATCH-1", ts=local_ms(20, 19), steps=5)])
    run(eng2, [Heartbeat(device_id="WATCH-1", ts=local_ms(20, 23, 50))])
    assert eng2.tick(local_ms(20, 23, 55)) == []    # 5 hours still, but it is night


# -- accelerometer falls through the engine --------------------------------------------------

def fall_chunks(dev: str, t0: int, rate: float) -> list[Accel]:
    """2 s standing (gravity on z), 0.4 s free fall, impact, then lying still on the side."""
    n = int(8 * rate)
    t = np.arange(n) / rate
    xyz = np.zeros((n, 3))
    xyz[:, 2] = 1.0
    ff = (t >= 2.0) & (t < 2.4)
    xyz[ff] = [0.0, 0.0, 0.15]
    imp = (t >= 2.4) & (t < 2.5)
    xyz[imp] = [3.5, 1.0, 2.0]
    lying = t >= 2.5
    xyz[lying] = [1.0, 0.0, 0.05]
    rng = np.random.default_rng(3)
    xyz += rng.normal(0, 0.01, xyz.shape)
    per = int(rate)  # one-second chunks
    return [Accel(device_id=dev, ts=t0 + int(1000 * k / rate), rate_hz=rate,
                  x=xyz[k:k + per, 0].tolist(), y=xyz[k:k + per, 1].tolist(),
                  z=xyz[k:k + per, 2].tolist()) for k in range(0, n, per)]


@pytest.mark.parametrize("rate", [20.0, 50.0, 200.0])
def test_accelerometer_fall_is_raised_once_through_the_engine(rate: float) -> None:
    eng = DetectorEngine()
    chunks = fall_chunks("P-2", T0, rate)
    events = [e for c in chunks for e in run(eng, [c])] + eng.tick(T0 + 60_000)
    falls = [e for e in events if e.type == "fall"]
    assert len(falls) == 1
    assert math.isclose(falls[0].ts, T0 + 2400, abs_tol=300)
    assert falls[0].evidence["source"] == "accelerometer"
    assert run(eng, chunks) == []    # the same chunks redelivered


@pytest.mark.parametrize("hold", [True, False], ids=["reorder", "no-reorder"])
def test_a_fall_survives_its_descent_chunk_arriving_13_s_late(hold: bool) -> None:
    # What the simulator found: the 1 s chunk before the impact delayed past the ones after it.
    fall = DetectorParams().fall
    params = DetectorParams(fall=dataclasses.replace(fall, reorder_gap_s=fall.max_gap_s)
                            ) if not hold else DetectorParams()
    eng = DetectorEngine(params=params)
    chunks = fall_chunks("P-3", T0, 50.0)
    late = chunks.pop(2)                       # [2 s, 3 s): the free fall and the impact
    events = []
    for c in chunks:
        events += run(eng, [c], received=c.ts + 1000)
    events += run(eng, [late], received=late.ts + 13_000)
    events += eng.tick(T0 + 20_000)
    falls = [e for e in events if e.type == "fall"]
    if hold:
        assert len(falls) == 1 and math.isclose(falls[0].ts, T0 + 2400, abs_tol=300)
        assert falls[0].evidence.get("partial") is None or falls[0].evidence["partial"] == 0
    else:
        assert falls == []                     # the failure the hold-back exists for


def test_accelerometer_falls_are_analysed_for_trunk_worn_devices_only() -> None:
    eng = DetectorEngine(registry=registry())
    events: list[Event] = []
    for dev in ("WATCH-1", "PEND-1"):
        for c in fall_chunks(dev, T0, 50.0):
            events += run(eng, [c])
    events += eng.tick(T0 + 60_000)
    assert [(e.type, e.device_id) for e in events if e.type == "fall"] == [("fall", "PEND-1")]
    assert eng.stats["accel_chunks_not_fall_analysed"] == 8
    # The watch's own fall report is always raised.
    assert kinds(run(eng, [Fall(device_id="WATCH-1", ts=T0 + 90_000)])) == [("fall", T0 + 90_000)]


def test_detector_parameters_come_from_the_config_file_and_typos_are_errors(
        tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text("[detectors]\ntimezone = 'Asia/Urumqi'\n[detectors.geofence]\nmargin_m = 80\n")
    params = load_config(path=good, env={}).detectors.params()
    assert params.geofence.margin_m == 80.0 and params.timezone == "Asia/Urumqi"
    assert params.geofence.exit_fixes == GeofenceParams().exit_fixes
    bad = tmp_path / "bad.toml"
    bad.write_text("[detectors.geofence]\nmargin = 80\n")
    with pytest.raises(ConfigError, match="detectors.geofence.margin"):
        load_config(path=bad, env={})
    bad.write_text("[detectors.alarms]\nnight = '23:00-25:00'\n")
    with pytest.raises(ConfigError, match="night must be a local-time window"):
        load_config(path=bad, env={})


# -- invariants across all detectors ------------------------------------------------------------

@st.composite
def _streams(draw: st.DrawFn) -> list[Reading]:
    """In-order mixed readings of three devices (the bracelet has a zone), 20 s apart."""
    out: list[Reading] = []
    n = draw(st.integers(1, 60))
    for i in range(n):
        dev = draw(st.sampled_from(["BR-1", "WATCH-1", "HOME-1"]))
        ts = T0 + i * 20_000
        kind = draw(st.sampled_from(["fix", "sos", "hb", "hr", "wear", "home"]))
        if kind == "fix":
            out.append(fix(ts, draw(st.sampled_from([0.0, 150.0, 190.0, 230.0, 400.0, 3000.0])),
                           dev=dev, acc=draw(st.sampled_from([None, 10.0, 80.0, 5000.0]))))
        elif kind == "sos":
            out.append(Sos(device_id=dev, ts=ts))
        elif kind == "hb":
            out.append(Heartbeat(device_id=dev, ts=ts,
                                 battery_pct=draw(st.sampled_from([5.0, 19.0, 30.0, 45.0, 90.0]))))
        elif kind == "hr":
            out.append(Vitals(device_id=dev, ts=ts,
                              heart_rate_bpm=draw(st.sampled_from([40.0, 70.0, 130.0]))))
        elif kind == "wear":
            out.append(Wear(device_id=dev, ts=ts, worn=draw(st.booleans())))
        else:
            out.append(HomeAlarm(device_id=dev, ts=ts, active=draw(st.booleans()),
                                 sensor=draw(st.sampled_from(["smoke", "panic", "bed_exit"]))))
    return out


@settings(max_examples=150, deadline=None)
@given(_streams(), st.lists(st.integers(0, 60), max_size=5), st.randoms(use_true_random=False))
def test_any_batching_shuffling_and_redelivery_give_the_same_events(
        readings: list[Reading], cuts: list[int], rnd: random.Random) -> None:
    whole = run(DetectorEngine(registry=registry()), readings)
    eng = DetectorEngine(registry=registry())
    bounds = sorted({0, len(readings), *(c for c in cuts if c <= len(readings))})
    pieces: list[Event] = []
    for a, b in itertools.pairwise(bounds):
        batch = readings[a:b]
        rnd.shuffle(batch)                    # a gateway's order inside a batch is arbitrary
        pieces += run(eng, batch)
        pieces += run(eng, batch[: len(batch) // 2])   # and half of it is delivered again
    # Same events; the attached last-known position may differ (it is what was known when the
    # event was detected), so evidence and position are not compared.
    assert sorted((e.ts, e.device_id, e.type, e.severity) for e in pieces) == \
        sorted((e.ts, e.device_id, e.type, e.severity) for e in whole)
