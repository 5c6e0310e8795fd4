"""Fall detector benchmark: quality on the UMAFall traces and throughput through ``feed``.

Quality (skipped with a message when the data is absent): per body position, every trial is fed
as its own device in wire-like chunks of ~1 s with its real, irregular timestamps (all trials of a
position side by side, one batch per second), then ``expire`` flushes what is pending. A fall
trial counts as detected if it raised at least one fall, an ADL trial as a false alarm if it
raised any. False alarms per hour: the position's ADL trials concatenated into one long stream
(each trial starts one median sample interval after the previous ends) and fed as one device.

Throughput: 1,000 devices x 1 s chunks at 50 Hz and at 200 Hz, 20 batches, mostly quiet or
walking with 5 % of devices jogging (peaks over the impact threshold, so the per-candidate path
runs). Baselines measured in the same run on the same chunks: a plain per-sample Python loop
computing the magnitude; numpy concatenation + magnitude (a ceiling for any detector that must at
least read every sample once); and a per-chunk loop that only resamples each chunk to 50 Hz with
``np.interp`` and takes the magnitude (the floor of a detector that works device by device).

Sweep (``--sweep POSITION``): every threshold of the detector varied one at a time around its
default (each default was fixed from physics or the literature before a run: FallParams), with
sensitivity and specificity (trial end = silence) per value; then a leave-one-subject-out
estimate: for each of the 19 subjects, the value set scoring best (sensitivity + specificity) on
the other 18 is applied to the held-out subject, and the held-out results are pooled. If that
estimate is close to the fixed defaults' result, the defaults are not a lucky fit to these
trials; a large gap says the thresholds are doing the fitting.

Usage: python -m benchmarks.fall [--data DIR] [--skip-quality] [--skip-throughput]
       [--sweep WAIST]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from detectors.fall import AccelChunk, AccelFallDetector, FallHit, FallParams, chunk_times

BASE_MS = 1_700_000_000_000
POSITIONS = ("WAIST", "WRIST", "CHEST", "ANKLE", "RIGHTPOCKET")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/umafall"


def _chunks(dev: str, t: npt.NDArray[np.int64], xyz: npt.NDArray[np.float32],
            chunk_ms: int = 1000) -> list[AccelChunk]:
    """Split a trace at whole ``chunk_ms`` boundaries of its own clock (wire-like messages)."""
    cuts = np.flatnonzero(np.diff((t - t[0]) // chunk_ms)) + 1
    return [AccelChunk(dev, tt, xx) for tt, xx in zip(np.split(t, cuts), np.split(xyz, cuts),
                                                      strict=True)]


def run_trials(traces: dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]],
               params: FallParams | None = None,
               ) -> tuple[dict[str, list[FallHit]], dict[str, list[FallHit]]]:
    """Feed every trace as its own device, one batch per second of all traces.

    Returns the falls raised by ``feed`` and, apart, those ``expire`` raises once all traces
    have ended (candidates in a trace's last 3 s, decided as if the device had gone silent).
    """
    det = AccelFallDetector(params=params or FallParams())
    per = {k: _chunks(k, BASE_MS + t.astype(np.int64), x) for k, (t, x) in traces.items()}
    hits: dict[str, list[FallHit]] = defaultdict(list)
    for step in range(max(len(c) for c in per.values())):
        for h in det.feed([c[step] for c in per.values() if step < len(c)]):
            hits[h.device_id].append(h)
    at_end: dict[str, list[FallHit]] = defaultdict(list)
    for h in det.expire(BASE_MS + 10**9):
        at_end[h.device_id].append(h)
    return hits, at_end


def _long_stream(traces: Sequence[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]],
                 ) -> tuple[float, int]:
    """Concatenate ADL traces into one stream, feed it in ~1 s chunks; (hours, falls raised)."""
    gap = int(np.median(np.concatenate([np.diff(t) for t, _ in traces])))
    ts, xs, offset = [], [], BASE_MS
    for t, x in traces:
        ts.append(offset + t.astype(np.int64) - int(t[0]))
        xs.append(x)
        offset = int(ts[-1][-1]) + max(gap, 1)
    t_all, x_all = np.concatenate(ts), np.concatenate(xs)
    det = AccelFallDetector()
    n = 0
    for c in _chunks("long", t_all, x_all):
        n += len(det.feed([c]))
    return (int(t_all[-1]) - int(t_all[0])) / 3.6e6, n


def quality(data: Path) -> dict[str, Any]:
    """The UMAFall table: per position sensitivity, specificity and false alarms per hour."""
    with (data / "index.csv").open() as f:
        rows = list(csv.DictReader(f))
    out: dict[str, Any] = {}
    for pos in POSITIONS:
        sel = [r for r in rows if r["position"] == pos]
        if not sel:
            continue
        with np.load(data / "umafall_accel.npz") as npz:
            traces = {r["key"]: (npz[r["key"] + "__t_ms"], npz[r["key"] + "__xyz_g"])
                      for r in sel}
        hits, at_end = run_trials(traces)
        falls = [r for r in sel if r["label"] == "FALL"]
        adls = [r for r in sel if r["label"] == "ADL"]
        missed = Counter(r["activity"] for r in falls if not hits.get(r["key"]))
        alarms = Counter(r["activity"] for r in adls if hits.get(r["key"]))
        silent = Counter(r["activity"] for r in adls
                         if hits.get(r["key"]) or at_end.get(r["key"]))
        hours, fa = _long_stream([traces[r["key"]] for r in adls])
        out[pos] = {
            "trials": len(sel), "falls": len(falls), "adls": len(adls),
            "sensitivity": 1 - sum(missed.values()) / len(falls),
            "specificity": 1 - sum(alarms.values()) / len(adls),
            "sensitivity_end_as_silence": 1 - sum(
                1 for r in falls if not (hits.get(r["key"]) or at_end.get(r["key"]))) / len(falls),
            "specificity_end_as_silence": 1 - sum(silent.values()) / len(adls),
            "adl_stream_hours": round(hours, 3), "adl_stream_false_alarms": fa,
            "false_alarms_per_hour": round(fa / hours, 2),
            "missed_by_type": dict(missed), "false_alarms_by_activity": dict(alarms),
        }
    return out


def _fleet(n_dev: int, hz: int, seconds: int, seed: int) -> list[list[AccelChunk]]:
    """Synthetic batches: ``n_dev`` devices, 1 s chunks; quiet, walking (0.3 g at 2 Hz) or
    jogging (5 %, 1.3 g at 2.7 Hz: peaks over 2 g)."""
    rng = np.random.default_rng(seed)
    n = hz * seconds
    t0 = BASE_MS + rng.integers(0, 1000, n_dev)
    grav = rng.normal(size=(n_dev, 3))
    grav /= np.linalg.norm(grav, axis=1, keepdims=True)
    amp = np.where(rng.random(n_dev) < 0.05, 1.3, rng.choice([0.0, 0.3], n_dev))
    freq = np.where(amp > 1, 2.7, 2.0)
    s = np.arange(n) / hz
    batches: list[list[AccelChunk]] = [[] for _ in range(seconds)]
    for d in range(n_dev):
        t = chunk_times(int(t0[d]), hz, n)
        wave = amp[d] * np.sin(2 * np.pi * freq[d] * s + rng.uniform(0, 6.3))
        xyz = (grav[d] * (1 + wave)[:, None] + rng.normal(0, 0.02, (n, 3))).astype(np.float32)
        for k in range(seconds):
            sl = slice(k * hz, (k + 1) * hz)
            batches[k].append(AccelChunk(f"dev-{d}", t[sl], xyz[sl]))
    return batches


def _python_loop(batches: list[list[AccelChunk]]) -> float:
    start = time.perf_counter()
    acc = 0.0
    for batch in batches:
        for c in batch:
            for x, y, z in c.xyz.tolist():
                acc += math.sqrt(x * x + y * y + z * z)
    return time.perf_counter() - start


def _numpy_ceiling(batches: list[list[AccelChunk]]) -> float:
    start = time.perf_counter()
    for batch in batches:
        xyz = np.concatenate([c.xyz for c in batch])
        np.sqrt(np.einsum("ij,ij->i", xyz, xyz))
    return time.perf_counter() - start


def _per_chunk_numpy(batches: list[list[AccelChunk]]) -> float:
    """Per chunk: interpolate onto the 50 Hz grid and take the magnitude (the least a detector
    that handles devices one at a time in Python must do)."""
    start = time.perf_counter()
    for batch in batches:
        for c in batch:
            g = np.arange(-(-int(c.t_ms[0]) // 20) * 20, int(c.t_ms[-1]) + 1, 20)
            v = np.column_stack([np.interp(g, c.t_ms, c.xyz[:, k]) for k in range(3)])
            np.sqrt(np.einsum("ij,ij->i", v, v))
    return time.perf_counter() - start


def _detector(batches: list[list[AccelChunk]]) -> tuple[float, int]:
    det = AccelFallDetector()
    start = time.perf_counter()
    for batch in batches:
        det.feed(batch)
    return time.perf_counter() - start, det.stats["candidates"]


def throughput(n_dev: int = 1000, seconds: int = 20) -> dict[str, Any]:
    """Samples/s through ``feed`` against the two baselines, at 50 and 200 Hz."""
    out: dict[str, Any] = {}
    for hz in (50, 200):
        batches = _fleet(n_dev, hz, seconds, seed=hz)
        samples = n_dev * hz * seconds
        det_s, cands = min((_detector(batches) for _ in range(3)), key=lambda r: r[0])
        loop_s = _python_loop(batches[:2]) * seconds / 2  # the slow loop on 2 batches, scaled
        numpy_s = min(_numpy_ceiling(batches) for _ in range(3))
        chunk_s = _per_chunk_numpy(batches)
        out[f"{hz}Hz"] = {
            "devices": n_dev, "batches": seconds, "samples": samples, "candidates": cands,
            "detector_samples_per_s": round(samples / det_s),
            "python_loop_samples_per_s": round(samples / loop_s),
            "numpy_magnitude_samples_per_s": round(samples / numpy_s),
            "per_chunk_numpy_samples_per_s": round(samples / chunk_s),
            "ratio_vs_python_loop": round(loop_s / det_s, 1),
            "ratio_vs_numpy_magnitude": round(numpy_s / det_s, 3),
            "ratio_vs_per_chunk_numpy": round(chunk_s / det_s, 2),
        }
    return out


#: The thresholds swept, each around its default (docs/fall-detector.md gives their sources).
SWEEP: dict[str, tuple[float, ...]] = {
    "impact_g": (1.8, 2.0, 2.2), "freefall_g": (0.5, 0.6, 0.7),
    "descent_mps": (0.7, 1.0, 1.3), "orientation_deg": (35.0, 45.0, 55.0),
    "still_std_g": (0.07, 0.1, 0.15), "rotation_band_g": (0.0, 0.1, 0.15, 0.2),
    "hard_impact_g": (2.5, 3.0, 3.5), "lying_deg": (50.0, 60.0, 70.0),
    "rhythm_window_s": (1.0, 1.5, 2.0),
}


def _one_param(name: str, value: float) -> dict[str, Any]:
    """``{name: value}`` typed for FallParams' keywords (its fields are not all floats)."""
    return {name: value}


def sweep(data: Path, position: str) -> dict[str, Any]:
    """One-at-a-time sweep of :data:`SWEEP` and the leave-one-subject-out estimate."""
    with (data / "index.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["position"] == position]
    with np.load(data / "umafall_accel.npz") as npz:
        traces = {r["key"]: (npz[r["key"] + "__t_ms"], npz[r["key"] + "__xyz_g"]) for r in rows}
    variants = [("default", FallParams())] + [
        (f"{name}={value:g}", FallParams(**_one_param(name, value)))
        for name, values in SWEEP.items() for value in values
        if value != getattr(FallParams(), name)]
    # raised[variant][trial key]: the trial raised a fall (trial end = silence).
    raised: dict[str, set[str]] = {}
    for i, (label, params) in enumerate(variants, 1):
        hits, at_end = run_trials(traces, params)
        raised[label] = set(hits) | set(at_end)
        print(f"sweep {position}: {i}/{len(variants)} {label}", flush=True)
    subjects = sorted({r["subject"] for r in rows})

    def score(label: str, keep: set[str]) -> tuple[int, int, int, int]:
        sel = [r for r in rows if r["subject"] in keep]
        falls = [r["key"] for r in sel if r["label"] == "FALL"]
        adls = [r["key"] for r in sel if r["label"] == "ADL"]
        return (sum(k in raised[label] for k in falls), len(falls),
                sum(k not in raised[label] for k in adls), len(adls))

    def rates(tp: int, p: int, tn: int, n: int) -> tuple[float, float]:
        return tp / p if p else math.nan, tn / n if n else math.nan

    table = {label: rates(*score(label, set(subjects))) for label, _ in variants}
    pooled = [0, 0, 0, 0]
    chosen: Counter[str] = Counter()
    for held in subjects:
        train = set(subjects) - {held}
        best = max(variants, key=lambda v: sum(rates(*score(v[0], train))))[0]
        chosen[best] += 1
        for j, x in enumerate(score(best, {held})):
            pooled[j] += x
    loso = rates(*pooled)
    return {"position": position, "table": {k: {"sensitivity": round(v[0], 4),
                                                "specificity": round(v[1], 4)}
                                            for k, v in table.items()},
            "loso": {"sensitivity": round(loso[0], 4), "specificity": round(loso[1], 4),
                     "chosen": dict(chosen)}}


def _markdown(q: dict[str, Any]) -> str:
    header = ("| position | trials | falls | ADLs | sensitivity | specificity "
              "| sens / spec, trial end = silence | ADL hours | false alarms | FA/hour |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for pos, r in q.items():
        lines.append(f"| {pos} | {r['trials']} | {r['falls']} | {r['adls']} "
                     f"| {r['sensitivity']:.1%} | {r['specificity']:.1%} "
                     f"| {r['sensitivity_end_as_silence']:.1%} / "
                     f"{r['specificity_end_as_silence']:.1%} "
                     f"| {r['adl_stream_hours']:.2f} | {r['adl_stream_false_alarms']} "
                     f"| {r['false_alarms_per_hour']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("ELDERCARE_UMAFALL_DIR", DEFAULT_DATA)))
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--sweep", metavar="POSITION",
                    help="sweep every threshold and estimate leave-one-subject-out (e.g. WAIST)")
    args = ap.parse_args(argv)
    result: dict[str, Any] = {"date": date.today().isoformat(),
                              "machine": f"{platform.machine()} {platform.processor()} "
                                         f"{os.cpu_count()} cpus, python "
                                         f"{platform.python_version()}, numpy {np.__version__}"}
    if args.sweep:
        result["sweep"] = sw = sweep(args.data, args.sweep)
        print(f"| {args.sweep}: value | sensitivity | specificity (trial end = silence) |")
        print("|---|---|---|")
        for label, r in sw["table"].items():
            print(f"| {label} | {r['sensitivity']:.1%} | {r['specificity']:.1%} |")
        lo = sw["loso"]
        print(f"leave-one-subject-out: sensitivity {lo['sensitivity']:.1%}, specificity"
              f" {lo['specificity']:.1%}; value sets chosen: {lo['chosen']}")
    if not args.skip_quality:
        if (args.data / "umafall_accel.npz").exists():
            result["umafall"] = q = quality(args.data)
            print(_markdown(q))
            for pos, r in q.items():
                print(f"{pos}: missed {r['missed_by_type']}; "
                      f"false alarms {r['false_alarms_by_activity']}")
        else:
            print(f"UMAFall data not found in {args.data}: quality table skipped "
                  "(set ELDERCARE_UMAFALL_DIR or --data)")
    if not args.skip_throughput:
        result["throughput"] = tp = throughput()
        for hz, r in tp.items():
            print(f"{hz}: detector {r['detector_samples_per_s']:,} samples/s; python loop "
                  f"{r['python_loop_samples_per_s']:,}/s (x{r['ratio_vs_python_loop']}); numpy "
                  f"magnitude {r['numpy_magnitude_samples_per_s']:,}/s "
                  f"(detector at {r['ratio_vs_numpy_magnitude']:.1%} of it); per-chunk numpy "
                  f"resample {r['per_chunk_numpy_samples_per_s']:,}/s "
                  f"(x{r['ratio_vs_per_chunk_numpy']})")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
