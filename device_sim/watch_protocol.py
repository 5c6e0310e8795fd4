"""A simulated 3G watch (Setracker/Beesure lineage): wire readings to ``[3G*ID*LLLL*...]`` frames.

The device side of :mod:`gateway.watch3g` (docs/gateway-protocols.md has the tables), built on
the gateway's own frame builder and status-bit tables, so the two cannot drift apart:

- ``location``: ``UD`` (``UD2``, the watch's blind-spot re-upload, for a backlog after an
  outage) with the full layout: UTC date and time, ``A`` and the position for a satellite fix,
  speed, battery, steps, the status word and the serving cell. A Wi-Fi or cell fix is sent as a
  real watch sends one indoors, ``V`` with the cell and no position (the gateway publishes the
  cell as a radio scan).
- ``heartbeat``: ``LK,steps,tumbles,battery`` (the keepalive; answered at once).
- ``vitals``: ``LK`` with the steps and the battery, then ``bphrt`` (blood pressure and heart
  rate) or ``heart``, ``oxygen`` and ``btemp2``. These frames carry no time: the gateway stamps
  them with their receipt time.
- ``sos``, ``fall`` and ``wear`` ``worn: false``: ``AL`` with the alarm bit (16, 21, 20) and the
  fix when it is a satellite one; answered after the broker has it, and repeated until then by
  the runner. ``wear`` ``worn: true`` has no frame: the protocol says it only as state bit 3 of
  later reports, which the gateway keeps as evidence, not as a reading.
- The battery: state bit 0 on every report while it is under the detectors' 20 %, and alarm bit
  17 on every ``AL`` then (an SOS pressed on a low battery says both); when it first reports
  under 20 % (re-armed above 40 %), the watch sends its own low-battery ``AL``.

A battery level or step count not yet known (an alarm before the first report; a bracelet's
keepalive, which has no pedometer) is sent as ``-1``, outside the contract, which the gateway
leaves out rather than publishing an invented value. Not carried:
a fix's accuracy and source, a fall's confidence, a heartbeat's RSSI (the ``UD`` GSM field is a
fixed 100).
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
from foundation.errors import ValidationError
from gateway.watch3g import ALARM_BITS, STATE_BITS
from gateway.watch3g_commands import ACK_WORDS
from gateway.watch3g_framing import WatchFramer, build_frame, parse_header

_ALARM_BIT: Final = {kind: min(b for b, k in ALARM_BITS.items() if k == kind)
                     for kind in ("sos", "low_battery", "removed", "fall")}
_STATE_BIT: Final = {name: bit for bit, name in STATE_BITS.items()}
#: What the watch sends for a battery level or step count it does not know: outside the
#: contract's limits, so the gateway leaves it out rather than publishing an invented value.
UNKNOWN: Final = -1
#: The UD frame's GSM signal field (0-100): the sim's watches do not model their signal.
_GSM_SIGNAL: Final = 100


class WatchEncoder:
    """One simulated 3G watch; see the module docstring. ``device_id`` goes on every frame."""

    protocol: str = "watch"

    def __init__(self, device_id: str, *, vendor: str = "3G") -> None:
        self.wire_id = device_id
        self.vendor = vendor
        self._battery: float | None = None
        self._low = False          # under the low-battery line
        self._low_alarmed = False  # its AL sent; re-armed above the re-arm level
        self._worn = True
        self._steps: int | None = None
        self._gps = False          # the last fix was a satellite fix

    # -- the DeviceEncoder protocol ----------------------------------------------------------
    def opening(self) -> tuple[DeviceFrame, ...]:
        """A watch needs no login: its id is in every frame."""
        return ()

    def reply_key(self, frame: bytes) -> str | None:
        """The command a reply answers (``LK``, ``AL``)."""
        try:
            head, _ = parse_header(frame)
        except ValidationError:
            return None
        return head.command.upper()

    def framer(self) -> WatchFramer:
        """The gateway's own framer, for the replies."""
        return WatchFramer()

    def answer(self, frame: bytes) -> bytes | None:
        """A real watch echoes a platform command's word, bare, with the frame's index."""
        try:
            head, _ = parse_header(frame)
        except ValidationError:
            return None
        word = head.command.upper()
        if word not in ACK_WORDS:
            return None
        return build_frame(head.vendor, head.device_id, word.encode(), index=head.index)

    def encode(self, body: Mapping[str, Any], *, backlog: bool = False) -> Encoded:
        """The frames of one wire reading."""
        kind = body.get("type")
        if kind == "location":
            return self._location(body, backlog)
        if kind == "heartbeat":
            return self._keepalive(body, ())
        if kind == "vitals":
            if body.get("steps") is not None:
                self._steps = int(body["steps"])
            return self._keepalive(body, self._health(body))
        if kind in ("sos", "fall"):
            return Encoded((self._alarm(body, kind),))
        if kind == "wear":
            self._worn = bool(body["worn"])
            if self._worn:
                return Encoded((), not_carried=("wear worn=true",))
            return Encoded((self._alarm(body, "removed"),))
        return Encoded((), not_carried=(str(kind),))

    # -- readings ----------------------------------------------------------------------------
    def _location(self, body: Mapping[str, Any], backlog: bool) -> Encoded:
        crossed = self._battery_report(body.get("battery_pct"))
        self._gps = body.get("source") == "gps"
        fix = (body["lat"], body["lon"]) if self._gps else None
        cell = serving_cell(body["lat"], body["lon"])
        if crossed:  # the watch's own low-battery alarm, with the report it came with
            return Encoded((self._al(body["ts"], fix, 1 << _ALARM_BIT["low_battery"],
                                     speed_mps=body.get("speed_mps"), cell=cell),),
                           unlocated=fix is None)
        fields = self._report(body["ts"], fix, self._state(), speed_mps=body.get("speed_mps"),
                              cell=cell)
        frame = self._frame("UD2" if backlog else "UD", fields)
        return Encoded((frame,), unlocated=fix is None)

    def _keepalive(self, body: Mapping[str, Any], health: tuple[DeviceFrame, ...]) -> Encoded:
        crossed = self._battery_report(body.get("battery_pct"))
        frames = [self._frame("LK", [self._steps_text(), "0", self._battery_text()], reply="LK")]
        frames += health
        if crossed:
            frames.append(self._al(body["ts"], None, 1 << _ALARM_BIT["low_battery"]))
        return Encoded(tuple(frames))

    def _health(self, body: Mapping[str, Any]) -> tuple[DeviceFrame, ...]:
        hr, sys_, dia = (body.get(k) for k in ("heart_rate_bpm", "systolic_mmhg",
                                                "diastolic_mmhg"))
        frames = []
        if sys_ is not None and dia is not None:
            pressure = [sys_, dia] + ([hr] if hr is not None else [])
            frames.append(self._frame("bphrt" if hr is not None else "BLOOD",
                                      [_num(v) for v in pressure]))
        elif hr is not None:
            frames.append(self._frame("heart", [_num(hr)]))
        if body.get("spo2_pct") is not None:
            frames.append(self._frame("oxygen", [_num(body["spo2_pct"])]))
        if body.get("body_temp_c") is not None:
            frames.append(self._frame("btemp2", ["1", _num(body["body_temp_c"])]))
        return tuple(frames)

    def _alarm(self, body: Mapping[str, Any], kind: str) -> DeviceFrame:
        fix = None
        if body.get("lat") is not None and body.get("lon") is not None:
            accuracy = body.get("accuracy_m")
            gps = accuracy <= GPS_ACCURACY_M if accuracy is not None else self._gps
            fix = (body["lat"], body["lon"]) if gps else None
        return self._al(body["ts"], fix, 1 << _ALARM_BIT[kind])

    # -- frames ------------------------------------------------------------------------------
    def _al(self, ts: int, fix: tuple[float, float] | None, alarm: int, *,
            speed_mps: float | None = None, cell: tuple[int, int] | None = None) -> DeviceFrame:
        if self._low:
            alarm |= 1 << _ALARM_BIT["low_battery"]
        fields = self._report(ts, fix, self._state() | alarm, speed_mps=speed_mps, cell=cell)
        return self._frame("AL", fields, reply="AL", alarm=True)

    def _report(self, ts: int, fix: tuple[float, float] | None, status: int, *,
                speed_mps: float | None, cell: tuple[int, int] | None) -> list[str]:
        """The UD/AL layout: date, time, A/V, lat, N/S, lon, E/W, speed km/h, course,
        altitude, satellites, GSM signal, battery, steps, tumbles, status, cells, Wi-Fi."""
        when = datetime.fromtimestamp(ts // 1000, tz=UTC)
        lat, lon = fix if fix is not None else (0.0, 0.0)
        fields = [when.strftime("%d%m%y"), when.strftime("%H%M%S"), "A" if fix else "V",
                  f"{abs(lat):.6f}", "S" if lat < 0 else "N",
                  f"{abs(lon):.6f}", "W" if lon < 0 else "E",
                  f"{(speed_mps or 0.0) * 3.6:.2f}" if fix else "0.00", "0.0", "0",
                  "9" if fix else "0", str(_GSM_SIGNAL), self._battery_text(),
                  self._steps_text(), "0", f"{status:08X}"]
        if cell is None:
            return [*fields, "0", "0"]
        lac, cid = cell
        # One serving cell (count, timing advance, MCC, MNC, LAC, cell id, signal), no Wi-Fi.
        return [*fields, "1", "1", str(MCC), str(MNC), str(lac), str(cid), "-70", "0"]

    def _frame(self, command: str, args: list[str], *, reply: str | None = None,
               alarm: bool = False) -> DeviceFrame:
        content = ",".join([command, *args]).encode("ascii")
        return DeviceFrame(build_frame(self.vendor, self.wire_id, content), command,
                           reply=reply, alarm=alarm)

    # -- state -------------------------------------------------------------------------------
    def _battery_report(self, battery_pct: float | None) -> bool:
        """Take a reported battery level; True when it has just crossed under the low line."""
        if battery_pct is None:
            return False
        self._battery = float(battery_pct)
        self._low = self._battery < SUPERVISION.low_battery_pct
        if self._battery >= SUPERVISION.rearm_battery_pct:
            self._low_alarmed = False
        if self._low and not self._low_alarmed:
            self._low_alarmed = True
            return True
        return False

    def _state(self) -> int:
        return ((1 << _STATE_BIT["low_battery"]) if self._low else 0) | (
            (1 << _STATE_BIT["worn"]) if self._worn else 0)

    def _battery_text(self) -> str:
        return str(UNKNOWN if self._battery is None else round(self._battery))

    def _steps_text(self) -> str:
        return str(UNKNOWN if self._steps is None else self._steps)


def _num(value: float) -> str:
    """A measurement as the watch writes it: integers bare, else up to two decimals."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0")
