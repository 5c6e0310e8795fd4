"""The streaming detector engine: per-device state in arrays, fed one validated batch at a time.

``process(readings, regions, received_ms)`` splits a batch by reading type into columns (the one
Python pass over readings), maps device ids to rows of the state arrays, and runs every detector
vectorized over the whole batch. ``tick(now_ms)`` runs the timer rules (offline, inactivity, falls
whose stream stopped). Both return :class:`~detectors.events.Event` lists; the engine does no I/O,
reads no clock and logs nothing: the caller stores and routes events.

Ordering: state machines (geofence, battery, wear, heart rate) advance in device time per device
and skip late or repeated readings (counted in :attr:`stats`); alarms (SOS, falls, home alarms)
take late readings too, see :mod:`detectors.alarms`. A reading delivered twice never raises twice.
"""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any, Final, cast
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from detectors import alarms, geofence, supervision
from detectors.device_state import DEVICE_ALARM_KINDS, DeviceTable
from detectors.events import Event, EventType, Evidence, Severity
from detectors.fall import AccelChunk, AccelFallDetector, FallHit, chunk_times
from detectors.geo import ZoneSet, haversine_m
from detectors.localtime import in_window, minute_of_day, parse_window
from detectors.params import DetectorParams
from detectors.reorder import ChunkReorder
from detectors.sequences import (
    IntArray,
    fresh_mask,
    order_streams,
    segment_ends,
    segment_starts,
)
from schemas.readings import (
    Accel,
    DeviceAlarm,
    Fall,
    Heartbeat,
    HomeAlarm,
    Location,
    Reading,
    Sos,
    Vitals,
    Wear,
)
from schemas.registry import Registry, Zone

HOME_SENSORS: Final = ("smoke", "gas", "water", "door", "bed_exit", "panic")
_SENSOR_INDEX: Final = {s: i for i, s in enumerate(HOME_SENSORS)}
_DEVICE_ALARM_INDEX: Final = {k: i for i, k in enumerate(DEVICE_ALARM_KINDS)}
#: The event (type, severity) each kind of device alarm raises. A power cut on a tracker or
#: home unit means it will soon go silent, and an unclassified alarm is one a person must look
#: at: both high. Vibration and overspeed say little about an elder's safety on their own.
_DEVICE_ALARM_EVENT: Final[dict[str, tuple[EventType, Severity]]] = {
    "low_battery": ("low_battery", "low"), "fence_exit": ("geofence_exit", "high"),
    "fence_enter": ("geofence_return", "info"), "cover_removed": ("device_removed", "high"),
    "power_cut": ("device_alarm", "high"), "vibration": ("device_alarm", "medium"),
    "overspeed": ("device_alarm", "medium"), "other": ("device_alarm", "high"),
}
_NIGHT_SENSORS: Final = frozenset({"door", "bed_exit"})
_HOME_SEVERITY: Final[dict[str, Severity]] = {
    "smoke": "critical", "gas": "critical", "water": "medium", "door": "high",
    "bed_exit": "high", "panic": "critical",
}
#: Exact activation timestamps remembered per alarm stream, so a redelivered press inside an
#: older episode is recognised as already seen.
_RECENT_ALARMS: Final = 32
#: An offline period no clock reaches (ms; far below int64 overflow in ``now - seen``).
_NEVER: Final = 2**62


@dataclass(frozen=True, kw_only=True, slots=True)
class PreparedRegistry:
    """A registry as the engine's arrays (:meth:`DetectorEngine.prepare_registry`), ready to
    be swapped in; per-device columns are parallel to ``device_ids``."""

    tzs: list[tzinfo]
    zones: ZoneSet
    zone_ids: list[str]
    wearer_ids: list[str]
    win_start: npt.NDArray[np.int64]
    win_end: npt.NDArray[np.int64]
    device_ids: list[str]
    device_regions: list[str]
    wearer: npt.NDArray[np.int64]
    tz: npt.NDArray[np.int64]
    zone_lo: npt.NDArray[np.int64]
    zone_hi: npt.NDArray[np.int64]
    offline_after_ms: npt.NDArray[np.int64]
    accel_fall: npt.NDArray[np.bool_]


