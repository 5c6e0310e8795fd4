"""Accelerometer fall detector over streamed ``accel`` chunks of many devices (issue #3).

One :meth:`AccelFallDetector.feed` call takes a whole ingest batch. Vectorized over all its
samples at once: late and repeated samples are dropped; each device's stream is put on a fixed
grid anchored to absolute time (linear interpolation by the real timestamps, plus the peak of the
raw samples in each grid cell so a short impact at 200 Hz is not lost); gaps longer than
``max_gap_s`` break the stream instead of being interpolated. Only devices with an impact
candidate ("hot") get per-device work: their grid is joined to their stored tail and the features
of :mod:`detectors.fall_features` are evaluated around each candidate.

State per device is fixed in size: the last raw sample, a ring buffer of the last
``before_start_s + after_end_s`` of grid samples (4 KB at the defaults), and a few scalars. A grid
sample is decided exactly once, when its after-window is complete, so a fall that straddles
messages is seen whole and raised once whatever the split. Candidates cut off by a break, by
:meth:`~AccelFallDetector.expire` (the device went silent) or by eviction are decided on the
evidence available. Pure: time comes only from the data and ``now_ms``; no I/O, no logging.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from detectors.fall_features import (
    F32,
    I64,
    ImpactFeatures,
    Windows,
    decide,
    impact_features,
    local_peaks,
    resample,
)

#: Sort key ``(row << _SHIFT) + t``: device first, then time; needs 0 <= t_ms < 2**43 (year 2248).
_SHIFT: Final = 43
_NEVER: Final = -(2**62)
_COUNTERS: Final = ("chunks", "samples", "late_samples_dropped", "gaps", "grid_samples",
                    "candidates", "falls", "suppressed", "expired", "evicted")


@dataclass(frozen=True, kw_only=True, slots=True)
class FallParams:
    """Thresholds and windows of the fall detector; why each default is what it is.

    None is fitted to a data set; ``docs/fall-detector.md`` gives the sources.
    """

    #: Resampling grid step (50 Hz): a fall's phases last 0.1-1 s; 50 Hz was the best trade-off
    #: of sampling rates for waist/chest/pocket detection in Sensors 2019 (PMC6603555), and lies
    #: inside the 20-200 Hz devices send.
    grid_ms: int = 20
    #: Gaps up to this are bridged by interpolation (Bluetooth drops of a few packets); longer
    #: ones break the stream. 1 s is the shortest feature window, so a bridged window is still
    #: mostly real samples.
    max_gap_s: float = 1.0
    #: Impact: magnitude at least 2 g, the order of trunk impact thresholds in threshold detectors
    #: (Kangas et al. 2008). Walking stays below ~1.5-2 g at the trunk; a fall onto a floor gives
    #: 3-6 g. Sitting down hard also reaches it: the impact alone never raises an alarm.
    impact_g: float = 2.0
    #: Free fall: magnitude below 0.6 g, about the trunk lower fall threshold of Bourke et al.
    #: (2007) and the start-of-fall threshold of Kangas et al. (2008); a body partly supported
    #: while falling does not reach the 0 g of true free fall.
    freefall_g: float = 0.6
    #: Descent speed: a body partly supported on the way down (grabbing, sliding off a chair)
    #: may never dip to ``freefall_g``, but still gains speed while under 1 g. 1.0 m/s lies
    #: between the trunk's speed when sitting down or lying down on purpose (well under 1 m/s)
    #: and the 1.3 m/s vertical velocity Bourke et al. (Med Eng Phys 2008) found every fall of
    #: theirs exceed before impact (2-3 m/s at impact from standing). It counts as the same
    #: supporting feature as a free fall.
    descent_mps: float = 1.0
    #: Look for free fall this long before the impact: a fall from standing takes 0.5-1 s.
    freefall_window_s: float = 1.0
    #: Orientation change: the gravity direction turned at least 45 deg, halfway from upright
    #: (0 deg) to lying (90 deg); above the pelvis tilt of sitting (<= 30 deg) and the 34 deg trunk
    #: (0.59 rad) rotation Bourke and Lyons (2008) require during the fall itself.
    orientation_deg: float = 45.0
    #: Posture before the fall: mean acceleration over [-2 s, -1 s], before the descent begins.
    before_start_s: float = 2.0
    before_end_s: float = 1.0
    #: Posture and stillness after: [+1 s, +3 s], once bounces have settled.
    after_start_s: float = 1.0
    after_end_s: float = 3.0
    #: Still: RMS deviation of the acceleration vector below 0.1 g, under the 0.2-0.3 g the trunk
    #: shows in walking and above sensor noise and breathing (<= 0.02 g).
    still_std_g: float = 0.1
    #: Peaks closer than this to a larger one are the same impact (bounces, second contact).
    peak_window_s: float = 1.0
    #: One fall, one alarm: no new fall from a device this soon after its last one.
    refractory_s: float = 30.0
    #: A window with less data than this (after a break or at a stream's start) is unknown.
    min_window_s: float = 0.2
    #: A chunk that starts more than ``max_gap_s`` but at most ``reorder_gap_s`` after the
    #: device's last sample may follow a delayed message: it and the device's later chunks are
    #: held back up to ``reorder_hold_s`` (arrival time) for the missing one
    #: (:mod:`detectors.reorder`). 10 s is a few missing 1 s messages; a longer silence is a
    #: stream restarting, which is not held. 30 s covers an MQTT retry after a reconnect.
    reorder_gap_s: float = 10.0
    reorder_hold_s: float = 30.0
    #: :meth:`AccelFallDetector.expire` waits this long past a candidate's after-window for data
    #: that is merely late (1 s messages, gateway batching, MQTT retries) before deciding without.
    expire_grace_s: float = 5.0
    #: The descent speed ignores magnitude deviations within this of the device's own 1 g. A
    #: trunk turning about a horizontal axis (rolling over in bed: ~90 deg in about a second,
    #: peaking near 3 rad/s) carries a waist sensor 0.1-0.15 m from the axis through a centripetal
    #: acceleration w^2 r of up to 1.35 m/s^2 = 0.14 g, and a tangential one of the same order,
    #: without descending at all. A falling trunk is far below the band for most of its descent
    #: (0.1-0.6 g in free fall, 0.6-0.8 g partly supported).
    rotation_band_g: float = 0.15
    #: A hard impact: 3 g, the lower end of trunk impacts of falls onto a floor (3-6 g, Kangas et
    #: al. 2008). Landing on a mattress, a bed or a chair stays under it: the bed turns and fast
    #: lie-downs that raised false alarms on another dataset peaked at 2.0-2.8 g.
    hard_impact_g: float = 3.0
    #: Lying: the trunk tilted at least 60 deg from the device's learned upright (lying is
    #: 80-90 deg; 60 leaves room for a pillow or a raised back; sitting tilts the pelvis 15-30 deg).
    lying_deg: float = 60.0
    #: A cut-off impact comes alone when no other peak reached ``impact_g`` in
    #: [-rhythm_window_s, -rhythm_gap_s]: jogging (2.5-3 strides a second) and hopping repeat their
    #: impacts every 0.3-0.5 s, walking stays under 2 g; 0.3 s skips the impact's own onset.
    rhythm_window_s: float = 2.0
    rhythm_gap_s: float = 0.3
    #: Learning each device's upright direction from walking (pendants and clips are worn at any
    #: angle). A 1 s window is walking-like when the acceleration vector's spread is 0.1-0.6 g
    #: (the trunk's 0.2-0.35 g in gait, docs/fall-detector.md), its mean is 1 g within 0.15 g and
    #: nothing reached ``impact_g``; it counts once such windows have pointed the same way (within
    #: ``walk_steady_deg``) for ``walk_min_s`` in a row, so a roll in bed or a transition, which
    #: turn, never teach it. Standing still is not used: lying still looks the same.
    walk_std_g: tuple[float, float] = (0.1, 0.6)
    walk_min_s: float = 4.0
    walk_steady_deg: float = 20.0
    #: The learned axis is used after this much walking, and follows a re-clipped device with a
    #: memory of ``upright_memory_s`` of walking.
    upright_min_s: float = 10.0
    upright_memory_s: float = 120.0

    def __post_init__(self) -> None:
        if not (self.grid_ms > 0 and self.before_start_s > self.before_end_s >= 0
                and self.after_end_s > self.after_start_s >= 0 and self.max_gap_s > 0
                and self.reorder_gap_s >= self.max_gap_s and self.reorder_hold_s >= 0
                and self.before_start_s >= self.rhythm_window_s > self.rhythm_gap_s >= 0
                and self.upright_memory_s >= self.upright_min_s > 0):
            raise ValueError(f"inconsistent fall detector windows: {self}")

    def windows(self) -> Windows:
        """The feature windows in grid samples."""
        def n(s: float) -> int:
            return max(1, round(s * 1000 / self.grid_ms))
        return Windows(peak=n(self.peak_window_s), freefall=n(self.freefall_window_s),
                       before=(n(self.before_start_s), n(self.before_end_s)),
                       after=(n(self.after_start_s), n(self.after_end_s)),
                       min_count=n(self.min_window_s))


class AccelChunk(NamedTuple):
    """One device's samples: ``t_ms`` (n,) int64 Unix ms, non-decreasing; ``xyz`` (n, 3) in g."""

    device_id: str
    t_ms: npt.NDArray[np.int64]
    xyz: npt.NDArray[np.floating[Any]]


