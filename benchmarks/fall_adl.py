"""Fall detector on simulated everyday life: false alarms per activity class and per night,
and recall per fall kind (issue #18).

Method. Every run renders wearers' waist signals with the simulator's models
(:mod:`device_sim.activities`, :mod:`device_sim.falls`, :mod:`device_sim.sleep`, spliced into
ordinary life by :mod:`device_sim.plans`) at ``--rate`` Hz, in 1 s chunks on a per-device phase,
and feeds ``detectors.fall.AccelFallDetector`` (default parameters, whatever the imported module
is today) as ``benchmarks/fall.py`` does: all devices of a run side by side, one batch per second,
and ``expire(now)`` every 5 s of that clock as the engine's tick does, so a stream that stops
(a sensor switched off) is decided as the service would decide it; ``expire`` once more at
the end.

* **ordinary** (the baseline of every activity row): ordinary daytime life
  (:func:`device_sim.signals.ordinary`), ``--devices`` wearers x ``--hours`` hours.
* **one run per activity class**: the same wearers and hours (same seeds) with episodes of that
  class spliced in every few minutes (a dense dose, so rare false alarms show); FA/episode is
  what an episode costs, FA/hour what this stream raised per hour. A false alarm is put down to
  an episode when its impact lies within the episode (-2 s, +10 s), to ordinary life otherwise.
* **nights**: ``--nights`` nights in bed of 8.5 h (22:00-06:30), rolls at 1.5-2.5 per hour
  and 0-3 toilet trips each (:mod:`device_sim.sleep`), after 5 min of walking (the device is
  worn by day and has learned its upright): false alarms per night by cause.
* **falls**: per fall kind, ``--devices`` wearers x ``--hours`` hours of ordinary life with a
  fall every ~10 min (lying 1-2 min or getting up at once): recall = falls with a hit within
  [-5 s, +60 s] of the impact / falls simulated (the scorer's fall window), against the
  ``trip`` kind (the simulator's original fall) in the same run.

Every random draw comes from ``--seed`` (per run, device and purpose), so the same command
gives the same figures for the same detector. Progress goes to stderr.

Usage: python -m benchmarks.fall_adl [--quick] [--seed S] [--devices N] [--hours H]
       [--nights N] [--rate HZ] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

import detectors.fall
from detectors.fall import AccelChunk, AccelFallDetector, FallHit
from device_sim import activities, falls, plans, signals
from device_sim.fleet import np_rng, py_rng
from device_sim.plans import Insert
from device_sim.scenario import FallKind
from device_sim.sleep import Mark

#: 2026-03-02 08:00 +08:00 (a Monday morning in Weihai), and 22:00 for nights.
T0_MS = 1_772_409_600_000
NIGHT_T0_MS = T0_MS + 14 * 3_600_000
NIGHT_MS = int(8.5 * 3_600_000)
DAY_CLASSES: tuple[activities.AdlKind, ...] = tuple(
    k for k in activities.ADL_KINDS if k != "roll_in_bed")
TICK_S = 5
#: A hit this long around a fall's impact detects it (the scorer's early_s and fall window).
EARLY_MS, WINDOW_MS = 5_000, 60_000


@dataclass
class Plan:
    """One simulated wearer: segments from ``t0`` to ``t1``, what happened when, silences."""

    segments: list[signals.Segment]
    marks: list[Mark]
    offs: list[tuple[int, int]] = field(default_factory=list)
    impacts: list[int] = field(default_factory=list)


@dataclass
class Outcome:
    """A run's hits per device, and its plans."""

    hours: float
    plans: list[Plan]
    hits: list[list[FallHit]]


def _grid(phase: int, rate: int, t: int) -> int:
    """The sample instant at or after ``t`` on a device's chunk grid."""
    c = t - (t - phase) % 1000
    offsets = np.rint(np.arange(rate + 1) * (1000.0 / rate)).astype(np.int64)
    return int(c + offsets[np.searchsorted(c + offsets, t)])


def _day_plan(seed: int, run: str, dev: int, hours: float,
              make: Callable[[signals.Body, random.Random, int, int], list[Insert]]) -> Plan:
    body = signals.Body.draw(py_rng(seed, "body", dev))   # the same wearer in every run
    a, b = T0_MS, T0_MS + int(hours * 3_600_000)
    inserts = make(body, py_rng(seed, run, dev, "inserts"), a, b)
    segs, marks = plans.day(body, py_rng(seed, "plan", dev), a, b, inserts, None)
    return Plan(segs, marks, [i.off for i in inserts if i.off is not None])


