"""Putting a device's accelerometer chunks back in order when one message arrives late.

The fall detector (:mod:`detectors.fall`) reads each device's stream once, in time order, and
drops samples at or before what it has already read, so a redelivered message never counts twice.
The price: a chunk delayed past the chunks after it (an MQTT retry after a reconnect, a gateway
flushing late) would be dropped, its second become a gap, and a fall whose descent it held be
missed. The device simulator found exactly that (docs/fall-detector.md).

So a chunk that starts after a *short* gap since the device's last sample (more than
``gap_ms``, which the detector would treat as a break, but at most ``max_gap_ms``, the
size of a few missing messages) is held back, together with every later chunk of that device,
for up to ``hold_ms`` of arrival time. If the missing chunk arrives meanwhile, the held ones
follow it in order; if not, they are released as they are and the gap stays a gap. Chunks
without a gap before them, and a stream restarting after a longer silence, pass through at
once: only a stream with a hole waits, and then at most ``hold_ms``.

Pure: no I/O and no clock; arrival times and ``now`` come in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from detectors.fall import AccelChunk


@dataclass(slots=True)
class _Held:
    chunks: list[AccelChunk] = field(default_factory=list)
    since_ms: int = 0          # arrival time of the oldest held chunk


class ChunkReorder:
    """Per-device hold-back of accelerometer chunks after a short gap; see the module docstring."""

    def __init__(self, *, gap_ms: int, max_gap_ms: int, hold_ms: int) -> None:
        if not 0 < gap_ms <= max_gap_ms or hold_ms < 0:
            raise ValueError("need 0 < gap_ms <= max_gap_ms and hold_ms >= 0")
        self.gap_ms = gap_ms
        self.max_gap_ms = max_gap_ms
        self.hold_ms = hold_ms
        self._held: dict[str, _Held] = {}
        self.stats = {"held": 0, "filled": 0, "released_with_gap": 0}

    def admit(self, chunks: Sequence[AccelChunk], *, now_ms: int,
              last_ms: Callable[[str], int]) -> list[AccelChunk]:
        """The chunks to feed now, given a batch that arrived at ``now_ms``.

        ``last_ms(device)`` is the time of the device's latest sample the detector has read
        (-1 for none). Held chunks whose wait is over are released too.
        """
        by_device: dict[str, list[AccelChunk]] = {}
        for c in chunks:
            if len(c.t_ms):
                by_device.setdefault(c.device_id, []).append(c)
        out = self.due(now_ms)
        for device, new in by_device.items():
            held = self._held.pop(device, None)
            pending = sorted((held.chunks if held else []) + new, key=lambda c: int(c.t_ms[0]))
            since = held.since_ms if held else now_ms
            out += self._settle(device, pending, last_ms(device), since, filled=held is not None)
        return out

    def due(self, now_ms: int) -> list[AccelChunk]:
        """Release, in order, every device's held chunks that waited ``hold_ms``."""
        out: list[AccelChunk] = []
        for device in [d for d, h in self._held.items() if now_ms - h.since_ms >= self.hold_ms]:
            out += self._held.pop(device).chunks
            self.stats["released_with_gap"] += 1
        return out

    def __len__(self) -> int:
        """Devices with chunks held back."""
        return len(self._held)

    def _settle(self, device: str, pending: list[AccelChunk], edge: int, since: int, *,
                filled: bool) -> list[AccelChunk]:
        """Release ``pending`` (one device, in time order) up to the first short gap; hold the
        rest. ``filled``: the device had chunks held before this batch."""
        out: list[AccelChunk] = []
        for k, c in enumerate(pending):
            if edge >= 0 and self.gap_ms < int(c.t_ms[0]) - edge <= self.max_gap_ms:
                self._held[device] = _Held(pending[k:], since)  # the first wait's deadline
                if not filled:
                    self.stats["held"] += 1
                return out
            out.append(c)
            edge = max(edge, int(c.t_ms[-1]))
        if filled:
            self.stats["filled"] += 1
        return out
