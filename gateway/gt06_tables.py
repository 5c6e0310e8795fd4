"""GT06 alarm tables: what an alarm code and the terminal-information bits mean, per model.

Vendors reuse codes and bits, so meanings live in one table per device model
(docs/gateway-protocols.md lists them); :mod:`gateway.gt06` picks a device's table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from schemas.readings import DeviceAlarmKind

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

#: Lowest battery percent of each voltage level, for a device reporting one (the inverse of
#: :data:`BATTERY_PCT`): band edges half-way between the levels' percents, except that level 2
#: ends at the detectors' 20 % line, since level 2 is the vendor's own low-battery alarm: a
#: battery at 22 % must not read as 15 %, nor one at 18 % as 35 %.
_VOLTAGE_FLOORS: Final = (0.0, 2.5, 10.0, 20.0, 47.5, 70.0, 90.0)


def voltage_level(battery_pct: float) -> int:
    """The voltage level 0-6 a device reports for ``battery_pct``."""
    return max(level for level, floor in enumerate(_VOLTAGE_FLOORS)
               if battery_pct >= floor or level == 0)


def gsm_level(rssi_dbm: float) -> int:
    """The GSM level 0-4 a device reports for ``rssi_dbm`` (the band it lies in)."""
    return max(level for level, edge in RSSI_DBM.items() if rssi_dbm >= edge or level == 0)


def code_for(meaning: Meaning, table: AlarmTable = DEFAULT_TABLE) -> int:
    """The alarm byte a device sends for ``meaning``: the lowest code of ``table`` that means it
    (SOS 0x01, fall 0x23, tamper 0x13). KeyError when no code does."""
    codes = [code for code, entry in table.codes.items() if entry.meaning == meaning]
    if not codes:
        raise KeyError(f"no GT06 alarm code means {meaning!r} in table {table.name!r}")
    return min(codes)


def status_bits_for(meaning: Meaning, table: AlarmTable = DEFAULT_TABLE) -> int:
    """The terminal-information alarm bits (3-5, as 0-7) that mean ``meaning`` in ``table``."""
    bits = [b for b, entry in table.status.items() if entry.meaning == meaning]
    if not bits:
        raise KeyError(f"no GT06 status bits mean {meaning!r} in table {table.name!r}")
    return min(bits)
