"""The "3G" watch protocol (Setracker/Beesure lineage): ``[VV*ID*LLLL*CMD,args]`` over TCP.

The Traccar trio, kept pure (docs/gateway-protocols.md, "3G watch protocol", has the tables):

- :class:`~gateway.watch3g_framing.WatchFramer` (its own module, with the header and the
  escapes) only delimits. ``[`` and ``]`` never occur inside a frame (binary content
  escapes them), so a frame runs from ``[`` to the next ``]``; bytes outside are garbage,
  counted and dropped, and a second ``[`` before the ``]`` means the frame before it was cut
  short (a watch that reconnected mid-frame): dropped too. The buffer holds at most one
  partial frame, and a frame over ``max_frame_bytes`` is a :class:`FrameError`.
- :meth:`WatchCodec.decode` unescapes, parses the header (an optional 4-hex index field, which
  the reply repeats) and dispatches on the command: positions and alarms, keepalives, health.
- The length field counts content bytes *as sent* (escaped): a real ZJ voice frame
  (Traccar's WatchProtocolDecoderTest, ``JXTK``, chunk 0x0039) declares 0x00E5 for 229 bytes
  on the wire, 226 unescaped; Traccar's frame-decoder test counts unescaped bytes, but its
  frame is synthetic. Nothing depends on it: many real frames carry a wrong length (SG
  firmware is off by three), and refusing an SOS over a miscounted length would lose the SOS,
  which the watch then repeats, unanswered, until it gives up. It must be 4 hex digits; a
  mismatch is kept in ``extra``.
- Device time is UTC (what Traccar assumes, and its tests assert, for every 3G firmware; the
  watch's ``zone`` setting moves only its display). Firmware on local time is 8 h ahead in
  China: caught by :func:`~gateway.codec.plausible_ts`, so receipt time is used.
- The status word yields every bit it carries. Alarm bits (14 and 16-22) raise their
  readings on any report; state bits (0-3) raise only on an ``AL`` frame that has no alarm
  bit, and an ``AL`` frame with neither raises ``DeviceAlarm("other")``: an alarm frame is
  never silent.
- A report without a usable fix (``V``, or 0,0) that lists cell towers or Wi-Fi access points
  also yields a ``RadioScan`` of them (:mod:`gateway.radio`), after its alarms: indoors that is
  all a watch knows of where it is. With a usable fix it does not (the fix says it better).

Never logged, never put in ``extra``: coordinates, Wi-Fi network names (they name families).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import msgspec

from foundation.errors import ValidationError
from gateway import watch3g_commands
from gateway.codec import Decoded, Outgoing, ReplyWhen, plausible_ts
from gateway.radio import radio_scan
from gateway.watch3g_framing import MAX_FRAME_BYTES, Header, WatchFramer, parse_header
from schemas.commands import DeviceCommand
from schemas.readings import (
    BodyTemp,
    DeviceAlarm,
    DeviceAlarmKind,
    Fall,
    Heartbeat,
    HeartRate,
    Latitude,
    Location,
    Longitude,
    Percent,
    Pressure,
    Reading,
    Sos,
    Speed,
    SpO2,
    Steps,
    Vitals,
    Wear,
)

#: Status word, alarm half (bit 14 is in the low half but is an alarm: power cut).
ALARM_BITS: Final[dict[int, str]] = {
    14: "power_cut", 16: "sos", 17: "low_battery", 18: "fence_exit", 19: "fence_enter",
    20: "removed", 21: "fall", 22: "fall",
}
#: Status word, state half: conditions, reported on every position.
STATE_BITS: Final[dict[int, str]] = {
    0: "low_battery", 1: "outside_fence", 2: "inside_fence", 3: "worn",
}
#: What a state bit means on an ``AL`` frame that carries no alarm bit. Bit 3 unset is not a
#: removal: watches without a wear sensor always send 0.
STATE_ALARMS: Final[dict[int, DeviceAlarmKind]] = {
    0: "low_battery", 1: "fence_exit", 2: "fence_enter",
}
#: Alarm kinds that only DeviceAlarm carries.
_DEVICE_ALARMS: Final[dict[str, DeviceAlarmKind]] = {
    "low_battery": "low_battery", "fence_exit": "fence_exit", "fence_enter": "fence_enter",
    "power_cut": "power_cut", "other": "other",
}
#: Alarm bits no one has documented (23-31): an ``AL`` frame carrying one raises "other".
UNKNOWN_ALARM_MASK: Final = 0xFF800000

_UD_RE: Final = re.compile(r"UD\d?|UD_[A-Z]+|WT")
_AL_RE: Final = re.compile(r"AL|AL_[A-Z]+|ALCUSTOMER\d*")
# Plain decimal numbers only: float() would also take "nan", "inf", "1e9" and "1_0".
_NUMBER_RE: Final = re.compile(r" *[-+]?\d{1,12}(?:\.\d{0,12})?")
_INT_RE: Final = re.compile(r" *[-+]?\d{1,12}")
_MAC_RE: Final = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


@dataclass(slots=True)
class _Report:
    """A UD/AL position report, parsed; ``lat``/``lon`` only for a usable fix."""

    ts: int
    device_time: str | None
    status: int
    lat: float | None = None
    lon: float | None = None
    speed_mps: float | None = None
    battery_pct: float | None = None
    extra: dict[str, object] = field(default_factory=dict)


def _fits(value: float, limits: object) -> bool:
    """Whether ``value`` is within a wire-contract type's limits (the schema owns them)."""
    if not math.isfinite(value):
        return False
    try:
        msgspec.convert(value, type=limits)
    except msgspec.ValidationError:
        return False
    return True


