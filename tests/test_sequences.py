"""The vectorized stream primitives agree with plain per-item state machines, across batch splits."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.alarms import EpisodeState, step_alarms
from detectors.sequences import fresh_mask, latch, order_streams, runs, segment_starts

# Streams: (key, ts, flag A, flag B) items; keys 0-3, small ts range so collisions happen.
items = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 40), st.booleans(), st.booleans()),
                 max_size=60)
splits = st.lists(st.integers(0, 60), max_size=4)


def _batches(seq: list[tuple[int, int, bool, bool]], cuts: list[int]
             ) -> list[list[tuple[int, int, bool, bool]]]:
    bounds = sorted({0, len(seq), *(c for c in cuts if c <= len(seq))})
    return [seq[a:b] for a, b in itertools.pairwise(bounds)]


def _latch_reference(batches: list[list[tuple[int, int, bool, bool]]]) -> list[tuple[int, int, str]]:
    """Per key: sort each batch by ts, skip stale/duplicate ts, set on A, reset on B (A wins)."""
    state: dict[int, bool] = {}
    last: dict[int, int] = {}
    out = []
    for batch in batches:
        for key, ts, a, b in sorted(batch, key=lambda x: (x[0], x[1])):
            if ts <= last.get(key, -1):
                continue
            last[key] = ts
            before = state.get(key, False)
            after = True if a else (False if b else before)
            state[key] = after
            if after != before:
                out.append((key, ts, "rise" if after else "fall"))
    return sorted(out)


def _latch_vectorized(batches: list[list[tuple[int, int, bool, bool]]]) -> list[tuple[int, int, str]]:
    state = np.zeros(4, dtype=bool)
    last = np.full(4, -1, dtype=np.int64)
    out = []
    for batch in batches:
        if not batch:
            continue
        k, t, a, b = (np.array(c) for c in zip(*batch, strict=True))
        order = order_streams(k, t)
        fresh = fresh_mask(k[order], t[order], last[k[order]])
        order = order[fresh]
        k, t, a, b = k[order], t[order], a[order], b[order]
        seg = segment_starts(k)
        res = latch(seg, a, b, state[k])
        ends = np.ones(len(k), dtype=bool)
        ends[:-1] = seg[1:]
        state[k[ends]] = res.state[ends]
        last[k[ends]] = t[ends]
        out += [(int(k[j]), int(t[j]), "rise") for j in np.flatnonzero(res.rising)]
        out += [(int(k[j]), int(t[j]), "fall") for j in np.flatnonzero(res.falling)]
    return sorted(out)


@settings(max_examples=300, deadline=None)
@given(items, splits)
def test_latch_matches_reference_over_any_batch_split(seq: list[tuple[int, int, bool, bool]],
                                                      cuts: list[int]) -> None:
    batches = _batches(seq, cuts)
    assert _latch_vectorized(batches) == _latch_reference(batches)


@settings(max_examples=300, deadline=None)
@given(items, splits)
def test_runs_match_reference(seq: list[tuple[int, int, bool, bool]], cuts: list[int]) -> None:
    run_len = np.zeros(4, dtype=np.int64)
    run_start = np.full(4, -1, dtype=np.int64)
    ref_len: dict[int, int] = {}
    ref_start: dict[int, int] = {}
    for batch in _batches(sorted(seq, key=lambda x: (x[0], x[1])), cuts):
        if not batch:
            continue
        k, t, a, _ = (np.array(c) for c in zip(*batch, strict=True))
        seg = segment_starts(k)
        r = runs(seg, a, t, run_len[k], run_start[k])
        for j, (key, ts, flag, _b) in enumerate(batch):
            ref_len[key] = ref_len.get(key, 0) + 1 if flag else 0
            if flag and ref_len[key] == 1:
                ref_start[key] = ts
            assert r.length[j] == ref_len[key]
            assert r.start_ts[j] == (ref_start[key] if flag else -1)
        ends = np.ones(len(k), dtype=bool)
        ends[:-1] = seg[1:]
        run_len[k[ends]], run_start[k[ends]] = r.length[ends], r.start_ts[ends]


def _episode_reference(batches: list[list[tuple[int, int, bool, bool]]], window: int
                       ) -> list[tuple[int, int]]:
    """Events = activations not within ``window`` of any earlier-known activation of the same
    episode chain; B marks a clear. Processed per batch in (key, ts) order, like the engine."""
    known: dict[int, list[tuple[int, int]]] = {}  # key -> latest open episode [start, end]
    out = []
    for batch in batches:
        for key, ts, _a, is_clear in sorted(batch, key=lambda x: (x[0], x[1])):
            ep = known.get(key)
            if is_clear:
                known.pop(key, None)
                continue
            if ep and ep[0][0] - window <= ts <= ep[0][1] + window:
                ep[0] = (min(ep[0][0], ts), max(ep[0][1], ts))
                continue
            known[key] = [(ts, ts)]
            out.append((key, ts))
    return sorted(out)


@settings(max_examples=300, deadline=None)
@given(items, splits)
def test_episodes_raise_once_per_chain(seq: list[tuple[int, int, bool, bool]],
                                       cuts: list[int]) -> None:
    # Only in-order streams here (the reference is sequential); late items have their own tests.
    seq = sorted(seq, key=lambda x: (x[1], x[0]))
    window = 5
    start = np.full(4, -1, dtype=np.int64)
    end = np.full(4, -1, dtype=np.int64)
    is_open = np.zeros(4, dtype=bool)
    got = []
    batches = _batches(seq, cuts)
    for batch in batches:
        if not batch:
            continue
        k, t, _a, c = (np.array(x) for x in zip(*batch, strict=True))
        u = np.unique(k)
        step = step_alarms(k, t, c, EpisodeState(start[u], end[u], is_open[u]), window_ms=window)
        start[step.keys], end[step.keys], is_open[step.keys] = step.state
        got += [(int(k[j]), int(t[j])) for j in np.flatnonzero(step.new)]
    assert sorted(got) == _episode_reference(batches, window)


def test_late_press_joins_the_raised_episode_and_an_old_one_is_raised() -> None:
    w = 120_000
    first = step_alarms(np.array([1]), np.array([1_000_000]), np.array([False]),
                        EpisodeState(np.array([-1]), np.array([-1]), np.array([False])),
                        window_ms=w)
    assert first.new.tolist() == [True]
    # 60 s earlier (gateway buffered it): same episode. An hour earlier: a distinct SOS.
    late = step_alarms(np.array([1, 1]), np.array([940_000, 1_000_000 - 3_600_000]),
                       np.array([False, False]), first.state, window_ms=w)
    assert late.new.tolist() == [False, True]
