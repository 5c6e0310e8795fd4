"""Alarm episodes: SOS presses, device-reported falls, home safety alarms.

An alarm is never filtered and never rate-limited away: every activation either opens a new
episode (an event is raised) or joins one that is already raised, because it came within the
join window of that episode's presses. That is the only way two activations become one event,
and the join is always towards an event already raised, so nothing is lost.

Late and out-of-order activations are welcome: an old SOS that a gateway buffered for an hour is
raised (it may never have been answered), unless it falls within the window of the episode we
already raised. A "cleared" report (a smoke sensor back to normal) closes the episode, so the next
activation is a new alarm however soon it comes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from detectors.sequences import BoolArray, IntArray, episodes, segment_ends, segment_starts


class EpisodeState(NamedTuple):
    """Per-key state of the latest episode: its first and last activation, and whether it is
    still open (not cleared). ``start == -1`` means no episode yet."""

    start: IntArray
    end: IntArray
    open: BoolArray


class AlarmStep(NamedTuple):
    """Outcome of one batch."""

    new: BoolArray          # per input item: opens a new episode (raise an event)
    keys: IntArray          # keys touched, ascending
    state: EpisodeState     # their state after the batch (aligned with ``keys``)


def step_alarms(keys: IntArray, ts: IntArray, clear: BoolArray, carried: EpisodeState,
                *, window_ms: int) -> AlarmStep:
    """Group this batch's activations (and clears) with the carried episodes.

    Parameters
    ----------
    keys, ts, clear : (n,)
        Stream key (device, or device × sensor), device time in Unix ms, and whether the item is
        a "cleared" report rather than an activation.
    carried : EpisodeState
        State of every key that appears in ``keys``, aligned with ``np.unique(keys)``.
    window_ms : int
        Activations at most this far apart (and with no clear between) form one episode.
    """
    n = len(keys)
    ukeys = np.unique(keys)
    carried_open = carried.open & (carried.start >= 0)
    # Two virtual items per carried open episode (its first and last activation).
    vk = np.repeat(ukeys[carried_open], 2)
    vts = np.column_stack((carried.start[carried_open], carried.end[carried_open])).ravel()
    all_keys = np.concatenate((keys, vk)).astype(np.int64)
    all_ts = np.concatenate((ts, vts)).astype(np.int64)
    virtual = np.concatenate((np.zeros(n, dtype=bool), np.ones(len(vk), dtype=bool)))
    all_clear = np.concatenate((clear, np.zeros(len(vk), dtype=bool)))
    # Virtual items sort before real ones at an equal ts, so a duplicate joins the carried episode.
    order = np.lexsort((~virtual, all_ts, all_keys))
    sk, sts = all_keys[order], all_ts[order]
    seg = segment_starts(sk)
    ep = episodes(seg, sts, window_ms=window_ms, virtual=virtual[order], clear=all_clear[order])
    new = np.zeros(len(all_keys), dtype=bool)
    new[order] = ep.new
    # The latest item of each key decides its state.
    last = segment_ends(seg)
    last_clear = all_clear[order][last]
    start = np.where(last_clear, carried.start, ep.start_ts[last])
    end = np.where(last_clear, carried.end, ep.end_ts[last])
    return AlarmStep(new[:n], sk[last], EpisodeState(start, end, ~last_clear))

