"""Geofence geometry benchmark: fix-zone checks per second, vectorized against a Python loop.

Method (one process, pinned to one core, one run, same data for both sides): every case is a set
of zones and a batch of (zone, fix) pairs. The vectorized side is one call of
:meth:`detectors.geo.ZoneSet.signed_distance_m` on the whole batch, best of ``--repeat`` runs.
The baseline is what one would write per fix in plain Python: ``math`` haversine minus the radius
for a circle; for a polygon the fix projected into the ring's local frame, then shapely's
``contains`` (on a prepared polygon) and ``exterior.distance`` on a ``Point``, with all shapely
geometries built beforehand. The loop is slow, so it runs on the first ``--loop-pairs`` pairs and
is reported per check. As a sanity check the two sides must agree on inside/outside wherever the
fix is clearly off the boundary: by more than 1 m plus the baseline's own error (haversine is a
sphere: up to 0.6 % of the distance to a circle's centre). Cases:

  circles       10,000 circles (50 m - 2 km) around Chinese cities, fixes near them
  polygons-8    10,000 concave 8-vertex polygons (200 m - 5 km)
  polygons-32   10,000 concave 32-vertex polygons
  mix           10,000 wearers with 1-3 zones each: a home circle, often a neighbourhood polygon
                (4-16 vertices), sometimes a second circle; fixes near home, pairs grouped per fix
                as the geofence detector builds them

Usage: python -m benchmarks.geofence [--pairs N] [--loop-pairs N] [--repeat N] [--seed S]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely  # type: ignore[import-untyped]

from detectors.geo import EARTH_RADIUS_M, ZoneSet
from schemas.registry import Point, Zone

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

CITIES = [(37.50, 122.10), (39.90, 116.40), (45.75, 126.65), (23.13, 113.26), (30.57, 104.07),
          (31.23, 121.47), (43.80, 87.60), (52.97, 122.53)]  # Weihai, Beijing, ... Mohe


@dataclass
class Case:
    """Zones and a batch of (zone, fix) pairs."""

    name: str
    zones: list[Zone]
    zone_idx: IntArray
    lat: FloatArray
    lon: FloatArray


def _offset(lat0: FloatArray, lon0: FloatArray, east_m: FloatArray,
            north_m: FloatArray) -> tuple[FloatArray, FloatArray]:
    lat = lat0 + np.degrees(north_m / EARTH_RADIUS_M)
    return lat, lon0 + np.degrees(east_m / (EARTH_RADIUS_M * np.cos(np.radians(lat0))))


def _star(rng: np.random.Generator, zid: str, lat0: float, lon0: float, size: float,
          n: int) -> Zone:
    """A star-shaped ring: radii vary by vertex, so it is usually concave."""
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = size * rng.uniform(0.4, 1.0, n)
    lat, lon = _offset(np.full(n, lat0), np.full(n, lon0), rad * np.sin(ang), rad * np.cos(ang))
    return Zone(id=zid, kind="polygon", points=list(zip(lat.tolist(), lon.tolist(), strict=True)))


def _home(rng: np.random.Generator) -> tuple[float, float]:
    lat, lon = CITIES[int(rng.integers(len(CITIES)))]
    return lat + float(rng.uniform(-0.3, 0.3)), lon + float(rng.uniform(-0.3, 0.3))


def uniform_case(rng: np.random.Generator, name: str, n_vertices: int, n_zones: int,
                 n_pairs: int) -> Case:
    """One kind of zone; each pair a random zone and a fix within about 2 zone sizes of it."""
    zones, size = [], np.empty(n_zones)
    for i in range(n_zones):
        lat0, lon0 = _home(rng)
        if n_vertices == 0:
            size[i] = float(np.exp(rng.uniform(np.log(50), np.log(2000))))
            zones.append(Zone(id=f"z{i}", kind="circle", center=Point(lat0, lon0),
                              radius_m=size[i]))
        else:
            size[i] = float(np.exp(rng.uniform(np.log(200), np.log(5000))))
            zones.append(_star(rng, f"z{i}", lat0, lon0, size[i], n_vertices))
    idx = rng.integers(0, n_zones, n_pairs).astype(np.intp)
    centre = np.array([_centre(z) for z in zones])
    r = size[idx] * 2 * np.sqrt(rng.uniform(0, 1, n_pairs))
    a = rng.uniform(0, 2 * np.pi, n_pairs)
    lat, lon = _offset(centre[idx, 0], centre[idx, 1], r * np.cos(a), r * np.sin(a))
    return Case(name, zones, idx, lat, lon)


def _centre(z: Zone) -> tuple[float, float]:
    if z.center is not None:
        return z.center.lat, z.center.lon
    assert z.points is not None
    return float(np.mean([p[0] for p in z.points])), float(np.mean([p[1] for p in z.points]))


def mix_case(rng: np.random.Generator, n_wearers: int, n_pairs: int) -> Case:
    """Wearers with 1-3 zones; fixes near home; every fix paired with all its wearer's zones."""
    zones: list[Zone] = []
    lo, hi, home = np.empty(n_wearers, np.intp), np.empty(n_wearers, np.intp), []
    for w in range(n_wearers):
        lat0, lon0 = _home(rng)
        home.append((lat0, lon0))
        lo[w] = len(zones)
        zones.append(Zone(id=f"w{w}-home", kind="circle", center=Point(lat0, lon0),
                          radius_m=float(rng.uniform(100, 500))))
        if rng.random() < 0.6:
            zones.append(_star(rng, f"w{w}-area", lat0 + float(rng.normal(0, 0.003)),
                               lon0 + float(rng.normal(0, 0.003)), float(rng.uniform(300, 3000)),
                               int(rng.integers(4, 17))))
        if rng.random() < 0.3:
            c_lat, c_lon = _offset(np.array(lat0), np.array(lon0), *rng.uniform(-8000, 8000, 2))
            zones.append(Zone(id=f"w{w}-other", kind="circle", center=Point(float(c_lat), float(c_lon)),
                              radius_m=float(rng.uniform(200, 1000))))
        hi[w] = len(zones)
    n_fix = n_pairs * n_wearers // len(zones)
    wearer = rng.integers(0, n_wearers, n_fix)
    far = rng.random(n_fix) < 0.2  # mostly around home, sometimes out and about
    dist = np.where(far, rng.uniform(0, 10_000, n_fix), np.abs(rng.normal(0, 600, n_fix)))
    a = rng.uniform(0, 2 * np.pi, n_fix)
    h = np.array(home)[wearer]
    flat, flon = _offset(h[:, 0], h[:, 1], dist * np.cos(a), dist * np.sin(a))
    counts = hi[wearer] - lo[wearer]
    fix = np.repeat(np.arange(n_fix), counts)
    within = np.arange(len(fix)) - np.repeat(np.cumsum(counts) - counts, counts)
    idx = (np.repeat(lo[wearer], counts) + within).astype(np.intp)
    idx, fix = idx[:n_pairs], fix[:n_pairs]
    return Case("mix", zones, idx, flat[fix], flon[fix])


