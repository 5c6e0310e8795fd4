"""The 3G watch protocol's envelope: ``[VV*ID*LLLL*CONTENT]`` framing, escapes and header.

Split out of :mod:`gateway.watch3g` (the command decoder) so each module holds one concept;
the module docstring there says why the length field is not enforced and how garbage and cut-
short frames are handled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from foundation.errors import ValidationError
from gateway.codec import FrameError
from schemas.readings import DEVICE_ID_PATTERN

#: A voice message (AMR) or a small JPEG fits; longer is a broken or hostile device.
MAX_FRAME_BYTES: Final = 64 * 1024

_UNESCAPE: Final = {b"\x01": b"}", b"\x02": b"[", b"\x03": b"]", b"\x04": b",", b"\x05": b"*"}
_ESCAPE_RE: Final = re.compile(rb"\}([\x01-\x05])")
_VENDOR_RE: Final = re.compile(rb"[A-Za-z0-9]{1,8}")
_DEVICE_ID_RE: Final = re.compile(DEVICE_ID_PATTERN)
_LENGTHS_RE: Final = re.compile(rb"(?:([0-9A-Fa-f]{4})\*)?([0-9A-Fa-f]{4})\*")
_COMMAND_RE: Final = re.compile(rb"[A-Za-z0-9_]{1,32}")


class WatchFramer:
    """Splits one connection's bytes into ``[...]`` frames (escaped, brackets included)."""

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._max = max_frame_bytes
        self._buf = bytearray()  # empty, or one partial frame starting with "["
        self._scanned = 1  # bytes of the partial frame already searched for "]" and "["
        self._skipped = 0

    @property
    def skipped_bytes(self) -> int:
        """Garbage bytes skipped so far."""
        return self._skipped

    def feed(self, data: bytes) -> list[bytes]:
        """The frames ``data`` completes, in order; :class:`FrameError` beyond the limit."""
        self._buf += data
        frames: list[bytes] = []
        while self._buf:
            if self._buf[0] != 0x5B:  # "["
                start = self._buf.find(b"[")
                cut = len(self._buf) if start < 0 else start
                self._skipped += cut
                del self._buf[:cut]
                self._scanned = 1
                continue
            end = self._buf.find(b"]", self._scanned)
            restart = self._buf.find(b"[", self._scanned, len(self._buf) if end < 0 else end)
            if restart >= 0:  # a cut-short frame: drop it, resynchronise on the new "["
                self._skipped += restart
                del self._buf[:restart]
                self._scanned = 1
                continue
            if end < 0:
                self._scanned = len(self._buf)
                if len(self._buf) > self._max:
                    self._buf.clear()
                    raise FrameError(f"watch frame exceeds {self._max} bytes without ']'")
                break
            if end + 1 > self._max:
                self._buf.clear()
                raise FrameError(f"watch frame of {end + 1} bytes exceeds {self._max}")
            frames.append(bytes(self._buf[: end + 1]))
            del self._buf[: end + 1]
            self._scanned = 1
        return frames


@dataclass(frozen=True, slots=True)
class Header:
    """The parts of a frame every handler needs."""

    vendor: str
    device_id: str
    index: str | None
    command: str
    extra: dict[str, object]

    def reply(self, content: str) -> bytes:
        """``content`` framed for this watch: same vendor, id and index field."""
        return build_frame(self.vendor, self.device_id, content.encode(), index=self.index)


def build_frame(vendor: str, device_id: str, content: bytes, *, index: str | None = None) -> bytes:
    """A whole frame ``[VV*ID*LLLL*CONTENT]`` (or with the index field): what a watch sends and
    what the gateway answers. ``content`` goes as is (binary content already escaped); the
    length counts it as sent, which is how :func:`parse_header` reads it."""
    head = f"[{vendor}*{device_id}*" + (f"{index}*" if index is not None else "")
    return head.encode() + f"{len(content):04X}*".encode() + content + b"]"


def unescape(raw: bytes) -> tuple[bytes, int]:
    """Content unescaped, and how many ``}`` were not an escape (kept as they are: a Wi-Fi
    name with a brace must not cost an alarm frame)."""
    if b"}" not in raw:
        return raw, 0
    content, escapes = _ESCAPE_RE.subn(lambda m: _UNESCAPE[m.group(1)], raw)
    return content, raw.count(b"}") - escapes


def parse_header(frame: bytes) -> tuple[Header, bytes]:
    if len(frame) < 2 or frame[:1] != b"[" or frame[-1:] != b"]":
        raise ValidationError("watch frame must start with '[' and end with ']'")
    parts = frame[1:-1].split(b"*", 2)
    if len(parts) < 3:
        raise ValidationError("watch frame needs vendor*id*length*content")
    vendor_b, id_b, rest = parts
    if not _VENDOR_RE.fullmatch(vendor_b):
        raise ValidationError(f"vendor code {vendor_b[:16]!r} is not 1-8 letters or digits")
    device_id = id_b.decode("ascii", "replace")
    if not _DEVICE_ID_RE.match(device_id):
        raise ValidationError(f"device id {device_id[:70]!r} does not match {DEVICE_ID_PATTERN}")
    lengths = _LENGTHS_RE.match(rest)
    if lengths is None:
        raise ValidationError("content length is not 4 hex digits followed by '*'")
    raw = rest[lengths.end():]
    content, stray = unescape(raw)
    command_b, _, args = content.partition(b",")
    if not _COMMAND_RE.fullmatch(command_b):
        raise ValidationError(f"command {command_b[:16]!r} is not 1-32 letters, digits or _")
    extra: dict[str, object] = {"vendor": vendor_b.decode()}
    if lengths[1] is not None:
        extra["index"] = lengths[1].decode()
    if int(lengths[2], 16) != len(raw):
        extra["length_mismatch"] = {"declared": int(lengths[2], 16), "sent": len(raw)}
    if stray:
        extra["stray_braces"] = stray
    index = lengths[1].decode() if lengths[1] is not None else None
    return Header(vendor_b.decode(), device_id, index, command_b.decode(), extra), args
