"""GT06 (Concox/Jimi) binary protocol: the codec of the GPS bracelets and trackers.

A frame is ``7878`` + 1-byte length (or ``7979`` + 2-byte length), protocol number, content,
2-byte serial, CRC-ITU over length..serial, ``0D0A``; the length counts protocol..CRC. Only the
login (0x01) names the device (IMEI in BCD); every later frame is decoded for the connection's
``session_device``. The trio of Traccar's design, pure here:

- :class:`Gt06Framer` cuts the byte stream at the declared length and resynchronises on the
  start bits: a candidate whose stop bits are not where its length says is garbage, one byte
  is skipped and the search goes on. It holds at most one partial frame; a declared length
  over the limit is a :class:`~gateway.codec.FrameError`.
- :meth:`Gt06Codec.decode` checks the envelope and the CRC, then decodes login 0x01, status
  0x13, location 0x12/0x22, multi-cell LBS 0x28, alarms 0x16/0x26/0x27 and the time request
  0x8A; any other protocol number is ``unknown`` (no reply: the Concox documents require none
  for what we do not decode).
- :class:`AlarmTable` says what an alarm code and the terminal-information alarm bits mean,
  per device model, because vendors reuse them (docs/gateway-protocols.md has the tables).
  An alarm a table does not know is still raised, as ``DeviceAlarm("other")`` with its code.

Sources: the Concox JM-VL03 protocol V1.1.2 and the GT06 protocol (packet layouts, alarm codes,
voltage and GSM levels, reply examples) and Traccar's ``Gt06ProtocolDecoder`` (MNC width bit,
the alarm bits 110/111 and the VXT01 variant).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from foundation.errors import ConfigError, ValidationError
from gateway.codec import Decoded, FrameError, plausible_ts
from schemas.readings import DeviceAlarm, DeviceAlarmKind, Fall, Heartbeat, Location, Reading, Sos

SHORT_START: Final = b"\x78\x78"
LONG_START: Final = b"\x79\x79"
STOP: Final = b"\r\n"
#: Frame limits in bytes on the wire. A short frame cannot exceed 260 (1-byte length); the
#: long form is used by Concox for text and multi-cell reports, all well under 4 KiB.
MAX_SHORT_FRAME: Final = 1024
MAX_LONG_FRAME: Final = 4096

LOGIN, LOCATION, STATUS, ALARM, LOCATION_2, ALARM_2, ALARM_FENCES, LBS, TIME = (
    0x01, 0x12, 0x13, 0x16, 0x22, 0x26, 0x27, 0x28, 0x8A)

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


# --- Alarm tables ----------------------------------------------------------------------------

#: What an alarm means: a reading type, a device-alarm kind, or ``none`` (the "normal" code).
Meaning = Literal["sos", "fall", "none"] | DeviceAlarmKind


class AlarmEntry(NamedTuple):
    """One alarm code: its meaning and the vendor's name for it (for logs and docs)."""

    meaning: Meaning
    label: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AlarmTable:
    """The alarm meanings of one device model. ``codes``: the alarm byte of 0x16/0x26/0x27
    (and of the 0x13 status); ``status``: terminal-information bits 3-5 (0-7);
    ``heartbeat_alarms``: whether the 0x13 status frame's bits 3-5 and first alarm/language
    byte carry alarms (GT06) or extension bits and port status (JM-VL03). A code missing from
    the table is raised as ``DeviceAlarm("other")`` with its code, never dropped."""

    name: str
    codes: Mapping[int, AlarmEntry]
    status: Mapping[int, AlarmEntry]
    heartbeat_alarms: bool = True

    def derive(self, *, name: str, codes: Mapping[int, AlarmEntry] | None = None,
               status: Mapping[int, AlarmEntry] | None = None,
               heartbeat_alarms: bool | None = None) -> AlarmTable:
        """A model's table: this one with the given entries replaced or added."""
        return AlarmTable(
            name=name, codes=MappingProxyType({**self.codes, **(codes or {})}),
            status=MappingProxyType({**self.status, **(status or {})}),
            heartbeat_alarms=(self.heartbeat_alarms if heartbeat_alarms is None
                              else heartbeat_alarms))