class DetectorEngine:
    """Owns per-device detector state; see the module docstring."""

    def __init__(self, *, params: DetectorParams | None = None,
                 registry: Registry | None = None, watch_unlisted: bool | None = None) -> None:
        """``watch_unlisted``: whether a device the registry does not list is supervised for
        going offline; None: only when there is no registry."""
        self.params = params = params or DetectorParams()
        # With registry admission, a device the registry does not list is supervised for
        # nothing: admission (ingest/admission.py) stores only its alarms, so its silence
        # would be a false "offline" half an hour after each one. Without admission (no
        # registry, or a live registry with admission off) every device is watched.
        if watch_unlisted is None:
            watch_unlisted = registry is None
        self.devices = DeviceTable(
            offline_default_ms=int(params.supervision.offline_default_s * 1000)
            if watch_unlisted else _NEVER,
            accel_fall_default=params.accel_fall_unregistered)
        self.falls = AccelFallDetector(params=params.fall, max_devices=params.max_accel_devices)
        fp = params.fall
        self.reorder = ChunkReorder(gap_ms=round(fp.max_gap_s * 1000),
                                    max_gap_ms=round(fp.reorder_gap_s * 1000),
                                    hold_ms=round(fp.reorder_hold_s * 1000))
        self.stats: Counter[str] = Counter()
        #: Detector failures of past batches, (detector, exception); the caller drains and logs
        #: them (the engine itself does no I/O).
        self.errors: list[tuple[str, Exception]] = []
        self._recent: dict[tuple[str, int], deque[int]] = defaultdict(
            lambda: deque(maxlen=_RECENT_ALARMS))
        self._tzs: list[tzinfo] = [ZoneInfo(params.timezone)]
        self._night = parse_window(params.alarms.night)
        self._daytime = parse_window(params.supervision.daytime)
        self._zones = ZoneSet.build([])
        self._zone_ids: list[str] = []
        self._win_start = np.zeros(0, dtype=np.int64)
        self._win_end = np.zeros(0, dtype=np.int64)
        self._wearer_ids: list[str] = []
        if registry is not None:
            self.set_registry(registry)

    # -- registry -------------------------------------------------------------------------

    def set_registry(self, registry: Registry) -> None:
        """Bind devices to wearers, time zones, offline periods and safe zones: the two steps
        of :meth:`prepare_registry` and :meth:`apply_registry` at once."""
        self.apply_registry(self.prepare_registry(registry))

    def prepare_registry(self, registry: Registry) -> PreparedRegistry:
        """The registry as the engine's arrays, without touching its state: safe in another
        thread than the engine's (the service's registry watcher does this part, so the
        pipeline thread only swaps arrays in, ``ingest/registry_watch.py``)."""
        sup = self.params.supervision
        tz_index = {self.params.timezone: 0}
        tzs: list[tzinfo] = [ZoneInfo(self.params.timezone)]
        zones: list[Zone] = []
        starts: list[int] = []
        ends: list[int] = []
        zone_ids: list[str] = []
        wearer_ids: list[str] = []
        dev_ids: list[str] = []
        dev_regions: list[str] = []
        cols: list[tuple[int, int, int, int, int, bool]] = []
        accel_kinds = self.params.accel_fall_kinds
        for w_i, wearer in enumerate(registry.wearers):
            wearer_ids.append(wearer.id)
            tz = tz_index.get(wearer.timezone)
            if tz is None:
                tz = tz_index[wearer.timezone] = len(tzs)
                tzs.append(ZoneInfo(wearer.timezone))
            lo = len(zones)
            for z in wearer.zones:
                zones.append(z)
                zone_ids.append(z.id)
                s, e = parse_window(z.active) if z.active else (0, 0)
                starts.append(s)
                ends.append(e)
            for dev in wearer.devices:
                dev_ids.append(dev.id)
                dev_regions.append(wearer.region)
                cols.append((w_i, tz, lo, len(zones), int(1000 * sup.offline_after_s.get(
                    dev.kind, sup.offline_default_s)), dev.kind in accel_kinds))
        table = np.array(cols, dtype=np.int64).reshape(len(cols), 6)
        return PreparedRegistry(
            tzs=tzs, zones=ZoneSet.build(zones), zone_ids=zone_ids, wearer_ids=wearer_ids,
            win_start=np.array(starts, dtype=np.int64), win_end=np.array(ends, dtype=np.int64),
            device_ids=dev_ids, device_regions=dev_regions, wearer=table[:, 0],
            tz=table[:, 1], zone_lo=table[:, 2], zone_hi=table[:, 3],
            offline_after_ms=table[:, 4], accel_fall=table[:, 5].astype(np.bool_))

    def apply_registry(self, prepared: PreparedRegistry) -> None:
        """Swap a prepared registry in (in the engine's thread).

        Called again whenever the registry changes (the service reloads it live,
        ``ingest/registry_watch.py``). What a device's detectors learned stays with its row:
        episodes of alarms, a wearer known to be outside a zone, offline and battery states,
        the fall detector's learned upright (kept by device id in ``self.falls``). A reload
        therefore neither raises an alarm again nor loses one in progress. Two exceptions,
        both because the facts behind the state changed: a device bound to another wearer
        (or unbound) starts its geofence state afresh (the old wearer's "outside" is not the
        new one's), and a device no longer listed loses its binding (no wearer, no zones,
        the unlisted offline default).
        """
        d = self.devices
        n_before = len(d)
        old_wearer = d.wearer[:n_before].copy()
        old_ids = np.array(self._wearer_ids + [""], dtype=object)[old_wearer]  # -1: ""
        row_of = d.row
        rows = np.fromiter((row_of(i, g) for i, g in zip(prepared.device_ids,
                                                          prepared.device_regions, strict=True)),
                           dtype=np.int64, count=len(prepared.device_ids))
        n = len(d)
        # Unbind everything, then bind what the registry lists: rows it no longer lists keep
        # the unbound values (no wearer, no zones, the unlisted offline default).
        d.wearer[:n], d.tz[:n], d.zone_lo[:n], d.zone_hi[:n] = -1, 0, 0, 0
        d.offline_after_ms[:n], d.accel_fall[:n] = d.offline_default_ms, d.accel_fall_default
        d.wearer[rows], d.tz[rows] = prepared.wearer, prepared.tz
        d.zone_lo[rows], d.zone_hi[rows] = prepared.zone_lo, prepared.zone_hi
        d.offline_after_ms[rows], d.accel_fall[rows] = prepared.offline_after_ms, \
            prepared.accel_fall
        new_ids = np.array(prepared.wearer_ids + [""], dtype=object)[d.wearer[:n_before]]
        moved = np.flatnonzero((old_wearer >= 0) & (old_ids != new_ids))
        d.geo_run[moved], d.geo_run_start[moved], d.geo_exited[moved] = 0, -1, False
        self._tzs, self._zone_ids = prepared.tzs, prepared.zone_ids
        self._wearer_ids = prepared.wearer_ids
        self._zones = prepared.zones
        self._win_start, self._win_end = prepared.win_start, prepared.win_end

    def watch_registered(self, now_ms: int) -> int:
        """Start the offline clock at ``now_ms`` for registered devices not heard from yet.

        Engine state lives in memory: after a restart, a registered bracelet whose battery died
        before it would otherwise never be declared offline. The service calls this at start, so
        such a device raises ``offline`` one period later. Returns how many devices it armed.
        """
        d = self.devices
        n = len(d)
        unheard = (d.wearer[:n] >= 0) & (d.seen_ms[:n] < 0)
        d.seen_ms[:n][unheard] = now_ms
        return int(unheard.sum())

    # -- batches ----------------------------------------------------------------------------

    def process(self, readings: Sequence[Reading], regions: Sequence[str],
                received_ms: Sequence[int]) -> list[Event]:
        """Run every detector over one batch; returns the new events in detection order."""
        if not readings:
            return []
        row_of = self.devices.row
        rows = np.fromiter((row_of(str(r.device_id), g) for r, g in zip(readings, regions,
                                                                        strict=True)),
                           dtype=np.int64, count=len(readings))
        recv = np.asarray(received_ms, dtype=np.int64)
        by_type: dict[type, list[int]] = defaultdict(list)
        for i, r in enumerate(readings):
            by_type[type(r)].append(i)
        t = by_type
        # Each detector runs in isolation: a bug in one (say the geofence) must not cost the
        # batch its SOS events. Fixes run first, so an alarm carries the freshest position.
        steps: list[tuple[str, Callable[[], list[Event]]]] = [
            ("online", lambda: self._online(rows, recv)),
            ("geofence", lambda: self._locations(readings, rows, recv, t[Location])),
            ("sos", lambda: self._sos(readings, rows, t[Sos], t[HomeAlarm])),
            ("device_fall", lambda: self._device_falls(readings, rows, t[Fall])),
            ("home_alarm", lambda: self._home_alarms(readings, rows, t[HomeAlarm])),
            ("device_alarm", lambda: self._device_alarms(readings, rows, t[DeviceAlarm])),
            ("battery", lambda: self._battery(readings, rows, t[Location] + t[Heartbeat])),
            ("wear", lambda: self._wear(readings, rows, t[Wear])),
            ("vitals", lambda: self._vitals(readings, rows, recv, t[Vitals])),
            ("accel", lambda: self._accel(readings, rows, recv, t[Accel])),
        ]
        out: list[Event] = []
        for name, step in steps:
            try:
                out += step()
            except Exception as exc:  # noqa: BLE001 - recorded for the caller to log; others go on
                self.stats[f"{name}_failures"] += 1
                self.errors.append((name, exc))
        self.stats["readings"] += len(readings)
        return out

    def tick(self, now_ms: int) -> list[Event]:
        """Timer rules at ``now_ms`` (the service clock, or data time in replay)."""
        d = self.devices
        n = len(d)
        out: list[Event] = []
        due = supervision.offline_due(d.seen_ms[:n], d.offline_after_ms[:n], d.offline[:n],
                                      now_ms)
        for row in np.flatnonzero(due):
            d.offline[row] = True
            since = int(d.seen_ms[row])
            # A device armed by watch_registered() has not been heard since the service started:
            # ``last_seen_ms`` is then the start time, and the evidence says so.
            out.append(self._event(int(row), "offline", since + int(d.offline_after_ms[row]),
                                   "low", {"last_seen_ms": since,
                                           "heard_since_start": bool(d.heard[row])}))
        minute = self._minute_now(now_ms, n)
        idle = supervision.inactivity_due(d.active_ms[:n], d.has_activity[:n], d.inactive[:n],
                                          d.offline[:n], minute, now_ms,
                                          self.params.supervision, self._daytime)
        for row in np.flatnonzero(idle):
            d.inactive[row] = True
            out.append(self._event(int(row), "inactivity", now_ms, "medium",
                                   {"last_activity_ms": int(d.active_ms[row])}))
        # Chunks held back for a delayed message that did not come: read them, gap and all,
        # before deciding what the silence of a device means.
        held = self.reorder.due(now_ms)
        out += [self._fall_event(h) for h in self.falls.feed(held)] if held else []
        out += [self._fall_event(h) for h in self.falls.expire(now_ms)]
        return out

    # -- detectors ----------------------------------------------------------------------------

    def _online(self, rows: IntArray, recv: IntArray) -> list[Event]:
        d = self.devices
        np.maximum.at(d.seen_ms, rows, recv)
        d.heard[rows] = True
        back = np.unique(rows[d.offline[rows]])
        d.offline[back] = False
        return [self._event(int(r), "online", int(d.seen_ms[r]), "info", {}) for r in back]

    def _alarm_stream(self, kind: str, keys: IntArray, ts: IntArray,
                      clear: npt.NDArray[np.bool_], start: npt.NDArray[np.int64],
                      end: npt.NDArray[np.int64], is_open: npt.NDArray[np.bool_] | None,
                      window_s: float) -> npt.NDArray[np.bool_]:
        """Drop exact redeliveries, group activations into episodes, store the episode state
        (``start``/``end``/``is_open`` indexed by key). Returns which items raise an event."""
        seen = np.array([int(t) in self._recent[(kind, int(k))]
                         for k, t in zip(keys, ts, strict=True)], dtype=bool)
        self.stats[f"{kind}_repeated"] += int(seen.sum())
        keep = ~seen
        u = np.unique(keys[keep])
        opened = start[u] >= 0 if is_open is None else is_open[u]
        step = alarms.step_alarms(keys[keep], ts[keep], clear[keep],
                                  alarms.EpisodeState(start[u], end[u], opened),
                                  window_ms=int(window_s * 1000))
        start[step.keys], end[step.keys] = step.state.start, step.state.end
        if is_open is not None:
            is_open[step.keys] = step.state.open
        for k, t, c in zip(keys[keep], ts[keep], clear[keep], strict=True):
            if not c:
                self._recent[(kind, int(k))].append(int(t))
        new = np.zeros(len(keys), dtype=bool)
        new[keep] = step.new
        return new

    def _sos(self, readings: Sequence[Reading], rows: IntArray, sos_idx: list[int],
             home_idx: list[int]) -> list[Event]:
        # Home panic buttons are SOS presses of the home's device.
        panic = [i for i in home_idx if readings[i].sensor == "panic"  # type: ignore[union-attr]
                 and readings[i].active]  # type: ignore[union-attr]
        idx = sos_idx + panic
        if not idx:
            return []
        d = self.devices
        keys = rows[idx]
        ts = np.array([readings[i].ts for i in idx], dtype=np.int64)
        new = self._alarm_stream("sos", keys, ts, np.zeros(len(idx), dtype=bool), d.sos_start,
                                 d.sos_end, None, self.params.alarms.sos_window_s)
        events = []
        for j in np.flatnonzero(new):
            r = readings[idx[j]]
            source = "panic_button" if isinstance(r, HomeAlarm) else "sos_button"
            ev: Evidence = {"source": source}
            lat = lon = None
            if isinstance(r, Sos):
                lat, lon = r.lat, r.lon
                if r.accuracy_m is not None:
                    ev["accuracy_m"] = r.accuracy_m
            events.append(self._event(int(keys[j]), "sos", int(ts[j]), "critical", ev,
                                      lat=lat, lon=lon))
        return events

    def _device_falls(self, readings: Sequence[Reading], rows: IntArray,
                      idx: list[int]) -> list[Event]:
        if not idx:
            return []
        d = self.devices
        keys = rows[idx]
        ts = np.array([readings[i].ts for i in idx], dtype=np.int64)
        new = self._alarm_stream("fall", keys, ts, np.zeros(len(idx), dtype=bool),
                                 d.fall_start, d.fall_end, None, self.params.alarms.fall_window_s)
        events = []
        for j in np.flatnonzero(new):
            r = readings[idx[j]]
            assert isinstance(r, Fall)
            ev: Evidence = {"source": "device"}
            if r.confidence is not None:
                ev["confidence"] = r.confidence
            events.append(self._event(int(keys[j]), "fall", int(ts[j]), "critical", ev,
                                      lat=r.lat, lon=r.lon))
        return events

    def _home_alarms(self, readings: Sequence[Reading], rows: IntArray,
                     idx: list[int]) -> list[Event]:
        items = [i for i in idx if readings[i].sensor != "panic"]  # type: ignore[union-attr]
        if not items:
            return []
        d = self.devices
        homes = cast(list[HomeAlarm], [readings[i] for i in items])
        sensors = [h.sensor for h in homes]
        keys = rows[items] * len(HOME_SENSORS) + np.array([_SENSOR_INDEX[s] for s in sensors])
        ts = np.array([h.ts for h in homes], dtype=np.int64)
        active = np.array([h.active for h in homes], dtype=np.bool_)
        night_only = np.array([s in _NIGHT_SENSORS for s in sensors], dtype=np.bool_)
        if night_only.any():
            minute = self._minute_of(rows[items], ts)
            at_night = in_window(minute, *self._night)
            # A bed exit by day is not an alarm; nor does it clear a night one.
            keep = ~night_only | at_night | ~active
        else:
            keep = np.ones(len(items), dtype=np.bool_)
        keys, ts, active = keys[keep], ts[keep], active[keep]
        items = [i for i, k in zip(items, keep, strict=True) if k]
        new = self._alarm_stream("home", keys, ts, ~active, d.home_start, d.home_end,
                                 d.home_open, self.params.alarms.home_window_s)
        events = []
        for j in np.flatnonzero(new):
            sensor = readings[items[j]].sensor  # type: ignore[union-attr]
            events.append(self._event(int(keys[j]) // len(HOME_SENSORS), "home_alarm",
                                      int(ts[j]), _HOME_SEVERITY[sensor], {"sensor": sensor}))
        return events

    def _device_alarms(self, readings: Sequence[Reading], rows: IntArray,
                       idx: list[int]) -> list[Event]:
        """A device's own alarms (vendor protocols through the gateway): each kind is an
        episode per device, so a watch repeating an unanswered alarm raises it once; the kinds
        our other rules also know raise those rules' events (the device's low-battery flag is
        ``low_battery``, its fence ``geofence_exit``/``geofence_return``, its cover or strap
        ``device_removed``), the rest ``device_alarm`` naming the kind (docs/detectors.md)."""
        if not idx:
            return []
        d = self.devices
        alarms_: list[DeviceAlarm] = [readings[i] for i in idx]  # type: ignore[misc]
        n_kinds = len(DEVICE_ALARM_KINDS)
        keys = rows[idx] * n_kinds + np.array([_DEVICE_ALARM_INDEX[a.alarm] for a in alarms_],
                                              dtype=np.int64)
        ts = np.array([a.ts for a in alarms_], dtype=np.int64)
        new = self._alarm_stream("device_alarm", keys, ts, np.zeros(len(idx), dtype=bool),
                                 d.dev_alarm_start, d.dev_alarm_end, None,
                                 self.params.alarms.device_alarm_window_s)
        events = []
        for j in np.flatnonzero(new):
            a = alarms_[j]
            event_type, severity = _DEVICE_ALARM_EVENT[a.alarm]
            ev: Evidence = {"source": "device", "alarm": a.alarm}
            if a.code is not None:
                ev["code"] = a.code
            events.append(self._event(int(keys[j]) // n_kinds, event_type, int(ts[j]),
                                      severity, ev, lat=a.lat, lon=a.lon))
        return events

    def _stream(self, rows: IntArray, ts: IntArray, last_ts: npt.NDArray[np.int64],
                name: str) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        """Sort items by (device, ts) and keep the fresh ones; returns (order, seg_start)."""
        order = order_streams(rows, ts)
        fresh = fresh_mask(rows[order], ts[order], last_ts[rows[order]])
        self.stats[f"{name}_late_or_repeated"] += int((~fresh).sum())
        order = order[fresh]
        return order, segment_starts(rows[order])

    def _locations(self, readings: Sequence[Reading], rows: IntArray, recv: IntArray,
                   idx: list[int]) -> list[Event]:
        if not idx:
            return []
        d = self.devices
        locs: list[Location] = [readings[i] for i in idx]  # type: ignore[misc]
        r = rows[idx]
        ts = np.array([x.ts for x in locs], dtype=np.int64)
        order, seg = self._stream(r, ts, d.fix_ts, "location")
        if not len(order):
            return []
        r, ts = r[order], ts[order]
        lat = np.array([locs[k].lat for k in order])
        lon = np.array([locs[k].lon for k in order])
        acc = np.array([np.nan if locs[k].accuracy_m is None else locs[k].accuracy_m
                        for k in order])
        self._note_motion(r, recv[idx][order], lat, lon)
        self._store_last(seg, r, (d.fix_ts, ts), (d.fix_lat, lat), (d.fix_lon, lon))
        has_zones = d.zone_hi[r] > d.zone_lo[r]
        if not has_zones.any():
            return []
        if not has_zones.all():
            r, ts, lat, lon, acc = r[has_zones], ts[has_zones], lat[has_zones], lon[has_zones], \
                acc[has_zones]
            seg = segment_starts(r)
        return self._geofence(r, seg, ts, lat, lon, acc)

    def _geofence(self, r: IntArray, seg: npt.NDArray[np.bool_], ts: IntArray,
                  lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64],
                  acc: npt.NDArray[np.float64]) -> list[Event]:
        d = self.devices
        zd = geofence.nearest_active_zone(self._zones, d.zone_lo[r], d.zone_hi[r],
                                          self._minute_of(r, ts), self._win_start, self._win_end,
                                          lat, lon)
        carried = geofence.GeofenceState(d.geo_run[r], d.geo_run_start[r], d.geo_exited[r])
        step = geofence.step_geofence(seg, ts, zd, acc, carried, self.params.geofence)
        self._store_last(seg, r, (d.geo_run, step.state_at.run),
                         (d.geo_run_start, step.state_at.run_start),
                         (d.geo_exited, step.state_at.exited))
        events = []
        for j in np.flatnonzero(step.exit | step.ret):
            kind: EventType = "geofence_exit" if step.exit[j] else "geofence_return"
            ev: Evidence = {"distance_m": round(float(zd.distance_m[j]), 1),
                            "zone_id": self._zone_ids[int(zd.nearest[j])],
                            "outside_fixes": int(step.state_at.run[j])}
            if not np.isnan(acc[j]):
                ev["accuracy_m"] = float(acc[j])
            events.append(self._event(int(r[j]), kind, int(ts[j]),
                                      "high" if kind == "geofence_exit" else "info", ev,
                                      lat=float(lat[j]), lon=float(lon[j])))
        return events

    def _fresh(self, readings: Sequence[Reading], rows: IntArray, idx: list[int],
               last_ts: npt.NDArray[np.int64], name: str, field: str, dtype: Any
               ) -> tuple[IntArray, IntArray, npt.NDArray[Any], npt.NDArray[np.bool_]] | None:
        """The fresh items of one stream, sorted by (device, ts): rows, ts, the values of
        ``field``, and the stream starts; None when nothing is fresh."""
        if not idx:
            return None
        r = rows[idx]
        ts = np.array([readings[i].ts for i in idx], dtype=np.int64)
        order, seg = self._stream(r, ts, last_ts, name)
        if not len(order):
            return None
        values = np.array([getattr(readings[idx[k]], field) for k in order], dtype=dtype)
        return r[order], ts[order], values, seg

    def _battery(self, readings: Sequence[Reading], rows: IntArray,
                 idx: list[int]) -> list[Event]:
        d = self.devices
        idx = [i for i in idx if cast(Location | Heartbeat, readings[i]).battery_pct is not None]
        got = self._fresh(readings, rows, idx, d.bat_ts, "battery", "battery_pct", np.float64)
        if got is None:
            return []
        r, ts, pct, seg = got
        step = supervision.step_battery(seg, pct, d.bat_low[r], self.params.supervision)
        self._store_last(seg, r, (d.bat_ts, ts), (d.bat_low, step.state))
        return [self._event(int(r[j]), "low_battery", int(ts[j]), "low",
                            {"battery_pct": float(pct[j])}) for j in np.flatnonzero(step.rising)]

    def _wear(self, readings: Sequence[Reading], rows: IntArray, idx: list[int]) -> list[Event]:
        d = self.devices
        got = self._fresh(readings, rows, idx, d.wear_ts, "wear", "worn", np.bool_)
        if got is None:
            return []
        r, ts, worn, seg = got
        step = supervision.step_wear(seg, worn, d.removed[r])
        self._store_last(seg, r, (d.wear_ts, ts), (d.removed, step.state))
        out = [self._event(int(r[j]), "device_removed", int(ts[j]), "high", {"worn": False})
               for j in np.flatnonzero(step.rising)]
        out += [self._event(int(r[j]), "device_worn", int(ts[j]), "info", {"worn": True})
                for j in np.flatnonzero(step.falling)]
        return sorted(out, key=lambda e: e.ts)

    def _vitals(self, readings: Sequence[Reading], rows: IntArray, recv: IntArray,
                idx: list[int]) -> list[Event]:
        vit: list[Vitals] = [readings[i] for i in idx]  # type: ignore[misc]
        self._note_steps(rows[idx], recv[idx], vit)
        d = self.devices
        hr_idx = [i for i, v in zip(idx, vit, strict=True) if v.heart_rate_bpm is not None]
        got = self._fresh(readings, rows, hr_idx, d.hr_ts, "heart_rate", "heart_rate_bpm",
                          np.float64)
        if got is None:
            return []
        r, ts, bpm, seg = got
        sup = self.params.supervision
        step = supervision.step_heart_rate(seg, ts, bpm, d.hr_run[r], d.hr_run_start[r],
                                           d.hr_alarm[r], sup)
        self._store_last(seg, r, (d.hr_ts, ts), (d.hr_alarm, step.alarm.state),
                         (d.hr_run, step.run.length), (d.hr_run_start, step.run.start_ts))
        events = []
        for j in np.flatnonzero(step.alarm.rising):
            n = sup.heart_rate_readings
            recent = [float(b) for b in bpm[max(0, j - n + 1):j + 1]]
            events.append(self._event(int(r[j]), "heart_rate", int(ts[j]), "high", {
                "direction": "high" if step.high[j] else "low", "bpm": recent,
                "low_bpm": sup.heart_rate_low_bpm, "high_bpm": sup.heart_rate_high_bpm}))
        return events

    def _accel(self, readings: Sequence[Reading], rows: IntArray, recv: IntArray,
               idx: list[int]) -> list[Event]:
        if not idx:
            return []
        chunks = []
        lengths = np.empty(len(idx), dtype=np.int64)
        for k, i in enumerate(idx):
            a = readings[i]
            assert isinstance(a, Accel)
            xyz = np.column_stack((a.x, a.y, a.z)).astype(np.float32)
            lengths[k] = len(xyz)
            chunks.append(AccelChunk(str(a.device_id), chunk_times(a.ts, a.rate_hz, len(xyz)),
                                     xyz))
        mag = np.sqrt(np.concatenate([np.einsum("ij,ij->i", c.xyz, c.xyz) for c in chunks]))
        spread = supervision.motion_spread_g(lengths, mag.astype(np.float64))
        moving = spread > self.params.supervision.motion_std_g
        self._mark_activity(rows[idx], recv[idx], moving)
        analysed = self.devices.accel_fall[rows[idx]]
        self.stats["accel_chunks_not_fall_analysed"] += int((~analysed).sum())
        chunks = [c for c, keep in zip(chunks, analysed, strict=True) if keep]
        if not chunks and not len(self.reorder):
            return []
        ready = self.reorder.admit(chunks, now_ms=int(recv[idx].max()),
                                   last_ms=self.falls.last_sample_ms)
        return [self._fall_event(h) for h in self.falls.feed(ready)] if ready else []

    # -- activity (inactivity check) -------------------------------------------------------

    def _note_steps(self, rows: IntArray, recv: IntArray, vit: list[Vitals]) -> None:
        k = [j for j, v in enumerate(vit) if v.steps is not None]
        if not k:
            return
        d = self.devices
        r = rows[k]
        steps = np.array([vit[j].steps for j in k], dtype=np.int64)
        # Counters reset at midnight: any change of the count means the day is not still.
        moved = (d.steps[r] >= 0) & (steps != d.steps[r]) & (steps > 0)
        d.steps[r] = steps
        self._mark_activity(r, recv[k], moved)

    def _note_motion(self, rows: IntArray, recv: IntArray, lat: npt.NDArray[np.float64],
                     lon: npt.NDArray[np.float64]) -> None:
        d = self.devices
        far = haversine_m(d.still_lat[rows], d.still_lon[rows], lat, lon)
        moved = np.isnan(far) | (far > self.params.supervision.motion_distance_m)
        d.still_lat[rows[moved]], d.still_lon[rows[moved]] = lat[moved], lon[moved]
        known = ~np.isnan(far) & moved
        # A position change is activity, but a location-only device is not watched for
        # inactivity (a person at home all day would look inactive): it sets no signal.
        np.maximum.at(d.active_ms, rows[known], recv[known])
        d.inactive[rows[known]] = False

    def _mark_activity(self, rows: IntArray, recv: IntArray, moved: npt.NDArray[np.bool_]) -> None:
        d = self.devices
        d.has_activity[rows] = True
        first = d.active_ms[rows] < 0
        np.maximum.at(d.active_ms, rows[moved | first], recv[moved | first])
        d.inactive[rows[moved]] = False

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _store_last(seg: npt.NDArray[np.bool_], r: IntArray,
                    *pairs: tuple[npt.NDArray[Any], npt.NDArray[Any]]) -> None:
        """Write each (state array, per-item values) pair back at each device's last item."""
        ends = segment_ends(seg)
        last = r[ends]
        for target, values in pairs:
            target[last] = values[ends]

    def _minute_of(self, rows: IntArray, ts: IntArray) -> IntArray:
        tz = self.devices.tz[rows]
        out = np.empty(len(rows), dtype=np.int64)
        for t in np.unique(tz):
            sel = tz == t
            out[sel] = minute_of_day(ts[sel], self._tzs[int(t)])
        return out

    def _minute_now(self, now_ms: int, n: int) -> IntArray:
        return self._minute_of(np.arange(n, dtype=np.int64), np.full(n, now_ms, dtype=np.int64))

    def _fall_event(self, hit: FallHit) -> Event:
        row = self.devices.row(hit.device_id, "")
        ev: Evidence = {"source": "accelerometer", "confidence": round(hit.confidence, 3)}
        ev.update({k: round(float(v), 3) for k, v in hit.evidence.items()})
        return self._event(row, "fall", hit.ts, "critical", ev)

    def _event(self, row: int, kind: EventType, ts: int, severity: Severity, evidence: Evidence,
               *, lat: float | None = None, lon: float | None = None) -> Event:
        d = self.devices
        if lat is None and d.fix_ts[row] >= 0:
            # No position in the reading: the last known fix, with its age, is the best help.
            lat, lon = float(d.fix_lat[row]), float(d.fix_lon[row])
            evidence = {**evidence, "position_ts": int(d.fix_ts[row])}
        w = int(d.wearer[row])
        return Event(device_id=d.ids[row], type=kind, ts=ts, severity=severity,
                     region=d.regions[row], wearer_id=self._wearer_ids[w] if w >= 0 else None,
                     lat=lat, lon=lon, evidence=evidence)
