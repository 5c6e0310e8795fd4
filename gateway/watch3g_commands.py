"""Commands to a 3G watch: the platform's words for what duty staff ask of it.

A command goes to the watch as a frame of its own protocol, ``[VV*ID*LLLL*WORD,args]``, with
the vendor code (and the index field, where the firmware uses one) the watch itself sends; the
watch answers with a frame carrying the same word and no arguments (``[3G*ID*0002*CR]``), which
is the acknowledgement (:attr:`gateway.codec.Decoded.acknowledges`). The words are those of the
Setracker/Beesure platform documents and Traccar's ``WatchProtocolEncoder`` (table in
docs/gateway-protocols.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.codec import Outgoing, UnsupportedCommand
from gateway.watch3g_framing import build_frame
from schemas.commands import DeviceCommand

#: The words a watch echoes to acknowledge a platform command.
ACK_WORDS: Final = frozenset({"CR", "UPLOAD", "SOS", "PHB", "FIND", "CALL", "MONITOR",
                              "POWEROFF"})
#: The watch's SOS key calls up to three numbers; its phone book takes five a frame.
_SOS_SLOTS: Final = 3
_PHONE_BOOK_SLOTS: Final = 5


def _phone_book(numbers: list[str]) -> str:
    # Names travel as UTF-16BE hex; the watch shows them on an incoming call.
    if len(numbers) > _PHONE_BOOK_SLOTS:
        raise UnsupportedCommand(f"a watch's phone book takes {_PHONE_BOOK_SLOTS} numbers per"
                                 f" command, not {len(numbers)}")
    pairs = (f"{n},{f'家人{i}'.encode('utf-16-be').hex().upper()}"
             for i, n in enumerate(numbers, start=1))
    return "PHB," + ",".join(pairs)


def content_of(command: DeviceCommand) -> str:
    """The frame content (``WORD,args``) of ``command``."""
    a = command.args
    match command.command:
        case "locate":
            return "CR"
        case "set_interval":
            return f"UPLOAD,{a.interval_s}"
        case "set_sos_numbers":
            numbers = list(a.numbers or [])
            if len(numbers) > _SOS_SLOTS:
                raise UnsupportedCommand(f"a watch's SOS key calls {_SOS_SLOTS} numbers, not"
                                         f" {len(numbers)}")
            return "SOS," + ",".join(numbers + [""] * (_SOS_SLOTS - len(numbers)))
        case "set_family_numbers":
            return _phone_book(list(a.numbers or []))
        case "find":
            return "FIND"
        case "call_back":
            return f"CALL,{a.number}"
        case "monitor":
            return f"MONITOR,{a.number}"
        case "power_off":
            return "POWEROFF"
    raise UnsupportedCommand(f"the watch protocol has no command {command.command!r}")


def encode_command(command: DeviceCommand, *, device_id: str, context: Mapping[str, object],
                   serial: int) -> Outgoing:
    """``command`` framed for the watch ``device_id``: its vendor code and, where its firmware
    numbers frames, an index field (the command's serial)."""
    content = content_of(command)
    frame = build_frame(str(context.get("vendor") or "3G"), device_id, content.encode(),
                        index=f"{serial & 0xFFFF:04X}" if "index" in context else None)
    return Outgoing(frame=frame, ack=content.partition(",")[0])
