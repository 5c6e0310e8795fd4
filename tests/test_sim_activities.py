"""Everyday-activity, fall-kind and night-wear models of the simulator (issue #18).

The shapes are checked against the physics and ranges their docstrings give, noise-free and on a
1 kHz grid (a sampler's view of a peak is the detector's business). Detector outcomes on these
activities are deliberately not asserted: the detector is being changed, and
``benchmarks/fall_adl.py`` measures whatever it is.
"""

from __future__ import annotations

import io
import itertools
import math
import random
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import get_args

import msgspec
import numpy as np
import pytest

from benchmarks import fall_adl
from device_sim import activities, falls, plans, signals, sleep
from device_sim.evaluate import evaluate
from device_sim.scenario import (
    ActivityRates,
    FallIncident,
    FallKind,
    FleetSpec,
    RandomIncidents,
    Scenario,
    load_scenario,
    parse_scenario,
)
from device_sim.stream import build
from foundation.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CST = timezone(timedelta(hours=8))
SEEDS = range(40)


def _body(seed: int) -> tuple[signals.Body, random.Random]:
    rng = random.Random(seed)
    print(f"seed {seed}")
    return signals.Body.draw(rng), rng


def _render(segs: tuple[signals.Segment, ...] | list[signals.Segment], t0: int, t1: int,
            step_ms: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free acceleration (n, 3) on a ``step_ms`` grid over ``[t0, t1)``."""
    t = np.arange(t0, t1, step_ms, dtype=np.int64)
    out = np.full((len(t), 3), np.nan)
    for seg in segs:
        m = (t >= seg.t0) & (t < seg.t1)
        out[m] = signals.render_segment(seg, t[m])
    assert not np.isnan(out).any()
    return t, out


def _deg(a: np.ndarray, b: np.ndarray) -> float:
    c = float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def _same(a: list[signals.Segment], b: list[signals.Segment]) -> bool:
    """Plans equal field by field (segments hold numpy vectors, which ``==`` cannot judge)."""
    return len(a) == len(b) and all(
        all(np.array_equal(getattr(x, f), getattr(y, f)) if isinstance(getattr(x, f), np.ndarray)
            else getattr(x, f) == getattr(y, f) for f in x.__slots__)
        for x, y in zip(a, b, strict=True))


def _runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


# -- everyday activities --------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_a_roll_in_bed_turns_85_to_120_deg_lands_at_1_5_to_2_8_g_and_settles(seed: int) -> None:
    body, rng = _body(seed)
    angle = rng.choice((1, -1)) * rng.uniform(85, 120)
    ep = activities.roll_in_bed(body, rng, 0, body.lying, angle)
    t, a = _render(ep.segments, ep.t0, ep.t1)
    mag = np.linalg.norm(a, axis=1)
    assert 1.5 <= mag.max() <= 2.8 + 0.1       # the bounce and ringing sit on top, a little
    assert mag.min() >= 0.65                   # a shallow dip: no free fall
    assert 85 <= _deg(a[0], a[-1]) <= 120 + 1
    after = a[t >= ep.t1 - 500]
    assert float(np.linalg.norm(after - after.mean(axis=0), axis=1).max()) < 0.02
    # The turn's rotation shows in the magnitude before the landing (w^2 r, dw/dt r).
    shape = ep.segments[0].shape
    assert isinstance(shape, signals.Move) and 0.10 <= shape.radius_m <= 0.15
    early = mag[t < ep.t0 + int(shape.dip[0] * 1000)]
    assert np.abs(early - 1).max() > 0.005


def test_rolls_alone_land_over_2_g_about_one_time_in_four() -> None:
    body, rng = _body(1)
    shapes = [activities.roll_in_bed(body, rng, 0, body.lying, 100).segments[0].shape
              for _ in range(2000)]
    peaks = [s.peak_g for s in shapes if isinstance(s, signals.Move)]
    assert 0.15 < sum(p >= 2 for p in peaks) / len(peaks) < 0.35


@pytest.mark.parametrize("seed", SEEDS)
def test_jogging_steps_at_2_5_to_3_hz_with_flight_dips_and_2_to_3_5_g_peaks(seed: int) -> None:
    body, rng = _body(seed)
    ep = activities.jog(body, rng, 0)
    gait = ep.segments[0].shape
    assert isinstance(gait, signals.Gait)
    _t, a = _render(ep.segments, 5000, 15_000)   # past the 1 s ramp-up
    mag = np.linalg.norm(a, axis=1)
    assert 2.0 <= mag.max() <= 3.5 + 0.02        # + the lateral sway, square to it
    vertical = a @ body.upright
    flights = [n for n in _runs(vertical <= gait.floor_g + 1e-9) if n > 20][1:-1]  # whole ones
    assert flights and all(100 <= n <= 151 for n in flights), flights
    assert 0.2 - 1e-9 <= gait.floor_g <= 0.5 and mag.min() <= 0.52
    assert (len(flights) + 2) / 10.0 == pytest.approx(gait.freq, abs=0.15)
    assert 2.5 <= gait.freq <= 3.0
    assert float(mag.mean()) == pytest.approx(1.0, abs=0.02)   # impulse balances gravity


@pytest.mark.parametrize("seed", SEEDS)
def test_fast_lie_downs_land_at_2_to_2_8_g_without_free_fall(seed: int) -> None:
    body, rng = _body(seed)
    ep = activities.lie_down_fast(body, rng, 0)
    drop = next(s for s in ep.segments if s.kind == "move")
    _t, a = _render([drop], drop.t0, drop.t1)
    mag = np.linalg.norm(a, axis=1)
    assert 2.0 <= mag.max() <= 2.8 + 0.1
    assert mag.min() >= 0.6 - 0.02
    below = mag < 1.0
    speed = 9.81 * float(np.sum(1.0 - mag[below])) / 1000
    assert 0.7 <= speed <= 1.8                 # 0.8-1.6 m/s gained, give or take the turn
    assert ep.segments[0].u0 is body.upright and ep.segments[-1].u1 is body.upright


@pytest.mark.parametrize("seed", SEEDS)
def test_hard_sits_tilt_30_to_50_deg_and_land_at_2_to_2_6_g(seed: int) -> None:
    body, rng = _body(seed)
    ep = activities.hard_sit(body, rng, 0)
    _t, a = _render(ep.segments[:1], ep.t0, ep.segments[0].t1)
    assert 2.0 <= np.linalg.norm(a, axis=1).max() <= 2.6 + 0.1
    assert 30 - 1 <= _deg(body.upright, ep.segments[0].u1) <= 50 + 1


@pytest.mark.parametrize("seed", SEEDS)
def test_collapsing_into_a_chair_and_fast_stairs(seed: int) -> None:
    body, rng = _body(seed)
    ep = activities.collapse_chair(body, rng, 0)
    _, a = _render(ep.segments[:1], ep.t0, ep.segments[0].t1)
    mag = np.linalg.norm(a, axis=1)
    assert 2.0 <= mag.max() <= 3.1 and 0.25 <= mag.min() <= 0.75
    ep = activities.stairs_fast(body, rng, 0)
    _, a = _render(ep.segments, ep.t0, ep.t1)
    mag = np.linalg.norm(a, axis=1)
    assert 2.0 <= mag.max() <= 2.5 + 1e-6 and mag.min() >= 0.5


@pytest.mark.parametrize("seed", SEEDS)
def test_a_switched_off_stream_ends_right_after_a_step(seed: int) -> None:
    body, rng = _body(seed)
    ep = activities.switched_off(body, rng, 0)
    assert ep.off is not None and ep.off[1] - ep.off[0] >= 120_000
    t, a = _render(ep.segments, ep.t0, ep.off[0])
    mag = np.linalg.norm(a, axis=1)
    gait = ep.segments[0].shape
    assert isinstance(gait, signals.Gait)
    step = 1000 / gait.freq
    last_strike = t[-1] - (t[-1] - ep.t0) % step + gait.heel_s * 500
    assert 20 <= t[-1] + 1 - last_strike <= 260
    assert mag[t >= last_strike - 30].max() >= 1.5    # the stream's last step is in it


# -- falls ------------------------------------------------------------------------------------

def _fall(kind: FallKind, seed: int) -> tuple[signals.Body, list[signals.Segment],
                                              np.ndarray, np.ndarray, int]:
    body, rng = _body(seed)
    impact = 1_000_000
    segs, detail = falls.fall_of_kind(kind, body, rng, impact, get_up=False, lying_s=30,
                                      peak_g=None)
    assert detail["fall_kind"] == kind and detail["lying_s"] == 30
    t, a = _render(segs, segs[0].t0, impact + 3000)
    return body, segs, t, np.linalg.norm(a, axis=1), impact


@pytest.mark.parametrize("seed", SEEDS)
def test_a_fall_out_of_bed_falls_freely_for_about_0_3_s_and_hits_3_to_6_g(seed: int) -> None:
    body, segs, t, mag, impact = _fall("out_of_bed", seed)
    free = max(_runs(mag < 0.35))
    assert 250 <= free <= 360, free          # sqrt(2 h / g) for a 0.40-0.55 m bed
    assert 3.0 <= mag.max() <= 6.3
    assert abs(int(t[np.argmax(mag)]) - impact) <= 2
    assert segs[0].u0 is body.lying and 90 - 1 <= _deg(segs[0].u0, segs[0].u1) <= 150 + 1


@pytest.mark.parametrize("seed", SEEDS)
def test_fainting_while_seated_is_a_slow_slump_without_free_fall(seed: int) -> None:
    body, segs, _t, mag, impact = _fall("faint_seated", seed)
    assert segs[0].u0 is body.sitting
    assert impact - segs[0].t0 >= 2000
    _, a = _render(segs[:1], segs[0].t0, impact)
    turned = np.array([_deg(a[0], v) for v in a[::20]])
    ten, ninety = (int(np.argmax(turned >= f * turned[-1])) * 20 for f in (0.1, 0.9))
    assert ninety - ten >= 800                 # not a drop: the slump takes its time
    assert mag.min() >= 0.7 and 1.5 <= mag.max() <= 3.1


@pytest.mark.parametrize("seed", SEEDS)
def test_backward_and_table_falls(seed: int) -> None:
    body, segs, _, mag, _ = _fall("backward_sit", seed)
    assert 50 - 1 <= _deg(body.upright, segs[0].u1) <= 90 + 1
    assert 2.5 <= mag.max() <= 5.3 and mag.min() < 0.6
    body, segs, _, mag, _ = _fall("table_cushioned", seed)
    assert 0.58 <= mag.min() <= 0.82               # the hands take part of the weight
    assert 1.8 <= mag.max() <= 2.6
    assert 45 - 1 <= _deg(body.upright, segs[0].u1) <= 85 + 1


def test_a_trip_is_the_original_fall_draw_for_draw() -> None:
    body, _rng = _body(3)
    segs, detail = falls.fall_of_kind("trip", body, random.Random(7), 10_000, get_up=True,
                                      lying_s=None, peak_g=4.0)
    old, old_detail = signals.fall_segments(body, random.Random(7), 10_000, get_up=True,
                                            lying_s=None, peak_g=4.0)
    assert _same(segs, old) and detail == {**old_detail, "fall_kind": "trip"}


# -- rendering ----------------------------------------------------------------------------------

def _mixed_plan(seed: int) -> list[signals.Segment]:
    body, rng = _body(seed)
    t = 0
    inserts = []
    kinds: tuple[activities.AdlKind, ...] = ("lie_down_fast", "jog", "hard_sit",
                                             "collapse_chair", "stairs_fast")
    for kind in kinds:
        ep = activities.daytime(kind, body, rng, t + 60_000)
        inserts.append(plans.Insert(kind, ep.segments, "stand"))
        t = ep.t1
    impact = t + 300_000
    segs, _ = falls.fall_of_kind("faint_seated", body, rng, impact, get_up=True,
                                 lying_s=None, peak_g=None)
    inserts.append(plans.Insert("faint_seated", segs, "sit"))
    plan, marks = plans.day(body, rng, 0, segs[-1].t1 + 60_000, inserts, None)
    assert [m.kind for m in marks] == [i.kind for i in inserts]
    assert all(a.t1 == b.t0 for a, b in itertools.pairwise(plan))   # gap-free
    return plan


@pytest.mark.parametrize("split", [[7], [1, 3, 50], [1000]])
def test_rendering_does_not_depend_on_block_boundaries(split: list[int]) -> None:
    plan = _mixed_plan(5)
    t = np.arange(0, plan[-1].t1 - 1, 20, dtype=np.int64)
    whole = signals.Renderer(plan, np.random.default_rng(1)).block(t)
    r = signals.Renderer(plan, np.random.default_rng(1))
    parts, i = [], 0
    for n in itertools.cycle(split):
        if i >= len(t):
            break
        parts.append(r.block(t[i:i + n]))
        i += n
    np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_plans_are_deterministic_by_seed() -> None:
    assert _same(_mixed_plan(9), _mixed_plan(9))
    body, _ = _body(9)
    a, marks = sleep.night(body, random.Random(4), 0, 8 * 3_600_000)
    b, again = sleep.night(body, random.Random(4), 0, 8 * 3_600_000)
    assert _same(a, b) and marks == again
    assert sleep.night(body, random.Random(5), 0, 8 * 3_600_000)[1] != marks


def test_a_night_in_bed_rolls_a_few_times_an_hour_and_ends_standing() -> None:
    counts: Counter[str] = Counter()
    for seed in range(20):
        body, rng = _body(seed)
        segs, marks = sleep.night(body, rng, 0, 8 * 3_600_000)
        assert segs[0].t0 == 0 and segs[-1].t1 == 8 * 3_600_000
        assert all(a.t1 == b.t0 for a, b in itertools.pairwise(segs))
        assert segs[0].u0 is body.upright and segs[-1].u1 is body.upright
        counts.update(m.kind for m in marks)
    assert 1.2 <= counts["roll_in_bed"] / (20 * 8) <= 2.6
    assert 0 < counts["night_toilet"] <= 60


# -- scenarios ----------------------------------------------------------------------------------

def _night_scenario(seed: int) -> Scenario:
    return Scenario(name="night", seed=seed, start=datetime(2026, 3, 2, 20, 0, tzinfo=CST),
                    duration_s=4 * 3600, fleet=FleetSpec(
                        fall_sensors=2, night_wear=1.0,
                        activities=ActivityRates(switched_off=8.0, hard_sit=8.0)),
                    incidents=[FallIncident(at_s=3 * 3600, device=1, kind="out_of_bed")])


def test_night_wear_streams_the_night_and_activities_leave_holes() -> None:
    sim = build(_night_scenario(11))
    readings = list(sim.readings())
    assert list(build(_night_scenario(11)).readings()) == readings           # determinism
    assert [r.body for r in build(_night_scenario(12)).readings()] != [r.body for r in readings]
    accel = [r for r in readings if r.body["type"] == "accel"]
    late = [r for r in accel if r.t_ms >= sim.start_ms + 3 * 3600 * 1000 - 1_800_000]
    assert {r.device_id for r in late} == {"FS-00001", "FS-00002"}          # worn at 22:30+
    (label,) = sim.labels
    assert label.detail["fall_kind"] == "out_of_bed"
    short = [r for r in accel if len(r.body["x"]) < 50]
    assert short, "a switched-off stream ends mid-chunk"
    times = sorted(r.t_ms for r in accel if r.device_id == short[0].device_id)
    assert max(b - a for a, b in itertools.pairwise(times)) >= 120_000


def test_scenario_options_default_to_todays_behaviour_and_are_checked() -> None:
    assert FallIncident(at_s=1).kind == "trip"
    assert FleetSpec().night_wear == 0.0 and ActivityRates().rates() == {}
    assert set(get_args(FallKind)) == set(falls.FALL_KINDS)
    assert set(ActivityRates.__struct_fields__) == set(activities.ADL_KINDS) - {"roll_in_bed"}
    with pytest.raises(ConfigError, match=r"\$\.incidents\[0\]\.kind"):
        parse_scenario(b"name: x\nfleet: {fall_sensors: 1}\n"
                       b"incidents: [{type: fall, at_s: 1, kind: cartwheel}]", fmt="yaml")
    with pytest.raises(ConfigError, match=r"\$\.fleet\.night_wear"):
        parse_scenario(b"name: x\nfleet: {night_wear: 2}", fmt="yaml")


def test_random_falls_are_drawn_from_the_kinds_given() -> None:
    scenario = Scenario(name="r", seed=4, start=datetime(2026, 3, 2, 8, 0, tzinfo=CST),
                        duration_s=12 * 3600, fleet=FleetSpec(fall_sensors=6),
                        random_incidents=msgspec.convert({"fall": 6.0}, RandomIncidents),
                        random_fall_kinds={"backward_sit": 1.0, "out_of_bed": 1.0})
    kinds = Counter(lab.detail["fall_kind"] for lab in build(scenario).labels)
    assert set(kinds) == {"backward_sit", "out_of_bed"}, kinds
    plain = msgspec.structs.replace(scenario, random_fall_kinds={})
    assert {lab.detail["fall_kind"] for lab in build(plain).labels} == {"trip"}


def test_the_demo_scores_its_falls_of_every_kind(tmp_path: Path) -> None:
    demo = load_scenario(ROOT / "device_sim" / "scenarios" / "demo.yaml")
    result = evaluate(demo, workdir=tmp_path / "demo")
    kinds = sorted(lab.detail["fall_kind"] for lab in build(demo).labels if lab.type == "fall")
    assert kinds == sorted(falls.FALL_KINDS)
    (fall,) = [row for row in result.report.types if row.type == "fall"]
    assert fall.labels == 5 and not result.detect_errors


def test_the_1000_device_day_has_night_wear_activities_and_fall_kinds() -> None:
    day = load_scenario(ROOT / "deploy" / "scenarios" / "weihai-1000.yaml")
    assert day.fleet.night_wear > 0 and day.fleet.activities.rates()
    sim = build(msgspec.structs.replace(day, duration_s=6 * 3600.0))
    ids = [d for d, s in sim.devices.items() if s.kind == "fall_sensor"]
    accel = [r for r in itertools.islice(sim.readings(ids), 60_000) if r.body["type"] == "accel"]
    night = {r.device_id for r in accel if r.t_ms < sim.start_ms + 5 * 3_600_000}
    assert night                       # night wearers stream at 00:00-05:00


def test_the_benchmark_quick_mode_prints_a_table_per_class(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        fall_adl.main(["--quick", "--devices", "2", "--hours", "0.5", "--nights", "1",
                       "--json", str(tmp_path / "adl.json")])
    text = out.getvalue()
    for kind in (*fall_adl.DAY_CLASSES, *falls.FALL_KINDS):
        assert f"| {kind} |" in text
    assert "FA/night" in text and "baseline FA/hour" in text and "seed 18" in text
    assert "fall_adl: jog:" in err.getvalue()
    figures = msgspec.json.decode((tmp_path / "adl.json").read_bytes())
    assert figures["in_bed"]["nights"] == 1 and len(figures["falls"]) == len(falls.FALL_KINDS)