def _number(text: str, name: str) -> float:
    if not _NUMBER_RE.fullmatch(text):
        raise ValidationError(f"{name} {text[:24]!r} is not a decimal number")
    return float(text)


def _integer(text: str, name: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise ValidationError(f"{name} {text[:24]!r} is not an integer")
    return int(text)


def _status(text: str) -> int:
    if not re.fullmatch(r"[0-9A-Fa-f]{1,8}", text):
        raise ValidationError(f"status {text[:24]!r} is not 1-8 hex digits")
    return int(text, 16)


def _coordinate(text: str, hemisphere: str, negative: str, name: str) -> float:
    # Firmware sends "-33.48,N" (sign wins) and "-9.0,W" (still west): S/W force the sign.
    value = _number(text, name)
    return -abs(value) if hemisphere == negative else value


def _device_ms(date: str, time: str) -> int | None:
    """UTC ``ddmmyy`` ``hhmmss`` in Unix ms; ``None`` when it is no calendar time (000000)."""
    try:
        moment = datetime(2000 + int(date[4:6]), int(date[2:4]), int(date[0:2]),
                          int(time[0:2]), int(time[2:4]), int(time[4:6]), tzinfo=UTC)
    except ValueError:
        return None
    return int(moment.timestamp()) * 1000


def _parse_report(args: list[str], *, now_ms: int) -> _Report:
    """The UD/AL layout: date, time, A/V, lat, N/S, lon, E/W, speed km/h, course, altitude,
    satellites, GSM signal, battery %, steps, tumbles, status hex, then cells and Wi-Fi."""
    if len(args) < 16:
        raise ValidationError(f"position report has {len(args)} fields, needs 16 (to status)")
    date, time, fix, lat_t, ns, lon_t, ew = (a.strip() for a in args[:7])
    if not (re.fullmatch(r"\d{6}", date) and re.fullmatch(r"\d{6}", time)):
        raise ValidationError(f"date/time {date[:8]!r},{time[:8]!r} is not ddmmyy,hhmmss")
    if fix not in ("A", "V"):
        raise ValidationError(f"fix validity {fix[:8]!r} is not A or V")
    if ns not in ("N", "S", "") or ew not in ("E", "W", ""):
        raise ValidationError(f"hemisphere {ns[:4]!r}/{ew[:4]!r} is not N/S and E/W")
    lat = _coordinate(lat_t, ns, "S", "latitude")
    lon = _coordinate(lon_t, ew, "W", "longitude")
    speed_kmh = _number(args[7], "speed")
    extra: dict[str, object] = {
        "fix": fix,
        "course_deg": _number(args[8], "course"),
        "altitude_m": _number(args[9], "altitude"),
        "satellites": _integer(args[10], "satellites"),
        "gsm_signal": _integer(args[11], "GSM signal"),
    }
    battery = _integer(args[12], "battery")
    extra["steps"] = _integer(args[13], "steps")
    extra["tumbles"] = _integer(args[14], "tumbles")
    status = _status(args[15].strip())
    device_ms = _device_ms(date, time)
    believed = plausible_ts(device_ms, now_ms=now_ms)
    report = _Report(
        ts=device_ms if believed and device_ms is not None else now_ms,
        device_time=None if believed else f"{date},{time}",
        status=status, extra=extra,
    )
    if fix == "A" and not (lat == 0 and lon == 0) and _fits(lat, Latitude) and _fits(
            lon, Longitude):
        report.lat, report.lon = lat, lon
    if _fits(speed_kmh / 3.6, Speed):
        report.speed_mps = speed_kmh / 3.6
    if _fits(battery, Percent):
        report.battery_pct = float(battery)
    extra["status"] = f"0x{status:08X}"
    extra["state_bits"] = [name for bit, name in STATE_BITS.items() if status >> bit & 1]
    extra.update(_network(args[16:]))
    return report


def _network(values: list[str]) -> dict[str, object]:
    """Cell towers and Wi-Fi access points (MAC and signal, never the network name), best
    effort: a layout we cannot read is flagged, never fatal (it is evidence, not a reading)."""
    try:
        count = int(values[0]) if values else 0
        cells: list[dict[str, int]] = []
        at = 1
        if count > 0:  # count, timing advance, MCC, MNC, then (LAC, cell id, signal) each
            mcc, mnc = int(values[2] or 0), int(values[3] or 0)
            at = 4
            for _ in range(count):
                lac, cid, rssi = values[at:at + 3]
                cells.append({"mcc": mcc, "mnc": mnc, "lac": int(lac), "cid": int(cid),
                              "signal": int(rssi or 0)})
                at += 3
        # Some firmware puts a timing advance before the Wi-Fi count even with no cells.
        wifi = _wifi(values, at) if count > 0 else (_wifi(values, 1) or _wifi(values, 2))
    except (ValueError, IndexError):
        return {"network_unparsed": True}
    found: dict[str, object] = {}
    if cells:
        found["cells"] = cells
    if wifi:
        found["wifi"] = wifi
    return found


def _wifi(values: list[str], at: int) -> list[dict[str, object]] | None:
    if at >= len(values) or not values[at].strip().isdigit():
        return None
    count = int(values[at])
    found: list[dict[str, object]] = []
    for i in range(count):
        base = at + 1 + 3 * i
        if base + 2 >= len(values):
            return None
        if _MAC_RE.fullmatch(values[base + 1]):  # real firmware sends "0" for some
            found.append({"mac": values[base + 1].lower(), "signal": int(values[base + 2])})
    return found if found or not count else None


def _alarm_kinds(status: int, *, alarm_frame: bool) -> list[str]:
    kinds: list[str] = []
    for bit, kind in ALARM_BITS.items():
        if status >> bit & 1 and kind not in kinds:  # bits 21 and 22 are one fall
            kinds.append(kind)
    if alarm_frame:
        if status & UNKNOWN_ALARM_MASK:
            kinds.append("other")
        if not kinds:
            kinds = [kind for bit, kind in STATE_ALARMS.items() if status >> bit & 1]
        if not kinds:
            kinds = ["other"]
    return kinds


def _alarm_reading(kind: str, *, device_id: str, ts: int, code: str,
                   lat: float | None, lon: float | None) -> Reading:
    if kind == "sos":
        return Sos(device_id=device_id, ts=ts, lat=lat, lon=lon)
    if kind == "fall":
        return Fall(device_id=device_id, ts=ts, lat=lat, lon=lon)
    if kind == "removed":
        return Wear(device_id=device_id, ts=ts, worn=False)
    alarm = _DEVICE_ALARMS[kind]
    return DeviceAlarm(device_id=device_id, ts=ts, alarm=alarm, code=code, lat=lat, lon=lon)


def _position(head: Header, args: bytes, now_ms: int) -> Decoded:
    alarm_frame = head.command.upper().startswith("AL")
    fields = args.decode("latin-1").split(",")
    try:
        report = _parse_report(fields, now_ms=now_ms)
    except ValidationError as exc:
        if not alarm_frame:
            raise
        # An alarm is never dropped: raise what the status still says, else "other".
        status_text = fields[15].strip() if len(fields) > 15 else ""
        status = int(status_text, 16) if re.fullmatch(r"[0-9A-Fa-f]{1,8}", status_text) else 0
        report = _Report(ts=now_ms, device_time=None, status=status,
                         extra={"malformed": exc.reason, "status": f"0x{status:08X}"})
    readings: list[Reading] = []
    if report.lat is not None and report.lon is not None:
        readings.append(Location(
            device_id=head.device_id, ts=report.ts, lat=report.lat, lon=report.lon,
            speed_mps=report.speed_mps, battery_pct=report.battery_pct, source="gps"))
    code = f"{head.vendor} status 0x{report.status:08X}"
    for kind in _alarm_kinds(report.status, alarm_frame=alarm_frame):
        readings.append(_alarm_reading(kind, device_id=head.device_id, ts=report.ts,
                                       code=code, lat=report.lat, lon=report.lon))
    if report.lat is None:  # no usable fix: the towers and access points say where it was
        scan = radio_scan(device_id=head.device_id, ts=report.ts,
                          cells=report.extra.get("cells"), wifi=report.extra.get("wifi"))
        if scan is not None:
            readings.append(scan)
    reply = head.reply("AL") if alarm_frame else None
    when: ReplyWhen = "after_publish" if alarm_frame else "now"
    return Decoded(device_id=head.device_id, command=head.command, readings=tuple(readings),
                   reply=reply, reply_when=when, device_time=report.device_time,
                   extra={**head.extra, **report.extra})


def _keepalive(head: Header, args: bytes, now_ms: int) -> Decoded:
    # Never raises on its arguments: an unanswered LK makes the watch reboot.
    values = args.decode("latin-1").split(",") if args else []
    battery: float | None = None
    readings: list[Reading] = []
    extra = dict(head.extra)
    if len(values) >= 3 and all(_INT_RE.fullmatch(v) for v in values[:3]):
        steps, extra["tumbles"], level = (int(v) for v in values[:3])
        battery = float(level) if _fits(level, Percent) else None
        if _fits(steps, Steps):
            readings.append(Vitals(device_id=head.device_id, ts=now_ms, steps=steps))
    elif values:
        extra["lk_args"] = len(values)
    readings.insert(0, Heartbeat(device_id=head.device_id, ts=now_ms, battery_pct=battery))
    return Decoded(device_id=head.device_id, command=head.command, readings=tuple(readings),
                   reply=head.reply("LK"), extra=extra)


#: Health commands: which Vitals field each argument fills, and its contract type.
_HEALTH: Final[dict[str, tuple[tuple[str, object], ...]]] = {
    "HEART": (("heart_rate_bpm", HeartRate),),
    "PULSE": (("heart_rate_bpm", HeartRate),),
    "BPHRT": (("systolic_mmhg", Pressure), ("diastolic_mmhg", Pressure),
              ("heart_rate_bpm", HeartRate)),
    "BLOOD": (("systolic_mmhg", Pressure), ("diastolic_mmhg", Pressure),
              ("heart_rate_bpm", HeartRate)),
    "OXYGEN": (("spo2_pct", SpO2),),
    "TEMP": (("body_temp_c", BodyTemp),),
    "BTEMP2": (("", None), ("body_temp_c", BodyTemp)),  # flag (1 = measured), value
}


def _health(head: Header, args: bytes, now_ms: int) -> Decoded:
    # A value outside the contract is left out, and nothing valid left means no reading.
    values = args.decode("latin-1").split(",") if args else []
    layout = _HEALTH[head.command.upper()]
    measured: dict[str, float] = {}
    for (name, limits), text in zip(layout, values, strict=False):
        number = float(text) if _NUMBER_RE.fullmatch(text) else None
        if not name:
            if number is None or number <= 0:  # btemp2's flag: 0 is "no measurement"
                break
        elif number is not None and _fits(number, limits):
            measured[name] = number
    readings: tuple[Reading, ...] = ()
    if measured:
        readings = (Vitals(device_id=head.device_id, ts=now_ms, **measured),)  # type: ignore[arg-type]
    return Decoded(device_id=head.device_id, command=head.command, readings=readings,
                   extra=dict(head.extra))


def _media(head: Header, args: bytes, now_ms: int) -> Decoded:
    # Voice (TK, JXTK) and pictures (img): the contract carries no media; count, answer.
    extra = {**head.extra, "media_bytes": len(args)}
    reply = head.reply("JXTKR,1") if head.command.upper() == "JXTK" else None
    return Decoded(device_id=head.device_id, command=head.command, reply=reply, extra=extra)


def _echo(reply: str | None) -> Callable[[Header, bytes, int], Decoded]:
    def handle(head: Header, args: bytes, now_ms: int) -> Decoded:
        content = head.command if reply is None else reply
        return Decoded(device_id=head.device_id, command=head.command,
                       reply=head.reply(content), extra=dict(head.extra))
    return handle


def _acknowledgement(head: Header, args: bytes, now_ms: int) -> Decoded:
    # The watch echoes a platform command's word to say it took it (gateway.watch3g_commands).
    return Decoded(device_id=head.device_id, command=head.command,
                   acknowledges=head.command.upper(), extra=dict(head.extra))


_Handler = Callable[[Header, bytes, int], Decoded]
_HANDLERS: Final[dict[str, _Handler]] = {
    **{word: _acknowledgement for word in watch3g_commands.ACK_WORDS},
    "LK": _keepalive, "INIT": _echo("INIT,1"), "TKQ": _echo(None), "TKQ2": _echo(None),
    "TK": _media, "JXTK": _media, "IMG": _media,
    **{name: _health for name in _HEALTH},
}


class WatchCodec:
    """The 3G watch protocol behind :class:`gateway.codec.Codec`."""

    name: str = "watch"

    def __init__(self, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes

    def framer(self) -> WatchFramer:
        """A new framer for one connection."""
        return WatchFramer(max_frame_bytes=self.max_frame_bytes)

    def encode_command(self, command: DeviceCommand, *, device_id: str,
                       context: Mapping[str, object], serial: int) -> Outgoing:
        """``command`` in the watch's words (:mod:`gateway.watch3g_commands`)."""
        return watch3g_commands.encode_command(command, device_id=device_id, context=context,
                                               serial=serial)

    def decode(self, frame: bytes, *, now_ms: int, session_device: str | None) -> Decoded:
        """One frame to readings and reply. The frame names its device, which is
        authoritative; ``session_device`` is not needed by this protocol."""
        head, args = parse_header(frame)
        upper = head.command.upper()
        if _UD_RE.fullmatch(upper) or _AL_RE.fullmatch(upper):
            return _position(head, args, now_ms)
        handler = _HANDLERS.get(upper)
        if handler is None:
            return Decoded(device_id=head.device_id, command=head.command, unknown=True,
                           extra=dict(head.extra))
        return handler(head, args, now_ms)
