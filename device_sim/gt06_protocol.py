"""A simulated GT06 (Concox/Jimi) tracker: wire readings to ``7878 ... 0D0A`` frames.

The device side of :mod:`gateway.gt06` (docs/gateway-protocols.md has the layouts), built on
the gateway's own frame builder (length, serial, CRC-ITU) and alarm tables, so the two cannot
drift apart. A connection starts with the login (0x01: the IMEI in BCD), which the device waits
to see answered before it sends anything else (the runner does the waiting). Then:

- ``location``: a satellite fix is 0x12 (GPS + LBS), or 0x22 with its re-upload flag set for a
  backlog held by an outage; a Wi-Fi or cell fix is 0x28 (the cell towers only), as a tracker
  indoors reports it: no position (the gateway publishes the towers as a radio scan).
- ``heartbeat``: 0x13 status (terminal information, voltage level, GSM level), answered at
  once. The levels are bands: the gateway reads them back as the band's percent and dBm.
- ``sos``, ``fall``, ``wear`` ``worn: false``: 0x16 with the alarm byte of the default table
  (SOS 0x01, fall 0x23, tamper 0x13, which the detectors raise as a removal), with the fix when
  it is a satellite one; answered after the broker has it, repeated by the runner until then.
- The battery: while it is under the detectors' 20 % the terminal-information alarm bits say
  low battery (011) on every 0x13 and 0x16, so an SOS on a low battery reports both, as the
  gateway decodes both.

Not carried (GT06 has no such packets): ``vitals``, ``wear`` ``worn: true``, and every other
reading type; a fix's accuracy, a location's battery (the 0x13 carries it), a fall's confidence.
The device is known to the gateway by its IMEI (:func:`imei_for`), not by the simulator's id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from device_sim.device_frames import (
    GPS_ACCURACY_M,
    MCC,
    MNC,
    DeviceFrame,
    Encoded,
    serving_cell,
)
from device_sim.devices import SUPERVISION
from gateway.gt06_framing import SHORT_START, STOP, Gt06Framer, build_frame, crc_itu
from gateway.gt06_tables import code_for, gsm_level, status_bits_for, voltage_level

LOGIN, LOCATION, STATUS, ALARM, LOCATION_2, LBS = 0x01, 0x12, 0x13, 0x16, 0x22, 0x28
#: An online command from the server, and the Concox answer to it (gateway/gt06_commands.py).
_COMMAND, _ANSWER = 0x80, 0x21
#: Type-identification bytes of the login (a model number; the gateway keeps it as evidence).
_TYPE_ID: Final = bytes.fromhex("2208")
#: Time zone and language of the login: UTC+8 east (800 << 4), Chinese (0x01); frame times
#: are UTC whatever it says.
_ZONE_LANGUAGE: Final = (800 << 4 | 0x01).to_bytes(2, "big")
#: Terminal information: GPS tracking on (bit 6); bits 3-5 carry the alarm bits.
_GPS_TRACKING: Final = 0x40
_LANGUAGE: Final = 0x02  # English
_UNKNOWN_LEVEL: Final = 0xFF
#: A fix block's status bits: positioned (12), north (10), west (11), not real time (13).
_POSITIONED, _NORTH, _WEST, _REUPLOAD = 0x1000, 0x0400, 0x0800, 0x2000
#: A made-up type allocation code for the IMEIs of simulated trackers ("12349" in it).
_TAC: Final = "8612349"
_KIND_DIGIT: Final = {"BR": "1", "WT": "2", "FS": "3"}


def imei_for(device_id: str) -> str:
    """The 15-digit IMEI a simulated tracker logs in with: the TAC, a digit for the kind and
    six for the number of a fleet id (``BR-00001``), and the Luhn check digit. Any other id
    is refused (ValueError): the mapping must be one to one, and the fleet's ids are."""
    kind, _, number = device_id.partition("-")
    if kind not in _KIND_DIGIT or not number.isdigit() or len(number) > 6:
        raise ValueError(f"no IMEI for device id {device_id!r} (a fleet id like BR-00001)")
    body = _TAC + _KIND_DIGIT[kind] + number.zfill(6)
    return body + _luhn(body)


