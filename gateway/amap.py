"""Amap's hardware positioning service (高德 智能硬件定位), behind :class:`~gateway.geolocate.Geolocator`.

The service (``https://apilocate.amap.com/position``, Amap's Web-service documentation,
"智能硬件定位") takes the towers and access points a device hears and answers a position. The
request and the answer are pure functions here, :func:`amap_form` and :func:`parse_amap`; the
adapter only sends one to get the other.

What is sent, and only that:

- ``key`` (ours), ``output=json``;
- with towers: ``accesstype=0`` (on the mobile network), ``cdma=0``, ``network=GSM`` (required
  with accesstype 0; watches do not say which radio they use), ``bts`` the serving tower and
  ``nearbts`` the others, each ``mcc,mnc,lac,cellid,signal``; without towers, ``accesstype=1``;
- ``macs``: up to 30 access points, strongest first, each ``mac,signal,`` with the network name
  left **empty** (we never have it: the codecs drop SSIDs, which name families);
- ``imei``, which the service requires (it or an iOS idfa): **not the device's**. Each gateway
  process draws one random, Luhn-valid, IMEI-shaped pseudonym at start and sends it for every
  device, so Amap cannot tell wearers apart or follow one across lookups. The price: no
  per-device tuning on Amap's side and no troubleshooting by device with Amap's support.

A signal the device did not give in dBm goes as -99 (the field is not optional; a weak level
weighs a radio least). The parameters go as a form body (POST) rather than a query string: the
documented method is GET, but a URL is what httpx logs at INFO level, and neither the key nor
the MACs may reach a log (the gateway's Aliyun channel does the same for phone numbers).

The answer: ``status`` "1" or a refusal (``info`` names it, e.g. ``INVALID_USER_KEY``, a quota
exceeded), ``result.type`` "0" when no position is known, else ``result.location``
"lon,lat" in **GCJ-02** (converted to WGS-84 here, :mod:`gateway.gcj02`) and ``result.radius``
in metres. The service does not say which radios placed the device: the fix is ``wifi`` when
two access points or more were sent (it places by Wi-Fi when it can, and needs two), else
``cell``; the radius tells its real accuracy either way.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import Final

import httpx
import msgspec

from gateway.gcj02 import gcj02_to_wgs84
from gateway.geolocate import Fix, FixSource, GeolocationError
from schemas.readings import Cell, RadioScan

AMAP_URL: Final = "https://apilocate.amap.com/position"
#: Access points sent at most (the service's own limit).
MAX_MACS: Final = 30
#: Fewer access points than this and no tower: the service cannot place it; nothing is asked.
MIN_WIFI_APS: Final = 2
#: Sent for a radio whose level the device did not give in dBm.
UNKNOWN_DBM: Final = -99
#: Larger answers are refused unread (a real one is well under 2 KiB).
MAX_ANSWER_BYTES: Final = 64 * 1024
_PRINTABLE: Final = re.compile(r"[^ -~]")


def pseudonymous_imei() -> str:
    """A random 15-digit IMEI-shaped number with a valid Luhn check digit."""
    body = [secrets.randbelow(10) for _ in range(14)]
    total = 0
    for i, digit in enumerate(reversed(body)):  # every other digit from the right, doubled
        doubled = digit * 2 if i % 2 == 0 else digit
        total += doubled - 9 if doubled > 9 else doubled
    return "".join(map(str, body)) + str((10 - total % 10) % 10)


def amap_form(scan: RadioScan, *, key: str, imei: str) -> dict[str, str]:
    """The request parameters for ``scan`` (see the module docstring for each)."""
    form = {"key": key, "output": "json", "imei": imei}
    if scan.cells:
        first, *near = scan.cells
        form.update(accesstype="0", cdma="0", network="GSM", bts=_bts(first))
        if near:
            form["nearbts"] = "|".join(_bts(c) for c in near)
    else:
        form["accesstype"] = "1"
    aps = sorted(scan.wifi, key=lambda ap: -(ap.signal_dbm if ap.signal_dbm is not None
                                             else UNKNOWN_DBM))[:MAX_MACS]
    if aps:
        form["macs"] = "|".join(f"{ap.mac},{_dbm(ap.signal_dbm)}," for ap in aps)
    return form


def fix_source(scan: RadioScan) -> FixSource:
    """Which radios the answer for ``scan`` will have come from (see the module docstring)."""
    return "wifi" if len(scan.wifi) >= MIN_WIFI_APS else "cell"


def parse_amap(body: bytes, *, source: FixSource) -> Fix | None:
    """The position in an answer (WGS-84), None when the service knows none. Raises
    :class:`GeolocationError` for a refusal or an answer that is not the service's."""
    try:
        doc = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise GeolocationError("Amap: the answer is not JSON") from None
    if not isinstance(doc, dict):
        raise GeolocationError("Amap: the answer is not a JSON object")
    if str(doc.get("status")) != "1":
        raise GeolocationError(f"Amap refused: status {_word(doc.get('status'))}, info"
                               f" {_word(doc.get('info'))}, infocode {_word(doc.get('infocode'))}")
    result = doc.get("result")
    if not isinstance(result, dict) or str(result.get("type", "0")) == "0":
        return None
    location = result.get("location")
    if location in (None, ""):
        return None
    lat, lon = _gcj02(location)
    w_lat, w_lon = gcj02_to_wgs84(lat, lon)
    return Fix(lat=w_lat, lon=w_lon, accuracy_m=_radius(result.get("radius")), source=source)


