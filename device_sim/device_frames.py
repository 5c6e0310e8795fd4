"""What a simulated vendor device hands its connection: frames, and the replies it expects.

The protocol encoders (:mod:`device_sim.watch_protocol`, :mod:`device_sim.gt06_protocol`) are
pure and I/O-free, like the gateway's codecs they mirror: one encoder object per device turns
the device's wire readings (``SimReading.body``) into the frames the real device would send,
keeping the little state a device keeps (its battery, whether it is worn, a frame serial). The
device's connection (:mod:`device_sim.device_link`, run by :mod:`device_sim.tcp_devices`) owns
sockets and time: it sends the frames, reads the replies, matches them by
:attr:`DeviceFrame.reply`, and repeats an unanswered alarm.

A reading a protocol cannot carry is reported in :attr:`Encoded.not_carried` (counted by the
runner, never silently lost). A Wi-Fi or cell fix is sent the way a real device sends one
indoors, as its serving cell without a position, and flagged :attr:`Encoded.unlocated`: the
gateway publishes the towers as a scan, and the simulated cells are made up, so no geolocation
provider could place them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, Protocol

from gateway.codec import Framer

#: A fix with a reported accuracy at most this is a satellite fix (the simulated receiver's GPS
#: fixes report 4-15 m, Wi-Fi 30-80 m, cell 150-500 m: docs/simulator.md). Alarm readings carry
#: their fix's accuracy but not its source.
GPS_ACCURACY_M: Final = 25.0
#: China Mobile: the carrier of most 12349 devices (cells only go to the gateway's ``extra``).
MCC, MNC = 460, 0
#: Serving cells are squares of this many degrees (~1 km) of the device's position.
_CELL_DEG: Final = 0.01


class DeviceFrame(NamedTuple):
    """One frame as a device sends it."""

    data: bytes
    #: The command, for counts ("UD", "AL", "0x16").
    command: str
    #: The key of the reply this frame expects (see ``DeviceEncoder.reply_key``); None: none.
    reply: str | None = None
    #: An alarm: sent again while its reply does not come (the gateway answers it only after
    #: the broker has it).
    alarm: bool = False


class Encoded(NamedTuple):
    """What one reading became."""

    frames: tuple[DeviceFrame, ...]
    #: What of the reading the protocol cannot carry ("vitals", "wear worn=true"), for counts.
    not_carried: tuple[str, ...] = ()
    #: A fix sent without a position (Wi-Fi or cell: the serving cell only).
    unlocated: bool = False


class DeviceEncoder(Protocol):
    """One simulated device speaking one vendor protocol."""

    #: The protocol's name, as the gateway's (``watch``, ``gt06``).
    protocol: str
    #: The id the gateway publishes this device's readings under (a GT06 tracker's IMEI).
    wire_id: str

    def opening(self) -> tuple[DeviceFrame, ...]:
        """The frames a new connection starts with, each to be answered before anything else
        is sent (GT06: the login). Called on every (re)connection."""
        ...

    def encode(self, body: Mapping[str, Any], *, backlog: bool = False) -> Encoded:
        """The frames of one wire reading. ``backlog``: it was held by an outage and is sent
        late, in the burst after the device reconnects (re-upload forms, where the protocol has
        them)."""
        ...

    def reply_key(self, frame: bytes) -> str | None:
        """The key a reply frame answers (matches :attr:`DeviceFrame.reply`); None for a frame
        that is no reply this device understands."""
        ...

    def framer(self) -> Framer:
        """A framer for the replies of one connection (the gateway's own)."""
        ...

    def answer(self, frame: bytes) -> bytes | None:
        """What the device sends back for a frame from the gateway that is a platform command
        ("locate now", "call the watch"): the protocol's acknowledgement; None for anything
        else (replies to its own frames)."""
        ...


def serving_cell(lat: float, lon: float) -> tuple[int, int]:
    """A plausible (LAC, cell id) for a position: the same square gives the same cell, so a
    device at home reports one cell, as a real one does."""
    row, col = math.floor(lat / _CELL_DEG), math.floor(lon / _CELL_DEG)
    return 0x1000 + (row % 0xE000), (col % 0x10000) * 0x100 + (row % 0x100)