def loop_baseline(case: Case, n: int) -> Callable[[], list[float]]:
    """The per-pair Python loop over the first ``n`` pairs, geometry prepared beforehand."""
    circles: dict[int, tuple[float, float, float]] = {}
    polygons: dict[int, tuple[float, float, float, float, Any]] = {}
    for i, z in enumerate(case.zones):
        if z.kind == "circle":
            assert z.center is not None and z.radius_m is not None
            circles[i] = (z.center.lat, z.center.lon, z.radius_m)
        else:
            assert z.points is not None
            lat0, lon0 = _centre(z)
            kx = math.radians(1) * EARTH_RADIUS_M * math.cos(math.radians(lat0))
            ky = math.radians(1) * EARTH_RADIUS_M
            ring = [(kx * ((lo - lon0 + 180) % 360 - 180), ky * (la - lat0)) for la, lo in z.points]
            poly = shapely.Polygon(ring)
            shapely.prepare(poly)
            polygons[i] = (lat0, lon0, kx, ky, poly)
    pairs = list(zip(case.zone_idx[:n].tolist(), case.lat[:n].tolist(), case.lon[:n].tolist(),
                     strict=True))

    def run() -> list[float]:
        out = []
        for z, lat, lon in pairs:
            if z in circles:
                c_lat, c_lon, r = circles[z]
                p1, p2 = math.radians(c_lat), math.radians(lat)
                h = (math.sin((p2 - p1) / 2) ** 2
                     + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon - c_lon) / 2) ** 2)
                out.append(2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(h, 1.0))) - r)
            else:
                lat0, lon0, kx, ky, poly = polygons[z]
                pt = shapely.Point(kx * ((lon - lon0 + 180) % 360 - 180), ky * (lat - lat0))
                d = poly.exterior.distance(pt)
                out.append(-d if poly.contains(pt) else d)
        return out

    return run