class AmapGeolocator:
    """The adapter: one pooled ``httpx.AsyncClient``; :meth:`aclose` when done."""

    def __init__(self, *, key: str, url: str = AMAP_URL, timeout_s: float = 3.0,
                 imei: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url
        self.imei = imei or pseudonymous_imei()
        self._key = key
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s),
                                         follow_redirects=False, trust_env=False,
                                         transport=transport)

    def __repr__(self) -> str:  # the key stays out of any log that prints us
        return f"AmapGeolocator(url={self.url!r})"

    async def locate(self, scan: RadioScan) -> Fix | None:
        """See :class:`~gateway.geolocate.Geolocator`."""
        if not scan.cells and len(scan.wifi) < MIN_WIFI_APS:
            return None
        form = amap_form(scan, key=self._key, imei=self.imei)
        try:
            async with self._client.stream("POST", self.url, data=form) as response:
                if response.status_code != 200:
                    raise GeolocationError(f"Amap: HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise GeolocationError(f"Amap: answer over {MAX_ANSWER_BYTES} bytes")
        except httpx.TimeoutException as exc:
            raise GeolocationError("Amap: timed out") from exc
        except httpx.HTTPError as exc:
            raise GeolocationError(f"Amap: {type(exc).__name__}") from exc
        return parse_amap(bytes(body), source=fix_source(scan))

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _bts(cell: Cell) -> str:
    return f"{cell.mcc},{cell.mnc},{cell.lac},{cell.cid},{_dbm(cell.signal_dbm)}"


def _dbm(value: float | None) -> int:
    return UNKNOWN_DBM if value is None else round(value)


def _gcj02(location: object) -> tuple[float, float]:
    """``(lat, lon)`` of Amap's "lon,lat"; GeolocationError (no value quoted) otherwise."""
    parts = str(location).split(",")
    try:
        lon, lat = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        lon = lat = math.nan
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise GeolocationError("Amap: the answer's location is not 'lon,lat' in range")
    return lat, lon


def _radius(value: object) -> float | None:
    try:
        radius = float(str(value))
    except ValueError:
        return None
    return radius if math.isfinite(radius) and 0 <= radius <= 1e7 else None


def _word(value: object) -> str:
    """A field of a refusal, fit for a log: printable ASCII, at most 64 characters."""
    return _PRINTABLE.sub("?", str(value))[:64]
