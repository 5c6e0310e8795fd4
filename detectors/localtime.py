"""Local time of day for arrays of Unix-ms timestamps, and ``HH:MM-HH:MM`` windows.

Zone windows ("stay home 20:00-06:00"), night-time bed-exit alarms and the daytime inactivity
check are all local-time rules. A batch spans seconds, so the UTC offset of a time zone is almost
always one number for the whole batch: it is computed at the batch's first and last timestamp and
only when they differ (a DST change inside the batch) per item.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo

import numpy as np
import numpy.typing as npt

from detectors.sequences import BoolArray, IntArray

MINUTES_PER_DAY = 1440


def parse_window(text: str) -> tuple[int, int]:
    """``"20:00-06:00"`` → (1200, 360): start and end minute of day; may wrap midnight."""
    start, end = text.split("-")
    sh, sm = start.split(":")
    eh, em = end.split(":")
    return int(sh) * 60 + int(sm), int(eh) * 60 + int(em)


def _offset_ms(ts_ms: int, tz: tzinfo) -> int:
    offset = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(tz).utcoffset()
    return int(offset.total_seconds() * 1000) if offset is not None else 0


def minute_of_day(ts_ms: IntArray, tz: tzinfo) -> IntArray:
    """Local minute of day (0-1439) of each Unix-ms timestamp in time zone ``tz``."""
    if len(ts_ms) == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(ts_ms.min()), int(ts_ms.max())
    first = _offset_ms(lo, tz)
    if first == _offset_ms(hi, tz):
        offsets: npt.NDArray[np.int64] | int = first
    else:
        offsets = np.array([_offset_ms(int(t), tz) for t in ts_ms], dtype=np.int64)
    local = ts_ms + offsets
    return ((local // 60_000) % MINUTES_PER_DAY).astype(np.int64)


def in_window(minute: IntArray, start: IntArray | int, end: IntArray | int) -> BoolArray:
    """Whether each local minute lies in ``[start, end)``; a window with start > end wraps
    midnight, and start == end means all day."""
    start_a = np.asarray(start)
    end_a = np.asarray(end)
    plain = (minute >= start_a) & (minute < end_a)
    wrapped = (minute >= start_a) | (minute < end_a)
    return np.where(start_a == end_a, True, np.where(start_a < end_a, plain, wrapped))
