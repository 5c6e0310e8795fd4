"""Commands to a GT06 tracker: online command 0x80, and the tracker's answer 0x15 / 0x21.

The server sends protocol 0x80 with content: command length (1 byte: the server flag and the
text), a 4-byte server flag the tracker repeats in its answer, and the command text in ASCII
(``WHERE#``). The tracker answers with 0x15 (GT06: length, flag, text) or, on newer Concox
firmware, 0x21 (flag, encoding byte, text); the flag is the acknowledgement key, so each command
carries its own (the server's per-command serial). The answer's text is not kept: a ``WHERE#``
answer is a position in free text whose layout varies by firmware (the tracker's next location
frame carries the fix properly).

Trackers have no speaker or phone book on the generic GT06 model: ring, call back, listen-in, the
family phone book and power-off are refused as unsupported, with the reason, rather than sent as
words a tracker would ignore (docs/gateway-protocols.md lists the words).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from foundation.errors import ValidationError
from gateway.codec import Outgoing, UnsupportedCommand
from gateway.gt06_framing import build_frame
from schemas.commands import DeviceCommand

COMMAND: Final = 0x80
ANSWER_GT06, ANSWER_CONCOX = 0x15, 0x21
_SOS_SLOTS: Final = 3


def text_of(command: DeviceCommand) -> str:
    """The command text of ``command``, or :class:`UnsupportedCommand`."""
    a = command.args
    match command.command:
        case "locate":
            return "WHERE#"
        case "set_interval":
            # T1 with the ignition (ACC) on, T2 with it off: a bracelet has no ignition, so both.
            return f"TIMER,{a.interval_s},{a.interval_s}#"
        case "set_sos_numbers":
            numbers = list(a.numbers or [])
            if len(numbers) > _SOS_SLOTS:
                raise UnsupportedCommand(f"a GT06 tracker takes {_SOS_SLOTS} SOS numbers, not"
                                         f" {len(numbers)}")
            return "SOS,A," + ",".join(numbers) + "#"
    raise UnsupportedCommand(f"a GT06 tracker cannot {command.command.replace('_', ' ')}"
                             " (no speaker, phone book or remote power-off on this model)")


def encode_command(command: DeviceCommand, *, device_id: str, context: Mapping[str, object],
                   serial: int) -> Outgoing:
    """``command`` as a 0x80 frame; the server flag is ``serial`` (its acknowledgement key)."""
    text = text_of(command).encode("ascii")
    flag = serial & 0xFFFFFFFF
    content = bytes([4 + len(text)]) + flag.to_bytes(4, "big") + text
    return Outgoing(frame=build_frame(COMMAND, content, serial & 0xFFFF), ack=f"{flag:08X}")


def answer_flag(protocol: int, content: bytes) -> str:
    """The server flag a 0x15 / 0x21 answer repeats (the acknowledgement key)."""
    at = 1 if protocol == ANSWER_GT06 else 0  # 0x15 starts with the command length
    if len(content) < at + 4:
        raise ValidationError(f"GT06 0x{protocol:02X} answer of {len(content)} bytes has no"
                              " server flag")
    return f"{int.from_bytes(content[at:at + 4], 'big'):08X}"
