"""GT06 (Concox/Jimi) framing: the envelope, its CRC-ITU, and the per-connection framer.

A frame is ``7878`` + 1-byte length (or ``7979`` + 2-byte length), protocol number, content,
2-byte serial, CRC-ITU over length..serial, ``0D0A``; the length counts protocol..CRC. Split out
of :mod:`gateway.gt06` (the decoder) so each module holds one concept.
"""

from __future__ import annotations

from typing import Final

from gateway.codec import FrameError

SHORT_START: Final = b"\x78\x78"
LONG_START: Final = b"\x79\x79"
STOP: Final = b"\r\n"
#: Frame limits in bytes on the wire. A short frame cannot exceed 260 (1-byte length); the
#: long form is used by Concox for text and multi-cell reports, all well under 4 KiB.
MAX_SHORT_FRAME: Final = 1024
MAX_LONG_FRAME: Final = 4096

# --- CRC-ITU ---------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE: Final = _crc_table()


def crc_itu(data: bytes | bytearray) -> int:
    """CRC-16/X-25 (the "CRC-ITU" of the Concox documents): polynomial 0x1021 reflected
    (0x8408), initial 0xFFFF, final XOR 0xFFFF. Check value: ``crc_itu(b"123456789") == 0x906E``
    (the CRC catalogue's entry for CRC-16/IBM-SDLC, alias X-25)."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def build_frame(protocol: int, content: bytes, serial: int, *, long: bool = False) -> bytes:
    """A complete frame: start bits, length, protocol, content, serial, CRC, stop bits."""
    length = 1 + len(content) + 4
    header = LONG_START + length.to_bytes(2, "big") if long else SHORT_START + bytes([length])
    body = header[2:] + bytes([protocol]) + content + serial.to_bytes(2, "big")
    return header[:2] + body + crc_itu(body).to_bytes(2, "big") + STOP


# --- Framing ---------------------------------------------------------------------------------


class Gt06Framer:
    """Splits one connection's bytes into GT06 frames (see the module docstring)."""

    def __init__(self, *, max_short: int = MAX_SHORT_FRAME, max_long: int = MAX_LONG_FRAME):
        self._buf = bytearray()
        self._skipped = 0
        self._limits = {SHORT_START[0]: max_short, LONG_START[0]: max_long}

    @property
    def skipped_bytes(self) -> int:
        """Garbage bytes skipped so far."""
        return self._skipped

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a frame not yet complete (never more than the frame limit)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """The whole frames completed by ``data``; :class:`FrameError` over the limit."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        while True:
            start = _find_start(buf, pos)
            if start < 0:
                # Keep a last 0x78/0x79: it may be the first half of the next start bits.
                end = len(buf) - 1 if buf and buf[-1] in (0x78, 0x79) else len(buf)
                self._skipped += max(end - pos, 0)
                pos = max(end, pos)
                break
            self._skipped += start - pos
            pos = start
            head = 4 if buf[start] == LONG_START[0] else 3
            if len(buf) - start < head:
                break
            total = head + int.from_bytes(buf[start + 2:start + head], "big") + 2
            limit = self._limits[buf[start]]
            end = start + total
            if total > limit or end > len(buf):
                # A stray 0x78 before a frame makes a candidate that waits for bytes that may
                # not come for minutes; a whole frame further on, CRC and all, wins.
                # Over the limit, the same: a stray 0x79 before a 7979 frame declares ~31 KB.
                later = self._valid_after(start + 1, len(buf))
                if later < 0 and total > limit and len(buf) - start >= limit:
                    raise FrameError(f"GT06 frame declares {total} bytes, over the "
                                     f"{limit}-byte limit")
                if later < 0:
                    break
                self._skipped += later - start
                pos = later
                continue
            # Stop bits where the length says, and either a good CRC or no good frame inside
            # (a frame with a bad CRC goes to decode, which reports it).
            if buf[end - 2:end] == STOP and (_crc_ok(buf, start, end)
                                             or self._valid_after(start + 1, end) < 0):
                frames.append(bytes(buf[start:end]))
                pos = end
                continue
            self._skipped += 1  # not a frame: one byte is garbage, search on
            pos = start + 1
        del buf[:pos]
        return frames

    def _valid_after(self, pos: int, before: int) -> int:
        """The first start in ``[pos, before)`` of a whole frame with stop bits and CRC."""
        buf, start = self._buf, _find_start(self._buf, pos)
        while 0 <= start < before:
            head = 4 if buf[start] == LONG_START[0] else 3
            end = start + head + int.from_bytes(buf[start + 2:start + head], "big") + 2
            if (len(buf) - start >= head and end - start <= self._limits[buf[start]]
                    and end <= len(buf) and buf[end - 2:end] == STOP
                    and _crc_ok(buf, start, end)):
                return start
            start = _find_start(buf, start + 1)
        return -1


def _crc_ok(buf: bytes | bytearray, start: int, end: int) -> bool:
    head = 4 if buf[start] == LONG_START[0] else 3
    return end - start >= head + 7 and crc_itu(buf[start + 2:end - 4]) == int.from_bytes(
        buf[end - 4:end - 2], "big")


def _find_start(buf: bytearray, pos: int) -> int:
    found = [i for i in (buf.find(SHORT_START, pos), buf.find(LONG_START, pos)) if i >= 0]
    return min(found, default=-1)