def _episodes(kind: activities.AdlKind) -> Callable[[signals.Body, random.Random, int, int],
                                                    list[Insert]]:
    """Episodes of ``kind`` every 3-10 min (after the previous one ends) through the span."""
    def make(body: signals.Body, rng: random.Random, a: int, b: int) -> list[Insert]:
        out: list[Insert] = []
        t = a + rng.randint(120_000, 600_000)
        while True:
            ep = activities.daytime(kind, body, rng, t)
            if ep.t1 >= b - 60_000:
                return out
            out.append(Insert(kind, ep.segments, "stand", ep.off))
            t = ep.t1 + rng.randint(180_000, 600_000)
    return make


def _falls(kind: FallKind, phase: int, rate: int,
           ) -> Callable[[signals.Body, random.Random, int, int], list[Insert]]:
    """A fall of ``kind`` every ~10 min: lying 60-120 s (or up at once, 3 in 10)."""
    def make(body: signals.Body, rng: random.Random, a: int, b: int) -> list[Insert]:
        out: list[Insert] = []
        t = a + rng.randint(300_000, 600_000)
        while t < b - 900_000:
            impact = _grid(phase, rate, t)
            segs, _ = falls.fall_of_kind(kind, body, rng, impact, get_up=rng.random() < 0.3,
                                         lying_s=rng.uniform(60, 120), peak_g=None)
            out.append(Insert(f"fall:{kind}:{impact}", segs, falls.START[kind]))
            t = segs[-1].t1 + rng.randint(300_000, 480_000)
        return out
    return make


#: Walking before bed: the device is worn by day too, and learns its upright from walking
#: (docs/fall-detector.md, "Posture"); a night fed with nothing before it would measure a
#: device that has never been worn upright.
EVENING_WALK_MS = 5 * 60_000


def _night_plan(seed: int, dev: int) -> Plan:
    body = signals.Body.draw(py_rng(seed, "body", dev))
    segs, marks = plans.night(body, py_rng(seed, "night", dev), NIGHT_T0_MS,
                              NIGHT_T0_MS + NIGHT_MS, [])
    walk = signals.Segment("walk", NIGHT_T0_MS - EVENING_WALK_MS, NIGHT_T0_MS, body.upright,
                           body.upright, amp=0.25, freq=1.8, lateral=body.lateral)
    return Plan([walk, *segs], marks)


def _feed(name: str, seed: int, rate: int, built: list[Plan]) -> list[list[FallHit]]:
    """Render every plan in 1 s chunks and feed them side by side; hits per device."""
    det = AccelFallDetector()
    n = len(built)
    phases = [py_rng(seed, "phase", d).randrange(1000) for d in range(n)]
    t0 = max(p.segments[0].t0 for p in built)
    t1 = min(p.segments[-1].t1 for p in built)
    steps = (t1 - t0) // 1000 - 1
    offsets = np.rint(np.arange(rate) * (1000.0 / rate)).astype(np.int64)
    renderers = [signals.Renderer(p.segments, np_rng(seed, "noise", name, d))
                 for d, p in enumerate(built)]
    hits: list[list[FallHit]] = [[] for _ in range(n)]
    ids = [f"{name}-{d}" for d in range(n)]
    index = {dev: d for d, dev in enumerate(ids)}
    last = time.monotonic()
    block = 60
    for k0 in range(0, steps, block):
        ks = np.arange(k0, min(k0 + block, steps))
        per_dev = []
        for d in range(n):
            starts = t0 + phases[d] + ks * 1000
            t = (starts[:, None] + offsets[None, :]).ravel()
            xyz = renderers[d].block(t).astype(np.float32).reshape(len(ks), rate, 3)
            per_dev.append((starts, t.reshape(len(ks), rate), xyz))
        for j, k in enumerate(ks.tolist()):
            batch = []
            for d in range(n):
                starts, t, xyz = per_dev[d]
                tt, xx = t[j], xyz[j]
                for a, b in built[d].offs:
                    if tt[0] < b and tt[-1] >= a:   # silent from ``a`` to ``b``
                        keep = (tt < a) | (tt >= b)
                        tt, xx = tt[keep], xx[keep]
                        if not len(tt):
                            break
                if len(tt):
                    batch.append(AccelChunk(ids[d], tt, xx))
            got = det.feed(batch)
            if (k + 1) % TICK_S == 0:
                got += det.expire(t0 + (k + 1) * 1000)
            for h in got:
                hits[index[h.device_id]].append(h)
        if time.monotonic() - last > 10:
            last = time.monotonic()
            print(f"fall_adl: {name}: {100 * (k0 + block) / steps:3.0f}% "
                  f"({sum(map(len, hits))} hits so far)", file=sys.stderr, flush=True)
    for h in det.expire(t1 + 10**7):
        hits[index[h.device_id]].append(h)
    return hits