def _entries(raw: dict[int, tuple[Meaning, str]]) -> Mapping[int, AlarmEntry]:
    return MappingProxyType({code: AlarmEntry(*entry) for code, entry in raw.items()})


#: Concox's alarm byte (JM-VL03 V1.1.2, same codes as Traccar's decodeAlarm) and status bits.
#: Codes that report a vehicle's or the device's routine state (ignition, driving style, GPS
#: coverage, power-on, sleep) are ``none``: on an elder's bracelet they say nothing about the
#: person, and as alerts they would bury the alarms that do (the frame is still answered, its
#: position stored, its code logged in ``extra``). Unknown codes stay ``other``: a person looks.
DEFAULT_TABLE: Final = AlarmTable(name="gt06", codes=_entries({
    0x00: ("none", "normal"), 0x01: ("sos", "SOS"), 0x02: ("power_cut", "power cut"),
    0x03: ("vibration", "vibration"), 0x04: ("fence_enter", "entered fence"),
    0x05: ("fence_exit", "left fence"), 0x06: ("overspeed", "speed"),
    0x09: ("other", "tow/theft (moved)"), 0x0A: ("none", "entered GPS blind spot"),
    0x0B: ("none", "left GPS blind spot"), 0x0C: ("none", "powered on"),
    0x0D: ("none", "GPS first fix"), 0x0E: ("low_battery", "low external battery"),
    0x0F: ("low_battery", "external battery low-voltage protection"),
    0x10: ("other", "SIM changed"), 0x11: ("other", "powered off"),
    0x12: ("other", "airplane mode after low-voltage protection"),
    0x13: ("cover_removed", "tamper (removed)"), 0x14: ("other", "door"),
    0x15: ("low_battery", "powered off: low battery"), 0x16: ("other", "sound-control"),
    0x17: ("other", "rogue base station"), 0x18: ("cover_removed", "cover removed"),
    0x19: ("low_battery", "low internal battery"), 0x20: ("none", "deep sleep"),
    0x23: ("fall", "fall"), 0x29: ("none", "harsh acceleration"),
    0x2A: ("none", "sharp left turn"), 0x2B: ("none", "sharp right turn"),
    0x2C: ("other", "collision"), 0x30: ("none", "harsh braking"),
    0x32: ("other", "device unplugged"), 0xFE: ("none", "ACC on"), 0xFF: ("none", "ACC off"),
}), status=_entries({
    0: ("none", "normal"), 1: ("vibration", "vibration"), 2: ("power_cut", "power cut"),
    3: ("low_battery", "low battery"), 4: ("sos", "SOS"),
    6: ("other", "fence (Traccar)"), 7: ("cover_removed", "removal (Traccar)"),
}))

#: Named model tables; a device's model comes from the codec's configuration.
MODEL_TABLES: Final[Mapping[str, AlarmTable]] = MappingProxyType({
    "gt06": DEFAULT_TABLE,
    # JM-VL03 V1.1.2: the heartbeat's bits 3-5 are "extended bits", its 2 bytes "language/
    # extended port status": no alarms there (alarm frames keep the default meanings).
    "jm-vl03": DEFAULT_TABLE.derive(name="jm-vl03", heartbeat_alarms=False),
    # Traccar's VXT01 variant: status bits 111 are overspeed, not removal.
    "vxt01": DEFAULT_TABLE.derive(name="vxt01", status=_entries({7: ("overspeed", "overspeed")})),
})

#: Voltage level 0-6 -> percent. The levels are voltage bands; the vendor names level 2 the
#: device's own low-battery alarm, so 0-2 map under the detectors' 20 % low-battery threshold
#: and 3 under its 40 % re-arm level (Traccar maps linearly, level*100/6: 2 would be 33 %).
BATTERY_PCT: Final = MappingProxyType({0: 0.0, 1: 5.0, 2: 15.0, 3: 35.0, 4: 60.0, 5: 80.0,
                                       6: 100.0})