def _luhn(digits: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 == 0 else 1)
        total += d - 9 if d > 9 else d
    return str(-total % 10)


class Gt06Encoder:
    """One simulated GT06 tracker; see the module docstring."""

    protocol: str = "gt06"

    def __init__(self, imei: str) -> None:
        if len(imei) != 15 or not imei.isdigit():
            raise ValueError(f"an IMEI is 15 digits, not {imei!r}")
        self.wire_id = imei
        self._serial = 0
        self._battery_pct: float | None = None
        self._rssi_dbm: float | None = None
        self._gps = False
        #: Where the device last was (any fix): its serving cell.
        self._where: tuple[float, float] | None = None

    # -- the DeviceEncoder protocol ----------------------------------------------------------
    def opening(self) -> tuple[DeviceFrame, ...]:
        """The login: IMEI in BCD (a leading 0 to 16 digits), type id, time zone."""
        content = bytes.fromhex("0" + self.wire_id) + _TYPE_ID + _ZONE_LANGUAGE
        return (self._frame(LOGIN, content, reply=True),)

    def reply_key(self, frame: bytes) -> str | None:
        """``"PP/serial"`` of a short reply frame whose CRC checks; None otherwise."""
        if (len(frame) < 10 or frame[:2] != SHORT_START or frame[-2:] != STOP
                or crc_itu(frame[2:-4]) != int.from_bytes(frame[-4:-2], "big")):
            return None
        return _key(frame[3], int.from_bytes(frame[-6:-4], "big"))

    def framer(self) -> Gt06Framer:
        """The gateway's own framer, for the replies."""
        return Gt06Framer()

    def answer(self, frame: bytes) -> bytes | None:
        """A Concox tracker answers an online command (0x80) with 0x21: the server flag it
        was given, encoding 1 (ASCII), a short text."""
        if len(frame) < 16 or frame[:2] != SHORT_START or frame[3] != _COMMAND:
            return None
        flag = frame[5:9]
        serial = int.from_bytes(frame[-6:-4], "big")
        return build_frame(_ANSWER, flag + b"\x01" + b"OK!", serial)

    def encode(self, body: Mapping[str, Any], *, backlog: bool = False) -> Encoded:
        """The frames of one wire reading."""
        kind = body.get("type")
        if kind == "location":
            self._report(body)
            self._gps = body.get("source") == "gps"
            if not self._gps:
                return Encoded((self._lbs(body),), unlocated=True)
            content = self._fix(body["ts"], (body["lat"], body["lon"]), body.get("speed_mps"),
                                backlog=backlog) + self._cell(body["lat"], body["lon"])
            if backlog:  # ACC off, upload mode 0 (timed), re-upload flag, no mileage
                return Encoded((self._frame(LOCATION_2, content + bytes([0, 0, 1])),))
            return Encoded((self._frame(LOCATION, content),))
        if kind == "heartbeat":
            self._report(body)
            content = bytes([self._terminal(), *self._levels(), 0x00, _LANGUAGE])
            return Encoded((self._frame(STATUS, content, reply=True),))
        if kind in ("sos", "fall"):
            return Encoded((self._alarm(body, code_for(kind)),))
        if kind == "wear" and not body["worn"]:
            return Encoded((self._alarm(body, code_for("cover_removed")),))
        if kind == "wear":
            return Encoded((), not_carried=("wear worn=true",))
        return Encoded((), not_carried=(str(kind),))

    # -- packets -----------------------------------------------------------------------------
    def _alarm(self, body: Mapping[str, Any], code: int) -> DeviceFrame:
        fix = None
        if body.get("lat") is not None and body.get("lon") is not None:
            accuracy = body.get("accuracy_m")
            gps = accuracy <= GPS_ACCURACY_M if accuracy is not None else self._gps
            fix = (body["lat"], body["lon"]) if gps else None
        if body.get("lat") is not None and body.get("lon") is not None:
            self._where = (body["lat"], body["lon"])
        # The LBS length counts itself; 0 (not 1) when there is no cell to report.
        cell = self._cell(*self._where) if self._where is not None else b""
        content = (self._fix(body["ts"], fix, None, backlog=False)
                   + bytes([1 + len(cell) if cell else 0]) + cell
                   + bytes([self._terminal(), *self._levels(), code, _LANGUAGE]))
        return self._frame(ALARM, content, reply=True, alarm=True)

    def _lbs(self, body: Mapping[str, Any]) -> DeviceFrame:
        lac, cid = serving_cell(body["lat"], body["lon"])
        cells = lac.to_bytes(2, "big") + cid.to_bytes(3, "big") + bytes([0x3C]) + bytes(6 * 6)
        content = (_time(body["ts"]) + MCC.to_bytes(2, "big") + bytes([MNC]) + cells
                   + bytes([0xFF]) + _LANGUAGE.to_bytes(2, "big"))
        return self._frame(LBS, content)

    def _fix(self, ts: int, fix: tuple[float, float] | None, speed_mps: float | None, *,
             backlog: bool) -> bytes:
        """The 18-byte GPS block: time, GPS info, latitude, longitude, speed, course/status."""
        lat, lon = fix if fix is not None else (0.0, 0.0)
        flags = (_POSITIONED if fix is not None else 0) | (_NORTH if lat >= 0 else 0) | (
            _WEST if lon < 0 else 0) | (_REUPLOAD if backlog else 0)
        speed = min(255, round((speed_mps or 0.0) * 3.6))
        return (_time(ts) + bytes([0xC9 if fix is not None else 0xC0])
                + round(abs(lat) * 1_800_000).to_bytes(4, "big")
                + round(abs(lon) * 1_800_000).to_bytes(4, "big")
                + bytes([speed]) + flags.to_bytes(2, "big"))

    @staticmethod
    def _cell(lat: float, lon: float) -> bytes:
        lac, cid = serving_cell(lat, lon)
        return (MCC.to_bytes(2, "big") + bytes([MNC]) + lac.to_bytes(2, "big")
                + cid.to_bytes(3, "big"))

    def _frame(self, protocol: int, content: bytes, *, reply: bool = False,
               alarm: bool = False) -> DeviceFrame:
        self._serial = self._serial % 0xFFFF + 1
        return DeviceFrame(build_frame(protocol, content, self._serial), f"0x{protocol:02X}",
                           reply=_key(protocol, self._serial) if reply else None, alarm=alarm)

    # -- state -------------------------------------------------------------------------------
    def _report(self, body: Mapping[str, Any]) -> None:
        if body.get("lat") is not None and body.get("lon") is not None:
            self._where = (body["lat"], body["lon"])
        if body.get("battery_pct") is not None:
            self._battery_pct = float(body["battery_pct"])
        if body.get("rssi_dbm") is not None:
            self._rssi_dbm = float(body["rssi_dbm"])

    def _levels(self) -> tuple[int, int]:
        """Voltage and GSM levels; a level not yet known is sent as 0xFF, outside the levels,
        which the gateway leaves out rather than publishing an invented one."""
        battery, rssi = self._battery_pct, self._rssi_dbm
        return (voltage_level(battery) if battery is not None else _UNKNOWN_LEVEL,
                gsm_level(rssi) if rssi is not None else _UNKNOWN_LEVEL)

    def _terminal(self) -> int:
        low = self._battery_pct is not None and self._battery_pct < SUPERVISION.low_battery_pct
        return _GPS_TRACKING | ((status_bits_for("low_battery") if low else 0) << 3)


def _time(ts: int) -> bytes:
    w = datetime.fromtimestamp(ts // 1000, tz=UTC)
    return bytes([w.year - 2000, w.month, w.day, w.hour, w.minute, w.second])


def _key(protocol: int, serial: int) -> str:
    return f"{protocol:02X}/{serial}"