def _run(name: str, seed: int, rate: int, built: list[Plan]) -> Outcome:
    start = time.monotonic()
    print(f"fall_adl: {name}: {len(built)} wearers ...", file=sys.stderr, flush=True)
    hits = _feed(name, seed, rate, built)
    hours = sum((p.segments[-1].t1 - p.segments[0].t0) / 3.6e6 for p in built)
    print(f"fall_adl: {name}: done in {time.monotonic() - start:.0f} s, "
          f"{sum(map(len, hits))} hits", file=sys.stderr, flush=True)
    return Outcome(hours, built, hits)


def _cause(marks: Sequence[Mark], ts: int) -> str:
    for m in marks:
        if m.t0 - 2_000 <= ts <= m.t1 + 10_000:
            return m.kind
    return "ordinary"


def _activity_row(kind: str, out: Outcome, baseline: Outcome) -> dict[str, Any]:
    causes = Counter(_cause(p.marks, h.ts) for p, hs in zip(out.plans, out.hits, strict=True)
                     for h in hs)
    episodes = sum(1 for p in out.plans for m in p.marks if m.kind == kind)
    on = causes.get(kind, 0)
    total = sum(causes.values())
    partial = sum(1 for hs in out.hits for h in hs if h.evidence.get("partial") == 1.0)
    base = sum(map(len, baseline.hits))
    return {"class": kind, "hours": round(out.hours, 1), "episodes": episodes,
            "episodes_per_hour": round(episodes / out.hours, 1), "false_alarms": total,
            "on_the_activity": on, "partial": partial,
            "fa_per_episode": round(on / episodes, 4) if episodes else None,
            "fa_per_hour": round(total / out.hours, 3),
            "baseline_fa_per_hour": round(base / baseline.hours, 3)}


def _night_row(out: Outcome) -> dict[str, Any]:
    causes = Counter(_cause(p.marks, h.ts) for p, hs in zip(out.plans, out.hits, strict=True)
                     for h in hs)
    nights = len(out.plans)
    rolls = sum(1 for p in out.plans for m in p.marks if m.kind == "roll_in_bed")
    trips = sum(1 for p in out.plans for m in p.marks if m.kind == "night_toilet")
    total = sum(causes.values())
    in_bed = out.hours - nights * EVENING_WALK_MS / 3.6e6
    return {"nights": nights, "hours": round(in_bed, 1), "rolls": rolls,
            "toilet_trips": trips, "false_alarms": total,
            "from_rolls": causes.get("roll_in_bed", 0),
            "from_getting_up": causes.get("night_toilet", 0),
            "other": causes.get("ordinary", 0),
            "fa_per_night": round(total / nights, 3),
            "fa_per_roll": round(causes.get("roll_in_bed", 0) / rolls, 4) if rolls else None,
            "roll_fa_per_hour_in_bed": round(causes.get("roll_in_bed", 0) / in_bed, 3),
            "nights_with_a_false_alarm": sum(1 for hs in out.hits if hs)}


def _fall_row(kind: str, out: Outcome) -> dict[str, Any]:
    n = found = fa = 0
    peaks: list[float] = []
    for p, hs in zip(out.plans, out.hits, strict=True):
        impacts = [int(m.kind.rsplit(":", 1)[1]) for m in p.marks if m.kind.startswith("fall:")]
        used: set[int] = set()
        for imp in impacts:
            n += 1
            hit = next((h for h in hs if imp - EARLY_MS <= h.ts <= imp + WINDOW_MS), None)
            if hit is not None:
                found += 1
                used.add(id(hit))
                peaks.append(hit.evidence.get("peak_g", float("nan")))
        fa += sum(1 for h in hs if id(h) not in used and not any(
            imp - EARLY_MS <= h.ts <= imp + 600_000 for imp in impacts))   # repeats aside
    return {"kind": kind, "falls": n, "detected": found,
            "recall": round(found / n, 4) if n else None,
            "median_peak_g": round(float(np.nanmedian(peaks)), 2) if peaks else None,
            "false_alarms_between_falls": fa}


