"""Vectorized per-stream sequence primitives: the state machines of the detectors, without loops.

Every detector looks at *streams*: the readings of one key (a device, or a device's sensor) in
device-time order. A batch holds many streams at once. The functions here take the batch sorted by
(key, ts) and a boolean ``seg_start`` marking the first item of each key, plus per-stream state
carried in from the previous batch, and answer with arrays aligned to the items. They replace the
per-reading ``for`` loop of a classic state machine by forward fills (``np.maximum.accumulate`` over
indices) that restart at each stream's start.

All functions are pure; shapes are ``(n,)`` for ``n`` items unless stated.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]


def order_streams(keys: IntArray, ts: IntArray) -> IntArray:
    """Indices that sort items by (key, ts), stable so equal timestamps keep arrival order."""
    return np.lexsort((ts, keys)).astype(np.int64)


def segment_starts(sorted_keys: IntArray) -> BoolArray:
    """``True`` at the first item of each key in a key-sorted array."""
    out = np.ones(len(sorted_keys), dtype=bool)
    if len(sorted_keys) > 1:
        out[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return out


def segment_ends(seg_start: BoolArray) -> BoolArray:
    """``True`` at the last item of each stream."""
    out = np.ones(len(seg_start), dtype=bool)
    if len(seg_start) > 1:
        out[:-1] = seg_start[1:]
    return out


def _segment_first_index(seg_start: BoolArray) -> IntArray:
    idx = np.arange(len(seg_start), dtype=np.int64)
    return np.maximum.accumulate(np.where(seg_start, idx, 0)).astype(np.int64)


def _last_where(mask: BoolArray, first: IntArray) -> tuple[IntArray, BoolArray]:
    """For each item, the index of the latest item at or before it (same stream) where ``mask``;
    and whether one exists."""
    idx = np.arange(len(mask), dtype=np.int64)
    last = np.maximum.accumulate(np.where(mask, idx, -1)).astype(np.int64)
    return last, last >= first


def fresh_mask(sorted_keys: IntArray, sorted_ts: IntArray, last_ts: IntArray) -> BoolArray:
    """Items newer than what their stream has already processed, and not repeated in the batch.

    ``last_ts`` is the carried last processed timestamp per item (``-1`` for a new stream). A
    state machine must not step back in time: late items (older than the stream's last) and
    duplicates (same key and ts) are left out of it; the caller counts them.
    """
    fresh = sorted_ts > last_ts
    if len(fresh) > 1:
        dup = (sorted_keys[1:] == sorted_keys[:-1]) & (sorted_ts[1:] == sorted_ts[:-1])
        fresh[1:] &= ~dup
    return fresh


class Runs(NamedTuple):
    """Consecutive-``True`` runs per stream."""

    length: IntArray     # length of the run the item ends (0 where flag is False)
    start_ts: IntArray   # ts of the run's first item (carried across batches); -1 where no run


def runs(seg_start: BoolArray, flag: BoolArray, ts: IntArray,
         carry_len: IntArray, carry_start_ts: IntArray) -> Runs:
    """Length and start time of the current run of consecutive ``flag`` items in each stream.

    ``carry_len`` / ``carry_start_ts`` (per item: the value of its stream's state) continue a run
    that was still going at the end of the previous batch.
    """
    n = len(flag)
    idx = np.arange(n, dtype=np.int64)
    first = _segment_first_index(seg_start)
    last_false, has_false = _last_where(~flag, first)
    from_batch = np.where(has_false, idx - last_false, idx - first + 1 + carry_len)
    length = np.where(flag, from_batch, 0).astype(np.int64)
    start_idx = np.where(has_false, last_false + 1, first)
    start_idx = np.minimum(start_idx, max(n - 1, 0))
    carried = ~has_false & (carry_len > 0)
    start_ts = np.where(carried, carry_start_ts, ts[start_idx] if n else ts)
    return Runs(length, np.where(flag, start_ts, -1).astype(np.int64))


class Latch(NamedTuple):
    """A set/reset latch per stream (hysteresis)."""

    state: BoolArray    # state after each item
    rising: BoolArray   # items that set a reset latch (an event starts)
    falling: BoolArray  # items that reset a set latch (the condition ended)


def latch(seg_start: BoolArray, set_mask: BoolArray, reset_mask: BoolArray,
          initial: BoolArray) -> Latch:
    """Run a set/reset latch over each stream; ``initial`` is the carried state per item.

    The last set or reset at or before an item decides its state (set wins if both). Between the
    two thresholds nothing changes: that band is what keeps jitter from flapping.
    """
    first = _segment_first_index(seg_start)
    decided, has = _last_where(set_mask | reset_mask, first)
    state = np.where(has, set_mask[np.maximum(decided, 0)], initial)
    before = initial.copy()
    if len(state) > 1:
        before[1:] = np.where(seg_start[1:], initial[1:], state[:-1])
    return Latch(state, state & ~before, ~state & before)


class Episodes(NamedTuple):
    """Alarm items grouped into episodes."""

    group: IntArray      # episode number of each item (increasing along the sorted items)
    new: BoolArray       # items that open an episode not seen before (raise an event here)
    start_ts: IntArray   # per item: first ts of its episode
    end_ts: IntArray     # per item: last ts of its episode


def episodes(seg_start: BoolArray, ts: IntArray, *, window_ms: int,
             virtual: BoolArray, clear: BoolArray) -> Episodes:
    """Chain activations of each stream into episodes: gaps of at most ``window_ms`` join.

    ``virtual`` items stand for the episode carried over from earlier batches (its start and end,
    inserted by the caller), so that presses joining it raise nothing new, late ones included.
    A ``clear`` item (an alarm sensor reporting it is no longer active) ends the episode: the next
    activation opens a new one. Clear items belong to no episode and are never ``new``.
    """
    n = len(ts)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Episodes(empty, np.zeros(0, dtype=bool), empty, empty)
    act = ~clear
    gap = np.zeros(n, dtype=np.int64)
    gap[1:] = ts[1:] - ts[:-1]
    prev_clear = np.zeros(n, dtype=bool)
    prev_clear[1:] = clear[:-1]
    both_virtual = np.zeros(n, dtype=bool)
    both_virtual[1:] = virtual[1:] & virtual[:-1]
    # An activation starts a group after a stream start, a clear or a long gap; the carried
    # episode's two virtual items never split (their gap may exceed the window).
    brk = seg_start | clear | prev_clear | ((gap > window_ms) & ~both_virtual)
    group = np.cumsum(brk).astype(np.int64) - 1
    n_groups = int(group[-1]) + 1
    has_virtual = np.zeros(n_groups, dtype=bool)
    np.logical_or.at(has_virtual, group, virtual)
    inf = np.iinfo(np.int64).max
    g_start = np.full(n_groups, inf, dtype=np.int64)
    g_end = np.full(n_groups, -1, dtype=np.int64)
    np.minimum.at(g_start, group[act], ts[act])
    np.maximum.at(g_end, group[act], ts[act])
    new = segment_starts(group) & act & ~virtual & ~has_virtual[group]
    return Episodes(group, new, g_start[group], g_end[group])

