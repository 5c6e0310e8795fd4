"""Radio scans: the cell towers and Wi-Fi access points of a frame as a wire-contract reading.

Both codecs parse towers and access points into plain dicts (``Decoded.extra``, evidence); a
frame without a usable GPS fix also publishes them as a :class:`~schemas.readings.RadioScan`,
which a geolocation provider can turn into a position (:mod:`gateway.geolocate`). With a valid
fix the scan adds nothing the fix does not say better, and is not published.

What is kept is what the wire contract can carry, checked against its limits here, once: a tower
without a country code or with neither area nor cell number is an empty slot of the frame, not
a tower; a signal goes along only when it is in dBm (watches send tower levels on scales of
their own, GT06 a raw byte, and a level of 0 or more is no received dBm: left out rather than
guessed); at most ``MAX_CELLS`` towers and ``MAX_WIFI_APS`` access points, in the device's
order. Network names never reach this module (the codecs drop them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from schemas.readings import MAX_CELLS, MAX_WIFI_APS, Cell, RadioScan, Rssi, WifiAp


def radio_scan(*, device_id: str, ts: int, cells: object = (), wifi: object = (),
               signal_key: str | None = "signal") -> RadioScan | None:
    """The scan of a frame's towers (dicts of ``mcc``, ``mnc``, ``lac``, ``cid`` and
    ``signal_key``) and access points (``mac``, ``signal_key``), as a codec keeps them in
    ``Decoded.extra``; None when nothing valid is left. ``signal_key`` None: the protocol's
    levels are not dBm, none is kept."""
    towers = [c for c in (_cell(raw, signal_key) for raw in _dicts(cells)) if c is not None]
    aps = [a for a in (_ap(raw, signal_key) for raw in _dicts(wifi)) if a is not None]
    if not towers and not aps:
        return None
    return RadioScan(device_id=device_id, ts=ts, cells=towers[:MAX_CELLS],
                     wifi=aps[:MAX_WIFI_APS])


def _dicts(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _cell(raw: Mapping[str, Any], signal_key: str | None) -> Cell | None:
    if not raw.get("mcc") or not (raw.get("lac") or raw.get("cid")):
        return None
    fields = {k: raw.get(k) for k in ("mcc", "mnc", "lac", "cid")}
    cell: Cell | None = _convert({**fields, "signal_dbm": _dbm(raw, signal_key)}, Cell)
    return cell


def _ap(raw: Mapping[str, Any], signal_key: str | None) -> WifiAp | None:
    mac = raw.get("mac")
    if not isinstance(mac, str):
        return None
    ap: WifiAp | None = _convert({"mac": mac.lower(), "signal_dbm": _dbm(raw, signal_key)},
                                 WifiAp)
    return ap


def _dbm(raw: Mapping[str, Any], signal_key: str | None) -> int | float | None:
    value = raw.get(signal_key) if signal_key is not None else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value < 0:
        return None
    return value if _convert(value, Rssi) is not None else None


def _convert(value: object, cls: Any) -> Any:
    try:
        return msgspec.convert(value, type=cls)
    except msgspec.ValidationError:
        return None
