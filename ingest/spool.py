"""A durable local log on disk: what the service holds for PostgreSQL while it cannot have it.

Two logs use it (docs/spool.md): the *message spool* (raw MQTT messages
acknowledged to the broker while the database is down or the pipeline is overloaded, replayed
into the pipeline later) and the *event journal* (detection events that could not be stored).
Both share the rule of the pipeline: nothing is acknowledged before it is durable, so
:meth:`SegmentLog.append` returns only after ``fsync``.

Layout: ``<dir>/<name>-<000000000001>.seg`` files, appended to one at a time; a segment is
*sealed* (never written again) when it reaches ``segment_bytes`` or when a reader asks for it.
A segment is a sequence of frames ``[length u32][crc32 u32][msgpack array of records]``; a
frame torn by a crash (short or bad checksum) ends the segment. Its records were never
acknowledged (``append`` had not returned), so the broker redelivers them: skipping it loses
nothing. Segments are released (deleted) only once everything in them is stored.

Bounded: ``max_bytes`` over all segments. :class:`SpoolFull` tells the caller to fall back to
back-pressure (leave messages with the broker), which is slower but loses nothing either.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec

from foundation.errors import StorageError

log = logging.getLogger(__name__)

_HEADER: Final = struct.Struct(">II")
_SEGMENT_RE: Final = re.compile(r"([a-z]+)-(\d{12})\.seg\Z")


class SpoolError(StorageError):
    """The local spool cannot take or give back records (disk full, unwritable directory)."""


class SpoolFull(SpoolError):
    """The spool holds ``max_bytes`` already; the caller keeps the data elsewhere."""


class SegmentLog:
    """Append-only, fsync'ed, segmented log of msgpack-encodable records (see module docstring).

    Thread-safe: writers append under a lock; a reader seals, reads and releases whole segments.
    """

    def __init__(self, directory: Path | str, *, name: str, max_bytes: int,
                 segment_bytes: int = 8 * 1024 * 1024) -> None:
        if not re.fullmatch(r"[a-z]+", name):
            raise ValueError("a segment log name is lowercase letters")
        if max_bytes < 1 or segment_bytes < 1:
            raise ValueError("spool sizes must be positive")
        self.directory = Path(directory)
        self.name = name
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._encoder = msgspec.msgpack.Encoder()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            found = sorted(int(m.group(2)) for p in self.directory.iterdir()
                           if (m := _SEGMENT_RE.fullmatch(p.name)) and m.group(1) == name)
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory}: {exc.strerror or exc}") from exc
        #: Sealed segments (left by an earlier run, or full), oldest first.
        self._sealed: list[int] = found
        self._sizes = {s: self._path(s).stat().st_size for s in found}
        self._next = (found[-1] + 1) if found else 1
        self._current: int | None = None
        self._file: Any = None
        if found:
            log.warning("%s spool: %d segments (%d bytes) left by an earlier run", name,
                        len(found), sum(self._sizes.values()))

    def _path(self, segment: int) -> Path:
        return self.directory / f"{self.name}-{segment:012d}.seg"

    @property
    def bytes(self) -> int:
        """Bytes held, over all segments."""
        with self._lock:
            return sum(self._sizes.values())

    def held(self) -> dict[int, int]:
        """Bytes per segment held (sealed and open)."""
        with self._lock:
            return dict(self._sizes)

    def append(self, records: Sequence[object]) -> None:
        """Write ``records`` as one frame and ``fsync`` it. Raises :class:`SpoolFull` or
        :class:`SpoolError`; on either, nothing of ``records`` counts as written."""
        if not records:
            return
        payload = self._encoder.encode(list(records))
        frame = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        with self._lock:
            if sum(self._sizes.values()) + len(frame) > self.max_bytes:
                raise SpoolFull(f"{self.name} spool full ({self.max_bytes} bytes)")
            try:
                if self._file is None:
                    self._open_segment()
                assert self._current is not None
                self._file.write(frame)
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                # The frame may be partly written: seal here, so no later frame follows a
                # torn one (a reader stops at the first bad frame).
                self._seal_locked()
                raise SpoolError(f"{self.name} spool write failed: {exc.strerror or exc}") \
                    from exc
            self._sizes[self._current] += len(frame)
            if self._sizes[self._current] >= self.segment_bytes:
                self._seal_locked()

    def _open_segment(self) -> None:
        self._current = self._next
        self._next += 1
        self._file = open(self._path(self._current), "ab")  # noqa: SIM115 (held open)
        self._sizes[self._current] = 0
        _fsync_dir(self.directory)  # the new name must survive a crash too

    def _seal_locked(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            assert self._current is not None
            self._sealed.append(self._current)
            self._file = None
            self._current = None

    def sealed(self, *, seal_current: bool = False) -> list[int]:
        """Segments ready to read, oldest first. ``seal_current`` seals the open segment first
        (when it holds anything), so a reader can take what was appended so far."""
        with self._lock:
            if seal_current and self._current is not None and self._sizes[self._current]:
                self._seal_locked()
            return list(self._sealed)

    def read(self, segment: int) -> list[Any]:
        """The records of a sealed segment, in append order; a torn last frame is skipped."""
        try:
            data = self._path(segment).read_bytes()
        except OSError as exc:
            raise SpoolError(f"cannot read {self._path(segment)}: {exc.strerror}") from exc
        out: list[Any] = []
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size:pos + _HEADER.size + length]
            if len(body) < length or zlib.crc32(body) != crc:
                log.warning("%s: torn frame at byte %d skipped (never acknowledged)",
                            self._path(segment).name, pos)
                break
            out.extend(msgspec.msgpack.decode(body))
            pos += _HEADER.size + length
        return out

    def release(self, segment: int) -> None:
        """Delete a sealed segment whose records are all stored."""
        with self._lock:
            if segment not in self._sealed:
                raise ValueError(f"segment {segment} is not sealed")
            self._sealed.remove(segment)
            self._sizes.pop(segment, None)
            try:
                self._path(segment).unlink(missing_ok=True)
                _fsync_dir(self.directory)
            except OSError as exc:
                log.error("cannot delete spool segment %s: %s", self._path(segment), exc)

    def close(self) -> None:
        """Close the open segment (it is sealed: the next run replays it)."""
        with self._lock:
            self._seal_locked()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
