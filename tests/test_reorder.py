"""The accelerometer reorder hold-back (detectors/reorder.py) on hand-made chunks."""

from __future__ import annotations

import numpy as np

from detectors.fall import AccelChunk
from detectors.reorder import ChunkReorder

T0 = 1_700_000_000_000


def chunk(dev: str, start_s: float, seconds: float = 1.0, hz: int = 50) -> AccelChunk:
    n = int(seconds * hz)
    t = T0 + np.rint(start_s * 1000 + np.arange(n) * 1000 / hz).astype(np.int64)
    return AccelChunk(dev, t, np.zeros((n, 3), dtype=np.float32))


class Detector:
    """Stands in for AccelFallDetector's read position: the last sample time fed per device."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.fed: list[tuple[str, float]] = []

    def feed(self, chunks: list[AccelChunk]) -> None:
        for c in chunks:
            self.fed.append((c.device_id, (int(c.t_ms[0]) - T0) / 1000))
            self.last[c.device_id] = max(self.last.get(c.device_id, -1), int(c.t_ms[-1]))

    def last_ms(self, dev: str) -> int:
        return self.last.get(dev, -1)


def make() -> tuple[ChunkReorder, Detector]:
    return ChunkReorder(gap_ms=1000, max_gap_ms=10_000, hold_ms=30_000), Detector()


def test_in_order_chunks_pass_at_once() -> None:
    r, det = make()
    for k in range(5):
        det.feed(r.admit([chunk("a", k)], now_ms=T0 + k * 1000, last_ms=det.last_ms))
    assert [s for _, s in det.fed] == [0, 1, 2, 3, 4] and len(r) == 0


def test_a_delayed_chunk_is_put_back_in_order_and_only_the_gapped_device_waits() -> None:
    r, det = make()
    det.feed(r.admit([chunk("a", 0), chunk("b", 0)], now_ms=T0, last_ms=det.last_ms))
    # a's chunk at 1 s is delayed; its chunks at 2 and 3 s arrive first and wait; b goes on.
    for k in (2, 3):
        det.feed(r.admit([chunk("a", k), chunk("b", k - 1)], now_ms=T0 + k * 1000,
                         last_ms=det.last_ms))
    assert det.fed == [("a", 0), ("b", 0), ("b", 1), ("b", 2)] and len(r) == 1
    det.feed(r.admit([chunk("a", 1)], now_ms=T0 + 13_000, last_ms=det.last_ms))
    assert [s for d, s in det.fed if d == "a"] == [0, 1, 2, 3]
    assert len(r) == 0 and r.stats["held"] == 1 and r.stats["filled"] == 1


def test_a_gap_that_is_never_filled_is_released_after_the_hold() -> None:
    r, det = make()
    det.feed(r.admit([chunk("a", 0)], now_ms=T0, last_ms=det.last_ms))
    det.feed(r.admit([chunk("a", 2)], now_ms=T0 + 2000, last_ms=det.last_ms))
    det.feed(r.due(T0 + 2000 + 29_999))
    assert [s for _, s in det.fed] == [0]                    # still waiting
    det.feed(r.admit([chunk("a", 3)], now_ms=T0 + 3000, last_ms=det.last_ms))
    assert [s for _, s in det.fed] == [0]                    # later chunks queue behind it
    det.feed(r.due(T0 + 2000 + 30_000))                      # the first wait sets the deadline
    assert [s for _, s in det.fed] == [0, 2, 3] and r.stats["released_with_gap"] == 1


def test_a_stream_restarting_after_a_long_silence_and_a_late_chunk_pass_at_once() -> None:
    r, det = make()
    det.feed(r.admit([chunk("a", 0), chunk("a", 1)], now_ms=T0, last_ms=det.last_ms))
    det.feed(r.admit([chunk("a", 60)], now_ms=T0 + 60_000, last_ms=det.last_ms))
    det.feed(r.admit([chunk("a", 0.5)], now_ms=T0 + 61_000, last_ms=det.last_ms))  # late: the
    assert [s for _, s in det.fed] == [0, 1, 60, 0.5] and len(r) == 0  # detector drops it
