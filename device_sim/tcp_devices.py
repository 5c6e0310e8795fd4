"""Simulated vendor devices on TCP: one connection per device to a gateway, at the run's pace.

:class:`DeviceFleet` runs the routed devices of one run: a dispatcher walks the run's
device-topic messages (the delivery stage's, so an outage's readings come as one burst when it
ends) on the run's :class:`~device_sim.publisher.Pace`, and hands each device its readings
through a bounded queue; a device that cannot keep up holds the dispatcher back, and frames go
out late (counted) rather than piling up. Each device is a
:class:`~device_sim.device_link.DeviceLink` task (named, in one ``TaskGroup``), started when
its first reading is due; that module says how a device behaves on its connection. Progress is
reported every ``progress_s`` seconds from a task of its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Final

from device_sim.device_frames import DeviceEncoder
from device_sim.device_link import (
    END,
    RECONNECT,
    DeviceLink,
    DeviceSettings,
    DeviceStats,
    Endpoint,
    Outgoing,
)
from device_sim.publisher import Pace
from device_sim.types import Publication

__all__ = ["DeviceFleet", "DeviceSettings", "DeviceStats", "Endpoint"]

#: Longest single sleep of the dispatcher, so a stop is seen promptly.
_POLL_S: Final = 0.05


class DeviceFleet:
    """Runs the routed devices of one run; see the module docstring.

    ``devices``: device id (as in the readings) -> its encoder and its gateway's address.
    ``stop`` ends the run early (what was sent still has its replies awaited, one timeout at
    most). ``on_progress`` is called with the running stats every ``progress_s`` seconds.
    """

    def __init__(self, devices: Mapping[str, tuple[DeviceEncoder, Endpoint]], *, pace: Pace,
                 settings: DeviceSettings | None = None, stop: threading.Event | None = None,
                 on_progress: Callable[[DeviceStats], None] | None = None,
                 progress_s: float = 1.0) -> None:
        self.routes = devices
        self.pace = pace
        self.settings = settings or DeviceSettings()
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.progress_s = progress_s
        self.stats = DeviceStats()
        self._devices: dict[str, DeviceLink] = {}

    async def run(self, pubs: Iterable[Publication]) -> DeviceStats:
        """Send ``pubs`` (device-topic messages of routed devices, in time order); returns the
        stats once every device has finished."""
        began = time.monotonic()
        failure: Exception | None = None
        async with asyncio.TaskGroup() as tg:
            ticker = tg.create_task(self._progress_loop(), name="sim-devices-progress")
            try:
                await self._dispatch(pubs, tg)
            except Exception as exc:  # noqa: BLE001 - raised again once the devices ended
                failure = exc
            for device in self._devices.values():
                await device.queue.put(END)
            tasks = [d.task for d in self._devices.values() if d.task is not None]
            if tasks:
                await asyncio.wait(tasks)
            ticker.cancel()
        if failure is not None:
            raise failure
        self.stats.seconds = time.monotonic() - began
        self.stats.stopped = self.stop.is_set()
        if self.on_progress is not None:
            self.on_progress(self.stats)
        return self.stats

    async def _dispatch(self, pubs: Iterable[Publication], tg: asyncio.TaskGroup) -> None:
        for pub in pubs:
            if self.stop.is_set():
                return
            due = self.pace.due(pub.t_ms)
            await self._sleep_until(due)
            if self.stop.is_set():
                return
            self.stats.sim_ms = max(self.stats.sim_ms, pub.t_ms)
            for body in pub.readings:
                device = self._device(str(body["device_id"]), tg)
                if pub.as_array and body is pub.readings[0]:
                    # An outage's burst: the device comes back on a new connection.
                    await device.queue.put(RECONNECT)
                await device.queue.put(Outgoing(body, pub.as_array, due))

    async def _sleep_until(self, due: float) -> None:
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= due:
                return
            paced = self.pace.sim_ms(now)
            if paced is not None:
                self.stats.sim_ms = max(self.stats.sim_ms, paced)
            await asyncio.sleep(min(due - now, _POLL_S))

    def _device(self, device_id: str, tg: asyncio.TaskGroup) -> DeviceLink:
        device = self._devices.get(device_id)
        if device is None:
            encoder, endpoint = self.routes[device_id]
            device = self._devices[device_id] = DeviceLink(
                device_id, encoder, endpoint, settings=self.settings, stats=self.stats,
                pace=self.pace, stop=self.stop)
            device.task = tg.create_task(device.run(), name=f"sim-device-{device_id}")
        return device

    async def _progress_loop(self) -> None:
        while self.on_progress is not None:
            await asyncio.sleep(self.progress_s)
            self.on_progress(self.stats)