#: GSM level 0-4 -> dBm: the lower edge of each band on the 3GPP CSQ scale (CSQ 0, 5, 10, 15,
#: 20; dBm = 2*CSQ - 113). The device reports only the band, never a measurement.
RSSI_DBM: Final = MappingProxyType({0: -113.0, 1: -103.0, 2: -93.0, 3: -83.0, 4: -73.0})


# --- Content parsing -------------------------------------------------------------------------


class _Reader:
    """A cursor over a frame's content that names the field a short frame lacks."""

    def __init__(self, data: bytes, command: str) -> None:
        self._data, self._pos, self._command = data, 0, command

    def take(self, n: int, what: str) -> bytes:
        if self._pos + n > len(self._data):
            raise ValidationError(f"GT06 {self._command}: content ends before the {what} "
                                  f"({len(self._data)} bytes)")
        self._pos += n
        return self._data[self._pos - n:self._pos]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def left(self) -> int:
        return len(self._data) - self._pos

    def rest(self) -> bytes:
        return self.take(self.left(), "rest")


@dataclass(frozen=True, slots=True)
class _Fix:
    raw_time: bytes
    positioned: bool
    lat: float
    lon: float
    speed_kmh: int
    facts: dict[str, object]


def _read_fix(r: _Reader) -> _Fix:
    raw_time = r.take(6, "date-time")
    info = r.uint(1, "GPS info")
    lat = r.uint(4, "latitude") / 1_800_000
    lon = r.uint(4, "longitude") / 1_800_000
    speed = r.uint(1, "speed")
    flags = r.uint(2, "course/status")
    lat = lat if flags & 0x0400 else -lat  # bit 10: north
    lon = -lon if flags & 0x0800 else lon  # bit 11: west
    facts: dict[str, object] = {"satellites": info & 0x0F, "course": flags & 0x03FF,
                                "realtime": not flags & 0x2000}
    return _Fix(raw_time, bool(flags & 0x1000), lat, lon, speed, facts)


def _read_cell(r: _Reader) -> dict[str, int]:
    mcc = r.uint(2, "MCC")
    mnc = r.uint(2 if mcc & 0x8000 else 1, "MNC")  # MCC bit 15: a 2-byte MNC (JM-VL03 4G)
    return {"mcc": mcc & 0x7FFF, "mnc": mnc, "lac": r.uint(2, "LAC"), "cid": r.uint(3, "cell id")}


def _device_ms(raw: bytes) -> tuple[int | None, str]:
    y, mo, d, h, mi, s = raw
    text = f"{2000 + y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}Z"
    try:
        when = dt.datetime(2000 + y, mo, d, h, mi, s, tzinfo=dt.UTC)
    except ValueError:
        return None, text
    return int(when.timestamp()) * 1000, text


@dataclass(frozen=True, slots=True, kw_only=True)
class _Ctx:
    command: str
    protocol: int
    serial: int
    now_ms: int
    device: str
    table: AlarmTable


# --- The codec -------------------------------------------------------------------------------


