"""The codec seam: what the gateway server needs of a device protocol, and nothing more.

A protocol is one module exposing a :class:`Codec`. Codecs are pure and I/O-free (the server
owns sockets, time and the broker), so each is tested on bytes alone:

- :meth:`Codec.framer` makes a new :class:`Framer` per connection: it takes TCP bytes as they
  come (a frame split across segments, several frames in one segment, garbage between frames)
  and returns whole frames; garbage is skipped and counted, never raised. A frame longer than
  the codec's ``max_frame_bytes`` is a :class:`FrameError` (the server closes the connection:
  a device that sends that is broken or hostile).
- :meth:`Codec.decode` turns one frame into a :class:`Decoded`: the device id it names, the
  wire-contract readings it reports, and the reply the device expects, with *when* to send it:
  at once (a keepalive: a watch reboots after several unanswered ones) or only after the broker
  acknowledged the readings (an alarm: the device repeats an unanswered alarm, so answering
  before the PUBACK could lose it between the device and us).
- A frame the codec does not understand (an unknown command) is :attr:`Decoded.unknown`, with
  whatever reply the protocol requires; it is logged and counted by the server, never fatal.
- :meth:`Codec.encode_command` turns a duty officer's :class:`~schemas.commands.DeviceCommand`
  into the protocol's own frame, with the key the device's answer will carry
  (:attr:`Decoded.acknowledges`), so the server can tell the command was received. A command
  the protocol has no word for is :class:`UnsupportedCommand`, never a guess.

Device time: codecs put the device's own time in ``ts`` when it is plausible; otherwise they
use ``now_ms`` (the receipt time the server passes) and keep the device's value as evidence in
:attr:`Decoded.device_time`. Plausible: not before 2020 and not more than five minutes ahead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from foundation.errors import ValidationError
from schemas.commands import DeviceCommand
from schemas.readings import MIN_TS_MS, Reading

#: How far ahead of the receipt time a device clock may be before its time is not believed.
MAX_AHEAD_MS: Final = 5 * 60 * 1000

#: When to send a reply: ``now`` (on decoding) or ``after_publish`` (after the broker's PUBACK
#: of every reading this frame produced).
ReplyWhen = Literal["now", "after_publish"]


class FrameError(ValidationError):
    """The byte stream cannot be framed (a frame over the size limit): close the connection."""


class UnsupportedCommand(ValidationError):
    """The protocol (or the device model) has no word for this command."""


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A command as the device's protocol says it."""

    frame: bytes
    #: What the device's answer carries in :attr:`Decoded.acknowledges` (the watch's command
    #: word, the GT06 server flag), to match answer and command.
    ack: str


class Framer(Protocol):
    """Splits one connection's byte stream into frames; see the module docstring."""

    def feed(self, data: bytes) -> list[bytes]:
        """The whole frames completed by ``data`` (possibly none), in order. Raises
        :class:`FrameError` when a frame exceeds the codec's limit."""
        ...

    @property
    def skipped_bytes(self) -> int:
        """Garbage bytes skipped so far (between or before frames)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Decoded:
    """One decoded frame."""

    #: The device id the frame names, as is (the 3G protocol names it in every frame; GT06 only
    #: in its login, so later frames carry ``None`` and the server uses the session's id).
    device_id: str | None
    #: The protocol's command or message name, for logs and metrics ("LK", "UD", "AL", "0x12").
    command: str
    readings: tuple[Reading, ...] = ()
    reply: bytes | None = None
    reply_when: ReplyWhen = "now"
    #: The frame is a login: it establishes the session's device id (GT06 0x01).
    login: bool = False
    #: A command the codec does not know (logged and counted, never fatal).
    unknown: bool = False
    #: The device's own time where it was not believed (Unix ms, or the raw text), as evidence.
    device_time: str | None = None
    #: Facts the readings cannot carry (cell towers, Wi-Fi access points, raw status bits), for
    #: logs and future contract versions; never personal data.
    extra: dict[str, object] = field(default_factory=dict)
    #: The frame answers a command the server sent (:attr:`Outgoing.ack` of it).
    acknowledges: str | None = None


class Codec(Protocol):
    """One device protocol."""

    #: Short name, for the CLI and metrics ("watch", "gt06").
    name: str
    #: The largest frame accepted (bytes on the wire, escapes included).
    max_frame_bytes: int

    def framer(self) -> Framer:
        """A new framer for one connection."""
        ...

    def decode(self, frame: bytes, *, now_ms: int, session_device: str | None) -> Decoded:
        """Decode one frame from :meth:`Framer.feed`. ``session_device`` is the id the
        connection logged in with, if any. Raises :class:`~foundation.errors.ValidationError`
        (with a specific message) for a frame that is malformed; the server counts it and keeps
        the connection."""
        ...

    def encode_command(self, command: DeviceCommand, *, device_id: str,
                       context: Mapping[str, object], serial: int) -> Outgoing:
        """``command`` as a frame for ``device_id``. ``context`` is the ``extra`` of the last
        frame the device sent (a watch's vendor code and index field, which a frame to it
        repeats); ``serial`` a number the server increments per command. Raises
        :class:`UnsupportedCommand`."""
        ...


def plausible_ts(device_ms: int | None, *, now_ms: int) -> bool:
    """Whether a device time is believed: after 2020-01-01 and at most five minutes ahead."""
    return device_ms is not None and MIN_TS_MS <= device_ms <= now_ms + MAX_AHEAD_MS
