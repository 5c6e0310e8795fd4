"""Supervision detectors: battery, wear, heart rate, connectivity and inactivity.

Each is a small rule over a stream (sorted by device and time, late items removed by the engine)
built from the primitives of :mod:`detectors.sequences`:

* ``low_battery``: a latch set below ``low_battery_pct`` and re-armed only above
  ``rearm_battery_pct``, so one discharge raises one event however the reading wobbles;
* ``device_removed`` / ``device_worn``: a latch on ``worn``;
* ``heart_rate``: a run of ``heart_rate_readings`` consecutive readings outside the limits sets a
  latch that a normal reading resets: one spike is never enough;
* ``offline`` / ``online`` and ``inactivity`` need a timer, not a reading: they are evaluated on
  the engine's clock (:func:`offline_due`, :func:`inactivity_due`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from detectors.localtime import in_window
from detectors.params import SupervisionParams
from detectors.sequences import BoolArray, IntArray, Latch, Runs, latch, runs

FloatArray = npt.NDArray[np.float64]


def step_battery(seg_start: BoolArray, pct: FloatArray, carried_low: BoolArray,
                 params: SupervisionParams) -> Latch:
    """Low-battery latch per device; ``rising`` items raise ``low_battery``."""
    return latch(seg_start, pct < params.low_battery_pct, pct >= params.rearm_battery_pct,
                 carried_low)


def step_wear(seg_start: BoolArray, worn: BoolArray, carried_removed: BoolArray) -> Latch:
    """Removal latch; ``rising`` raises ``device_removed``, ``falling`` raises ``device_worn``."""
    return latch(seg_start, ~worn, worn, carried_removed)


class HeartRateStep(NamedTuple):
    """Abnormal-run lengths and the alarm latch, per reading."""

    run: Runs
    alarm: Latch
    high: BoolArray
    low: BoolArray


def step_heart_rate(seg_start: BoolArray, ts: IntArray, bpm: FloatArray, carried_run: IntArray,
                    carried_start: IntArray, carried_alarm: BoolArray,
                    params: SupervisionParams) -> HeartRateStep:
    """Sustained abnormal heart rate: ``heart_rate_readings`` in a row outside the limits."""
    high = bpm > params.heart_rate_high_bpm
    low = bpm < params.heart_rate_low_bpm
    abnormal = high | low
    r = runs(seg_start, abnormal, ts, carried_run, carried_start)
    alarm = latch(seg_start, r.length >= params.heart_rate_readings, ~abnormal, carried_alarm)
    return HeartRateStep(r, alarm, high, low)


def offline_due(seen_ms: IntArray, after_ms: IntArray, offline: BoolArray,
                now_ms: int) -> BoolArray:
    """Devices seen at least once, not yet offline, silent for longer than their period."""
    return (seen_ms >= 0) & ~offline & (now_ms - seen_ms > after_ms)


def inactivity_due(active_ms: IntArray, has_signal: BoolArray, inactive: BoolArray,
                   offline: BoolArray, minute_now: IntArray, now_ms: int,
                   params: SupervisionParams, daytime: tuple[int, int]) -> BoolArray:
    """Devices that report activity (steps or motion), are online, and have shown none for
    ``inactivity_after_s``, checked only in the daytime window of their local time."""
    day = in_window(minute_now, daytime[0], daytime[1])
    quiet = now_ms - active_ms > params.inactivity_after_s * 1000
    return has_signal & ~inactive & ~offline & (active_ms >= 0) & quiet & day


def motion_spread_g(lengths: IntArray, magnitude: FloatArray) -> FloatArray:
    """Standard deviation of the acceleration magnitude (g) of each accelerometer chunk.

    Parameters
    ----------
    lengths : (c,) int
        Samples per chunk, all ≥ 1; ``magnitude`` holds the chunks back to back.
    """
    starts = np.cumsum(lengths) - lengths
    n = lengths.astype(np.float64)
    s1 = np.add.reduceat(magnitude, starts)
    s2 = np.add.reduceat(magnitude * magnitude, starts)
    var = np.maximum(s2 / n - (s1 / n) ** 2, 0.0)
    return np.sqrt(var)