class FallHit(NamedTuple):
    """A detected fall: impact time (Unix ms), confidence (fraction of the four features that
    agreed) and the feature values (``peak_g``, ``freefall_min_g``, ``descent_mps``,
    ``orientation_change_deg``, ``post_still_std_g``, ``rate_hz``, ``partial``; unknown features
    are left out)."""

    device_id: str
    ts: int
    confidence: float
    evidence: dict[str, float]


def chunk_times(ts_ms: int, rate_hz: float, n: int) -> npt.NDArray[np.int64]:
    """Per-sample times (n,) int64 of a wire chunk: ``ts_ms`` plus ``k / rate_hz``, rounded to ms."""
    offsets: npt.NDArray[np.int64] = np.rint(np.arange(n) * (1000.0 / rate_hz)).astype(np.int64)
    return offsets + ts_ms


class _Grid(NamedTuple):
    """A batch's new grid samples, sorted by (row, t), and its devices."""

    row: I64        # (m,) device row
    t: I64          # (m,) grid time, ms
    xyz: F32        # (m, 3) interpolated acceleration, g
    hi: F32         # (m,) peak magnitude in the cell, g
    seg: I64        # (m,) segment number: changes at every break
    di: I64         # (m,) index of the device in ``dev``
    dev: I64        # (d,) rows with fresh samples, ascending
    seg_first: I64  # (d,) segment number of each device's stored tail
    seg_last: I64   # (d,) segment number of each device's last fresh sample


