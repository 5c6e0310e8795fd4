"""GT06 (Concox/Jimi) binary protocol: the codec of the GPS bracelets and trackers.

A frame is ``7878`` + 1-byte length (or ``7979`` + 2-byte length), protocol number, content,
2-byte serial, CRC-ITU over length..serial, ``0D0A``; the length counts protocol..CRC. Only the
login (0x01) names the device (IMEI in BCD); every later frame is decoded for the connection's
``session_device``. The trio of Traccar's design, pure here:

- :class:`~gateway.gt06_framing.Gt06Framer` (its own module, with the CRC) cuts the byte stream at the declared length and resynchronises on the
  start bits: a candidate whose stop bits are not where its length says is garbage, one byte
  is skipped and the search goes on. It holds at most one partial frame; a declared length
  over the limit is a :class:`~gateway.codec.FrameError`.
- :meth:`Gt06Codec.decode` checks the envelope and the CRC, then decodes login 0x01, status
  0x13, location 0x12/0x22, multi-cell LBS 0x28, alarms 0x16/0x26/0x27 and the time request
  0x8A; any other protocol number is ``unknown`` (no reply: the Concox documents require none
  for what we do not decode).
- :class:`~gateway.gt06_tables.AlarmTable` (its own module) says what an alarm code and the terminal-information alarm bits mean,
  per device model, because vendors reuse them (docs/gateway-protocols.md has the tables).
  An alarm a table does not know is still raised, as ``DeviceAlarm("other")`` with its code.
- A location or alarm without a usable fix, and every multi-cell LBS 0x28, also yields a
  ``RadioScan`` of its towers (:mod:`gateway.radio`), after any alarm: what a geolocation
  provider needs to place a tracker indoors. With a usable fix it does not.

Sources: the Concox JM-VL03 protocol V1.1.2 and the GT06 protocol (packet layouts, alarm codes,
voltage and GSM levels, reply examples) and Traccar's ``Gt06ProtocolDecoder`` (MNC width bit,
the alarm bits 110/111 and the VXT01 variant).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from foundation.errors import ConfigError, ValidationError
from gateway import gt06_commands
from gateway.codec import Decoded, Outgoing, plausible_ts
from gateway.gt06_framing import (
    LONG_START,
    MAX_LONG_FRAME,
    SHORT_START,
    STOP,
    Gt06Framer,
    build_frame,
    crc_itu,
)
from gateway.gt06_tables import (
    BATTERY_PCT,
    MODEL_TABLES,
    RSSI_DBM,
    AlarmEntry,
    AlarmTable,
    Meaning,
)
from gateway.radio import radio_scan
from schemas.commands import DeviceCommand
from schemas.readings import DeviceAlarm, Fall, Heartbeat, Location, Reading, Sos

LOGIN, LOCATION, STATUS, ALARM, LOCATION_2, ALARM_2, ALARM_FENCES, LBS, TIME = (
    0x01, 0x12, 0x13, 0x16, 0x22, 0x26, 0x27, 0x28, 0x8A)

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
            gt06_commands.ANSWER_GT06: self._answer, gt06_commands.ANSWER_CONCOX: self._answer,
        }

    def framer(self) -> Gt06Framer:
        """A new framer for one connection."""
        return Gt06Framer()

    def encode_command(self, command: DeviceCommand, *, device_id: str,
                       context: Mapping[str, object], serial: int) -> Outgoing:
        """``command`` as an online command 0x80 (:mod:`gateway.gt06_commands`)."""
        return gt06_commands.encode_command(command, device_id=device_id, context=context,
                                            serial=serial)

    def _answer(self, ctx: _Ctx, r: _Reader) -> Decoded:
        # The tracker's answer to a 0x80 command; its text is not kept (gt06_commands).
        flag = gt06_commands.answer_flag(ctx.protocol, r.rest())
        return Decoded(device_id=None, command=ctx.command, acknowledges=flag,
                       extra={"serial": ctx.serial})

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
        else:
            readings = _scan(ctx, ts, [extra["cell"]])
        return Decoded(device_id=None, command=ctx.command, readings=readings,
                       device_time=device_time, extra=extra)

    def _lbs(self, ctx: _Ctx, r: _Reader) -> Decoded:
        ts, device_time = _ts(r.take(6, "date-time"), ctx.now_ms)
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
        return Decoded(device_id=None, command=ctx.command, readings=_scan(ctx, ts, cells),
                       device_time=device_time, extra=extra)

    def _alarm(self, ctx: _Ctx, r: _Reader) -> Decoded:
        fix = _read_fix(r)
        extra: dict[str, object] = {"serial": ctx.serial, "model": ctx.table.name, **fix.facts}
        lbs_length = r.uint(1, "LBS length")  # counts itself; 0 or 1: no cell
        if lbs_length > 1:
            lbs = r.take(lbs_length - 1, "LBS information")
            try:
                extra["cell"] = _read_cell(_Reader(lbs, ctx.command))
            except ValidationError as exc:  # a short cell block must not cost the alarm
                extra["cell_unparsed"] = exc.reason
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
        if position is None and "cell" in extra:
            readings += _scan(ctx, ts, [extra["cell"]])
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


def _scan(ctx: _Ctx, ts: int, cells: Sequence[object]) -> tuple[Reading, ...]:
    """The towers of a frame without a usable fix, as a radio scan (GT06 levels are a raw
    byte, not dBm: none is kept)."""
    scan = radio_scan(device_id=ctx.device, ts=ts, cells=cells, signal_key=None)
    return (scan,) if scan is not None else ()


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