def _table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else str(v)
    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[k]) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def run(*, seed: int, devices: int, hours: float, nights: int, rate: int) -> dict[str, Any]:
    """Every run of the benchmark; the figures as a dict (see the module docstring)."""
    baseline = _run("ordinary", seed, rate, [
        _day_plan(seed, "ordinary", d, hours, lambda *_: []) for d in range(devices)])
    rows = []
    for adl in DAY_CLASSES:
        out = _run(adl, seed, rate, [_day_plan(seed, adl, d, hours, _episodes(adl))
                                     for d in range(devices)])
        rows.append(_activity_row(adl, out, baseline))
    night = _night_row(_run("nights", seed, rate, [_night_plan(seed, d) for d in range(nights)]))
    fall_rows = []
    for kind in falls.FALL_KINDS:
        phases = [py_rng(seed, "phase", d).randrange(1000) for d in range(devices)]
        out = _run(f"fall-{kind}", seed, rate, [
            _day_plan(seed, f"fall-{kind}", d, hours, _falls(kind, phases[d], rate))
            for d in range(devices)])
        fall_rows.append(_fall_row(kind, out))
    trip = next(r for r in fall_rows if r["kind"] == "trip")
    for r in fall_rows:
        r["baseline_trip_recall"] = trip["recall"]
    return {"ordinary": {"hours": round(baseline.hours, 1),
                         "false_alarms": sum(map(len, baseline.hits)),
                         "fa_per_hour": round(sum(map(len, baseline.hits)) / baseline.hours, 3)},
            "activities": rows, "in_bed": night, "falls": fall_rows}


def _report(r: dict[str, Any]) -> str:
    o = r["ordinary"]
    parts = [(f"Baseline, ordinary daytime life: {o['hours']} h, {o['false_alarms']} false "
             f"alarms, {o['fa_per_hour']} FA/hour."), "",
             _table(r["activities"], [
                 ("class", "activity"), ("hours", "hours"), ("episodes", "episodes"),
                 ("episodes_per_hour", "episodes/h"), ("false_alarms", "false alarms"),
                 ("on_the_activity", "on the activity"), ("partial", "of all: partial"),
                 ("fa_per_episode", "FA/episode"), ("fa_per_hour", "FA/hour"),
                 ("baseline_fa_per_hour", "baseline FA/hour")]), "",
             _table([r["in_bed"]], [
                 ("nights", "nights"), ("hours", "hours in bed"), ("rolls", "rolls"),
                 ("toilet_trips", "toilet trips"), ("false_alarms", "false alarms"),
                 ("from_rolls", "from rolls"), ("from_getting_up", "getting up"),
                 ("other", "other"), ("fa_per_night", "FA/night"), ("fa_per_roll", "FA/roll"),
                 ("roll_fa_per_hour_in_bed", "roll FA/hour in bed"),
                 ("nights_with_a_false_alarm", "nights with a FA")]), "",
             _table(r["falls"], [
                 ("kind", "fall kind"), ("falls", "falls"), ("detected", "detected"),
                 ("recall", "recall"), ("baseline_trip_recall", "trip recall (baseline)"),
                 ("median_peak_g", "median peak g (hits)"),
                 ("false_alarms_between_falls", "FA between falls")])]
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run, print the tables and the JSON."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 4 wearers x 1 h, 4 nights (minutes, not an estimate)")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--devices", type=int, default=None, help="wearers per run (default 20)")
    ap.add_argument("--hours", type=float, default=None, help="hours per wearer (default 6)")
    ap.add_argument("--nights", type=int, default=None, help="nights in bed (default 60)")
    ap.add_argument("--rate", type=int, default=50, help="sampling rate, Hz")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args(argv)
    devices = args.devices or (4 if args.quick else 20)
    hours = args.hours or (1.0 if args.quick else 6.0)
    nights = args.nights or (4 if args.quick else 60)
    command = "python -m benchmarks.fall_adl " + " ".join(sys.argv[1:] if argv is None
                                                           else argv)
    source = Path(detectors.fall.__file__).read_bytes()
    head = {"date": date.today().isoformat(), "command": command.strip(), "seed": args.seed,
            "devices": devices, "hours_per_device": hours, "nights": nights,
            "rate_hz": args.rate,
            "detector": f"detectors/fall.py sha256 {hashlib.sha256(source).hexdigest()[:12]}",
            "machine": f"{platform.machine()} python {platform.python_version()}, "
                       f"numpy {np.__version__}"}
    start = time.monotonic()
    result = run(seed=args.seed, devices=devices, hours=hours, nights=nights, rate=args.rate)
    head["seconds"] = round(time.monotonic() - start, 1)
    print(f"Command: {head['command']}  (seed {args.seed}; {head['detector']}; "
          f"{head['seconds']} s)")
    print(_report(result))
    payload = json.dumps({**head, **result}, indent=2)
    if args.json:
        args.json.write_text(payload + "\n")
    print(payload)


if __name__ == "__main__":
    main()