class AccelFallDetector:
    """Streaming fall detection for many devices; see the module docstring."""

    def __init__(self, *, params: FallParams = FallParams(), max_devices: int = 100_000) -> None:
        self.params = params
        self._w = params.windows()
        self._rhythm = (round(params.rhythm_window_s * 1000 / params.grid_ms),
                        round(params.rhythm_gap_s * 1000 / params.grid_ms))
        self._g = params.grid_ms
        self._len = self._w.back + self._w.ahead  # tail: back-window of the oldest undecided
        self._max = max_devices
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._free: list[int] = []
        self._calls = 0
        self._stats = dict.fromkeys(_COUNTERS, 0)
        self._fields: dict[str, tuple[Any, Any, tuple[int, ...]]] = {
            "last_t": (np.int64, -1, ()), "last_xyz": (np.float32, 0.0, (3,)),
            "pool": (np.float32, 0.0, ()), "tail": (np.float32, 0.0, (self._len, 4)),
            "head": (np.int64, 0, ()), "tail_n": (np.int64, 0, ()), "tail_end": (np.int64, 0, ()),
            "eval_t": (np.int64, -1, ()), "pending": (np.int64, -1, ()),
            "last_hit": (np.int64, _NEVER, ()), "fed": (np.int64, 0, ()),
            "rate": (np.float32, 0.0, ()),
            # The learned upright direction and the walking that teaches it.
            "up": (np.float32, 0.0, (3,)), "up_s": (np.float32, 0.0, ()),
            "walk_dir": (np.float32, 0.0, (3,)), "walk_s": (np.float32, 0.0, ()),
        }
        self._arrays: dict[str, npt.NDArray[Any]] = {
            k: np.full((0, *shape), init, dtype) for k, (dtype, init, shape) in self._fields.items()}

    # -- public API ---------------------------------------------------------------------------

    def feed(self, chunks: Sequence[AccelChunk]) -> list[FallHit]:
        """Process one batch of chunks of any devices; return the falls it completes.

        Chunks of one device must come in time order across calls; samples at or before the
        device's latest processed sample (late or repeated delivery) are dropped and counted.
        """
        chunks = [c for c in chunks if len(c.t_ms)]
        self._stats["chunks"] += len(chunks)
        if not chunks:
            return []
        self._calls += 1
        rows, hits = self._admit(chunks)
        a = self._arrays
        a["fed"][rows] = self._calls
        t0 = np.fromiter((c.t_ms[0] for c in chunks), np.int64, len(chunks))
        order = np.lexsort((t0, rows)).tolist()
        t = np.concatenate([chunks[i].t_ms for i in order]).astype(np.int64, copy=False)
        xyz = np.concatenate([chunks[i].xyz for i in order], dtype=np.float32)
        if xyz.shape != (len(t), 3):
            raise ValueError(f"accel chunks: {len(t)} times but xyz of shape {xyz.shape}")
        lengths = np.fromiter((len(chunks[i].t_ms) for i in order), np.int64, len(order))
        self._stats["samples"] += len(t)
        grid = self._ingest(np.repeat(rows[order], lengths), t, xyz)
        if grid is None:
            return hits
        self._learn_upright(grid)
        hot = np.union1d(grid.row[grid.hi >= self.params.impact_g],
                         grid.dev[a["pending"][grid.dev] >= 0])
        if len(hot):
            lut = np.zeros(len(a["fed"]), dtype=bool)
            lut[hot] = True
            sel = lut[grid.row]
            seg_first = grid.seg_first[np.searchsorted(grid.dev, hot)]
            hits += self._judge(*self._joined(hot, seg_first, grid, sel), closed_all=False)
        self._store(grid)
        return hits

    def expire(self, now_ms: int) -> list[FallHit]:
        """Decide candidates whose after-window should have completed ``expire_grace_s`` ago.

        The device stopped sending (it may have broken in the fall), so the candidate is decided
        on the evidence available, leaning towards the alarm (see :func:`decide`).
        """
        p = self.params
        wait_ms = (self._w.ahead * self._g) + int(p.expire_grace_s * 1000)
        pending = self._arrays["pending"]
        rows = np.flatnonzero((pending >= 0) & (pending + wait_ms <= now_ms))
        self._stats["expired"] += len(rows)
        return self._decide_rows(rows)

    def last_sample_ms(self, device_id: str) -> int:
        """Time of the device's latest sample read so far (Unix ms), -1 if none."""
        row = self._rows.get(device_id)
        return -1 if row is None else int(self._arrays["last_t"][row])

    def forget(self, device_id: str) -> None:
        """Drop a device's state, pending candidates included (it is gone, not silent)."""
        row = self._rows.pop(device_id, None)
        if row is None:
            return
        for k, (_, init, _) in self._fields.items():
            self._arrays[k][row] = init
        self._ids[row] = ""
        self._free.append(row)

    @property
    def stats(self) -> Mapping[str, int]:
        """Counters since creation, plus ``devices`` (currently tracked)."""
        return MappingProxyType({**self._stats, "devices": len(self._rows)})

    # -- devices --------------------------------------------------------------------------------

    def _admit(self, chunks: list[AccelChunk]) -> tuple[I64, list[FallHit]]:
        """Rows of the chunks' devices, allocating new ones and evicting beyond ``max_devices``."""
        ids = [c.device_id for c in chunks]
        new = [d for d in dict.fromkeys(ids) if d not in self._rows]
        hits: list[FallHit] = []
        over = len(self._rows) + len(new) - self._max
        if over > 0:
            hits = self._evict(over, set(ids))
        for d in new:
            self._rows[d] = self._alloc(d)
        return np.fromiter((self._rows[d] for d in ids), np.int64, len(ids)), hits

    def _alloc(self, device_id: str) -> int:
        if self._free:
            row = self._free.pop()
            self._ids[row] = device_id
            return row
        row = len(self._ids)
        cap = len(self._arrays["fed"])
        if row == cap:
            new_cap = min(max(16, 2 * cap), self._max)
            for k, (dtype, init, shape) in self._fields.items():
                grown = np.full((new_cap, *shape), init, dtype)
                grown[:cap] = self._arrays[k]
                self._arrays[k] = grown
        self._ids.append(device_id)
        return row

    def _evict(self, over: int, keep: set[str]) -> list[FallHit]:
        """Forget the ``over`` least recently fed devices not in this batch; their pending
        candidates are decided first (an alarm is never dropped)."""
        live = np.fromiter(self._rows.values(), np.int64, len(self._rows))
        fed = self._arrays["fed"][live].astype(np.float64)
        fed[np.isin(live, [self._rows[d] for d in keep if d in self._rows])] = np.inf
        if over > np.count_nonzero(np.isfinite(fed)):
            raise ValueError(f"one batch holds more than max_devices={self._max} devices")
        victims = live[np.argpartition(fed, over - 1)[:over]]
        hits = self._decide_rows(victims[self._arrays["pending"][victims] >= 0])
        for v in victims.tolist():
            self.forget(self._ids[v])
        self._stats["evicted"] += over
        return hits

    # -- streaming ------------------------------------------------------------------------------

    def _ingest(self, r: I64, t: I64, xyz: F32) -> _Grid | None:
        """Drop stale samples, resample onto the grid, pool raw peaks; update the raw state."""
        a, g = self._arrays, self._g
        key = (r << _SHIFT) + t
        fresh = t > a["last_t"][r]
        fresh[1:] &= key[1:] > np.maximum.accumulate(key)[:-1]
        stale = len(t) - int(np.count_nonzero(fresh))
        if stale:
            self._stats["late_samples_dropped"] += stale
            r, t, xyz = r[fresh], t[fresh], xyz[fresh]
        n = len(t)
        if n == 0:
            return None
        first = np.ones(n, dtype=bool)
        first[1:] = r[1:] != r[:-1]
        last = np.ones(n, dtype=bool)
        last[:-1] = first[1:]
        dev = r[first]
        t_prev, xyz_prev = np.empty_like(t), np.empty_like(xyz)
        t_prev[1:], xyz_prev[1:] = t[:-1], xyz[:-1]
        t_prev[first], xyz_prev[first] = a["last_t"][dev], a["last_xyz"][dev]
        brk = (t_prev < 0) | (t - t_prev > round(self.params.max_gap_s * 1000))
        self._stats["gaps"] += int(np.count_nonzero(brk & (t_prev >= 0)))
        # A stream (re)starts at a break: a zero-length pair yields the break sample only if it
        # falls on the grid.
        t_prev[brk], xyz_prev[brk] = t[brk] - 1, xyz[brk]
        pair, gt, v = resample(t, t_prev, xyz, xyz_prev, grid_ms=g)
        gr = r[pair]
        hi = np.sqrt(np.einsum("ij,ij->i", v, v))
        cont = np.flatnonzero(first & ~brk)
        old_last = a["last_t"][r[cont]]
        a["last_t"][dev], a["last_xyz"][dev] = t[last], xyz[last]
        self._pool(r, t, t // g - t_prev // g, xyz, cont, old_last, dev, gr, gt, hi)
        span = t[last] - t[first]
        counts = np.diff(np.append(np.flatnonzero(first), n))
        a["rate"][dev[span > 0]] = (counts[span > 0] - 1) * 1000.0 / span[span > 0]
        self._stats["grid_samples"] += len(gt)
        seg = np.cumsum(brk, dtype=np.int64)
        di = np.cumsum(first, dtype=np.int64) - 1
        return _Grid(gr, gt, v, hi, seg[pair], di[pair], dev, seg[first] - brk[first], seg[last])

    def _learn_upright(self, grid: _Grid) -> None:
        """Update each device's upright direction from this batch's walking (see ``FallParams``):
        per 1 s window of the grid, vectorized over devices; a walking run carries across
        batches."""
        p, a = self.params, self._arrays
        if not len(grid.t):  # samples that completed no grid point yet
            return
        # 1 s windows counted from each device's first new sample in the batch, not from
        # whole seconds: a device's 1 s messages start at any phase, and windows cut at whole
        # seconds would halve every one of them (too short to judge, breaking every run).
        dev_first = np.ones(len(grid.t), dtype=bool)
        dev_first[1:] = grid.row[1:] != grid.row[:-1]
        win = (grid.t - grid.t[np.flatnonzero(dev_first)][np.cumsum(dev_first) - 1]) // 1000
        new = dev_first.copy()
        new[1:] |= (win[1:] != win[:-1]) | (grid.seg[1:] != grid.seg[:-1])
        starts = np.flatnonzero(new)
        gid = np.cumsum(new) - 1
        ng = len(starts)
        x = grid.xyz.astype(np.float64)
        cnt = np.bincount(gid, minlength=ng).astype(np.float64)
        mean = np.stack([np.bincount(gid, weights=x[:, k], minlength=ng) for k in range(3)],
                        axis=1) / cnt[:, None]
        sq = np.bincount(gid, weights=np.einsum("ij,ij->i", x, x), minlength=ng) / cnt
        norm = np.linalg.norm(mean, axis=1)
        spread = np.sqrt(np.maximum(sq - norm * norm, 0.0))
        top = np.maximum.reduceat(grid.hi, starts)
        dur = cnt * (self._g / 1000)
        lo, hi = p.walk_std_g
        walk = ((dur >= 0.5) & (spread >= lo) & (spread <= hi) & (np.abs(norm - 1.0) <= 0.15)
                & (top < p.impact_g))
        direction = mean / np.where(norm > 0, norm, 1.0)[:, None]
        grow = grid.row[starts]
        first = np.ones(ng, dtype=bool)
        first[1:] = grow[1:] != grow[:-1]
        prev_dir = np.empty_like(direction)
        prev_dir[1:] = direction[:-1]
        prev_dir[first] = a["walk_dir"][grow[first]]
        prev_walk = np.empty(ng, dtype=bool)
        prev_walk[1:] = walk[:-1]
        prev_walk[first] = a["walk_s"][grow[first]] > 0
        steady = walk & prev_walk & (np.einsum("ij,ij->i", direction, prev_dir)
                                     >= np.cos(np.radians(p.walk_steady_deg)))
        # Length of the walking run each window ends: a segmented cumulative sum that restarts
        # at every window not continuing a run (the first of a device continues its stored run).
        add = np.where(walk, dur, 0.0) + np.where(first & steady, a["walk_s"][grow], 0.0)
        total = np.cumsum(add)
        begin = np.maximum.accumulate(np.where(~steady | first, np.arange(ng), 0))
        run = total - total[begin] + add[begin]
        ends = np.append(np.flatnonzero(first)[1:], ng) - 1
        a["walk_s"][grow[ends]] = run[ends]
        a["walk_dir"][grow[ends]] = direction[ends]
        learn = walk & (run >= p.walk_min_s)
        if not learn.any():
            return
        dev_of = np.cumsum(first) - 1
        nd = int(dev_of[-1]) + 1
        taught = np.bincount(dev_of[learn], weights=dur[learn], minlength=nd)
        pull = np.stack([np.bincount(dev_of[learn], weights=(direction * dur[:, None])[learn, k],
                                     minlength=nd) for k in range(3)], axis=1)
        rows = grow[np.flatnonzero(first)]
        has = taught > 0
        rows, taught, pull = rows[has], taught[has], pull[has]
        old_w = np.minimum(a["up_s"][rows], np.maximum(p.upright_memory_s - taught, 0.0))
        up = a["up"][rows] * old_w[:, None] + pull
        a["up"][rows] = up / np.linalg.norm(up, axis=1, keepdims=True)
        a["up_s"][rows] = np.minimum(a["up_s"][rows] + taught, p.upright_memory_s)

    def _pool(self, r: I64, t: I64, cnt: I64, xyz: F32, cont: I64, old_last: I64, dev: I64,
              gr: I64, gt: I64, hi: F32) -> None:
        """Raise ``hi`` of each grid point to the peak raw magnitude in its cell (g - grid, g].

        A sample's cell closes at the first grid point after the pair ending at it (the pair's
        last point if the sample is on the grid). A cell still open at the end of a batch carries
        over in ``pool`` and re-enters the next batch as a virtual sample at the device's
        previous last time (``cont``: indices of first samples that continue a stream).
        """
        a, g, m = self._arrays, self._g, len(gt)
        ends = np.cumsum(cnt)
        rc = r[cont]
        q_r = np.concatenate((r, rc))
        q_cell = np.concatenate((-(-t // g) * g, -(-old_last // g) * g))
        q_idx = np.concatenate((ends - (t % g == 0), ends[cont] - cnt[cont]))
        q_mag = np.concatenate((np.sqrt(np.einsum("ij,ij->i", xyz, xyz)), a["pool"][rc]))
        found = q_idx < m
        found[found] &= (gt[q_idx[found]] == q_cell[found]) & (gr[q_idx[found]] == q_r[found])
        np.maximum.at(hi, q_idx[found], q_mag[found])
        a["pool"][dev] = 0.0
        carry = ~found & (q_cell > a["last_t"][q_r])
        np.maximum.at(a["pool"], q_r[carry], q_mag[carry])

    def _tail(self, rows: I64) -> tuple[I64, I64, F32, F32]:
        """Stored grid tails of ``rows``, oldest first: row, t, xyz, hi (flattened)."""
        a, n = self._arrays, self._len
        tn = a["tail_n"][rows]
        k = np.arange(n)
        valid = k[None, :] >= (n - tn)[:, None]
        pos = (a["head"][rows][:, None] - n + k[None, :]) % n
        vals = a["tail"][rows[:, None], pos][valid]
        t = (a["tail_end"][rows][:, None] - (n - 1 - k[None, :]) * self._g)[valid]
        return np.repeat(rows, tn), t, vals[:, :3], vals[:, 3]

    def _joined(self, rows: I64, seg_first: I64, grid: _Grid | None,
                sel: npt.NDArray[np.bool_] | None) -> tuple[I64, I64, F32, F32, I64]:
        """Tail plus this batch's grid samples of ``rows``, sorted by (row, t), with segments."""
        tr, tt, tx, th = self._tail(rows)
        ts = np.repeat(seg_first, self._arrays["tail_n"][rows])
        if grid is not None and sel is not None:
            tr, tt = np.concatenate((tr, grid.row[sel])), np.concatenate((tt, grid.t[sel]))
            tx, th = np.concatenate((tx, grid.xyz[sel])), np.concatenate((th, grid.hi[sel]))
            ts = np.concatenate((ts, grid.seg[sel]))
        o = np.lexsort((tt, tr))
        return tr[o], tt[o], tx[o], th[o], ts[o]

    def _judge(self, row: I64, t: I64, xyz: F32, hi: F32, seg: I64, *,
               closed_all: bool) -> list[FallHit]:
        """Decide every undecided grid sample whose after-window is complete or cut off."""
        a, p, ahead = self._arrays, self.params, self._w.ahead
        n = len(t)
        new_dev = np.ones(n, dtype=bool)
        new_dev[1:] = row[1:] != row[:-1]
        start = new_dev.copy()
        start[1:] |= seg[1:] != seg[:-1]
        starts = np.flatnonzero(start)
        sid = np.cumsum(start) - 1
        seg_lo, seg_hi = starts[sid], np.append(starts[1:] - 1, n - 1)[sid]
        dev_starts = np.flatnonzero(new_dev)
        dev_hi = np.append(dev_starts[1:] - 1, n - 1)[np.cumsum(new_dev) - 1]
        idx = np.arange(n)
        closed = closed_all | (seg_hi < dev_hi)
        decided = (t > a["eval_t"][row]) & (closed | (idx + ahead <= seg_hi))
        above = hi >= p.impact_g
        c = np.flatnonzero(decided & above)
        c = c[local_peaks(hi, c, seg_lo[c], seg_hi[c], self._w.peak)]
        self._stats["candidates"] += len(c)
        hits: list[FallHit] = []
        if len(c):
            up = a["up"][row[c]].astype(np.float64)
            up[a["up_s"][row[c]] < p.upright_min_s] = np.nan
            f = impact_features(hi, xyz, c, seg_lo[c], seg_hi[c], self._w,
                                grid_s=p.grid_ms / 1000, up=up,
                                rotation_band_g=p.rotation_band_g, rhythm=self._rhythm)
            partial = c + ahead > seg_hi[c]
            alarm, conf = decide(f, partial, impact_g=p.impact_g, freefall_g=p.freefall_g,
                                 descent_mps=p.descent_mps, orientation_deg=p.orientation_deg,
                                 still_std_g=p.still_std_g, hard_impact_g=p.hard_impact_g,
                                 lying_deg=p.lying_deg)
            for j in np.flatnonzero(alarm).tolist():
                hits += self._hit(int(row[c[j]]), int(t[c[j]]), f, j, float(conf[j]),
                                  bool(partial[j]))
        np.maximum.at(a["eval_t"], row[decided], t[decided])
        a["pending"][row[new_dev]] = -1
        pend = ~decided & above & (t > a["eval_t"][row])
        u, i = np.unique(row[pend], return_index=True)
        a["pending"][u] = t[pend][i]
        return hits

    def _hit(self, row: int, t: int, f: ImpactFeatures, j: int, conf: float,
             partial: bool) -> list[FallHit]:
        last = self._arrays["last_hit"]
        if t - int(last[row]) < self.params.refractory_s * 1000:
            self._stats["suppressed"] += 1
            return []
        last[row] = t
        self._stats["falls"] += 1
        ev = {"peak_g": f.peak_g[j], "freefall_min_g": f.freefall_min_g[j],
              "descent_mps": f.descent_mps[j],
              "orientation_change_deg": f.orientation_change_deg[j],
              "post_still_std_g": f.post_std_g[j], "rate_hz": self._arrays["rate"][row],
              "tilt_before_deg": f.tilt_before_deg[j], "tilt_after_deg": f.tilt_after_deg[j],
              "prior_peak_g": f.prior_peak_g[j],
              "partial": float(partial)}
        evidence = {k: float(v) for k, v in ev.items() if np.isfinite(v)}
        return [FallHit(self._ids[row], t, conf, evidence)]

    def _decide_rows(self, rows: I64) -> list[FallHit]:
        """Decide everything pending in the tails of ``rows`` with the data there is."""
        if not len(rows):
            return []
        rows = np.sort(rows)
        self._arrays["pending"][rows] = -1
        return self._judge(*self._joined(rows, np.zeros(len(rows), np.int64), None, None),
                           closed_all=True)

    def _store(self, grid: _Grid) -> None:
        """Append each device's last-segment grid samples to its ring buffer (a break restarts
        it); at most the buffer length is written per device."""
        a, n = self._arrays, self._len
        restart = grid.dev[grid.seg_last != grid.seg_first]
        a["tail_n"][restart], a["head"][restart] = 0, 0
        k = np.bincount(grid.di, minlength=len(grid.dev))
        skip = np.maximum(k - n, 0)
        rank = np.arange(len(grid.t)) - np.repeat(np.cumsum(k) - k, k)
        if len(restart) or skip.any():  # else (usual): every new sample goes to the buffer
            last_seg = grid.seg == grid.seg_last[grid.di]
            k = np.bincount(grid.di[last_seg], minlength=len(grid.dev))
            skip = np.maximum(k - n, 0)
            rank[last_seg] = np.arange(np.count_nonzero(last_seg)) - np.repeat(np.cumsum(k) - k, k)
            sel = np.flatnonzero(last_seg & (rank >= skip[grid.di]))
        else:
            sel = np.arange(len(grid.t))
        di, rows = grid.di[sel], grid.row[sel]
        pos = (a["head"][rows] + rank[sel] - skip[di]) % n
        flat = a["tail"].reshape(-1, 4)
        flat[rows * n + pos, :3] = grid.xyz[sel]
        flat[rows * n + pos, 3] = grid.hi[sel]
        has = k > 0
        dev = grid.dev[has]
        a["head"][dev] = (a["head"][dev] + k[has] - skip[has]) % n
        a["tail_n"][dev] = np.minimum(a["tail_n"][dev] + k[has], n)
        a["tail_end"][dev] = grid.t[sel][np.cumsum(k[has] - skip[has]) - 1]
