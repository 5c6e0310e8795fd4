"""Anti-wandering: geofence exits and returns over a batch of fixes of many devices at once.

Rules (parameters in :class:`~detectors.params.GeofenceParams`):

* a fix is *outside* when it lies outside every zone active at its local time by more than
  ``max(margin_m, accuracy_m)``; a fix with a 2 km cell-tower accuracy can therefore not declare an
  exit from a 200 m home zone, which is right: it does not know;
* it is *inside* when some active zone holds it by at least ``return_margin_m``;
* an exit is declared at the fix that completes ``exit_fixes`` consecutive outside fixes, or that
  has been outside for ``exit_after_s`` since the first of them, whichever comes first;
* a return is declared at the first inside fix after an exit;
* anything else (in the band between the two, or no zone active at that hour) changes nothing.

The band between "outside by the margin" and "inside by the return margin" is the hysteresis
that keeps GPS jitter along a boundary from flapping. Fixes come in sorted by (device, ts) with late
and duplicate fixes already removed by the engine: wandering is about where a person is now.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from detectors.geo import ZoneSet
from detectors.localtime import in_window
from detectors.params import GeofenceParams
from detectors.sequences import BoolArray, IntArray, latch, runs, segment_starts

FloatArray = npt.NDArray[np.float64]


class ZoneDistance(NamedTuple):
    """Per fix: signed distance to the nearest active zone (``+inf`` when none is active)."""

    distance_m: FloatArray
    nearest: IntArray     # index into the ZoneSet, -1 when no zone is active
    watched: BoolArray    # some zone was active


def nearest_active_zone(zones: ZoneSet, zone_lo: IntArray, zone_hi: IntArray, minute: IntArray,
                        window_start: IntArray, window_end: IntArray,
                        lat: FloatArray, lon: FloatArray) -> ZoneDistance:
    """Signed distance (m, negative inside) from each fix to its nearest active zone.

    Parameters
    ----------
    zone_lo, zone_hi : (n,) int
        The fix's wearer owns zones ``zone_lo[i]:zone_hi[i]`` of ``zones``.
    minute : (n,) int
        Local minute of day of each fix, in its wearer's time zone.
    window_start, window_end : (z,) int
        Active window of every zone in minutes of day (equal: always active).
    lat, lon : (n,) float
        Fixes in degrees.
    """
    n = len(lat)
    counts = (zone_hi - zone_lo).astype(np.int64)
    pair_fix = np.repeat(np.arange(n, dtype=np.int64), counts)
    offsets = np.cumsum(counts) - counts
    within = np.arange(len(pair_fix), dtype=np.int64) - np.repeat(offsets, counts)
    pair_zone = np.repeat(zone_lo.astype(np.int64), counts) + within
    active = in_window(minute[pair_fix], window_start[pair_zone], window_end[pair_zone])
    pair_fix, pair_zone = pair_fix[active], pair_zone[active]
    dist = zones.signed_distance_m(pair_zone, lat[pair_fix], lon[pair_fix])
    best = np.full(n, np.inf)
    nearest = np.full(n, -1, dtype=np.int64)
    if len(dist):
        # Sort pairs by (fix, distance): the first pair of each fix is its nearest zone.
        order = np.lexsort((dist, pair_fix))
        pf = pair_fix[order]
        first = segment_starts(pf)
        best[pf[first]] = dist[order][first]
        nearest[pf[first]] = pair_zone[order][first]
    return ZoneDistance(best, nearest, nearest >= 0)


class GeofenceState(NamedTuple):
    """Per-device geofence state (arrays aligned with the devices they describe)."""

    run: IntArray        # consecutive outside fixes so far
    run_start: IntArray  # ts of the first of them (-1: none)
    exited: BoolArray    # an exit has been declared and no return since


class GeofenceStep(NamedTuple):
    """Outcome of one batch: per fix flags, and the state after the batch per device."""

    exit: BoolArray
    ret: BoolArray
    outside: BoolArray
    state_at: GeofenceState   # state after each fix; the last fix of a device is its new state


def step_geofence(seg_start: BoolArray, ts: IntArray, zd: ZoneDistance, accuracy_m: FloatArray,
                  carried: GeofenceState, params: GeofenceParams) -> GeofenceStep:
    """Run the exit/return state machine over fixes sorted by (device, ts).

    ``carried`` holds, per fix, the state its device had before this batch.
    """
    threshold = np.maximum(params.margin_m, np.nan_to_num(accuracy_m, nan=0.0))
    outside = zd.watched & (zd.distance_m > threshold)
    inside = zd.watched & (zd.distance_m <= -params.return_margin_m)
    r = runs(seg_start, outside, ts, carried.run, carried.run_start)
    long_enough = (r.start_ts >= 0) & (ts - r.start_ts >= params.exit_after_s * 1000)
    exit_cond = outside & ((r.length >= params.exit_fixes) | long_enough)
    state = latch(seg_start, exit_cond, inside, carried.exited)
    return GeofenceStep(state.rising, state.falling, outside,
                        GeofenceState(r.length, r.start_ts, state.state))