def _best(f: Callable[[], object], repeat: int) -> float:
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best


def run_case(case: Case, loop_pairs: int, repeat: int) -> dict[str, float]:
    zs = ZoneSet.build(case.zones)
    k = len(case.zone_idx)
    t_vec = _best(lambda: zs.signed_distance_m(case.zone_idx, case.lat, case.lon), repeat)
    vec = zs.signed_distance_m(case.zone_idx, case.lat, case.lon)
    n = min(loop_pairs, k)
    loop = loop_baseline(case, n)
    t_loop = _best(loop, 1)
    ref = np.array(loop())
    radius = np.array([z.radius_m or 0.0 for z in case.zones])[case.zone_idx[:n]]
    clear = np.abs(ref) > 1.0 + 0.006 * (np.abs(ref) + radius)
    disagree = int(np.count_nonzero(clear & ((vec[:n] < 0) != (ref < 0))))
    n_poly = sum(z.kind == "polygon" for z in case.zones)
    return {"zones": len(case.zones), "polygons": n_poly, "pairs": k, "vec": k / t_vec,
            "loop": n / t_loop, "disagree": disagree}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _pin_one_core() -> str:
    """numpy ufuncs are single-threaded already; pinning makes "one core" true for anything."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity)"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to CPU {cpu}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--loop-pairs", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=20240603)
    args = ap.parse_args()
    pinned = _pin_one_core()
    rng = np.random.default_rng(args.seed)
    print(f"# Geofence geometry benchmark, {dt.date.today().isoformat()}\n")
    print(f"{_cpu_name()}, one core ({pinned}); Python {platform.python_version()}, "
          f"numpy {np.__version__}, shapely {shapely.__version__}; seed {args.seed}; "
          f"vectorized: best of {args.repeat}; loop: first {args.loop_pairs:,} pairs.\n")
    print("| case | zones (polygons) | pairs | vectorized checks/s | Python loop checks/s "
          "| speed-up | sign disagreements |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    cases: list[Callable[[], Case]] = [
             lambda: uniform_case(rng, "circles", 0, 10_000, args.pairs),
             lambda: uniform_case(rng, "polygons-8", 8, 10_000, args.pairs),
             lambda: uniform_case(rng, "polygons-32", 32, 10_000, args.pairs),
             lambda: mix_case(rng, 10_000, args.pairs)]
    for make in cases:
        case = make()
        r = run_case(case, args.loop_pairs, args.repeat)
        print(f"| {case.name} | {r['zones']:,} ({r['polygons']:,}) | {r['pairs']:,} "
              f"| {r['vec'] / 1e6:.2f} M | {r['loop'] / 1e6:.3f} M | {r['vec'] / r['loop']:.0f}x "
              f"| {r['disagree']} |", flush=True)
    print("\nTarget: >= 5 M fix-zone checks/s on one core. Sign disagreements: fixes clearly off "
          "the boundary (see the module docstring) put on different sides (expected 0).")


if __name__ == "__main__":
    main()