class Gt06Codec:
    """The GT06 protocol behind :class:`gateway.codec.Codec`. ``model`` names the alarm table
    of devices not in ``device_models`` (IMEI -> model name); both are checked here, at start."""

    name: str = "gt06"
    max_frame_bytes: int = MAX_LONG_FRAME

    def __init__(self, *, model: str = "gt06", device_models: Mapping[str, str] | None = None,
                 tables: Mapping[str, AlarmTable] = MODEL_TABLES) -> None:
        unknown = {model, *(device_models or {}).values()} - set(tables)
        if unknown:
            raise ConfigError(f"gt06: unknown device model(s) {sorted(unknown)}; "
                              f"known: {sorted(tables)}")
        self._default = tables[model]
        self._per_device = {imei: tables[m] for imei, m in (device_models or {}).items()}
        self._handlers: dict[int, Callable[[_Ctx, _Reader], Decoded]] = {
            STATUS: self._status, LOCATION: self._location, LOCATION_2: self._location,
            LBS: self._lbs, ALARM: self._alarm, ALARM_2: self._alarm, ALARM_FENCES: self._alarm,
            TIME: self._time,
        }

    def framer(self) -> Gt06Framer:
        """A new framer for one connection."""
        return Gt06Framer()

    def decode(self, frame: bytes, *, now_ms: int, session_device: str | None) -> Decoded:
        """One frame; :class:`ValidationError` for a malformed one (see the module docstring)."""
        protocol, content, serial = _open(frame)
        command = f"0x{protocol:02X}"
        if protocol == LOGIN:
            return _login(content, serial)
        if session_device is None:
            raise ValidationError(f"GT06 {command} frame before login: no device to assign it to")
        handler = self._handlers.get(protocol)
        if handler is None:
            return Decoded(device_id=None, command=command, unknown=True,
                           extra={"serial": serial, "content_bytes": len(content)})
        ctx = _Ctx(command=command, protocol=protocol, serial=serial, now_ms=now_ms,
                   device=session_device,
                   table=self._per_device.get(session_device, self._default))
        return handler(ctx, _Reader(content, command))

    def _status(self, ctx: _Ctx, r: _Reader) -> Decoded:
        reply = build_frame(ctx.protocol, b"", ctx.serial)
        if not 3 <= r.left() <= 5:
            # Not the Concox layout (terminal info, voltage, GSM, alarm, language): some clones
            # send a longer status of their own. Still a keep-alive; no field is guessed.
            return Decoded(device_id=None, command=ctx.command, reply=reply,
                           readings=(Heartbeat(device_id=ctx.device, ts=ctx.now_ms),),
                           extra={"serial": ctx.serial, "status_raw": r.rest().hex()})
        info = r.uint(1, "terminal info")
        level, gsm = r.uint(1, "voltage level"), r.uint(1, "GSM level")
        extra: dict[str, object] = {"serial": ctx.serial, "model": ctx.table.name,
                                    **_terminal(info), "voltage_level": level, "gsm_level": gsm}
        code = r.uint(1, "alarm byte") if r.left() else None
        if r.left():
            extra["language"] = r.uint(1, "language")
        readings: list[Reading] = [Heartbeat(device_id=ctx.device, ts=ctx.now_ms,
                                             battery_pct=BATTERY_PCT.get(level),
                                             rssi_dbm=RSSI_DBM.get(gsm))]
        if ctx.table.heartbeat_alarms:
            readings += _alarms(ctx, code=code, bits=(info >> 3) & 7, ts=ctx.now_ms, fix=None)
        return Decoded(device_id=None, command=ctx.command, readings=tuple(readings),
                       reply=reply, extra=extra)

    def _location(self, ctx: _Ctx, r: _Reader) -> Decoded:
        fix = _read_fix(r)
        extra: dict[str, object] = {"serial": ctx.serial, **fix.facts, "cell": _read_cell(r)}
        if ctx.protocol == LOCATION_2:
            extra.update(acc=r.uint(1, "ACC"), upload_mode=r.uint(1, "upload mode"),
                         reupload=bool(r.uint(1, "re-upload flag")))
            if r.left() >= 4:
                extra["mileage"] = r.uint(4, "mileage")
        if r.left():
            extra["trailing"] = r.rest().hex()
        ts, device_time = _ts(fix.raw_time, ctx.now_ms)
        readings: tuple[Reading, ...] = ()
        if fix.positioned:
            _check_position(fix, ctx.command)
            readings = (Location(device_id=ctx.device, ts=ts, lat=fix.lat, lon=fix.lon,
                                 speed_mps=round(fix.speed_kmh / 3.6, 2), source="gps"),)
        return Decoded(device_id=None, command=ctx.command, readings=readings,
                       device_time=device_time, extra=extra)

    def _lbs(self, ctx: _Ctx, r: _Reader) -> Decoded:
        _, device_time = _ts(r.take(6, "date-time"), ctx.now_ms)
        mcc = r.uint(2, "MCC")
        mnc = r.uint(2 if mcc & 0x8000 else 1, "MNC")
        cells = []
        for n in range(7):  # the serving cell and six neighbours; empty slots are zero
            lac, cid, rssi = r.uint(2, f"LAC {n}"), r.uint(3, f"cell id {n}"), r.uint(1, "RSSI")
            if lac or cid:
                cells.append({"mcc": mcc & 0x7FFF, "mnc": mnc, "lac": lac, "cid": cid,
                              "rssi": rssi})
        extra: dict[str, object] = {"serial": ctx.serial, "cells": cells,
                                    "timing_advance": r.uint(1, "timing advance")}
        if r.left() >= 2:
            extra["language"] = r.uint(2, "language")
        if r.left():
            extra["trailing"] = r.rest().hex()
        return Decoded(device_id=None, command=ctx.command, device_time=device_time, extra=extra)

    def _alarm(self, ctx: _Ctx, r: _Reader) -> Decoded:
        fix = _read_fix(r)
        extra: dict[str, object] = {"serial": ctx.serial, "model": ctx.table.name, **fix.facts}
        lbs_length = r.uint(1, "LBS length")  # counts itself; 0: no cell
        if lbs_length:
            cell = _Reader(r.take(lbs_length - 1, "LBS information") if lbs_length > 1
                           else b"", ctx.command)
            extra["cell"] = _read_cell(cell)
        info = r.uint(1, "terminal info")
        level, gsm = r.uint(1, "voltage level"), r.uint(1, "GSM level")
        code = r.uint(1, "alarm byte")
        extra.update(_terminal(info), voltage_level=level, gsm_level=gsm,
                     alarm_code=code, language=r.uint(1, "language"))
        if ctx.protocol == ALARM_FENCES:
            extra["fence"] = r.uint(1, "fence number")
        if r.left():
            extra["trailing"] = r.rest().hex()
        ts, device_time = _ts(fix.raw_time, ctx.now_ms)
        readings: list[Reading] = []
        position = fix if fix.positioned else None
        if position is not None and not _valid_position(position):
            extra["position_rejected"] = "coordinates out of range"  # the alarm still goes
            position = None
        if position is not None:
            readings.append(Location(device_id=ctx.device, ts=ts, lat=position.lat,
                                     lon=position.lon, battery_pct=BATTERY_PCT.get(level),
                                     speed_mps=round(position.speed_kmh / 3.6, 2),
                                     source="gps"))
        readings += _alarms(ctx, code=code, bits=(info >> 3) & 7, ts=ts, fix=position)
        return Decoded(device_id=None, command=ctx.command, readings=tuple(readings),
                       reply=build_frame(ctx.protocol, b"", ctx.serial),
                       reply_when="after_publish", device_time=device_time, extra=extra)

    def _time(self, ctx: _Ctx, r: _Reader) -> Decoded:
        # The device asks for UTC (it has no fix yet): answered from the receipt time.
        now = dt.datetime.fromtimestamp(ctx.now_ms // 1000, tz=dt.UTC)
        content = bytes([now.year - 2000, now.month, now.day, now.hour, now.minute, now.second])
        return Decoded(device_id=None, command=ctx.command, extra={"serial": ctx.serial},
                       reply=build_frame(TIME, content, ctx.serial))


def _open(frame: bytes) -> tuple[int, bytes, int]:
    """Protocol number, content and serial of a whole frame whose envelope and CRC check."""
    if frame[:2] == SHORT_START:
        head = 3
    elif frame[:2] == LONG_START:
        head = 4
    else:
        raise ValidationError(f"GT06 frame: start bits {frame[:2].hex()!r}, not 7878 or 7979")
    if len(frame) < head + 7:
        raise ValidationError(f"GT06 frame: {len(frame)} bytes, too short for a frame")
    length = int.from_bytes(frame[2:head], "big")
    if length < 5:
        raise ValidationError(f"GT06 frame: length field {length} is under 5 "
                              "(protocol + serial + CRC)")
    if len(frame) != head + length + 2:
        raise ValidationError(f"GT06 frame: length field {length} says {head + length + 2} "
                              f"bytes, the frame has {len(frame)}")
    if frame[-2:] != STOP:
        raise ValidationError(f"GT06 frame: stop bits {frame[-2:].hex()!r}, not 0d0a")
    said, computed = int.from_bytes(frame[-4:-2], "big"), crc_itu(frame[2:-4])
    if said != computed:
        raise ValidationError(f"GT06 frame: CRC mismatch (frame says 0x{said:04X}, "
                              f"content gives 0x{computed:04X})")
    return frame[head], frame[head + 1:-6], int.from_bytes(frame[-6:-4], "big")


def _login(content: bytes, serial: int) -> Decoded:
    r = _Reader(content, "0x01")
    digits = r.take(8, "IMEI").hex()
    if not digits.isdigit():
        raise ValidationError(f"GT06 0x01: IMEI {digits!r} is not BCD")
    extra: dict[str, object] = {"serial": serial}
    if r.left() >= 2:
        extra["type_id"] = r.take(2, "type id").hex()
    if r.left() >= 2:
        extra["timezone_language"] = r.take(2, "time zone").hex()
    return Decoded(device_id=digits[1:] if digits[0] == "0" else digits, command="0x01",
                   login=True, reply=build_frame(LOGIN, b"", serial), extra=extra)


def _terminal(info: int) -> dict[str, object]:
    """Every bit of the terminal-information byte, for the record."""
    return {"terminal_info": info, "oil_cut": bool(info & 0x80), "gps_tracking": bool(info & 0x40),
            "alarm_bits": f"{(info >> 3) & 7:03b}", "charging": bool(info & 0x04),
            "acc": bool(info & 0x02), "defence": bool(info & 0x01)}


def _ts(raw: bytes, now_ms: int) -> tuple[int, str | None]:
    device_ms, text = _device_ms(raw)
    if device_ms is not None and plausible_ts(device_ms, now_ms=now_ms):
        return device_ms, None
    return now_ms, text


def _valid_position(fix: _Fix) -> bool:
    return abs(fix.lat) <= 90.0 and abs(fix.lon) <= 180.0


def _check_position(fix: _Fix, command: str) -> None:
    if not _valid_position(fix):
        raise ValidationError(f"GT06 {command}: positioned fix with coordinates out of range")


def _alarms(ctx: _Ctx, *, code: int | None, bits: int, ts: int,
            fix: _Fix | None) -> list[Reading]:
    """The readings of an alarm byte and of the status alarm bits, each meaning once."""
    found: list[tuple[Meaning, str]] = []
    if code is not None:
        entry = ctx.table.codes.get(code, AlarmEntry("other", "unknown"))
        found.append((entry.meaning, f"GT06 {ctx.command}/0x{code:02X}"))
    entry = ctx.table.status.get(bits, AlarmEntry("other", "unknown"))
    found.append((entry.meaning, f"GT06 {ctx.command}/status {bits:03b}"))
    lat, lon = (fix.lat, fix.lon) if fix is not None else (None, None)
    readings: list[Reading] = []
    seen: set[tuple[str, str | None]] = set()
    for meaning, vendor_code in found:
        key = (meaning, vendor_code if meaning == "other" else None)
        if key in seen:
            continue
        seen.add(key)
        match meaning:
            case "none":
                continue
            case "sos":
                readings.append(Sos(device_id=ctx.device, ts=ts, lat=lat, lon=lon))
            case "fall":
                readings.append(Fall(device_id=ctx.device, ts=ts, lat=lat, lon=lon))
            case kind:
                readings.append(DeviceAlarm(device_id=ctx.device, ts=ts, alarm=kind,
                                            code=vendor_code, lat=lat, lon=lon))
    return readings
